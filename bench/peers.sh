#!/usr/bin/env bash
# bench/peers.sh [N]: dp-engine beside its peers on the same rows, ratios from one run.
#
# Runs bench/silver_bench.sh N (dp-engine's initial load and its rerun with 1% changed and 0.1%
# removed), then loads the very same two files (bench/gen_wide.lua, deterministic) with
#   dlt       write_disposition merge, strategy scd2, primary key id, into PostgreSQL: its
#             rerun retires the rows a load no longer has with a NOT IN that needs work_mem of
#             64MB (it runs for minutes with PostgreSQL's default 4MB), so the bench database
#             has `ALTER DATABASE … SET work_mem = '64MB'` for both of its runs;
#   dbt       a dbt-postgres snapshot (strategy check on every column, unique_key id,
#             hard_deletes invalidate) of a table COPYed from the same file (the COPY is timed
#             with it: a snapshot needs its input in the database);
# each into its own database of the same PostgreSQL (the test services, spec/services.sh).
# dlt and dbt-core 1.11 (1.12 does not install here) go to venvs cached outside the clone, in
# ${BENCH_VENV:-~/.cache/dp-engine/bench-venv}/{dlt,dbt}, installed by pip on the first run.
# Prints dp-engine's figures (silver_bench.sh's table), then the peers' and the ratios.
# BENCH_TAG suffixes every database name (several clones share the services).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
N=${1:-100000}
VENV=${BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/dp-engine/bench-venv}
TAG=${BENCH_TAG:+_$BENCH_TAG}
WORK=$ROOT/.dp/bench
PEERS=$ROOT/.dp/bench-peers
now() { date +%s.%N; }
export PGOPTIONS="-c client_min_messages=warning"
r() { printf '%.2f' "$(echo "$1" | bc -l)"; }

venv() { # venv NAME PACKAGES...: a venv with these packages, made once
  local dir=$VENV/$1
  shift
  if [[ ! -f $dir/.done ]]; then
    echo "peers: installing $* into $dir" >&2
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@" >&2
    touch "$dir/.done"
  fi
}
venv dlt "dlt[postgres]==1.31.*" psycopg2-binary
venv dbt "dbt-core==1.11.*" "dbt-postgres==1.11.*"

# dp-engine first: it also writes the two export files (BENCH_PEERS_ONLY=1: the peers alone, on
# the files and figures of the last run)
[[ ${BENCH_PEERS_ONLY:-0} == 1 ]] || BENCH_TAG=${BENCH_TAG:-} bash bench/silver_bench.sh "$N" | tee "$PEERS.engine.txt"
ENGINE1=$(sed -n 's/.*whole run \([0-9.]*\)s, peak.*/\1/p' "$PEERS.engine.txt")
ENGINE2=$(sed -n 's/^run 2 .*whole run \([0-9.]*\)s$/\1/p' "$PEERS.engine.txt")

eval "$(spec/services.sh env)"
ADMIN_URL=$DP_POSTGRES_URL
HOSTPORT=${ADMIN_URL#postgresql://}; HOSTPORT=${HOSTPORT#*@}; HOSTPORT=${HOSTPORT%%/*}
rm -rf "$PEERS"
mkdir -p "$PEERS"

# ---------- dlt: merge, scd2 ----------
DLT_DB=dlt_bench$TAG
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DLT_DB WITH (FORCE)" -c "CREATE DATABASE $DLT_DB" \
  -c "ALTER DATABASE $DLT_DB SET work_mem = '64MB'"
cat >"$PEERS/dlt_load.py" <<'EOF'
import json, sys, dlt
path, url = sys.argv[1], sys.argv[2]

@dlt.resource(name="wide", primary_key="id",
              write_disposition={"disposition": "merge", "strategy": "scd2"})
def wide():
    with open(path) as f:
        for line in f:
            yield json.loads(line)

p = dlt.pipeline(pipeline_name="bench", destination=dlt.destinations.postgres(url),
                 dataset_name="bench", pipelines_dir=sys.argv[3])
print(p.run(wide()), file=sys.stderr)
EOF
dlt_run() {
  "$VENV/dlt/bin/python" "$PEERS/dlt_load.py" "$1" "postgresql://dp:unused@$HOSTPORT/$DLT_DB" "$PEERS/dlt-state" \
    2>>"$PEERS/dlt.log" >&2
}
# peer NAME DB TABLE VALID_TO: runs NAME_run on both files; sets T_INIT, T_RERUN and ROWS
peer() {
  local t0
  echo "peers: $1, initial load" >&2
  t0=$(now); "$1_run" "$WORK/export-1.jsonl"; T_INIT=$(echo "$(now) - $t0" | bc -l)
  echo "peers: $1, rerun (1% changed, 0.1% removed)" >&2
  t0=$(now); "$1_run" "$WORK/export-2.jsonl"; T_RERUN=$(echo "$(now) - $t0" | bc -l)
  ROWS=$(psql -qAt "postgresql://dp@$HOSTPORT/$2" -c \
    "SELECT count(*) || ' rows, ' || count(*) FILTER (WHERE $4 IS NULL) || ' current' FROM $3")
}
peer dlt "$DLT_DB" bench.wide _dlt_valid_to
DLT1=$T_INIT DLT2=$T_RERUN DLT_ROWS=$ROWS

# ---------- dbt: snapshot, strategy check, hard deletes invalidated ----------
DBT_DB=dbt_bench$TAG
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DBT_DB WITH (FORCE)" -c "CREATE DATABASE $DBT_DB"
DBT=$PEERS/dbt
mkdir -p "$DBT/snapshots" "$DBT/models"
cat >"$DBT/dbt_project.yml" <<'EOF'
name: bench
version: "1.0"
profile: bench
snapshot-paths: [snapshots]
model-paths: [models]
EOF
cat >"$DBT/profiles.yml" <<EOF
bench:
  target: pg
  outputs:
    pg:
      type: postgres
      host: ${HOSTPORT%:*}
      port: ${HOSTPORT#*:}
      user: dp
      password: unused
      dbname: $DBT_DB
      schema: bench
      threads: 1
EOF
cat >"$DBT/models/sources.yml" <<'EOF'
version: 2
sources:
  - name: raw
    schema: public
    tables: [{name: wide}]
EOF
cat >"$DBT/snapshots/wide.yml" <<'EOF'
snapshots:
  - name: wide_snapshot
    relation: source('raw', 'wide')
    config:
      unique_key: id
      strategy: check
      check_cols: all
      hard_deletes: invalidate
EOF
# the same typed columns silver has, from the same JSON lines
DBT_LOAD="DROP TABLE IF EXISTS public.wide_json, public.wide;
CREATE TABLE public.wide_json (j jsonb);
\\copy public.wide_json FROM '%s' WITH (FORMAT text)
CREATE TABLE public.wide AS SELECT (j->>'id')::bigint AS id, j->>'name' AS name, j->>'email' AS email,
  (j->>'amount')::numeric(12,2) AS amount, (j->>'qty')::int AS qty, (j->>'price')::double precision AS price,
  (j->>'active')::boolean AS active, (j->>'born')::date AS born, (j->>'created')::timestamptz AS created,
  j->>'note' AS note, j->'tags' AS tags, (j->>'uid')::uuid AS uid, j#>>'{address,city}' AS city,
  (j->>'score')::numeric AS score, (j->>'total')::bigint AS total, (j->>'flag')::boolean AS flag,
  (j->>'updated')::timestamptz AS updated, (j->>'level')::int AS level, (j->>'ratio')::double precision AS ratio,
  j->>'category' AS category FROM public.wide_json;
DROP TABLE public.wide_json;"
dbt_run() {
  # shellcheck disable=SC2059 # the format is ours
  printf "$DBT_LOAD" "$1" | psql -q -v ON_ERROR_STOP=1 "postgresql://dp@$HOSTPORT/$DBT_DB" >&2
  (cd "$DBT" && "$VENV/dbt/bin/dbt" snapshot --profiles-dir . --quiet >>"$PEERS/dbt.log" 2>&1)
}
peer dbt "$DBT_DB" bench.wide_snapshot dbt_valid_to
DBT1=$T_INIT DBT2=$T_RERUN DBT_ROWS=$ROWS

cat <<EOT

peers, N = $N (same files, primary key id)
  dlt 1.31 merge/scd2 (work_mem 64MB):   initial $(r "$DLT1") s, rerun $(r "$DLT2") s   ($DLT_ROWS)
  dbt-core 1.11 snapshot (check):        initial $(r "$DBT1") s, rerun $(r "$DBT2") s   ($DBT_ROWS)
  dp-engine (whole runs):                initial $(r "$ENGINE1") s, rerun $(r "$ENGINE2") s
whole rerun vs whole initial load        $(r "$ENGINE2 / $ENGINE1")   (target <= 0.2)
whole rerun vs dlt's rerun               $(r "$ENGINE2 / $DLT2")   (target < 1)
whole initial load vs dlt's initial      $(r "$ENGINE1 / $DLT1")   (target <= 1)
whole rerun vs dbt snapshot's rerun      $(r "$ENGINE2 / $DBT2")
EOT
