-- dp.jsonreader: a strict JSON reader for metadata files (systems.json, entities.json,
-- gold.json, and the same texts read back from MongoDB).
--
--   value, err = jsonreader.decode(text, "systems.json")
--
-- Strict where lua-cjson is lenient or silent, and plain-spoken where cjson prints its token
-- names (T_END, T_ARR_END):
--   * the text must be UTF-8: a byte order mark, UTF-16/UTF-32, a NUL byte or an invalid
--     UTF-8 sequence is an error that says so;
--   * a key repeated in one object is an error (cjson keeps the last one silently);
--   * "\u0000" and lone surrogates in strings are errors;
--   * a number must be exact: an integer beyond +-(2^53-1) (which a Lua number would round) or a
--     number too large for a double is an error, never a rounded value;
--   * nesting is limited to MAX_DEPTH levels.
-- Every error is "<file>:<line>:<column>: <message>", with the JSON path of the place when it is
-- inside the top-level value ("<file>:<line>:<column>: at [0].columns[2]: <message>"). Columns
-- count characters, from 1.
--
-- Decoded values: JSON null is schema.null (present, unlike a missing key); objects and arrays
-- are plain tables, and their JSON kind, also when empty, is recorded in schema.KIND (weak), so
-- that validation can tell {} from [].
local schema = require "dp.schema"

local M = {}
M.MAX_DEPTH = 64
M.MAX_EXACT = 2 ^ 53 - 1

local null, KIND = schema.null, schema.KIND
local byte, sub, find, char = string.byte, string.sub, string.find, string.char
local concat = table.concat

-- Line and column (1-based; the column counts UTF-8 characters) of byte position pos.
local function line_col(text, pos)
  local line, start = 1, 1
  local i = 1
  while true do
    local nl = find(text, "\n", i, true)
    if not nl or nl >= pos then break end
    line, start, i = line + 1, nl + 1, nl + 1
  end
  local col = 1
  for k = start, math.min(pos, #text + 1) - 1 do
    local b = byte(text, k)
    if b < 0x80 or b >= 0xC0 then col = col + 1 end -- not a continuation byte
  end
  return line, col
end
M.line_col = line_col

-- Raised inside the parser; decode() turns it into the returned message.
local Failure = {}

local function fail(st, pos, msg, path)
  local line, col = line_col(st.text, pos)
  local where = ""
  if path and path ~= "" then
    if #path > 100 then path = sub(path, 1, 97) .. "..." end
    where = "at " .. path .. ": "
  end
  error(setmetatable({ string.format("%s:%d:%d: %s%s", st.file, line, col, where, msg) }, Failure), 0)
end

-- The token at pos, in words: "}" / the end of the file / the word True ...
local function found(st, pos)
  local text = st.text
  if pos > #text then return "the end of the file" end
  local c = sub(text, pos, pos)
  if c:match("[%a_]") then
    local w = text:match("^[%w_]+", pos)
    if #w > 20 then w = sub(w, 1, 17) .. "..." end
    return w
  end
  if c == "'" then return "' (strings use double quotes)" end
  if c == "/" then return "/ (JSON has no comments)" end
  return schema.quote(c)
end

local WS = { [9] = true, [10] = true, [13] = true, [32] = true }

local function skip_ws(st, pos)
  local text = st.text
  local b = byte(text, pos)
  while b and WS[b] do
    pos = pos + 1
    b = byte(text, pos)
  end
  return pos
end

---------------------------------------------------------------------------------------------
-- Whole-text checks: encoding, NUL bytes, UTF-8.

-- The position of the first byte of text that does not start a well-formed UTF-8 sequence (an
-- overlong form, a surrogate, a value above U+10FFFF, a cut sequence), or nil when it is all
-- UTF-8. ASCII runs are skipped at once.
function M.utf8_invalid_at(text)
  local pos, n = 1, #text
  while true do
    local s = find(text, "[\128-\255]", pos)
    if not s then return nil end
    local c = byte(text, s)
    local len, lo, hi = 0, 0x80, 0xBF
    if c >= 0xC2 and c <= 0xDF then len = 1
    elseif c == 0xE0 then len, lo = 2, 0xA0
    elseif c == 0xED then len, hi = 2, 0x9F
    elseif c >= 0xE1 and c <= 0xEF then len = 2
    elseif c == 0xF0 then len, lo = 3, 0x90
    elseif c == 0xF4 then len, hi = 3, 0x8F
    elseif c >= 0xF1 and c <= 0xF3 then len = 3
    end
    local ok = len > 0 and s + len <= n
    if ok then
      local c2 = byte(text, s + 1)
      ok = c2 >= lo and c2 <= hi
      for k = 2, len do
        if not ok then break end
        local ck = byte(text, s + k)
        ok = ck >= 0x80 and ck <= 0xBF
      end
    end
    if not ok then return s end
    pos = s + len + 1
  end
end

local function check_encoding(text, file)
  local b1, b2, b3, b4 = byte(text, 1, 4)
  local function at1(msg) return file .. ":1:1: " .. msg end
  if b1 == 0xEF and b2 == 0xBB and b3 == 0xBF then
    return at1("the file starts with a UTF-8 byte order mark (BOM): save it as UTF-8 without a BOM")
  end
  if (b1 == 0xFF and b2 == 0xFE and b3 == 0 and b4 == 0) or (b1 == 0 and b2 == 0 and b3 == 0xFE and b4 == 0xFF) then
    return at1("the file is UTF-32, not UTF-8: save it as UTF-8")
  end
  if b1 == 0xFF and b2 == 0xFE then return at1("the file is UTF-16 (little-endian), not UTF-8: save it as UTF-8") end
  if b1 == 0xFE and b2 == 0xFF then return at1("the file is UTF-16 (big-endian), not UTF-8: save it as UTF-8") end
  -- without a byte order mark: JSON text starts with an ASCII character, which UTF-16 pairs with a 0
  if b1 and b2 and b1 ~= 0 and b2 == 0 then return at1("the file looks like UTF-16 (little-endian), not UTF-8: save it as UTF-8") end
  if b1 == 0 and b2 and b2 ~= 0 then return at1("the file looks like UTF-16 (big-endian), not UTF-8: save it as UTF-8") end
  local nul = find(text, "\0", 1, true)
  if nul then
    local line, col = line_col(text, nul)
    return string.format("%s:%d:%d: a NUL byte (0x00): a metadata file must be UTF-8 text", file, line, col)
  end
  local at = M.utf8_invalid_at(text)
  if at then
    local line, col = line_col(text, at)
    return string.format("%s:%d:%d: invalid UTF-8 (byte 0x%02X): a metadata file must be UTF-8 text", file, line, col,
      byte(text, at))
  end
end

---------------------------------------------------------------------------------------------
-- The parser: recursive descent over st.text; every function takes a position and returns the
-- value and the position after it.

local parse_value

local ESC = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function utf8_char(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40) end
  if cp < 0x10000 then
    return char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
    0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end
-- for other JSON readers of the engine (dp.infer's, which keeps numbers as text)
M.ESCAPES = ESC
M.utf8_char = utf8_char

-- pos is at the opening quote.
local function parse_string(st, pos, path)
  local text = st.text
  local parts, np = {}, 0
  local i = pos + 1
  while true do
    local s = find(text, '["\\%c]', i)
    if not s then fail(st, pos, "a string that is never closed (no ending \")", path) end
    if s > i then np = np + 1; parts[np] = sub(text, i, s - 1) end
    local c = byte(text, s)
    if c == 34 then -- "
      return concat(parts), s + 1
    elseif c == 92 then -- backslash
      local e = sub(text, s + 1, s + 1)
      if ESC[e] then
        np = np + 1; parts[np] = ESC[e]
        i = s + 2
      elseif e == "u" then
        local hex = text:match("^%x%x%x%x", s + 2)
        if not hex then fail(st, s, "\\u must be followed by 4 hex digits", path) end
        local cp = tonumber(hex, 16)
        i = s + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          local lo = text:match("^\\u(%x%x%x%x)", i)
          local lcp = lo and tonumber(lo, 16)
          if not lcp or lcp < 0xDC00 or lcp > 0xDFFF then
            fail(st, s, "\\u" .. hex .. " is half of a UTF-16 surrogate pair without its other half", path)
          end
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lcp - 0xDC00)
          i = i + 6
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          fail(st, s, "\\u" .. hex .. " is half of a UTF-16 surrogate pair without its other half", path)
        elseif cp == 0 then
          fail(st, s, "\\u0000 (NUL) is not allowed in metadata strings", path)
        end
        np = np + 1; parts[np] = utf8_char(cp)
      else
        fail(st, s, "\\" .. (e == "" and "" or e) .. " is not a JSON escape (use \\\", \\\\, \\/, \\b, \\f, \\n, \\r, \\t or \\uXXXX)", path)
      end
    else -- a raw control character
      local names = { [9] = "a tab", [10] = "a line break", [13] = "a carriage return" }
      fail(st, s, (names[c] or string.format("control character U+%04X", c))
        .. " inside a string: write it escaped (\\n, \\t, \\uXXXX), or close the string with \"", path)
    end
  end
end

local function parse_number(st, pos, path)
  local text = st.text
  local lit = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  local good = false
  if lit then
    local int, frac, exp = lit:match("^-?(%d+)(%.?%d*)([eE]?[-+]?%d*)$")
    good = int and not (#int > 1 and int:sub(1, 1) == "0")
      and (frac == "" or frac:match("^%.%d+$")) and (exp == "" or exp:match("^[eE][-+]?%d+$"))
  end
  local after = pos + (lit and #lit or 0)
  local trail = text:match("^[%w_.+-]+", after)
  if not good or trail then
    local word = text:match("^[%w_.+-]+", pos) or sub(text, pos, pos)
    fail(st, pos, schema.quote(word) .. " is not a JSON number", path)
  end
  local v = tonumber(lit)
  local shown = #lit > 40 and (sub(lit, 1, 37) .. "...") or lit
  if v == math.huge or v == -math.huge then
    fail(st, pos, shown .. " is too large for a number", path)
  end
  if v == 0 and lit:match("^-?[0-9.]*[1-9]") then
    fail(st, pos, shown .. " is too small for a number (it would read as 0)", path)
  end
  if v > M.MAX_EXACT or v < -M.MAX_EXACT then
    fail(st, pos, shown .. " cannot be kept exactly: metadata numbers must lie within"
      .. " -9007199254740991 and 9007199254740991 (2^53-1); write a larger value as a string", path)
  end
  return v, after
end

local function enter(st, pos, path, depth)
  if depth > M.MAX_DEPTH then
    fail(st, pos, "nested deeper than " .. M.MAX_DEPTH .. " levels", path)
  end
end

-- At the end of the text inside an object or array that starts at `open`: say so (a truncated
-- file), instead of naming the token that was expected.
local function check_eof(st, pos, open, what, path)
  if pos > #st.text then
    local l, c = line_col(st.text, open)
    fail(st, pos, "the file ends inside the " .. what .. " that starts at line " .. l .. ", column " .. c
      .. " (is the file cut short?)", path)
  end
end

local function parse_object(st, pos, path, depth)
  enter(st, pos, path, depth)
  local text = st.text
  local obj, seen = {}, {}
  KIND[obj] = "object"
  local open = pos
  pos = skip_ws(st, pos + 1)
  if sub(text, pos, pos) == "}" then return obj, pos + 1 end
  while true do
    check_eof(st, pos, open, "object", path)
    if sub(text, pos, pos) ~= '"' then
      if sub(text, pos, pos) == "}" then fail(st, pos, 'a comma before "}": remove the trailing comma', path) end
      fail(st, pos, "expected a member name (a string in double quotes), found " .. found(st, pos), path)
    end
    local kpos = pos
    local key
    key, pos = parse_string(st, pos, path)
    local kpath = schema.join(path, key)
    if seen[key] then
      local l, c = line_col(text, seen[key])
      fail(st, kpos, "duplicate key " .. schema.quote(key) .. " (first at line " .. l .. ", column " .. c
        .. "): a key may appear only once in an object", path)
    end
    seen[key] = kpos
    pos = skip_ws(st, pos)
    check_eof(st, pos, open, "object", path)
    if sub(text, pos, pos) ~= ":" then
      fail(st, pos, 'expected ":" after the member name ' .. schema.quote(key) .. ", found " .. found(st, pos), path)
    end
    local v
    pos = skip_ws(st, pos + 1)
    check_eof(st, pos, open, "object", path)
    v, pos = parse_value(st, pos, kpath, depth)
    obj[key] = v
    pos = skip_ws(st, pos)
    check_eof(st, pos, open, "object", path)
    local c = sub(text, pos, pos)
    if c == "}" then return obj, pos + 1 end
    if c ~= "," then fail(st, pos, 'expected "," or "}" after the value of ' .. schema.quote(key) .. ", found " .. found(st, pos), path) end
    pos = skip_ws(st, pos + 1)
  end
end

local function parse_array(st, pos, path, depth)
  enter(st, pos, path, depth)
  local text = st.text
  local arr, n = {}, 0
  KIND[arr] = "array"
  local open = pos
  pos = skip_ws(st, pos + 1)
  if sub(text, pos, pos) == "]" then return arr, pos + 1 end
  while true do
    check_eof(st, pos, open, "array", path)
    if sub(text, pos, pos) == "]" then fail(st, pos, 'a comma before "]": remove the trailing comma', path) end
    local v
    v, pos = parse_value(st, pos, (path or "") .. "[" .. n .. "]", depth)
    n = n + 1
    arr[n] = v
    pos = skip_ws(st, pos)
    check_eof(st, pos, open, "array", path)
    local c = sub(text, pos, pos)
    if c == "]" then return arr, pos + 1 end
    if c ~= "," then fail(st, pos, 'expected "," or "]" after element [' .. (n - 1) .. "], found " .. found(st, pos), path) end
    pos = skip_ws(st, pos + 1)
  end
end

function parse_value(st, pos, path, depth)
  local text = st.text
  local c = sub(text, pos, pos)
  if c == "{" then return parse_object(st, pos, path, depth + 1) end
  if c == "[" then return parse_array(st, pos, path, depth + 1) end
  if c == '"' then return parse_string(st, pos, path) end
  if c == "-" or c:match("^%d$") then return parse_number(st, pos, path) end
  local w = text:match("^%a+", pos)
  if w == "true" then return true, pos + 4 end
  if w == "false" then return false, pos + 5 end
  if w == "null" then return null, pos + 4 end
  local what = found(st, pos)
  if w == "True" or w == "False" or w == "None" or w == "NULL" or w == "Null" or w == "TRUE" or w == "FALSE" then
    what = what .. " (JSON's literals are true, false and null, in lowercase)"
  elseif w == "NaN" or w == "Infinity" then
    what = what .. " (not a JSON number)"
  end
  fail(st, pos, "expected a value, found " .. what, path)
end

-- Decodes text (the content of file, named in messages). Returns the value, or nil and one
-- message "<file>:<line>:<column>: ...".
function M.decode(text, file)
  file = file or "input"
  if type(text) ~= "string" then return nil, file .. ": expected text, got " .. schema.describe(text) end
  local err = check_encoding(text, file)
  if err then return nil, err end
  local st = { text = text, file = file }
  local ok, v = pcall(function()
    local p = skip_ws(st, 1)
    if p > #text then fail(st, p, "the file is empty: expected a JSON value") end
    local value, after = parse_value(st, p, "", 0)
    after = skip_ws(st, after)
    if after <= #text then fail(st, after, "unexpected " .. found(st, after) .. " after the end of the JSON value") end
    return value, after
  end)
  if ok then return v end
  if getmetatable(v) == Failure then return nil, v[1] end
  -- not one of ours (e.g. out of memory): no parser internals, but say where
  return nil, file .. ": cannot read the JSON: " .. tostring(v):gsub("^.-:%d+: ", "")
end

return M
