#!/usr/bin/env bash
# docs/generate.sh - rewrites the generated option tables of docs/connectors.md from the
# connectors' schemas (`dp-engine connectors show TYPE --markdown`). Run it after changing a
# field of connectors/*.lua or lua/dp/connector.lua; spec/01-unit/connectors_doc_spec.lua fails
# while docs/connectors.md and the schemas disagree.
#
# Usage: bash docs/generate.sh      (needs build/dp-engine: cmake --build build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${DP_ENGINE:-build/dp-engine}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for f in connectors/*.lua; do
  t=$(basename "$f" .lua)
  DP_HOME=$PWD DP_SCRIPTS=$PWD "$bin" connectors show "$t" --markdown >>"$tmp"
done
DP_GENERATED=$tmp luajit -e '
package.path = "lua/?.lua;" .. package.path
local doc = require "dp.connectors_doc"
local gen = assert(io.open(os.getenv("DP_GENERATED"))):read("*a")
local blocks = {}
for id, b in pairs(doc.find_blocks(gen)) do blocks[#blocks + 1] = { id = id, text = b.text } end
local path = "docs/connectors.md"
local text = assert(io.open(path)):read("*a")
local new, n = doc.splice(text, blocks)
local f = assert(io.open(path, "w")); f:write(new); f:close()
io.stderr:write(path .. ": " .. n .. " generated blocks written\n")
'
