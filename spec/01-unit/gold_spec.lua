-- dp.gold without a database: script shape checks, ref checks, the dependency plans and the
-- hot-reloading loader.
local gold = require "dp.gold"
local H = require "helpers"

local MODEL = { name = "m", script = "m.lua", depends_on = { "bank.transactions", "up" },
  columns = { { name = "x", type = "integer" } } }

describe("dp.gold", function()
  local dir, path

  before_each(function()
    dir = H.tmpdir("goldunit")
    path = dir .. "/gold/m.lua"
  end)

  -- Writes the script with a distinct modification time (the loader compares mtime and size).
  local n = 0
  local function write(src)
    n = n + 1
    H.write_file(path, src)
    H.sh("touch -d '@" .. (1700000000 + n) .. "' " .. H.sh_quote(path))
  end

  it("one query only: the check knows PostgreSQL's strings, quoted names, dollar quotes and comments", function()
    local check = H.core.gold_sql_check
    for _, ok in ipairs({
      "SELECT 1", "  with a AS (SELECT 1) SELECT * FROM a", "VALUES (1)", "TABLE silver.x", "(SELECT 1) UNION (SELECT 2)",
      "SELECT ';' AS x", "SELECT 'it''s; fine'", "SELECT E'\\'; still a string'", [[SELECT "a;b" FROM t]],
      "SELECT $$ ; $$", "SELECT $tag$ ; $$ ; $tag$", "SELECT 1 -- ; comment", "SELECT /* ; /* nested ; */ ; */ 1",
      "SELECT 1;", "SELECT 1 ; -- trailing\n ;  ", "-- comment first\nSELECT 1", "select a$b FROM t",
    }) do
      assert.is_true(check(ok), ok)
    end
    for sql, why in pairs({
      ["SELECT 1; DELETE FROM audit.x"] = "the SQL holds a second statement after the ';' on line 1",
      ["SELECT 'a'\n;\nCOMMIT"] = "the SQL holds a second statement after the ';' on line 2",
      ["SELECT E'\\''; DROP TABLE t"] = "the SQL holds a second statement",
      ["SELECT $$x$$; SET ROLE dp"] = "the SQL holds a second statement",
      ["COMMIT"] = "only a query can run here (SELECT, WITH, VALUES or TABLE), not COMMIT (line 1)",
      ["\n  reset role"] = "not RESET (line 2)",
      ["/* x */ DO $$ BEGIN END $$"] = "not DO",
      ["  "] = "the SQL is empty",
      ["-- only a comment"] = "the SQL is empty",
    }) do
      local ok, err = check(sql)
      assert.is_nil(ok, sql)
      assert.matches(why, err, 1, true)
    end
  end)

  it("ref names the current silver view or a gold table, only for declared inputs", function()
    local ref = gold.make_ref(MODEL, 1)
    assert.are.equal('silver."bank__transactions_current"', ref("bank.transactions"))
    assert.are.equal('gold."up"', ref("up"))
    local ok, err = pcall(ref, "bank.accounts")
    assert.is_false(ok)
    assert.matches('ref("bank.accounts") is not declared in depends_on of gold model "m"', err, 1, true)
  end)

  it("checks the shape: exactly one of sql or rows, with its parameter; known keys only", function()
    local function shape(src)
      write(src)
      return select(2, gold.compile(path))
    end
    assert.is_nil(shape("return { sql = function(ref) return 'SELECT 1' end }"))
    assert.matches("give exactly one of sql", shape("return { description = 'x' }"), 1, true)
    assert.matches("give exactly one of sql", shape("return { sql = function(r) end, rows = function(c) end }"), 1, true)
    assert.matches("sql must take ref as its parameter", shape("return { sql = function() end }"), 1, true)
    assert.matches("rows must be a function(ctx), got \"x\"", shape("return { rows = 'x' }"), 1, true)
    assert.matches('unknown key "row" in the returned table (did you mean "rows"?)', shape("return { row = function(ctx) end }"), 1, true)
    assert.matches("batch_size must be an integer", shape("return { rows = function(ctx) end, batch_size = 0 }"), 1, true)
    assert.matches("m.lua:1: undefined global 'io'", shape("return io.open('/etc/passwd')"), 1, true)
  end)

  it("plans upstream models first, and the models downstream of a system", function()
    local meta = { gold = {
      { name = "c", depends_on = { "b", "bank.x" } },
      { name = "a", depends_on = { "fitness.y" } },
      { name = "b", depends_on = { "a" } },
      { name = "d", depends_on = { "listening.z" } },
    } }
    assert.are.same({ "a", "b", "c" }, gold.plan(meta, { "c" }))
    assert.are.same({ "a", "b" }, gold.plan(meta, { "b" }))
    assert.are.same({ "a", "b", "c" }, gold.plan_for_system(meta, "fitness"))
    assert.are.same({ "c" }, gold.plan_for_system(meta, "bank"))
    assert.are.same({}, gold.plan_for_system(meta, "none"))
    assert.has_error(function() gold.plan(meta, { "e" }) end, 'no gold model named "e" in gold.json')
  end)

  it("hot reload: an edited script is used at the next get; a broken one keeps the previous version", function()
    local logs = {}
    local loader = gold.loader { scripts_dir = dir, log = function(level, msg) logs[#logs + 1] = level .. " " .. msg end }
    write("return { sql = function(ref) return 'SELECT 1 AS x FROM ' .. ref('up') end }")
    local s1 = assert(loader:get(MODEL))
    assert.are.equal('SELECT 1 AS x FROM gold."up"', gold.render_sql(MODEL, s1))
    assert.are.equal(s1, loader:get(MODEL)) -- unchanged file: the same compiled script

    write("return { sql = function(ref) return 'SELECT 2 AS x FROM ' .. ref('up') end }")
    local s2 = assert(loader:get(MODEL))
    assert.are_not.equal(s1, s2)
    assert.are.equal('SELECT 2 AS x FROM gold."up"', gold.render_sql(MODEL, s2))

    write("return { sql = function(ref)\n  return 'SELECT 3' ..\nend }")
    local s3, err = loader:get(MODEL)
    assert.are.equal(s2, s3)
    assert.matches("gold model m: " .. path:gsub("%p", "%%%0") .. ":3: unexpected symbol near 'end'", err)
    assert.matches("^warn gold model m: .*:3: unexpected symbol near 'end' %(keeping the previous version%)$", logs[#logs])

    -- an undeclared ref is a load error too: the previous version stays
    write("return { sql = function(ref)\n  return 'SELECT 4 FROM ' .. ref('bank.accounts')\nend }")
    s3, err = loader:get(MODEL)
    assert.are.equal(s2, s3)
    assert.matches('m.lua:2: ref("bank.accounts") is not declared', err, 1, true)

    write("return { sql = function(ref) return 'SELECT 5 AS x FROM ' .. ref('up') end }")
    local s5, err5 = loader:get(MODEL)
    assert.is_nil(err5)
    assert.are.equal('SELECT 5 AS x FROM gold."up"', gold.render_sql(MODEL, s5))
  end)

  it("a script that never loaded returns nil and the error", function()
    local loader = gold.loader { scripts_dir = dir }
    write("return {")
    local s, err = loader:get(MODEL)
    assert.is_nil(s)
    assert.matches("gold model m: .*m%.lua:1: unexpected symbol near '<eof>'", err)
    os.remove(path)
    s, err = loader:get(MODEL)
    assert.is_nil(s)
    assert.matches("gold model m: .*m%.lua: ", err)
  end)

  it("encodes emitted rows exactly: integers as integers, strings as given, tables as JSON", function()
    local cjson = require("cjson").new()
    local cols = { x = true, y = true, z = true }
    local js = gold.row_json(MODEL, { x = 9007199254740991, y = "9007199254740993", z = { a = 1 } }, cols, cjson)
    assert.are.same({ x = 9007199254740991, y = "9007199254740993", z = { a = 1 } }, cjson.decode(js))
    assert.matches('"x":9007199254740991', js, 1, true)
    local none, err = gold.row_json(MODEL, { w = 1 }, cols, cjson)
    assert.is_nil(none)
    assert.matches('row has no column "w"', err, 1, true)
  end)
end)
