-- dp.schema: a small schema DSL for typed, pure-data models (in the spirit of Pydantic and of
-- Kong's schemas). A schema is a plain Lua table:
--
--   local Column = schema.define {
--     type = "record",
--     fields = {                                   -- ordered, one { name = field } per entry
--       { name = { type = "string", required = true, match = "^[a-z][a-z0-9_]*$" } },
--       { type = { type = "string", required = true, one_of = { "string", "integer" } } },
--       { length = { type = "integer", between = { 1, 10485760 } } },
--       { path = { type = "string", default = function(col) return col.name end } },
--     },
--     checks = { function(col) return true end },  -- record-level: true | nil, err
--   }
--   local value, errs = schema.validate(Column, input, "columns[2]")
--
-- Types: string, integer, number, boolean, enum (one_of over any scalars), any, list (elements),
-- map (keys, values), record (fields), union (discriminator + choices, or alternatives picked by
-- the JSON kind of the value). Attributes: required, default (a value, or a function of the
-- record computed after its other fields), one_of, between = {lo, hi}, len_min, len_max,
-- len = {min, max}, match (Lua pattern), multiline (strings), unique (lists), custom_validator,
-- description; records take checks / entity_checks. Paths are jq-like with 0-based indexes.
-- cjson.null counts as absent. A string holding a control character (U+0000-U+001F, U+007F) is
-- refused, except tab, and line feed and carriage return in a `multiline = true` field (NUL
-- never).
-- Validation never mutates its input and collects every error.
local M = {}

local cjson = require("cjson").new()
local null = cjson.null
M.null = null
-- Lists produced by validation carry this metatable, so that M.encode writes an empty one as []
-- (cjson cannot tell an empty array from an empty object).
M.ARRAY = { __name = "dp.schema.array" }
-- The JSON kind ("object" | "array") of tables decoded from JSON text (dp.jsonreader), kept
-- aside so that an empty {} and an empty [] stay apart without a metatable on the value.
M.KIND = setmetatable({}, { __mode = "k" })

local TYPES = { "any", "boolean", "enum", "integer", "list", "map", "number", "record", "string", "union" }
local COMMON = { "type", "required", "default", "custom_validator", "description" }
local ATTRS = {
  string = { "one_of", "len_min", "len_max", "len", "match", "multiline" },
  integer = { "one_of", "between" }, number = { "one_of", "between" },
  boolean = {}, any = {}, enum = { "one_of" },
  list = { "elements", "len_min", "len_max", "len", "unique" },
  map = { "keys", "values", "len_min", "len_max", "len" },
  record = { "fields", "checks", "entity_checks" },
  union = { "discriminator", "choices", "alternatives" },
}

---------------------------------------------------------------------------------------------
-- Small helpers (also used by the models and the metadata loader)

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

function M.deep_copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = M.deep_copy(x) end
  M.KIND[out] = M.KIND[v] -- a decoded {} or [] stays what it was
  return setmetatable(out, getmetatable(v) == M.ARRAY and M.ARRAY or nil)
end

-- JSON-style quoting for messages: "a/b" stays "a/b" (cjson would write a\/b).
function M.quote(s)
  s = tostring(s)
  if #s > 80 then s = s:sub(1, 77) .. "..." end
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function format_number(n)
  if n ~= n then return "NaN" end
  if n == math.huge then return "Infinity" elseif n == -math.huge then return "-Infinity" end
  if n == math.floor(n) and math.abs(n) < 2^63 then return string.format("%d", n) end
  local s = string.format("%.14g", n)
  if tonumber(s) ~= n then s = string.format("%.17g", n) end
  return s
end
M.format_number = format_number

-- The JSON kind of a Lua value: null, string, number, boolean, object, array, empty (an empty
-- table not decoded from JSON text fits both object and array), or a Lua type name for anything
-- else.
local function kind(v)
  if v == nil or v == null then return "null" end
  local t = type(v)
  if t ~= "table" then return t end
  local known = M.KIND[v] or (getmetatable(v) == M.ARRAY and "array" or nil)
  if known then return known end
  local n, max = 0, 0
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k ~= math.floor(k) then return "object" end
    n = n + 1
    if k > max then max = k end
  end
  if n == 0 then return "empty" end
  return n == max and "array" or "object"
end
M.kind = kind

-- A short description of a value for "got ..." in messages.
function M.describe(v)
  local k = kind(v)
  if k == "string" then return M.quote(v) end
  if k == "number" then return format_number(v) end
  if k == "boolean" or k == "null" then return tostring(k == "null" and "null" or v) end
  if k == "object" then return next(v) == nil and "an empty object" or "an object" end
  if k == "array" then return next(v) == nil and "an empty array" or "an array" end
  if k == "empty" then return "an empty object" end
  return "a Lua " .. k
end

-- jq-like paths: join("a", "b") = "a.b", join("a", 0) = "a[0]" (give 0-based numbers).
function M.join(path, key)
  if type(key) == "number" then return (path or "") .. "[" .. key .. "]" end
  key = tostring(key)
  if not key:match("^[%a_][%w_]*$") then return (path or "") .. "[" .. M.quote(key) .. "]" end
  if path == nil or path == "" then return key end
  return path .. "." .. key
end

local function levenshtein(a, b)
  if math.abs(#a - #b) > 2 then return 3 end
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

-- The closest candidate within Levenshtein distance 2 (and shorter than the word), or nil.
function M.did_you_mean(word, candidates)
  if type(word) ~= "string" then return nil end
  local best, best_d
  for _, c in ipairs(candidates) do
    local d = levenshtein(word, c)
    if d <= 2 and d < #word and (best_d == nil or d < best_d) then best, best_d = c, d end
  end
  return best
end

-- " (did you mean "x"?)" or "".
function M.hint(word, candidates)
  local m = M.did_you_mean(word, candidates)
  return m and (" (did you mean " .. M.quote(m) .. "?)") or ""
end

local function field_entry(entry)
  local name, def = next(entry)
  return name, def
end

function M.field_names(record)
  local names = {}
  for i, entry in ipairs(record.fields or {}) do names[i] = (field_entry(entry)) end
  return names
end

local function plural(n, word)
  return n .. " " .. word .. (n == 1 and "" or "s")
end

local function len_bounds(def)
  local lo, hi = def.len_min, def.len_max
  if def.len then lo, hi = lo or def.len[1], hi or def.len[2] end
  return lo, hi
end

-- The JSON kinds a field accepts (for dispatching union alternatives).
local function kinds_of(def)
  local t = def.type or "record"
  if t == "integer" or t == "number" then return { number = true } end
  if t == "string" or t == "boolean" then return { [t] = true } end
  if t == "record" or t == "map" then return { object = true, empty = true } end
  if t == "list" then return { array = true, empty = true } end
  if t == "union" and def.discriminator then return { object = true, empty = true } end
  if t == "enum" then
    local ks = {}
    for _, v in ipairs(def.one_of) do ks[kind(v)] = true end
    return ks
  end
  return {}
end

---------------------------------------------------------------------------------------------
-- Metaschema: schema.define(def) checks a definition and raises on the first problem.

local defined = setmetatable({}, { __mode = "k" })
local validate_field, validate_present, validate_record -- defined below

local function in_list(list, v)
  for _, x in ipairs(list) do if x == v then return true end end
  return false
end

local function is_count(v) return type(v) == "number" and v >= 0 and v == math.floor(v) end

local function check_def(def, where)
  local function bad(msg)
    error("schema.define: " .. (where ~= "" and where .. ": " or "") .. msg, 0)
  end
  if type(def) ~= "table" then bad("a field definition must be a table, got " .. M.describe(def)) end
  local t = def.type
  if t == nil and def.fields then t = "record" end -- records may omit type = "record"
  if type(t) ~= "string" or not ATTRS[t] then
    bad("unknown type " .. M.describe(t) .. " (expected one of " .. table.concat(TYPES, ", ") .. ")")
  end
  local allowed = {}
  for _, a in ipairs(COMMON) do allowed[#allowed + 1] = a end
  for _, a in ipairs(ATTRS[t]) do allowed[#allowed + 1] = a end
  for _, k in ipairs(sorted_keys(def)) do
    if not in_list(allowed, k) then
      bad("unknown attribute " .. M.describe(k) .. " for a " .. t .. " field" .. M.hint(k, allowed))
    end
  end
  if def.required ~= nil and type(def.required) ~= "boolean" then bad("required must be a boolean") end
  if def.description ~= nil and type(def.description) ~= "string" then bad("description must be a string") end
  if def.custom_validator ~= nil and type(def.custom_validator) ~= "function" then
    bad("custom_validator must be a function")
  end
  if def.one_of ~= nil then
    if kind(def.one_of) ~= "array" then bad("one_of must be a non-empty array") end
    for _, v in ipairs(def.one_of) do
      local k = kind(v)
      local ok = (t == "string" and k == "string") or (t == "number" and k == "number")
        or (t == "integer" and k == "number" and v == math.floor(v))
        or (t == "enum" and (k == "string" or k == "number" or k == "boolean"))
      if not ok then bad("one_of value " .. M.describe(v) .. " is not a " .. (t == "enum" and "scalar" or t)) end
    end
  elseif t == "enum" then
    bad("an enum field needs one_of")
  end
  if def.between ~= nil then
    local b = def.between
    if type(b) ~= "table" or type(b[1]) ~= "number" or type(b[2]) ~= "number" or b[1] > b[2] then
      bad("between must be { lo, hi } with lo <= hi")
    end
  end
  for _, a in ipairs({ "len_min", "len_max" }) do
    if def[a] ~= nil and not is_count(def[a]) then bad(a .. " must be a non-negative integer") end
  end
  if def.len ~= nil and (type(def.len) ~= "table" or not is_count(def.len[1]) or not is_count(def.len[2])
      or def.len[1] > def.len[2]) then
    bad("len must be { min, max } with 0 <= min <= max")
  end
  if def.match ~= nil and (type(def.match) ~= "string" or not pcall(string.find, "", def.match)) then
    bad("match must be a valid Lua pattern")
  end
  if def.unique ~= nil and type(def.unique) ~= "boolean" then bad("unique must be a boolean") end
  if def.multiline ~= nil and type(def.multiline) ~= "boolean" then bad("multiline must be a boolean") end
  if t == "list" then
    if def.elements == nil then bad("a list field needs elements") end
    check_def(def.elements, M.join(where, "elements"))
  elseif t == "map" then
    if def.keys ~= nil then
      check_def(def.keys, M.join(where, "keys"))
      if def.keys.type ~= "string" then bad("map keys must be strings") end
    end
    if def.values == nil then bad("a map field needs values") end
    check_def(def.values, M.join(where, "values"))
  elseif t == "record" then
    if def.fields == nil then bad("a record needs fields") end
    if kind(def.fields) ~= "array" and kind(def.fields) ~= "empty" then
      bad("fields must be an array of { name = field } entries")
    end
    local seen = {}
    for i, entry in ipairs(def.fields) do
      local name, fdef
      if type(entry) == "table" then name, fdef = field_entry(entry) end
      if type(name) ~= "string" or next(entry, name) ~= nil then
        bad("fields[" .. (i - 1) .. "] must be a table with exactly one { name = field } entry")
      end
      if seen[name] then bad("duplicate field " .. M.quote(name)) end
      seen[name] = true
      check_def(fdef, M.join(where, name))
    end
    for _, a in ipairs({ "checks", "entity_checks" }) do
      local checks = def[a]
      if checks ~= nil then
        if type(checks) ~= "table" then bad(a .. " must be an array of functions") end
        for _, f in ipairs(checks) do
          if type(f) ~= "function" then bad(a .. " must be an array of functions") end
        end
      end
    end
  elseif t == "union" then
    if def.discriminator ~= nil then
      if type(def.discriminator) ~= "string" then bad("discriminator must be a string") end
      if def.alternatives ~= nil then bad("a union takes discriminator + choices or alternatives, not both") end
      if type(def.choices) ~= "table" or next(def.choices) == nil then bad("a union with a discriminator needs choices") end
      for _, name in ipairs(sorted_keys(def.choices)) do
        local c = def.choices[name]
        if type(name) ~= "string" or type(c) ~= "table" or (c.type or "record") ~= "record" then
          bad("choices must map names to record definitions")
        end
        check_def(c, M.join(M.join(where, "choices"), name))
      end
    else
      if def.choices ~= nil then bad("choices need a discriminator") end
      if kind(def.alternatives) ~= "array" then bad("a union needs discriminator + choices or alternatives") end
      local seen = {}
      for i, alt in ipairs(def.alternatives) do
        check_def(alt, M.join(where, "alternatives") .. "[" .. (i - 1) .. "]")
        local ks = kinds_of(alt)
        if next(ks) == nil then bad("alternatives must have a definite JSON kind (not any)") end
        for k in pairs(ks) do
          if seen[k] then bad("two alternatives accept a JSON " .. k) end
          seen[k] = true
        end
      end
    end
  end
  -- A scalar default must validate; a container default must be of the right JSON kind (its
  -- contents are validated when it is applied, so `source = {}` can still report a missing
  -- required option of the connector).
  if def.default ~= nil and type(def.default) ~= "function" then
    local errs = {}
    if t == "record" or t == "map" or t == "list" or t == "union" then
      if not kinds_of(def)[kind(def.default)] then bad("default is " .. M.describe(def.default) .. ", not a " .. t) end
    else
      validate_present(def, M.deep_copy(def.default), "", errs) -- returns the value: false is valid
      if #errs > 0 then bad("default does not validate: " .. errs[1]) end
    end
  end
end

-- Checks a definition against the metaschema; raises "schema.define: <where>: <problem>".
-- Returns def itself (marked as checked).
function M.define(def)
  if defined[def] then return def end
  check_def(def, "")
  defined[def] = true
  return def
end

---------------------------------------------------------------------------------------------
-- Validation

-- Messages are one line of bounded length, whatever a validator (a connector's, say) put in
-- them: control characters are escaped and a message over MAX_MESSAGE bytes is cut (at a
-- character boundary) with "...".
M.MAX_MESSAGE = 500

local function one_line(msg)
  msg = tostring(msg):gsub("[%z\1-\31\127]", function(c) return string.format("\\u%04x", c:byte()) end)
  if #msg > M.MAX_MESSAGE then
    local cut = M.MAX_MESSAGE - 3
    while cut > 1 and msg:byte(cut + 1) and msg:byte(cut + 1) >= 0x80 and msg:byte(cut + 1) < 0xC0 do cut = cut - 1 end
    msg = msg:sub(1, cut) .. "..."
  end
  return msg
end

M.one_line = one_line

local function add(errs, path, msg)
  errs[#errs + 1] = one_line((path ~= "" and (path .. ": ") or "") .. msg)
end

local function expected(errs, path, what, v)
  add(errs, path, "expected " .. what .. ", got " .. M.describe(v))
end

local function check_len(errs, path, def, n, unit)
  local lo, hi = len_bounds(def)
  if lo and n < lo then add(errs, path, "must have at least " .. plural(lo, unit) .. ", got " .. n); return false end
  if hi and n > hi then add(errs, path, "must have at most " .. plural(hi, unit) .. ", got " .. n); return false end
  return true
end

local function check_one_of(errs, path, def, v)
  if def.one_of and not in_list(def.one_of, v) then
    local names = {}
    for i, x in ipairs(def.one_of) do names[i] = type(x) == "string" and x or M.describe(x) end
    add(errs, path, M.describe(v) .. " is not one of " .. table.concat(names, ", "))
    return false
  end
  return true
end

-- Validates v (present, not null) against def; returns the output value, or nil after adding
-- at least one error to errs.
function validate_present(def, v, path, errs)
  local t = def.type or "record"
  local k = kind(v)
  local n0 = #errs
  local out = v
  if t == "string" then
    if k ~= "string" then expected(errs, path, "a string", v); return nil end
    local cc = v:find(def.multiline and "[%z\1-\8\11\12\14-\31\127]" or "[%z\1-\8\10-\31\127]")
    if cc then
      local b = v:byte(cc)
      add(errs, path, M.describe(v) .. " holds a control character (" .. string.format("U+%04X", b) .. ")"
        .. (b == 0 and "" or def.multiline and ": only tabs and line breaks are allowed here"
          or ": this field must be a single line (tabs are allowed)"))
      return nil
    end
    if check_one_of(errs, path, def, v) and check_len(errs, path, def, #v, "character") and def.match
        and not v:find(def.match) then
      add(errs, path, M.describe(v) .. " does not match the pattern " .. def.match)
    end
  elseif t == "integer" or t == "number" then
    if k ~= "number" or v ~= v or v == math.huge or v == -math.huge then
      expected(errs, path, t == "integer" and "an integer" or "a number", v); return nil
    end
    if t == "integer" and v ~= math.floor(v) then expected(errs, path, "an integer", v); return nil end
    if check_one_of(errs, path, def, v) and def.between and (v < def.between[1] or v > def.between[2]) then
      add(errs, path, format_number(v) .. " is not between " .. format_number(def.between[1])
        .. " and " .. format_number(def.between[2]))
    end
  elseif t == "boolean" then
    if k ~= "boolean" then expected(errs, path, "a boolean", v); return nil end
  elseif t == "enum" then
    check_one_of(errs, path, def, v)
  elseif t == "any" then
    if k == "null" then return null end -- a null list element or map value is a JSON value too
    if k ~= "string" and k ~= "number" and k ~= "boolean" and k ~= "object" and k ~= "array" and k ~= "empty" then
      expected(errs, path, "a JSON value", v); return nil
    end
    out = M.deep_copy(v)
  elseif t == "list" then
    if k ~= "array" and k ~= "empty" then expected(errs, path, "an array", v); return nil end
    out = setmetatable({}, M.ARRAY)
    local seen = {}
    for i, x in ipairs(v) do
      local p = path .. "[" .. (i - 1) .. "]"
      out[i] = validate_field(def.elements, x, p, errs, true)
      if def.unique and out[i] ~= nil and type(out[i]) ~= "table" then
        if seen[out[i]] then
          add(errs, p, "duplicate value " .. M.describe(out[i]) .. " (same as [" .. seen[out[i]] .. "])")
        else
          seen[out[i]] = i - 1
        end
      end
    end
    check_len(errs, path, def, #v, "item")
  elseif t == "map" then
    if k ~= "object" and k ~= "empty" then expected(errs, path, "an object", v); return nil end
    out = {}
    local n = 0
    for _, key in ipairs(sorted_keys(v)) do
      n = n + 1
      local p = M.join(path, key)
      if def.keys then
        local kerrs = {}
        validate_field(def.keys, key, "", kerrs, true)
        for _, e in ipairs(kerrs) do add(errs, p, "invalid key: " .. e) end
      end
      out[key] = validate_field(def.values, v[key], p, errs, true)
    end
    check_len(errs, path, def, n, "entry")
  elseif t == "record" then
    out = validate_record(def, v, path, errs)
  elseif t == "union" then
    if def.discriminator then
      if k ~= "object" and k ~= "empty" then expected(errs, path, "an object", v); return nil end
      local d = def.discriminator
      local p = M.join(path, d)
      local dv = v[d]
      local names = sorted_keys(def.choices)
      if dv == nil or dv == null then add(errs, p, "required field missing"); return nil end
      if type(dv) ~= "string" then expected(errs, p, "a string", dv); return nil end
      local choice = def.choices[dv]
      if not choice then add(errs, p, M.describe(dv) .. " is not one of " .. table.concat(names, ", ")); return nil end
      local declares = false
      for _, name in ipairs(M.field_names(choice)) do declares = declares or name == d end
      local input = v
      if not declares then
        input = {}
        for key, x in pairs(v) do if key ~= d then input[key] = x end end
      end
      out = validate_record(choice, input, path, errs)
      if out and not declares then out[d] = dv end
    else
      for _, alt in ipairs(def.alternatives) do
        if kinds_of(alt)[k] then return validate_field(alt, v, path, errs, true) end
      end
      local what = {}
      for i, alt in ipairs(def.alternatives) do
        local at = alt.type or "record"
        what[i] = (at == "record" or at == "map" or at == "union") and "an object"
          or at == "list" and "an array" or at == "integer" and "an integer" or "a " .. at
      end
      expected(errs, path, table.concat(what, " or "), v)
      return nil
    end
  end
  if #errs > n0 or out == nil then return nil end
  if def.custom_validator then
    local ok, okv, err = pcall(def.custom_validator, out)
    if not ok then add(errs, path, "validator failed: " .. tostring(okv)); return nil end
    if not okv then add(errs, path, err and tostring(err) or ("invalid value " .. M.describe(out))); return nil end
  end
  return out
end

-- Validates a field value that may be absent (nil or null): applies the default, or reports a
-- missing required field. `present_only` is for list elements and map values (null is an error).
function validate_field(def, v, path, errs, present_only)
  if (v == nil or v == null) and not present_only then
    if def.default ~= nil and type(def.default) ~= "function" then
      return validate_present(def, M.deep_copy(def.default), path, errs)
    end
    if def.required then add(errs, path, "required field missing") end
    return nil
  end
  return validate_present(def, v, path, errs)
end

local function run_checks(def, out, path, errs)
  for _, list in ipairs({ def.entity_checks or {}, def.checks or {} }) do
    for _, check in ipairs(list) do
      local ok, okv, err = pcall(check, out)
      if not ok then
        add(errs, path, "check failed: " .. tostring(okv))
      elseif not okv then
        if type(err) == "table" then -- { { relative_path, message }, ... }
          for _, e in ipairs(err) do
            local p = e[1] or ""
            add(errs, p == "" and path or (path == "" and p or (p:sub(1, 1) == "[" and path .. p or path .. "." .. p)), e[2])
          end
        else
          add(errs, path, err and tostring(err) or "invalid record")
        end
      end
    end
  end
end

function validate_record(def, v, path, errs)
  local k = kind(v)
  if k ~= "object" and k ~= "empty" then expected(errs, path, "an object", v); return nil end
  local n0 = #errs
  local out, known, computed = {}, {}, {}
  for _, entry in ipairs(def.fields) do
    local name, fdef = field_entry(entry)
    known[#known + 1] = name
    local x = v[name]
    if (x == nil or x == null) and type(fdef.default) == "function" then
      computed[#computed + 1] = entry
    else
      out[name] = validate_field(fdef, x, M.join(path, name), errs)
    end
  end
  for _, key in ipairs(sorted_keys(v)) do
    if not in_list(known, key) then
      add(errs, M.join(path, key), "unknown field" .. M.hint(key, known))
    end
  end
  if #errs > n0 then return nil end
  for _, entry in ipairs(computed) do
    local name, fdef = field_entry(entry)
    local ok, dv = pcall(fdef.default, out)
    if not ok then
      add(errs, M.join(path, name), "default failed: " .. tostring(dv))
    elseif dv ~= nil then
      out[name] = validate_present(fdef, dv, M.join(path, name), errs)
    elseif fdef.required then
      add(errs, M.join(path, name), "required field missing")
    end
  end
  if #errs > n0 then return nil end
  run_checks(def, out, path, errs)
  if #errs > n0 then return nil end
  return out
end

-- JSON text of a validated value: lists (M.ARRAY) and non-empty arrays as [...], other tables
-- as objects with sorted keys.
function M.encode(v)
  if v == nil or v == null then return "null" end
  if type(v) == "number" then return format_number(v) end -- cjson would keep 14 digits only
  if type(v) ~= "table" then return cjson.encode(v) end
  local parts = {}
  if getmetatable(v) == M.ARRAY or kind(v) == "array" then
    for i = 1, #v do parts[i] = M.encode(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  for _, k in ipairs(sorted_keys(v)) do
    parts[#parts + 1] = cjson.encode(tostring(k)) .. ":" .. M.encode(v[k])
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Validates value against schema (a definition; checked with define() on first use).
-- Returns a new value with defaults applied, or nil and an array of "<path>: <message>" strings.
function M.validate(schema, value, path_prefix)
  M.define(schema)
  local errs = {}
  local out = validate_field(schema, value, path_prefix or "", errs)
  if #errs > 0 then return nil, errs end
  return out
end

return M

