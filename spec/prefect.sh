#!/usr/bin/env bash
# spec/prefect.sh — the Prefect specs (spec/04-prefect) against a real Prefect 3 server.
#
# Usage: spec/prefect.sh [busted arguments...]
#
# Installs the Prefect venv when missing (spec/prefect-venv.sh, cached outside the clone), starts
# `prefect server start` on a free loopback port with PREFECT_HOME in a temporary folder,
# analytics off and a basic-auth string (so every call of the engine, the specs and the worker
# authenticates), waits for /api/health, then runs `spec/run.sh --run=prefect` (services, build,
# busted on spec/04-prefect; see .busted). The server is started once per call and stopped at
# the end. The last line is spec/run.sh's `N passed, N failed`.
#
# The specs get: DP_SPEC_PREFECT_URL (the API URL), DP_SPEC_PREFECT_AUTH (user:password),
# DP_SPEC_PREFECT_PID (the server's pid: the specs stop it with SIGSTOP and resume it),
# DP_SPEC_PREFECT_VENV (for `prefect worker start`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

stage="installing the Prefect venv (spec/prefect-venv.sh)"
server_pid=
home=
# shellcheck disable=SC2317,SC2329 # called by the trap
on_exit() {
  local rc=$?
  if [[ -n $server_pid ]]; then
    kill -CONT "$server_pid" 2>/dev/null || true
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  [[ -n $home ]] && rm -rf "$home"
  if [[ -n $stage ]]; then
    printf 'spec/prefect.sh: %s failed (exit status %d)\n' "$stage" "$rc" >&2
    printf '0 passed, 0 failed\n'
  fi
}
trap on_exit EXIT

venv=$(bash spec/prefect-venv.sh)

stage="starting the Prefect server"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
home=$(mktemp -d /tmp/dp-prefect-spec.XXXXXX)
auth="dp-spec:$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
SECONDS=0
# Prefect 3 serves from this one process (no child), so the specs can SIGSTOP it by its pid
PREFECT_HOME=$home PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_API_AUTH_STRING=$auth \
  PREFECT_SERVER_UI_ENABLED=false env -u PREFECT_API_URL -u PREFECT_API_KEY \
  "$venv/bin/prefect" server start --host 127.0.0.1 --port "$port" >"$home/server.log" 2>&1 &
server_pid=$!
url=http://127.0.0.1:$port/api
for _ in $(seq 180); do
  if curl -fsS -u "$auth" "$url/health" >/dev/null 2>&1; then break; fi
  kill -0 "$server_pid" 2>/dev/null || { tail -n 30 "$home/server.log" >&2; exit 1; }
  sleep 0.5
done
curl -fsS -u "$auth" "$url/health" >/dev/null || { echo "Prefect did not answer /api/health" >&2; tail -n 30 "$home/server.log" >&2; exit 1; }
printf 'spec/prefect.sh: Prefect answered /api/health after %d s\n' "$SECONDS" >&2

stage=
export DP_SPEC_PREFECT_URL=$url DP_SPEC_PREFECT_AUTH=$auth DP_SPEC_PREFECT_PID=$server_pid DP_SPEC_PREFECT_VENV=$venv
export DP_SPEC_PREFECT_HOME=$home
set +e
bash spec/run.sh --run=prefect "$@"
rc=$?
set -e
exit "$rc"
