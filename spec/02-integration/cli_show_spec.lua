-- dp-engine show (docs/cli.md#show): silver history, current rows, --as-of from the SCD2
-- history, bronze and raw previews, gold models; identifiers quoted, values as parameters.
local H = require "helpers"
local cjson = H.cjson

local DEMO = H.root .. "/metadata/demo"

describe("dp-engine show", function()
  local env, pg, ts1, ts2

  local function show_json(...)
    local rc, out, err = H.engine(env, "show", ...)
    assert.are.equal(0, rc, err)
    return H.json_stdout(out)
  end

  local function by_id(rows)
    local t = {}
    for _, r in ipairs(rows) do t[#t + 1] = r.id .. "=" .. tostring(r.amount) end
    return table.concat(t, " ")
  end

  setup(function()
    env = H.fresh_env("show")
    pg = H.pg(env)
    H.run_bank_exports(env, pg)
    local runs = assert(pg:query("SELECT to_char(run_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS ts "
      .. "FROM audit.system_run WHERE system = 'bank' ORDER BY started_at"))
    ts1, ts2 = runs[1].ts, runs[2].ts
  end)
  teardown(function() if pg then pg:close() end end)

  it("shows every version of a silver entity, by key and valid_from", function()
    local rows = show_json("bank.transactions", "--json")
    assert.are.equal(9, #rows)
    assert.are.equal("TX-1001=-1250 TX-1002=-54.37 TX-1003=3200 TX-1004=-12.99 TX-1005=-89.1 TX-1005=-91.1 TX-1006=-23.5 "
      .. "TX-1007=-45 TX-1008=150", by_id(rows))
    assert.is_false(rows[5]._dp_is_current)
    assert.is_true(rows[6]._dp_is_current)
    assert.are.equal(cjson.null, rows[6]._dp_valid_to)
    for _, k in ipairs({ "booked_on", "currency", "counterparty", "_dp_valid_from", "_dp_is_deleted" }) do
      assert.is_not_nil(rows[1][k], k)
    end
  end)

  it("shows only current rows with --current", function()
    local rows = show_json("bank.transactions", "--current", "--json")
    assert.are.equal("TX-1001=-1250 TX-1002=-54.37 TX-1003=3200 TX-1005=-91.1 TX-1006=-23.5 TX-1007=-45 TX-1008=150",
      by_id(rows))
  end)

  it("answers what the entity looked like then with --as-of", function()
    assert.are.equal("TX-1001=-1250 TX-1002=-54.37 TX-1003=3200 TX-1004=-12.99 TX-1005=-89.1 TX-1006=-23.5",
      by_id(show_json("bank.transactions", "--as-of", ts1, "--json")))
    assert.are.equal(by_id(show_json("bank.transactions", "--current", "--json")),
      by_id(show_json("bank.transactions", "--as-of", ts2, "--json")))
    assert.are.same({}, show_json("bank.transactions", "--as-of", "2000-01-01", "--json"))
  end)

  it("limits rows with --limit (0: all) and prints a table without --json", function()
    assert.are.equal(2, #show_json("bank.transactions", "--limit", "2", "--json"))
    assert.are.equal(9, #show_json("bank.transactions", "--limit", "0", "--json"))
    local rc, out = H.engine(env, "show", "bank.transactions", "--current", "--limit", "3")
    assert.are.equal(0, rc)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(4, #lines, out)
    assert.matches("^id +booked_on +amount", lines[1])
    assert.matches("^TX%-1001 ", lines[2])
  end)

  it("shows bronze documents and the newest raw file's records", function()
    local docs = show_json("bank.transactions", "--layer", "bronze", "--limit", "0", "--json")
    assert.are.equal(8, #docs) -- one document per key, TX-1004 marked deleted
    local deleted = 0
    for _, d in ipairs(docs) do
      assert.is_table(d.data)
      if d._dp.deleted then deleted = deleted + 1 end
    end
    assert.are.equal(1, deleted)
    local raw = show_json("bank.transactions", "--layer", "raw", "--limit", "0", "--json")
    assert.are.equal(7, #raw) -- export-2 as the source sent it
    assert.are.equal("-91.10", raw[4].amount)
    assert.are.equal("Energy Supplier", raw[4].counterparty.name)
  end)

  it("reads the newest raw file compressed as retention leaves it, and says which run adds a new column", function()
    local _, listed = H.sh("ls -t " .. H.sh_quote(env.DP_DATA_DIR) .. "/raw/bank/transactions/*/*/*/*.jsonl | head -1")
    local path = listed:gsub("%s+$", "")
    assert.is_true(#path > 0)
    assert.are.equal(0, (H.sh("gzip " .. H.sh_quote(path))))
    local raw = show_json("bank.transactions", "--layer", "raw", "--limit", "0", "--json")
    assert.are.equal(7, #raw)
    assert.are.equal("-91.10", raw[4].amount)
    assert.are.equal(0, (H.sh("gunzip " .. H.sh_quote(path .. ".gz"))))
    -- a column added to the metadata after the last run: not in the table until the next run
    local dir = H.tmpdir("show_meta")
    for _, f in ipairs({ "systems.json", "gold.json" }) do H.write_file(dir .. "/" .. f, H.read_file(H.root .. "/metadata/" .. f)) end
    local ents = cjson.decode(H.read_file(H.root .. "/metadata/entities.json"))
    for _, e in ipairs(ents) do
      if e.name == "transactions" then e.columns[#e.columns + 1] = { name = "memo", type = "string" } end
    end
    H.write_file(dir .. "/entities.json", cjson.encode(ents))
    local rc, out, err = H.engine(H.with(env, { DP_METADATA = dir }), "show", "bank.transactions")
    assert.are.equal(2, rc, err)
    assert.are.equal("", out)
    assert.matches("silver.bank__transactions has no column memo yet (the metadata added it): run `dp-engine run bank` first",
      err, 1, true)
    assert.is_nil(err:find("ERROR:", 1, true))
  end)

  it("says which run creates a table that does not exist yet", function()
    local rc, out, err = H.engine(env, "show", "fitness.sleep")
    assert.are.equal(2, rc)
    assert.are.equal("", out)
    assert.matches("silver.fitness__sleep does not exist yet: run `dp-engine run fitness` first", err, 1, true)
    rc, _, err = H.engine(env, "show", "gold.monthly_overview")
    assert.are.equal(2, rc)
    assert.matches("gold.monthly_overview does not exist yet: run `dp-engine gold run monthly_overview` first", err, 1, true)
    rc, _, err = H.engine(env, "show", "bank.nope")
    assert.are.equal(2, rc)
    assert.matches("no entity bank.nope in the metadata", err, 1, true)
  end)

  it("shows a gold model's rows", function()
    H.fill_inbox(env, "inbox/fitness", DEMO .. "/fitness/export-1")
    assert.are.equal(0, (H.engine(env, "run", "fitness")))
    assert.are.equal(0, (H.engine(env, "gold", "run", "monthly_overview")))
    local rows = show_json("gold.monthly_overview", "--json")
    local n = assert(pg:query("SELECT count(*)::int AS n FROM gold.monthly_overview"))[1].n
    assert.are.equal(tonumber(n), #rows)
    assert.is_true(#rows > 0)
    assert.is_not_nil(rows[1].month)
    local rc, _, err = H.engine(env, "show", "gold.monthly_overview", "--current")
    assert.are.equal(2, rc)
    assert.matches("a gold model has one table", err, 1, true)
  end)

  it("treats --as-of and --limit as values, never as SQL", function()
    local rc, out, err = H.engine(env, "show", "bank.transactions", "--as-of", "2026-01-01'; DROP TABLE silver.bank__transactions; --")
    assert.are.equal(2, rc)
    assert.are.equal("", out)
    assert.matches("--as-of takes a time", err, 1, true)
    rc, _, err = H.engine(env, "show", "bank.transactions", "--limit", "1; DROP TABLE x")
    assert.are.equal(2, rc)
    assert.matches("--limit takes a whole number", err, 1, true)
    assert.are.equal(9, #show_json("bank.transactions", "--json"))
  end)

  it("refuses options that do not go together (exit 2)", function()
    for _, args in ipairs({ { "--layer", "gold" }, { "--layer", "bronze", "--current" }, { "--current", "--as-of", "2026-01-01" },
      { "--as-of" }, { "--frobnicate" } }) do
      local rc, _, err = H.engine(env, "show", "bank.transactions", unpack(args))
      assert.are.equal(2, rc, table.concat(args, " ") .. ": " .. err)
    end
    local rc, _, err = H.engine(env, "show")
    assert.are.equal(2, rc)
    assert.matches("show needs SYSTEM.ENTITY or gold.MODEL", err, 1, true)
  end)

  it("escapes control characters in the table: source text never drives the terminal", function()
    local before = assert(pg:query("SELECT description FROM silver.bank__transactions WHERE id = 'TX-1001' "
      .. "AND _dp_is_current"))[1].description
    assert(pg:query("UPDATE silver.bank__transactions SET description = E'red\\x1b[31mX\\nnext\\tcol' "
      .. "WHERE id = 'TX-1001' AND _dp_is_current"))
    local rc, out = H.engine(env, "show", "bank.transactions", "--current", "--limit", "0")
    assert(pg:query("UPDATE silver.bank__transactions SET description = $1 WHERE id = 'TX-1001' AND _dp_is_current",
      before))
    assert.are.equal(0, rc)
    assert.is_nil(out:find("\27", 1, true), out)
    assert.truthy(out:find("red\\x1b[31mX\\nnext\\tcol", 1, true), out)
    local lines = 0
    for _ in out:gmatch("[^\n]+") do lines = lines + 1 end
    assert.are.equal(1 + 7, lines, out) -- the header and one line per current row
  end)

  it("counts a cell's width in terminal columns and cuts a long one at 60 of them, never inside a character", function()
    local before = assert(pg:query("SELECT description FROM silver.bank__transactions WHERE id = 'TX-1001' "
      .. "AND _dp_is_current"))[1].description
    -- é takes one column, 漢 (East Asian wide) two
    for _, case in ipairs({ { ch = "é", cols = 1 }, { ch = "漢", cols = 2 } }) do
      assert(pg:query("UPDATE silver.bank__transactions SET description = $1 WHERE id = 'TX-1001' AND _dp_is_current",
        case.ch:rep(70)))
      local rc, out = H.engine(env, "show", "bank.transactions", "--current", "--limit", "0")
      assert(pg:query("UPDATE silver.bank__transactions SET description = $1 WHERE id = 'TX-1001' AND _dp_is_current",
        before))
      assert.are.equal(0, rc)
      local fits = 60 / case.cols
      assert.truthy(out:find(case.ch:rep(fits) .. " ", 1, true), out)
      assert.is_nil(out:find(case.ch:rep(fits + 1), 1, true), out)
      assert.is_nil(out:find("[\195\230] ", 1), out) -- no character cut in half
      -- the columns of each line: the column after description starts at the same one in each
      local function columns(line)
        local t = {}
        for ch in line:gmatch("[^\128-\191][\128-\191]*") do
          t[#t + 1] = ch
          if ch == "漢" then t[#t + 1] = "" end -- its second column
        end
        return t
      end
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = columns(l) end
      local head = table.concat(lines[1])
      local after = assert(head:match("description +(%S+)"), head)
      local col = #columns(head:sub(1, head:find(after, head:find("description", 1, true), true) - 1))
      for i = 2, #lines do
        local row = lines[i]
        assert.are.equal("  ", row[col - 1] .. row[col], table.concat(row)) -- the separator, where the header has it
      end
    end
  end)
end)
