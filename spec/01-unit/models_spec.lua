-- The metadata models (design section 3): each rule, accepted and rejected with its message.
local schema = require "dp.schema"
local models = require "dp.models"

local function ok(model, value)
  local out, errs = schema.validate(model, value, "x")
  assert.is_nil(errs, errs and table.concat(errs, "\n"))
  return out
end

local function errors(model, value)
  local out, errs = schema.validate(model, value, "x")
  assert.is_nil(out)
  return errs
end

local function entity(t)
  local e = { name = "transactions", system = "bank", columns = { { name = "id", type = "bigint" } } }
  for k, v in pairs(t or {}) do e[k] = v end
  return e
end

describe("models", function()
  describe("identifiers", function()
    it("accepts lowercase names with digits and single underscores", function()
      assert.is_true(models.identifier("bank_2"))
    end)

    it("rejects names that are not safe SQL and MongoDB identifiers", function()
      assert.same({ 'x.name: "Bank" is not a valid name: use lowercase letters, digits and _, starting with a letter' },
        errors(models.System, { name = "Bank", type = "file" }))
      assert.same({ 'x.name: "my__bank" must not contain "__" (it separates system and entity in table names)' },
        errors(models.System, { name = "my__bank", type = "file" }))
      assert.same({ 'x.columns[0].name: "_dp_run_id" is reserved: names starting with _dp_ are the engine\'s system columns' },
        errors(models.Entity, entity { columns = { { name = "_dp_run_id", type = "uuid" } } }))
      local long = string.rep("a", 64)
      assert.same({ 'x.name: "' .. long .. '" is 64 bytes, over PostgreSQL\'s 63-byte identifier limit' },
        errors(models.System, { name = long, type = "file" }))
    end)

    it("requires system__entity__rejected to fit 63 bytes, naming both", function()
      local e = errors(models.Entity, entity { system = string.rep("s", 30), name = string.rep("e", 30) })
      assert.equal(1, #e)
      assert.matches('^x%.name: silver table "s+__e+__rejected" would be 72 bytes, over PostgreSQL\'s 63%-byte limit: '
        .. 'shorten the system name "s+" or the entity name "e+"$', e[1])
      ok(models.Entity, entity { system = string.rep("s", 25), name = string.rep("e", 26) }) -- 63 bytes
    end)
  end)

  describe("SecretRef", function()
    local field = models.string_or_secret { required = true, len_min = 1 }

    it("accepts a plain string or { secret = name }", function()
      assert.equal("abc", ok(field, "abc"))
      assert.same({ secret = "github.token-1" }, ok(field, { secret = "github.token-1" }))
    end)

    it("rejects other keys, bad names and other kinds", function()
      assert.same({ 'x.name: unknown field' }, errors(field, { secret = "a", name = "b" }))
      assert.same({ 'x.secret: "a b" is not a secret name: use 1 to 128 letters, digits, _, . and -' }, errors(field, { secret = "a b" }))
      assert.same({ "x: expected a string or an object, got 5" }, errors(field, 5))
      assert.same({ "x: must have at least 1 character, got 0" }, errors(field, ""))
      assert.same({ "x: required field missing" }, errors(field, nil))
    end)
  end)

  describe("Trigger", function()
    it("schedule: a 5-field cron with a time zone defaulting to UTC", function()
      assert.same({ type = "schedule", cron = "*/15 6-22 * * mon-fri", timezone = "UTC" },
        ok(models.Trigger, { type = "schedule", cron = "*/15 6-22 * * mon-fri" }))
      assert.same({ type = "schedule", cron = "0 7 1 jan,jul *", timezone = "Europe/Berlin" },
        ok(models.Trigger, { type = "schedule", cron = "0 7 1 jan,jul *", timezone = "Europe/Berlin" }))
    end)

    it("schedule: the engine's matcher decides (macros too), and catch_up is a boolean", function()
      assert.same({ type = "schedule", cron = "@daily", timezone = "UTC", catch_up = false },
        ok(models.Trigger, { type = "schedule", cron = "@daily", catch_up = false }))
      assert.same({ 'x.cron: "@reboot" is not a cron macro (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)' },
        errors(models.Trigger, { type = "schedule", cron = "@reboot" }))
      assert.equal(1, #errors(models.Trigger, { type = "schedule", cron = "0 0 * * *", catch_up = "no" }))
    end)

    it("schedule: rejects malformed cron expressions and time zones", function()
      assert.same({ 'x.cron: "0 7 * *" is not a cron expression: expected 5 fields (minute hour day-of-month month day-of-week), got 4' },
        errors(models.Trigger, { type = "schedule", cron = "0 7 * *" }))
      assert.same({ 'x.cron: "61 * * * *" is not a valid cron expression: minute 61 is out of range 0-59' },
        errors(models.Trigger, { type = "schedule", cron = "61 * * * *" }))
      assert.same({ 'x.cron: "0 0 * * fry" is not a valid cron expression: day of week "fry" is not a number or a name' },
        errors(models.Trigger, { type = "schedule", cron = "0 0 * * fry" }))
      assert.same({ 'x.cron: "*/0 * * * *" is not a valid cron expression: minute step "0" is not a positive number' },
        errors(models.Trigger, { type = "schedule", cron = "*/0 * * * *" }))
      assert.same({ 'x.cron: "0 9-5 * * *" is not a valid cron expression: hour range 9-5 is reversed' },
        errors(models.Trigger, { type = "schedule", cron = "0 9-5 * * *" }))
      assert.same({ 'x.timezone: "Europe/ Berlin" is not a time zone name (e.g. UTC, Europe/Berlin)' },
        errors(models.Trigger, { type = "schedule", cron = "0 0 * * *", timezone = "Europe/ Berlin" }))
    end)

    it("file: a path and a file name pattern (default *)", function()
      assert.same({ type = "file", path = "inbox/bank", pattern = "*" }, ok(models.Trigger, { type = "file", path = "inbox/bank" }))
      assert.same({ 'x.pattern: "a/*.json" must be a file name pattern, without "/"' },
        errors(models.Trigger, { type = "file", path = "in", pattern = "a/*.json" }))
    end)

    it("after: an upstream name", function()
      assert.same({ type = "after", upstream = "bank" }, ok(models.Trigger, { type = "after", upstream = "bank" }))
      assert.same({ "x.upstream: required field missing" }, errors(models.Trigger, { type = "after" }))
    end)

    it("callback: no other fields than an optional name", function()
      assert.same({ type = "callback" }, ok(models.Trigger, { type = "callback" }))
      assert.same({ type = "callback", name = "bank_ready" }, ok(models.Trigger, { type = "callback", name = "bank_ready" }))
      assert.same({ 'x.token: unknown field' }, errors(models.Trigger, { type = "callback", token = "t" }))
    end)

    it("an unknown trigger type lists the known ones", function()
      assert.same({ 'x.type: "cron" is not one of after, callback, file, schedule' }, errors(models.Trigger, { type = "cron" }))
    end)
  end)

  describe("System (base)", function()
    it("applies defaults", function()
      assert.same({ name = "bank", type = "file", enabled = true, triggers = {} }, ok(models.System, { name = "bank", type = "file" }))
    end)

    it("requires name and type, and a safe connector type name", function()
      assert.same({ "x.name: required field missing", "x.type: required field missing" }, errors(models.System, {}))
      assert.same({ 'x.type: "../etc" is not a connector type: use lowercase letters, digits and _' },
        errors(models.System, { name = "a", type = "../etc" }))
    end)

    it("gets the connector's fields with system_model", function()
      local model = models.system_model { system_schema = { fields = { { inbox = { type = "string", required = true } } } } }
      assert.same({ name = "bank", type = "file", inbox = "in", enabled = true, triggers = {} },
        ok(model, { name = "bank", type = "file", inbox = "in" }))
      assert.same({ "x.inbox: required field missing" }, errors(model, { name = "bank", type = "file" }))
      assert.same({ 'x.inbx: unknown field (did you mean "inbox"?)', }, errors(model, { name = "bank", type = "file", inbox = "i", inbx = "i" }))
    end)

    it("refuses a connector field that clashes with a base field", function()
      assert.has_error(function()
        models.system_model { system_schema = { fields = { { name = { type = "string" } } } } }
      end, 'system_schema field "name" clashes with the base System field')
    end)
  end)

  describe("Column", function()
    it("applies defaults: nullable, path = name, history scd2", function()
      assert.same({ name = "booked_on", type = "date", nullable = true, path = "booked_on", history = "scd2" },
        ok(models.Column, { name = "booked_on", type = "date" }))
    end)

    it("rejects an unknown type with the list of types", function()
      assert.same({ 'x.type: "strng" is not one of string, text, integer, bigint, decimal, double, boolean, date, timestamp, json, uuid' },
        errors(models.Column, { name = "a", type = "strng" }))
    end)

    it("length: 1..10485760, only for string", function()
      assert.equal(64, ok(models.Column, { name = "a", type = "string", length = 64 }).length)
      assert.is_nil(ok(models.Column, { name = "a", type = "string" }).length)
      assert.same({ "x.length: 0 is not between 1 and 10485760" }, errors(models.Column, { name = "a", type = "string", length = 0 }))
      assert.same({ 'x.length: only allowed when type is "string", not "text"' }, errors(models.Column, { name = "a", type = "text", length = 5 }))
    end)

    it("decimal: precision required (1..1000), scale 0..precision defaulting to 0", function()
      local c = ok(models.Column, { name = "amount", type = "decimal", precision = 12 })
      assert.equal(12, c.precision)
      assert.equal(0, c.scale)
      assert.same({ 'x.precision: required when type is "decimal"' }, errors(models.Column, { name = "a", type = "decimal" }))
      assert.same({ "x.scale: 13 is greater than precision 12" }, errors(models.Column, { name = "a", type = "decimal", precision = 12, scale = 13 }))
      assert.same({ "x.precision: 1001 is not between 1 and 1000" }, errors(models.Column, { name = "a", type = "decimal", precision = 1001 }))
      assert.same({ 'x.precision: only allowed when type is "decimal", not "integer"', 'x.scale: only allowed when type is "decimal", not "integer"' },
        errors(models.Column, { name = "a", type = "integer", precision = 5, scale = 1 }))
      assert.is_nil(ok(models.Column, { name = "a", type = "integer" }).scale)
    end)

    it("path: dotted keys", function()
      assert.equal("merchant.name", ok(models.Column, { name = "m", type = "text", path = "merchant.name" }).path)
      assert.same({ 'x.path: "merchant..name" is not a valid path: use dot-separated keys, e.g. merchant.name' },
        errors(models.Column, { name = "m", type = "text", path = "merchant..name" }))
    end)

    it("history: scd2 or scd1", function()
      assert.equal("scd1", ok(models.Column, { name = "a", type = "text", history = "scd1" }).history)
      assert.same({ 'x.history: "scd3" is not one of scd2, scd1' }, errors(models.Column, { name = "a", type = "text", history = "scd3" }))
    end)
  end)

  describe("Entity", function()
    it("applies defaults", function()
      local e = ok(models.Entity, entity())
      assert.same({
        name = "transactions", system = "bank", enabled = true, load_type = "full", primary_key = {},
        delete_detection = "close", on_type_error = "reject", source = {},
        columns = { { name = "id", type = "bigint", nullable = true, path = "id", history = "scd2" } },
      }, e)
    end)

    it("checks its enums and retention", function()
      assert.same({
        'x.load_type: "incremental" is not one of full, delta',
        'x.delete_detection: "drop" is not one of close, tombstone, ignore',
        'x.on_type_error: "skip" is not one of reject, fail',
        "x.retention.raw_days: 0 is not between 1 and 36500",
      }, errors(models.Entity, entity { load_type = "incremental", delete_detection = "drop", on_type_error = "skip",
        retention = { raw_days = 0 } }))
      assert.same({ raw_days = 30 }, ok(models.Entity, entity { retention = { raw_days = 30 } }).retention)
    end)

    it("checks the lifecycle settings: retention days and raw compression (docs/lifecycle.md)", function()
      local r = { raw_days = 30, raw_delete_days = 365, bronze_deleted_days = 90, silver_history_days = 730 }
      local e = ok(models.Entity, entity { retention = r, raw = { compression = "gzip" } })
      assert.same(r, e.retention)
      assert.same({ compression = "gzip" }, e.raw)
      assert.same({ compression = "none" }, ok(models.Entity, entity { raw = {} }).raw)
      assert.same({
        "x.retention.silver_history_days: 0 is not between 1 and 36500",
        "x.raw.compression: \"zip\" is not one of none, gzip",
      }, errors(models.Entity, entity { raw = { compression = "zip" }, retention = { silver_history_days = 0 } }))
      assert.same({ "x.retention.raw_delete_days: must be more than raw_days (30), got 7" },
        errors(models.Entity, entity { retention = { raw_days = 30, raw_delete_days = 7 } }))
      assert.same({ "x.retention.keep: unknown field" },
        errors(models.Entity, entity { retention = { keep = 3 } }))
    end)

    it("needs at least one column", function()
      assert.same({ "x.columns: must have at least 1 item, got 0" }, errors(models.Entity, entity { columns = {} }))
      assert.same({ "x.columns: required field missing" }, errors(models.Entity, { name = "a", system = "b" }))
    end)

    it("primary key and cursor name existing columns; column names are unique; no json keys", function()
      local cols = { { name = "id", type = "bigint" }, { name = "payload", type = "json" }, { name = "id", type = "text" },
        { name = "updated_at", type = "timestamp" } }
      assert.same({
        'x.columns[2].name: duplicate column "id" (also columns[0])',
        'x.primary_key[1]: "idd" is not a column (did you mean "id"?)',
        'x.primary_key[2]: column "payload" is json: a json column cannot be part of the primary key',
        'x.cursor: "updated" is not a column',
      }, errors(models.Entity, entity { columns = cols, primary_key = { "id", "idd", "payload" }, cursor = "updated" }))
      assert.same({ 'x.primary_key[1]: duplicate value "id" (same as [0])' },
        errors(models.Entity, entity { primary_key = { "id", "id" } }))
    end)

    it("gets the connector's source options with entity_model", function()
      local model = models.entity_model { entity_schema = { fields = {
        { pattern = { type = "string", required = true } },
        { files = { type = "string", one_of = { "all", "latest" }, default = "all" } },
      } } }
      assert.same({ pattern = "*.jsonl", files = "all" }, ok(model, entity { source = { pattern = "*.jsonl" } }).source)
      assert.same({ "x.source.pattern: required field missing" }, errors(model, entity()))
      assert.same({ 'x.source.patern: unknown field (did you mean "pattern"?)', }, errors(model, entity { source = { pattern = "a", patern = "b" } }))
    end)
  end)

  describe("GoldModel", function()
    local function gold(t)
      local g = { name = "monthly_spend", depends_on = { "bank.transactions" }, columns = { { name = "month", type = "date" } } }
      for k, v in pairs(t or {}) do g[k] = v end
      return g
    end

    it("applies defaults: script <name>.lua, table materialization", function()
      local g = ok(models.GoldModel, gold())
      assert.equal("monthly_spend.lua", g.script)
      assert.equal("table", g.materialization)
      assert.same({}, g.primary_key)
      assert.same({}, g.triggers)
    end)

    it("incremental requires a primary key", function()
      assert.same({ 'x.primary_key: required when materialization is "incremental"' },
        errors(models.GoldModel, gold { materialization = "incremental" }))
      ok(models.GoldModel, gold { materialization = "incremental", primary_key = { "month" } })
    end)

    it("script stays under gold/; depends_on are references", function()
      assert.same({ 'x.script: "../x.lua" must stay inside gold/ (no empty, . or .. segments)' },
        errors(models.GoldModel, gold { script = "../x.lua" }))
      assert.same({ 'x.script: "/etc/x.lua" is not a script path: give a .lua file relative to gold/, e.g. daily_spend.lua' },
        errors(models.GoldModel, gold { script = "/etc/x.lua" }))
      assert.same({ 'x.depends_on[0]: "Bank.tx" is not a reference: give system.entity or a gold model name' },
        errors(models.GoldModel, gold { depends_on = { "Bank.tx" } }))
    end)
  end)
  describe("hardening (issue 11)", function()
    it("refuses PostgreSQL's system column names for columns, suggesting a path", function()
      for _, n in ipairs({ "oid", "tableoid", "xmin", "cmin", "xmax", "cmax", "ctid" }) do
        assert.same({ "x.columns[0].name: " .. '"' .. n .. '" is reserved: PostgreSQL gives every table a system column'
          .. ' of that name (oid, tableoid, xmin, cmin, xmax, cmax, ctid); use another name and set path to "' .. n .. '"' },
          errors(models.Entity, entity { columns = { { name = n, type = "bigint" } } }))
      end
      -- as a path, and as a system or entity name, they are fine
      ok(models.Entity, entity { name = "ctid", columns = { { name = "row_ctid", type = "text", path = "ctid" } } })
    end)

    it("time zones must name a zone file of the time zone database", function()
      local function tz(name) return { type = "schedule", cron = "0 0 * * *", timezone = name } end
      for _, good in ipairs({ "UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5" }) do
        ok(models.Trigger, tz(good))
      end
      for _, bad in ipairs({ "Mars/Olympus", "Europe/Nowhere", "Europe" }) do
        assert.same({ 'x.timezone: "' .. bad .. '" is not a time zone of the IANA time zone database: give a name such as UTC or Europe/Berlin' },
          errors(models.Trigger, tz(bad)))
      end
      for _, bad in ipairs({ "../etc/passwd", "/etc/localtime", "Europe/../UTC", "Europe//Berlin", "", "zone.tab" }) do
        assert.same({ 'x.timezone: "' .. bad .. '" is not a time zone name (e.g. UTC, Europe/Berlin)' }, errors(models.Trigger, tz(bad)))
      end
    end)

    it("control characters: never NUL, tabs anywhere, line breaks only in descriptions", function()
      assert.same({ 'x.path: "in\\u0000box" holds a control character (U+0000)' },
        errors(models.Trigger, { type = "file", path = "in\0box" }))
      assert.same({ 'x.path: "in\\nbox" holds a control character (U+000A): this field must be a single line (tabs are allowed)' },
        errors(models.Trigger, { type = "file", path = "in\nbox" }))
      assert.same({ 'x.description: "a\\u0007" holds a control character (U+0007): only tabs and line breaks are allowed here' },
        errors(models.System, { name = "bank", type = "file", description = "a\7" }))
      ok(models.System, { name = "bank", type = "file", description = "two\nlines\twith a tab" })
      ok(models.Trigger, { type = "file", path = "a\tb" })
    end)

    it("a delete marker's value must be castable to its column's type (the silver cast rule)", function()
      local cols = { { name = "id", type = "bigint" }, { name = "gone", type = "boolean" }, { name = "at", type = "timestamp" } }
      local function marker(column, value)
        return entity { primary_key = { "id" }, columns = cols, delete_marker = { column = column, value = value } }
      end
      for _, v in ipairs({ true, 1, "yes", "F" }) do ok(models.Entity, marker("gone", v)) end
      assert.same({ 'x.delete_marker.value: "maybe" can never match column "gone" (boolean): "maybe" is not a boolean'
        .. " (true/false, yes/no, y/n, t/f, 1/0, on/off)" }, errors(models.Entity, marker("gone", "maybe")))
      assert.same({ 'x.delete_marker.value: 2 can never match column "gone" (boolean): 2 is not a boolean (only 0 and 1 are)' },
        errors(models.Entity, marker("gone", 2)))
      assert.same({ 'x.delete_marker.value: true can never match column "at" (timestamp): true (a boolean) is not a timestamp' },
        errors(models.Entity, marker("at", true)))
      assert.same({ 'x.delete_marker.value: "x" can never match column "id" (bigint): "x" is not an integer' },
        errors(models.Entity, marker("id", "x")))
      ok(models.Entity, marker("id", 9007199254740991))
    end)

    it("secret names follow the engine's rule, so that a valid reference can be looked up", function()
      local field = models.string_or_secret { required = true }
      for _, bad in ipairs({ ".", "..", string.rep("s", 129) }) do
        assert.same({ 'x.secret: ' .. schema.quote(bad) .. ' is not a secret name: use 1 to 128 letters, digits, _, . and -' },
          errors(field, { secret = bad }))
        -- the engine's lookup refuses the same names, with the same words
        assert.matches("is not a secret name: use 1 to 128 letters", select(2, require("dp.core").secret_get(bad)), 1, true)
      end
      ok(field, { secret = string.rep("s", 128) })
      assert.not_matches("is not a secret name", select(2, require("dp.core").secret_get(string.rep("s", 128))))
    end)

    it("callback triggers have unique names", function()
      assert.same({ 'x.triggers: two callback triggers named "ping" ([0] and [2]): a callback is addressed by its name' },
        errors(models.System, { name = "bank", type = "file", triggers = {
          { type = "callback", name = "ping" }, { type = "callback" }, { type = "callback", name = "ping" } } }))
    end)

    it("a gold model's name leaves room for its build table and index", function()
      local cols = { { name = "month", type = "date" } }
      ok(models.GoldModel, { name = string.rep("g", 56), columns = cols })
      assert.same({ 'x.name: "' .. string.rep("g", 57) .. '" is 57 bytes: the model\'s build table "' .. string.rep("g", 57)
        .. '__build" would be 64 bytes, over PostgreSQL\'s 63-byte limit' },
        errors(models.GoldModel, { name = string.rep("g", 57), columns = cols }))
      ok(models.GoldModel, { name = string.rep("g", 51), columns = cols, primary_key = { "month" } })
      assert.same({ 'x.name: "' .. string.rep("g", 52) .. '" is 52 bytes: the model\'s build index "' .. string.rep("g", 52)
        .. '__build_pkey" would be 64 bytes, over PostgreSQL\'s 63-byte limit' },
        errors(models.GoldModel, { name = string.rep("g", 52), columns = cols, primary_key = { "month" } }))
    end)
  end)
end)
