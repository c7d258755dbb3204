-- The SQL sandbox of gold scripts (docs/gold.md#the-sql-sandbox), through the binary against the
-- real PostgreSQL: a script's SQL is one query that runs as the role dp_gold (read silver and
-- gold, nothing else), cannot change role or end the engine's transaction, and stops at the
-- statement timeout. Every attack must fail with a clear error naming the model, and leave the
-- audit rows, the engine's state and silver as they were; legitimate models keep working.
local H = require "helpers"
local cjson = require "cjson"

local SILVER = [[
CREATE SCHEMA IF NOT EXISTS silver;
DROP TABLE IF EXISTS silver."bank__transactions_current";
CREATE TABLE silver."bank__transactions_current" (id text, booked_on date, amount numeric(12,2), category text);
INSERT INTO silver."bank__transactions_current" VALUES
  ('T1', '2026-09-03', -10.50, 'food'), ('T2', '2026-09-20', -4.25, 'it''s $1 food'), ('T3', '2026-09-21', 100, 'salary'),
  ('T4', '2026-10-01', -20.00, NULL);
INSERT INTO dp.entity_cursor (system, entity, cursor, run_id) VALUES ('bank', 'transactions', 'c-1', gen_random_uuid());
]]

local META = H.root .. "/metadata"

describe("gold SQL sandbox", function()
  local env, pg, dir

  local function setup_gold(models, scripts)
    H.write_file(dir .. "/metadata/gold.json", cjson.encode(models))
    for name, src in pairs(scripts or {}) do H.write_file(dir .. "/scripts/gold/" .. name, src) end
  end

  local function rows(sql)
    return assert(pg:query(sql))
  end

  -- One model "m" (columns x text, materialization mat) with the script source; runs it.
  local function run_model(src, mat, e)
    setup_gold({ { name = "m", depends_on = { "bank.transactions" }, materialization = mat or "table",
      primary_key = { "x" }, columns = { { name = "x", type = "text", nullable = false } } } }, { ["m.lua"] = src })
    local rc, out, err = H.engine(e or env, "gold", "run", "m")
    return rc, err .. out
  end

  -- Everything an attack could touch, as text: audit rows, engine state, silver.
  local function state()
    local out = {}
    for _, q in ipairs({
      "SELECT run_id::text, entity, layer, status FROM audit.entity_layer_run ORDER BY 1, 2, 3",
      "SELECT run_id::text, system, status FROM audit.system_run ORDER BY 1",
      "SELECT system, entity, cursor FROM dp.entity_cursor ORDER BY 1, 2",
      "SELECT name FROM dp.schema_migration ORDER BY 1",
      [[SELECT id, amount::text, coalesce(category, '-') AS c FROM silver."bank__transactions_current" ORDER BY 1]],
      "SELECT count(*)::text AS n FROM pg_largeobject_metadata",
    }) do
      for _, r in ipairs(rows(q)) do
        local parts = {}
        for k, v in pairs(r) do parts[#parts + 1] = k .. "=" .. v end
        table.sort(parts)
        out[#out + 1] = table.concat(parts, ",")
      end
    end
    return out
  end

  -- Runs the attack; it must fail (exit 1) with the pattern, keep every earlier audit row and
  -- change nothing else but add its own failed run.
  local function refused(src, pattern, mat)
    local before = state()
    local runs_before = #rows("SELECT 1 FROM audit.system_run")
    local rc, out = run_model(src, mat)
    assert.are.equal(1, rc, out)
    assert.matches(pattern, out)
    assert.matches("gold model m: ", out, 1, true)
    local a = rows([[SELECT e.status, e.error FROM audit.system_run s JOIN audit.entity_layer_run e USING (run_id)
      WHERE s.system = 'm' ORDER BY s.started_at DESC LIMIT 1]])[1]
    assert.are.equal("failed", a.status)
    assert.matches(pattern, a.error)
    assert.are.equal(runs_before + 1, #rows("SELECT 1 FROM audit.system_run"))
    -- the earlier rows are all still there, unchanged (the new run only added its own)
    local after, seen = state(), {}
    for _, l in ipairs(after) do seen[l] = true end
    for _, l in ipairs(before) do assert.is_true(seen[l] == true, "lost or changed: " .. l) end
    return out
  end

  setup(function()
    dir = H.tmpdir("gold-sandbox")
    assert(H.sh("mkdir -p " .. dir .. "/metadata " .. dir .. "/scripts/gold && cp " .. META .. "/systems.json "
      .. META .. "/entities.json " .. dir .. "/metadata/ && ln -s " .. H.root .. "/connectors " .. dir .. "/scripts/connectors") == 0)
    env = H.fresh_env("gold_sandbox", { metadata = dir .. "/metadata" })
    env.DP_SCRIPTS = dir .. "/scripts"
    pg = H.pg(env)
    assert(pg:query(SILVER))
    -- a first, legitimate run: audit rows an attack would like to delete
    local rc, out = run_model("return { sql = function(ref) return 'SELECT id AS x FROM ' .. ref('bank.transactions') end }")
    assert.are.equal(0, rc, out)
  end)

  teardown(function()
    if pg then pg:close() end
  end)

  it("the reported attack: a second statement with COMMIT and DELETE is refused, the audit rows stay", function()
    local attack = "SELECT 'a' AS x; COMMIT; DELETE FROM audit.entity_layer_run"
    -- an SQL model (incremental: it used to go through PQexec) fails when it is loaded
    local out = refused("return { sql = function(ref) return " .. string.format("%q", attack) .. " end }",
      "the SQL holds a second statement after the ';' on line 1", "incremental")
    assert.matches("gold/m%.lua: sql%(ref%): the SQL holds a second statement", out)
    -- ctx:query: the error names the script's line
    refused("return { rows = function(ctx)\n  for r in ctx:query(" .. string.format("%q", attack) .. ") do end\nend }",
      "m%.lua:2: ctx:query: the SQL holds a second statement after the ';' on line 1")
    -- hidden on a later line, after a comment and a string holding a ';'
    refused("return { sql = function(ref) return \"SELECT ';' AS x -- ;\\n/* ; */ FROM \" .. ref('bank.transactions')"
      .. " .. \"\\n;\\nDELETE FROM audit.system_run\" end }",
      "the SQL holds a second statement after the ';' on line 3")
    -- a trailing ';' is fine
    local rc, o = run_model("return { sql = function(ref) return 'SELECT id AS x FROM ' .. ref('bank.transactions') .. ' ; ' end }")
    assert.are.equal(0, rc, o)
  end)

  it("statements that are not a query are refused before anything runs", function()
    for _, stmt in ipairs({ "COMMIT", "ROLLBACK", "SET ROLE dp", "RESET ROLE", "SET SESSION AUTHORIZATION DEFAULT",
        "DO $$ BEGIN DELETE FROM audit.system_run; END $$", "COPY audit.system_run TO STDOUT", "CALL x()",
        "DELETE FROM audit.system_run RETURNING 'a' AS x", "  -- a comment first\nDROP TABLE audit.system_run" }) do
      local word = stmt:gsub("^%s*%-%-[^\n]*\n", ""):match("^(%a+)"):upper()
      refused("return { rows = function(ctx)\n  for r in ctx:query(" .. string.format("%q", stmt) .. ") do end\nend }",
        "m%.lua:2: ctx:query: only a query can run here %(SELECT, WITH, VALUES or TABLE%), not " .. word)
    end
  end)

  it("a single statement cannot write to audit, dp or silver: the gold role has no such privilege", function()
    -- a data-modifying WITH, as an SQL model and through ctx:query
    refused([[return { sql = function(ref)
  return "WITH d AS (DELETE FROM audit.entity_layer_run RETURNING 1) SELECT count(*)::text AS x FROM d"
end }]], "gold model m: [^\n]*m%.lua: WITH clause containing a data%-modifying statement must be at the top level")
    refused([[return { rows = function(ctx)
  for r in ctx:query("WITH d AS (UPDATE dp.entity_cursor SET cursor = 'x' RETURNING 1) SELECT * FROM d") do end
end }]], "m%.lua:2: ctx:query: WITH clause containing a data%-modifying statement")
    -- a large object (the one write without table privileges): the function is out of reach
    -- (migration 0009); an engine that is no superuser finds it at the end instead
    refused("return { sql = function(ref) return \"SELECT lo_from_bytea(0, 'x')::text AS x\" end }",
      "permission denied for function lo_from_bytea")
    -- the role itself, should a statement ever get past the engine's one-query check: every
    -- write, also in a data-modifying WITH at the top level, is refused by its privileges
    local before = state()
    for stmt, why in pairs({
      ["DELETE FROM audit.entity_layer_run RETURNING 1"] = "permission denied for schema audit",
      ["WITH d AS (DELETE FROM audit.system_run RETURNING 1) SELECT count(*)::int FROM d"] = "permission denied for schema audit",
      ["UPDATE dp.entity_cursor SET cursor = 'x' RETURNING 1"] = "permission denied for schema dp",
      ["WITH d AS (DELETE FROM silver.\"bank__transactions_current\" RETURNING 1) SELECT count(*)::int FROM d"] =
        "permission denied for table bank__transactions_current",
      ["INSERT INTO silver.\"bank__transactions_current\" (id) VALUES ('X') RETURNING 1"] =
        "permission denied for table bank__transactions_current",
      ["SELECT 1; DELETE FROM gold.m RETURNING 1"] = "permission denied for table m",
      ["SELECT 1; COMMIT"] = "COMMIT query does not return tuples",
      ["SELECT 1; RESET ROLE"] = "RESET query does not return tuples",
    }) do
      local ok, err = pg:query("SELECT * FROM gold_sandbox.query($1, '{}') AS r(x int)", stmt)
      assert.is_nil(ok, stmt)
      assert.matches(why, err, 1, true)
    end
    assert.are.same(before, state())
    -- and only the engine's user may call the function
    assert.are.equal("false", rows([[SELECT (has_function_privilege('dp_gold', 'gold_sandbox.query(text, text[])', 'EXECUTE')
      AND has_schema_privilege('dp_gold', 'gold_sandbox', 'USAGE'))::text AS x]])[1].x)
    assert.are.equal("false", rows([[SELECT has_function_privilege('public', 'gold_sandbox.query(text, text[])', 'EXECUTE')::text AS x]])[1].x)
    -- what the role may do, from the catalog (the engine's user here is a superuser, the role is not)
    local p = rows([[SELECT
      has_schema_privilege('dp_gold', 'audit', 'USAGE')::text AS audit_usage,
      has_schema_privilege('dp_gold', 'dp', 'USAGE')::text AS dp_usage,
      has_schema_privilege('dp_gold', 'silver', 'CREATE')::text AS silver_create,
      has_schema_privilege('dp_gold', 'gold', 'CREATE')::text AS gold_create,
      has_schema_privilege('dp_gold', 'public', 'CREATE')::text AS public_create,
      has_table_privilege('dp_gold', 'silver."bank__transactions_current"', 'SELECT')::text AS silver_select,
      has_table_privilege('dp_gold', 'silver."bank__transactions_current"', 'INSERT,UPDATE,DELETE,TRUNCATE')::text AS silver_write,
      has_table_privilege('dp_gold', 'gold."m"', 'SELECT')::text AS gold_select,
      has_table_privilege('dp_gold', 'gold."m"', 'INSERT,UPDATE,DELETE,TRUNCATE')::text AS gold_write,
      (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'dp_gold')::text AS can_login]])[1]
    assert.are.same({ audit_usage = "false", dp_usage = "false", silver_create = "false", gold_create = "false",
      public_create = "false", silver_select = "true", silver_write = "false", gold_select = "true",
      gold_write = "false", can_login = "false" }, p)
    -- a silver table created after the migration is readable too (default privileges)
    assert(pg:query("CREATE TABLE silver.later (a int)"))
    assert.are.equal("true", rows("SELECT has_table_privilege('dp_gold', 'silver.later', 'SELECT')::text AS s")[1].s)
  end)

  it("reading audit, dp or anything outside silver and gold is refused", function()
    refused("return { rows = function(ctx)\n  for r in ctx:query('SELECT error FROM audit.entity_layer_run') do end\nend }",
      "m%.lua:2: ctx:query: permission denied for schema audit")
    refused("return { sql = function(ref) return 'SELECT cursor AS x FROM dp.entity_cursor' end }",
      "gold model m: [^\n]*m%.lua: permission denied for schema dp")
    refused("return { sql = function(ref) return \"SELECT pg_read_file('/etc/hostname') AS x\" end }",
      "permission denied for function pg_read_file")
    -- the query runs as dp_gold, whoever the engine's user is
    local rc, out = run_model("return { sql = function(ref) return 'SELECT current_user::text AS x' end }")
    assert.are.equal(0, rc, out)
    assert.are.same({ { x = "dp_gold" } }, rows("SELECT x FROM gold.m"))
  end)

  it("advisory locks (a system's run lock), large objects and NOTIFY are out of reach; work_mem is reset", function()
    refused("return { sql = function(ref) return \"SELECT pg_advisory_lock(hashtextextended('dp-engine/system/bank', 0))::text AS x\" end }",
      "permission denied for function pg_advisory_lock")
    refused("return { sql = function(ref) return \"SELECT pg_try_advisory_xact_lock(1)::text AS x\" end }",
      "permission denied for function pg_try_advisory_xact_lock")
    refused("return { sql = function(ref) return \"SELECT lo_from_bytea(0, 'x')::text AS x\" end }",
      "permission denied for function lo_from_bytea")
    refused("return { sql = function(ref) return \"SELECT pg_notify('c', 'x')::text AS x\" end }",
      "permission denied for function pg_notify")
    -- a query that raises work_mem for the session gets it back at the next statement
    local rc, out = run_model([[return { rows = function(ctx)
  for _ in ctx:query("SELECT set_config('work_mem', '2000000000kB', false)") do end
  for r in ctx:query("SELECT current_setting('work_mem') AS w, current_setting('temp_file_limit') AS t") do
    ctx:emit({ x = r.w .. " " .. r.t })
  end
end }]])
    assert.are.equal(0, rc, out)
    assert.are.same({ { x = "64MB 4GB" } }, rows("SELECT x FROM gold.m"))
  end)

  it("SET ROLE, RESET ROLE and session authorization cannot be reached from a query", function()
    for _, f in ipairs({ "role", "session_authorization" }) do
      refused("return { sql = function(ref) return \"SELECT set_config('" .. f .. "', session_user, false) AS x\" end }",
        'cannot set parameter "' .. f .. '" within security%-definer function')
      refused("return { rows = function(ctx)\n  for r in ctx:query(\"SELECT set_config('" .. f
        .. "', session_user, true) AS x\") do end\nend }",
        'm%.lua:2: ctx:query: cannot set parameter "' .. f .. '" within security%-definer function')
    end
    -- and a query that reads the role after trying sees dp_gold in every row
    local rc, out = run_model([[return { rows = function(ctx)
  pcall(function() for r in ctx:query("SELECT set_config('role', session_user, false) AS x") do end end)
  for r in ctx:query("SELECT current_user::text AS u") do ctx:emit({ x = r.u }) end
end }]])
    -- the failed query aborted the reader's transaction: the second one is refused, not run as another role
    assert.are.equal(1, rc, out)
    assert.matches("current transaction is aborted", out)
  end)

  it("a query that runs longer than the statement timeout is stopped, naming the model", function()
    local slow = H.with(env, { DP_GOLD_STATEMENT_TIMEOUT = "0.5" })
    local t0 = os.time()
    local rc, out = run_model("return { sql = function(ref) return 'SELECT pg_sleep(5)::text AS x' end }", "table", slow)
    assert.are.equal(1, rc, out)
    assert.matches("gold model m: [^\n]*m%.lua: the query ran longer than the gold statement timeout of 0.5 s "
      .. "%(DP_GOLD_STATEMENT_TIMEOUT%) and was stopped", out)
    rc, out = run_model([[return { rows = function(ctx)
  for r in ctx:query("SELECT pg_sleep(5)::text AS x") do end
end }]], "table", slow)
    assert.are.equal(1, rc, out)
    assert.matches("gold model m: [^\n]*m%.lua:2: ctx:query: the query ran longer than the gold statement timeout of 0.5 s", out)
    -- a query cannot lift the timeout for the queries after it
    rc, out = run_model([[return { rows = function(ctx)
  for r in ctx:query("SELECT set_config('statement_timeout', '0', true) || set_config('statement_timeout', '0', false) AS x") do end
  for r in ctx:query("SELECT pg_sleep(5)::text AS x") do end
end }]], "table", slow)
    assert.are.equal(1, rc, out)
    assert.matches("m%.lua:3: ctx:query: the query ran longer than the gold statement timeout of 0.5 s", out)
    -- three queries of 5 s each: stopped after 0.5 s each, they take far less than 15 s
    assert.is_true(os.time() - t0 < 8, "the timeout did not stop the queries")
    -- a bad value is a configuration error
    rc, out = run_model("return { sql = function(ref) return 'SELECT 1::text AS x' end }", "table",
      H.with(env, { DP_GOLD_STATEMENT_TIMEOUT = "5 minutes" }))
    assert.are.equal(2, rc, out)
    assert.matches('DP_GOLD_STATEMENT_TIMEOUT: expected a number of seconds between 0 (no timeout) and 2073600, got "5 minutes"',
      out, 1, true)
  end)

  it("legitimate queries keep working: parameters of any type, quotes, comments, incremental SQL models", function()
    local rc, out = run_model([[return { rows = function(ctx)
  local q = "SELECT id || '|' || coalesce(category, '-') || '|' || $3 || '|' || coalesce($4, 'null') AS v, '$1' AS lit, $$ $2 $$ AS dq"
    .. " FROM " .. ctx:ref("bank.transactions") .. " -- $1 in a comment\n"
    .. " WHERE amount < $1 /* $2 */ AND booked_on >= $2 AND (category IS NULL OR category <> $5) ORDER BY id"
  for r in ctx:query(q, { -1, "2026-09-10", "it's \"q\" \\ $1", nil, "food", n = 5 }) do
    assert(r.lit == "$1" and r.dq == " $2 ", "literal changed: " .. tostring(r.lit) .. tostring(r.dq))
    ctx:emit({ x = r.v })
  end
end }]])
    assert.are.equal(0, rc, out)
    assert.are.same({ { x = [[T2|it's $1 food|it's "q" \ $1|null]] }, { x = [[T4|-|it's "q" \ $1|null]] } },
      rows("SELECT x FROM gold.m ORDER BY x"))
    -- a wrong number of values
    refused("return { rows = function(ctx)\n  for r in ctx:query('SELECT $1::text AS x, $2::text AS y', { 'a' }) do end\nend }",
      "m%.lua:2: ctx:query: the query uses 2 parameters %(%$1%.%.%$2%) but 1 value was given")
    -- an incremental SQL model merges as before; an SQL error names the line of the query
    rc, out = run_model("return { sql = function(ref) return 'SELECT category AS x FROM ' .. ref('bank.transactions')"
      .. " .. ' WHERE category IS NOT NULL GROUP BY 1' end }", "incremental")
    assert.are.equal(0, rc, out)
    assert.matches("inserted 3", out)
    refused("return { sql = function(ref) return 'SELECT id AS x\\nFROM ' .. ref('bank.transactions') .. '\\nWHERE nope' end }",
      'column "nope" does not exist %(line 3 of the query%)', "incremental")
  end)
end)
