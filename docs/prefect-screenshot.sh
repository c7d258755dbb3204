#!/usr/bin/env bash
# docs/prefect-screenshot.sh — takes docs/prefect-flow-run.png: Prefect's UI showing a dp-engine
# flow run with its task graph, from a real Prefect 3 server and a real run of the demo bank
# system (docs/orchestration.md).
#
# Usage: docs/prefect-screenshot.sh [OUT.png]
# Needs: the services (spec/services.sh start), a built build/dp-engine, Debian's chromium
# (installed here when missing), the Prefect venv (spec/prefect-venv.sh). Uses its own
# PostgreSQL database dp_docs_prefect[_$DP_SPEC_TAG], bronze database and data folder, and a
# Prefect server on a free port with PREFECT_HOME in a temporary folder; all removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-docs/prefect-flow-run.png}

if ! command -v chromium >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
fi
venv=$(bash spec/prefect-venv.sh)
eval "$(bash spec/services.sh start)"
[[ -x build/dp-engine ]] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build -j2; }

tag=${DP_SPEC_TAG:+_$DP_SPEC_TAG}
db=dp_docs_prefect$tag
tmp=$(mktemp -d /tmp/dp-prefect-shot.XXXXXX)
server_pid=
# shellcheck disable=SC2317,SC2329 # called by the trap
cleanup() {
  [[ -n $server_pid ]] && { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; }
  psql "$DP_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
api=http://127.0.0.1:$port/api
env -u PREFECT_API_URL PREFECT_HOME="$tmp/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
  PREFECT_UI_API_URL="$api" PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false \
  "$venv/bin/prefect" server start --host 127.0.0.1 --port "$port" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 120); do curl -fs "$api/health" >/dev/null && break; sleep 0.5; done
curl -fs "$api/health" >/dev/null || { tail -20 "$tmp/server.log" >&2; exit 1; }

psql "$DP_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export DP_POSTGRES_URL=${DP_POSTGRES_URL%/*}/$db DP_BRONZE_DB=bronze_docs_prefect$tag DP_DATA_DIR=$tmp/data \
  DP_METADATA=$PWD/metadata DP_HOME=$PWD MONGOC_DISABLE_SHM=1
./build/dp-engine migrate >/dev/null 2>&1
mkdir -p "$DP_DATA_DIR/inbox/bank"
cp metadata/demo/bank/export-1/* "$DP_DATA_DIR/inbox/bank/"
touch -d '1 minute ago' "$DP_DATA_DIR"/inbox/bank/*
PREFECT_API_URL=$api ./build/dp-engine run bank >"$tmp/run.txt"
run_id=$(sed -n 's/^run \([0-9a-f-]*\) of bank: .*/\1/p' "$tmp/run.txt")
echo "flow run $run_id" >&2
# the bronze database of this script goes too (through the dp.core module)
luajit -e 'package.cpath = "build/?.so;" .. package.cpath
  local m = assert(require("dp.core").mongo_connect(os.getenv("DP_MONGO_URL")))
  m:command(os.getenv("DP_BRONZE_DB"), [[{"dropDatabase": 1}]])' 2>/dev/null || true

chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,1000 \
  --virtual-time-budget=20000 --screenshot="$out" "http://127.0.0.1:$port/runs/flow-run/$run_id" 2>/dev/null
echo "wrote $out" >&2
