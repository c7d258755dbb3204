-- Tables follow metadata, against the real PostgreSQL: a widened column keeps every value and
-- hash, a new column is added, a removed one kept (and made nullable), and a narrowing or
-- incompatible change is refused with entity, column, old and new type, changing nothing.
-- Every change has its audit.schema_change row.
local H = require "helpers"

local SYSTEMS = '[{"name": "evo", "type": "file", "inbox": "inbox/evo"}]'

-- columns: array of column tables; returns a metadata folder with entity evo.items.
local function metadata(columns)
  local dir = H.tmpdir("evo-meta")
  H.write_file(dir .. "/systems.json", SYSTEMS)
  H.write_file(dir .. "/entities.json", H.cjson.encode({ {
    name = "items", system = "evo", primary_key = { "id" }, source = { pattern = "items-*.jsonl" },
    columns = columns,
  } }))
  H.write_file(dir .. "/gold.json", "[]")
  return dir
end

local function col(name, type_, extra)
  local c = { name = name, type = type_ }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

local V1 = {
  col("id", "integer", { nullable = false }),
  col("name", "string", { length = 10, nullable = false }),
  col("amount", "decimal", { precision = 10, scale = 2 }),
  col("n", "integer"),
  col("note", "text"),
  col("code", "string", { length = 8 }),
  col("legacy", "string", { length = 5, nullable = false }),
}

-- V1 with some columns replaced (by name; false removes) and others appended.
local function variant(changes, added)
  local out = {}
  for _, c in ipairs(V1) do
    local r = changes[c.name]
    if r == nil then out[#out + 1] = c elseif r then out[#out + 1] = r end
  end
  for _, c in ipairs(added or {}) do out[#out + 1] = c end
  return out
end

local WIDENED = {
  name = col("name", "string", { length = 20, nullable = false }),
  amount = col("amount", "decimal", { precision = 12, scale = 2 }),
  n = col("n", "bigint"),
  code = col("code", "text"),
}

local function merged(a, b)
  local out = {}
  for k, v in pairs(a) do out[k] = v end
  for k, v in pairs(b) do out[k] = v end
  return out
end

describe("tables follow metadata", function()
  local env, pg

  local function run(columns)
    local e = H.with(env, { DP_METADATA = metadata(columns) })
    return H.engine(e, "run", "evo")
  end

  local function table_columns()
    local rows = assert(pg:query([[SELECT attname AS name, format_type(atttypid, atttypmod) AS type,
      attnotnull::text AS not_null FROM pg_attribute WHERE attrelid = 'silver.evo__items'::regclass
      AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\_dp\_%' ORDER BY attnum]]))
    local out = {}
    for _, r in ipairs(rows) do out[#out + 1] = r.name .. " " .. r.type .. (r.not_null == "true" and " not null" or "") end
    return out
  end

  local function changes()
    local rows = assert(pg:query([[SELECT system, entity, table_name, column_name, change, old_type, new_type,
      (run_id = (SELECT run_id FROM audit.system_run ORDER BY started_at DESC LIMIT 1))::text AS last_run
      FROM audit.schema_change ORDER BY applied_at, change, column_name]]))
    return rows
  end

  local function silver_counts()
    local r = assert(pg:query([[SELECT records_inserted AS ins, records_updated AS upd, records_unchanged AS same,
      status, error FROM audit.entity_layer_run WHERE layer = 'silver' ORDER BY started_at DESC LIMIT 1]]))[1]
    return r
  end

  local function current_rows()
    return assert(pg:query([[SELECT id, name, amount::text, n::text, note, code, _dp_key_hash::text AS kh,
      _dp_scd1_hash::text AS h1, _dp_scd2_hash::text AS h2 FROM silver.evo__items WHERE _dp_is_current ORDER BY id]]))
  end

  setup(function()
    env = H.fresh_env("schema_evolution")
    pg = H.pg(env)
    H.write_export(env.DP_DATA_DIR .. "/inbox/evo/items-1.jsonl", table.concat({
      '{"id": 1, "name": "alpha", "amount": "10.50", "n": 7, "note": "x", "code": "A1", "legacy": "L1"}',
      '{"id": 2, "name": "beta", "amount": 20, "n": 2147483647, "note": "y", "code": "B2", "legacy": "L2"}',
    }, "\n") .. "\n")
  end)
  teardown(function() if pg then pg:close() end end)

  it("creates the table from metadata and audits its creation", function()
    local rc, _, err = run(V1)
    assert.are.equal(0, rc, err)
    assert.are.same({ "id integer not null", "name character varying(10) not null", "amount numeric(10,2)",
      "n integer", "note text", "code character varying(8)", "legacy character varying(5) not null" }, table_columns())
    assert.are.same({ { system = "evo", entity = "items", table_name = "evo__items", change = "create_table",
      last_run = "true" } }, changes())
  end)

  it("widens string, decimal and integer columns in place: no value and no hash changes", function()
    local before = current_rows()
    local rc, _, err = run(variant(WIDENED))
    assert.are.equal(0, rc, err)
    assert.are.same({ "id integer not null", "name character varying(20) not null", "amount numeric(12,2)",
      "n bigint", "note text", "code text", "legacy character varying(5) not null" }, table_columns())
    local c = silver_counts()
    assert.are.same({ "succeeded", "0", "0", "2" }, { c.status, c.ins, c.upd, c.same })
    assert.are.same(before, current_rows())
    local widened = {}
    for _, r in ipairs(changes()) do
      if r.change == "widen" then
        assert.are.equal("true", r.last_run)
        widened[#widened + 1] = r.column_name .. ": " .. r.old_type .. " -> " .. r.new_type
      end
    end
    table.sort(widened)
    assert.are.same({ "amount: numeric(10,2) -> numeric(12,2)", "code: varchar(8) -> text",
      "n: integer -> bigint", "name: varchar(10) -> varchar(20)" }, widened)
    -- a value that needs the wider type now fits
    H.write_export(env.DP_DATA_DIR .. "/inbox/evo/items-1.jsonl",
      H.read_file(env.DP_DATA_DIR .. "/inbox/evo/items-1.jsonl")
      .. '{"id": 3, "name": "a name of 20 chars..", "amount": "1234567890.12", "n": 9007199254740993, "note": "z", "code": "a code longer than eight", "legacy": "L3"}\n')
    rc, _, err = run(variant(WIDENED))
    assert.are.equal(0, rc, err)
    -- silver reads only the new record: the other two did not change in bronze
    assert.are.same({ "succeeded", "1", "0", "0" }, { silver_counts().status, silver_counts().ins, silver_counts().upd, silver_counts().same })
    assert.are.same({ n = "9007199254740993", amount = "1234567890.12" },
      (function(r) return { n = r.n, amount = r.amount } end)(current_rows()[3]))
  end)

  it("adds a new column and keeps a removed one, dropping NOT NULL where metadata no longer asks for it", function()
    local cols = variant(merged(WIDENED, { legacy = false, name = col("name", "string", { length = 20 }) }),
      { col("extra", "string", { length = 30 }) })
    local rc, _, err = run(cols)
    assert.are.equal(0, rc, err)
    assert.are.same({ "id integer not null", "name character varying(20)", "amount numeric(12,2)", "n bigint",
      "note text", "code text", "legacy character varying(5)", "extra character varying(30)" }, table_columns())
    local got = {}
    for _, r in ipairs(changes()) do
      if r.last_run == "true" then got[#got + 1] = r.change .. " " .. r.column_name .. " " .. tostring(r.new_type) end
    end
    table.sort(got)
    assert.are.same({ "add_column extra varchar(30)", "drop_not_null legacy nil", "drop_not_null name nil" }, got)
    -- the new column takes part in the hashes: every key gets a new version; the removed column
    -- keeps its old values and is NULL in the new versions
    local c = silver_counts()
    assert.are.same({ "succeeded", "0", "3", "0" }, { c.status, c.ins, c.upd, c.same })
    -- the _current view was rebuilt with the table: it shows the new column
    assert.are.equal(3, #assert(pg:query("SELECT id, extra FROM silver.evo__items_current")))
    local legacy = assert(pg:query("SELECT id, legacy, _dp_is_current::text AS cur FROM silver.evo__items WHERE id = 1 ORDER BY _dp_id"))
    assert.are.same({ { id = "1", legacy = "L1", cur = "false" }, { id = "1", cur = "true" } }, legacy)
  end)

  local NOW = variant(merged(WIDENED, { legacy = false, name = col("name", "string", { length = 20 }) }),
    { col("extra", "string", { length = 30 }) })
  local function with(changes_)
    local out = {}
    for _, c in ipairs(NOW) do
      local r = changes_[c.name]
      out[#out + 1] = r == nil and c or r
    end
    return out
  end

  local REFUSALS = {
    { "a shorter string", { name = col("name", "string", { length = 10 }) },
      "column name from varchar(20) to varchar(10) (narrowing could lose data)" },
    { "bigint to integer", { n = col("n", "integer") },
      "column n from bigint to integer (narrowing could lose data)" },
    { "another decimal scale", { amount = col("amount", "decimal", { precision = 12, scale = 3 }) },
      "column amount from numeric(12,2) to numeric(12,3) (a new scale would change every stored value and its hash)" },
    { "less decimal precision", { amount = col("amount", "decimal", { precision = 11, scale = 2 }) },
      "column amount from numeric(12,2) to numeric(11,2) (narrowing could lose data)" },
    { "text to integer", { note = col("note", "integer") },
      "column note from text to integer (the types are not compatible)" },
    { "text to a string with a length", { code = col("code", "string", { length = 50 }) },
      "column code from text to varchar(50) (narrowing could lose data)" },
  }
  for _, case in ipairs(REFUSALS) do
    it("refuses " .. case[1] .. ", naming entity, column, old and new type, and changes nothing", function()
      local cols_before, changes_before, rows_before = table_columns(), #changes(), current_rows()
      local rc, _, err = run(with(case[2]))
      assert.are.equal(1, rc)
      local msg = "entity evo.items: cannot change " .. case[3] .. "; nothing was changed: put the old type back "
        .. "in metadata, or change silver.evo__items by hand"
      local c = silver_counts()
      assert.are.equal("failed", c.status)
      assert.are.equal(msg, c.error)
      assert.matches(msg, err, 1, true)
      assert.are.same(cols_before, table_columns())
      assert.are.equal(changes_before, #changes())
      assert.are.same(rows_before, current_rows())
    end)
  end

  it("refuses every bad change at once and does not apply a widening listed with them", function()
    local cols_before = table_columns()
    local rc = run(with({ name = col("name", "string", { length = 40 }), n = col("n", "integer"),
      note = col("note", "date") }))
    assert.are.equal(1, rc)
    assert.are.equal("entity evo.items: cannot change column n from bigint to integer (narrowing could lose data); "
      .. "column note from text to date (the types are not compatible); nothing was changed: put the old type back "
      .. "in metadata, or change silver.evo__items by hand", silver_counts().error)
    assert.are.same(cols_before, table_columns())
    -- and the metadata as it is still runs
    rc = run(NOW)
    assert.are.equal(0, rc)
    -- nothing changed in bronze or in the definition since the last commit: nothing to read
    assert.are.same({ "succeeded", "0", "0", "0" }, { silver_counts().status, silver_counts().ins, silver_counts().upd, silver_counts().same })
  end)
end)
