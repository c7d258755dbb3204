#!/usr/bin/env bash
# docker/entrypoint.sh — the dp-engine container's entrypoint (installed as
# /usr/local/bin/dp-entrypoint). See docs/deployment.md.
#
#   (no arguments) | serve   wait for PostgreSQL and MongoDB (bounded), `dp-engine migrate`,
#                            `dp-engine metadata push` when DP_METADATA=mongo, then
#                            `exec dp-engine serve` (PID 1, so SIGTERM reaches it)
#   health                   GET /health on DP_LISTEN's port: the image's HEALTHCHECK
#   anything else            `exec dp-engine ARGS...` with the same secrets set up, e.g.
#                            `docker compose run --rm dp-engine run bank`
#
# Secrets come from files (Docker secrets under /run/secrets), never from environment values in
# the compose file:
#   DP_POSTGRES_PASSWORD_FILE  password of the user in DP_POSTGRES_URL (exported as PGPASSWORD,
#                              which libpq reads; it stays inside this process tree)
#   DP_MONGO_PASSWORD_FILE     password of the user in DP_MONGO_URL (put into the URL,
#                              percent-encoded)
#   DP_API_TOKEN_FILE, DP_MASTER_KEY_FILE   read by dp-engine itself
# Settings: DP_WAIT_TIMEOUT (seconds to wait for each database, default 120), DP_METADATA_DIR
# (the folder pushed when DP_METADATA=mongo, default /srv/dp/metadata).
set -euo pipefail

log() { printf 'entrypoint: %s\n' "$*" >&2; }
die() { printf 'entrypoint: error: %s\n' "$*" >&2; exit "${2:-1}"; }

# The port of DP_LISTEN (HOST:PORT, [v6]:PORT or PORT).
listen_port() {
  local l=${DP_LISTEN:-127.0.0.1:8080}
  printf '%s\n' "${l##*:}"
}

health() {
  exec curl -fsS --max-time 4 -o /dev/null "http://127.0.0.1:$(listen_port)/health"
}

# Read a secret file: the whole file less one trailing newline; an empty or unreadable file is
# an error that names the variable (never the value).
read_secret() { # VAR FILE
  [[ -r $2 ]] || die "$1=$2: no such file or not readable (is the secret mounted?)" 2
  local v
  v=$(<"$2")
  [[ -n $v ]] || die "$1=$2 is empty" 2
  printf '%s' "$v"
}

# Percent-encode every byte outside RFC 3986's unreserved set (UTF-8 bytes one by one).
urlencode() {
  local LC_ALL=C
  local s=$1 i c out=""
  for (( i = 0; i < ${#s}; i++ )); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9._~-]) out+=$c ;;
      *) out+=$(printf '%%%02X' "'$c") ;;
    esac
  done
  printf '%s' "$out"
}

load_secrets() {
  if [[ -n ${DP_POSTGRES_PASSWORD_FILE:-} ]]; then
    PGPASSWORD=$(read_secret DP_POSTGRES_PASSWORD_FILE "$DP_POSTGRES_PASSWORD_FILE")
    export PGPASSWORD
  fi
  if [[ -n ${DP_MONGO_PASSWORD_FILE:-} && -n ${DP_MONGO_URL:-} ]]; then
    local pw rest scheme userinfo
    pw=$(urlencode "$(read_secret DP_MONGO_PASSWORD_FILE "$DP_MONGO_PASSWORD_FILE")")
    scheme=${DP_MONGO_URL%%://*}
    rest=${DP_MONGO_URL#*://}
    [[ $rest == *@* ]] || die "DP_MONGO_PASSWORD_FILE is set but DP_MONGO_URL names no user (mongodb://USER@host:27017/)" 2
    userinfo=${rest%%@*}
    DP_MONGO_URL="$scheme://${userinfo%%:*}:$pw@${rest#*@}"
    export DP_MONGO_URL
  fi
}

# host and port of the first host in a postgresql:// or mongodb:// URI; nothing for other forms
# (a libpq key=value string), which are then not waited for.
uri_host_port() { # URI DEFAULT_PORT
  local u=$1 hp
  [[ $u == *://* ]] || return 0
  u=${u#*://}
  hp=${u%%[/?]*}
  hp=${hp##*@}
  hp=${hp%%,*}
  [[ -n $hp ]] || return 0
  if [[ $hp == \[* ]]; then            # [v6]:port
    local h=${hp%%]*}; h=${h#[}
    local p=${hp##*]}; p=${p#:}
    printf '%s %s\n' "$h" "${p:-$2}"
  elif [[ $hp == *:* ]]; then
    printf '%s %s\n' "${hp%%:*}" "${hp##*:}"
  else
    printf '%s %s\n' "$hp" "$2"
  fi
}

# Wait until HOST:PORT accepts TCP connections, for at most DP_WAIT_TIMEOUT seconds.
wait_for() { # NAME URI DEFAULT_PORT
  local hp host port deadline=$((SECONDS + ${DP_WAIT_TIMEOUT:-120}))
  hp=$(uri_host_port "$2" "$3")
  if [[ -z $hp ]]; then
    log "$1: not a URI with a host; not waiting"
    return 0
  fi
  read -r host port <<<"$hp"
  log "waiting for $1 at $host:$port (up to ${DP_WAIT_TIMEOUT:-120} s)"
  until timeout 3 bash -c ": >/dev/tcp/$host/$port" 2>/dev/null; do
    if (( SECONDS >= deadline )); then
      die "$1 at $host:$port did not accept connections within ${DP_WAIT_TIMEOUT:-120} s (is the service running? is the host name right? set DP_WAIT_TIMEOUT to wait longer)"
    fi
    sleep 2
  done
  log "$1 at $host:$port accepts connections"
}

# `dp-engine migrate`, retried a few times: a server that just opened its port may still refuse
# connections while it starts up. A migration error repeats and then stops the container.
migrate() {
  local try
  for try in 1 2 3 4 5; do
    if dp-engine migrate; then return 0; fi
    (( try < 5 )) && { log "migrate failed (attempt $try of 5); retrying in 3 s"; sleep 3; }
  done
  die "dp-engine migrate failed 5 times; the container stops (see the errors above)"
}

start() {
  [[ -n ${DP_POSTGRES_URL:-} ]] || die "DP_POSTGRES_URL is not set" 2
  [[ -n ${DP_MONGO_URL:-} ]] || die "DP_MONGO_URL is not set" 2
  wait_for PostgreSQL "$DP_POSTGRES_URL" 5432
  wait_for MongoDB "$DP_MONGO_URL" 27017
  log "$(dp-engine --version 2>/dev/null | head -n 1): migrate"
  migrate
  if [[ ${DP_METADATA:-} == mongo ]]; then
    local dir=${DP_METADATA_DIR:-/srv/dp/metadata}
    log "metadata push --dir $dir"
    dp-engine metadata push --dir "$dir" ||
      die "dp-engine metadata push --dir $dir failed: nothing was replaced; fix the metadata and restart"
  fi
  log "exec dp-engine serve"
  exec dp-engine serve
}

# (sourced by docker/ci.sh to test the functions: then nothing runs)
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0

# TMPDIR (compose.yml points it into the data volume) must exist before the engine spills there.
make_tmpdir() {
  [[ -z ${TMPDIR:-} || -d $TMPDIR ]] || mkdir -p "$TMPDIR" || die "cannot create TMPDIR=$TMPDIR" 2
}

case ${1:-serve} in
  health) health ;;
  serve)
    (( $# <= 1 )) || die "serve takes no arguments here (configure it with DP_* variables)" 2
    load_secrets
    make_tmpdir
    start
    ;;
  *)
    load_secrets
    make_tmpdir
    exec dp-engine "$@"
    ;;
esac
