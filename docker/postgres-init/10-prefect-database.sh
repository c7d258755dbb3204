#!/bin/sh
# Runs once, when the postgres image initialises an empty data volume: the second database,
# for the Prefect server (owned by the same user). See docs/deployment.md.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"${PREFECT_DB:-prefect}\" OWNER \"$POSTGRES_USER\""
