#!/usr/bin/env bash
# CI FerretDB: the PostgreSQL password comes from a secret file (FERRETDB_PG_PASSWORD_FILE) and
# goes into the backend URL here, not into the compose file.
set -euo pipefail
pw=$(<"${FERRETDB_PG_PASSWORD_FILE:?}")
exec ferretdb --listen-addr=:27017 --handler=postgresql \
  --postgresql-url="postgres://${FERRETDB_PG_USER:?}:$pw@${FERRETDB_PG_HOST:?}:5432/${FERRETDB_PG_DB:-ferretdb}" \
  --telemetry=disable --state-dir=/state --log-level=warn
