#!/usr/bin/env bash
# docker/ci.sh — build and test the container image and the compose files with real containers,
# on a machine without a Docker daemon and without an image registry (see docs/deployment.md,
# "What CI checks, and what was not run here").
#
# Usage: docker/ci.sh [prepare|all]
#   prepare  only install/build the tools and the local base image (cached; nothing is tested)
#   all      (default) prepare, then run every check, print the measured figures and end with
#            the line `N passed, N failed`; the exit status is non-zero when a check failed.
#
# What is slow is cached outside the clone, under ~/.cache/dp-engine/ (XDG_CACHE_HOME):
#   bookworm-minbase.tar         the debootstrap'ed base rootfs (imported as localhost/bookworm-slim)
#   compose-v2.40.3/docker-compose  compose v2, built once from the Go module proxy
# and the images themselves stay in podman's storage, so a warm run rebuilds only the layers
# whose inputs changed.
#
# Nothing listens beyond the test: the engine's port is published on 127.0.0.1 only (an
# ephemeral port), the databases only on the podman network of the CI project, and the podman API
# socket is a file in a private temporary folder.
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/dp-engine
readonly COMPOSE_VERSION=v2.40.3
readonly COMPOSE_BIN=$CACHE/compose-$COMPOSE_VERSION/docker-compose
readonly BASE_TAR=$CACHE/bookworm-minbase.tar
readonly BASE_IMAGE=localhost/bookworm-slim
readonly ENGINE_IMAGE=localhost/dp-engine:ci
readonly PG_IMAGE=localhost/dp-ci-postgres:16
readonly FDB_IMAGE=localhost/dp-ci-ferretdb:v1.24.2
readonly PREFECT_IMAGE=localhost/dp-ci-prefect:3
readonly WORKER_IMAGE=localhost/dp-ci-prefect-worker:ci
readonly FERRETDB_BIN=$CACHE/ferretdb-v1.24.2/ferretdb
readonly PROJECT=dpci
# The Go toolchain compose v2.40.3 asks for is fetched by GOTOOLCHAIN=auto (as for FerretDB).
readonly GO_FALLBACK=go1.24.3

PASSED=0
FAILED=0
MODE=""
SUMMARY_DONE=""
T0=$SECONDS
WORK=""

log() { printf 'docker/ci: %s\n' "$*" >&2; }
die() { printf 'docker/ci: error: %s\n' "$*" >&2; exit 2; }
# A check: prints "ok - NAME" or "not ok - NAME" and counts it; never exits.
pass() { PASSED=$((PASSED + 1)); printf 'ok - %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'not ok - %s\n' "$*"; }
check() { # check NAME COMMAND...: the command's status decides
  local name=$1; shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}
elapsed() { printf '%ds' $((SECONDS - T0)); }

pkg_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

# ---------------------------------------------------------------------------------------------
# prepare: tools, podman configuration, base image, compose v2
# ---------------------------------------------------------------------------------------------

install_packages() {
  local p missing=()
  for p in buildah podman runc debootstrap uidmap curl ca-certificates openssl python3 shellcheck; do
    pkg_installed "$p" || missing+=("$p")
  done
  (( ${#missing[@]} )) || return 0
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Our own containers.conf (CONTAINERS_CONF), so the machine's configuration is left alone: runc
# (crun fails on setrlimit in this sandbox), cgroupfs (no systemd), explicit ulimits.
write_containers_conf() {
  # the limits must not exceed this process's hard limits (raising them fails in the sandbox)
  local nofile nproc
  nofile=$(ulimit -Hn); [[ $nofile == unlimited ]] && nofile=65536
  nproc=$(ulimit -Hu); [[ $nproc == unlimited ]] && nproc=4096
  (( nproc > 4096 )) && nproc=4096
  (( nofile > 65536 )) && nofile=65536
  cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  export CONTAINERS_CONF=$WORK/containers.conf
}

# localhost/bookworm-slim: a debootstrap --variant=minbase rootfs without docs and apt lists,
# cached as a tarball; `podman import` is quick, debootstrap is the minute.
ensure_base_image() {
  if podman image exists "$BASE_IMAGE"; then return 0; fi
  if [[ ! -s $BASE_TAR ]]; then
    log "debootstrap --variant=minbase bookworm (once; cached in $BASE_TAR)"
    local root=$WORK/rootfs
    debootstrap --variant=minbase bookworm "$root" >"$WORK/debootstrap.log" 2>&1 ||
      { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
           "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
           "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
    # What the official slim image also does: keep apt from bringing docs and recommends back.
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
      'path-exclude /usr/share/locale/*' >"$root/etc/dpkg/dpkg.cfg.d/docker-slim"
    printf 'APT::Install-Recommends "false";\n' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
    mkdir -p "$CACHE"
    tar -C "$root" --numeric-owner -cf "$BASE_TAR.tmp" .
    mv -f "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$root"
  fi
  log "podman import $BASE_TAR as $BASE_IMAGE"
  podman import --change 'CMD ["bash"]' "$BASE_TAR" "$BASE_IMAGE" >/dev/null 2>&1
}

# A Go that can build compose v2 (Go >= 1.21 switches itself to the toolchain a go.mod asks for).
find_go() {
  local go
  go=$(command -v go || true)
  [[ -n $go ]] || { [[ -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go; }
  if [[ -z $go ]]; then
    pkg_installed golang-go || { apt-get update -qq >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >&2; }
    go=/usr/bin/go
  fi
  local v
  v=$("$go" env GOVERSION); v=${v#go1.}; v=${v%%[!0-9]*}
  if (( v >= 21 )); then printf '%s\n' "$go"; return; fi
  # Debian 12's Go 1.19 predates GOTOOLCHAIN: fetch a toolchain as a module (spec/services.sh).
  local mod dir
  mod=golang.org/toolchain@v0.0.1-$GO_FALLBACK.$("$go" env GOOS)-$("$go" env GOARCH)
  dir=$(cd / && GO111MODULE=on "$go" mod download -json "$mod" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [[ -n $dir && -f $dir/bin/go ]] || die "could not fetch $mod from the Go module proxy"
  find "$dir/bin" "$dir/pkg/tool" -type f -exec chmod a+rx {} +
  printf '%s\n' "$dir/bin/go"
}

# Compose v2 from the Go module proxy. `go install ...@version` refuses the module (its go.mod
# has replace directives), so: download the module, copy it out of the read-only module cache,
# and `go build ./cmd` in the copy. About 4 minutes once; then cached.
ensure_compose() {
  if [[ -x $COMPOSE_BIN ]] && "$COMPOSE_BIN" version 2>/dev/null | grep -q "${COMPOSE_VERSION#v}"; then
    return 0
  fi
  local go dir tmp
  go=$(find_go)
  log "building docker compose $COMPOSE_VERSION with $go (once; cached in ${COMPOSE_BIN%/*})"
  export GOTOOLCHAIN=auto GOFLAGS=-buildvcs=false
  dir=$(cd / && GO111MODULE=on "$go" mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [[ -n $dir && -d $dir/cmd ]] || die "could not fetch docker compose $COMPOSE_VERSION from the Go module proxy"
  tmp=$WORK/compose-src
  cp -R "$dir" "$tmp"
  chmod -R u+w "$tmp"
  (cd "$tmp" && CGO_ENABLED=0 nice "$go" build -trimpath \
     -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
     -o "$WORK/docker-compose" ./cmd) >&2 || die "go build of docker compose failed"
  mkdir -p "${COMPOSE_BIN%/*}"
  mv -f "$WORK/docker-compose" "$COMPOSE_BIN"
  rm -rf "$tmp"
}

prepare() {
  install_packages
  write_containers_conf
  ensure_base_image
  ensure_compose
}

# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------

# A small Dockerfile lint (hadolint is not packaged in Debian): the rules this project cares
# about. Prints one line per problem; the status is the number of problems (0 = clean).
lint_dockerfile() { # FILE
  awk -v file="$1" '
    function problem(msg) { printf "  %s:%d: %s\n", file, NR, msg; n++ }
    # join continuation lines into one instruction
    { line = $0 }
    cont != "" { line = cont " " line; cont = "" }
    /\\$/ { sub(/\\$/, "", line); cont = line; next }
    line ~ /^[[:space:]]*(#|$)/ { next }
    {
      split(line, w, /[[:space:]]+/); ins = toupper(w[1])
      if (ins == "FROM") {
        stages++; user = ""; from = w[2]
        if (from ~ /:latest$/) problem("FROM " from ": pin a tag, not latest")
        if (from !~ /^\$\{?[A-Z_]+\}?$/ && from !~ /:/ && from !~ /@sha256:/ && !(from in stage)) problem("FROM " from ": no tag")
        if (w[3] ~ /^[Aa][Ss]$/) stage[w[4]] = 1
      }
      if (ins == "USER") user = w[2]
      if (ins == "ADD" && line ~ /https?:\/\//) problem("ADD of a URL: use curl in a RUN with a checksum, or COPY")
      if (ins == "RUN" && line ~ /apt-get install/ && line !~ /--no-install-recommends/) problem("apt-get install without --no-install-recommends")
      if (ins == "RUN" && line ~ /apt-get install/ && line !~ /apt-get[^&]*-y/) problem("apt-get install without -y")
      if (ins == "RUN" && line ~ /apt-get update/ && line !~ /rm -rf[^&]*\/var\/lib\/apt\/lists/) problem("apt-get update without removing /var/lib/apt/lists in the same layer")
      if (ins == "RUN" && line ~ /apt-get upgrade|dist-upgrade/) problem("apt-get upgrade in an image: pin the base instead")
      if (ins == "RUN" && line ~ /(^|[[:space:]])cd[[:space:]]/) problem("cd in RUN: use WORKDIR")
      if (ins == "RUN" && line ~ /sudo /) problem("sudo in RUN")
      if ((ins == "ENTRYPOINT" || ins == "CMD") && w[2] !~ /^\[/) problem(ins " in shell form: use the exec (JSON) form so signals reach the process")
      if (ins == "MAINTAINER") problem("MAINTAINER is deprecated: use a LABEL")
      if (ins == "HEALTHCHECK") healthcheck = 1
      if (ins == "LABEL") labels = labels " " line
    }
    END {
      if (user == "" || user ~ /^(root|0)(:|$)/) problem("the final stage runs as root: add a USER")
      if (require_health && !healthcheck) problem("no HEALTHCHECK")
      if (require_labels) {
        split("org.opencontainers.image.version org.opencontainers.image.source com.centurylinklabs.watchtower.enable", need, " ")
        for (i in need) if (index(labels, need[i]) == 0) problem("missing LABEL " need[i])
      }
      exit n > 255 ? 255 : n
    }' require_health="${2:-0}" require_labels="${2:-0}" "$1"
}

# COPY sources of a Dockerfile that do not exist in the build context (they fail the build late).
copy_sources_exist() { # FILE CONTEXT
  local src absent=0
  while read -r src; do
    [[ -e $2/$src ]] || { printf '  %s: COPY source %s not in the build context %s\n' "$1" "$src" "$2"; absent=1; }
  done < <(awk '$1 == "COPY" && $0 !~ /--from=/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$1")
  return "$absent"
}

compose() { "$COMPOSE_BIN" "$@"; }

# The engine's published API port on 127.0.0.1.
api_url() {
  local port
  port=$(compose -p "$PROJECT" -f "$ROOT/docker/compose.ci.yml" port dp-engine 8080 2>/dev/null | tail -n 1)
  port=${port##*:}
  [[ -n $port ]] && printf 'http://127.0.0.1:%s\n' "$port"
}

# Proportional set size of all processes of a container, in MiB (shared pages counted once
# across the container's processes: an honest "idle memory" for a multi-process server).
container_pss_mib() { # CONTAINER
  local pid total=0 kb
  for pid in $(podman top "$1" hpid 2>/dev/null | tail -n +2); do
    kb=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
    total=$((total + ${kb:-0}))
  done
  awk -v kb="$total" 'BEGIN { printf "%.1f", kb / 1024 }'
}
container_rss_mib() { # CONTAINER: RSS of the main process
  local pid
  pid=$(podman inspect -f '{{.State.Pid}}' "$1")
  awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"
}

run_checks() {
  local df out problems
  echo "== docker/ci.sh: lint"
  for df in "$ROOT/docker/Dockerfile" "$ROOT/docker/prefect-worker.Dockerfile" "$ROOT"/docker/ci/*.Dockerfile; do
    local strict=0
    [[ $df == "$ROOT/docker/Dockerfile" ]] && strict=1
    if problems=$(lint_dockerfile "$df" "$strict"); then pass "lint ${df#"$ROOT"/}"
    else printf '%s\n' "$problems"; fail "lint ${df#"$ROOT"/}"; fi
  done
  if out=$(copy_sources_exist "$ROOT/docker/Dockerfile" "$ROOT"); then pass "docker/Dockerfile: every COPY source exists"
  else printf '%s\n' "$out"; fail "docker/Dockerfile: every COPY source exists"; fi
  local sh
  for sh in "$ROOT"/docker/*.sh "$ROOT"/docker/ci/*.sh "$ROOT"/docker/postgres-init/*.sh; do
    if command -v shellcheck >/dev/null; then
      check "shellcheck ${sh#"$ROOT"/}" shellcheck -x "$sh"
    else
      check "bash -n ${sh#"$ROOT"/} (shellcheck not installed)" bash -n "$sh"
    fi
  done

  echo "== docker/ci.sh: compose files (docker compose $COMPOSE_VERSION config -q)"
  # compose.yml with the settings of .env.example and placeholder secret files
  local envdir=$WORK/envcheck
  mkdir -p "$envdir/secrets"
  for s in postgres_password mongo_password dp_api_token dp_master_key traefik_basic_auth; do
    printf 'x\n' >"$envdir/secrets/$s"
  done
  cp "$ROOT/docker/.env.example" "$envdir/.env"
  sed -i "s|^DP_SECRETS_DIR=.*|DP_SECRETS_DIR=$envdir/secrets|" "$envdir/.env"
  if out=$(compose --env-file "$envdir/.env" -f "$ROOT/docker/compose.yml" config -q 2>&1); then
    pass "docker/compose.yml validates (compose spec, .env.example)"
  else printf '%s\n' "$out"; fail "docker/compose.yml validates (compose spec, .env.example)"; fi
  if out=$(compose --env-file "$envdir/.env" -f "$ROOT/docker/compose.yml" config 2>&1) &&
     ! grep -Eq '^\s*(POSTGRES_PASSWORD|DP_API_TOKEN|DP_MASTER_KEY|MONGO_INITDB_ROOT_PASSWORD):' <<<"$out"; then
    pass "docker/compose.yml: passwords, API token and master key only as secrets (no *_PASSWORD/TOKEN/KEY values)"
  else fail "docker/compose.yml: passwords, API token and master key only as secrets (no *_PASSWORD/TOKEN/KEY values)"; fi
  # the validator itself: an unknown key must be refused (so the passes above mean something)
  sed 's/^    shm_size: 256m$/    shm_sise: 256m/' "$ROOT/docker/compose.yml" >"$envdir/compose.typo.yml"
  if ! grep -q shm_sise "$envdir/compose.typo.yml"; then fail "compose refuses an unknown key (the test lost its anchor line)"
  elif out=$(compose --env-file "$envdir/.env" --project-directory "$ROOT/docker" -f "$envdir/compose.typo.yml" config -q 2>&1); then
    fail "compose refuses an unknown key (shm_sise was accepted)"
  else pass "compose refuses an unknown key: ${out##*$'\n'}"; fi
  if out=$(ACME_EMAIL=ci@example.org compose --env-file "$envdir/.env" -f "$ROOT/docker/compose.yml" \
             -f "$ROOT/docker/compose.tls.yml" config 2>&1) && grep -q 'tls.certresolver: le' <<<"$out"; then
    pass "docker/compose.yml + compose.tls.yml (Let's Encrypt) validates"
  else printf '%s\n' "$out" | tail -n 5; fail "docker/compose.yml + compose.tls.yml (Let's Encrypt) validates"; fi
  local dotenv_missing
  # shellcheck disable=SC2016 # a literal ${ to find
  dotenv_missing=$(cat "$ROOT/docker/compose.yml" "$ROOT/docker/compose.tls.yml" | grep -o '\${[A-Z_][A-Z0-9_]*' | sed 's/^\${//' | sort -u |
                   while read -r v; do grep -q "^#* *$v=" "$ROOT/docker/.env.example" || echo "$v"; done)
  if [[ -z $dotenv_missing ]]; then pass "docker/.env.example names every variable compose.yml uses"
  else printf '  not in .env.example: %s\n' "$dotenv_missing"; fail "docker/.env.example names every variable compose.yml uses"; fi
  if out=$(DP_CI_SECRETS=$envdir/secrets compose -f "$ROOT/docker/compose.ci.yml" config -q 2>&1); then
    pass "docker/compose.ci.yml validates"
  else printf '%s\n' "$out"; fail "docker/compose.ci.yml validates"; fi

  local sdir=$WORK/secrets-sh
  if out=$(DP_SECRETS_DIR=$sdir PREFECT_UI_PASSWORD=ci-pw bash "$ROOT/docker/secrets.sh" ci 2>&1) &&
     [[ $(stat -c %a "$sdir") == 700 && -s $sdir/postgres_password && -s $sdir/dp_api_token &&
        $(base64 -d "$sdir/dp_master_key" | wc -c) == 32 && $(cat "$sdir/traefik_basic_auth") == ci:\$apr1\$* ]]; then
    pass "docker/secrets.sh creates every secret file (0700 folder, 32-byte master key, apr1 basic auth)"
  else printf '%s\n' "$out"; fail "docker/secrets.sh creates every secret file"; fi

  # the entrypoint's secret handling, on the host (the script does nothing when sourced)
  # shellcheck disable=SC2016 # expanded by the inner bash
  out=$(bash -c 'source "$1"; f=$2/pw; printf "p@ss:w/rd é\n" >"$f"
                 DP_MONGO_URL="mongodb://dp@mongo:27017/?authSource=admin" DP_MONGO_PASSWORD_FILE=$f
                 DP_POSTGRES_PASSWORD_FILE=$f; load_secrets; printf "%s|%s" "$DP_MONGO_URL" "$PGPASSWORD"' \
          _ "$ROOT/docker/entrypoint.sh" "$WORK" 2>&1 || true)
  check "entrypoint: passwords from files, percent-encoded into the MongoDB URL ($out)" \
    test "$out" = 'mongodb://dp:p%40ss%3Aw%2Frd%20%C3%A9@mongo:27017/?authSource=admin|p@ss:w/rd é'

  echo "== docker/ci.sh: images (buildah bud --isolation chroot, BASE=$BASE_IMAGE)"
  local t
  t=$SECONDS
  if buildah bud --isolation chroot --network=host --layers --format docker -q --build-arg BASE="$BASE_IMAGE" \
       --build-arg REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
       --build-arg VERSION="$(sed -n 's/^project(dp-engine VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")" \
       -f "$ROOT/docker/Dockerfile" -t "$ENGINE_IMAGE" "$ROOT" >"$WORK/build-engine.log" 2>&1; then
    pass "engine image builds ($((SECONDS - t)) s)"
  else
    tail -n 40 "$WORK/build-engine.log"; fail "engine image builds"
    finish; return
  fi
  t=$SECONDS
  if buildah bud --isolation chroot --network=host --layers --format docker -q --build-arg BASE="$BASE_IMAGE" \
       -f "$ROOT/docker/ci/postgres.Dockerfile" -t "$PG_IMAGE" "$ROOT" >"$WORK/build-pg.log" 2>&1; then
    pass "CI PostgreSQL image builds ($((SECONDS - t)) s)"
  else tail -n 40 "$WORK/build-pg.log"; fail "CI PostgreSQL image builds"; finish; return; fi
  [[ -x $FERRETDB_BIN ]] || DP_SERVICES_DIR=${DP_SERVICES_DIR:-$WORK/services} bash "$ROOT/spec/services.sh" install >&2
  local fctx=$WORK/ferretdb-ctx
  mkdir -p "$fctx"
  cp "$FERRETDB_BIN" "$fctx/ferretdb"
  cp "$ROOT/docker/ci/ferretdb-entrypoint.sh" "$fctx/"
  t=$SECONDS
  if buildah bud --isolation chroot --network=host --layers --format docker -q --build-arg BASE="$BASE_IMAGE" \
       -f "$ROOT/docker/ci/ferretdb.Dockerfile" -t "$FDB_IMAGE" "$fctx" >"$WORK/build-fdb.log" 2>&1; then
    pass "CI FerretDB image builds ($((SECONDS - t)) s)"
  else tail -n 40 "$WORK/build-fdb.log"; fail "CI FerretDB image builds"; finish; return; fi

  # Prefect from PyPI (pip goes through the host's CA bundle: CI may reach PyPI through a
  # TLS-inspecting proxy), then docker/prefect-worker.Dockerfile on it and the engine image
  local ca=() 
  [[ -s /etc/ssl/certs/ca-certificates.crt ]] &&
    ca=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca.crt:ro --build-arg PIP_CERT=/etc/ssl/host-ca.crt)
  t=$SECONDS
  if buildah bud --isolation chroot --network=host --layers --format docker -q --build-arg BASE="$BASE_IMAGE" \
       "${ca[@]}" -f "$ROOT/docker/ci/prefect.Dockerfile" -t "$PREFECT_IMAGE" "$ROOT" >"$WORK/build-prefect.log" 2>&1; then
    pass "CI Prefect image builds (prefect from PyPI, $((SECONDS - t)) s)"
  else tail -n 40 "$WORK/build-prefect.log"; fail "CI Prefect image builds"; finish; return; fi
  t=$SECONDS
  if buildah bud --isolation chroot --network=host --layers --format docker -q \
       --build-arg PREFECT_IMAGE="$PREFECT_IMAGE" --build-arg DP_ENGINE_IMAGE="$ENGINE_IMAGE" \
       -f "$ROOT/docker/prefect-worker.Dockerfile" -t "$WORKER_IMAGE" "$ROOT" >"$WORK/build-worker.log" 2>&1; then
    pass "docker/prefect-worker.Dockerfile builds on the Prefect and engine images ($((SECONDS - t)) s)"
  else tail -n 40 "$WORK/build-worker.log"; fail "docker/prefect-worker.Dockerfile builds"; finish; return; fi
  check "the worker image runs dp-engine --version" bash -c "podman run --rm --no-healthcheck --network none $WORKER_IMAGE dp-engine --version >/dev/null"

  local size_b size_mb
  size_b=$(podman image inspect -f '{{.Size}}' "$ENGINE_IMAGE")
  size_mb=$(awk -v b="$size_b" 'BEGIN { printf "%.1f", b / 1e6 }')
  FIG_IMAGE="engine image size: $size_mb MB ($size_b bytes, uncompressed; base $(podman image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{ printf "%.1f", $1 / 1e6 }') MB)"
  echo "   $FIG_IMAGE"
  check "engine image <= 120 MB ($size_mb MB)" awk -v s="$size_mb" 'BEGIN { exit !(s <= 120) }'

  echo "== docker/ci.sh: in the image"
  local prun=(podman run --rm --no-healthcheck --network none)
  if out=$("${prun[@]}" "$ENGINE_IMAGE" --version 2>&1) && grep -q 'dp-engine' <<<"$out"; then
    pass "dp-engine --version in the image: $out"
  else printf '%s\n' "$out"; fail "dp-engine --version in the image"; fi
  check "the image runs as a non-root user (uid 10001)" \
    test "$("${prun[@]}" --entrypoint id "$ENGINE_IMAGE" -u 2>/dev/null)" = 10001
  check "dp-engine is on PATH" "${prun[@]}" --entrypoint bash "$ENGINE_IMAGE" -c 'command -v dp-engine >/dev/null'
  check "lua/, migrations/, connectors/, gold/ and metadata/ are in the image" "${prun[@]}" --entrypoint bash "$ENGINE_IMAGE" -c \
    'test -f /usr/local/share/dp-engine/lua/dp/engine.lua && ls /usr/local/share/dp-engine/migrations/*.sql >/dev/null && test -d /srv/dp/connectors && test -d /srv/dp/gold && test -f /srv/dp/metadata/systems.json'
  check "no build tools in the runtime image (cc, cmake, -dev headers)" "${prun[@]}" --entrypoint bash "$ENGINE_IMAGE" -c \
    '! command -v cc && ! command -v cmake && ! test -e /usr/include/libpq-fe.h' 
  local labels
  labels=$(podman image inspect -f '{{json .Labels}}' "$ENGINE_IMAGE")
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash
  check "OCI labels: version, source, Watchtower enable" bash -c \
    'grep -q "\"com.centurylinklabs.watchtower.enable\":\"true\"" <<<"$1" && grep -q org.opencontainers.image.version <<<"$1" && grep -q org.opencontainers.image.source <<<"$1"' _ "$labels"
  check "HEALTHCHECK on /health is declared" grep -q 'health' <<<"$(podman image inspect -f '{{json .Config.Healthcheck}}' "$ENGINE_IMAGE" 2>/dev/null)"
  if out=$("${prun[@]}" -e DP_POSTGRES_URL=postgresql://dp@nowhere.invalid/dp -e DP_MONGO_URL=mongodb://nowhere.invalid/ \
             -e DP_WAIT_TIMEOUT=3 "$ENGINE_IMAGE" 2>&1); then
    fail "entrypoint: an unreachable database stops the container (it did not)"
  elif grep -q 'did not accept connections within 3 s' <<<"$out"; then
    pass "entrypoint: the wait for PostgreSQL is bounded, with a clear message"
  else printf '%s\n' "$out" | tail -n 5; fail "entrypoint: the wait for PostgreSQL is bounded, with a clear message"; fi

  echo "== docker/ci.sh: the CI stack (docker/compose.ci.yml through podman's Docker API)"
  run_stack
  finish
}

# Wait until the engine's log has more than AFTER lines matching PATTERN, for at most SECONDS;
# the log is refreshed into $WORK/engine.log.
wait_log() { # PATTERN SECONDS [AFTER]
  local n
  for _ in $(seq "$2"); do
    compose -p "$PROJECT" -f "$ROOT/docker/compose.ci.yml" logs dp-engine >"$WORK/engine.log" 2>&1 || true
    n=$(grep -c -- "$1" "$WORK/engine.log" || true)
    (( n > ${3:-0} )) && return 0
    sleep 1
  done
  return 1
}

run_stack() {
  export DP_CI_SECRETS=$WORK/secrets
  mkdir -p "$DP_CI_SECRETS"
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DP_CI_SECRETS/postgres_password"
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DP_CI_SECRETS/dp_api_token"
  head -c 32 /dev/urandom | base64 >"$DP_CI_SECRETS/dp_master_key"
  chmod 0644 "$DP_CI_SECRETS"/*      # read by uid 10001 inside the container (a bind mount)
  local token
  token=$(<"$DP_CI_SECRETS/dp_api_token")
  export DP_CI_SCRIPTS=$WORK/scripts
  mkdir -p "$DP_CI_SCRIPTS"
  cp -R "$ROOT/connectors" "$ROOT/gold" "$ROOT/metadata" "$DP_CI_SCRIPTS/"

  # podman's Docker-compatible API on a private socket, for compose
  local sock=$WORK/podman.sock
  podman system service --time=0 "unix://$sock" >"$WORK/podman-service.log" 2>&1 &
  SERVICE_PID=$!

  for _ in $(seq 50); do [[ -S $sock ]] && break; sleep 0.2; done
  export DOCKER_HOST=unix://$sock COMPOSE_BAKE=false DOCKER_BUILDKIT=0
  local cf=(-p "$PROJECT" -f "$ROOT/docker/compose.ci.yml")
  compose "${cf[@]}" down -v --timeout 5 >/dev/null 2>&1 || true   # a stack an earlier run left

  local t=$SECONDS
  if compose "${cf[@]}" up -d >"$WORK/up.log" 2>&1; then
    pass "compose up -d (postgres, ferretdb, dp-engine, prefect-server, prefect-worker)"
  else cat "$WORK/up.log"; fail "compose up -d"; return; fi

  local started=""
  for _ in $(seq 120); do
    if compose "${cf[@]}" logs dp-engine 2>/dev/null | grep -q 'serve: listening on port'; then started=1; break; fi
    if [[ $(podman inspect -f '{{.State.Running}}' "$PROJECT-dp-engine-1" 2>/dev/null) == false ]]; then break; fi
    sleep 1
  done
  compose "${cf[@]}" logs dp-engine >"$WORK/engine.log" 2>&1 || true
  if [[ -n $started ]]; then
    pass "engine container: waited for the databases, migrated, pushed metadata, serves ($((SECONDS - t)) s after up)"
  else
    tail -n 40 "$WORK/engine.log"; compose "${cf[@]}" logs postgres ferretdb 2>&1 | tail -n 20
    fail "engine container starts serving"; return
  fi
  check "entrypoint ran migrate and metadata push" grep -q 'metadata push --dir /srv/dp/metadata' "$WORK/engine.log"
  check "the engine runs on a read-only root filesystem, without capabilities (compose hardening)" bash -c \
    "podman exec '$PROJECT-dp-engine-1' awk '\$2 == \"/\" { print \$4 }' /proc/mounts | grep -q '^ro' && podman exec '$PROJECT-dp-engine-1' test -d /data/tmp &&
     [[ \$(podman exec '$PROJECT-dp-engine-1' awk '/^CapEff/ { print \$2 }' /proc/1/status) == 0000000000000000 ]]"
  if podman exec "$PROJECT-dp-engine-1" bash -c 'printf wrong >/tmp/wrong-pw; DP_MONGO_PASSWORD_FILE=/tmp/wrong-pw dp-entrypoint metadata push --dir /srv/dp/metadata' >"$WORK/wrong-pw.log" 2>&1; then
    fail "MongoDB credentials from DP_MONGO_PASSWORD_FILE are checked (a wrong password was accepted)"
  elif grep -q 'authentication failed' "$WORK/wrong-pw.log"; then
    pass "MongoDB credentials from DP_MONGO_PASSWORD_FILE are checked: a wrong password is refused"
  else tail -n 5 "$WORK/wrong-pw.log"; fail "MongoDB credentials from DP_MONGO_PASSWORD_FILE are checked"; fi
  check "secret values are not in the container's environment or logs" bash -c \
    "! podman inspect '$PROJECT-dp-engine-1' | grep -q '$token' && ! grep -q '$token' '$WORK/engine.log'"
  if out=$(podman exec "$PROJECT-dp-engine-1" dp-entrypoint migrate 2>&1); then pass "in-image migrate again: ${out##*$'\n'}"
  else printf '%s\n' "$out"; fail "in-image migrate again"; fi

  local url code
  url=$(api_url)
  echo "   API published at $url (loopback only)"
  code=$(curl -s -o "$WORK/health.json" -w '%{http_code}' "$url/health" || true)
  check "GET /health answers 200 without a token" test "$code" = 200
  check "the image's HEALTHCHECK command (dp-entrypoint health) passes in the container" \
    podman exec "$PROJECT-dp-engine-1" /usr/local/bin/dp-entrypoint health
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/api/v1/systems/bank/runs" || true)
  check "POST /api/v1/systems/bank/runs without a token answers 401" test "$code" = 401

  # the demo bank export lands in the inbox (inside the data volume, as the engine's user)
  local f
  podman exec "$PROJECT-dp-engine-1" mkdir -p /data/inbox/bank
  for f in "$ROOT"/metadata/demo/bank/export-1/*; do
    podman exec -i "$PROJECT-dp-engine-1" bash -c "cat > '/data/inbox/bank/${f##*/}' && touch -d '1 minute ago' '/data/inbox/bank/${f##*/}'" <"$f"
  done
  code=$(curl -s -o "$WORK/post.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
           "$url/api/v1/systems/bank/runs" || true)
  local run_id
  run_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("run_id",""))' "$WORK/post.json" 2>/dev/null || true)
  if [[ $code == 202 && -n $run_id ]]; then pass "POST /api/v1/systems/bank/runs queues run $run_id (202)"
  else cat "$WORK/post.json"; fail "POST /api/v1/systems/bank/runs (HTTP $code)"; return; fi
  local status=""
  t=$SECONDS
  for _ in $(seq 120); do
    curl -s -H "Authorization: Bearer $token" "$url/api/v1/runs/$run_id" >"$WORK/run.json" || true
    status=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("status",""))' "$WORK/run.json" 2>/dev/null || true)
    [[ $status == running || $status == queued || -z $status ]] || break
    sleep 1
  done
  if [[ $status == succeeded ]]; then pass "the run succeeded (GET /api/v1/runs/$run_id, $((SECONDS - t)) s)"
  else head -c 2000 "$WORK/run.json"; echo; tail -n 30 "$WORK/engine.log"; fail "the run succeeded (status: ${status:-none})"; fi

  local psql=(podman exec "$PROJECT-postgres-1" psql -h /run/postgresql -U dp -d dp -XAtq -c)
  local want_tx want_acc got
  want_tx=$(grep -c . "$ROOT"/metadata/demo/bank/export-1/transactions-*.jsonl)
  want_acc=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$ROOT"/metadata/demo/bank/export-1/accounts-*.json)
  got=$("${psql[@]}" 'SELECT count(*) FROM silver."bank__transactions" WHERE _dp_is_current' 2>&1 || true)
  check "silver.bank__transactions holds the $want_tx current rows of the export (got $got)" test "$got" = "$want_tx"
  got=$("${psql[@]}" 'SELECT count(*) FROM silver."bank__accounts" WHERE _dp_is_current' 2>&1 || true)
  check "silver.bank__accounts holds the $want_acc current rows of the export (got $got)" test "$got" = "$want_acc"
  got=$("${psql[@]}" "SELECT status FROM audit.system_run WHERE run_id = '$run_id'" 2>&1 || true)
  check "audit.system_run says succeeded for the run (got $got)" test "$got" = succeeded
  got=$("${psql[@]}" "SELECT count(*) FROM silver.\"bank__transactions\" WHERE _dp_run_id <> '$run_id'" 2>&1 || true)
  check "every silver row points back to the run" test "$got" = 0
  # FerretDB's database tuned for bronze (docker/ferretdb-tuning.sql): the run's collections got
  # the _id index from the event trigger
  got=$(podman exec "$PROJECT-postgres-1" psql -h /run/postgresql -U dp -d ferretdb -XAtq -c \
          "SELECT current_setting('plan_cache_mode') || ' ' || count(*) FROM pg_indexes WHERE indexname LIKE '%\\_dp\\_id\\_gin' AND tablename LIKE 'bank\\_\\_%'" 2>&1 || true)
  check "FerretDB's database is tuned for bronze (plan_cache_mode and _id indexes of bank: $got)" \
    grep -Eq '^force_custom_plan [1-9]' <<<"$got"

  # hot reload through the bind mounts: an edit on the host reaches serve without a restart
  local gf
  gf=$(find "$DP_CI_SCRIPTS/gold" -name '*.lua' | sort | head -n 1)
  local before
  if [[ -n $gf ]]; then
    wait_log 'serve: listening' 1 || true
    before=$(grep -c 'serve: reloaded' "$WORK/engine.log" || true)
    printf '\n-- edited on the host by docker/ci.sh\n' >>"$gf"
    if wait_log 'serve: reloaded' 20 "$before"; then pass "an edit of gold/${gf##*/} on the host is reloaded by serve in the container"
    else tail -n 5 "$WORK/engine.log"; fail "an edit of gold/${gf##*/} on the host is reloaded by serve"; fi
  fi
  python3 - "$DP_CI_SCRIPTS/metadata/systems.json" <<'PY'
import json, sys
p = sys.argv[1]
systems = json.load(open(p))
for s in systems:
    if s["name"] == "bank":
        s["description"] += " (edited by docker/ci.sh)"
json.dump(systems, open(p, "w"), indent=2)
PY
  local hash=""
  podman exec "$PROJECT-dp-engine-1" dp-entrypoint metadata push --dir /srv/dp/metadata >"$WORK/push.log" 2>&1 &&
    hash=$(sed -n 's/.*hash \([0-9a-f]\{12\}\).*/\1/p' "$WORK/push.log" | tail -n 1)
  if [[ -n $hash ]] && wait_log "serve: reloaded metadata $hash" 20; then
    pass "metadata edited on the host, pushed in the container: serve reloads it (new hash $hash)"
  else tail -n 5 "$WORK/push.log" "$WORK/engine.log"; fail "metadata edited on the host and pushed is reloaded by serve"; fi

  # Prefect: the server on PostgreSQL, the worker's process pool runs `dp-engine run bank`
  local pw=(podman exec "$PROJECT-prefect-worker-1")
  local ready=""
  t=$SECONDS
  for _ in $(seq 90); do
    if "${pw[@]}" prefect work-pool inspect dp-engine >/dev/null 2>&1; then ready=1; break; fi
    sleep 1
  done
  if [[ -n $ready ]]; then pass "Prefect server up and the worker's process pool dp-engine registered ($((SECONDS - t)) s)"
  else compose "${cf[@]}" logs prefect-server prefect-worker 2>&1 | tail -n 30; fail "Prefect server up and the worker's pool registered"; fi
  got=$(podman exec "$PROJECT-postgres-1" psql -h /run/postgresql -U dp -d prefect -XAtq \
          -c "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'" 2>&1 || true)
  check "the Prefect server keeps its state in PostgreSQL (database prefect: $got tables)" test "${got:-0}" -gt 10 2>/dev/null
  if [[ -n $ready ]] && "${pw[@]}" python /srv/dp/prefect/dp_flows.py deploy bank >"$WORK/deploy.log" 2>&1; then
    pass "docker/prefect/dp_flows.py deploys dp-run/bank on the process pool"
    t=$SECONDS
    if "${pw[@]}" prefect deployment run dp-run/bank --watch --watch-timeout 180 >"$WORK/flow.log" 2>&1 &&
       grep -q "Completed" "$WORK/flow.log"; then
      pass "a Prefect flow run of dp-run/bank completed on the worker ($((SECONDS - t)) s)"
    else tail -n 20 "$WORK/flow.log"; compose "${cf[@]}" logs prefect-worker 2>&1 | tail -n 30; fail "a Prefect flow run of dp-run/bank completed"; fi
    got=$("${psql[@]}" "SELECT count(*) FROM audit.system_run WHERE system = 'bank' AND status = 'succeeded'" 2>&1 || true)
    check "audit.system_run has the API run and the Prefect-started run of bank, both succeeded (got $got)" test "$got" = 2
    got=$("${psql[@]}" 'SELECT count(*) FROM silver."bank__transactions"' 2>&1 || true)
    check "the second run of the same export changed nothing in silver ($got rows)" test "$got" = "$want_tx"
  else
    tail -n 20 "$WORK/deploy.log" 2>/dev/null; fail "docker/prefect/dp_flows.py deploys dp-run/bank"
  fi

  # idle memory, after the runs, once things settle
  sleep 5
  local c
  FIG_RSS=""
  for c in dp-engine postgres ferretdb prefect-server prefect-worker; do
    FIG_RSS+="   idle $c: RSS of the main process $(container_rss_mib "$PROJECT-$c-1") MiB, PSS of all its processes $(container_pss_mib "$PROJECT-$c-1") MiB"$'\n'
  done
  printf '%s' "$FIG_RSS"

  # SIGTERM reaches serve (PID 1 after exec) and it exits cleanly
  t=$SECONDS
  podman stop -t 30 "$PROJECT-dp-engine-1" >/dev/null 2>&1 || true
  check "SIGTERM stops serve cleanly (exit code $(podman inspect -f '{{.State.ExitCode}}' "$PROJECT-dp-engine-1"), $((SECONDS - t)) s)" \
    test "$(podman inspect -f '{{.State.ExitCode}}' "$PROJECT-dp-engine-1")" = 0
  if compose "${cf[@]}" down -v --timeout 10 >"$WORK/down.log" 2>&1; then pass "compose down -v"
  else cat "$WORK/down.log"; fail "compose down -v"; fi
}

finish() {
  # layers of builds a week old or more (each change of the sources leaves a few hundred MB)
  podman image prune -f --filter until=168h >/dev/null 2>&1 || true
  echo "== docker/ci.sh: figures"
  [[ -n ${FIG_IMAGE:-} ]] && echo "   $FIG_IMAGE"
  [[ -n ${FIG_RSS:-} ]] && printf '%s' "$FIG_RSS"
  echo "   total time: $(elapsed)"
}

cleanup() {
  local rc=$?
  # stopped by an unexpected error half way: still say so in the summary line
  if [[ $MODE == all && -z $SUMMARY_DONE ]]; then
    fail "docker/ci.sh stopped early (exit status $rc; see the lines above)"
    echo "$PASSED passed, $FAILED failed"
    (( rc )) || rc=1
  fi
  if [[ -n ${DOCKER_HOST:-} && -x $COMPOSE_BIN && -f $ROOT/docker/compose.ci.yml ]]; then
    "$COMPOSE_BIN" -p "$PROJECT" -f "$ROOT/docker/compose.ci.yml" down -v --timeout 10 >/dev/null 2>&1 || true
  fi
  if [[ -n ${SERVICE_PID:-} ]]; then
    kill "$SERVICE_PID" 2>/dev/null || true
    wait "$SERVICE_PID" 2>/dev/null || true
  fi
  [[ -n $WORK ]] && rm -rf "$WORK"
  exit "$rc"
}

main() {
  MODE=${1:-all}
  local mode=$MODE
  (( EUID == 0 )) || die "run as root (podman and buildah run rootful here)"
  WORK=$(mktemp -d /tmp/dp-docker-ci.XXXXXX)
  trap cleanup EXIT
  prepare
  log "prepared in $(elapsed)"
  [[ $mode == prepare ]] && return 0
  [[ $mode == all ]] || die "usage: docker/ci.sh [prepare|all]"
  run_checks
  SUMMARY_DONE=1
  echo "$PASSED passed, $FAILED failed"
  (( FAILED == 0 ))
}

main "$@"
