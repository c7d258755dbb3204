#!/usr/bin/env bash
# spec/services.sh — dependencies and throwaway local services for dp-engine's tests.
#
# Usage: spec/services.sh install|start|stop|status|env
#
#   install  install what is missing: Debian packages (build tools, libraries, LuaJIT, busted,
#            PostgreSQL), a Go toolchain, and a FerretDB v1.24.2 binary built once and cached
#            outside the clone. Fast and quiet when everything is present.
#   start    install, then start (or reuse) a throwaway PostgreSQL cluster and FerretDB on
#            loopback, under .dp/services/ of the clone; prints the `env` lines at the end.
#   stop     stop FerretDB, then PostgreSQL. Nothing happens when they are not running.
#   status   say what runs; exit 0 when both services run, 1 otherwise.
#   env      print the environment of the services, for: eval "$(spec/services.sh env)"
#
# Environment:
#   DP_PG_PORT       PostgreSQL port on 127.0.0.1 (default 55432)
#   DP_MONGO_PORT    FerretDB (MongoDB wire protocol) port on 127.0.0.1 (default 57017)
#   DP_SERVICES_DIR  where the services keep their data, logs and pid files
#                    (default .dp/services of the clone, which .gitignore ignores)
#
# Only `start` and `env` print to stdout (the env lines); progress and errors go to stderr.
# The data is throwaway: `spec/services.sh stop && rm -rf .dp/services` starts afresh.
set -euo pipefail
# Folders we create must stay open to the postgres user (see as_pg), even under a umask of 077.
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly PG_PORT=${DP_PG_PORT:-55432}
readonly MONGO_PORT=${DP_MONGO_PORT:-57017}
readonly SERVICES_DIR=${DP_SERVICES_DIR:-$ROOT/.dp/services}

# PostgreSQL: one folder owned by the server's user (postgres when we run as root).
readonly PG_DIR=$SERVICES_DIR/postgresql
readonly PGDATA=$PG_DIR/data
readonly PG_SOCKET_DIR=$PG_DIR/run
readonly PG_LOG=$PG_DIR/postgresql.log
readonly PG_INCLUDE=dp-services.conf       # rewritten at every start, included by postgresql.conf

# FerretDB: state folder, pid file and log beside it.
readonly FERRETDB_VERSION=v1.24.2
# The Go toolchain FerretDB v1.24.2 asks for (its go.mod: `go 1.24`, `toolchain go1.24.3`).
readonly FERRETDB_GO=go1.24.3
readonly FERRETDB_BIN=${XDG_CACHE_HOME:-$HOME/.cache}/dp-engine/ferretdb-$FERRETDB_VERSION/ferretdb
readonly FDB_STATE_DIR=$SERVICES_DIR/ferretdb
readonly FDB_PID=$SERVICES_DIR/ferretdb.pid
readonly FDB_LOG=$SERVICES_DIR/ferretdb.log

readonly DEBIAN_PACKAGES=(
  build-essential cmake pkg-config
  luajit libluajit-5.1-dev lua-cjson lua-busted
  libmongoc-dev libbson-dev libpq-dev libcurl4-openssl-dev libuv1-dev
  libsodium-dev libxxhash-dev zlib1g-dev libhttp-parser-dev
  postgresql postgresql-contrib
  # The HTTP test server of the connector specs (spec/http_server.py; standard library only).
  python3
  # The status page specs look at serve's pages with headless Chromium; curl drives the API specs.
  chromium curl
  # Not a library of ours, but a bare Debian image lacks it, and Go fetches modules over HTTPS.
  ca-certificates
)

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# Print the last lines of a log file to stderr, to explain a failure.
show_log() {
  [[ -f $1 ]] || return 0
  printf -- '--- last lines of %s ---\n' "$1" >&2
  tail -n 30 "$1" >&2 || true
  printf -- '---\n' >&2
}

[[ $PG_PORT =~ ^[0-9]+$ ]] || die "DP_PG_PORT must be a port number, not '$PG_PORT'"
[[ $MONGO_PORT =~ ^[0-9]+$ ]] || die "DP_MONGO_PORT must be a port number, not '$MONGO_PORT'"

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------

# Run a command as root: directly when we are root, else through sudo when there is one.
as_root() {
  if (( EUID == 0 )); then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "not root and no sudo: run as root: $*"
  fi
}

# True when a Debian package is installed. (`dpkg -s` also succeeds for a removed package that
# left its configuration files behind.)
pkg_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

# Install Debian packages; the package lists are refreshed first, as a bare image has none.
apt_install() {
  log "installing Debian packages: $*"
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >&2
}

install_debian_packages() {
  local pkg missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    pkg_installed "$pkg" || missing+=("$pkg")
  done
  (( ${#missing[@]} )) || return 0
  apt_install "${missing[@]}"
}

# Minor version of a Go toolchain: go1.19.8 -> 19. Go 2 does not exist, so the minor is enough.
go_minor() {
  local v
  v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go1.}
  printf '%s\n' "${v%%[!0-9]*}"
}

# Print the path of a `go` that can build FerretDB (Go >= 1.21, which switches itself to the
# toolchain FerretDB asks for when GOTOOLCHAIN=auto), installing one when needed.
find_go() {
  local go
  go=$(command -v go || true)
  [[ -n $go ]] || { [[ -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go; }
  if [[ -z $go ]]; then
    pkg_installed golang-go || apt_install golang-go
    go=/usr/bin/go
  fi
  local minor
  minor=$(go_minor "$go") || die "cannot run $go"
  if (( minor >= 21 )); then
    printf '%s\n' "$go"
    return
  fi
  # Debian 12's golang-go is Go 1.19, which predates toolchain switching (GOTOOLCHAIN). Do what
  # Go >= 1.21 does by itself: fetch the toolchain from the Go module proxy as the module
  # golang.org/toolchain, and mark its programs executable (module zips keep no file modes).
  local mod dir
  mod=golang.org/toolchain@v0.0.1-$FERRETDB_GO.$("$go" env GOOS)-$("$go" env GOARCH)
  log "$go is Go 1.$minor, too old for FerretDB: fetching $FERRETDB_GO through the Go module proxy"
  dir=$(cd / && GO111MODULE=on "$go" mod download -json "$mod" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [[ -n $dir && -f $dir/bin/go ]] || die "could not fetch $mod from the Go module proxy"
  find "$dir/bin" "$dir/pkg/tool" -type f -exec chmod a+rx {} +
  printf '%s\n' "$dir/bin/go"
}

# FerretDB v1.24.2, built once per machine and cached outside the clone (CI's fresh clones reuse it).
#
# `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` alone is not enough: the binary
# it builds panics at start ("Invalid build/version/version.txt file content"), because
# build/version/version.txt is generated by FerretDB's own build (Taskfile) and is not part of the
# published module. So `go install` only serves to fetch the module and its dependencies; then we
# copy the module source out of the (read-only) module cache, write the missing version.txt, and
# build from the copy. Once the modules are cached this takes a few seconds.
install_ferretdb() {
  # (the output is captured first: with pipefail, `ferretdb --version | grep -q` fails whenever
  # grep exits before ferretdb finished writing, and the cache would be rebuilt for nothing)
  local have=""
  [[ -x $FERRETDB_BIN ]] && have=$("$FERRETDB_BIN" --version 2>/dev/null)
  [[ ${have%%$'\n'*} == "version: $FERRETDB_VERSION" ]] && return 0
  local go
  go=$(find_go)
  log "building FerretDB $FERRETDB_VERSION with $go (once; cached in ${FERRETDB_BIN%/*})"
  local tmp
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/dp-ferretdb.XXXXXX")
  # Removed when the script exits, whichever way (the copied module source is read-only).
  # shellcheck disable=SC2064 # expand $tmp now: it is local
  trap "chmod -R u+w '$tmp' 2>/dev/null; rm -rf '$tmp'" EXIT
  export GOTOOLCHAIN=auto GOFLAGS=-buildvcs=false
  (cd "$tmp" && GOBIN=$tmp/bin "$go" install "github.com/FerretDB/FerretDB/cmd/ferretdb@$FERRETDB_VERSION") >&2 ||
    die "go install of FerretDB $FERRETDB_VERSION failed"
  local src
  src=$("$go" env GOMODCACHE)/github.com/!ferret!d!b/!ferret!d!b@$FERRETDB_VERSION
  [[ -d $src ]] || die "FerretDB module source not found at $src"
  cp -R "$src" "$tmp/src"
  chmod -R u+w "$tmp/src"
  printf '%s\n' "$FERRETDB_VERSION" >"$tmp/src/build/version/version.txt"
  (cd "$tmp/src" && "$go" build -o "$tmp/ferretdb" ./cmd/ferretdb) >&2 ||
    die "go build of FerretDB $FERRETDB_VERSION failed"
  have=$("$tmp/ferretdb" --version 2>/dev/null)
  [[ ${have%%$'\n'*} == "version: $FERRETDB_VERSION" ]] ||
    die "the FerretDB just built does not report version $FERRETDB_VERSION"
  mkdir -p "${FERRETDB_BIN%/*}"
  mv -f "$tmp/ferretdb" "$FERRETDB_BIN"   # atomic: a half-built binary is never cached
  log "FerretDB $FERRETDB_VERSION cached at $FERRETDB_BIN"
}

# promtool (the metrics specs check `GET /metrics` with it) comes in Debian's `prometheus` package,
# whose installation would also start a Prometheus server; so the package is only downloaded and
# promtool extracted from it, once, into the cache.
readonly PROMTOOL_BIN=${XDG_CACHE_HOME:-$HOME/.cache}/dp-engine/promtool/promtool
install_promtool() {
  [[ -x $PROMTOOL_BIN ]] && return 0
  log "extracting promtool from Debian's prometheus package (once)"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download prometheus >&2) || { as_root apt-get update -qq >&2 && (cd "$tmp" && apt-get download prometheus >&2); }
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p "${PROMTOOL_BIN%/*}"
  mv -f "$tmp/x/usr/bin/promtool" "$PROMTOOL_BIN"
  rm -rf "$tmp"
}

cmd_install() {
  install_debian_packages
  install_ferretdb
  install_promtool
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

# The bin folder of the PostgreSQL that owns the cluster, or of the highest version installed.
pg_bin() {
  local v
  if [[ -f $PGDATA/PG_VERSION ]]; then
    v=$(<"$PGDATA/PG_VERSION")
    [[ -x /usr/lib/postgresql/$v/bin/pg_ctl ]] ||
      die "the cluster in $PGDATA is PostgreSQL $v, which is not installed; remove $SERVICES_DIR"
  else
    v=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
    [[ -n $v && -x /usr/lib/postgresql/$v/bin/initdb ]] || die "no PostgreSQL server in /usr/lib/postgresql"
  fi
  printf '%s\n' "/usr/lib/postgresql/$v/bin"
}

# Run a command as the cluster's owner. PostgreSQL refuses to run as root, so when we are root
# the cluster belongs to the `postgres` user the Debian package creates. Run from / so that a
# working directory postgres cannot enter does not matter.
as_pg() {
  if (( EUID == 0 )); then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Create the cluster folder and, when root, hand it to postgres, checking that postgres can reach it.
prepare_pg_dir() {
  mkdir -p "$PG_DIR"
  (( EUID == 0 )) || return 0
  id postgres >/dev/null 2>&1 || die "no 'postgres' user (it comes with the postgresql package)"
  chown postgres:postgres "$PG_DIR"
  as_pg test -w "$PG_DIR" -a -x "$PG_DIR" && return 0
  # Find the folder on the way that postgres cannot enter, to say so.
  local d=$PG_DIR blocked=$PG_DIR
  while [[ $d != / ]]; do
    d=$(dirname "$d")
    as_pg test -x "$d" || blocked=$d
  done
  die "PostgreSQL runs as user 'postgres' (it refuses root), and postgres cannot enter $blocked
  ($(stat -c '%A %U:%G' "$blocked")), on the way to $PG_DIR.
  Either make the path traversable (chmod o+x $blocked), or put the services elsewhere:
  DP_SERVICES_DIR=/some/open/folder spec/services.sh start"
}

# Close every file descriptor above 2 of this (sub)shell, before it starts a server. A server
# must not inherit our lock (fd 9, which it would then hold for as long as it runs) nor a pipe of
# whoever called us (a CI job reading that pipe would wait for the server to exit).
close_inherited_fds() {
  local fd
  for fd in "/proc/$BASHPID/fd"/*; do
    fd=${fd##*/}
    if (( fd > 2 )); then eval "exec $fd>&-"; fi
  done
}

pg_running() {
  [[ -f $PGDATA/PG_VERSION ]] && as_pg "$(pg_bin)/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1
}

# Port of the running cluster: the 4th line of postmaster.pid.
pg_running_port() {
  sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null
}

# Quote a value for postgresql.conf.
pg_quote() { printf "'%s'" "${1//\'/\'\'}"; }

pg_init() {
  local bin=$1
  log "creating a throwaway PostgreSQL $(basename "$(dirname "$bin")") cluster in $PGDATA"
  # Trust authentication, on loopback and on the socket only (listen_addresses below): the
  # cluster is a throwaway for tests. The bootstrap superuser is `dp`, the role tests connect as.
  as_pg "$bin/initdb" -D "$PGDATA" -U dp --auth-local=trust --auth-host=trust \
    -E UTF8 --locale=C >"$SERVICES_DIR/initdb.log" 2>&1 || {
    show_log "$SERVICES_DIR/initdb.log"
    die "initdb failed"
  }
  printf "\n# dp-engine: settings of this throwaway cluster, written by spec/services.sh start\ninclude '%s'\n" \
    "$PG_INCLUDE" | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
}

# Write the settings that depend on the port and the path of the clone, at every start.
pg_write_settings() {
  local socket_dir=$PG_SOCKET_DIR
  as_pg mkdir -p "$PG_SOCKET_DIR"
  # A Unix socket path must fit in 107 bytes; with a deep clone, listen on TCP only.
  if (( ${#socket_dir} + ${#PG_PORT} + 10 > 107 )); then
    log "the socket path under $PG_SOCKET_DIR would be too long: PostgreSQL listens on TCP only"
    socket_dir=
  fi
  as_pg tee "$PGDATA/$PG_INCLUDE" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = $(pg_quote "$socket_dir")
# Throwaway cluster: durability buys nothing here, speed does. Never use these settings for data
# that matters: a crash of the machine can corrupt the cluster.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

pg_start() {
  local bin
  prepare_pg_dir
  bin=$(pg_bin)
  if pg_running; then
    local port
    port=$(pg_running_port)
    [[ $port == "$PG_PORT" ]] ||
      die "PostgreSQL of $PGDATA already runs on port $port, not $PG_PORT: run spec/services.sh stop first"
    log "PostgreSQL already runs on 127.0.0.1:$PG_PORT"
  else
    port_open "$PG_PORT" && die "port $PG_PORT is taken by another program: set DP_PG_PORT to a free port"
    [[ -f $PGDATA/PG_VERSION ]] || pg_init "$bin"
    pg_write_settings
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    (close_inherited_fds; as_pg "$bin/pg_ctl" start -D "$PGDATA" -l "$PG_LOG" -w -t 60 -s) || {
      show_log "$PG_LOG"
      die "PostgreSQL did not start"
    }
  fi
  # The role `dp` is the bootstrap superuser; the databases are created once.
  local db
  for db in dp ferretdb; do
    if [[ -z $(pg_psql -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
      pg_psql -qc "CREATE DATABASE $db" || die "could not create database $db"
    fi
  done
}

pg_psql() {
  "$(pg_bin)/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U dp -d postgres "$@"
}

# FerretDB's database tuned for bronze (docker/ferretdb-tuning.sql: plan_cache_mode and the event
# trigger that indexes every collection's _id for FerretDB's filters): once, before FerretDB
# starts, so its connections have the setting. Idempotent; skipped when already there.
pg_tune_ferretdb() {
  local have
  # (the function's text has md5(rel) since the version that turns GIN's pending list off and
  # finds a table's index by its table)
  have=$(pg_psql -d ferretdb -tAc "SELECT count(*) FROM pg_event_trigger WHERE evtname = 'dp_ferretdb_id_gin'
    AND EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'dp_ferretdb_id_gin_index' AND prosrc LIKE '%md5(rel)%')")
  [[ $have == 1 ]] && return 0
  log "tuning FerretDB's database for bronze (docker/ferretdb-tuning.sql)"
  pg_psql -d ferretdb -q -f "$ROOT/docker/ferretdb-tuning.sql" >&2 || die "could not apply docker/ferretdb-tuning.sql"
}

pg_stop() {
  [[ -f $PGDATA/PG_VERSION ]] || return 0
  if pg_running; then
    log "stopping PostgreSQL"
    as_pg "$(pg_bin)/pg_ctl" stop -D "$PGDATA" -m fast -w -t 60 -s || {
      show_log "$PG_LOG"
      die "PostgreSQL did not stop"
    }
  fi
}

# ---------------------------------------------------------------------------------------------
# FerretDB
# ---------------------------------------------------------------------------------------------

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# The MongoDB command {ping: 1, $db: "admin"} as an OP_MSG (opcode 2013) of 51 bytes:
#   header:  length 51, requestID 1, responseTo 0, opCode 2013 (0x07dd)
#   body:    flagBits 0, section kind 0, then the BSON document (30 bytes):
#            int32 "ping" = 1, string "$db" = "admin"
# shellcheck disable=SC2016 # "$db" is the literal field name
readonly OP_MSG_PING='\x33\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00'\
'\x00\x00\x00\x00\x00'\
'\x1e\x00\x00\x00\x10ping\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00\x00'

# True when the MongoDB wire server on 127.0.0.1:$1 answers a ping with ok: 1.0 (the BSON element
# double "ok" = 1.0 is 01 6f 6b 00 00 00 00 00 00 00 f0 3f). FerretDB's ping also checks that
# its PostgreSQL backend answers. No mongosh needed: bash's /dev/tcp does the talking.
# shellcheck disable=SC2016 # $1 and $2 are expanded by the inner bash
mongo_ping() {
  local reply
  reply=$(timeout 3 bash -c '
      exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "$2" >&3
      dd bs=4096 count=1 status=none <&3 | od -An -v -tx1' _ "$1" "$OP_MSG_PING" 2>/dev/null) || return 1
  reply=${reply//[[:space:]]/}
  [[ $reply == *016f6b00000000000000f03f* ]]
}

# The pid of our running FerretDB, from the pid file; fails when it does not run.
ferretdb_pid() {
  local pid
  pid=$(cat "$FDB_PID" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a reused pid: the process must be a ferretdb.
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == ferretdb ]] || return 1
  printf '%s\n' "$pid"
}

ferretdb_start() {
  local pid i
  if pid=$(ferretdb_pid); then
    for ((i = 0; i < 20; i++)); do
      if mongo_ping "$MONGO_PORT"; then
        log "FerretDB already runs on 127.0.0.1:$MONGO_PORT (pid $pid)"
        return 0
      fi
      sleep 0.5
    done
    show_log "$FDB_LOG"
    die "FerretDB runs (pid $pid) but does not answer on 127.0.0.1:$MONGO_PORT: run spec/services.sh stop first"
  fi
  rm -f "$FDB_PID"
  port_open "$MONGO_PORT" && die "port $MONGO_PORT is taken by another program: set DP_MONGO_PORT to a free port"
  mkdir -p "$FDB_STATE_DIR"
  log "starting FerretDB $FERRETDB_VERSION on 127.0.0.1:$MONGO_PORT"
  # setsid: its own session, so a Ctrl-C in the terminal that ran the tests does not stop it.
  # --debug-addr=- : no debug HTTP listener (its default, 127.0.0.1:8088, may be taken).
  # stdin/stdout/stderr are redirected and other descriptors closed, so that it keeps no pipe
  # of the caller open (a CI job reading our output would otherwise wait for FerretDB to exit).
  (close_inherited_fds; exec setsid "$FERRETDB_BIN" \
    --listen-addr="127.0.0.1:$MONGO_PORT" \
    --handler=postgresql \
    --postgresql-url="postgres://dp@127.0.0.1:$PG_PORT/ferretdb" \
    --telemetry=disable \
    --state-dir="$FDB_STATE_DIR" \
    --debug-addr=- \
    --log-level=warn \
    </dev/null >>"$FDB_LOG" 2>&1) &
  pid=$!
  printf '%s\n' "$pid" >"$FDB_PID"
  for ((i = 0; i < 60; i++)); do   # at most about 30 s
    if mongo_ping "$MONGO_PORT"; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  show_log "$FDB_LOG"
  kill "$pid" 2>/dev/null || true
  rm -f "$FDB_PID"
  die "FerretDB did not answer a ping on 127.0.0.1:$MONGO_PORT"
}

ferretdb_stop() {
  local pid i
  if pid=$(ferretdb_pid); then
    log "stopping FerretDB (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do   # at most 10 s
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "FerretDB did not stop in 10 s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$FDB_PID"
}

# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------

# Serialize start and stop of the same services folder (two terminals, a developer and CI).
lock_services() {
  mkdir -p "$SERVICES_DIR"
  exec 9>"$SERVICES_DIR/.lock"
  flock -w 120 9 || die "another spec/services.sh holds $SERVICES_DIR/.lock"
}

cmd_env() {
  printf 'export DP_POSTGRES_URL=%q\n' "postgresql://dp@127.0.0.1:$PG_PORT/dp"
  printf 'export DP_MONGO_URL=%q\n' "mongodb://127.0.0.1:$MONGO_PORT/"
  printf 'export DP_PROMTOOL=%q\n' "$PROMTOOL_BIN"
}

cmd_start() {
  cmd_install
  lock_services
  pg_start
  pg_tune_ferretdb
  ferretdb_start
  log "services run; stop them with: spec/services.sh stop"
  cmd_env
}

cmd_stop() {
  lock_services
  ferretdb_stop
  pg_stop
}

cmd_status() {
  local rc=0 pid
  if pg_running; then
    log "PostgreSQL: runs on 127.0.0.1:$(pg_running_port), cluster $PGDATA"
  else
    log "PostgreSQL: stopped"; rc=1
  fi
  if pid=$(ferretdb_pid); then
    if mongo_ping "$MONGO_PORT"; then
      log "FerretDB:   runs on 127.0.0.1:$MONGO_PORT (pid $pid)"
    else
      log "FerretDB:   pid $pid runs but does not answer on 127.0.0.1:$MONGO_PORT"; rc=1
    fi
  else
    log "FerretDB:   stopped"; rc=1
  fi
  return "$rc"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

case ${1:-} in
  install) cmd_install ;;
  start)   cmd_start ;;
  stop)    cmd_stop ;;
  status)  cmd_status ;;
  env)     cmd_env ;;
  *)       usage ;;
esac
