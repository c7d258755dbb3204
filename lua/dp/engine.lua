-- dp.engine: the entry points the C core calls (trusted code).
--
--   engine.configure{ scripts_dir = "...", data_dir = "..." }
--   meta, errs = engine.load_metadata(dir)
--   new_cursor = engine.extract(meta, system_name, entity_name, cursor, emit, log)
--
-- extract loads connectors/<type>.lua in the sandbox and calls connector.extract(ctx). Errors
-- raise (the C side calls through its traceback-adding pcall helper).
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

local function make_log(log)
  local out = {}
  for _, level in ipairs({ "debug", "info", "warn", "error" }) do
    out[level] = function(msg, ...)
      if select("#", ...) > 0 then msg = string.format(tostring(msg), ...) end
      log(level, tostring(msg))
    end
  end
  return out
end

local function make_emit(emit)
  local cjson = require("cjson").new()
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
    end
    emit(out)
    return n
  end
end

---------------------------------------------------------------------------------------------
-- Connectors (issue #4): ctx.http, ctx.entities, ctx.on_commit, ctx.json.select/records/value,
-- ctx.files.chunks/stat/archive, and the post-commit hooks the run driver calls:
--   engine.after_commit(system, entity) -> nil | { error, ... }   after the entity's silver commit
--   engine.discard_pending()                                      at the end of every run
local http = require "dp.http"

-- ctx.on_commit functions registered in this run, per "system\0entity".
local pending = {}

local function json_value(core, text, path)
  local v, err = core.json_select(text, path)
  if v == nil then return nil, err end
  local c = v:sub(1, 1)
  if c == '"' then return require("cjson").decode(v) end
  if v == "true" then return true end
  if v == "false" then return false end
  if v == "null" then return nil end
  return v -- numbers as their exact text, objects and arrays as compact text
end

local function json_records(core, text, path)
  local v, err = core.json_select(text, path)
  if v == nil then
    return nil, err or ("no value at " .. quote(path))
  end
  local c = v:sub(1, 1)
  if c == "[" then return core.json_array_elements(v) end
  if c == "{" then return { v } end
  if v == "null" then return {} end
  return nil, "the value at " .. quote(path) .. " is " .. (c == '"' and "a string" or (v == "true" or v == "false")
    and "a boolean" or "a number") .. ", not an array or object of records"
end

-- The folder of a system attribute (absolute, or relative to data_dir), or nil.
local function folder(value, data_dir)
  if type(value) ~= "string" or value == "" then return nil end
  if value:sub(1, 1) ~= "/" then value = data_dir .. "/" .. value end
  return (value:gsub("/+$", ""))
end

local function extend_files(files, system, data_dir, on_commit, log)
  local core = require "dp.core"
  -- The full path of a file in the inbox, or nil and the error.
  local function path_of(fn, name)
    local pre = "ctx.files." .. fn .. ": "
    if not files.inbox then return nil, pre .. "system " .. quote(system.name) .. " has no inbox folder" end
    if type(name) ~= "string" or name == "" or name:find("/", 1, true) or name:find("..", 1, true)
        or name:find("\0", 1, true) then
      return nil, pre .. schema.describe(name) .. ' is not a file name in the inbox (no "/" or "..")'
    end
    return files.inbox .. "/" .. name
  end

  -- Iterator over blocks of at most `size` bytes (default 64 KiB).
  function files.chunks(name, size)
    local path, err = path_of("chunks", name)
    if not path then error(err, 2) end
    size = size or 65536
    if type(size) ~= "number" or size < 1 then error("ctx.files.chunks: size must be a positive number", 2) end
    local f = io.open(path, "rb")
    if not f then error("ctx.files.chunks: no file " .. quote(name) .. " in inbox " .. files.inbox, 2) end
    return function()
      if not f then return nil end
      local b = f:read(size)
      if b == nil then f:close(); f = nil end
      return b
    end
  end

  -- { size, mtime, age } (seconds; age since the last change).
  function files.stat(name)
    local path, err = path_of("stat", name)
    if not path then error(err, 2) end
    local info, ierr = core.file_info(path)
    if not info then error("ctx.files.stat: " .. ierr, 2) end
    return info
  end

  -- Moves the file to the system's archive folder once this entity's data committed.
  function files.archive(name)
    local path, err = path_of("archive", name)
    if not path then error(err, 2) end
    local dir = folder(system.archive, data_dir)
    if not dir then error("ctx.files.archive: system " .. quote(system.name) .. " has no archive folder", 2) end
    on_commit(function()
      local to, merr = core.file_move(path, dir)
      if not to then error("archiving " .. name .. ": " .. merr, 0) end
      log.info("archived %s to %s", path, to)
    end)
  end
end

local function extend_ctx(ctx, meta, system, entity, data_dir)
  local core = require "dp.core"
  local key = system.name .. "\0" .. entity.name
  pending[key] = {}
  function ctx.on_commit(fn)
    if type(fn) ~= "function" then
      error("ctx.on_commit: expected a function, got " .. schema.describe(fn), 2)
    end
    local list = pending[key]
    list[#list + 1] = fn
  end
  ctx.entities = {}
  for _, e in ipairs(meta.entities or {}) do
    if e.system == system.name then ctx.entities[e.name] = schema.deep_copy(e) end
  end
  ctx.json.select = core.json_select
  ctx.json.value = function(text, path) return json_value(core, text, path or "") end
  ctx.json.records = function(text, path) return json_records(core, text, path or "") end
  extend_files(ctx.files, system, data_dir, ctx.on_commit, ctx.log)
  -- ctx.secret comes with issue #7; it is looked up when a credential is first needed.
  ctx.http = http.for_system(system, {
    log = ctx.log,
    secret = function(name)
      if type(ctx.secret) ~= "function" then
        error("secrets are not available (the secret store is issue #7): cannot resolve secret " .. quote(name), 0)
      end
      return ctx.secret(name)
    end,
  })
end

-- Runs the ctx.on_commit functions of an entity after its silver merge committed. Returns
-- nil, or the errors (strings) of the functions that failed: warnings, the data is committed.
function M.after_commit(system_name, entity_name)
  local key = tostring(system_name) .. "\0" .. tostring(entity_name)
  local list = pending[key]
  pending[key] = nil
  local errs
  for _, fn in ipairs(list or {}) do
    local ok, err = pcall(fn)
    if not ok then
      errs = errs or {}
      errs[#errs + 1] = tostring(err)
    end
  end
  return errs
end

-- Drops every pending ctx.on_commit function (the run is over; failed entities never commit).
function M.discard_pending()
  pending = {}
end

---------------------------------------------------------------------------------------------

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
  local core = require "dp.core"
  local cjson = require("cjson").new()
  local ctx = {
    system = schema.deep_copy(system),
    entity = schema.deep_copy(entity),
    cursor = cursor,
    log = make_log(log),
    emit = make_emit(emit),
    files = inbox_files(system, cfg.data_dir),
    json = {
      decode = cjson.decode, encode = cjson.encode, null = cjson.null,
      compact = core.json_compact, array_elements = core.json_array_elements,
    },
  }
  extend_ctx(ctx, meta, system, entity, cfg.data_dir) -- issue #4, see above
  local new_cursor = conn.extract(ctx)
  if type(new_cursor) == "number" and new_cursor == math.floor(new_cursor) then
    new_cursor = schema.format_number(new_cursor)
  end
  if new_cursor ~= nil and type(new_cursor) ~= "string" then
    error(conn.path .. ": extract returned a cursor of type " .. type(new_cursor) .. ", expected a string or nil", 0)
  end
  return new_cursor
end

return M
