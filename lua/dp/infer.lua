-- dp.infer: columns, types, nullability and a primary key inferred from sample records, for
-- `dp-engine init system --from SAMPLE` (docs/init.md has the rules). Pure Lua: no engine, no
-- I/O; the caller hands it texts.
--
--   local v = infer.parse_json(text)            -- exact: numbers keep their text
--   local recs, selector = infer.records_of(v)   -- the records of a saved response
--   local header, rows = infer.parse_csv(text, infer.sniff_delimiter(text))
--   local e = infer.entity({ { file = "a.jsonl", records = recs }, ... }, { nested = "flatten" })
--   -- e.columns = { { name, type, precision, scale, nullable, path, why }, ... },
--   -- e.primary_key, e.decimal_comma (CSV paths), e.warnings
local csvreader = require "dp.csv"
local jsonreader = require "dp.jsonreader"

local M = {}

---------------------------------------------------------------------------------------------
-- JSON with exact numbers and ordered keys.
-- object: { [OBJ] = true, keys = { ... }, map = { k = v } }; array: { [ARR] = true, n, ... };
-- number: { [NUM] = "61.840" }; string, boolean: Lua values; null: M.NULL.

local OBJ, ARR, NUM = {}, {}, {}
M.NULL = setmetatable({}, { __tostring = function() return "null" end })
local NULL = M.NULL

function M.is_object(v) return type(v) == "table" and v[OBJ] == true end
function M.is_array(v) return type(v) == "table" and v[ARR] == true end
function M.number_text(v) return type(v) == "table" and v[NUM] or nil end

local function line_col(text, pos)
  local line, last = 1, 0
  for i in text:sub(1, pos - 1):gmatch("()\n") do line, last = line + 1, i end
  return line, pos - last
end
M.line_col = line_col

-- the escapes and the UTF-8 encoder of the engine's strict JSON reader
local ESC, utf8_char = jsonreader.ESCAPES, jsonreader.utf8_char

-- Parses one JSON value from text (whole text, or from pos when given: returns value, next pos).
-- Raises "line L, column C: ..." on malformed input.
function M.parse_json(text, pos, partial)
  local i = pos or 1
  local function fail(msg)
    local l, c = line_col(text, i)
    error("line " .. l .. ", column " .. c .. ": " .. msg, 0)
  end
  local function ws()
    i = text:find("[^ \t\r\n]", i) or #text + 1
  end
  local value
  local depth = 0
  local function str()
    local parts = {}
    i = i + 1
    while true do
      local j = text:find('["\\%z\1-\31]', i)
      if not j then fail("the text ends inside a string") end
      parts[#parts + 1] = text:sub(i, j - 1)
      local c = text:sub(j, j)
      if c == '"' then i = j + 1 break end
      if c ~= "\\" then i = j fail("a control character inside a string") end
      local e = text:sub(j + 1, j + 1)
      if ESC[e] then
        parts[#parts + 1] = ESC[e]
        i = j + 2
      elseif e == "u" then
        local hex = text:sub(j + 2, j + 5)
        if not hex:match("^%x%x%x%x$") then i = j fail("a bad \\u escape") end
        local cp = tonumber(hex, 16)
        i = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF and text:sub(i, i + 1) == "\\u" then
          local lo = tonumber(text:sub(i + 2, i + 5), 16)
          if lo and lo >= 0xDC00 and lo <= 0xDFFF then
            cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
            i = i + 6
          end
        end
        if cp >= 0xD800 and cp <= 0xDFFF then -- the engine refuses it: no character
          i = j
          fail("a lone surrogate \\u" .. hex:lower() .. " (half of a UTF-16 pair, not a character)")
        end
        parts[#parts + 1] = utf8_char(cp)
      else
        i = j fail("a bad escape \\" .. e)
      end
    end
    return table.concat(parts)
  end
  function value()
    ws()
    local c = text:sub(i, i)
    if c == "{" or c == "[" then
      depth = depth + 1
      if depth > 200 then fail("nested deeper than 200 levels") end
      local close = c == "{" and "}" or "]"
      local out = c == "{" and { [OBJ] = true, keys = {}, map = {} } or { [ARR] = true, n = 0 }
      i = i + 1
      ws()
      if text:sub(i, i) == close then i = i + 1 depth = depth - 1 return out end
      while true do
        if close == "}" then
          ws()
          if text:sub(i, i) ~= '"' then fail("expected a string key") end
          local k = str()
          ws()
          if text:sub(i, i) ~= ":" then fail('expected ":"') end
          i = i + 1
          local v = value()
          if out.map[k] == nil then out.keys[#out.keys + 1] = k end
          out.map[k] = v
        else
          out.n = out.n + 1
          out[out.n] = value()
        end
        ws()
        c = text:sub(i, i)
        i = i + 1
        if c == close then break end
        if c ~= "," then i = i - 1 fail('expected "," or "' .. close .. '"') end
      end
      depth = depth - 1
      return out
    elseif c == '"' then
      return str()
    elseif text:sub(i, i + 3) == "true" then i = i + 4 return true
    elseif text:sub(i, i + 4) == "false" then i = i + 5 return false
    elseif text:sub(i, i + 3) == "null" then i = i + 4 return NULL
    end
    local num = text:match("^%-?%d+%.?%d*[eE]?[+-]?%d*", i)
    if not num or num == "-" or not (num:match("^%-?0$") or num:match("^%-?0[.eE]") or num:match("^%-?[1-9]"))
        or not (num:match("^%-?%d+$") or num:match("^%-?%d+%.%d+$") or num:match("^%-?%d+%.?%d*[eE][+-]?%d+$")) then
      if c == "" then fail("the text ends where a value was expected") end
      fail("unexpected " .. string.format("%q", text:sub(i, i + 9)))
    end
    i = i + #num
    return { [NUM] = num }
  end
  local v = value()
  if partial then return v, i end
  ws()
  if i <= #text then fail("text after the JSON value") end
  return v
end

-- JSON text of a parsed value (numbers as their text, keys in order).
function M.encode(v)
  if v == NULL or v == nil then return "null" end
  if v == true or v == false then return tostring(v) end
  if type(v) == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      if c == '"' or c == "\\" then return "\\" .. c end
      return string.format("\\u%04x", c:byte())
    end) .. '"'
  end
  if v[NUM] then return v[NUM] end
  local parts = {}
  if v[ARR] then
    for k = 1, v.n do parts[k] = M.encode(v[k]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  for k, key in ipairs(v.keys) do parts[k] = M.encode(key) .. ":" .. M.encode(v.map[key]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- The records of a parsed sample: an array of objects (selector ""), or the largest array of
-- objects inside an object (a saved API response), with its dotted path. A lone object is one
-- record. Returns records, selector; or nil and an error.
function M.records_of(v)
  if M.is_array(v) then
    for k = 1, v.n do
      if not M.is_object(v[k]) then return nil, "element [" .. (k - 1) .. "] is not a JSON object" end
    end
    local out = {}
    for k = 1, v.n do out[k] = v[k] end
    return out, ""
  end
  if not M.is_object(v) then return nil, "expected a JSON object or an array of objects" end
  local best, best_path, best_n = nil, nil, -1
  local queue = { { v, "" } }
  local qi = 1
  while queue[qi] do
    local node, path = queue[qi][1], queue[qi][2]
    qi = qi + 1
    for _, k in ipairs(node.keys) do
      local x = node.map[k]
      local p = path == "" and k or path .. "." .. k
      if M.is_array(x) and x.n > best_n and not k:find(".", 1, true) then
        local all = x.n > 0
        for j = 1, x.n do all = all and M.is_object(x[j]) end
        if all then best, best_path, best_n = x, p, x.n end
      elseif M.is_object(x) and not k:find(".", 1, true) then
        queue[#queue + 1] = { x, p }
      end
    end
  end
  if best then
    local out = {}
    for k = 1, best.n do out[k] = best[k] end
    return out, best_path
  end
  return { v }, ""
end

-- JSON Lines: one object per non-blank line. Returns records or raises "line N: ...".
function M.parse_jsonl(text)
  local out, n = {}, 0
  if text:sub(1, 3) == "\239\187\191" then text = text:sub(4) end
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do
    n = n + 1
    if line:find("%S") then
      local ok, v = pcall(M.parse_json, line)
      if not ok then error("line " .. n .. ": " .. tostring(v):gsub("^line 1, ", ""), 0) end
      if not M.is_object(v) then error("line " .. n .. ": expected a JSON object", 0) end
      out[#out + 1] = v
    end
  end
  return out
end

---------------------------------------------------------------------------------------------
-- CSV (RFC 4180, as the file connector reads it)

-- Rows of a CSV text through dp.csv (the file connector's reader): { fields, line }, with an
-- empty unquoted field as NULL; at most max_rows. Raises "line N: ...".
local function csv_rows(text, delim, quote, max_rows)
  local rows, given = {}, false
  local function chunk()
    if given then return nil end
    given = true
    return text
  end
  local function fail(line, msg) error("line " .. line .. ": " .. msg, 0) end
  csvreader.rows(chunk, { delimiter = delim, quote = quote or '"', fail = fail }, function(fields, quoted, line)
    for k, f in ipairs(fields) do
      if f == "" and not quoted[k] then fields[k] = NULL end
    end
    rows[#rows + 1] = { fields = fields, line = line }
    return not max_rows or #rows < max_rows
  end)
  return rows
end

-- The delimiter of a CSV text: the one of , ; tab | that splits the first lines (up to 20) into
-- the same number of fields, more than one; ties go to the most fields. Returns it, or nil.
function M.sniff_delimiter(text, quote)
  local best, best_n
  for _, d in ipairs({ ",", ";", "\t", "|" }) do
    local ok, rows = pcall(csv_rows, text, d, quote, 20)
    if ok and #rows > 0 then
      local count, same = #rows[1].fields, true
      for _, r in ipairs(rows) do same = same and #r.fields == count end
      if same and count > 1 and (not best_n or count > best_n) then best, best_n = d, count end
    end
  end
  return best
end

-- Header and records (objects as parse_json makes them, values strings or NULL). Raises
-- "line N: ..." for a row whose field count differs from the header's.
function M.parse_csv(text, delim, quote)
  local rows = csv_rows(text, delim or ",", quote)
  if #rows == 0 then return {}, {} end
  local header, seen = {}, {}
  for k, h in ipairs(rows[1].fields) do
    if h == NULL or h == "" then error("line " .. rows[1].line .. ": the header has an empty name (column " .. k .. ")", 0) end
    if seen[h] then
      error("line " .. rows[1].line .. ": the header names " .. string.format("%q", h) .. " twice (columns "
        .. seen[h] .. " and " .. k .. ")", 0)
    end
    header[k], seen[h] = h, k
  end
  local out = {}
  for r = 2, #rows do
    local f = rows[r].fields
    if #f ~= #header then
      error("line " .. rows[r].line .. ": " .. #f .. " fields, but the header has " .. #header, 0)
    end
    local obj = { [OBJ] = true, keys = {}, map = {} }
    for k, h in ipairs(header) do
      obj.keys[k] = h
      obj.map[h] = f[k]
    end
    out[#out + 1] = obj
  end
  return header, out
end

---------------------------------------------------------------------------------------------
-- Values -> evidence

local BOOL_WORDS = { ["true"] = true, ["false"] = true, yes = true, no = true }
local FREE_TEXT = { description = true, desc = true, notes = true, note = true, comment = true, comments = true,
  message = true, msg = true, body = true, memo = true, text = true, content = true, details = true,
  remarks = true, remark = true, bio = true, summary_text = true }
local ID_WORDS = { uuid = true, guid = true, uri = true, urn = true, key = true, code = true, iban = true,
  sha = true, hash = true, ref = true, reference = true, number = true, slug = true, isbn = true, ean = true }

local function digits_of(int_part)
  local d = int_part:gsub("^[+-]", ""):gsub("^0+", "")
  return #d
end

local function valid_date(y, m, d)
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if y < 1 or m < 1 or m > 12 or d < 1 then return false end -- no year 0, as core/cast.c
  local days = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
  if m == 2 and (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) then return d <= 29 end
  return d <= days[m]
end

local function is_date(s)
  local y, m, d = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
  return y ~= nil and valid_date(y, m, d)
end

local function is_timestamp(s)
  local y, m, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](.+)$")
  if not y or not valid_date(y, m, d) then return false end
  local hh, mm, tail = rest:match("^(%d%d):(%d%d)(.*)$")
  if not hh or tonumber(hh) > 23 or tonumber(mm) > 59 then return false end
  local ss = tail:match("^:(%d%d)")
  if ss and tonumber(ss) > 60 then return false end -- 60: a leap second, which the cast reads
  tail = tail:gsub("^:%d%d", ""):gsub("^%.%d+", "")
  return tail == "" or tail == "Z" or tail:match("^[+-]%d%d$") ~= nil or tail:match("^[+-]%d%d:?%d%d$") ~= nil
end

local function is_uuid(s)
  return s:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil
end

-- A decimal-comma number: "-54,37", "1.234,56" (dots group thousands). Returns the integer
-- digits and the scale, or nil.
-- "1.234.567": digits grouped in threes by dots (a first group of 1 to 3 digits).
local function thousands(int)
  local rest = int:match("^%d%d?%d?(%..*)$")
  return rest ~= nil and rest:gsub("%.%d%d%d", "") == ""
end
M.thousands = thousands

local function comma_decimal(s)
  local _, int, frac = s:match("^([+-]?)([%d%.]+),(%d+)$")
  if not int then return nil end
  if int:find(".", 1, true) then
    if not thousands(int) then return nil end
    int = int:gsub("%.", "")
  end
  return digits_of(int), #frac
end

-- The evidence of one value: kind and details.
local function classify(v, csv)
  if v == nil or v == NULL then return nil end
  if v == true or v == false then return { kind = "bool" } end
  if type(v) == "table" then
    local num = v[NUM]
    if num then
      if num:find("[eE]") then return { kind = "float" } end
      local int, frac = num:match("^(%-?%d+)%.(%d+)$")
      if not int then return { kind = "int", text = num } end
      return { kind = "frac", digits = digits_of(int), scale = #frac, fixed = #frac >= 2 and frac:sub(-1) == "0" }
    end
    return { kind = "json" }
  end
  local s = v
  if BOOL_WORDS[s:lower()] then return { kind = "boolstr" } end
  if s:match("^[+-]?%d+$") and not s:match("^[+-]?0%d") then return { kind = "intstr", text = s } end
  local int, frac = s:match("^([+-]?%d+)%.(%d+)$")
  if int and not int:match("^[+-]?0%d") then
    -- grouped: what a decimal-comma reading makes of it ("1.234" -> 1234), or nil ("1.5" fails)
    local grouped = csv and thousands((s:gsub("^[+-]", ""))) and digits_of(s:gsub("%.", ""))
    return { kind = "decstr", digits = digits_of(int), scale = #frac, grouped = grouped or nil, s = s }
  end
  if csv and s:match("^[+-]?%d+%.%d+%.") and thousands((s:gsub("^[+-]", ""))) then
    -- "12.345.678": a whole number only where dots group thousands (with decimal commas)
    return { kind = "dotted", grouped = digits_of(s:gsub("%.", "")), s = s }
  end
  if csv then
    local d, sc = comma_decimal(s)
    -- "1,500" alone could be 1500 with a thousands separator as well as 1.5
    if d then
      return { kind = "commadec", digits = d, scale = sc, s = s, ambiguous = sc == 3 and not s:find(".", 1, true) }
    end
  end
  if is_date(s) then return { kind = "date" } end
  if is_timestamp(s) then return { kind = "ts" } end
  if is_uuid(s) then return { kind = "uuid" } end
  return { kind = "str", len = #s, newline = s:find("[\r\n]") ~= nil }
end

-- Compares integer texts by magnitude against a limit (both without sign).
local function int_over(text, limit_pos, limit_neg)
  local neg = text:sub(1, 1) == "-"
  local d = text:gsub("^[+-]", ""):gsub("^0+", "")
  if d == "" then d = "0" end
  local lim = neg and limit_neg or limit_pos
  if #d ~= #lim then return #d > #lim end
  return d > lim
end

local function subset(kinds, allowed)
  for k in pairs(kinds) do if not allowed[k] then return false end end
  return true
end

local function set(...)
  local s = {}
  for _, k in ipairs({ ... }) do s[k] = true end
  return s
end

local NUMERIC = set("int", "intstr", "frac", "decstr", "commadec", "float", "dotted")

-- Why a CSV column with values like "-54,37" cannot be read with decimal commas, or nil when it
-- can (docs/init.md, "Decimal commas"): in a comma-delimited file a quoted "1,500" is a US
-- thousands separator as likely as a decimal comma; when every comma value has three digits
-- after it ("1,500", "12,000") either reading fits; a value with a decimal point that does not
-- group thousands ("1.5") would be refused by the connector's decimal_comma reading.
local function decimal_comma_doubt(ev, comma_delimited)
  local first, clear
  for _, e in ipairs(ev) do
    if e.kind == "commadec" then
      first = first or e.s
      clear = clear or (not e.ambiguous and e.s)
    end
  end
  if comma_delimited then
    return ("values such as %q are ambiguous in a comma-delimited file: a thousands separator (%s) or a"
      .. " decimal comma; kept as a string: set the type and source.csv.decimal_comma by hand if it is a"
      .. " decimal comma"):format(first, (first:gsub(",", "")))
  end
  if not clear then
    return ("every value with a comma has three digits after it (%q): a thousands separator (%s) or a"
      .. " decimal comma (%s)? kept as a string: set the type, and source.csv.decimal_comma if it is a"
      .. " decimal comma"):format(first, (first:gsub(",", "")), (first:gsub("%.", ""):gsub(",", ".")))
  end
  for _, e in ipairs(ev) do
    if e.kind == "decstr" and not e.grouped then
      return ("%q has a decimal point, and %q a decimal comma: one of them is not a number of this column;"
        .. " kept as a string"):format(e.s, clear)
    end
  end
  return nil
end

-- The type of a column from the evidence of its values.
local function decide(name, ev, csv, comma_delimited)
  local kinds, n = {}, 0
  for _, e in ipairs(ev) do
    if not kinds[e.kind] then kinds[e.kind] = true n = n + 1 end
  end
  if n == 0 then return { type = "text", why = "only nulls seen" } end
  if kinds.json then return { type = "json", why = "arrays or objects" } end
  if subset(kinds, set("bool", "boolstr")) and (kinds.bool or csv) then
    return { type = "boolean", why = kinds.boolstr and "booleans and yes/no or true/false words" or "booleans" }
  end
  if subset(kinds, set("int", "intstr")) then
    local big, huge, maxd = false, false, 0
    for _, e in ipairs(ev) do
      big = big or int_over(e.text, "2147483647", "2147483648")
      huge = huge or int_over(e.text, "9223372036854775807", "9223372036854775808")
      maxd = math.max(maxd, digits_of(e.text))
    end
    if maxd > 1000 then
      return { type = "text", why = "whole numbers with more than 1000 digits: kept as text",
        warn = "whole numbers with more than 1000 digits (" .. maxd .. "): a decimal holds at most 1000,"
          .. " so the column is text" }
    end
    if huge then return { type = "decimal", precision = math.max(maxd, 20), scale = 0, why = "whole numbers beyond 64 bits" } end
    if big then return { type = "bigint", why = "whole numbers beyond 32 bits" } end
    return { type = "integer", why = "whole numbers within 32 bits" }
  end
  if subset(kinds, NUMERIC) and not kinds.float and (kinds.commadec or not kinds.dotted) then
    if kinds.commadec then
      local amb = decimal_comma_doubt(ev, comma_delimited)
      if amb then return { type = "string", why = "numbers written ambiguously: kept as text", warn = amb } end
    end
    local fixed = kinds.decstr or kinds.intstr or kinds.commadec
    for _, e in ipairs(ev) do fixed = fixed or e.fixed end
    if fixed then
      local digits, scale = 1, 0
      for _, e in ipairs(ev) do
        if kinds.commadec and e.grouped then -- read with decimal_comma: 1.234 is 1234
          digits = math.max(digits, e.grouped)
        else
          if e.digits then digits = math.max(digits, e.digits) end
          if e.scale then scale = math.max(scale, e.scale) end
        end
        if e.text then digits = math.max(digits, digits_of(e.text)) end
      end
      local precision = scale + math.max(digits + 4, 10)
      if precision > 38 then precision = math.max(38, digits + scale) end
      if precision > 1000 then
        return { type = "text", why = "numbers with more than 1000 digits: kept as text",
          warn = "numbers with more than 1000 digits (" .. (digits + scale) .. "): a decimal holds at most 1000,"
            .. " so the column is text" }
      end
      local grouped
      for _, e in ipairs(ev) do if kinds.commadec and e.grouped then grouped = grouped or e.s end end
      return { type = "decimal", precision = precision, scale = scale, decimal_comma = kinds.commadec,
        warn = grouped and ("%q is read as %s: with decimal commas, dots group thousands"):format(grouped,
          (grouped:gsub("%.", ""))) or nil,
        why = (kinds.commadec and "numbers with a decimal comma" or "fixed-point numbers") .. ", up to "
          .. digits .. "+" .. scale .. " digits" }
    end
    return { type = "double", why = "numbers with a fraction" }
  end
  if subset(kinds, NUMERIC) and kinds.float then return { type = "double", why = "numbers with an exponent" } end
  if subset(kinds, set("date")) then return { type = "date", why = "dates YYYY-MM-DD" } end
  if subset(kinds, set("date", "ts")) then return { type = "timestamp", why = "ISO 8601 timestamps" } end
  if subset(kinds, set("uuid")) then return { type = "uuid", why = "UUIDs" } end
  local long, newline = 0, false
  for _, e in ipairs(ev) do
    if e.len then long = math.max(long, e.len) end
    newline = newline or e.newline
  end
  if FREE_TEXT[name] or newline or long > 255 then
    return { type = "text", why = newline and "text with line breaks" or long > 255 and "long text" or "free text" }
  end
  return { type = "string", why = n > 1 and "mixed values: kept as text" or "strings" }
end

-- The engine's own cast (dp.core, core/cast.c) is the last word: a type whose cast refuses a
-- value seen (1e400 as a double, 0000-01-01 as a date, 12:00:99 in a timestamp) would reject
-- that record in silver, so the column becomes text instead, with a warning. Without dp.core
-- (plain Lua) the rules above stand alone.
local have_core, core = pcall(require, "dp.core")
local CHECKED = set("integer", "bigint", "decimal", "double", "date", "timestamp", "uuid", "boolean")

local function engine_check(name, t, values)
  if not have_core or not CHECKED[t.type] then return t end
  local c = { name = name, type = t.type, precision = t.precision, scale = t.scale }
  for _, v in ipairs(values) do
    local text = type(v) == "table" and v[NUM] or M.encode(v)
    local ok, err = core.cast(c, text)
    if not ok then
      local number = t.type == "double" or t.type == "decimal" or t.type == "integer" or t.type == "bigint"
      local kept = number and "text" or "string"
      local shown = t.type == "decimal" and ("decimal(" .. t.precision .. "," .. t.scale .. ")") or t.type
      return { type = kept, why = "values the engine cannot read as " .. shown .. ": kept as " .. kept,
        warn = "looks like " .. shown .. ", but the engine's cast says " .. tostring(err):gsub("^column [^:]*: ", "")
          .. ": the column is " .. kept }
    end
  end
  return t
end

---------------------------------------------------------------------------------------------
-- Names

-- True when s is valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF); else false
-- and the position of the first byte that is not.
function M.valid_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len, min
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len, min = 2, 0x80
    elseif c >= 0xE0 and c <= 0xEF then len, min = 3, 0x800
    elseif c >= 0xF0 and c <= 0xF4 then len, min = 4, 0x10000
    else return false, i end
    if len > 1 then
      if i + len - 1 > n then return false, i end
      local cp = c % (2 ^ (7 - len))
      for k = i + 1, i + len - 1 do
        local b = s:byte(k)
        if b < 0x80 or b > 0xBF then return false, i end
        cp = cp * 64 + (b - 0x80)
      end
      if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return false, i end
    end
    i = i + len
  end
  return true
end

-- A name as messages and metadata text show it: quoted, control characters and bytes that are
-- not UTF-8 escaped.
function M.shown(s)
  local out = {}
  local i = 1
  while i <= #s do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or c >= 0xF0 and 4 or c >= 0xE0 and 3 or c >= 0xC0 and 2 or 1
    local ch = s:sub(i, i + len - 1)
    if c < 0x20 or c == 0x7F or (len > 1 and not M.valid_utf8(ch)) or (len == 1 and c >= 0x80) then
      out[#out + 1] = string.format("\\x%02x", c)
      i = i + 1
    else
      out[#out + 1] = (ch == '"' or ch == "\\") and "\\" .. ch or ch
      i = i + len
    end
  end
  return '"' .. table.concat(out) .. '"'
end

local PG_SYSTEM = set("oid", "tableoid", "xmin", "cmin", "xmax", "cmax", "ctid")

-- A source key or dotted path as a column name: counterparty.name -> counterparty_name,
-- lastModifiedDate -> last_modified_date.
function M.column_name(path)
  local s = path:gsub("(%l)(%u)", "%1_%2"):gsub("(%d)(%u)", "%1_%2"):lower()
  s = s:gsub("[^a-z0-9]+", "_"):gsub("_+", "_"):gsub("^_", ""):gsub("_$", "")
  if s == "" then s = "column" end
  if s:match("^%d") then s = "c_" .. s end
  if s:sub(1, 3) == "dp_" and path:sub(1, 4) == "_dp_" then s = "src_" .. s end
  if PG_SYSTEM[s] then s = s .. "_value" end
  if #s > 63 then s = s:sub(1, 63):gsub("_$", "") end
  return s
end

-- An entity name from a sample's file name: Streaming_History_Audio_2026_1.json ->
-- streaming_history_audio.
-- nil when nothing of the name is left (2026-10.json).
function M.entity_name(file)
  local base = file:match("[^/]*$"):gsub("%.[%w]+$", ""):gsub("%.[%w]+$", "")
  base = base:gsub("[%d%-_%.]*%d[%d%-_%.]*", "_")
  if not base:find("%a") then return nil end
  local s = M.column_name(base)
  if PG_SYSTEM[s:gsub("_value$", "")] then s = s:gsub("_value$", "") end
  return s
end

-- A file pattern from a sample's file name: dates and numbers become *.
function M.file_pattern(file)
  local base = file:match("[^/]*$")
  local stem, ext = base:match("^(.-)(%.[%w]+)$")
  if not stem then stem, ext = base, "" end
  local p = stem:gsub("%d[%d%-_%.]*%d", "*"):gsub("%d", "*"):gsub("%*+", "*")
  return p .. ext
end

---------------------------------------------------------------------------------------------
-- Flattening: which paths are columns

local function walk_shapes(obj, prefix, depth, shapes, order, nested_json)
  for _, k in ipairs(obj.keys) do
    local path = prefix == "" and k or prefix .. "." .. k
    local s = shapes[path]
    if not s then
      s = { obj = 0, other = 0, children = {}, key = k, depth = depth, parent = prefix }
      shapes[path] = s
      order[#order + 1] = path
      if prefix ~= "" then local ps = shapes[prefix]; ps.children[#ps.children + 1] = path end
    end
    local v = obj.map[k]
    if M.is_object(v) then
      s.obj = s.obj + 1
      walk_shapes(v, path, depth + 1, shapes, order, nested_json)
    elseif v ~= NULL then
      s.other = s.other + 1
    end
  end
end

local function value_at(rec, segs)
  local v = rec
  for _, k in ipairs(segs) do
    if not M.is_object(v) then return nil end
    v = v.map[k]
  end
  return v
end

-- Infers an entity from samples: { { file = name, records = {...}, csv = true|nil }, ... }.
-- opts.nested: "flatten" (default) or "json". Returns { columns, primary_key, decimal_comma,
-- records, files, warnings }.
function M.entity(samples, opts)
  opts = opts or {}
  local nested_json = opts.nested == "json"
  local shapes, order, warnings = {}, {}, {}
  local total, csv, comma_delimited = 0, false, false
  for _, s in ipairs(samples) do
    csv = csv or s.csv == true
    comma_delimited = comma_delimited or (s.csv == true and (s.delimiter or ",") == ",")
    for _, rec in ipairs(s.records) do
      total = total + 1
      walk_shapes(rec, "", 1, shapes, order, nested_json)
    end
  end
  -- leaves: scalars/arrays; an object is a json leaf when it is also a scalar somewhere, has no
  -- children (always {}), or with --nested json
  local leaves, skipped = {}, {}
  local function visit(path)
    local s = shapes[path]
    if s.key:find(".", 1, true) or s.key == "" or s.key:find("[%c]") or not M.valid_utf8(s.key) then
      skipped[#skipped + 1] = path
      return
    end
    if s.obj > 0 and (s.other > 0 or #s.children == 0 or nested_json) then
      leaves[#leaves + 1] = { path = path, as_json = true }
    elseif s.obj > 0 then
      for _, c in ipairs(s.children) do visit(c) end
    else
      leaves[#leaves + 1] = { path = path }
    end
  end
  for _, path in ipairs(order) do
    if shapes[path].depth == 1 then visit(path) end
  end
  for _, p in ipairs(skipped) do
    warnings[#warnings + 1] = "field " .. M.shown(p) .. " is left out: a path cannot name an empty key or one"
      .. " holding \".\", a control character or bytes that are not UTF-8"
  end

  local used, columns, decimal_comma = {}, {}, {}
  for _, leaf in ipairs(leaves) do
    local segs = {}
    for seg in (leaf.path .. "."):gmatch("([^.]*)%.") do segs[#segs + 1] = seg end
    local ev, present, per_file, texts = {}, 0, {}, {}
    for fi, s in ipairs(samples) do
      per_file[fi] = {}
      for ri, rec in ipairs(s.records) do
        local v = value_at(rec, segs)
        if v ~= nil and v ~= NULL then
          present = present + 1
          local e = leaf.as_json and { kind = "json" } or classify(v, s.csv)
          ev[#ev + 1] = e
          texts[#texts + 1] = v
          local key = type(v) == "table" and (v[NUM] or "\0json") or tostring(v)
          per_file[fi][ri] = key
        end
      end
    end
    local name = M.column_name(leaf.path)
    local base, k = name, 2
    while used[name] do
      local suffix = "_" .. k
      name = base:sub(1, 63 - #suffix) .. suffix
      k = k + 1
    end
    used[name] = true
    local t = decide(name, ev, csv, comma_delimited)
    if not t.decimal_comma then t = engine_check(name, t, texts) end
    if t.warn then warnings[#warnings + 1] = "column " .. name .. ": " .. t.warn end
    local col = { name = name, type = t.type, precision = t.precision, scale = t.scale,
      nullable = not (present == total and total > 0), path = leaf.path ~= name and leaf.path or nil,
      why = t.why, values = per_file, source_path = leaf.path }
    if t.decimal_comma then decimal_comma[#decimal_comma + 1] = leaf.path end
    columns[#columns + 1] = col
  end
  if #columns == 0 then error("no fields found in the sample: every record is empty", 0) end

  local e = { columns = columns, decimal_comma = decimal_comma, records = total, files = #samples,
    warnings = warnings }
  e.primary_key = M.primary_key(columns, samples)
  for _, c in ipairs(columns) do c.values = nil end
  return e
end

---------------------------------------------------------------------------------------------
-- Primary key

local KEY_TYPES = set("string", "integer", "bigint", "uuid", "date", "timestamp")

local function id_rank(name)
  if name == "id" then return 0 end
  if name:match("_id$") then return 1 end
  local last = name:match("([^_]+)$")
  if ID_WORDS[name] or ID_WORDS[last] then return 2 end
  return 3
end
M.id_rank = id_rank

local function unique(cols, samples)
  for fi, s in ipairs(samples) do
    local seen = {}
    for ri = 1, #s.records do
      local parts = {}
      for i, c in ipairs(cols) do
        local v = c.values[fi][ri]
        if v == nil then return false end
        parts[i] = v
      end
      local k = table.concat(parts, "\0\0")
      if seen[k] then return false end
      seen[k] = true
    end
  end
  return true
end

-- The primary key: see docs/init.md ("Primary key").
function M.primary_key(columns, samples)
  local cands = {}
  for i, c in ipairs(columns) do
    if not c.nullable and KEY_TYPES[c.type] then
      cands[#cands + 1] = { col = c, rank = id_rank(c.name), order = i }
    end
  end
  table.sort(cands, function(a, b)
    if a.rank ~= b.rank then return a.rank < b.rank end
    return a.order < b.order
  end)
  -- an id-named column alone
  for _, c in ipairs(cands) do
    if c.rank <= 1 and unique({ c.col }, samples) then return { c.col.name } end
  end
  -- an event log: a unique timestamp, with the id-like column of what happened
  for _, t in ipairs(cands) do
    if t.col.type == "timestamp" and unique({ t.col }, samples) then
      for _, c in ipairs(cands) do
        if c.rank <= 2 and c ~= t and unique({ t.col, c.col }, samples) then
          return t.order < c.order and { t.col.name, c.col.name } or { c.col.name, t.col.name }
        end
      end
    end
  end
  for _, c in ipairs(cands) do
    if c.col.type ~= "timestamp" and unique({ c.col }, samples) then return { c.col.name } end
  end
  local pairs_ = {}
  for i = 1, #cands do
    for j = 1, #cands do
      local a, b = cands[i], cands[j]
      if a.order < b.order then
        pairs_[#pairs_ + 1] = { a = a, b = b, ids = (a.rank <= 2 and 1 or 0) + (b.rank <= 2 and 1 or 0) }
      end
    end
  end
  table.sort(pairs_, function(x, y)
    if x.ids ~= y.ids then return x.ids > y.ids end
    if x.a.order ~= y.a.order then return x.a.order < y.a.order end
    return x.b.order < y.b.order
  end)
  for _, p in ipairs(pairs_) do
    if unique({ p.a.col, p.b.col }, samples) then return { p.a.col.name, p.b.col.name } end
  end
  return {}
end

return M
