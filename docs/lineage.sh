#!/usr/bin/env bash
# docs/lineage.sh: draws the lineage of the example platform into docs/lineage.svg
# (`dp-engine lineage --format dot` rendered by Graphviz's dot), for docs/cli.md.
#
# So that the picture shows real run statuses, it runs the three example systems on their first
# export and both gold models, in a database, bronze database and data folder of its own
# (dp_lineage, bronze_lineage, .dp/lineage/), which it resets each time. Needs the local services
# (spec/services.sh start), a build (build/dp-engine) and graphviz (apt-get install graphviz).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
command -v dot >/dev/null || { echo "docs/lineage.sh: needs Graphviz's dot (apt-get install graphviz)" >&2; exit 2; }

eval "$(spec/services.sh env)"
ADMIN_URL=$DP_POSTGRES_URL
export DP_POSTGRES_URL=${ADMIN_URL%/*}/dp_lineage
export DP_BRONZE_DB=bronze_lineage DP_DATA_DIR=$ROOT/.dp/lineage/data DP_METADATA=$ROOT/metadata DP_HOME=$ROOT
export DP_LOG_LEVEL=warn MONGOC_DISABLE_SHM=1

psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS dp_lineage WITH (FORCE)" -c "CREATE DATABASE dp_lineage"
luajit -e "package.cpath='build/?.so;'..package.cpath
  local m = assert(require('dp.core').mongo_connect(os.getenv('DP_MONGO_URL')))
  assert(m:command('bronze_lineage', '{\"dropDatabase\": 1}'))"
rm -rf "$DP_DATA_DIR"
build/dp-engine migrate >/dev/null
for system in bank fitness listening; do
  mkdir -p "$DP_DATA_DIR/inbox/$system"
  cp metadata/demo/$system/export-1/* "$DP_DATA_DIR/inbox/$system/"
  touch -d '1 minute ago' "$DP_DATA_DIR/inbox/$system"/*  # files changed in the last 2 s count as still being written
  build/dp-engine run "$system" >/dev/null
done
build/dp-engine gold run monthly_overview listening_daily >/dev/null
build/dp-engine lineage
build/dp-engine lineage --format dot | dot -Tsvg -o docs/lineage.svg
echo "docs/lineage.sh: wrote docs/lineage.svg"
