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
