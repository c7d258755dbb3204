-- dp.sandbox: loads untrusted scripts (connectors/, gold/) in an allowlisted environment, runs
-- every call into them under the engine's script limits, and checks the shape of connector
-- modules at load time (docs/connectors.md, "What the sandbox promises, and what it does not").
--
-- A script sees: assert error ipairs next pairs pcall select tonumber tostring type unpack xpcall
-- rawequal rawget rawset, setmetatable/getmetatable limited to metatables the script set itself,
-- copies of string (without dump), table, math, coroutine and bit, os = { time, date, clock },
-- and a require that only returns cjson (a fresh instance) and the dp.* modules listed in
-- M.SCRIPT_MODULES (a fresh instance per script). No io, os.execute, load, loadstring, dofile,
-- package, debug, ffi, jit, collectgarbage, newproxy, getfenv or setfenv. Reading an undefined
-- global or assigning a new one raises. Bytecode is refused. Script code runs interpreted (the
-- JIT is off for it, so the limits' count hook always fires), and every call into it goes
-- through M.call (dp.core script_call: a CPU-time deadline and a heap cap, core/luabridge.c).
--
-- The engine never reads back through a table a script could have touched: what the engine
-- hands a script is a fresh copy without metatables (M.export), and what a script hands the
-- engine is copied raw, without metatables, its functions wrapped in guarded calls (M.import).
local schema = require "dp.schema"
local models = require "dp.models"
local core = require "dp.core"

local M = {}

-- dp.* modules meant for scripts; each script gets its own instance (and a module among them
-- that requires another gets the script's instance of it).
M.SCRIPT_MODULES = { ["dp.models"] = true, ["dp.connector"] = true, ["dp.paginators"] = true, ["dp.csv"] = true }

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

---------------------------------------------------------------------------------------------
-- Guarded calls

-- Calls fn(...) under the script limits. what names the script and where it runs; kind is
-- "call" (DP_SCRIPT_TIMEOUT) or "load" (DP_SCRIPT_LOAD_TIMEOUT). Returns true, results... or
-- false, message (a string starting with what for a limit), reason ("time", "memory", "error",
-- "config").
function M.call(what, kind, fn, ...)
  return core.script_call(what, kind, fn, ...)
end

local originals = setmetatable({}, { __mode = "k" })

local function results(what, ok, ...)
  if not ok then error((...), 0) end
  local n = select("#", ...)
  if n == 0 then return end
  local out = { ... }
  for i = 1, n do out[i] = M.import(out[i], what) end
  return unpack(out, 1, n)
end

-- A function that calls the script function fn under the limits and raises (level 0) its error.
-- The script gets fresh copies of the arguments (M.export: a validator cannot change the value
-- the engine is building) and the engine gets raw copies of its results (M.import).
function M.wrap(fn, what)
  local w = function(...)
    local n = select("#", ...)
    local args = { ... }
    for i = 1, n do args[i] = M.export(args[i]) end
    return results(what, core.script_call(what, "call", fn, unpack(args, 1, n)))
  end
  originals[w] = fn
  return w
end

-- The script function behind a wrapper (for arity checks), or fn itself.
function M.original(fn)
  return originals[fn] or fn
end

local MAX_DEPTH = 100

-- A copy of a value a script handed the engine: tables copied raw (no metamethod runs) and
-- without metatables, functions wrapped with M.wrap(fn, what), other values as they are.
-- Raises for cycles, nesting deeper than 100 and coroutines or userdata.
function M.import(v, what, depth, seen)
  local t = type(v)
  if t == "function" then return originals[v] and v or M.wrap(v, what) end
  if t ~= "table" then
    if t == "thread" or t == "userdata" then
      if v == schema.null then return v end
      error(what .. ": a " .. t .. " cannot be handed to the engine", 0)
    end
    return v
  end
  depth, seen = depth or 0, seen or {}
  if depth > MAX_DEPTH then error(what .. ": tables nested deeper than " .. MAX_DEPTH .. " levels", 0) end
  if seen[v] then error(what .. ": a table that contains itself", 0) end
  seen[v] = true
  local out = {}
  for k, x in next, v do
    out[M.import(k, what, depth + 1, seen)] = M.import(x, what, depth + 1, seen)
  end
  seen[v] = nil
  return out
end

-- A fresh copy of an engine value for a script: plain tables, no metatable (the engine's own
-- dp.schema.array list marker included), nothing shared with the engine.
function M.export(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local out = {}
  seen[v] = out
  for k, x in next, v do out[M.export(k, seen)] = M.export(x, seen) end
  return out
end

---------------------------------------------------------------------------------------------
-- The string methods every string shares (the string metatable's __index) are a copy of the
-- string library without dump, whose rep checks the script memory limit: scripts reach them
-- as ("").rep, so the engine's own string table is never handed out.

local real_rep, real_concat = string.rep, table.concat

local function checked_rep(s, n, sep)
  local left = core.script_memory_left()
  if left and (type(s) == "string" or type(s) == "number") and type(n) == "number" and n > 0 then
    local size = (#tostring(s) + (type(sep) == "string" and #sep or 0)) * n
    if size > left then
      error("string.rep: a result of " .. string.format("%.0f", size) .. " bytes is over the script memory limit"
        .. " (DP_SCRIPT_MEMORY)", 2)
    end
  end
  return real_rep(s, n, sep)
end

local function checked_concat(t, sep, i, j)
  local left = core.script_memory_left()
  if left and type(t) == "table" then
    local size, seplen = 0, type(sep) == "string" and #sep or 0
    for k = tonumber(i) or 1, tonumber(j) or #t do
      local x = rawget(t, k)
      size = size + (type(x) == "string" and #x or 24) + seplen
      if size > left then
        error("table.concat: the result is over the script memory limit (DP_SCRIPT_MEMORY)", 2)
      end
    end
  end
  return real_concat(t, sep, i, j)
end

local STRING_METHODS = copy(string, { dump = true })
STRING_METHODS.rep = checked_rep
-- the library's matcher runs in one C call that no hook interrupts (a backtracking pattern runs
-- for hours): these are the same functions with a step budget that checks the script limits
STRING_METHODS.find, STRING_METHODS.match = core.str_find, core.str_match
STRING_METHODS.gmatch, STRING_METHODS.gsub = core.str_gmatch, core.str_gsub
do
  local smt = debug.getmetatable("")
  if smt then
    smt.__index = STRING_METHODS
    smt.__metatable = false -- getmetatable("") is false, even for trusted code
  end
end

local function script_module_list()
  local names = { "cjson" }
  for name in pairs(M.SCRIPT_MODULES) do names[#names + 1] = name end
  table.sort(names)
  return table.concat(names, ", ")
end

-- A new guarded environment for one script.
function M.new_env()
  -- metatables this script set: the only ones it may read or replace
  local own = setmetatable({}, { __mode = "k" })
  local os_subset = setmetatable({ time = os.time, date = os.date, clock = os.clock }, {
    __index = function(_, k)
      error("os." .. tostring(k) .. " is not available to scripts (allowed: os.time, os.date, os.clock)", 2)
    end,
  })
  local loaded = {}
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    select = select, tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
    xpcall = xpcall, rawequal = rawequal, rawget = rawget, rawset = rawset,
    -- a script sees and changes only metatables it set itself: never the engine's (the string
    -- metatable, the dp.schema.array list marker, the classes of engine objects)
    getmetatable = function(v)
      local mt = debug.getmetatable(v)
      if mt == nil or not own[mt] then return nil end
      return getmetatable(v)
    end,
    setmetatable = function(t, mt)
      if type(t) ~= "table" then
        error("bad argument #1 to 'setmetatable' (table expected, got " .. type(t) .. ")", 2)
      end
      if mt ~= nil and type(mt) ~= "table" then
        error("bad argument #2 to 'setmetatable' (nil or table expected)", 2)
      end
      local cur = debug.getmetatable(t)
      if cur ~= nil and not own[cur] then
        error("setmetatable: this table's metatable belongs to the engine and cannot be changed", 2)
      end
      if mt ~= nil then own[mt] = true end
      return setmetatable(t, mt)
    end,
    -- math without randomseed: the engine's own random numbers (HTTP back-off jitter) are not
    -- the script's to make predictable
    string = copy(STRING_METHODS), table = copy(table), math = copy(math, { randomseed = true }),
    coroutine = copy(coroutine), bit = copy(require("bit")), os = os_subset,
    _VERSION = _VERSION,
  }
  env.table.concat = checked_concat
  env.require = function(name)
    if loaded[name] then return loaded[name] end
    local mod
    if name == "cjson" then
      mod = require("cjson").new()
    elseif type(name) == "string" and M.SCRIPT_MODULES[name] then
      local path = assert(package.searchpath(name, package.path))
      local chunk = assert(loadfile(path))
      if jit then jit.off(chunk, true) end -- it runs script callbacks: keep the count hook firing
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

-- The texts of a version of the scripts (path -> source), set by serve (engine.set_script_texts):
-- scripts are then read from here, never from disk, so a run uses the version it started with and
-- a broken file on disk does not reach it. nil: read the files.
M.script_texts = nil

-- The source of the script at path: from the version's texts when set, else from the file.
-- Returns the text, or nil and an error.
function M.read_script(path)
  if M.script_texts then
    local src = M.script_texts[path]
    if src == nil then return nil, path .. ": No such file or directory" end
    return src
  end
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local src = f:read("*a")
  f:close()
  return src
end

-- Loads a Lua source file as a chunk running in env. Returns chunk, or nil and an error
-- naming the file. Precompiled bytecode is refused.
function M.loadfile(path, env)
  local src, err = M.read_script(path)
  if not src then return nil, err end
  if src:sub(1, 1) == "\27" then
    return nil, path .. ": precompiled bytecode is not allowed in scripts: ship the Lua source"
  end
  local chunk, lerr = load(src, "@" .. path, "t", env or M.new_env())
  if not chunk then return nil, lerr end
  -- compiled traces skip the count hook that enforces the time limit: script code runs in the
  -- interpreter (this covers every function the chunk defines)
  if jit then jit.off(chunk, true) end
  return chunk
end

-- Runs a script's top-level code in a fresh sandbox under DP_SCRIPT_LOAD_TIMEOUT. Returns its
-- return value, or nil and an error. Errors carry the script's file:line.
function M.dofile(path)
  local chunk, err = M.loadfile(path)
  if not chunk then return nil, err end
  local ok, res = M.call(path .. ": loading the script", "load", chunk)
  if not ok then return nil, res end
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
  -- read the returned table raw: no metamethod of the script runs on the engine's path
  local ok_import, flat = pcall(function()
    local out = {}
    for k, v in next, mod do out[k] = v end
    return out
  end)
  if not ok_import then return bad(tostring(flat)) end
  mod = flat
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
  if type(conn.description) ~= "string" then conn.description = nil end
  if type(conn.version) ~= "string" and type(conn.version) ~= "number" then conn.version = nil end
  -- the schemas are read by the engine at every validation: its own raw copies, their
  -- functions (custom validators, defaults, checks) called under the limits
  local ok, ss = pcall(M.import, mod.system_schema, path .. ": system_schema")
  if not ok then return bad(tostring(ss)) end
  local ok2, es = pcall(M.import, mod.entity_schema, path .. ": entity_schema")
  if not ok2 then return bad(tostring(es)) end
  conn.system_schema, err = record_schema(path, "system_schema", ss)
  if not conn.system_schema then return nil, err end
  conn.entity_schema, err = record_schema(path, "entity_schema", es)
  if not conn.entity_schema then return nil, err end
  local model
  ok, model = pcall(models.system_model, conn)
  if not ok then return bad(tostring(model)) end
  conn.system_model = model
  ok, model = pcall(models.entity_model, conn)
  if not ok then return bad(tostring(model):gsub("^schema%.define: ", "entity_schema: ")) end
  conn.entity_model = model
  return conn
end

return M
