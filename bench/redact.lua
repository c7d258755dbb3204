-- bench/redact.lua [N]: the cost of redacting emitted records (core/redact.c, docs/secrets.md),
-- for N records (default 100000) of 200 to 300 bytes, one secret registered, none of them
-- holding it (the common case: every record is scanned, nothing is replaced). Three kinds:
-- records with no backslash or percent sign (the fast path), records as lua-cjson writes them
-- (URLs with "\/"), and records with \uXXXX escapes. Run from the repository root after a build:
--   luajit bench/redact.lua 100000
-- Each figure is the best of 3 passes over the same records, with the time of an empty pass
-- (the loop and the copy into a Lua string, without the C scan) printed as the baseline.
package.cpath = "build/?.so;" .. package.cpath
local core = require "dp.core"
local N = tonumber(arg[1] or "100000")

local function records(kind)
  local out = {}
  for i = 1, N do
    local url = kind == "cjson" and "https:\\/\\/api.example.org\\/v1\\/items\\/" .. i
      or "https://api.example.org/v1/items/" .. i
    local name = kind == "escaped" and ("Gr\\u00fc\\u00dfe M\\u00fcller " .. i) or ("Greetings Mueller " .. i)
    out[i] = string.format('{"id":%d,"name":"%s","amount":"%d.%02d","url":"%s","tags":["a","b","c"],'
      .. '"created":"2024-03-%02dT10:%02d:00Z","note":"a note of some length for record number %d"}',
      i, name, i % 1000, i % 100, kind == "plain" and ("api.example.org items " .. i) or url, i % 28 + 1, i % 60, i)
  end
  return out
end

local function best(f, recs)
  local t = math.huge
  for _ = 1, 3 do
    local t0 = os.clock()
    f(recs)
    t = math.min(t, os.clock() - t0)
  end
  return t
end

core.redact_reset()
assert(core.redact_register("T\195\182ken-BENCH/0042-abcdefgh", "bench"))
for _, kind in ipairs({ "plain", "cjson", "escaped" }) do
  local recs = records(kind)
  local bytes = 0
  for _, r in ipairs(recs) do bytes = bytes + #r end
  local base = best(function(rs) local n = 0 for i = 1, #rs do n = n + #rs[i] end return n end, recs)
  local t = best(function(rs)
    for i = 1, #rs do
      local _, k = core.redact(rs[i])
      assert(k == 0)
    end
  end, recs)
  print(string.format("%-8s %d records, %.0f bytes each: redact %.3f s (%.2f us/record), loop alone %.3f s",
    kind, N, bytes / N, t, t / N * 1e6, base))
end
core.redact_reset()
