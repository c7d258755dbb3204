#!/usr/bin/env bash
# bench/serve_bench.sh: dp-engine serve's figures, all measured in one run on the local services
# (spec/services.sh); docs/performance.md keeps the figures of a reference run.
#
#   callback latency  POST /api/v1/hooks/hooked/ping -> the run's audit row exists (status
#                     running): median and p95 over 100 calls, each on an idle serve (the previous
#                     run finished), on a system whose run is trivial (target: median <= 50 ms)
#   idle RSS          of serve with the example metadata loaded (target <= 30 MB)
#   leak check        RSS after those 100 runs and 1,000 API calls / RSS after the first 10 runs
#                     (warm: connection pool, Lua states, allocator arenas) (target <= 1.10)
#   read latency      1,000 GET /api/v1/runs at concurrency 20 (curl --parallel) while two runs
#                     execute (two systems busy for 4 s each): median and p99
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# (in two steps: `eval "$(...)"` alone would go on when starting them failed)
services_env=$(spec/services.sh start) || exit 1
eval "$services_env"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null

ADMIN_URL=$DP_POSTGRES_URL
WORK=$ROOT/.dp/serve-bench
rm -rf "$WORK"
mkdir -p "$WORK/scripts/connectors" "$WORK/scripts/gold" "$WORK/data/inbox/bank"
cp connectors/*.lua spec/fixtures/serve/connectors/*.lua "$WORK/scripts/connectors/"
cp spec/fixtures/serve/gold/*.lua "$WORK/scripts/gold/"
export DP_HOME=$ROOT DP_SCRIPTS=$WORK/scripts DP_DATA_DIR=$WORK/data MONGOC_DISABLE_SHM=1 DP_LOG_LEVEL=warn
export DP_POSTGRES_URL=${ADMIN_URL%/*}/dp_serve_bench DP_BRONZE_DB=bronze_serve_bench
export DP_API_TOKEN=bench-token-0123456789abcdef DP_WORKERS=2
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS dp_serve_bench WITH (FORCE)" -c "CREATE DATABASE dp_serve_bench"
build/dp-engine migrate >/dev/null

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
start_serve() { # METADATA -> sets PID, URL
  local out=$WORK/serve.out
  : >"$out"
  DP_METADATA=$1 DP_LISTEN=127.0.0.1:0 build/dp-engine serve >"$out" 2>>"$WORK/serve.err" &
  PID=$!
  for _ in $(seq 1 200); do grep -q "listening on port" "$out" && break; sleep 0.05; done
  URL=http://127.0.0.1:$(sed -n 's/.*listening on port //p' "$out")
}
stop_serve() { kill -TERM "$PID"; wait "$PID" || true; }

# idle RSS with the example metadata (no inbox files, so no file trigger fires; the listening
# system's schedule may catch up once: wait for it)
DP_SCRIPTS=$ROOT start_serve "$ROOT/metadata"
sleep 3
IDLE_EXAMPLE_KB=$(rss_kb "$PID")
stop_serve

start_serve "$ROOT/spec/fixtures/serve/metadata"
export URL PID
luajit - <<'LUA' >"$WORK/latency.txt"
package.cpath = "build/?.so;" .. package.cpath
local core = require "dp.core"
local pg = assert(core.pg_connect(os.getenv("DP_POSTGRES_URL")))
local http = core.http_client()
local url, token = os.getenv("URL"), os.getenv("DP_API_TOKEN")
local function post(path)
  local r = assert(http:request { method = "POST", url = url .. path, body = '{"n": 1}',
    headers = { "Authorization: Bearer " .. token, "Content-Type: application/json" }, timeout = 10 })
  assert(r.status == 202, r.body)
  return r.body:match('"run_id":"([^"]+)"')
end
local function wait(sql, id)
  while true do
    local r = assert(pg:query(sql, id))
    if r[1] then return end
    core.sleep(0.0005)
  end
end
local function rss_kb()
  for l in io.lines("/proc/" .. os.getenv("PID") .. "/status") do
    local kb = l:match("^VmRSS:%s+(%d+)")
    if kb then return tonumber(kb) end
  end
end
local lat, warm = {}, nil
for i = 1, 100 do
  if i == 11 then warm = rss_kb() end -- after 10 runs: pools, Lua states and caches warmed up
  local t0 = core.monotonic()
  local id = post("/api/v1/hooks/hooked/ping")
  wait("SELECT 1 FROM audit.system_run WHERE run_id::text = $1", id)
  lat[i] = (core.monotonic() - t0) * 1000
  wait("SELECT 1 FROM audit.system_run WHERE run_id::text = $1 AND status <> 'running'", id)
end
table.sort(lat)
print(("%.1f %.1f %d"):format(lat[50], lat[95], warm))
LUA
read -r LAT_MED LAT_P95 RSS_WARM_KB <"$WORK/latency.txt"
RSS_AFTER_RUNS_KB=$(rss_kb "$PID")

# 1,000 API calls (reads), then RSS again
AUTH="Authorization: Bearer $DP_API_TOKEN"
: >"$WORK/urls.txt"
for i in $(seq 1 250); do
  for path in "/api/v1/runs?limit=20" /health /metrics "/api/v1/runs?system=hooked&limit=5"; do
    printf 'url = "%s%s"\noutput = "/dev/null"\n' "$URL" "$path" >>"$WORK/urls.txt"
  done
done
curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max 10 -H "$AUTH" -K "$WORK/urls.txt" -w '%{http_code}\n' >"$WORK/codes.txt"
BAD=$(grep -vc '^200$' "$WORK/codes.txt" || true)
RSS_AFTER_CALLS_KB=$(rss_kb "$PID")

# 1,000 GET /api/v1/runs at concurrency 20 while two runs execute
curl -s -X POST -H "$AUTH" "$URL/api/v1/systems/slow/runs" >/dev/null
curl -s -X POST -H "$AUTH" "$URL/api/v1/systems/slow_too/runs" >/dev/null
: >"$WORK/reads.txt"
for i in $(seq 1 1000); do printf 'url = "%s/api/v1/runs?limit=20"\noutput = "/dev/null"\n' "$URL" >>"$WORK/reads.txt"; done
T0=$(date +%s.%N)
curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max 20 -H "$AUTH" -K "$WORK/reads.txt" -w '%{http_code} %{time_total} %{time_connect} %{time_starttransfer}\n' >"$WORK/read-times.txt"
T1=$(date +%s.%N)
READ_BAD=$(awk '$1 != 200' "$WORK/read-times.txt" | wc -l)
read -r READ_MED READ_P99 < <(awk '{print $2 * 1000}' "$WORK/read-times.txt" | sort -n |
  awk '{v[NR] = $1} END {printf "%.1f %.1f\n", v[int(NR * 0.5)], v[int(NR * 0.99)]}')
stop_serve

awk -v idle="$IDLE_EXAMPLE_KB" -v warm="$RSS_WARM_KB" -v runs="$RSS_AFTER_RUNS_KB" -v calls="$RSS_AFTER_CALLS_KB" \
    -v med="$LAT_MED" -v p95="$LAT_P95" -v rmed="$READ_MED" -v rp99="$READ_P99" -v bad="$BAD" \
    -v rbad="$READ_BAD" -v secs="$(echo "$T1 - $T0" | bc)" 'BEGIN {
  printf "%-58s %10s %s\n", "figure", "value", "target"
  printf "%-58s %7.1f ms %s\n", "callback POST -> audit row running, median (100 calls)", med, "<= 50 ms"
  printf "%-58s %7.1f ms\n", "  the same, p95", p95
  printf "%-58s %7.1f MB %s\n", "idle RSS, example metadata loaded", idle / 1024, "<= 30 MB"
  printf "%-58s %7.1f MB\n", "RSS after 10 runs (warm)", warm / 1024
  printf "%-58s %7.1f MB\n", "RSS after 100 runs", runs / 1024
  printf "%-58s %7.1f MB\n", "RSS after 100 runs and 1,000 API calls", calls / 1024
  printf "%-58s %10.3f %s\n", "  growth (after / warm)", calls / warm, "<= 1.10"
  printf "%-58s %7.1f ms\n", "GET /api/v1/runs at concurrency 20 during two runs: median", rmed
  printf "%-58s %7.1f ms\n", "  the same, p99", rp99
  printf "%-58s %10.1f s\n", "  1,000 requests took", secs
  printf "%-58s %10d\n", "non-200 answers (of 2,000)", bad + rbad
}'
