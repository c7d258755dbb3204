-- spec/03-fuzz/records.lua: a source-record mutator and its oracle (docs/testing.md, "Fuzzing
-- source records"). Pure Lua, no engine: records_fuzz_spec.lua writes what this makes into an
-- inbox, runs the engine and asks this module what each line must have become.
--
-- Each record gets an id and a value per typed column, drawn from boundary cases (numbers at
-- every limit, hostile strings and keys), plus unmapped fields with keys MongoDB refuses. For
-- each value the module knows, from the documented rules (docs/data-types.md,
-- docs/data-layers.md), whether its column takes it and as what canonical text; a record loads
-- when every column takes its value and bronze can store it, else it is rejected. Lines that are
-- not JSON at all make the run fail, naming the file and line.
local M = {}

-- A deterministic generator (xorshift32), so that a seed replays the same records.
local bit = require "bit"
function M.rng(seed)
  local s = bit.tobit(seed ~= 0 and seed or 0x9e3779b9)
  local r = {}
  function r.next()
    s = bit.bxor(s, bit.lshift(s, 13))
    s = bit.bxor(s, bit.rshift(s, 17))
    s = bit.bxor(s, bit.lshift(s, 5))
    return s % 2147483648
  end
  function r.int(a, b) return a + r.next() % (b - a + 1) end
  function r.pick(t) return t[r.int(1, #t)] end
  function r.chance(p) return r.next() % 10000 < p * 10000 end
  return r
end

---------------------------------------------------------------------------------------------
-- Numbers: exact arithmetic on decimal texts

-- text -> neg, digits (no leading/trailing zeros, "" for zero), point: value = 0.digits * 10^point
local function normalize(t)
  local sign, int, frac, ex = t:match("^%s*([+-]?)(%d*)%.?(%d*)[eE]?([+-]?%d*)%s*$")
  if not sign or (int == "" and frac == "") then return nil end
  local digits = int .. frac
  local point = #int + (tonumber(ex ~= "" and ex or "0") or 0)
  local lead = digits:match("^0*")
  digits, point = digits:sub(#lead + 1), point - #lead
  digits = digits:gsub("0+$", "")
  if digits == "" then point = 0 end
  return sign == "-", digits, point
end
M.normalize = normalize

-- Is the number text an integer? Then its canonical decimal text.
local function integer_text(t)
  local neg, d, p = normalize(t)
  if not neg and d == nil then return nil end
  if d == "" then return "0" end
  if #d > p then return nil end
  if p > 400 then return nil, "huge" end
  return (neg and "-" or "") .. d .. string.rep("0", p - #d)
end

local function cmp_abs(a, b) -- decimal digit strings without sign or leading zeros
  if #a ~= #b then return #a < #b and -1 or 1 end
  return a < b and -1 or a > b and 1 or 0
end

local function fits(int_text, bits)
  local neg = int_text:sub(1, 1) == "-"
  local a = neg and int_text:sub(2) or int_text
  local limit = bits == 32 and (neg and "2147483648" or "2147483647") or (neg and "9223372036854775808" or "9223372036854775807")
  return cmp_abs(a, limit) <= 0
end

-- dp_format_double: the shortest of %.15g..%.17g that reads back as the same double
local function fmt_double(d)
  for p = 15, 17 do
    local s = string.format("%." .. p .. "g", d)
    if tonumber(s) == d then return s end
  end
  return string.format("%.17g", d)
end
M.fmt_double = fmt_double

local function same_value(a, b)
  local n1, d1, p1 = normalize(a)
  local n2, d2, p2 = normalize(b)
  return d1 ~= nil and d2 ~= nil and n1 == n2 and d1 == d2 and p1 == p2
end

-- What bronze makes of a JSON number text: "int" (fits int64), "double", or "text"
local function json_number_kind(t)
  if not t:find("[.eE]") then
    local it = integer_text(t)
    if it and fits(it, 64) then return "int", it end
    return "text"
  end
  local d = tonumber(t)
  if d and d == d and d ~= math.huge and d ~= -math.huge and same_value(t, fmt_double(d)) then return "double", d end
  return "text"
end
M.json_number_kind = json_number_kind

-- The verdict of a typed column for a value: the canonical text silver must hold (as PostgreSQL
-- prints it back with ::text), true (loads, value not compared), or false (rejected).
-- v = { kind = "number"|"string"|"null"|"bool"|"object", text = JSON text, str = decoded string }
local function verdict(col, v)
  if v.kind == "null" then return "NULL" end
  if col == "json" then
    if v.nul then return false end
    return true -- compared in SQL with the source text as jsonb
  end
  if v.kind == "object" or v.kind == "bool" then
    if v.kind == "bool" and col == "text" then return v.text end
    return false
  end
  local t = v.kind == "number" and v.text or v.str
  if col == "text" then
    if v.kind == "string" then
      if v.str:find("\0", 1, true) then return false end
      return v.str
    end
    local k, val = json_number_kind(t)
    if k == "int" then return val end
    if k == "double" then return fmt_double(val) end
    return t
  end
  if v.kind == "string" and t:find("\0", 1, true) then return false end
  local trimmed = t:match("^%s*(.-)%s*$")
  if col == "integer" or col == "bigint" then
    local it
    if v.kind == "string" then
      if not trimmed:match("^[+-]?%d+$") then return false end
      it = integer_text(trimmed)
    else
      local k, val = json_number_kind(t)
      if k == "double" then
        if val ~= math.floor(val) or val >= 9223372036854775808 or val < -9223372036854775808 then return false end
      end
      it = integer_text(t)
    end
    if not it or not fits(it, col == "integer" and 32 or 64) then return false end
    return it
  end
  if col == "double" then
    local d
    if v.kind == "string" then
      if #trimmed >= 512 or not trimmed:match("^[+-]?%d*%.?%d*[eE]?[+-]?%d*$") or not trimmed:find("%d") then return false end
      d = tonumber(trimmed)
    else
      d = tonumber(t)
    end
    if not d or d ~= d or d == math.huge or d == -math.huge then return false end
    local _, digits = normalize(v.kind == "string" and trimmed or t)
    if d == 0 and digits ~= "" then return false end
    return true, d -- compared as numbers
  end
  if col == "decimal" then -- decimal(38,6)
    local src = v.kind == "string" and trimmed or t
    local k, val = "text", nil
    if v.kind == "number" then k, val = json_number_kind(t) end
    if k == "double" then src = fmt_double(val) end
    local neg, d, p = normalize(src)
    if not d then return false end
    local ex = src:match("[eE]([+-]?%d+)%s*$")
    if ex and math.abs(tonumber(ex)) > 1000 then return false end
    local _, ndig = src:gsub("%d", "")
    if ndig >= 1000 then return false end
    if p > 32 then return false end
    if d ~= "" and #d - p > 6 then return true end -- rounded: not compared
    if d == "" then return "0.000000" end
    local int = p > 0 and (d:sub(1, p) .. string.rep("0", p - #d)) or "0"
    local frac = p >= 0 and d:sub(p + 1) or (string.rep("0", -p) .. d)
    frac = (frac .. "000000"):sub(1, 6)
    return (neg and "-" or "") .. int .. "." .. frac
  end
  error("no verdict for column type " .. col)
end
M.verdict = verdict

---------------------------------------------------------------------------------------------
-- Values

local INT_EDGES = { "0", "-0", "1", "-1", "2147483647", "2147483648", "-2147483648", "-2147483649",
  "9007199254740992", "9007199254740993", "-9007199254740993", "9223372036854775807", "9223372036854775808",
  "-9223372036854775808", "-9223372036854775809", "18446744073709551615", "18446744073709551616",
  "36893488147419103232", "99999999999999999999999" }
local FLOAT_EDGES = { "0.0", "-0.0", "0.1", "1.5", "-2.25", "1E+2", "1e2", "1.0", "1.10", "1e308", "1.7976931348623157e308",
  "1e309", "-1e309", "1e400", "1e-400", "5e-324", "2.2250738585072014e-308", "1.00000000000000000001",
  "123456789012345678901234567890.123456", "0.30000000000000004", "4.35", "1e-7", "12345.6789",
  "9.999999e32", "1e33", "-0.0000005", "0.0000005" }

local function random_digits(r, n)
  local t = { tostring(r.int(1, 9)) }
  for i = 2, n do t[i] = tostring(r.int(0, 9)) end
  return table.concat(t)
end

function M.number(r)
  local c = r.int(1, 10)
  if c <= 4 then return r.pick(INT_EDGES) end
  if c <= 7 then return r.pick(FLOAT_EDGES) end
  local neg = r.chance(0.3) and "-" or ""
  local s = neg .. random_digits(r, r.int(1, c == 10 and 60 or 22))
  if r.chance(0.4) then s = s .. "." .. random_digits(r, r.int(1, 12)) end
  if r.chance(0.3) then s = s .. r.pick({ "e", "E" }) .. r.pick({ "", "+", "-" }) .. r.int(0, 420) end
  return s
end

-- JSON string literals and what they decode to
local STRINGS = {
  { '"plain"', "plain" }, { '""', "" }, { '"caf\\u00e9 \\ud83d\\ude00"', "caf\195\169 \240\159\152\128" },
  { '"caf\195\169"', "caf\195\169" }, { '"tab\\tnl\\nq\\"bs\\\\sl\\/"', "tab\tnl\nq\"bs\\sl/" },
  { '"ctl\\u0001\\u001f"', "ctl\1\31" }, { '"nul\\u0000byte"', "nul\0byte" }, { '"\\u0000"', "\0" },
  { '"  42  "', "  42  " }, { '"1E+2"', "1E+2" }, { '"18446744073709551616"', "18446744073709551616" },
  { '"-0"', "-0" }, { '"1e400"', "1e400" }, { '"0x10"', "0x10" }, { '"abc"', "abc" },
  { '"\\\\u0000"', "\\u0000" }, { '"$set"', "$set" }, { '"a.b"', "a.b" }, { '"%2E"', "%2E" },
}

function M.string(r)
  if r.chance(0.03) then
    local s = string.rep("x", r.int(1000, 300000))
    return '"' .. s .. '"', s
  end
  local e = r.pick(STRINGS)
  return e[1], e[2]
end

-- Keys: what MongoDB servers refuse or that need care, and ordinary ones
local KEYS = { "$set", "$numberLong", "$date", "a.b", ".", "..", "$", "", "%", "%2E", "%24x", "k\\u0000",
  "\\u0000", "ключ", "k\\ud83d\\ude00", "_id", "data", "_dp", "x y", "x\\ty" }

-- A random JSON value for unmapped fields and json columns: returns text, info
-- info: nul (holds U+0000 in a string or key), depth (levels of containers), dup, lone
function M.value(r, depth_left)
  local c = r.int(1, 10)
  if c <= 3 or depth_left <= 0 then return M.number(r), { depth = 0 } end
  if c <= 5 then
    local t, s = M.string(r)
    return t, { nul = s:find("\0", 1, true) ~= nil, depth = 0 }
  end
  if c == 6 then return r.pick({ "true", "false", "null" }), { depth = 0 } end
  local info = { depth = 1 }
  local parts = {}
  local arr = c == 7
  local used = {}
  for i = 1, r.int(0, 4) do
    local vt, vi = M.value(r, depth_left - 1)
    info.nul = info.nul or vi.nul
    info.dup = info.dup or vi.dup
    info.depth = math.max(info.depth, 1 + vi.depth)
    if arr then
      parts[i] = vt
    else
      local k = r.pick(KEYS)
      if used[k] then info.dup = true end
      used[k] = true
      if k:find("\\u0000", 1, true) then info.nul = true end
      parts[i] = '"' .. k .. '":' .. vt
    end
  end
  return (arr and "[" or "{") .. table.concat(parts, ",") .. (arr and "]" or "}"), info
end

local function nested(k) -- k levels of objects
  return string.rep('{"a":', k - 1) .. "{}" .. string.rep("}", k - 1)
end

---------------------------------------------------------------------------------------------
-- Records

-- The typed columns of the fixture's recs entity (spec/fixtures/pipelines/hostile)
M.JSONL_COLUMNS = { { "i", "integer" }, { "b", "bigint" }, { "d", "double" }, { "n", "decimal" }, { "txt", "text" },
  { "j", "json" } }
M.CSV_COLUMNS = { { "i", "integer" }, { "b", "bigint" }, { "d", "double" }, { "n", "decimal" }, { "txt", "text" } }

-- One JSON Lines record: { line = text, id =, expect = "load"|"reject", values = {col = verdict},
-- j = source text of j (or nil) }
function M.jsonl_record(r, id)
  local fields = { '"id":"' .. id .. '"' }
  local rec = { id = id, values = {}, expect = "load" }
  local used = { id = true }
  local function col_value(name, typ)
    local c = r.int(1, 10)
    local v
    if c <= 5 then
      local t = M.number(r)
      v = { kind = "number", text = t }
    elseif c <= 8 then
      local t, s = M.string(r)
      v = { kind = "string", text = t, str = s, nul = s:find("\0", 1, true) ~= nil }
    elseif c == 9 then
      v = { kind = "null", text = "null" }
    else
      local t, info = M.value(r, 3)
      local kind = t:sub(1, 1)
      v = { kind = (kind == "{" or kind == "[") and "object" or (kind == '"' and "string") or
        ((t == "true" or t == "false") and "bool") or (t == "null" and "null") or "number", text = t,
        nul = info.nul }
      if v.kind == "string" then v.str = assert(require("cjson").decode("[" .. t .. "]"))[1] end
      if info.dup then rec.expect = "reject" end
    end
    if typ == "json" and r.chance(0.15) then -- deep: 98 levels in all is the most bronze stores
      local k = r.pick({ 50, 96, 97, 98, 130 })
      v = { kind = "object", text = nested(k) }
      if 1 + k > 98 then rec.expect = "reject" end
    end
    return v
  end
  for _, c in ipairs(M.JSONL_COLUMNS) do
    if r.chance(0.85) then
      local v = col_value(c[1], c[2])
      fields[#fields + 1] = '"' .. c[1] .. '":' .. v.text
      used[c[1]] = true
      local ok, num = verdict(c[2], v)
      rec.values[c[1]] = { ok = ok, num = num, v = v }
      if ok == false then rec.expect = "reject" end
      if c[1] == "j" then rec.j = v.text end
    else
      rec.values[c[1]] = { ok = "NULL" }
    end
  end
  -- unmapped fields with hostile keys and values
  for _ = 1, r.int(0, 3) do
    local k = r.pick(KEYS)
    local vt, vi = M.value(r, 2)
    if used[k] then rec.expect = "reject" end -- a duplicate member
    if vi.dup then rec.expect = "reject" end
    used[k] = true
    fields[#fields + 1] = '"' .. k .. '":' .. vt
  end
  if r.chance(0.05) then -- a lone surrogate somewhere
    fields[#fields + 1] = '"lone":"' .. r.pick({ "\\ud800", "\\udfff", "x\\ud83d" }) .. '"'
    rec.expect = "reject"
  end
  if r.chance(0.05) and not used.b then -- a duplicate member
    fields[#fields + 1] = '"dupe":1,"dupe":2'
    rec.expect = "reject"
  end
  -- shuffle the members: order must not matter
  for i = #fields, 2, -1 do
    local k = r.int(1, i)
    fields[i], fields[k] = fields[k], fields[i]
  end
  local sep = r.chance(0.2) and ", " or ","
  rec.line = (r.chance(0.2) and " " or "") .. "{" .. table.concat(fields, sep) .. "}" .. (r.chance(0.1) and "\r" or "")
  return rec
end

-- A line that is not JSON at all: the run must fail naming the file and this line.
function M.broken_line(r)
  return r.pick({ '\0{"id":"nul"}', '{"id":"a"}\0{"id":"b"}', '{"id":"ctl","txt":"a\1b"}', '{"id":"utf","txt":"\255"}',
    '{"id":"trunc"', '{"id":"x",}', '["not","an","object"]', '{"id":"ovl","txt":"\192\128"}',
    '{"id":"sur","txt":"\237\160\128"}', "\239\187\191" .. '{"id":"bom-not-first"}' })
end

local function csv_field(r, s, quote_always)
  if quote_always or s:find('[,"\n\r]') or s == "" or s:match("^%s") then
    return '"' .. s:gsub('"', '""') .. '"'
  end
  return s
end

local CSV_TEXTS = { "plain", "with,comma", 'with "quotes"', "multi\nline", "  padded  ", "caf\195\169", "", "nul\0in",
  "18446744073709551616", "-0", "1E+2", "1e400" }

-- One CSV row: values are strings (an empty unquoted field is null)
function M.csv_record(r, id)
  local rec = { id = id, values = {}, expect = "load" }
  local cells = { id }
  for _, c in ipairs(M.CSV_COLUMNS) do
    local s
    local u = r.int(1, 10)
    if u <= 6 then
      s = M.number(r)
      if #s > 60 then s = s:sub(1, 60) end
      if r.chance(0.2) then s = " " .. s .. " " end
    elseif u <= 9 then
      s = r.pick(CSV_TEXTS)
    else
      s = nil
    end
    if s == nil then
      cells[#cells + 1] = ""
      rec.values[c[1]] = { ok = "NULL" }
    else
      cells[#cells + 1] = csv_field(r, s, r.chance(0.2))
      local v = { kind = "string", text = nil, str = s }
      if s == "" then -- a quoted empty field is an empty string
        cells[#cells] = '""'
      end
      local ok, num = verdict(c[2], v)
      rec.values[c[1]] = { ok = ok, num = num, v = v }
      if ok == false then rec.expect = "reject" end
    end
  end
  rec.line = table.concat(cells, ",")
  return rec
end

return M
