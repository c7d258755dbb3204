-- dp.sandbox: loads untrusted scripts (connectors/, gold/) in an allowlisted environment, and
-- checks the shape of connector modules at load time.
--
-- A script sees: assert error ipairs next pairs pcall select tonumber tostring type unpack xpcall
-- setmetatable getmetatable rawequal rawget rawset, copies of string (without dump), table,
-- math, coroutine and bit, os = { time, date, clock }, and a require that only returns cjson (a
-- fresh instance) and the dp.* modules listed in M.SCRIPT_MODULES (a fresh instance per script).
-- No io, os.execute, loadstring, dofile, package, debug, ffi or jit. Reading an undefined global
-- or assigning a new one raises. Bytecode is refused.
local schema = require "dp.schema"
local models = require "dp.models"

local M = {}

-- dp.* modules meant for scripts; each script gets its own instance (and a module among them
-- that requires another gets the script's instance of it).
M.SCRIPT_MODULES = { ["dp.models"] = true, ["dp.connector"] = true, ["dp.paginators"] = true }

local HINTS = {
  io = "scripts have no io: connectors read their inbox with ctx.files",
  print = "use ctx.log.info",
  loadstring = "scripts cannot load code", load = "scripts cannot load code",
  loadfile = "scripts cannot load code", dofile = "scripts cannot load code",
  package = "use require", debug = "not available to scripts", ffi = "not available to scripts",
  jit = "not available to scripts", getfenv = "not available to scripts", setfenv = "not available to scripts",
  collectgarbage = "not available to scripts", module = "return a table from the script instead",
}

local GUARD = {
  __index = function(_, k)
    local h = HINTS[k]
    error("undefined global '" .. tostring(k) .. "'" .. (h and (" (" .. h .. ")") or ""), 2)
  end,
  __newindex = function(_, k)
    error("assignment to undeclared global '" .. tostring(k) .. "' (declare it local)", 2)
  end,
}

local function copy(t, skip)
  local out = {}
  for k, v in pairs(t) do
    if not (skip and skip[k]) then out[k] = v end
  end
  return out
end

local function script_module_list()
  local names = { "cjson" }
  for name in pairs(M.SCRIPT_MODULES) do names[#names + 1] = name end
  table.sort(names)
  return table.concat(names, ", ")
end

-- A new guarded environment for one script.
function M.new_env()
  local os_subset = setmetatable({ time = os.time, date = os.date, clock = os.clock }, {
    __index = function(_, k)
      error("os." .. tostring(k) .. " is not available to scripts (allowed: os.time, os.date, os.clock)", 2)
    end,
  })
  local loaded = {}
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    select = select, tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
    xpcall = xpcall, setmetatable = setmetatable, rawequal = rawequal, rawget = rawget, rawset = rawset,
    -- the string metatable's __index is the engine's string table: do not hand it out
    getmetatable = function(v)
      if type(v) == "string" then return nil end
      return getmetatable(v)
    end,
    string = copy(string, { dump = true }), table = copy(table), math = copy(math),
    coroutine = copy(coroutine), bit = copy(require("bit")), os = os_subset,
    _VERSION = _VERSION,
  }
  env.require = function(name)
    if loaded[name] then return loaded[name] end
    local mod
    if name == "cjson" then
      mod = require("cjson").new()
    elseif type(name) == "string" and M.SCRIPT_MODULES[name] then
      local path = assert(package.searchpath(name, package.path))
      local chunk = assert(loadfile(path))
      -- trusted code, but its script-facing requires resolve to this script's instances
      setfenv(chunk, setmetatable({ require = function(n)
        if M.SCRIPT_MODULES[n] then return env.require(n) end
        return require(n)
      end }, { __index = _G }))
      mod = chunk(name)
    else
      error("require: module " .. schema.describe(name) .. " is not available to scripts (allowed: "
        .. script_module_list() .. ")", 2)
    end
    loaded[name] = mod
    return mod
  end
  return setmetatable(env, GUARD)
end

-- Loads a Lua source file as a chunk running in env. Returns chunk, or nil and an error
-- naming the file. Precompiled bytecode is refused.
function M.loadfile(path, env)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local src = f:read("*a")
  f:close()
  if src:sub(1, 1) == "\27" then
    return nil, path .. ": precompiled bytecode is not allowed in scripts: ship the Lua source"
  end
  return load(src, "@" .. path, "t", env or M.new_env())
end

-- Runs a script in a fresh sandbox. Returns its return value, or nil and an error. Errors
-- carry the script's file:line.
function M.dofile(path)
  local chunk, err = M.loadfile(path)
  if not chunk then return nil, err end
  local ok, res = pcall(chunk)
  if not ok then return nil, tostring(res) end
  return res
end

local CONNECTOR_KEYS = { "extract", "system_schema", "entity_schema", "description", "version" }

local function record_schema(path, key, s)
  if s == nil then s = {} end
  if type(s) ~= "table" then
    return nil, path .. ": " .. key .. " must be a table (a record schema), got " .. schema.describe(s)
  end
  local def = copy(s)
  def.type = def.type or "record"
  def.fields = def.fields or {}
  if def.type ~= "record" then
    return nil, path .. ": " .. key .. ' must be a record schema, not type "' .. tostring(def.type) .. '"'
  end
  local ok, err = pcall(schema.define, def)
  if not ok then return nil, path .. ": " .. key .. ": " .. tostring(err):gsub("^schema%.define: ", "") end
  return def
end

-- Loads connectors/<type>.lua in the sandbox and checks its shape. Returns
-- { path, extract, system_schema, entity_schema, system_model, entity_model, description,
-- version } or nil and an error naming the file and what is wrong.
function M.load_connector(path)
  local mod, err = M.dofile(path)
  if err then return nil, err end
  local function bad(msg) return nil, path .. ": " .. msg end
  if type(mod) ~= "table" then
    return bad("a connector must return a table with extract (and system_schema, entity_schema), got "
      .. schema.describe(mod))
  end
  for k in pairs(mod) do
    local private = type(k) == "string" and k:sub(1, 1) == "_"
    local known = false
    for _, name in ipairs(CONNECTOR_KEYS) do known = known or k == name end
    if not known and not private then
      return bad("unknown key " .. schema.describe(k) .. " in the returned table" .. schema.hint(k, CONNECTOR_KEYS))
    end
  end
  if type(mod.extract) ~= "function" then
    return bad("extract must be a function(ctx), got " .. schema.describe(mod.extract))
  end
  local info = debug.getinfo(mod.extract, "u")
  if info.nparams < 1 and not info.isvararg then
    return bad("extract must take the context as its parameter: function(ctx)")
  end
  local conn = { path = path, extract = mod.extract, description = mod.description, version = mod.version }
  conn.system_schema, err = record_schema(path, "system_schema", mod.system_schema)
  if not conn.system_schema then return nil, err end
  conn.entity_schema, err = record_schema(path, "entity_schema", mod.entity_schema)
  if not conn.entity_schema then return nil, err end
  local ok, model = pcall(models.system_model, conn)
  if not ok then return bad(tostring(model)) end
  conn.system_model = model
  ok, model = pcall(models.entity_model, conn)
  if not ok then return bad(tostring(model):gsub("^schema%.define: ", "entity_schema: ")) end
  conn.entity_model = model
  return conn
end

return M
