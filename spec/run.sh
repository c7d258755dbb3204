#!/usr/bin/env bash
# spec/run.sh — the test command: services, build, busted.
#
# Usage: spec/run.sh [busted arguments...]
#   spec/run.sh                  every spec under spec/
#   spec/run.sh spec/01-unit     a subset (any busted argument passes through)
#
# It installs what is missing and starts (or reuses) the throwaway PostgreSQL and FerretDB
# (spec/services.sh start), builds build/dp-engine and build/dp/core.so, and runs busted from the
# repository root (see .busted) with TAP output, kept in .dp/test-output.tap. The last line it
# prints is always `N passed, N failed`. It exits non-zero when a test failed, when busted did
# not finish, when no test ran, or when the services or the build failed.
#
# The services keep running, so that a rerun is quick; stop them with: spec/services.sh stop
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly TAP_FILE=.dp/test-output.tap

# Until busted has run, any failure still ends with the summary line, so that whoever reads the
# last line (CI) sees that nothing passed.
stage=
# shellcheck disable=SC2329 # called by the trap
on_exit() {
  local rc=$?
  if [[ -n $stage ]]; then
    printf 'spec/run.sh: %s failed (exit status %d)\n' "$stage" "$rc" >&2
    printf '0 passed, 0 failed\n'
  fi
}
trap on_exit EXIT

stage="starting the services (spec/services.sh start)"
service_env=$(bash spec/services.sh start)
eval "$service_env"

stage="the build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j2

stage=
export DP_HOME="$PWD"
# libmongoc (loaded by dp-engine and by dp.core in busted) keeps performance counters in
# /dev/shm/mongoc-<pid>; a process killed with SIGKILL, or one that never calls mongoc_cleanup
# (LuaJIT), leaves its file behind, and a later process with the same pid then warns on stderr.
# Nothing here reads the counters: turn them off for every process started from here.
export MONGOC_DISABLE_SHM=1
# and remove the files such processes left earlier (ours only: /dev/shm is sticky), whose pid a
# process started without that variable could meet again
for f in /dev/shm/mongoc-*; do
  if [[ -O $f && ! -d /proc/${f##*-} ]]; then rm -f "$f"; fi
done
mkdir -p "${TAP_FILE%/*}"

# Busted writes TAP to stdout; its own crashes go to stderr, which passes through.
set +e +o pipefail
busted -o TAP "$@" </dev/null | tee "$TAP_FILE"
busted_rc=${PIPESTATUS[0]}
set -e -o pipefail

# Count the test lines. Busted numbers them 1, 2, 3...; a line that looks like one but does not
# carry the next number was printed by a spec, and does not count. `# ` lines are diagnostics (a
# failure's message, one line each, even for messages of several lines). TAP marks a skipped
# test (busted's pending) `ok N - # SKIP ...` and a to-do `not ok N ... # TODO ...`: these are
# neither passed nor failed. `1..N` is the plan, which busted prints at the end.
read -r passed failed skipped plan < <(awk '
  /^ok [0-9]+([ \t]|$)/ && $2 == n + 1 {
    n++; if (toupper($0) ~ / # SKIP/) skipped++; else passed++; next
  }
  /^not ok [0-9]+([ \t]|$)/ && $3 == n + 1 {
    n++; if (toupper($0) ~ / # TODO/) skipped++; else failed++; next
  }
  /^1\.\.[0-9]+$/ { plan = substr($1, 4) + 0 }
  END { print passed + 0, failed + 0, skipped + 0, (plan == "" ? "none" : plan) }
' "$TAP_FILE")

rc=0
if (( failed > 0 )); then
  rc=1
fi
if [[ $plan == none ]]; then
  echo "spec/run.sh: busted did not finish (no TAP plan line; exit status $busted_rc), see above" >&2
  rc=1
elif (( plan != passed + failed + skipped )); then
  echo "spec/run.sh: busted planned $plan tests but reported $((passed + failed + skipped))" >&2
  rc=1
fi
if (( busted_rc != 0 && failed == 0 )); then
  echo "spec/run.sh: busted exited with status $busted_rc but no test failed: it crashed" >&2
  rc=1
fi
if (( passed + failed == 0 )); then
  echo "spec/run.sh: no test ran" >&2
  rc=1
fi
if (( skipped > 0 )); then
  echo "($skipped skipped or pending)"
fi
echo "$passed passed, $failed failed"
exit "$rc"
