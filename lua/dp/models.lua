-- dp.models: the typed metadata models (design section 3), written with dp.schema.
-- Systems and entities get one model per connector type: models.system_model(connector) adds
-- the connector's system_schema fields to the base System; models.entity_model(connector)
-- validates an entity's `source` with the connector's entity_schema.
local schema = require "dp.schema"

local M = {}
local quote, hint = schema.quote, schema.hint

M.COLUMN_TYPES = { "string", "text", "integer", "bigint", "decimal", "double", "boolean", "date",
  "timestamp", "json", "uuid" }
M.PG_IDENTIFIER_MAX = 63
-- core/gold.c builds a table model as gold."<name>__build" and swaps it in.
M.GOLD_BUILD_SUFFIX = "__build"
-- PostgreSQL's system columns: every table has them, so no column may take their names.
M.PG_SYSTEM_COLUMNS = { "oid", "tableoid", "xmin", "cmin", "xmax", "cmax", "ctid" }

---------------------------------------------------------------------------------------------
-- Validators (true | nil, err)

-- Names of systems, entities, columns and gold models become SQL identifiers and MongoDB
-- collection names: silver."system__entity", silver."system__entity__rejected".
function M.identifier(v)
  if v:sub(1, 4) == "_dp_" then
    return nil, quote(v) .. " is reserved: names starting with _dp_ are the engine's system columns"
  end
  if not v:match("^[a-z][a-z0-9_]*$") then
    return nil, quote(v) .. " is not a valid name: use lowercase letters, digits and _, starting with a letter"
  end
  if v:find("__", 1, true) then
    return nil, quote(v) .. ' must not contain "__" (it separates system and entity in table names)'
  end
  if #v > M.PG_IDENTIFIER_MAX then
    return nil, quote(v) .. " is " .. #v .. " bytes, over PostgreSQL's 63-byte identifier limit"
  end
  return true
end

-- A cron expression: checked by the engine's own matcher (core/cron.c through dp.core), so what
-- validates is exactly what serve runs: 5 fields, names, steps, and the @daily-style macros.
function M.cron(v)
  local ok_core, core = pcall(require, "dp.core")
  if not ok_core or type(core.cron_check) ~= "function" then return true end -- a script's instance
  local ok, err = core.cron_check(v)
  if ok then return true end
  return nil, err
end

-- Column names: identifiers that are not PostgreSQL system columns.
function M.column_name(v)
  local ok, err = M.identifier(v)
  if not ok then return nil, err end
  for _, sys in ipairs(M.PG_SYSTEM_COLUMNS) do
    if v == sys then
      return nil, quote(v) .. " is reserved: PostgreSQL gives every table a system column of that name ("
        .. table.concat(M.PG_SYSTEM_COLUMNS, ", ") .. "); use another name and set path to " .. quote(v)
    end
  end
  return true
end

-- Where the IANA time zone database is: $TZDIR, else /usr/share/zoneinfo.
function M.zoneinfo_dir()
  local d = os.getenv("TZDIR")
  if d == nil or d == "" then d = "/usr/share/zoneinfo" end
  return d
end

-- An IANA time zone name that names a zone file of the time zone database (a file starting
-- with the TZif magic: not a folder such as Europe, not zone.tab). UTC is always known.
function M.timezone(v)
  local bad = quote(v) .. " is not a time zone name (e.g. UTC, Europe/Berlin)"
  for seg in (v .. "/"):gmatch("([^/]*)/") do
    if not seg:match("^[%a][%w_+%-]*$") then return nil, bad end -- also refuses "", ".", ".."
  end
  if v == "UTC" then return true end
  local dir = M.zoneinfo_dir()
  local f = io.open(dir .. "/" .. v, "rb")
  local magic = f and f:read(4)
  if f then f:close() end
  if magic == "TZif" then return true end
  local probe = io.open(dir .. "/UTC", "rb")
  if probe then probe:close() else
    return nil, quote(v) .. " cannot be checked: no time zone database in " .. dir
      .. " (install tzdata, or set TZDIR)"
  end
  return nil, quote(v) .. " is not a time zone of the IANA time zone database: give a name such as UTC"
    .. " or Europe/Berlin"
end

-- A glob matched against file names in one folder.
function M.file_glob(v)
  if v:find("/", 1, true) then return nil, quote(v) .. ' must be a file name pattern, without "/"' end
  return true
end

-- Path of a gold script relative to the gold/ folder.
function M.script_path(v)
  if #v > 255 then return nil, quote(v) .. " is " .. #v .. " bytes: a script path has at most 255" end
  if v:sub(1, 1) == "/" or not v:match("^[%w_%-%./]+%.lua$") then
    return nil, quote(v) .. " is not a script path: give a .lua file relative to gold/, e.g. daily_spend.lua"
  end
  for seg in (v .. "/"):gmatch("([^/]*)/") do
    if seg == "" or seg == "." or seg == ".." then
      return nil, quote(v) .. " must stay inside gold/ (no empty, . or .. segments)"
    end
  end
  return true
end

-- A source path: dot-separated keys (merchant.name).
function M.source_path(v)
  for seg in (v .. "."):gmatch("([^.]*)%.") do
    if seg == "" then return nil, quote(v) .. " is not a valid path: use dot-separated keys, e.g. merchant.name" end
  end
  return true
end

local function reference(v)
  if v:match("^[a-z][a-z0-9_]*$") or v:match("^[a-z][a-z0-9_]*%.[a-z][a-z0-9_]*$") then return true end
  return nil, quote(v) .. " is not a reference: give system.entity or a gold model name"
end

local function connector_type(v)
  if not v:match("^[a-z][a-z0-9_]*$") then
    return nil, quote(v) .. " is not a connector type: use lowercase letters, digits and _"
  end
  if #v > M.PG_IDENTIFIER_MAX then
    return nil, quote(v) .. " is " .. #v .. " bytes: a connector type has at most 63"
  end
  return true
end
M.connector_type = connector_type

---------------------------------------------------------------------------------------------
-- Typedefs

M.typedefs = {
  name = { type = "string", required = true, custom_validator = M.identifier },
  description = { type = "string", multiline = true },
  enabled = { type = "boolean", default = true },
}
local T = M.typedefs

-- A copy of a field definition with its description (typedefs are shared by several models,
-- each field says what it means where it is used: `connectors show`, docs/metadata.md).
function M.described(def, text)
  local out = {}
  for k, v in pairs(def) do out[k] = v end
  out.description = text
  return out
end
local described = M.described

M.SecretRef = schema.define {
  type = "record",
  fields = {
    { secret = { type = "string", required = true, description = "name of a secret in the store (dp-engine secrets set NAME)",
      custom_validator = function(v)
      -- the engine's rule for secret names (core/secrets.c): so that a name that validates can
      -- be looked up (it is a file name under DP_SECRETS_DIR too: never "." or "..")
      if v:match("^[A-Za-z0-9_.-]+$") and v ~= "." and v ~= ".." and #v <= 128 then return true end
      return nil, quote(v) .. " is not a secret name: use 1 to 128 letters, digits, _, . and -"
    end } },
  },
}

-- A field that holds either a plain string or a { "secret": "name" } reference. attrs: the
-- string's own attributes (len_min, match, ...) plus required / default / description, which go
-- on the union.
function M.string_or_secret(attrs)
  local str, union = { type = "string", description = "the value itself" }, { type = "union" }
  for k, v in pairs(attrs or {}) do
    if k == "required" or k == "default" or k == "description" then union[k] = v else str[k] = v end
  end
  union.alternatives = { str, M.SecretRef }
  return schema.define(union)
end

M.Trigger = schema.define {
  type = "union",
  discriminator = "type",
  choices = {
    schedule = { type = "record", fields = {
      { cron = { type = "string", required = true, custom_validator = M.cron,
        description = "5-field cron expression or a macro such as @daily (docs/triggers.md)" } },
      { timezone = { type = "string", default = "UTC", custom_validator = M.timezone,
        description = "IANA time zone the cron expression is read in" } },
      -- serve: run once at start when the last success is older than the previous slot (absent: true)
      { catch_up = { type = "boolean",
        description = "run a missed slot once when serve starts (absent: true)" } },
    } },
    file = { type = "record", fields = {
      { path = { type = "string", required = true, len_min = 1, description = "folder to watch" } },
      { pattern = { type = "string", default = "*", len_min = 1, custom_validator = M.file_glob,
        description = "glob of the file names that start a run" } },
    } },
    after = { type = "record", fields = {
      { upstream = { type = "string", required = true, custom_validator = M.identifier,
        description = "system or gold model whose successful run starts this one" } },
    } },
    callback = { type = "record", fields = {
      { name = { type = "string", custom_validator = M.identifier,
        description = "name of the webhook (POST /api/v1/hooks/{system}/{name})" } },
    } },
  },
}

-- Callback triggers are addressed by name (POST /api/v1/hooks/{system}/{name}): one name, one
-- trigger.
local function unique_callbacks(list)
  local seen = {}
  for i, t in ipairs(list) do
    if t.type == "callback" then
      local n = t.name or ""
      if seen[n] then
        return nil, "two callback triggers named " .. quote(n) .. " ([" .. seen[n] .. "] and [" .. (i - 1)
          .. "]): a callback is addressed by its name"
      end
      seen[n] = i - 1
    end
  end
  return true
end

local triggers = { type = "list", elements = M.Trigger, default = {}, custom_validator = unique_callbacks,
  description = "when to run it; acted on by serve (docs/triggers.md)" }

local function only_when(col, field, col_type)
  if col[field] ~= nil and col.type ~= col_type then
    return { field, "only allowed when type is " .. quote(col_type) .. ", not " .. quote(col.type) }
  end
end

M.Column = schema.define {
  type = "record",
  fields = {
    { name = { type = "string", required = true, custom_validator = M.column_name,
      description = "silver column name" } },
    { type = { type = "string", required = true, one_of = M.COLUMN_TYPES,
      description = "the typed value kept in silver and hashed (docs/data-types.md)" } },
    { length = { type = "integer", between = { 1, 10485760 },
      description = "string only: maximum characters (none: unbounded varchar)" } },
    { precision = { type = "integer", between = { 1, 1000 },
      description = "decimal only, required: total digits" } },
    { scale = { type = "integer", between = { 0, 1000 },
      default = function(col) if col.type == "decimal" then return 0 end end,
      description = "decimal only: digits after the point (default 0)" } },
    { nullable = { type = "boolean", default = true,
      description = "false: a missing or null value is a type error" } },
    { path = { type = "string", custom_validator = M.source_path,
      default = function(col) return col.name end,
      description = "where the value is in the source record, dotted for nested (counterparty.iban); default the name" } },
    { history = { type = "string", one_of = { "scd2", "scd1" }, default = "scd2",
      description = "scd2: a change starts a new version; scd1: a change overwrites every version" } },
    { description = described(T.description, "for people") },
  },
  checks = {
    function(col)
      local errs = {}
      errs[#errs + 1] = only_when(col, "length", "string")
      errs[#errs + 1] = only_when(col, "precision", "decimal")
      errs[#errs + 1] = only_when(col, "scale", "decimal")
      if col.type == "decimal" then
        if col.precision == nil then
          errs[#errs + 1] = { "precision", 'required when type is "decimal"' }
        elseif col.scale > col.precision then
          errs[#errs + 1] = { "scale", col.scale .. " is greater than precision " .. col.precision }
        end
      end
      if #errs > 0 then return nil, errs end
      return true
    end,
  },
}

-- A delete marker's value is cast with its column's type at run time (docs/data-types.md), the
-- way a source value is; one that cannot be cast would fail every silver run, and one that casts
-- to NULL could never match. Checked here with the same cast (dp.core.cast). Returns nil or
-- { "delete_marker.value", message }.
function M.check_marker_value(col, value)
  local ok_core, core = pcall(require, "dp.core")
  if not ok_core or type(core.cast) ~= "function" then return nil end
  local ok, cast_ok, canonical = pcall(core.cast, col, schema.encode(value))
  if not ok then return nil end -- the column itself is invalid: reported at its own path
  local what = schema.describe(value) .. " can never match column " .. quote(col.name) .. " ("
    .. col.type .. ")"
  if not cast_ok then
    local why = tostring(canonical):gsub("^column [^:]*: ", "")
    return { "delete_marker.value", what .. ": " .. why }
  end
  if canonical == nil then return { "delete_marker.value", what .. ": it reads as NULL" } end
end

-- Shared checks of entities and gold models: unique column names; primary key (and cursor)
-- name existing, non-json columns.
local function check_columns(rec)
  local errs, index, names = {}, {}, {}
  for i, col in ipairs(rec.columns) do
    if index[col.name] then
      errs[#errs + 1] = { "columns[" .. (i - 1) .. "].name",
        "duplicate column " .. quote(col.name) .. " (also columns[" .. (index[col.name] - 1) .. "])" }
    else
      index[col.name] = i
      names[#names + 1] = col.name
    end
  end
  for i, key in ipairs(rec.primary_key) do
    local col = rec.columns[index[key] or 0]
    if not col then
      errs[#errs + 1] = { "primary_key[" .. (i - 1) .. "]", quote(key) .. " is not a column" .. hint(key, names) }
    elseif col.type == "json" then
      errs[#errs + 1] = { "primary_key[" .. (i - 1) .. "]",
        "column " .. quote(key) .. " is json: a json column cannot be part of the primary key" }
    end
  end
  if rec.cursor ~= nil and not index[rec.cursor] then
    errs[#errs + 1] = { "cursor", quote(rec.cursor) .. " is not a column" .. hint(rec.cursor, names) }
  end
  local marker = rec.delete_marker
  if marker ~= nil then
    if not index[marker.column] then
      errs[#errs + 1] = { "delete_marker.column", quote(marker.column) .. " is not a column" .. hint(marker.column, names) }
    else
      errs[#errs + 1] = M.check_marker_value(rec.columns[index[marker.column]], marker.value)
    end
    if #rec.primary_key == 0 then
      errs[#errs + 1] = { "delete_marker", "needs a primary key: only a keyed row can be marked deleted" }
    end
  end
  if rec.valid_from ~= nil then
    local col = rec.columns[index[rec.valid_from] or 0]
    if not col then
      errs[#errs + 1] = { "valid_from", quote(rec.valid_from) .. " is not a column" .. hint(rec.valid_from, names) }
    elseif col.type ~= "timestamp" and col.type ~= "date" then
      errs[#errs + 1] = { "valid_from", "column " .. quote(rec.valid_from) .. " is " .. col.type
        .. ": valid_from must name a timestamp or date column" }
    end
  end
  if #errs > 0 then return nil, errs end
  return true
end

local function check_table_name(e)
  local t = e.system .. "__" .. e.name .. "__rejected"
  if #t > M.PG_IDENTIFIER_MAX then
    return nil, { { "name", string.format("silver table %s would be %d bytes, over PostgreSQL's"
      .. " 63-byte limit: shorten the system name %s or the entity name %s",
      quote(t), #t, quote(e.system), quote(e.name)) } }
  end
  return true
end

-- How long each layer keeps what it no longer needs (docs/lifecycle.md): acted on by
-- `dp-engine retention` and serve's daily job.
local days = function(what)
  return { type = "integer", between = { 1, 36500 }, description = what }
end
local retention = { type = "record", description = "what `dp-engine retention` removes, and when",
  fields = {
    { raw_days = days("raw files older than this many days are compressed (gzip)") },
    { raw_delete_days = days("raw files older than this many days are deleted (except those still needed)") },
    { bronze_deleted_days = days("bronze documents deleted this many days ago are purged") },
    { silver_history_days = days("closed silver versions that ended this many days ago are dropped") },
  },
  checks = { function(r)
    if r.raw_days and r.raw_delete_days and r.raw_delete_days <= r.raw_days then
      return nil, { { "raw_delete_days", "must be more than raw_days (" .. r.raw_days .. "), got "
        .. r.raw_delete_days } }
    end
    return true
  end },
}

local columns = { type = "list", elements = M.Column, required = true, len_min = 1,
  description = "the columns kept in silver: at least one, names unique" }
local primary_key = { type = "list", elements = { type = "string", description = "a column name" }, default = {},
  unique = true, description = "key columns, in this order (several: a composite key); none: append-only; no json columns" }

M.SYSTEM_FIELDS = {
  { name = described(T.name, "unique system name; used in table and collection names") },
  { description = described(T.description, "for people") },
  { type = { type = "string", required = true, custom_validator = connector_type,
    description = "connector type: picks connectors/<type>.lua and with it the model of the other fields" } },
  { enabled = described(T.enabled, "false: run refuses the system and runs do not load its connector") },
  { triggers = triggers },
}

local function entity_fields(source)
  source.description = source.description or "connector options, validated by the connector's entity_schema"
  return {
    { name = described(T.name, "unique within its system") },
    { system = described(T.name, "name of a system in systems.json") },
    { description = described(T.description, "for people") },
    { enabled = described(T.enabled, "false: left out of runs (counted as skipped); --entity can still name it") },
    { load_type = { type = "string", one_of = { "full", "delta" }, default = "full",
      description = "full: every run reads everything; delta: only what is new since the cursor" } },
    { primary_key = primary_key },
    { cursor = { type = "string", description = "column that orders a delta source (rest: where the new cursor is read)" } },
    { delete_detection = { type = "string", one_of = { "close", "tombstone", "ignore" }, default = "close",
      description = "full loads: what happens to keys missing from a run, and what a delete marker does" } },
    { delete_marker = { type = "record",
      description = "a record whose column holds this value means deleted (delta sources); needs a primary key",
      fields = {
      { column = { type = "string", required = true, description = "the column to look at" } },
      { value = { type = "any", required = true, description = "the value that means deleted, cast with the column's type",
        custom_validator = function(v)
        local t = type(v)
        if t == "string" or t == "number" or t == "boolean" then return true end
        return nil, "must be a string, number or boolean"
      end } },
    } } },
    { valid_from = { type = "string",
      description = "timestamp or date column: a new version starts at this event time instead of the run's" } },
    { on_type_error = { type = "string", one_of = { "reject", "fail" }, default = "reject",
      description = "what a value that cannot be cast does: reject the row, or fail the entity" } },
    { retention = retention },
    { raw = { type = "record", description = "how the raw files of the entity are written",
      fields = {
        { compression = { type = "string", one_of = { "none", "gzip" }, default = "none",
          description = "gzip: each new raw file is written compressed (<run_id>.jsonl.gz)" } },
      } } },
    { source = source },
    { columns = columns },
  }
end

-- The base models: System without connector fields, Entity with `source` as any object.
M.System = schema.define { type = "record", fields = M.SYSTEM_FIELDS }
M.Entity = schema.define {
  type = "record",
  fields = entity_fields({ type = "map", values = { type = "any" }, default = {} }),
  checks = { check_columns, check_table_name },
}

M.GoldModel = schema.define {
  type = "record",
  fields = {
    { name = described(T.name, "unique gold model name (the table gold.<name>); shares one namespace with systems") },
    { description = described(T.description, "for people") },
    { script = { type = "string", custom_validator = M.script_path,
      default = function(m) return m.name .. ".lua" end,
      description = "the model's script, relative to gold/ (default <name>.lua)" } },
    { depends_on = { type = "list", elements = { type = "string", custom_validator = reference,
      description = "system.entity or a gold model name" },
      default = {}, unique = true, description = "the entities and gold models it reads" } },
    { materialization = { type = "string", one_of = { "table", "incremental" }, default = "table",
      description = "table: rebuilt and swapped in each run; incremental: merged by primary key" } },
    { primary_key = primary_key },
    { columns = columns },
    { triggers = triggers },
  },
  checks = {
    function(m)
      if m.materialization == "incremental" and #m.primary_key == 0 then
        return nil, { { "primary_key", 'required when materialization is "incremental"' } }
      end
      return true
    end,
    function(m) -- the model is built as gold."<name>__build" (with an index "<name>__build_pkey")
      local longest = m.name .. M.GOLD_BUILD_SUFFIX .. (#m.primary_key > 0 and "_pkey" or "")
      if #longest > M.PG_IDENTIFIER_MAX then
        return nil, { { "name", string.format("%s is %d bytes: the model's build %s %s would be %d bytes, over"
          .. " PostgreSQL's 63-byte limit", quote(m.name), #m.name, #m.primary_key > 0 and "index" or "table",
          quote(longest), #longest) } }
      end
      return true
    end,
    check_columns,
  },
}

-- The System model of a connector type: base fields + connector.system_schema (a record
-- definition). Raises when a connector field clashes with a base field.
function M.system_model(connector)
  local fields, base = {}, {}
  for i, entry in ipairs(M.SYSTEM_FIELDS) do
    fields[i] = entry
    base[next(entry)] = true
  end
  local extra = connector.system_schema or {}
  for _, entry in ipairs(extra.fields or {}) do
    local name = next(entry)
    if base[name] then error("system_schema field " .. quote(name) .. " clashes with the base System field", 0) end
    fields[#fields + 1] = entry
  end
  local checks = {}
  for _, list in ipairs({ extra.entity_checks or {}, extra.checks or {} }) do
    for _, f in ipairs(list) do checks[#checks + 1] = f end
  end
  return schema.define { type = "record", fields = fields, checks = checks }
end

-- The Entity model of a connector type: `source` is validated by connector.entity_schema.
function M.entity_model(connector)
  local source = { type = "record", fields = {}, default = {} }
  for k, v in pairs(connector.entity_schema or {}) do
    if k ~= "type" then source[k] = v end
  end
  return schema.define {
    type = "record", fields = entity_fields(source), checks = { check_columns, check_table_name },
  }
end

return M
