-- dp.engine: the entry points the C core calls (trusted code).
--
--   engine.configure{ scripts_dir = "...", data_dir = "..." }
--   meta, errs = engine.load_metadata(dir)
--   new_cursor = engine.extract(meta, system_name, entity_name, cursor, emit, log)
--
-- extract loads connectors/<type>.lua in the sandbox and calls connector.extract(ctx). Errors
-- raise (the C side calls through its traceback-adding pcall helper). Secret references in the
-- system and entity ({ secret = "name" }) are resolved first (docs/secrets.md).
local schema = require "dp.schema"
local metadata = require "dp.metadata"
local sandbox = require "dp.sandbox"

local M = {}
local quote = schema.quote
local config

-- Called once by C. scripts_dir: the root holding connectors/ and gold/; data_dir: DP_DATA_DIR.
function M.configure(opts)
  if type(opts) ~= "table" then error("engine.configure: expected a table", 2) end
  for k in pairs(opts) do
    if k ~= "scripts_dir" and k ~= "data_dir" then
      error("engine.configure: unknown option " .. schema.describe(k), 2)
    end
  end
  for _, k in ipairs({ "scripts_dir", "data_dir" }) do
    if type(opts[k]) ~= "string" or opts[k] == "" then
      error("engine.configure: " .. k .. " must be a non-empty string", 2)
    end
  end
  config = { scripts_dir = opts.scripts_dir, data_dir = opts.data_dir }
end

local function configured()
  if not config then error("engine: configure{ scripts_dir, data_dir } was not called", 3) end
  return config
end

function M.load_metadata(dir)
  return metadata.load_dir(dir, { scripts_dir = configured().scripts_dir })
end

-- texts: { ["systems.json"] = ..., ["entities.json"] = ..., ["gold.json"] = ... } (e.g. read
-- back from MongoDB).
function M.load_metadata_texts(texts)
  return metadata.load_texts(texts, { scripts_dir = configured().scripts_dir })
end

function M.connector_path(type_name)
  return configured().scripts_dir .. "/connectors/" .. type_name .. ".lua"
end

-- ctx.files: read-only access to the files of one folder (the system's inbox).
local function inbox_files(system, data_dir)
  local inbox = system.inbox
  local files = {}
  if type(inbox) ~= "string" then
    local function none() error("ctx.files: system " .. quote(system.name) .. " has no inbox folder", 2) end
    return { list = none, read = none, lines = none }
  end
  if inbox:sub(1, 1) ~= "/" then inbox = data_dir .. "/" .. inbox end
  inbox = inbox:gsub("/+$", "")
  files.inbox = inbox

  local function bad_name(fn, name)
    if type(name) ~= "string" or name == "" or name:find("/", 1, true) or name:find("..", 1, true)
        or name:find("\0", 1, true) then
      return "ctx.files." .. fn .. ": " .. schema.describe(name) .. ' is not a file name in the inbox (no "/" or "..")'
    end
  end
  -- called by files.read / files.lines: level 3 is the script
  local function open(fn, name)
    local err = bad_name(fn, name)
    if err then error(err, 3) end
    local f = io.open(inbox .. "/" .. name, "rb")
    if not f then error("ctx.files." .. fn .. ": no file " .. quote(name) .. " in inbox " .. inbox, 3) end
    return f
  end

  -- Sorted names of the regular files in the inbox matching glob (default "*").
  function files.list(glob)
    glob = glob or "*"
    if type(glob) ~= "string" or glob:find("/", 1, true) then
      error("ctx.files.list: " .. schema.describe(glob) .. ' is not a file name pattern (no "/")', 2)
    end
    local core = require "dp.core"
    local names, err = core.listdir(inbox)
    if not names then
      error("ctx.files.list: " .. tostring(err) .. " (the inbox of system " .. quote(system.name) .. ")", 2)
    end
    local out = {}
    for _, n in ipairs(names) do
      if core.fnmatch(glob, n) then out[#out + 1] = n end
    end
    table.sort(out)
    return out
  end

  function files.read(name)
    local f = open("read", name)
    local s = f:read("*a")
    f:close()
    return s
  end

  -- Iterator over the lines of a file, without "\n" or a trailing "\r".
  function files.lines(name)
    local f = open("lines", name)
    return function()
      if not f then return nil end
      local l = f:read("*l")
      if l == nil then f:close(); f = nil; return nil end
      if l:sub(-1) == "\r" then l = l:sub(1, -2) end
      return l
    end
  end

  -- Full path of a file in the inbox (for messages).
  function files.path(name)
    local err = bad_name("path", name)
    if err then error(err, 2) end
    return inbox .. "/" .. name
  end

  return files
end

---------------------------------------------------------------------------------------------
-- Secrets (docs/secrets.md): { secret = "name" } in the validated metadata is a reference.

local function is_secret_ref(v)
  return type(v) == "table" and type(v.secret) == "string" and next(v, (next(v))) == nil
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  return a < b
end

-- Appends { name, path } for every reference in v (path: "systems.json[1].auth.token").
local function collect_secret_refs(v, path, out)
  if type(v) ~= "table" then return out end
  if is_secret_ref(v) then
    out[#out + 1] = { name = v.secret, path = path }
    return out
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, key_order)
  for _, k in ipairs(keys) do
    collect_secret_refs(v[k], type(k) == "number" and (path .. "[" .. (k - 1) .. "]") or (path .. "." .. tostring(k)), out)
  end
  return out
end

-- Replaces every reference in t (a copy) by its value, in place.
local function substitute_secrets(t, values)
  for k, x in pairs(t) do
    if is_secret_ref(x) then t[k] = values[x.secret]
    elseif type(x) == "table" then substitute_secrets(x, values) end
  end
  return t
end

local function position(list, item)
  for i, x in ipairs(list) do if x == item then return i - 1 end end
  return "?"
end

-- Looks up every secret the system and the entity reference; returns name -> value. A missing
-- secret raises with the metadata path and the name (never a value). core.secret_get registers
-- each value with the redactor.
local function resolve_secrets(meta, system, entity)
  local refs = collect_secret_refs(system, "systems.json[" .. position(meta.systems, system) .. "]", {})
  collect_secret_refs(entity, "entities.json[" .. position(meta.entities, entity) .. "]", refs)
  local values = {}
  if #refs == 0 then return values end
  local core = require "dp.core"
  for _, r in ipairs(refs) do
    if values[r.name] == nil then
      local v, err = core.secret_get(r.name)
      if not v then error(r.path .. " (system " .. quote(system.name) .. "): " .. tostring(err), 0) end
      values[r.name] = v
    end
  end
  return values
end

-- Text with registered secret values replaced (see core/redact.h), and how many were.
local function redact(s)
  local core = require "dp.core"
  if core.redact_count() == 0 then return s, 0 end
  return core.redact(s)
end

local function make_secret(system, values)
  return function(name)
    if type(name) ~= "string" then
      error("ctx.secret: expected a secret name (a string), got " .. schema.describe(name), 2)
    end
    local v = values[name]
    if v == nil then
      error("ctx.secret: system " .. quote(system.name) .. " does not reference a secret named " .. quote(name)
        .. " in its metadata (a connector reads only the secrets its own system references)", 2)
    end
    return v
  end
end

---------------------------------------------------------------------------------------------

local function make_log(log)
  local out = {}
  for _, level in ipairs({ "debug", "info", "warn", "error" }) do
    out[level] = function(msg, ...)
      if select("#", ...) > 0 then msg = string.format(tostring(msg), ...) end
      log(level, tostring(msg)) -- the engine's logger (dp_log) redacts secret values
    end
  end
  return out
end

-- scrub: redact records (a system with secrets); log(level, msg) warns the first time.
local function make_emit(emit, scrub, log)
  local cjson = require("cjson").new()
  local warned = false
  return function(batch)
    if type(batch) ~= "table" then
      error("emit: expected an array of records, got " .. schema.describe(batch), 2)
    end
    local n = #batch
    if n == 0 then return 0 end
    local out = {}
    for i = 1, n do
      local r = batch[i]
      local t = type(r)
      if t == "string" then
        out[i] = r
      elseif t == "table" then
        local ok, s = pcall(cjson.encode, r)
        if not ok then error("emit: record " .. i .. " cannot be encoded as JSON: " .. tostring(s), 2) end
        if s:sub(1, 1) ~= "{" then error("emit: record " .. i .. " is an array, expected a JSON object", 2) end
        out[i] = s
      else
        error("emit: record " .. i .. " is a " .. t .. ", expected a table or a JSON object string", 2)
      end
      if scrub then
        local r, k = redact(out[i])
        if k > 0 then
          out[i] = r
          if not warned then
            warned = true
            log("warn", "emit: record " .. i .. " of a batch held the value of secret "
              .. quote(r:match("%[redacted:([%w_.%-]+)%]") or "?") .. "; it was replaced by [redacted:...]"
              .. " before the raw file (later records are redacted without a warning)")
          end
        end
      end
    end
    emit(out)
    return n
  end
end

-- Runs connector.extract(ctx) for one entity. emit(array_of_json_strings) and log(level, msg)
-- are C functions. Returns the new cursor (a string) or nil.
function M.extract(meta, system_name, entity_name, cursor, emit, log)
  local cfg = configured()
  local system = metadata.find_system(meta, system_name)
  if not system then error("engine.extract: no system " .. quote(system_name) .. " in the metadata", 2) end
  local entity = metadata.find_entity(meta, system_name, entity_name)
  if not entity then
    error("engine.extract: no entity " .. quote(system_name .. "." .. tostring(entity_name)) .. " in the metadata", 2)
  end
  local conn, err = sandbox.load_connector(M.connector_path(system.type))
  if not conn then error(err, 0) end
  local secrets = resolve_secrets(meta, system, entity)
  local scrub = next(secrets) ~= nil
  local core = require "dp.core"
  local cjson = require("cjson").new()
  local ctx = {
    system = substitute_secrets(schema.deep_copy(system), secrets),
    entity = substitute_secrets(schema.deep_copy(entity), secrets),
    cursor = cursor,
    log = make_log(log),
    emit = make_emit(emit, scrub, log),
    secret = make_secret(system, secrets),
    files = inbox_files(system, cfg.data_dir),
    json = {
      decode = cjson.decode, encode = cjson.encode, null = cjson.null,
      compact = core.json_compact, array_elements = core.json_array_elements,
    },
  }
  local new_cursor = conn.extract(ctx)
  if type(new_cursor) == "number" and new_cursor == math.floor(new_cursor) then
    new_cursor = schema.format_number(new_cursor)
  end
  if new_cursor ~= nil and type(new_cursor) ~= "string" then
    error(conn.path .. ": extract returned a cursor of type " .. type(new_cursor) .. ", expected a string or nil", 0)
  end
  if new_cursor then
    local r, k = redact(new_cursor)
    if k > 0 then
      error(conn.path .. ": extract returned a cursor that contains the value of secret "
        .. quote(r:match("%[redacted:([%w_.%-]+)%]") or "?") .. "; cursors are stored in plain text"
        .. " (raw manifest, audit, dp.entity_cursor), so it was refused", 0)
    end
  end
  return new_cursor
end

return M
