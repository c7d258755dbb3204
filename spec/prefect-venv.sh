#!/usr/bin/env bash
# spec/prefect-venv.sh — a Python venv with a Prefect 3 server, for the Prefect specs and the
# docs screenshot. Installed from PyPI once and cached outside the clone, keyed by the version
# range: ${XDG_CACHE_HOME:-~/.cache}/dp-engine/prefect-venv-<key>. Prints the venv's folder.
# Fast and quiet when the venv is already there.
set -euo pipefail
readonly SPEC='prefect>=3,<4'
readonly KEY=3
readonly VENV=${XDG_CACHE_HOME:-$HOME/.cache}/dp-engine/prefect-venv-$KEY
log() { printf 'prefect-venv: %s\n' "$*" >&2; }

if [[ -x $VENV/bin/prefect && -f $VENV/.complete ]]; then
  printf '%s\n' "$VENV"
  exit 0
fi
PY=${PYTHON:-python3}
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
  log "installing python3-venv (Debian)"
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
  else
    sudo apt-get update -qq >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
  fi
fi
# a venv is not relocatable, so it is built in place; .complete marks a finished one
rm -rf "$VENV"
mkdir -p "${VENV%/*}"
log "creating $VENV ($SPEC from PyPI; takes a minute or two)"
"$PY" -m venv "$VENV" >&2
"$VENV/bin/pip" install -q --disable-pip-version-check "$SPEC" >&2
"$VENV/bin/prefect" version >&2
touch "$VENV/.complete"
printf '%s\n' "$VENV"
