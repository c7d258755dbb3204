#!/usr/bin/env bash
# .ci/luacheck.sh — luacheck (configured in .luacheckrc) over lua/, connectors/, gold/ and spec/:
# prints every warning (file:line:col: (code) message), then `N passed, N failed` counted by file
# (a file with any warning or error fails). Exits non-zero when a file failed or luacheck could
# not run.
set -uo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." || exit 1

if ! command -v luacheck >/dev/null; then
  echo "luacheck: installing Debian's lua-check" >&2
  apt-get install -y -qq lua-check >/dev/null || { echo "luacheck: cannot install lua-check" >&2; echo "0 passed, 1 failed"; exit 1; }
fi
dirs=(lua connectors gold spec)
out=$(luacheck --formatter plain --codes "${dirs[@]}" 2>&1)
rc=$?
summary=$(luacheck --no-color "${dirs[@]}" 2>&1 | tail -n 1)
total=$(sed -nE 's/.* in ([0-9]+) files?$/\1/p' <<<"$summary")
if ((rc > 2)) || [[ -z $total ]]; then
  printf '%s\n%s\nluacheck: did not run to the end (exit status %d)\n' "$out" "$summary" "$rc" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
[[ -n $out ]] && printf '%s\n' "$out"
failed=$(grep -E '^[^:]+\.lua:[0-9]+:' <<<"$out" | cut -d: -f1 | sort -u | grep -c . || true)
echo "luacheck: $summary"
echo "$((total - failed)) passed, $failed failed"
((failed == 0))
