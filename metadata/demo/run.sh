#!/usr/bin/env bash
# metadata/demo/run.sh: the demo, end to end, on a fresh machine.
#
# Installs what is missing and starts throwaway PostgreSQL and FerretDB on loopback
# (spec/services.sh), builds dp-engine, migrates a demo database, then runs the demo "bank"
# system twice: first with export-1, then with export-2, which changes, removes and adds
# transactions. It shows the audit rows and the silver history (SCD2 at work), then runs the
# other file-based example systems (fitness, listening) on their two sample exports, pushes the
# metadata to MongoDB and runs bank once more from the pushed copy (DP_METADATA=mongo).
#
# Everything lives under .dp/ of the checkout: the demo resets its own database (dp_demo),
# its bronze and metadata databases and its data folder each time it starts, so it can be rerun.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$ROOT"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting local services (installs what is missing on first use)"
# (in two steps: `eval "$(...)"` alone would go on when starting them failed)
services_env=$(spec/services.sh start) || exit 1
eval "$services_env"

say "Building dp-engine"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null

ADMIN_URL=$DP_POSTGRES_URL
export DP_POSTGRES_URL=${ADMIN_URL%/*}/dp_demo
export DP_BRONZE_DB=bronze
export DP_METADATA_DB=metadata_demo
export DP_DATA_DIR=$ROOT/.dp/demo/data
export DP_METADATA=$ROOT/metadata
export DP_HOME=$ROOT
export MONGOC_DISABLE_SHM=1  # see spec/run.sh
export DP_LOG_LEVEL=${DP_LOG_LEVEL:-warn}
INBOX=$DP_DATA_DIR/inbox/bank

say "Resetting the demo database, bronze and data folder"
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS dp_demo WITH (FORCE)" -c "CREATE DATABASE dp_demo"
luajit -e "package.cpath='build/?.so;'..package.cpath
  local m = assert(require('dp.core').mongo_connect(os.getenv('DP_MONGO_URL')))
  assert(m:command('bronze', '{\"dropDatabase\": 1}'))
  assert(m:command('metadata_demo', '{\"dropDatabase\": 1}'))"
rm -rf "$DP_DATA_DIR"
mkdir -p "$INBOX"

say "dp-engine migrate"
build/dp-engine migrate

say "dp-engine metadata validate"
build/dp-engine metadata validate

say "Run 1: the first bank export lands in the inbox"
cp metadata/demo/bank/export-1/* "$INBOX/"
touch -d '1 minute ago' "$INBOX"/*   # files changed in the last 2 s count as still being written
build/dp-engine run bank

say "Run 2: the next export changes TX-1002 (category, scd1) and TX-1005 (amount, scd2), drops TX-1004, adds TX-1007 and TX-1008"
rm -f "$INBOX"/*
cp metadata/demo/bank/export-2/* "$INBOX/"
touch -d '1 minute ago' "$INBOX"/*
build/dp-engine run bank

say "audit.system_run"
psql -q "$DP_POSTGRES_URL" -c "SELECT run_id, system, status, started_at::time(3) AS started,
  entities_succeeded AS ok, entities_failed AS failed FROM audit.system_run ORDER BY started_at"

say "audit.entity_layer_run (silver)"
psql -q "$DP_POSTGRES_URL" -c "SELECT r.run_id, e.entity, e.status, records_in AS in, records_inserted AS ins,
  records_updated AS upd, records_deleted AS del, records_unchanged AS same, records_rejected AS rej
  FROM audit.entity_layer_run e JOIN audit.system_run r USING (run_id)
  WHERE layer = 'silver' ORDER BY r.started_at, e.entity"

say "silver.bank__transactions: every version, oldest first"
psql -q "$DP_POSTGRES_URL" -c "SELECT id, amount, category, description, _dp_valid_from::time(3) AS valid_from,
  _dp_valid_to::time(3) AS valid_to, _dp_is_current AS current
  FROM silver.bank__transactions ORDER BY id, _dp_valid_from"

say "silver.bank__accounts"
psql -q "$DP_POSTGRES_URL" -c "SELECT iban, name, balance, balance_at, joint, _dp_valid_from::time(3) AS valid_from,
  _dp_valid_to::time(3) AS valid_to, _dp_is_current AS current FROM silver.bank__accounts ORDER BY iban, _dp_valid_from"

say "The other file-based example systems: fitness and listening, two exports each"
for system in fitness listening; do
  for export in metadata/demo/$system/export-*/; do
    rm -rf "${DP_DATA_DIR:?}/inbox/$system"
    mkdir -p "$DP_DATA_DIR/inbox/$system"
    cp "$export"* "$DP_DATA_DIR/inbox/$system/"
    touch -d '1 minute ago' "$DP_DATA_DIR/inbox/$system"/*
    echo "-- $system, $(basename "$export")"
    build/dp-engine run "$system"
  done
done

say "Current rows per silver table"
psql -q "$DP_POSTGRES_URL" -c "SELECT 'fitness__activities' AS table, count(*) FILTER (WHERE _dp_is_current) AS current, count(*) AS versions FROM silver.fitness__activities
  UNION ALL SELECT 'fitness__sleep', count(*) FILTER (WHERE _dp_is_current), count(*) FROM silver.fitness__sleep
  UNION ALL SELECT 'fitness__body_measurements', count(*) FILTER (WHERE _dp_is_current), count(*) FROM silver.fitness__body_measurements
  UNION ALL SELECT 'listening__streams', count(*) FILTER (WHERE _dp_is_current), count(*) FROM silver.listening__streams
  UNION ALL SELECT 'listening__playlists', count(*) FILTER (WHERE _dp_is_current), count(*) FROM silver.listening__playlists"

say "Gold (docs/gold.md): dp-engine gold run monthly_overview listening_daily"
build/dp-engine gold run monthly_overview listening_daily
psql -q "$DP_POSTGRES_URL" -c "SELECT month, spent, transactions, training_hours, workouts FROM gold.monthly_overview ORDER BY month"
psql -q "$DP_POSTGRES_URL" -c "SELECT day, minutes, plays, streak_days FROM gold.listening_daily ORDER BY day"

say "dp-engine metadata push, then a run that reads the pushed metadata (DP_METADATA=mongo)"
build/dp-engine metadata push
DP_METADATA=mongo build/dp-engine metadata show bank.accounts
DP_METADATA=mongo build/dp-engine run bank
psql -q "$DP_POSTGRES_URL" -c "SELECT system, status, left(metadata_hash, 12) AS metadata_hash FROM audit.system_run
  WHERE system = 'bank' ORDER BY started_at"

say "dp-engine serve (docs/triggers.md): the HTTP API starts a run, the status page shows it"
TOKEN=demo-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
DEMO_DIR=$ROOT/.dp/demo
SERVE_OUT=$DEMO_DIR/serve.out
DP_API_TOKEN=$TOKEN DP_LISTEN=127.0.0.1:0 DP_LOG_LEVEL=warn build/dp-engine serve >"$SERVE_OUT" 2>"$DEMO_DIR/serve.err" &
SERVE_PID=$!
for _ in $(seq 1 100); do grep -q "listening on port" "$SERVE_OUT" && break; sleep 0.1; done
URL=http://127.0.0.1:$(sed -n 's/.*listening on port //p' "$SERVE_OUT")
echo "-- GET $URL/health"
curl -s "$URL/health"; echo
echo "-- POST $URL/api/v1/hooks/bank/new_export (a callback trigger of the bank system)"
RUN=$(curl -s -X POST -H "Authorization: Bearer $TOKEN" "$URL/api/v1/hooks/bank/new_export" -d '{"file": "demo"}')
echo "$RUN"
RUN_ID=$(sed -n 's/.*"run_id":"\([^"]*\)".*/\1/p' <<<"$RUN")
for _ in $(seq 1 100); do
  # the run's own status is the first in the document (its layers and entities follow)
  STATUS=$(curl -s -H "Authorization: Bearer $TOKEN" "$URL/api/v1/runs/$RUN_ID" | grep -o '"status":"[a-z]*"' | head -n 1 || true)
  case $STATUS in *succeeded* | *failed* | *partial*) break ;; esac
  sleep 0.2
done
echo "-- GET $URL/api/v1/runs?system=bank&limit=2"
curl -s -H "Authorization: Bearer $TOKEN" "$URL/api/v1/runs?system=bank&limit=2"; echo
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true
echo "(serve stopped; run it yourself and open the status page at http://127.0.0.1:8080/#token=YOUR_TOKEN:"
echo " DP_API_TOKEN=YOUR_TOKEN build/dp-engine serve, with the environment below)"

cat <<EOT

Done. To look around yourself:
  export DP_POSTGRES_URL=$DP_POSTGRES_URL DP_MONGO_URL=$DP_MONGO_URL DP_BRONZE_DB=bronze DP_DATA_DIR=$DP_DATA_DIR
  export DP_METADATA_DB=metadata_demo
  psql "\$DP_POSTGRES_URL"          # audit.*, silver.*, gold.*
  ls -R $DP_DATA_DIR/raw            # raw JSON Lines files and their manifests
Stop the services with: spec/services.sh stop
EOT
