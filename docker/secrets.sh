#!/usr/bin/env bash
# docker/secrets.sh — create the secret files of docker/compose.yml, once, in DP_SECRETS_DIR
# (default docker/secrets): random database passwords, API token and master key, and the
# Prefect UI's basic-auth user. Existing files are kept (re-running never rotates a secret).
#
#   docker/secrets.sh [PREFECT_UI_USER]     (asks for that user's password; default user: admin)
#
# Needs openssl (for the apr1 hash Traefik's basic auth reads). The folder is 0700, the files
# 0644: compose bind-mounts them as they are, and the containers' non-root users must read them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
dir=${DP_SECRETS_DIR:-./secrets}
mkdir -p "$dir"
chmod 0700 "$dir"
umask 022

rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
new() { # NAME GENERATOR...
  local f=$dir/$1
  if [[ -s $f ]]; then echo "kept    $f"; return; fi
  "${@:2}" >"$f.tmp"
  chmod 0644 "$f.tmp"
  mv "$f.tmp" "$f"
  echo "created $f"
}
new postgres_password rand_hex 24
new mongo_password rand_hex 24
new dp_api_token rand_hex 32
new dp_master_key bash -c 'head -c 32 /dev/urandom | base64'
if [[ ! -s $dir/traefik_basic_auth ]]; then
  user=${1:-admin}
  if [[ -n ${PREFECT_UI_PASSWORD:-} ]]; then pw=$PREFECT_UI_PASSWORD
  else
    read -r -s -p "password for the Prefect UI user $user: " pw; echo
    read -r -s -p "again: " pw2; echo
    [[ $pw == "$pw2" ]] || { echo "the passwords differ" >&2; exit 1; }
  fi
  [[ -n $pw ]] || { echo "empty password" >&2; exit 1; }
  command -v openssl >/dev/null || { echo "openssl is needed for the basic-auth hash (apt-get install openssl)" >&2; exit 1; }
  printf '%s:%s\n' "$user" "$(printf '%s' "$pw" | openssl passwd -apr1 -stdin)" >"$dir/traefik_basic_auth.tmp"
  chmod 0644 "$dir/traefik_basic_auth.tmp"
  mv "$dir/traefik_basic_auth.tmp" "$dir/traefik_basic_auth"
  echo "created $dir/traefik_basic_auth (user $user)"
else
  echo "kept    $dir/traefik_basic_auth"
fi
echo "Keep a copy of $dir/dp_master_key somewhere safe: without it the secrets store cannot be read."
