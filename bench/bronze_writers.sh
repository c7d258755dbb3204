#!/usr/bin/env bash
# bench/bronze_writers.sh [N] [ROUNDS] [WRITERS...]: the initial load of N rows (bench/gen_wide.lua)
# with DP_BRONZE_WRITERS set to each of WRITERS (default 1 2 3) in turn, ROUNDS times (default 2),
# alternating so that a busy machine weighs on each alike. Prints the bronze step and the whole
# run per load (docs/performance.md#the-initial-load-overlapping-the-layers). Uses build/ as it
# is (BENCH_BUILD: another build folder) and databases suffixed with BENCH_TAG.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
N=${1:-100000}
ROUNDS=${2:-2}
shift 2 2>/dev/null || shift $#
WRITERS=("$@")
(( ${#WRITERS[@]} )) || WRITERS=(1 2 3)
BIN=$ROOT/${BENCH_BUILD:-build}/dp-engine
eval "$(spec/services.sh start 2>/dev/null)"
ADMIN_URL=$DP_POSTGRES_URL
BDB=dp_wbench${BENCH_TAG:+_$BENCH_TAG}
export DP_POSTGRES_URL=${ADMIN_URL%/*}/$BDB DP_BRONZE_DB=bronze_wbench${BENCH_TAG:+_$BENCH_TAG}
export DP_METADATA=$ROOT/bench/metadata DP_HOME=$ROOT MONGOC_DISABLE_SHM=1 DP_LOG_LEVEL=warn
WORK=$ROOT/.dp/wbench
export DP_DATA_DIR=$WORK/data
export PGOPTIONS="-c client_min_messages=warning"
mkdir -p "$WORK"
[[ -f $WORK/export-$N.jsonl ]] || luajit bench/gen_wide.lua "$N" "$WORK/export-$N.jsonl"
q() { psql -qAt "$DP_POSTGRES_URL" -c "$1"; }
printf 'writers  bronze s  whole run s   (N = %d)\n' "$N"
for ((r = 1; r <= ROUNDS; r++)); do
  for w in "${WRITERS[@]}"; do
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $BDB WITH (FORCE)" -c "CREATE DATABASE $BDB"
    luajit -e "package.cpath='build/?.so;'..package.cpath
      local m = assert(require('dp.core').mongo_connect(os.getenv('DP_MONGO_URL')))
      assert(m:command(os.getenv('DP_BRONZE_DB'), '{\"dropDatabase\": 1}'))"
    rm -rf "$DP_DATA_DIR"
    mkdir -p "$DP_DATA_DIR/inbox/bench"
    "$BIN" migrate >/dev/null
    cp "$WORK/export-$N.jsonl" "$DP_DATA_DIR/inbox/bench/wide-1.jsonl"
    DP_BRONZE_WRITERS=$w "$BIN" run bench >/dev/null
    run=$(q "SELECT run_id FROM audit.system_run ORDER BY started_at DESC LIMIT 1")
    printf '%7d  %8.2f  %11.2f\n' "$w" \
      "$(q "SELECT extract(epoch FROM ended_at - started_at) FROM audit.entity_layer_run WHERE run_id = '$run' AND layer = 'bronze'")" \
      "$(q "SELECT extract(epoch FROM ended_at - started_at) FROM audit.system_run WHERE run_id = '$run'")"
  done
done
