-- dp.gold: gold models (trusted engine code; docs/gold.md).
--
--   script, err = gold.compile(path)            -- load gold/<script> in a fresh sandbox, check shape
--   sql, err    = gold.render_sql(model, script) -- an SQL model's query, refs checked
--   loader      = gold.loader{ scripts_dir = dir, log = fn }   -- hot reload
--   script, err = loader:get(model)              -- current version (err: why a newer one was refused)
--   names       = gold.plan(meta, { "model" })   -- upstream gold models first, then the targets
--   names       = gold.plan_for_system(meta, "bank")
--   gold.build(model, script, builder, opts)     -- runs the script into a C builder (core/gold.c)
--
-- A gold script returns { sql = function(ref) ... end } or { rows = function(ctx) ... end },
-- optionally with description and batch_size. Errors name the model, and the script's file and
-- line where there is one.
local schema = require "dp.schema"
local sandbox = require "dp.sandbox"

local M = {}
local quote = schema.quote

M.KEYS = { "sql", "rows", "description", "batch_size" }
M.DEFAULT_BATCH = 500

-- Checks the table a script returned. Returns script or nil, "path: reason".
function M.check(mod, path)
  local function bad(msg) return nil, path .. ": " .. msg end
  if type(mod) ~= "table" then
    return bad("a gold script must return a table with sql = function(ref) or rows = function(ctx), got "
      .. schema.describe(mod))
  end
  local raw = {}
  for k, v in next, mod do raw[k] = v end -- read raw: no script metamethod runs here
  mod = raw
  for k in pairs(mod) do
    local known = false
    for _, name in ipairs(M.KEYS) do known = known or k == name end
    if not known then
      return bad("unknown key " .. schema.describe(k) .. " in the returned table" .. schema.hint(k, M.KEYS))
    end
  end
  if (mod.sql == nil) == (mod.rows == nil) then
    return bad("give exactly one of sql = function(ref) (a query) or rows = function(ctx) (Lua rows)")
  end
  local key = mod.sql ~= nil and "sql" or "rows"
  local fn = mod[key]
  local param = key == "sql" and "ref" or "ctx"
  if type(fn) ~= "function" then
    return bad(key .. " must be a function(" .. param .. "), got " .. schema.describe(fn))
  end
  local info = debug.getinfo(sandbox.original(fn), "u")
  if info.nparams < 1 and not info.isvararg then
    return bad(key .. " must take " .. param .. " as its parameter: function(" .. param .. ")")
  end
  if mod.description ~= nil and type(mod.description) ~= "string" then
    return bad("description must be a string, got " .. schema.describe(mod.description))
  end
  local bs = mod.batch_size
  if bs ~= nil and (type(bs) ~= "number" or bs < 1 or bs ~= math.floor(bs) or bs > 1e6) then
    return bad("batch_size must be an integer between 1 and 1000000, got " .. schema.describe(bs))
  end
  -- the engine calls the script's function under the script limits (sandbox.wrap)
  local what = path .. ": " .. key .. "(" .. param .. ")"
  return { path = path, style = key, sql = mod.sql and sandbox.wrap(mod.sql, what),
    rows = mod.rows and sandbox.wrap(mod.rows, what), description = mod.description,
    batch_size = bs or M.DEFAULT_BATCH }
end

-- Loads a script in a fresh sandbox environment and checks its shape.
function M.compile(path)
  local mod, err = sandbox.dofile(path) -- a fresh sandbox, DP_SCRIPT_LOAD_TIMEOUT
  if err then return nil, err end
  return M.check(mod, path)
end

-- The table an input names: silver."<system>__<entity>_current" or gold."<model>".
function M.relation(name)
  local sys, ent = name:match("^([a-z][a-z0-9_]*)%.([a-z][a-z0-9_]*)$")
  if sys then return 'silver."' .. sys .. "__" .. ent .. '_current"' end
  if name:match("^[a-z][a-z0-9_]*$") then return 'gold."' .. name .. '"' end
end

-- ref(name) for a model: only inputs listed in depends_on; errors point at the caller's line
-- (level: where the script called it).
function M.make_ref(model, level)
  local declared = {}
  for _, d in ipairs(model.depends_on or {}) do declared[d] = true end
  return function(name)
    if type(name) ~= "string" then
      error("ref: expected an input name (system.entity or a gold model), got " .. schema.describe(name), level)
    end
    if not declared[name] then
      error("ref(" .. quote(name) .. ") is not declared in depends_on of gold model " .. quote(model.name)
        .. " (declared: " .. (next(declared) and table.concat(model.depends_on, ", ") or "none")
        .. "); add it to gold.json", level)
    end
    local rel = M.relation(name)
    if not rel then error("ref: " .. quote(name) .. " is not system.entity or a gold model name", level) end
    return rel
  end
end

local function prefixed(model, err)
  err = tostring(err)
  local p = "gold model " .. model.name .. ": "
  if err:sub(1, #p) == p then return err end
  return p .. err
end

-- The query of an SQL model. Returns sql or nil, err. It must be one query (SELECT, WITH,
-- VALUES or TABLE; no second statement): checked here, so a script that returns anything else
-- fails when it is loaded (docs/gold.md#the-sql-sandbox).
function M.render_sql(model, script)
  local ok, sql = pcall(script.sql, M.make_ref(model, 2))
  if not ok then return nil, prefixed(model, sql) end
  if type(sql) ~= "string" or not sql:find("%S") then
    return nil, prefixed(model, script.path .. ": sql(ref) must return the query as a string, got "
      .. schema.describe(sql))
  end
  local one, why = require("dp.core").gold_sql_check(sql)
  if not one then return nil, prefixed(model, script.path .. ": sql(ref): " .. why) end
  return sql
end

---------------------------------------------------------------------------------------------
-- Hot reload

local Loader = {}
Loader.__index = Loader

-- opts: scripts_dir (holds gold/), log(level, msg) (optional).
function M.loader(opts)
  assert(type(opts) == "table" and type(opts.scripts_dir) == "string", "gold.loader{ scripts_dir = ... }")
  return setmetatable({ dir = opts.scripts_dir, log = opts.log, cache = {} }, Loader)
end

function Loader:path(model)
  return self.dir .. "/gold/" .. model.script
end

-- The current script of a model. A changed file (modification time or size) is compiled in a
-- fresh sandbox and checked (shape; for SQL models the refs against depends_on); it replaces
-- the previous version only when it loads cleanly. Returns script, or script and the error
-- that kept the previous version, or nil and the error when no version ever loaded.
function Loader:get(model)
  local path = self:path(model)
  local info, ierr
  if sandbox.script_texts then -- serve's version of the scripts (sandbox.read_script)
    local text = sandbox.script_texts[path]
    if text then info = { mtime = 0, size = #text } else ierr = "No such file or directory" end
  else
    info, ierr = require("dp.core").file_info(path)
  end
  local entry = self.cache[path]
  local stamp = info and (string.format("%.9f", info.mtime) .. " " .. info.size)
  if entry and entry.stamp == stamp and entry.deps == table.concat(model.depends_on or {}, ",") then
    return entry.script, entry.err
  end
  local script, err
  if not info then
    err = path .. ": " .. tostring(ierr)
  else
    script, err = M.compile(path)
    if script and script.style == "sql" then
      local _, rerr = M.render_sql(model, script)
      if rerr then script, err = nil, rerr end
    end
  end
  err = err and prefixed(model, err)
  if script then
    self.cache[path] = { stamp = stamp, script = script, deps = table.concat(model.depends_on or {}, ",") }
    return script
  end
  if self.log then
    self.log(entry and "warn" or "error", err .. (entry and " (keeping the previous version)" or ""))
  end
  if entry then
    entry.stamp, entry.err = stamp, err -- do not retry an unchanged broken file
    return entry.script, err
  end
  return nil, err
end

---------------------------------------------------------------------------------------------
-- Dependency order

local function gold_index(meta)
  local by = {}
  for _, g in ipairs(meta.gold or {}) do by[g.name] = g end
  return by
end

-- Appends model and its upstream gold models (depth first, upstream first) to out.
local function visit(by, name, seen, out)
  if seen[name] then return end
  seen[name] = true
  for _, d in ipairs(by[name].depends_on) do
    if by[d] then visit(by, d, seen, out) end
  end
  out[#out + 1] = name
end

-- The targets and every gold model they depend on, directly or not, upstream first. Raises
-- for an unknown model. (Cycles are rejected when the metadata is validated.)
function M.plan(meta, targets)
  local by, seen, out = gold_index(meta), {}, {}
  for _, t in ipairs(targets) do
    if not by[t] then
      local names = {}
      for _, g in ipairs(meta.gold or {}) do names[#names + 1] = g.name end
      error("no gold model named " .. quote(t) .. " in gold.json" .. schema.hint(t, names), 0)
    end
    visit(by, t, seen, out)
  end
  return out
end

-- The gold models that depend on an entity of system, directly or through other gold models,
-- in dependency order.
function M.plan_for_system(meta, system)
  local by, hit = gold_index(meta), {}
  local changed = true
  while changed do
    changed = false
    for _, g in ipairs(meta.gold or {}) do
      if not hit[g.name] then
        for _, d in ipairs(g.depends_on) do
          if d:match("^([^.]+)%.") == system or hit[d] then
            hit[g.name], changed = true, true
            break
          end
        end
      end
    end
  end
  local seen, out = {}, {}
  for _, g in ipairs(meta.gold or {}) do
    if hit[g.name] then
      -- only the hit models, in an order where each comes after its hit upstream models
      local order = {}
      visit(by, g.name, {}, order)
      for _, n in ipairs(order) do
        if hit[n] and not seen[n] then seen[n] = true; out[#out + 1] = n end
      end
    end
  end
  return out
end

---------------------------------------------------------------------------------------------
-- Building

local function number_text(v)
  if v ~= v or v == math.huge or v == -math.huge then return nil end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
  return string.format("%.17g", v)
end

-- A row (column name -> value) as a JSON object text. Raises on unknown columns and values
-- that are not JSON.
function M.row_json(model, row, cols, cjson)
  if type(row) ~= "table" then return nil, "expected a table keyed by column names, got " .. schema.describe(row) end
  local parts = {}
  for k, v in pairs(row) do
    if not cols[k] then
      local names = {}
      for _, c in ipairs(model.columns) do names[#names + 1] = c.name end
      return nil, "row has no column " .. schema.describe(k) .. " in gold model " .. quote(model.name)
        .. schema.hint(tostring(k), names)
    end
    local t = type(v)
    local text
    if v == cjson.null then text = "null"
    elseif t == "string" then text = cjson.encode(v)
    elseif t == "number" then
      text = number_text(v)
      if not text then return nil, "column " .. quote(k) .. ": " .. tostring(v) .. " is not a number JSON can hold" end
    elseif t == "boolean" then text = tostring(v)
    elseif t == "table" then
      local ok, s = pcall(cjson.encode, v)
      if not ok then return nil, "column " .. quote(k) .. ": " .. tostring(s) end
      text = s
    else
      return nil, "column " .. quote(k) .. ": a " .. t .. " is not a value"
    end
    parts[#parts + 1] = cjson.encode(k) .. ":" .. text
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- ctx:query over the reader (core/gold.c: a REPEATABLE READ READ ONLY transaction; every query
-- runs in the SQL sandbox as dp_gold, under the statement timeout): an iterator over rows,
-- fetched batch rows at a time.
local function make_query(reader, batch, counter)
  local core = require "dp.core"
  return function(_, sql, params)
    if type(sql) ~= "string" then error("ctx:query: expected the SQL text, got " .. schema.describe(sql), 2) end
    if params ~= nil and type(params) ~= "table" then
      error("ctx:query: params must be an array, got " .. schema.describe(params), 2)
    end
    local one, why = core.gold_sql_check(sql)
    if not one then error("ctx:query: " .. why, 2) end
    local r = reader()
    counter.n = counter.n + 1
    local cur = "_dp_gold_q" .. counter.n
    local args = {}
    local nargs = params and (params.n or #params) or 0
    for i = 1, nargs do
      local v = params[i]
      if v ~= nil and type(v) ~= "string" then v = type(v) == "number" and number_text(v) or tostring(v) end
      args[i] = v
    end
    local ok, err = r:declare(cur, sql, unpack(args, 1, nargs))
    if not ok then error("ctx:query: " .. tostring(err), 2) end
    local rows, i, done = {}, 0, false
    return function()
      i = i + 1
      if rows[i] == nil and not done then
        local got, ferr = r:fetch(cur, batch)
        if not got then error("ctx:query: " .. tostring(ferr), 2) end
        rows, i = got, 1
        if #got < batch then
          done = true
          r:close_cursor(cur)
        end
      end
      return rows[i]
    end
  end
end

-- Runs a model's script into builder (core/gold.c: builder:emit(json), builder:insert_select(sql)).
-- opts: run_id, run_ts, log(level, msg), open_reader() -> a dp.core pg connection for ctx:query
-- (rows models; gold.build makes it a gold reader, core.gold_reader, with the builder's
-- statement timeout, and closes it).
-- Returns the number of rows; raises "gold model <name>: <file>:<line>: ..." on failure.
function M.build(model, script, builder, opts)
  if script.style == "sql" then
    local sql, err = M.render_sql(model, script)
    if not sql then error(err, 0) end
    local n, ierr = builder:insert_select(sql)
    if not n then error(prefixed(model, script.path .. ": " .. tostring(ierr)), 0) end
    return n
  end
  local cjson = require("cjson").new()
  local cols = {}
  for _, c in ipairs(model.columns) do cols[c.name] = true end
  local conn, rd
  local function reader()
    if not rd then
      local cerr
      conn, cerr = opts.open_reader()
      if not conn then error("ctx:query: " .. tostring(cerr), 0) end
      local err
      rd, err = require("dp.core").gold_reader(conn, builder:statement_timeout())
      if not rd then error("ctx:query: " .. tostring(err), 0) end
    end
    return rd
  end
  local emitted = 0
  local log = opts.log or function() end
  local ctx = {
    model = sandbox.export(model), -- a fresh copy: nothing the engine reads again
    run_id = opts.run_id, run_ts = opts.run_ts,
    ref = (function()
      local r = M.make_ref(model, 3)
      return function(_, name) local rel = r(name); return rel end
    end)(),
    query = make_query(reader, script.batch_size, { n = 0 }),
    emit = function(_, row)
      local js, err = M.row_json(model, row, cols, cjson)
      if not js then error("ctx:emit: row " .. (emitted + 1) .. ": " .. err, 2) end
      local ok, eerr = builder:emit(js)
      if not ok then error("ctx:emit: " .. eerr, 2) end
      emitted = emitted + 1
    end,
    log = {},
  }
  for _, level in ipairs({ "debug", "info", "warn", "error" }) do
    ctx.log[level] = function(msg, ...)
      if select("#", ...) > 0 then msg = string.format(tostring(msg), ...) end
      log(level, "gold " .. model.name .. ": " .. tostring(msg))
    end
  end
  local ok, err = pcall(script.rows, ctx)
  if rd then rd:finish() end
  if conn then conn:close() end
  if not ok then error(prefixed(model, err), 0) end
  return emitted
end

return M
