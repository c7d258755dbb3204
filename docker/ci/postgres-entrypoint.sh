#!/usr/bin/env bash
# CI PostgreSQL: initialise the cluster on first start (password from POSTGRES_PASSWORD_FILE,
# scram-sha-256 over the network), create POSTGRES_DB and POSTGRES_EXTRA_DATABASES, tune
# FERRETDB_DB (one of them) with /etc/dp/ferretdb-tuning.sql, then run the server in the
# foreground as PID 1.
set -euo pipefail
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [[ ! -s $PGDATA/PG_VERSION ]]; then
  pwfile=${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE is required}
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /run/postgresql" -w start >/dev/null
  for db in "$POSTGRES_DB" ${POSTGRES_EXTRA_DATABASES:-}; do
    [[ $db == postgres ]] && continue
    psql -h /run/postgresql -U "$POSTGRES_USER" -d postgres -qc "CREATE DATABASE \"$db\""
  done
  # FerretDB's database tuned for bronze (FERRETDB_DB, docker/ferretdb-tuning.sql mounted)
  if [[ -n ${FERRETDB_DB:-} ]]; then
    psql -h /run/postgresql -U "$POSTGRES_USER" -d "$FERRETDB_DB" -q -v ON_ERROR_STOP=1 -f /etc/dp/ferretdb-tuning.sql
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgres-entrypoint: initialised $PGDATA (databases: $POSTGRES_DB ${POSTGRES_EXTRA_DATABASES:-})"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -k /run/postgresql
