#!/bin/sh
# Runs once, when the postgres image initialises an empty data volume, and only in the FerretDB
# variant of the stack (compose.ferretdb.yml sets FERRETDB_DB): FerretDB's database, tuned for
# bronze with docker/ferretdb-tuning.sql (docs/deployment.md#bronze-on-ferretdb).
set -eu
[ -n "${FERRETDB_DB:-}" ] || exit 0
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"$FERRETDB_DB\" OWNER \"$POSTGRES_USER\""
psql -v ON_ERROR_STOP=1 -q --username "$POSTGRES_USER" --dbname "$FERRETDB_DB" -f /etc/dp/ferretdb-tuning.sql
