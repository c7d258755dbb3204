-- bench/gen_wide.lua N OUT [CHANGE_PCT REMOVE_PCT SEED]: writes N JSON Lines records of the
-- "wide" entity (20 columns of mixed types, one nested path) to OUT. With CHANGE_PCT/REMOVE_PCT
-- it writes the same records with that share changed (scd2 column amount) or left out, chosen
-- by a seeded generator, so two calls with the same arguments give the same file.
local N = assert(tonumber(arg[1]), "usage: gen_wide.lua N OUT [CHANGE_PCT REMOVE_PCT SEED]")
local out = assert(io.open(assert(arg[2]), "w"))
local change = tonumber(arg[3] or "0") / 100
local remove = tonumber(arg[4] or "0") / 100
local seed = tonumber(arg[5] or "42")

-- a small deterministic generator (xorshift32) so files are reproducible across machines
local state = seed
local bit = require "bit"
local function rnd()
  state = bit.bxor(state, bit.lshift(state, 13))
  state = bit.bxor(state, bit.rshift(state, 17))
  state = bit.bxor(state, bit.lshift(state, 5))
  return (state % 1000003) / 1000003
end
local cities = { "Amsterdam", "Utrecht", "Rotterdam", "Den Haag", "Eindhoven", "Groningen" }
local cats = { "food", "rent", "travel", "fun", "health", "other" }
local buf, n = {}, 0
for i = 1, N do
  local r1, r2 = rnd(), rnd()
  if not (remove > 0 and r1 < remove) then
    local amount = (i * 37 % 100000) / 100
    if change > 0 and r2 < change then amount = amount + 1 end
    buf[#buf + 1] = string.format(
      '{"id":%d,"name":"Name %d","email":"user%d@example.org","amount":"%.2f","qty":%d,"price":%.4f,'
      .. '"active":%s,"born":"19%02d-%02d-%02d","created":"2024-%02d-%02dT%02d:%02d:00+01:00",'
      .. '"note":"note for %d","tags":["t%d","x"],"uid":"%08x-0000-4000-8000-%012x",'
      .. '"address":{"city":"%s","zip":"%04dAB"},"score":%d.%03d,"total":%d,"flag":%s,'
      .. '"updated":"2025-01-%02dT12:00:00Z","level":%d,"ratio":%.6f,"category":"%s"}',
      i, i, i, amount, i % 1000, i / 7, (i % 2 == 0) and "true" or "false", i % 100, i % 12 + 1, i % 28 + 1,
      i % 12 + 1, i % 28 + 1, i % 24, i % 60, i, i % 10, i, i, cities[i % #cities + 1], i % 10000,
      i % 1000, i % 1000, i * 1000003, (i % 3 == 0) and "true" or "false", i % 28 + 1, i % 50,
      (i % 1000) / 1000, cats[i % #cats + 1])
    n = n + 1
    if #buf == 10000 then out:write(table.concat(buf, "\n"), "\n"); buf = {} end
  end
end
if #buf > 0 then out:write(table.concat(buf, "\n"), "\n") end
out:close()
io.stderr:write(("gen_wide: %d records -> %s\n"):format(n, arg[2]))
