-- Gold models (docs/gold.md) through the binary against the real PostgreSQL: both script
-- styles with exact rows from known silver contents, the atomic swap under a reader, incremental
-- merges, upstream runs, audit rows, and errors that name the model and line and keep the
-- previous gold table.
local H = require "helpers"
local cjson = require "cjson"

-- Known silver contents: the _current views gold reads are created here as plain tables.
local SILVER = [[
CREATE SCHEMA IF NOT EXISTS silver;
DROP TABLE IF EXISTS silver."bank__transactions_current", silver."fitness__activities_current",
  silver."listening__streams_current";
CREATE TABLE silver."bank__transactions_current" (id text, booked_on date, amount numeric(12,2), category text);
INSERT INTO silver."bank__transactions_current" VALUES
  ('T1', '2026-09-03', -10.50, 'food'), ('T2', '2026-09-20', -4.25, 'food'), ('T3', '2026-09-21', 100, 'salary'),
  ('T4', '2026-10-01', -20.00, 'rent');
CREATE TABLE silver."fitness__activities_current" (activity_id bigint, started_at timestamp, duration_s integer);
INSERT INTO silver."fitness__activities_current" VALUES
  (1, '2026-09-05 07:00', 3600), (2, '2026-09-06 07:00', 1800), (3, '2026-11-01 07:00', 900);
CREATE TABLE silver."listening__streams_current" (played_at timestamptz, track_uri text, ms_played bigint);
INSERT INTO silver."listening__streams_current" VALUES
  ('2026-09-01 08:00Z', 'a', 120000), ('2026-09-01 09:00Z', 'b', 60000), ('2026-09-02 08:00Z', 'a', 30000),
  ('2026-09-02 09:00Z', 'c', 1000), ('2026-09-04 08:00Z', 'a', 90000);
]]

local META = H.root .. "/metadata"

describe("gold models", function()
  local env, pg, dir

  -- Writes gold.json (a Lua array of models) and gold scripts (name -> source) for the spec.
  local function setup_gold(models, scripts)
    H.write_file(dir .. "/metadata/gold.json", cjson.encode(models))
    for name, src in pairs(scripts or {}) do H.write_file(dir .. "/scripts/gold/" .. name, src) end
  end

  local function gold_run(...)
    return H.engine(env, "gold", "run", ...)
  end

  local function rows(sql)
    return assert(pg:query(sql))
  end

  local function silver(sql) assert(pg:query(sql)) end

  setup(function()
    dir = H.tmpdir("gold")
    assert(H.sh("mkdir -p " .. dir .. "/metadata " .. dir .. "/scripts/gold && cp " .. META .. "/systems.json "
      .. META .. "/entities.json " .. dir .. "/metadata/ && ln -s " .. H.root .. "/connectors " .. dir .. "/scripts/connectors") == 0)
    env = H.fresh_env("gold", { metadata = dir .. "/metadata" })
    env.DP_SCRIPTS = dir .. "/scripts"
    pg = H.pg(env)
    silver(SILVER)
  end)

  teardown(function()
    if pg then pg:close() end
  end)

  local OVERVIEW = {
    name = "overview", depends_on = { "bank.transactions", "fitness.activities" }, primary_key = { "month" },
    columns = { { name = "month", type = "date" }, { name = "spent", type = "decimal", precision = 10, scale = 2 },
      { name = "hours", type = "decimal", precision = 6, scale = 2 } },
  }
  local OVERVIEW_LUA = [[
return {
  sql = function(ref)
    return "WITH s AS (SELECT date_trunc('month', booked_on)::date AS month, -sum(amount) AS spent FROM "
      .. ref("bank.transactions") .. " WHERE amount < 0 GROUP BY 1), "
      .. "f AS (SELECT date_trunc('month', started_at)::date AS month, round(sum(duration_s) / 3600.0, 2) AS hours FROM "
      .. ref("fitness.activities") .. " GROUP BY 1) "
      .. "SELECT month, coalesce(spent, 0) AS spent, coalesce(hours, 0) AS hours FROM s FULL JOIN f USING (month)"
  end,
}
]]
  local STREAK = {
    name = "streak", depends_on = { "listening.streams" }, materialization = "incremental", primary_key = { "day" },
    columns = { { name = "day", type = "date" }, { name = "minutes", type = "decimal", precision = 8, scale = 1 },
      { name = "streak", type = "integer" }, { name = "info", type = "json" } },
  }
  local STREAK_LUA = [[
local function dn(s)
  local y, m, d = s:match("^(%d+)-(%d+)-(%d+)$")
  return os.time({ year = tonumber(y), month = tonumber(m), day = tonumber(d), hour = 12 }) / 86400
end
return {
  batch_size = 2,
  rows = function(ctx)
    local streak, prev = 0, nil
    for r in ctx:query("SELECT (played_at AT TIME ZONE 'UTC')::date::text AS day, sum(ms_played) AS ms FROM "
        .. ctx:ref("listening.streams") .. " WHERE ms_played >= $1 GROUP BY 1 ORDER BY 1", { 30000 }) do
      local n = math.floor(dn(r.day) + 0.5)
      streak = (prev and n == prev + 1) and streak + 1 or 1
      prev = n
      ctx:emit({ day = r.day, minutes = string.format("%.1f", tonumber(r.ms) / 60000), streak = streak,
        info = { ms = tonumber(r.ms) } })
    end
  end,
}
]]

  local function overview()
    return rows("SELECT month::text, spent::text, hours::text FROM gold.overview ORDER BY month")
  end

  it("an SQL model over two systems builds the exact rows, typed, with the system columns", function()
    setup_gold({ OVERVIEW }, { ["overview.lua"] = OVERVIEW_LUA })
    local rc, out, err = gold_run("overview")
    assert.are.equal(0, rc, err .. out)
    assert.matches("gold run [%x-]+ of overview %(manual%): succeeded  in 3 inserted 3", out)
    assert.are.same({
      { month = "2026-09-01", spent = "14.75", hours = "1.50" },
      { month = "2026-10-01", spent = "20.00", hours = "0.00" },
      { month = "2026-11-01", spent = "0.00", hours = "0.25" },
    }, overview())
    local t = rows([[SELECT column_name, data_type FROM information_schema.columns
      WHERE table_schema = 'gold' AND table_name = 'overview' ORDER BY ordinal_position]])
    local cols = {}
    for _, c in ipairs(t) do cols[#cols + 1] = c.column_name .. " " .. c.data_type end
    assert.are.same({ "month date", "spent numeric", "hours numeric", "_dp_run_id uuid",
      "_dp_run_ts timestamp with time zone", "_dp_created_at timestamp with time zone",
      "_dp_updated_at timestamp with time zone" }, cols)
    local run = rows("SELECT run_id::text, run_ts FROM audit.system_run WHERE system = 'overview'")[1]
    local r = rows("SELECT DISTINCT _dp_run_id::text AS id FROM gold.overview")
    assert.are.same({ { id = run.run_id } }, r)
    -- no build table is left behind; the key index has the model's name
    assert.are.same({ { n = "0" } }, rows("SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'gold' AND tablename LIKE '%build%'"))
    assert.are.same({ { indexname = "overview_pkey" } }, rows("SELECT indexname FROM pg_indexes WHERE schemaname = 'gold'"))
  end)

  it("audits a gold run as its own system run with layer gold and row counts", function()
    silver([[INSERT INTO silver."bank__transactions_current" VALUES ('T5', '2026-12-01', -1.00, 'x')]])
    local rc, _, err = gold_run("overview")
    assert.are.equal(0, rc, err)
    local r = rows([[SELECT s.trigger_kind, s.status, l.layer, l.status AS lstatus, e.entity, e.layer AS elayer,
        e.records_in, e.records_inserted, e.records_deleted FROM audit.system_run s
        JOIN audit.system_layer_run l USING (run_id) JOIN audit.entity_layer_run e USING (run_id)
        WHERE s.system = 'overview' ORDER BY s.started_at DESC LIMIT 1]])
    assert.are.same({ { trigger_kind = "manual", status = "succeeded", layer = "gold", lstatus = "succeeded",
      entity = "overview", elayer = "gold", records_in = "4", records_inserted = "4", records_deleted = "3" } }, r)
    silver([[DELETE FROM silver."bank__transactions_current" WHERE id = 'T5']])
    assert.are.equal(0, (gold_run("overview")))
  end)

  it("a Lua rows model reads in batches and emits the exact rows, cast like silver", function()
    setup_gold({ STREAK }, { ["streak.lua"] = STREAK_LUA })
    local rc, out, err = gold_run("streak")
    assert.are.equal(0, rc, err .. out)
    assert.matches("of streak %(manual%): succeeded  in 3 inserted 3 updated 0", out)
    assert.are.same({
      { day = "2026-09-01", minutes = "3.0", streak = "1", info = '{"ms": 180000}' },
      { day = "2026-09-02", minutes = "0.5", streak = "2", info = '{"ms": 30000}' },
      { day = "2026-09-04", minutes = "1.5", streak = "1", info = '{"ms": 90000}' },
    }, rows("SELECT day::text, minutes::text, streak::text, info::text FROM gold.streak ORDER BY day"))
  end)

  it("an incremental model merges by key: inserts, updates only changed rows, keeps the rest", function()
    local before = rows("SELECT day::text, _dp_run_id::text AS run, _dp_created_at::text AS c FROM gold.streak ORDER BY day")
    silver([[INSERT INTO silver."listening__streams_current" VALUES ('2026-09-04 10:00Z', 'z', 30000), ('2026-09-05 08:00Z', 'a', 60000)]])
    local rc, out, err = gold_run("streak")
    assert.are.equal(0, rc, err .. out)
    assert.matches("in 4 inserted 1 updated 1 deleted 0 unchanged 2", out)
    local after = rows("SELECT day::text, minutes::text, streak::text, _dp_run_id::text AS run, _dp_created_at::text AS c FROM gold.streak ORDER BY day")
    assert.are.equal(4, #after)
    assert.are.same({ "2026-09-04", "2.0", "1" }, { after[3].day, after[3].minutes, after[3].streak })
    assert.are.same({ "2026-09-05", "1.0", "2" }, { after[4].day, after[4].minutes, after[4].streak })
    assert.are.equal(before[1].run, after[1].run) -- unchanged rows keep their run id
    assert.are.equal(before[3].c, after[3].c)     -- an updated row keeps its created_at
    assert.are_not.equal(before[3].run, after[3].run)
  end)

  it("--full-refresh makes an incremental model's table what its build produced: rows no longer made go", function()
    local function days() return rows("SELECT day::text FROM gold.streak ORDER BY day") end
    local kept = rows("SELECT day::text, _dp_created_at::text AS c FROM gold.streak WHERE day = '2026-09-01'")[1]
    silver([[DELETE FROM silver."listening__streams_current" WHERE played_at >= '2026-09-05' AND played_at < '2026-09-06']])
    -- a plain run keeps the day its build no longer makes
    local rc, out, err = gold_run("streak")
    assert.are.equal(0, rc, err .. out)
    assert.matches("deleted 0", out, 1, true)
    assert.are.equal(4, #days())
    rc, out, err = gold_run("streak", "--full-refresh")
    assert.are.equal(0, rc, err .. out)
    assert.matches("in 3 inserted 0 updated 0 deleted 1 unchanged 3", out, 1, true)
    assert.are.same({ { day = "2026-09-01" }, { day = "2026-09-02" }, { day = "2026-09-04" } }, days())
    -- the rows it kept are the same rows (created_at kept)
    assert.are.same(kept, rows("SELECT day::text, _dp_created_at::text AS c FROM gold.streak WHERE day = '2026-09-01'")[1])
    local rc2, _, err2 = gold_run("streak", "--frobnicate")
    assert.are.equal(2, rc2)
    assert.matches("unknown option: --frobnicate", err2, 1, true)
  end)

  it("a reader in a transaction sees the old rows during a rebuild, then the new ones; never a mix or nothing", function()
    setup_gold({ OVERVIEW }, { ["overview.lua"] = OVERVIEW_LUA })
    local reader = H.pg(env)
    assert(reader:query("BEGIN ISOLATION LEVEL REPEATABLE READ"))
    local old = assert(reader:query("SELECT month::text, spent::text FROM gold.overview ORDER BY month"))
    assert.are.equal(3, #old)
    silver([[INSERT INTO silver."bank__transactions_current" VALUES ('T9', '2026-09-30', -0.25, 'x')]])
    -- the rebuild runs in the background while the reader's transaction is open
    local done = dir .. "/bg.done"
    os.remove(done)
    local parts = { "env" }
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end
    H.sh("(" .. table.concat(parts, " ") .. " " .. H.bin .. " gold run overview >" .. dir .. "/bg.out 2>&1; echo $? >"
      .. done .. ") >/dev/null 2>&1 & true")
    -- wait until the swap waits for the reader's lock
    local waiting = false
    for _ = 1, 200 do
      local w = assert(pg:query([[SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'
        AND query LIKE 'DROP TABLE IF EXISTS "gold"."overview"%']]))
      if w[1].n ~= "0" then waiting = true break end
      H.core.sleep(0.05)
    end
    assert.is_true(waiting, "the rebuild never reached the swap: " .. tostring(H.try_read(dir .. "/bg.out")))
    assert.are.same(old, assert(reader:query("SELECT month::text, spent::text FROM gold.overview ORDER BY month")))
    assert.is_nil(H.try_read(done))
    assert(reader:query("COMMIT"))
    for _ = 1, 200 do
      if H.try_read(done) then break end
      H.core.sleep(0.05)
    end
    assert.are.equal("0\n", H.try_read(done), H.try_read(dir .. "/bg.out"))
    local new = assert(reader:query("SELECT month::text, spent::text FROM gold.overview ORDER BY month"))
    reader:close()
    assert.are.same({ { month = "2026-09-01", spent = "15.00" }, { month = "2026-10-01", spent = "20.00" },
      { month = "2026-11-01", spent = "0.00" } }, new)
  end)

  local function expect_failure(script, pattern)
    setup_gold({ OVERVIEW }, { ["overview.lua"] = script })
    local before = overview()
    local rc, out, err = gold_run("overview")
    assert.are.equal(1, rc, err .. out)
    assert.matches(pattern, err .. out)
    assert.are.same(before, overview()) -- the previous gold table stays
    local a = rows([[SELECT e.status, e.error FROM audit.system_run s JOIN audit.entity_layer_run e USING (run_id)
      WHERE s.system = 'overview' ORDER BY s.started_at DESC LIMIT 1]])[1]
    assert.are.equal("failed", a.status)
    assert.matches(pattern, a.error)
    return err .. out
  end

  it("an undeclared ref is an error naming the model, the ref and the line", function()
    expect_failure([[
return {
  sql = function(ref)
    return "SELECT * FROM " .. ref("bank.accounts")
  end,
}]], 'gold model overview: [^\n]*/gold/overview%.lua:3: ref%("bank%.accounts"%) is not declared in depends_on of gold model "overview"')
  end)

  it("a syntax error names the model, file and line", function()
    expect_failure("return {\n  sql = function(ref)\n    return 'x' ..\n  end,\n}\n",
      "gold model overview: [^\n]*/gold/overview%.lua:4: unexpected symbol near 'end'")
  end)

  it("a script of the wrong shape fails at load with the reason", function()
    expect_failure("return { sql = 'SELECT 1', extra = 1 }",
      'gold model overview: [^\n]*/gold/overview%.lua: unknown key "extra" in the returned table')
    expect_failure("return { rows = function() end }",
      "rows must take ctx as its parameter: function%(ctx%)")
  end)

  it("a rows script that raises half way names the model and line; nothing of it is kept", function()
    expect_failure([[
return {
  rows = function(ctx)
    ctx:emit({ month = "2030-01-01", spent = 1, hours = 1 })
    error("boom")
  end,
}]], "gold model overview: [^\n]*/gold/overview%.lua:4: boom")
  end)

  it("an emitted value that cannot be cast names the row, column and line", function()
    expect_failure([[
return {
  rows = function(ctx)
    ctx:emit({ month = "2030-01-01", spent = 1, hours = 1 })
    ctx:emit({ month = "not a date", spent = 1, hours = 1 })
  end,
}]], "overview%.lua:4: ctx:emit: row 2: column month")
    expect_failure([[
return {
  rows = function(ctx)
    ctx:emit({ month = "2030-01-01", spent = 1, hourz = 1 })
  end,
}]], 'overview%.lua:3: ctx:emit: row 1: row has no column "hourz" in gold model "overview" %(did you mean "hours"%?%)')
  end)

  it("ctx:query is read-only", function()
    silver("CREATE SEQUENCE silver.seq")
    local script = [[
return {
  rows = function(ctx)
    for r in ctx:query("SELECT nextval('silver.seq') AS n") do end
  end,
}]]
    -- the gold role may not use the sequence (docs/gold.md#the-sql-sandbox) ...
    expect_failure(script, "overview%.lua:3: ctx:query: permission denied for sequence seq")
    -- ... and where a deployer granted it, the read-only transaction still refuses the write
    silver("GRANT USAGE ON SEQUENCE silver.seq TO dp_gold")
    expect_failure(script, "overview%.lua:3: ctx:query: .*read%-only transaction")
    silver("REVOKE USAGE ON SEQUENCE silver.seq FROM dp_gold")
    assert.are.equal("1", rows("SELECT nextval('silver.seq') AS n")[1].n)
    assert.are.equal("5", rows([[SELECT count(*) AS n FROM silver."bank__transactions_current"]])[1].n)
  end)

  it("a cycle is rejected at validation", function()
    setup_gold({
      { name = "a", depends_on = { "b" }, columns = { { name = "x", type = "integer" } } },
      { name = "b", depends_on = { "a" }, columns = { { name = "x", type = "integer" } } },
    }, { ["a.lua"] = "return { sql = function(ref) return 'SELECT 1 AS x' end }",
      ["b.lua"] = "return { sql = function(ref) return 'SELECT 1 AS x' end }" })
    local rc, _, err = gold_run("a")
    assert.are.equal(2, rc)
    assert.matches("gold.json[0].depends_on: cycle a -> b -> a", err, 1, true)
  end)

  it("gold run MODEL runs every upstream gold model first; a failed upstream skips the model", function()
    setup_gold({
      OVERVIEW,
      { name = "top", depends_on = { "overview" }, columns = { { name = "months", type = "integer" } } },
      { name = "topper", depends_on = { "top", "bank.transactions" }, columns = { { name = "n", type = "integer" } } },
    }, { ["overview.lua"] = OVERVIEW_LUA,
      ["top.lua"] = "return { sql = function(ref) return 'SELECT count(*) AS months FROM ' .. ref('overview') end }",
      ["topper.lua"] = "return { sql = function(ref) return 'SELECT months * 10 AS n FROM ' .. ref('top') end }" })
    local rc, out, err = gold_run("topper")
    assert.are.equal(0, rc, err .. out)
    local order = {}
    for name, trig in out:gmatch("of (%w+) %((%w+)%)") do order[#order + 1] = name .. ":" .. trig end
    assert.are.same({ "overview:dependency", "top:dependency", "topper:manual" }, order)
    assert.are.same({ { n = "30" } }, rows("SELECT n::text FROM gold.topper"))
    H.write_file(dir .. "/scripts/gold/top.lua", "return { sql = function(ref) return 'SELECT nope' end }")
    rc, out, err = gold_run("topper")
    assert.are.equal(1, rc)
    assert.matches("of top %(dependency%): failed", out)
    assert.matches("of topper %(manual%): skipped", out)
    assert.matches("skipped: upstream gold model top failed", out, 1, true)
    assert.are.same({ { n = "30" } }, rows("SELECT n::text FROM gold.topper"))
  end)

  it("an unknown model is a usage error", function()
    local rc, _, err = gold_run("overveiw")
    assert.are.equal(2, rc)
    assert.matches('no gold model named "overveiw" in gold.json (did you mean "overview"?)', err, 1, true)
  end)
end)

describe("example gold models", function()
  it("run SYSTEM --with-gold builds the models downstream of the system: the two examples", function()
    local env = H.fresh_env("gold_examples")
    local function run(system, ...)
      H.fill_inbox(env, "inbox/" .. system, H.root .. "/metadata/demo/" .. system .. "/export-1")
      local rc, out, err = H.engine(env, "run", system, ...)
      assert.are.equal(0, rc, err .. out)
      return out
    end
    run("bank")
    run("fitness")
    local out = run("listening", "--with-gold")
    assert.matches("of listening_daily %(after%): succeeded", out)
    assert.not_matches("monthly_overview", out) -- not downstream of listening
    out = run("bank", "--with-gold")
    assert.matches("of monthly_overview %(after%): succeeded", out)
    assert.not_matches("listening_daily", out)
    local pg = H.pg(env)
    local want = assert(pg:query([[SELECT count(DISTINCT m) AS n FROM (
      SELECT date_trunc('month', booked_on) AS m FROM silver.bank__transactions_current WHERE amount < 0
      UNION SELECT date_trunc('month', started_at) FROM silver.fitness__activities_current) x]]))[1].n
    local got = assert(pg:query("SELECT count(*) AS n, sum(spent)::text AS s FROM gold.monthly_overview"))[1]
    local spent = assert(pg:query("SELECT (-sum(amount))::text AS s FROM silver.bank__transactions_current WHERE amount < 0"))[1].s
    assert.are.equal(want, got.n)
    assert.are.equal(spent, got.s)
    local days = assert(pg:query("SELECT count(*) AS n, max(streak_days) AS s FROM gold.listening_daily"))[1]
    assert.is_true(tonumber(days.n) > 0)
    pg:close()
  end)
end)

describe("dp.core gold builder", function()
  it("builds and swaps a table model; an aborted build leaves the previous table", function()
    local env = H.fresh_env("gold_core")
    local pg = H.pg(env)
    local model = { name = "t", primary_key = { "k" }, columns = { { name = "k", type = "bigint", path = "k" },
      { name = "v", type = "string", length = 3, path = "v" } } }
    local run, ts = H.core.uuid_v7(), "2026-01-02T03:04:05Z"
    local b = assert(H.core.gold_begin(pg, model, "table", run, ts))
    assert(b:emit('{"k": 9223372036854775807, "v": "abc"}'))
    assert(b:insert_select("SELECT 1 AS k, 'x' AS v"))
    local n = assert(b:finish())
    assert.are.same({ ["in"] = 2, inserted = 2, updated = 0, deleted = 0, unchanged = 0 }, n)
    assert.are.same({ { k = "1", v = "x", r = run }, { k = "9223372036854775807", v = "abc", r = run } },
      assert(pg:query("SELECT k::text, v, _dp_run_id::text AS r FROM gold.t ORDER BY k")))
    b = assert(H.core.gold_begin(pg, model, "table", run, ts))
    local ok, err = b:emit('{"k": 2, "v": "toolong"}')
    assert.is_nil(ok)
    assert.matches("row 1: column v", err, 1, true)
    b:abort()
    assert.has_error(function() b:emit('{"k": 3}') end, "the gold builder is finished or aborted")
    assert.are.equal(2, #assert(pg:query("SELECT * FROM gold.t")))
    pg:close()
  end)
end)
