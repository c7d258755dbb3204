-- dp.engine: the entry points the C core calls (trusted code).
--
--   engine.configure{ scripts_dir = "...", data_dir = "..." }
--   meta, errs = engine.load_metadata(dir)
--   new_cursor = engine.extract(meta, system_name, entity_name, cursor, emit, log)
--   docs = engine.push_documents(meta)           -- metadata push: one JSON document per item
--   text, err = engine.show(meta, name, as_json) -- metadata show
--
-- extract loads connectors/<type>.lua in the sandbox and calls connector.extract(ctx). Errors
-- raise (the C side calls through its traceback-adding pcall helper). Secret references in the
-- system and entity ({ secret = "name" }) are resolved first (docs/secrets.md).
local schema = require "dp.schema"
local metadata = require "dp.metadata"
local sandbox = require "dp.sandbox"
local models = require "dp.models"
local metadata_type_name = models.connector_type
local jsonreader = require "dp.jsonreader"

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

-- Which connectors loading the metadata runs: runs load only those of enabled systems, so a
-- disabled system's script never runs on their path; `metadata validate|push|show` set
-- M.all_connectors (core/cmd_metadata.c) and check every system's connector, each under the
-- script load time limit.
M.all_connectors = false

local function load_opts()
  return { scripts_dir = configured().scripts_dir, connectors = M.all_connectors and "all" or "enabled" }
end

function M.load_metadata(dir)
  return metadata.load_dir(dir, load_opts())
end

-- texts: { ["systems.json"] = ..., ["entities.json"] = ..., ["gold.json"] = ... } (e.g. read
-- back from MongoDB).
-- serve: the scripts of the version a run uses (path -> source; nil: read the files).
function M.set_script_texts(texts)
  sandbox.script_texts = texts
end

function M.load_metadata_texts(texts)
  return metadata.load_texts(texts, load_opts())
end

function M.connector_path(type_name)
  return configured().scripts_dir .. "/connectors/" .. type_name .. ".lua"
end

-- ctx.files: read-only access to the files of one folder (the system's inbox). Every access
-- goes through core/inbox.c, which opens the folder and the file without following symbolic
-- links (or, with the system's follow_symlinks, only to a file inside the inbox) and checks the
-- opened file itself (docs/connectors.md, "Symbolic links").
local function bad_file_name(fn, name)
  if type(name) ~= "string" or name == "" or name:find("/", 1, true) or name:find("..", 1, true)
      or name:find("\0", 1, true) then
    local shown = type(name) == "string" and ('"' .. require("dp.core").escape_text(name) .. '"') or schema.describe(name)
    return "ctx.files." .. fn .. ": " .. shown .. ' is not a file name in the inbox (no "/" or "..")'
  end
end

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
  local follow = system.follow_symlinks == true
  local core = require "dp.core"

  -- called by files.read / files.lines: level 3 is the script
  local function open(fn, name)
    local err = bad_file_name(fn, name)
    if err then error(err, 3) end
    local f, oerr = core.inbox_open(inbox, name, follow)
    if not f then error("ctx.files." .. fn .. ": " .. oerr, 3) end
    return f
  end

  -- Sorted names of the regular files in the inbox matching glob (default "*").
  function files.list(glob)
    glob = glob or "*"
    if type(glob) ~= "string" or glob:find("/", 1, true) or glob:find("\0", 1, true) then
      error("ctx.files.list: " .. schema.describe(glob) .. ' is not a file name pattern (no "/")', 2)
    end
    local names, err = core.inbox_list(inbox, glob, follow)
    if not names then
      error("ctx.files.list: " .. tostring(err) .. " (the inbox of system " .. quote(system.name) .. ")", 2)
    end
    return names
  end

  function files.read(name)
    local f = open("read", name)
    local s = f:read() or ""
    f:close()
    return s
  end

  -- Iterator over the lines of a file, without "\n" or a trailing "\r". Every byte is kept, NUL
  -- too (f:read("*l") stops a line at a NUL byte in LuaJIT): a line is what lies between "\n"s.
  function files.lines(name)
    local f = open("lines", name)
    return function()
      if not f then return nil end
      local l = f:line()
      if l == nil then f:close(); f = nil; return nil end
      if l:sub(-1) == "\r" then l = l:sub(1, -2) end
      return l
    end
  end

  -- Path of a file in the inbox, for messages: control characters (a line break in a file
  -- name) are escaped, so that the name cannot forge a log line, an error or an audit row.
  function files.path(name)
    local err = bad_file_name("path", name)
    if err then error(err, 2) end
    return core.escape_text(inbox .. "/" .. name)
  end

  return files
end

---------------------------------------------------------------------------------------------
-- Secrets (docs/secrets.md): { secret = "name" } in the validated metadata is a reference.

-- Read raw (rawget, next): no metamethod decides what the engine treats as a reference, and
-- the engine's metadata tables never reach a script (scripts get copies: sandbox.export).
local function is_secret_ref(v)
  return type(v) == "table" and type(rawget(v, "secret")) == "string" and next(v, (next(v))) == nil
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
  for k in next, v do keys[#keys + 1] = k end
  table.sort(keys, key_order)
  for _, k in ipairs(keys) do
    collect_secret_refs(rawget(v, k), type(k) == "number" and (path .. "[" .. (k - 1) .. "]") or (path .. "." .. tostring(k)), out)
  end
  return out
end

-- What `dp-engine doctor` checks in the metadata: the inbox of every enabled file system, the
-- base_url of every enabled rest system, and the name of every secret referenced anywhere.
function M.doctor_facts(meta)
  local facts = { inboxes = {}, rest = {}, secrets = {} }
  for i, s in ipairs(meta.systems or {}) do
    if s.enabled ~= false and s.type == "file" and type(s.inbox) == "string" then
      facts.inboxes[#facts.inboxes + 1] = { system = s.name, inbox = s.inbox }
    elseif s.enabled ~= false and s.type == "rest" and type(s.base_url) == "string" then
      facts.rest[#facts.rest + 1] = { system = s.name, base_url = s.base_url }
    end
    for _, r in ipairs(collect_secret_refs(s, "systems.json[" .. (i - 1) .. "]", {})) do
      facts.secrets[#facts.secrets + 1] = r.name
    end
  end
  for i, e in ipairs(meta.entities or {}) do
    for _, r in ipairs(collect_secret_refs(e, "entities.json[" .. (i - 1) .. "]", {})) do
      facts.secrets[#facts.secrets + 1] = r.name
    end
  end
  return facts
end

-- Replaces every reference in t (a copy) by its value, in place.
local function substitute_secrets(t, values)
  for k, x in next, t do
    if is_secret_ref(x) then rawset(t, k, values[rawget(x, "secret")])
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

-- scrub: redact records (a system with secrets); records are redacted too whenever any value
-- is registered in this process (serve runs many systems: one system's record may hold
-- another's token). log(level, msg) warns the first time.
local function make_emit(emit, scrub, log)
  local core = require "dp.core"
  local cjson = require("cjson").new()
  local warned = false
  return function(batch)
    if type(batch) ~= "table" then
      error("emit: expected an array of records, got " .. schema.describe(batch), 2)
    end
    local n = #batch
    if n == 0 then return 0 end
    local out = {}
    local scrub_batch = scrub or core.redact_count() > 0
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
      if scrub_batch then
        local scrubbed, k = redact(out[i])
        if k > 0 then
          out[i] = scrubbed
          if not warned then
            warned = true
            log("warn", "emit: record " .. i .. " of a batch held the value of secret "
              .. quote(scrubbed:match("%[redacted:([%w_.%-]+)%]") or "?") .. "; it was replaced by [redacted:...]"
              .. " before the raw file (later records are redacted without a warning)")
          end
        end
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
  local follow = system.follow_symlinks == true
  -- Checks name (raises at the script's level); nil and the error when there is no inbox.
  local function check(fn, name)
    if not files.inbox then error("ctx.files." .. fn .. ": system " .. quote(system.name) .. " has no inbox folder", 3) end
    local err = bad_file_name(fn, name)
    if err then error(err, 3) end
  end

  -- Iterator over blocks of at most `size` bytes (default 64 KiB).
  function files.chunks(name, size)
    check("chunks", name)
    size = size or 65536
    if type(size) ~= "number" or size < 1 then error("ctx.files.chunks: size must be a positive number", 2) end
    local f, err = core.inbox_open(files.inbox, name, follow)
    if not f then error("ctx.files.chunks: " .. err, 2) end
    return function()
      if not f then return nil end
      local b = f:read(size)
      if b == nil then f:close(); f = nil end
      return b
    end
  end

  -- { size, mtime, age } (seconds; age since the last change).
  function files.stat(name)
    check("stat", name)
    local info, err = core.inbox_stat(files.inbox, name, follow)
    if not info then error("ctx.files.stat: " .. err, 2) end
    return info
  end

  -- Moves the file to the system's archive folder once this entity's data committed.
  function files.archive(name)
    check("archive", name)
    local dir = folder(system.archive, data_dir)
    if not dir then error("ctx.files.archive: system " .. quote(system.name) .. " has no archive folder", 2) end
    local inbox = files.inbox
    on_commit(function()
      local to, merr = core.inbox_archive(inbox, name, dir, follow)
      if not to then error("archiving " .. core.escape_text(name) .. ": " .. merr, 0) end
      log.info("archived %s to %s", inbox .. "/" .. name, to)
    end)
  end
end

local function extend_ctx(ctx, meta, system, entity, data_dir, http_system, what)
  local core = require "dp.core"
  local key = system.name .. "\0" .. entity.name
  pending[key] = {}
  function ctx.on_commit(fn)
    if type(fn) ~= "function" then
      error("ctx.on_commit: expected a function, got " .. schema.describe(fn), 2)
    end
    local list = pending[key]
    list[#list + 1] = sandbox.wrap(fn, what .. ": a ctx.on_commit function")
  end
  ctx.entities = {}
  for _, e in ipairs(meta.entities or {}) do
    if e.system == system.name then ctx.entities[e.name] = sandbox.export(e) end
  end
  ctx.json.select = core.json_select
  ctx.json.value = function(text, path) return json_value(core, text, path or "") end
  ctx.json.records = function(text, path) return json_records(core, text, path or "") end
  extend_files(ctx.files, system, data_dir, ctx.on_commit, ctx.log)
  -- The client gets the engine's own copy of the system, with its {"secret": name} references
  -- replaced by their values already (#7), not ctx.system, which the script may change; a
  -- reference that still reaches the client goes through the system's own secrets.
  local secret = ctx.secret
  ctx.http = http.for_system(http_system, {
    log = ctx.log,
    secret = function(name) return secret(name) end,
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

-- Is s valid UTF-8 without NUL bytes (text PostgreSQL accepts)?
local function is_text(s)
  return not s:find("\0", 1, true) and jsonreader.utf8_invalid_at(s) == nil
end

-- Runs connector.extract(ctx) for one entity. emit(array_of_json_strings) and log(level, msg)
-- are C functions. Returns the new cursor (a string) or nil.
-- event: the JSON body of a callback (serve), or nil; the connector gets it decoded as ctx.event.
function M.extract(meta, system_name, entity_name, cursor, emit, log, event)
  local cfg = configured()
  local system = metadata.find_system(meta, system_name)
  if not system then error("engine.extract: no system " .. quote(system_name) .. " in the metadata", 2) end
  if system.enabled == false then
    error("system " .. quote(system_name) .. " is disabled in metadata (\"enabled\": false): its connector is not loaded", 0)
  end
  local entity = metadata.find_entity(meta, system_name, entity_name)
  if not entity then
    error("engine.extract: no entity " .. quote(system_name .. "." .. tostring(entity_name)) .. " in the metadata", 2)
  end
  -- the references are read from the engine's validated metadata before any script of this
  -- run is loaded, and only those of this system and entity
  local secrets = resolve_secrets(meta, system, entity)
  local conn, err = sandbox.load_connector(M.connector_path(system.type))
  if not conn then error(err, 0) end
  local scrub = next(secrets) ~= nil
  local core = require "dp.core"
  local cjson = require("cjson").new()
  local what = conn.path .. ": extract (system " .. quote(system.name) .. ", entity " .. quote(entity.name) .. ")"
  -- what the script gets is a fresh copy: no table the engine reads again, no shared metatable
  local ctx = {
    system = sandbox.export(substitute_secrets(schema.deep_copy(system), secrets)),
    entity = sandbox.export(substitute_secrets(schema.deep_copy(entity), secrets)),
    cursor = cursor,
    event = event and cjson.decode(event) or nil, -- a fresh table per call
    log = make_log(log),
    emit = make_emit(emit, scrub, log),
    secret = make_secret(system, secrets),
    files = inbox_files(system, cfg.data_dir),
    json = {
      decode = cjson.decode, encode = cjson.encode, null = cjson.null,
      compact = core.json_compact, array_elements = core.json_array_elements,
      line_col = metadata.line_col, -- line and column of a byte offset, for messages
    },
  }
  extend_ctx(ctx, meta, system, entity, cfg.data_dir, substitute_secrets(schema.deep_copy(system), secrets), what)
  local ok, new_cursor = sandbox.call(what, "call", conn.extract, ctx)
  if not ok then error(new_cursor, 0) end
  if type(new_cursor) == "number" and new_cursor == math.floor(new_cursor) then
    new_cursor = schema.format_number(new_cursor)
  end
  if new_cursor ~= nil and type(new_cursor) ~= "string" then
    error(conn.path .. ": extract returned a cursor of type " .. type(new_cursor) .. ", expected a string or nil", 0)
  end
  if new_cursor and not is_text(new_cursor) then
    -- e.g. the file connector's cursor is a file name, and names are bytes: PostgreSQL would
    -- refuse it in the audit row and dp.entity_cursor, after the data was loaded
    error(conn.path .. ": extract returned a cursor that is not valid UTF-8 text ("
      .. require("dp.core").escape_text(new_cursor) .. "); cursors are stored as text, so it was refused"
      .. " (a file name? rename the file)", 0)
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

---------------------------------------------------------------------------------------------
-- metadata push and show

-- JSON for people: keys in the order the models declare them (name first), others sorted
-- after them; empty validated lists stay [].
local KEY_ORDER = {}
for i, k in ipairs({ "name", "system", "description", "type", "enabled", "length", "precision", "scale",
  "nullable", "path", "history", "load_type", "primary_key", "cursor", "delete_detection", "on_type_error",
  "retention", "script", "depends_on", "materialization", "source", "hash", "systems", "entities", "gold",
  "columns", "triggers" }) do KEY_ORDER[k] = i end

local function encode_ordered(v)
  -- cjson writes "/" as "\/"; "/" needs no escape, and paths read better without it
  if type(v) == "string" then return (schema.encode(v):gsub("\\/", "/")) end
  if type(v) ~= "table" or v == schema.null then return schema.encode(v) end
  local parts = {}
  if getmetatable(v) == schema.ARRAY or schema.kind(v) == "array" then
    for i = 1, #v do parts[i] = encode_ordered(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys, function(a, b)
    local x, y = KEY_ORDER[a] or math.huge, KEY_ORDER[b] or math.huge
    if x ~= y then return x < y end
    return a < b
  end)
  for _, k in ipairs(keys) do parts[#parts + 1] = encode_ordered(k) .. ":" .. encode_ordered(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end
M.encode_ordered = encode_ordered

-- The documents `metadata push` writes: { systems = { { id = "bank", json = "{...}" }, ... },
-- entities = { { id = "bank.transactions", json = ... } }, gold = { ... } }, in file order.
-- json is the validated item with its defaults (secret references stay references).
function M.push_documents(meta)
  local out = {}
  for _, coll in ipairs({ "systems", "entities", "gold" }) do
    local list = {}
    for i, item in ipairs(meta[coll]) do
      local id = coll == "entities" and (item.system .. "." .. item.name) or item.name
      list[i] = { id = id, json = encode_ordered(item) }
    end
    out[coll] = list
  end
  return out
end

local BASE_SYSTEM = { name = true, description = true, type = true, enabled = true, triggers = true }

local function show_value(v)
  if type(v) == "table" then return schema.encode(v) end
  if type(v) == "string" then return quote(v) end
  return tostring(v)
end

local function show_triggers(list)
  local parts = {}
  for _, t in ipairs(list or {}) do
    if t.type == "schedule" then parts[#parts + 1] = "schedule " .. quote(t.cron) .. " " .. t.timezone
    elseif t.type == "file" then parts[#parts + 1] = "file " .. t.path .. "/" .. t.pattern
    elseif t.type == "after" then parts[#parts + 1] = "after " .. t.upstream
    else parts[#parts + 1] = "callback" .. (t.name and (" " .. t.name) or "") end
  end
  return #parts > 0 and table.concat(parts, "; ") or "none"
end

local function column_type(c)
  if c.type == "string" and c.length then return "string(" .. c.length .. ")" end
  if c.type == "decimal" then return "decimal(" .. c.precision .. "," .. c.scale .. ")" end
  return c.type
end

local function show_columns(out, cols, indent)
  local w = { #"column", #"type" }
  for _, c in ipairs(cols) do
    w[1] = math.max(w[1], #c.name)
    w[2] = math.max(w[2], #column_type(c))
  end
  local fmt = indent .. "%-" .. w[1] .. "s  %-" .. w[2] .. "s  %-8s  %-7s  %s"
  out[#out + 1] = (fmt:format("column", "type", "nullable", "history", "path")):gsub("%s+$", "")
  for _, c in ipairs(cols) do
    local line = fmt:format(c.name, column_type(c), c.nullable and "yes" or "no", c.history,
      c.path ~= c.name and c.path or "")
    out[#out + 1] = line:gsub("%s+$", "")
  end
end

local function show_entity(out, e)
  local facts = { e.load_type .. " load" }
  facts[#facts + 1] = #e.primary_key > 0 and ("key (" .. table.concat(e.primary_key, ", ") .. ")") or "no key (append-only)"
  if e.cursor then facts[#facts + 1] = "cursor " .. e.cursor end
  if e.load_type == "full" then facts[#facts + 1] = "delete detection " .. e.delete_detection end
  facts[#facts + 1] = "on type error " .. e.on_type_error
  if not e.enabled then facts[#facts + 1] = "DISABLED" end
  out[#out + 1] = "  entity " .. e.system .. "." .. e.name .. ": " .. table.concat(facts, ", ")
  if e.description then out[#out + 1] = "    " .. e.description end
  local src, keys = {}, {}
  for k in pairs(e.source or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do src[#src + 1] = k .. " " .. show_value(e.source[k]) end
  if #src > 0 then out[#out + 1] = "    source: " .. table.concat(src, ", ") end
  local r, keep = e.retention or {}, {}
  if r.raw_days then keep[#keep + 1] = "raw files compressed after " .. r.raw_days .. " days" end
  if r.raw_delete_days then keep[#keep + 1] = "raw files deleted after " .. r.raw_delete_days .. " days" end
  if r.bronze_deleted_days then keep[#keep + 1] = "deleted bronze documents purged after " .. r.bronze_deleted_days .. " days" end
  if r.silver_history_days then keep[#keep + 1] = "closed silver versions dropped after " .. r.silver_history_days .. " days" end
  if #keep > 0 then out[#out + 1] = "    retention: " .. table.concat(keep, ", ") end
  if e.raw and e.raw.compression ~= "none" then out[#out + 1] = "    raw files written " .. e.raw.compression .. "-compressed" end
  show_columns(out, e.columns, "    ")
end

local function show_system(out, s, entities)
  out[#out + 1] = "system " .. s.name .. ": " .. s.type .. ", " .. (s.enabled and "enabled" or "DISABLED")
  if s.description then out[#out + 1] = "  " .. s.description end
  local keys = {}
  for k in pairs(s) do if not BASE_SYSTEM[k] then keys[#keys + 1] = k end end
  table.sort(keys)
  for _, k in ipairs(keys) do out[#out + 1] = "  " .. k .. ": " .. show_value(s[k]) end
  out[#out + 1] = "  triggers: " .. show_triggers(s.triggers)
  for _, e in ipairs(entities) do show_entity(out, e) end
end

local function show_gold(out, g)
  out[#out + 1] = "gold model " .. g.name .. ": " .. g.materialization .. ", script gold/" .. g.script
  if g.description then out[#out + 1] = "  " .. g.description end
  out[#out + 1] = "  depends on: " .. (#g.depends_on > 0 and table.concat(g.depends_on, ", ") or "nothing")
  if #g.primary_key > 0 then out[#out + 1] = "  key (" .. table.concat(g.primary_key, ", ") .. ")" end
  out[#out + 1] = "  triggers: " .. show_triggers(g.triggers)
  show_columns(out, g.columns, "  ")
end

local function plural(n, one, many) return n .. " " .. (n == 1 and one or many) end

-- The text `metadata show [NAME] [--json]` prints: everything, or one system (with its
-- entities), one entity (system.entity) or one gold model. Returns text, or nil and an error
-- for an unknown name.
function M.show(meta, name, as_json)
  local systems, entities, gold = {}, {}, {}
  if name == nil then
    systems, entities, gold = meta.systems, meta.entities, meta.gold
  else
    local sys, ent = name:match("^([^.]+)%.(.+)$")
    if sys then
      local e = metadata.find_entity(meta, sys, ent)
      if e then entities = { e } end
    else
      local s = metadata.find_system(meta, name)
      if s then
        systems = { s }
        for _, e in ipairs(meta.entities) do if e.system == name then entities[#entities + 1] = e end end
      end
      local g = metadata.find_gold(meta, name)
      if g then gold = { g } end
    end
    if #systems + #entities + #gold == 0 then
      local names = {}
      for _, s in ipairs(meta.systems) do names[#names + 1] = s.name end
      for _, e in ipairs(meta.entities) do names[#names + 1] = e.system .. "." .. e.name end
      for _, g in ipairs(meta.gold) do names[#names + 1] = g.name end
      return nil, "no system, entity (system.entity) or gold model named " .. quote(name) .. schema.hint(name, names)
    end
  end
  -- a file entity's csv options only when it reads CSV (they are defaults for the others)
  local shown_entities = {}
  for i, e in ipairs(entities) do
    local s = metadata.find_system(meta, e.system)
    local src = e.source
    if s and s.type == "file" and type(src) == "table" and src.csv ~= nil
        and (src.format or require("dp.scaffold").format_of_name(tostring(src.pattern))) ~= "csv" then
      e = schema.deep_copy(e)
      e.source.csv = nil
    end
    shown_entities[i] = e
  end
  entities = shown_entities
  if as_json then
    local function arr(t) return setmetatable(schema.deep_copy(t), schema.ARRAY) end
    return encode_ordered({ source = meta.source, hash = meta.hash, systems = arr(systems),
      entities = arr(entities), gold = arr(gold) }) .. "\n"
  end
  local out = {}
  out[#out + 1] = "metadata from " .. tostring(meta.source) .. " (hash " .. meta.hash:sub(1, 12) .. "): "
    .. plural(#meta.systems, "system", "systems") .. ", " .. plural(#meta.entities, "entity", "entities")
    .. ", " .. plural(#meta.gold, "gold model", "gold models")
  local shown = {}
  for _, s in ipairs(systems) do
    out[#out + 1] = ""
    local mine = {}
    for _, e in ipairs(entities) do if e.system == s.name then mine[#mine + 1] = e; shown[e] = true end end
    show_system(out, s, mine)
  end
  for _, e in ipairs(entities) do
    if not shown[e] then
      out[#out + 1] = ""
      show_entity(out, e)
    end
  end
  for _, g in ipairs(gold) do
    out[#out + 1] = ""
    show_gold(out, g)
  end
  return table.concat(out, "\n") .. "\n"
end

---------------------------------------------------------------------------------------------
-- `dp-engine lineage` (core/cmd_lineage.c): the graph drawn by lua/dp/lineage.lua as text, dot,
-- mermaid or json; status: node id -> { status, last_run, run_id } from the audit.
function M.lineage(meta, status, format)
  return require("dp.lineage").render(meta, status, format)
end

---------------------------------------------------------------------------------------------
-- `dp-engine connectors list|show` (core/cmd_connectors.c): the options of connector types,
-- from the schemas' field descriptions (lua/dp/connectors_doc.lua).
local connectors_doc = require "dp.connectors_doc"

-- Returns text, or nil and an error (a connector that does not load).
function M.connectors_list(as_json)
  local list = connectors_doc.list(configured().scripts_dir, sandbox.load_connector)
  if as_json then
    local arr = setmetatable({}, schema.ARRAY)
    for i, c in ipairs(list) do arr[i] = { type = c.type, script = c.path, description = c.description, error = c.err } end
    return schema.encode(arr) .. "\n"
  end
  if #list == 0 then
    return nil, "no connector types in " .. configured().scripts_dir .. "/connectors (set DP_SCRIPTS)"
  end
  local width = 4
  for _, c in ipairs(list) do width = math.max(width, #c.type) end
  local out = {}
  for _, c in ipairs(list) do
    out[#out + 1] = string.format("%-" .. width .. "s  %s", c.type, c.err and ("does not load: " .. c.err) or c.description)
  end
  out[#out + 1] = ""
  out[#out + 1] = "dp-engine connectors show TYPE: the options of a type"
  return table.concat(out, "\n") .. "\n"
end

-- format: "text", "json" or "markdown". Returns text, or nil and an error.
function M.connectors_show(type_name, format)
  local ok, err = metadata_type_name(type_name)
  if not ok then return nil, err end
  local conn, lerr = sandbox.load_connector(M.connector_path(type_name))
  if not conn then
    local names = {}
    for _, c in ipairs(connectors_doc.list(configured().scripts_dir, function() return {} end)) do
      names[#names + 1] = c.type
    end
    if lerr:find("cannot open", 1, true) or lerr:find("No such file", 1, true) then
      return nil, "no connector type " .. quote(type_name) .. " (no " .. M.connector_path(type_name) .. ")"
        .. schema.hint(type_name, names) .. "; known: " .. table.concat(names, ", ")
    end
    return nil, lerr
  end
  return connectors_doc.show(conn, type_name, format)
end

---------------------------------------------------------------------------------------------
-- `dp-engine init system|connector` (core/cmd_init.c, docs/init.md): returns { report, files =
-- { { path, text } }, written }, or nil and a message.
local scaffold = require "dp.scaffold"

function M.init_system(opts)
  opts.scripts_dir = configured().scripts_dir
  local ok, res = pcall(scaffold.init_system, opts)
  if not ok then return nil, tostring(res) end
  res.meta = nil
  return res
end

function M.init_connector(opts)
  opts.scripts_dir = configured().scripts_dir
  local ok, res = pcall(scaffold.init_connector, opts)
  if not ok then return nil, tostring(res) end
  return res
end

---------------------------------------------------------------------------------------------
-- Gold (issue #6, docs/gold.md): the C driver (core/goldrun.c) calls these.
local gold = require "dp.gold"
local gold_loader -- one per Lua state: a long-lived engine reloads changed scripts (hot reload)

-- Names of the gold models to run, in order: the targets and their upstream models, or (system
-- given) the models that depend on the system's entities.
function M.gold_plan(meta, targets, system)
  if system then return gold.plan_for_system(meta, system) end
  return gold.plan(meta, targets)
end

-- The model as C reads it: { system = "gold", name, columns, primary_key, materialization }.
function M.gold_model(meta, name)
  local g = metadata.find_gold(meta, name)
  if not g then error("no gold model named " .. quote(name), 0) end
  return { system = "gold", name = g.name, columns = g.columns, primary_key = g.primary_key,
    materialization = g.materialization, depends_on = g.depends_on }
end

-- serve, before it takes a new version: every gold model's script compiles and has the right
-- shape (an SQL model's refs match its depends_on). Returns nil, or a list of errors.
function M.check_gold_scripts(meta)
  local errs = {}
  for _, g in ipairs(meta.gold or {}) do
    local path = configured().scripts_dir .. "/gold/" .. g.script
    local script, err = gold.compile(path)
    if script and script.style == "sql" then
      local _, rerr = gold.render_sql(g, script)
      err = rerr
    end
    if err then errs[#errs + 1] = "gold model " .. quote(g.name) .. ": " .. err end
  end
  return #errs > 0 and errs or nil
end

-- Runs the model's script into builder; returns the row count or raises.
function M.gold_build(meta, name, builder, run_id, run_ts, pg_url, log)
  local g = metadata.find_gold(meta, name)
  gold_loader = gold_loader or gold.loader { scripts_dir = configured().scripts_dir }
  local script, err = gold_loader:get(g)
  if not script then error(err, 0) end
  if err then log("warn", err .. " (using the previous version)") end
  return gold.build(g, script, builder, {
    run_id = run_id, run_ts = run_ts, log = log,
    open_reader = function() return require("dp.core").pg_connect(pg_url) end,
  })
end

return M
