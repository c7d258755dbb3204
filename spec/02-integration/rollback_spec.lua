-- dp-engine rollback (docs/lifecycle.md#undoing-a-run), against the real services.
-- The property: for random sequences of exports (inserts, scd1 and scd2 changes, deletions by a
-- full load and by a delete marker), run N then rollback N gives silver byte-identical to the
-- state after run N-1, and bronze the same documents (but _dp.loaded_at); running the same
-- export again afterwards gives silver the same content as the first time.
local H = require "helpers"

local META = H.root .. "/spec/fixtures/pipelines/rollback"
local TABLES = {
  "silver.rb__accounts", "silver.rb__accounts__rejected", "silver.rb__moves", "silver.rb__moves__rejected",
}

-- Every silver table, entity_state and entity_cursor as text, row by row in a fixed order.
local function dump(pg)
  local out = {}
  for _, t in ipairs(TABLES) do
    local exists = assert(pg:query("SELECT to_regclass($1) IS NOT NULL AS e", t))[1].e == "t"
    local rows = exists and assert(pg:query("SELECT to_jsonb(t)::text AS j FROM " .. t .. " t ORDER BY 1")) or {}
    local lines = {}
    for i, r in ipairs(rows) do lines[i] = r.j end
    out[t] = lines
  end
  for _, t in ipairs({ "dp.entity_state", "dp.entity_cursor" }) do
    local lines = {}
    local rows = assert(pg:query("SELECT to_jsonb(t)::text AS j FROM " .. t .. " t ORDER BY 1"))
    for i, r in ipairs(rows) do lines[i] = r.j end
    out[t] = lines
  end
  return out
end

-- The silver tables without what differs between two runs of the same export (ids, runs, times).
local function content(pg)
  local out = {}
  for _, t in ipairs({ "silver.rb__accounts", "silver.rb__moves" }) do
    local rows = assert(pg:query("SELECT (to_jsonb(t) - '_dp_id' - '_dp_run_id' - '_dp_run_ts' - '_dp_created_at'"
      .. " - '_dp_updated_at' - '_dp_valid_from' - '_dp_valid_to')::text || (_dp_valid_to IS NULL)::text AS j"
      .. " FROM " .. t .. " t ORDER BY 1"))
    local lines = {}
    for i, r in ipairs(rows) do lines[i] = r.j end
    out[t] = lines
  end
  return out
end

-- The bronze documents of both entities, decoded, without _dp.loaded_at, sorted.
local function bronze(env)
  local m = H.mongo()
  local out = {}
  for _, c in ipairs({ "rb__accounts", "rb__moves", "rb__accounts__rejected", "rb__moves__rejected" }) do
    local docs = assert(m:find(env.DP_BRONZE_DB, c, "{}"))
    local list = {}
    for i, js in ipairs(docs) do
      local d = H.cjson.decode(js)
      if d._dp then d._dp.loaded_at = nil; d._dp.rejected_at = nil end
      list[i] = d
    end
    table.sort(list, function(a, b) return H.cjson.encode(a._id) < H.cjson.encode(b._id) end)
    out[c] = list
  end
  m:close()
  return out
end

-- A seeded generator of exports: the accounts' full export and a file of moves per run.
local function generator(seed, inbox)
  math.randomseed(seed)
  local accounts, next_id, moves, next_move, n = {}, 1, {}, 1, 0
  local function acc_line(a)
    return ('{"id": %d, "name": "%s", "email": "%s", "balance": "%s"}'):format(a.id, a.name, a.email, a.balance)
  end
  local function move_line(m, op)
    return ('{"move_id": %d, "amount": "%s", "memo": "%s", "op": "%s"}'):format(m.id, m.amount, m.memo, op)
  end
  local function money() return ("%d.%02d"):format(math.random(0, 9999), math.random(0, 99)) end
  return function()
    n = n + 1
    for _ = 1, math.random(0, 3) do
      accounts[#accounts + 1] = { id = next_id, name = "n" .. next_id, email = "e" .. next_id, balance = money(),
        gone = false }
      next_id = next_id + 1
    end
    local lines = {}
    for _, a in ipairs(accounts) do
      local r = math.random()
      if a.gone then
        if r < 0.3 then a.gone = false end
      elseif r < 0.15 then a.gone = true
      elseif r < 0.35 then a.email = "e" .. a.id .. "." .. n
      elseif r < 0.5 then a.balance = money()
      elseif r < 0.6 then a.email = "x" .. n; a.name = "m" .. n
      end
      if not a.gone then lines[#lines + 1] = acc_line(a) end
    end
    if #lines == 0 then -- a full load needs an export with rows
      accounts[#accounts + 1] = { id = next_id, name = "n" .. next_id, email = "e", balance = "1.00", gone = false }
      next_id = next_id + 1
      lines[1] = acc_line(accounts[#accounts])
    end
    H.write_export(("%s/accounts-%04d.jsonl"):format(inbox, n), table.concat(lines, "\n") .. "\n")
    local ml = {}
    for _, m in ipairs(moves) do
      local r = math.random()
      if not m.deleted then
        if r < 0.15 then m.deleted = true; ml[#ml + 1] = move_line(m, "D")
        elseif r < 0.35 then m.memo = "memo" .. n; ml[#ml + 1] = move_line(m, "C")
        elseif r < 0.5 then m.amount = money(); ml[#ml + 1] = move_line(m, "C")
        end
      end
    end
    if math.random() < 0.3 and #moves > 0 then -- a record silver rejects (its key keeps its version)
      local m = moves[math.random(1, #moves)]
      ml[#ml + 1] = ('{"move_id": %d, "amount": "not money", "memo": "bad", "op": "C"}'):format(m.id)
    end
    for _ = 1, math.random(0, 3) do
      moves[#moves + 1] = { id = next_move, amount = money(), memo = "m" .. next_move }
      ml[#ml + 1] = move_line(moves[#moves], "I")
      next_move = next_move + 1
    end
    if #ml > 0 then
      H.write_export(("%s/moves-%04d.jsonl"):format(inbox, n), table.concat(ml, "\n") .. "\n")
    end
  end
end

local function last_run(pg)
  return assert(pg:query("SELECT run_id::text AS id FROM audit.system_run WHERE trigger_kind <> 'rollback' "
    .. "ORDER BY run_ts DESC LIMIT 1"))[1].id
end

describe("rollback", function()
  local env, pg

  local function fresh(name)
    if pg then pg:close() end
    local scripts = H.tmpdir(name .. "_scripts")
    assert(H.sh("mkdir -p " .. scripts .. " && cp -r " .. META .. "/gold " .. scripts .. "/gold && ln -sfn "
      .. H.root .. "/connectors " .. scripts .. "/connectors") == 0)
    env = H.fresh_env(name, { metadata = META })
    env.DP_SCRIPTS = scripts
    pg = H.pg(env)
    return generator, env.DP_DATA_DIR .. "/inbox/rb"
  end
  teardown(function() if pg then pg:close() end end)

  local function run()
    local rc, out, err = H.engine(env, "run", "rb")
    assert.are.equal(0, rc, tostring(out) .. tostring(err))
    return last_run(pg)
  end

  local function rollback(...)
    return H.engine(env, "rollback", ...)
  end

  for _, seed in ipairs({ 17, 4242, 90001 }) do
    it("run N then rollback N gives silver byte-identical to after run N-1 (seed " .. seed .. ")", function()
      local gen, inbox = fresh("rollback_p" .. seed)
      local next_export = gen(seed, inbox)
      local empty, empty_bronze = dump(pg), bronze(env)
      next_export()
      local first = run()
      local first_content = content(pg)
      -- the first run too: silver empty again (its tables stay), no progress, no cursor
      local rc, out, err = rollback(first)
      assert.are.equal(0, rc, tostring(out) .. tostring(err))
      assert.are.same(empty, dump(pg), "silver after rolling back the first run")
      assert.are.same(empty_bronze, bronze(env), "bronze after rolling back the first run")
      run()
      assert.are.same(first_content, content(pg))
      local before, before_bronze = dump(pg), bronze(env)
      for n = 2, 7 do
        next_export()
        local id = run()
        local after_content = content(pg)
        if n % 2 == 0 or n == 7 then
          rc, out, err = rollback(id)
          assert.are.equal(0, rc, tostring(out) .. tostring(err))
          assert.are.same(before, dump(pg), "silver after rolling back run " .. n)
          assert.are.same(before_bronze, bronze(env), "bronze after rolling back run " .. n)
          -- the same export again (its file is still in the inbox; the cursor went back)
          run()
          assert.are.same(after_content, content(pg), "silver after running run " .. n .. "'s export again")
        end
        before, before_bronze = dump(pg), bronze(env)
      end
    end)
  end

  describe("one history", function()
    local inbox, next_export, runs, states
    setup(function()
      local gen
      gen, inbox = fresh("rollback_cli")
      next_export = gen(7, inbox)
      runs, states = {}, {}
      for i = 1, 3 do
        next_export()
        runs[i] = run()
        states[i] = dump(pg)
      end
    end)

    it("--dry-run reports what would be undone and changes nothing", function()
      local rc, out, err = rollback(runs[3], "--dry-run", "--json")
      assert.are.equal(0, rc, err)
      local r = H.cjson.decode(out)
      assert.is_true(r.dry_run)
      assert.are.equal(H.cjson.null, r.rollback_run_id)
      assert.are.equal(runs[3], r.runs[1].run_id)
      local ents = {}
      for _, e in ipairs(r.runs[1].entities) do ents[e.entity] = e end
      local v = assert(pg:query("SELECT count(*) AS n FROM silver.rb__accounts WHERE _dp_run_id = $1", runs[3]))[1].n
      assert.are.equal(tonumber(v), ents.accounts.silver_versions_removed)
      assert.are.same(states[3], dump(pg))
      local rollbacks = assert(pg:query("SELECT count(*) AS n FROM audit.system_run WHERE trigger_kind = 'rollback'"))
      assert.are.equal("0", rollbacks[1].n)
      rc, out = rollback(runs[3], "--dry-run")
      assert.are.equal(0, rc)
      assert.matches("dry run, nothing changed", out, 1, true)
    end)

    it("refuses a run that is not the latest without --cascade, naming the later run", function()
      local rc, out, err = rollback(runs[2])
      assert.are.equal(2, rc, out)
      assert.matches("not the latest run", err, 1, true)
      assert.matches(runs[3], err, 1, true)
      assert.matches("--cascade", err, 1, true)
      assert.are.same(states[3], dump(pg))
    end)

    it("refuses an unknown run", function()
      local rc, _, err = rollback("01234567-89ab-7def-8123-456789abcdef")
      assert.are.equal(2, rc)
      assert.matches("no run 01234567", err, 1, true)
    end)

    it("moves the run's raw files to the quarantine folder and audits itself as a run", function()
      local raw = assert(pg:query("SELECT details->>'file' AS f FROM audit.entity_layer_run WHERE run_id = $1 "
        .. "AND entity = 'accounts' AND layer = 'raw'", runs[3]))[1].f
      assert.is_true(H.exists(env.DP_DATA_DIR .. "/" .. raw))
      local rc, out, err = rollback(runs[3], "--json")
      assert.are.equal(0, rc, err)
      local r = H.cjson.decode(out)
      assert.are.same(states[2], dump(pg))
      -- quarantine: the data file and its manifest
      assert.is_false(H.exists(env.DP_DATA_DIR .. "/" .. raw))
      local q = env.DP_DATA_DIR .. "/quarantine/" .. runs[3] .. "/" .. raw
      assert.is_true(H.exists(q))
      assert.is_true(H.exists(q:gsub("%.jsonl$", ".manifest.json")))
      -- the rollback's own run, and the undone run marked
      local a = assert(pg:query("SELECT run_id::text AS id, status, trigger_detail FROM audit.system_run "
        .. "WHERE trigger_kind = 'rollback'"))
      assert.are.equal(1, #a)
      assert.are.same({ id = r.rollback_run_id, status = "succeeded", trigger_detail = "rollback of " .. runs[3] },
        a[1])
      assert.are.equal(r.rollback_run_id, assert(pg:query(
        "SELECT rolled_back_by::text AS b FROM audit.system_run WHERE run_id = $1", runs[3]))[1].b)
      local st = assert(pg:query("SELECT DISTINCT status, details->>'status_before_rollback' AS was FROM "
        .. "audit.entity_layer_run WHERE run_id = $1 AND status <> 'skipped'", runs[3]))
      assert.are.same({ { status = "rolled_back", was = "succeeded" } }, st)
      local rows = assert(pg:query("SELECT entity, layer, status FROM audit.entity_layer_run WHERE run_id = $1 "
        .. "ORDER BY entity, layer", r.rollback_run_id))
      assert.are.equal(6, #rows)
      for _, row in ipairs(rows) do assert.are.equal("succeeded", row.status) end
      -- not twice
      rc, out, err = rollback(runs[3])
      assert.are.equal(2, rc, out)
      assert.matches("rolled back already", err, 1, true)
      -- nor the rollback itself
      rc, out, err = rollback(r.rollback_run_id)
      assert.are.equal(2, rc, out)
      assert.matches("cannot be undone", err, 1, true)
      -- the same export again: the quarantined file is not needed, and the state comes back
      runs[3] = run()
      states[3] = dump(pg)
    end)

    it("rebuilds the gold models that read the system", function()
      local function totals()
        return assert(pg:query("SELECT accounts::text AS n, total::text AS t FROM gold.rb_totals"))[1]
      end
      assert.are.equal(0, (H.engine(env, "gold", "run", "rb_totals")))
      local was = totals()
      next_export()
      -- the run to undo also adds an account, which the incremental model rb_balances merges in
      local _, newest = H.sh("ls " .. H.sh_quote(inbox) .. "/accounts-*.jsonl | tail -n 1")
      newest = newest:gsub("%s+$", "")
      local f = assert(io.open(newest, "a"))
      f:write('{"id": 900001, "name": "late", "email": "l", "balance": "5.00"}\n')
      f:close()
      H.backdate(newest)
      local id = run()
      assert.are.equal(0, (H.engine(env, "gold", "run", "rb_totals", "rb_balances")))
      assert.are.equal(1, #assert(pg:query("SELECT 1 FROM gold.rb_balances WHERE id = 900001")))
      local now = assert(pg:query("SELECT count(*)::text AS n, coalesce(sum(balance), 0)::text AS t "
        .. "FROM silver.rb__accounts_current"))[1]
      assert.are.same(now, totals())
      local rc, out, err = rollback(id)
      assert.are.equal(0, rc, tostring(out) .. tostring(err))
      assert.matches("gold: rebuilt", out, 1, true)
      assert.are.same(was, totals())
      -- the rebuild's run says why it ran: after the system's data changed, by which rollback
      local g = assert(pg:query("SELECT trigger_kind, trigger_detail FROM audit.system_run WHERE system = 'rb_totals' "
        .. "ORDER BY started_at DESC LIMIT 1"))[1]
      local rb = assert(pg:query("SELECT run_id::text AS id FROM audit.system_run WHERE trigger_kind = 'rollback' "
        .. "ORDER BY started_at DESC LIMIT 1"))[1].id
      assert.are.equal("after", g.trigger_kind)
      assert.are.equal("rebuilt by rollback " .. rb .. " (rollback of " .. id .. ")", g.trigger_detail)
      -- the incremental model is rebuilt with a full refresh: the accounts of the undone run are gone
      local function balances(sql) return assert(pg:query(sql .. " ORDER BY id")) end
      assert.are.same(balances("SELECT id::text, balance::text FROM silver.rb__accounts_current"),
        balances("SELECT id::text, balance::text FROM gold.rb_balances"))
      runs[4] = run()
      states[4] = dump(pg)
    end)

    it("--cascade undoes the later runs too, newest first", function()
      local rc, out, err = rollback(runs[2], "--cascade", "--json")
      assert.are.equal(0, rc, tostring(out) .. tostring(err))
      local r = H.cjson.decode(out)
      assert.are.same({ runs[4], runs[3], runs[2] }, { r.runs[1].run_id, r.runs[2].run_id, r.runs[3].run_id })
      assert.are.same(states[1], dump(pg))
      local b = assert(pg:query("SELECT count(*) AS n FROM audit.system_run WHERE rolled_back_by = $1",
        r.rollback_run_id))[1].n
      assert.are.equal("3", b)
    end)

    it("lets a later run of another entity be, and refuses a gold build", function()
      next_export()
      local rc, out, err = H.engine(env, "run", "rb", "--entity", "accounts")
      assert.are.equal(0, rc, tostring(out) .. tostring(err))
      local acc = last_run(pg)
      rc, out, err = H.engine(env, "run", "rb", "--entity", "moves")
      assert.are.equal(0, rc, tostring(out) .. tostring(err))
      local moves = dump(pg)["silver.rb__moves"]
      rc, out, err = rollback(acc)
      assert.are.equal(0, rc, tostring(out) .. tostring(err))
      local now = dump(pg)
      assert.are.same(states[1]["silver.rb__accounts"], now["silver.rb__accounts"])
      assert.are.same(moves, now["silver.rb__moves"])
      local gold = assert(pg:query("SELECT run_id::text AS id FROM audit.system_run WHERE system = 'rb_totals' "
        .. "ORDER BY run_ts DESC LIMIT 1"))[1].id
      rc, out, err = rollback(gold)
      assert.are.equal(2, rc, out)
      assert.matches("nothing to undo", err, 1, true)
    end)

    it("refuses, changing nothing, when a raw file bronze is rebuilt from is gone", function()
      next_export()
      local first = run()
      next_export()
      local id = run()
      local raw = assert(pg:query("SELECT details->>'file' AS f FROM audit.entity_layer_run WHERE run_id = $1 "
        .. "AND entity = 'accounts' AND layer = 'raw'", first))[1].f
      local path = env.DP_DATA_DIR .. "/" .. raw
      assert(os.rename(path, path .. ".away"))
      local before, before_bronze = dump(pg), bronze(env)
      local rc, _, err = rollback(id)
      assert(os.rename(path .. ".away", path))
      assert.are.equal(2, rc)
      assert.matches("the raw file " .. path .. " of run " .. first .. " is gone", err, 1, true)
      assert.are.same(before, dump(pg))
      assert.are.same(before_bronze, bronze(env))
      local marked = assert(pg:query("SELECT count(*) AS n FROM audit.system_run WHERE rolled_back_by IS NOT NULL "
        .. "AND run_id = $1", id))
      assert.are.equal("0", marked[1].n)
    end)

    it("undoes a replay from an older raw file", function()
      next_export()
      local old = run()
      next_export()
      run()
      local before, before_bronze = dump(pg), bronze(env)
      local rc, out, err = H.engine(env, "replay", "rb", "--from", "raw", "--run", old)
      assert.are.equal(0, rc, tostring(out) .. tostring(err))
      local replay = last_run(pg)
      assert.are_not.same(before, dump(pg))
      rc, out, err = rollback(replay)
      assert.are.equal(0, rc, tostring(out) .. tostring(err))
      assert.are.same(before, dump(pg))
      assert.are.same(before_bronze, bronze(env))
    end)
  end)
end)
