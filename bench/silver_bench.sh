#!/usr/bin/env bash
# bench/silver_bench.sh [N]: silver and bronze figures as ratios against baselines measured in the
# same run, on the same local services (spec/services.sh). Default N = 1,000,000 rows of 20 mixed
# columns; use a small N (e.g. 2000) as a smoke test. Prints a table; docs/performance.md keeps
# the figures of a reference run.
#
#   silver initial load   = plain COPY of the same typed rows (every column silver writes: the
#                           20 typed columns and the system columns) into an unindexed table
#                           / the silver step of the first run            (target >= 0.7); also
#                           shown against a COPY of the 20 typed columns alone
#   FerretDB read         = one read of the whole bronze collection: what any bronze write with
#                           a filter costs on FerretDB v1 (docs/performance.md)
#   rerun, 1% changed and 0.1% removed = whole second run / whole first run (target <= 0.2)
#   peak RSS of dp-engine during the first run                          (target <= 150 MB at 5M)
#   bronze load           = plain libmongoc insert_many (unordered, 1000 per batch) of the same
#                           documents bronze wrote in the first run (exported from the
#                           collection first) / the bronze step of the first run (target >= 0.7)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
N=${1:-1000000}
# BENCH_FIRST_RUN_ONLY=1: only the first run and the COPY baselines, not the FerretDB baselines
# nor the rerun (for the memory figure at large N, where each FerretDB read takes minutes)
FIRST_RUN_ONLY=${BENCH_FIRST_RUN_ONLY:-0}
# BENCH_NO_FERRETDB_BASELINES=1: both runs, without the read and insert baselines (minutes each at
# large N)
NO_BASELINES=${BENCH_NO_FERRETDB_BASELINES:-0}

command -v /usr/bin/time >/dev/null || { echo "bench: installing GNU time" >&2; apt-get install -y -qq time >/dev/null; }
# (in two steps: `eval "$(...)"` alone would go on when starting them failed)
services_env=$(spec/services.sh start) || exit 1
eval "$services_env"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null

ADMIN_URL=$DP_POSTGRES_URL
# BENCH_TAG: a suffix for the bench's databases, so that several clones share the services
BDB=dp_bench${BENCH_TAG:+_$BENCH_TAG}
MDB=bronze_bench${BENCH_TAG:+_$BENCH_TAG}
export DP_POSTGRES_URL=${ADMIN_URL%/*}/$BDB
export DP_BRONZE_DB=$MDB
export DP_DATA_DIR=$ROOT/.dp/bench/data
export DP_METADATA=$ROOT/bench/metadata
export DP_HOME=$ROOT
export MONGOC_DISABLE_SHM=1  # see spec/run.sh
export DP_LOG_LEVEL=warn
WORK=$ROOT/.dp/bench
INBOX=$DP_DATA_DIR/inbox/bench

# core_mongo 'LUA CALL': one call on a dp.core MongoDB client (m), asserted
core_mongo() {
  luajit -e "package.cpath='build/?.so;'..package.cpath
    local m = assert(require('dp.core').mongo_connect(os.getenv('DP_MONGO_URL')))
    assert($1)"
}
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $BDB WITH (FORCE)" -c "CREATE DATABASE $BDB"
core_mongo "m:command('$MDB', '{\"dropDatabase\": 1}')"
rm -rf "$WORK"
mkdir -p "$INBOX"
build/dp-engine migrate >/dev/null

echo "bench: generating $N rows" >&2
luajit bench/gen_wide.lua "$N" "$WORK/export-1.jsonl"
luajit bench/gen_wide.lua "$N" "$WORK/export-2.jsonl" 1 0.1

q() { psql -qAt "$DP_POSTGRES_URL" -c "$1"; }
layer_s() { q "SELECT extract(epoch FROM ended_at - started_at) FROM audit.entity_layer_run WHERE run_id = '$1' AND layer = '$2'"; }
run_s() { q "SELECT extract(epoch FROM ended_at - started_at) FROM audit.system_run WHERE run_id = '$1'"; }
last_run() { q "SELECT run_id FROM audit.system_run ORDER BY started_at DESC LIMIT 1"; }
now() { date +%s.%N; }

echo "bench: run 1 (initial load)" >&2
cp "$WORK/export-1.jsonl" "$INBOX/wide-1.jsonl"
/usr/bin/time -v -o "$WORK/time-1.txt" build/dp-engine run bench >/dev/null
RUN1=$(last_run)
RSS1_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time-1.txt")

echo "bench: baseline COPY of the same typed rows into an unindexed table" >&2
COLS="id, name, email, amount, qty, price, active, born, created, note, tags, uid, city, score, total, flag, updated, level, ratio, category"
ALL=$(q "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
  WHERE attrelid = 'silver.bench__wide'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> '_dp_id'")
psql -qAt "$DP_POSTGRES_URL" -c "\\copy (SELECT $ALL FROM silver.bench__wide) TO '$WORK/rows.tsv'"
psql -qAt "$DP_POSTGRES_URL" -c "\\copy (SELECT $COLS FROM silver.bench__wide) TO '$WORK/typed.tsv'"
q "CREATE TABLE public.copy_rows AS SELECT $ALL FROM silver.bench__wide WITH NO DATA"
q "CREATE TABLE public.copy_baseline AS SELECT $COLS FROM silver.bench__wide WITH NO DATA"
T0=$(now)
psql -qAt "$DP_POSTGRES_URL" -c "\\copy public.copy_rows FROM '$WORK/rows.tsv'"
T1=$(now)
ROWS_S=$(echo "$T1 - $T0" | bc -l)
T0=$(now)
psql -qAt "$DP_POSTGRES_URL" -c "\\copy public.copy_baseline FROM '$WORK/typed.tsv'"
T1=$(now)
COPY_S=$(echo "$T1 - $T0" | bc -l)

SCAN_S=0 INSERT_S=0
if [ "$FIRST_RUN_ONLY" != 1 ] && [ "$NO_BASELINES" != 1 ]; then
echo "bench: one read of the whole bronze collection (exported for the next baseline)" >&2
T0=$(now)
core_mongo "m:export_bson('$MDB', 'bench__wide', '$WORK/bronze.bson')"
T1=$(now)
SCAN_S=$(echo "$T1 - $T0" | bc -l)

echo "bench: baseline libmongoc insert_many of the same documents" >&2
T0=$(now)
core_mongo "m:insert_bson('$MDB', 'insert_baseline', '$WORK/bronze.bson')"
T1=$(now)
INSERT_S=$(echo "$T1 - $T0" | bc -l)
fi

SILVER1=$(layer_s "$RUN1" silver); BRONZE1=$(layer_s "$RUN1" bronze); RAW1=$(layer_s "$RUN1" raw)
TOTAL1=$(run_s "$RUN1")
r() { printf '%.2f' "$(echo "$1" | bc -l)"; }
if [ "$FIRST_RUN_ONLY" != 1 ]; then
  echo "bench: run 2 (1% changed, 0.1% removed)" >&2
  cp "$WORK/export-2.jsonl" "$INBOX/wide-1.jsonl"
  /usr/bin/time -v -o "$WORK/time-2.txt" build/dp-engine run bench >/dev/null
  RUN2=$(last_run)
  TOTAL2=$(run_s "$RUN2")
  SILVER2=$(layer_s "$RUN2" silver); BRONZE2=$(layer_s "$RUN2" bronze); RAW2=$(layer_s "$RUN2" raw)
  COUNTS2=$(q "SELECT layer || ': ' || records_in || ' in, ' || records_inserted || ' ins, ' || records_updated || ' upd, ' || records_deleted || ' del, ' || records_unchanged || ' same' FROM audit.entity_layer_run WHERE run_id = '$RUN2' ORDER BY started_at")
fi

cat <<EOT
dp-engine benchmark, N = $N rows x 20 columns, $(nproc) cores, $(uname -m), PostgreSQL $(q "SHOW server_version"), FerretDB v1.24.2
run 1 (initial): raw ${RAW1}s, bronze ${BRONZE1}s, silver ${SILVER1}s, whole run ${TOTAL1}s, peak RSS $((RSS1_KB / 1024)) MB
baselines: COPY of the rows silver writes into an unindexed table ${ROWS_S}s (of the 20 typed columns alone ${COPY_S}s);
$([ "$FIRST_RUN_ONLY" = 1 ] || [ "$NO_BASELINES" = 1 ] && echo "  FerretDB baselines not measured (BENCH_FIRST_RUN_ONLY or BENCH_NO_FERRETDB_BASELINES)" ||
  echo "  libmongoc insert_many ${INSERT_S}s; one read of the whole bronze collection (FerretDB) ${SCAN_S}s")

silver initial load vs plain COPY      $(r "$ROWS_S / $SILVER1")   (target >= 0.7; vs the 20 typed columns alone $(r "$COPY_S / $SILVER1"))
bronze load vs plain insert_many       $([ "$FIRST_RUN_ONLY" = 1 ] || [ "$NO_BASELINES" = 1 ] && echo "not measured" || r "$INSERT_S / $BRONZE1")   (target >= 0.7)
peak RSS (first run)                   $((RSS1_KB / 1024)) MB   (target <= 150 MB at N = 5,000,000)
EOT
if [ "$FIRST_RUN_ONLY" != 1 ]; then
cat <<EOT
run 2 (1% changed, 0.1% removed): raw ${RAW2}s, bronze ${BRONZE2}s, silver ${SILVER2}s, whole run ${TOTAL2}s
$(echo "$COUNTS2" | sed 's/^/  /')
rerun vs initial load (whole run)      $(r "$TOTAL2 / $TOTAL1")   (target <= 0.2)
  per layer: raw $(r "$RAW2 / $RAW1"), bronze $(r "$BRONZE2 / $BRONZE1"), silver $(r "$SILVER2 / $SILVER1")
EOT
fi
