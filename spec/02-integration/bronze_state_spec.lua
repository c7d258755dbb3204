-- Bronze's state folder (DP_DATA_DIR/bronze/<system>/<entity>): the key file that stands in for
-- reading the collection, and the change files silver reads instead of asking bronze. Every
-- shortcut must give exactly what the slow path gives, and fall back whenever it cannot be sure.
local H = require "helpers"

local DEMO = H.root .. "/metadata/demo/bank"
local SHOP = H.root .. "/spec/fixtures/pipelines/shop"

local function state_dir(env, system, entity)
  return env.DP_DATA_DIR .. "/bronze/" .. system .. "/" .. entity
end

local function listing(dir)
  local _, out = H.sh("ls -1 " .. H.sh_quote(dir) .. " 2>/dev/null")
  local t = {}
  for name in out:gmatch("[^\n]+") do t[#t + 1] = name:gsub("^%x+%-%x+%-%x+%-%x+%-%x+", "<run>") end
  return t
end

local function bronze_details(pg, entity)
  return assert(pg:query([[SELECT details->>'stored_keys_from' AS src, details->>'duplicates' AS dups
    FROM audit.entity_layer_run WHERE layer = 'bronze' AND entity = $1 ORDER BY started_at DESC LIMIT 1]], entity))[1]
end

local function silver_counts(pg, entity)
  local r = assert(pg:query([[SELECT records_in, records_inserted, records_updated, records_deleted,
    records_unchanged, records_rejected FROM audit.entity_layer_run WHERE layer = 'silver' AND entity = $1
    ORDER BY started_at DESC LIMIT 1]], entity))[1]
  return { tonumber(r.records_in), tonumber(r.records_inserted), tonumber(r.records_updated),
    tonumber(r.records_deleted), tonumber(r.records_unchanged), tonumber(r.records_rejected) }
end

-- A fresh environment (metadata: a folder, default the project's) for the tests of a describe
-- block: f.env, f.pg.
local function fixture(name, metadata)
  local f = {}
  setup(function()
    f.env = H.fresh_env(name, { metadata = metadata })
    f.pg = H.pg(f.env)
  end)
  teardown(function() if f.pg then f.pg:close() end end)
  return f
end

-- The demo bank: export 1 in a whole run, then export 2 and export 1 again in raw + bronze only
-- runs, then a whole run of export 1 once more, whose silver catches up from what bronze left: TX-1002 and TX-1005 changed twice,
-- TX-1004 deleted and back, TX-1007 and TX-1008 new and deleted. before_silver(env) may tamper
-- with the state folder first. Returns silver's history and the silver counts.
local function catch_up(name, before_silver)
  local env = H.fresh_env(name)
  local pg = H.pg(env)
  H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
  assert.are.equal(0, (H.engine(env, "run", "bank", "--entity", "transactions")))
  local rc, err, _
  for _, export in ipairs({ "export-2", "export-1" }) do
    H.fill_inbox(env, "inbox/bank", DEMO .. "/" .. export)
    rc, _, err = H.engine(env, "run", "bank", "--entity", "transactions", "--layer", "raw", "--layer", "bronze")
    assert.are.equal(0, rc, err)
  end
  if before_silver then before_silver(env, pg) end
  rc, _, err = H.engine(env, "run", "bank", "--entity", "transactions")
  assert.are.equal(0, rc, err)
  local h, c = H.bank_history(pg), silver_counts(pg, "transactions")
  pg:close()
  return h, c, env
end

describe("bronze state", function()
  describe("the demo bank", function()
    local f = fixture("bronze_state")
    local env, pg
    before_each(function() env, pg = f.env, f.pg end)

    it("keeps a key file, and silver consumes the change files", function()
      H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
      assert.are.equal(0, (H.engine(env, "run", "bank", "--entity", "transactions")))
      assert.are.same({ src = "collection", dups = "0" }, bronze_details(pg, "transactions"))
      -- the change file was silver's input and is gone once silver committed
      assert.are.same({ "keys.idx" }, listing(state_dir(env, "bank", "transactions")))

      H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
      local rc, _, err = H.engine(H.with(env, { DP_LOG_LEVEL = "debug" }), "run", "bank", "--entity", "transactions")
      assert.are.equal(0, rc, err)
      assert.are.same({ src = "key file", dups = "0" }, bronze_details(pg, "transactions"))
      assert.matches("input from change files, staged and merged", err, 1, true)
      -- export 2: TX-1002 scd1 change, TX-1005 scd2 change, TX-1004 gone, TX-1007 and TX-1008 new
      assert.are.same({ 5, 2, 2, 1, 0, 0 }, silver_counts(pg, "transactions"))
    end)

    it("reads the collection when the key file is damaged, and says why", function()
      local keys = state_dir(env, "bank", "transactions") .. "/keys.idx"
      local f = assert(io.open(keys, "r+b"))
      f:seek("set", 128) -- the first key: now greater than the second
      f:write(string.rep("\255", 16))
      f:close()
      H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
      local rc, _, err = H.engine(env, "run", "bank", "--entity", "transactions")
      assert.are.equal(0, rc, err)
      assert.matches("is damaged at key", err, 1, true)
      assert.are.same({ src = "collection", dups = "0" }, bronze_details(pg, "transactions"))
      -- the same export again: nothing changed, whatever the key file said
      assert.are.same({ 0, 0, 0, 0, 0, 0 }, silver_counts(pg, "transactions"))
    end)

    it("reads the collection when it was dropped since the key file was written", function()
      local m = H.mongo()
      assert(m:command(env.DP_BRONZE_DB, '{"drop": "bank__transactions"}'))
      m:close()
      H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
      local rc, _, err = H.engine(env, "run", "bank", "--entity", "transactions")
      assert.are.equal(0, rc, err)
      assert.are.same({ src = "collection", dups = "0" }, bronze_details(pg, "transactions"))
      local n = assert(pg:query([[SELECT records_inserted FROM audit.entity_layer_run WHERE layer = 'bronze'
        AND entity = 'transactions' ORDER BY started_at DESC LIMIT 1]]))[1].records_inserted
      assert.are.equal("7", n) -- every key of export 2 written again
    end)

    it("reads the collection after a failed bronze load, since it may have written part", function()
      H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
      assert.are.equal(0, (H.engine(env, "run", "bank", "--entity", "transactions", "--layer", "raw")))
      -- what the key file's trust rests on: the audit says the last bronze load failed
      assert(pg:query([[INSERT INTO audit.entity_layer_run (run_id, run_ts, system, entity, layer, status, started_at)
        SELECT run_id, run_ts, system, entity, 'bronze', 'failed', now() FROM audit.entity_layer_run
        WHERE layer = 'raw' AND entity = 'transactions' ORDER BY started_at DESC LIMIT 1]]))
      local rc, _, err = H.engine(env, "run", "bank", "--entity", "transactions")
      assert.are.equal(0, rc, err)
      assert.are.same({ src = "collection", dups = "0" }, bronze_details(pg, "transactions"))
      -- and --full-refresh reads it too
      rc, _, err = H.engine(env, "run", "bank", "--entity", "transactions", "--full-refresh")
      assert.are.equal(0, rc, err)
      assert.are.same({ src = "collection", dups = "0" }, bronze_details(pg, "transactions"))
    end)
  end)

  describe("silver catching up over several bronze loads", function()
    local want, want_counts

    setup(function()
      -- the reference: the change files removed, so silver asks bronze itself
      want, want_counts = catch_up("catchup_query", function(env)
        H.sh("rm -f " .. H.sh_quote(state_dir(env, "bank", "transactions")) .. "/*.bson")
      end)
    end)

    it("gives from the change files what asking bronze gives", function()
      local files
      local got, counts = catch_up("catchup_files", function(env)
        files = listing(state_dir(env, "bank", "transactions"))
      end)
      assert.are.same({ "<run>.bson", "<run>.bson", "keys.idx" }, files)
      assert.are.same(want, got)
      assert.are.same({ 5, 0, 0, 0, 3, 0 }, counts)
      -- the same counts too: the keys changed in both loads are taken in once
      assert.are.same(want_counts, counts)
    end)

    it("stops at a damaged change file, saying which and what to do", function()
      local env2
      local ok = pcall(catch_up, "catchup_torn", function(env)
        env2 = env
        local _, first = H.sh("ls " .. H.sh_quote(state_dir(env, "bank", "transactions")) .. "/*.bson | head -1")
        local f = assert(io.open((first:gsub("%s+$", "")), "ab"))
        f:write("\100\0\0\0\2x\0")
        f:close()
      end)
      assert.is_false(ok) -- the silver step failed
      local pg = H.pg(env2)
      local r = assert(pg:query([[SELECT status, error FROM audit.entity_layer_run WHERE layer = 'silver'
        ORDER BY started_at DESC LIMIT 1]]))[1]
      pg:close()
      assert.are.equal("failed", r.status)
      assert.matches("change file .*%.bson is damaged near byte %d+; remove it and run again", r.error)
      -- as it says: without the file, silver asks bronze, and the history is the reference's
      H.sh("rm -f " .. H.sh_quote(state_dir(env2, "bank", "transactions")) .. "/*.bson")
      H.fill_inbox(env2, "inbox/bank", DEMO .. "/export-1")
      assert.are.equal(0, (H.engine(env2, "run", "bank", "--entity", "transactions")))
      pg = H.pg(env2)
      local got = H.bank_history(pg)
      pg:close()
      assert.are.same(want, got)
    end)

    it("asks bronze when a change file of the chain is missing", function()
      local got = catch_up("catchup_gap", function(env)
        local _, first = H.sh("ls " .. H.sh_quote(state_dir(env, "bank", "transactions")) .. "/*.bson | head -1")
        os.remove((first:gsub("%s+$", "")))
      end)
      assert.are.same(want, got)
    end)
  end)

  describe("a record replaced by a later load before silver ran", function()
    local f = fixture("bronze_state_rej", SHOP)
    local env, pg
    before_each(function() env, pg = f.env, f.pg end)

    local function put(name, lines)
      H.sh("rm -f " .. H.sh_quote(env.DP_DATA_DIR .. "/inbox/shop") .. "/*")
      H.write_export(env.DP_DATA_DIR .. "/inbox/shop/" .. name, table.concat(lines, "\n") .. "\n")
    end

    it("is not rejected when its key's last record is fine (on_type_error: reject)", function()
      put("orders-1.jsonl", { '{"order_id": 1, "total": "ten", "status": "paid"}' })
      assert.are.equal(0, (H.engine(env, "run", "shop", "--entity", "orders", "--layer", "raw", "--layer", "bronze")))
      put("orders-1.jsonl", { '{"order_id": 1, "total": "10.00", "status": "paid"}' })
      assert.are.equal(0, (H.engine(env, "run", "shop", "--entity", "orders", "--layer", "raw", "--layer", "bronze")))
      local rc, _, err = H.engine(env, "run", "shop", "--entity", "orders")
      assert.are.equal(0, rc, err)
      assert.are.same({ 1, 1, 0, 0, 0, 0 }, silver_counts(pg, "orders"))
      assert.are.same({}, assert(pg:query("SELECT * FROM silver.shop__orders__rejected")))
      assert.are.same({ { total = "10.00" } }, assert(pg:query("SELECT total::text FROM silver.shop__orders")))
    end)

    it("is rejected, once, when it is its key's last record", function()
      put("orders-1.jsonl", { '{"order_id": 1, "total": "10.00", "status": "paid"}', '{"order_id": 2, "total": "2", "status": "x"}' })
      assert.are.equal(0, (H.engine(env, "run", "shop", "--entity", "orders", "--layer", "raw", "--layer", "bronze")))
      put("orders-1.jsonl", { '{"order_id": 1, "total": "eleven", "status": "paid"}', '{"order_id": 2, "total": "2", "status": "x"}' })
      assert.are.equal(0, (H.engine(env, "run", "shop", "--entity", "orders", "--layer", "raw", "--layer", "bronze")))
      local rc, _, err = H.engine(env, "run", "shop", "--entity", "orders")
      assert.are.equal(0, rc, err)
      -- order 1: its last record is rejected, it keeps its current version; order 2 is new
      assert.are.same({ 2, 1, 0, 0, 0, 1 }, silver_counts(pg, "orders"))
      assert.are.same({ { column_name = "total", value = '"eleven"' } },
        assert(pg:query("SELECT column_name, value FROM silver.shop__orders__rejected")))
    end)
  end)

  describe("inserts on several connections (DP_BRONZE_WRITERS)", function()
    local f = fixture("bronze_state_writers", SHOP)

    it("keeps every record, in bronze, in the change file and in silver, whatever the number of writers", function()
      local env, pg = f.env, f.pg
      local n = 4321 -- four full batches and a partial one
      local lines = {}
      for i = 1, n do lines[i] = string.format('{"order_id": %d, "total": "%d.00", "status": "paid"}', i, i) end
      H.write_export(env.DP_DATA_DIR .. "/inbox/shop/orders-1.jsonl", table.concat(lines, "\n") .. "\n")
      local three = H.with(env, { DP_BRONZE_WRITERS = "3", DP_LOG_LEVEL = "debug" })
      local rc, _, err = H.engine(three, "run", "shop", "--entity", "orders")
      assert.are.equal(0, rc, err)
      local m = H.mongo()
      local docs = assert(m:find(env.DP_BRONZE_DB, "shop__orders", "{}", '{"projection": {"_id": 1}}'))
      m:close()
      assert.are.equal(n, #docs)
      local seen = {}
      for _, d in ipairs(docs) do seen[d] = true end
      local distinct = 0
      for _ in pairs(seen) do distinct = distinct + 1 end
      assert.are.equal(n, distinct)
      -- the change file holds each document once: silver read it, not the collection
      assert.matches("silver shop.orders: input from change files", err, 1, true)
      assert.are.equal(tostring(n), assert(pg:query("SELECT count(*) AS n FROM silver.shop__orders"))[1].n)
      assert.are.equal(tostring(n * (n + 1) / 2), assert(pg:query("SELECT sum(order_id)::text AS s FROM silver.shop__orders"))[1].s)
      -- one writer: the same
      lines[7] = '{"order_id": 7, "total": "70.00", "status": "paid"}'
      H.write_export(env.DP_DATA_DIR .. "/inbox/shop/orders-1.jsonl", table.concat(lines, "\n") .. "\n")
      rc, _, err = H.engine(H.with(env, { DP_BRONZE_WRITERS = "1" }), "run", "shop", "--entity", "orders")
      assert.are.equal(0, rc, err)
      assert.are.equal("1", assert(pg:query([[SELECT records_updated FROM audit.entity_layer_run
        WHERE layer = 'bronze' AND entity = 'orders' ORDER BY started_at DESC LIMIT 1]]))[1].records_updated)
      -- replacements and deletion marks on three writers: 100 changed, 50 gone (a full load)
      local kept = {}
      for i = 1, n do
        if i % 80 ~= 0 then
          local total = (i % 40 == 0) and (i + 1) or i
          kept[#kept + 1] = string.format('{"order_id": %d, "total": "%d.00", "status": "paid"}', i, total)
        end
      end
      H.write_export(env.DP_DATA_DIR .. "/inbox/shop/orders-1.jsonl", table.concat(kept, "\n") .. "\n")
      rc, _, err = H.engine(three, "run", "shop", "--entity", "orders")
      assert.are.equal(0, rc, err)
      local r = assert(pg:query([[SELECT records_updated, records_deleted FROM audit.entity_layer_run
        WHERE layer = 'bronze' AND entity = 'orders' ORDER BY started_at DESC LIMIT 1]]))[1]
      -- every 40th changed (108, of which the 54 multiples of 80 are gone instead), line 7 back
      assert.are.same({ tostring(54 + 1), "54" }, { r.records_updated, r.records_deleted })
      m = H.mongo()
      local gone = assert(m:find(env.DP_BRONZE_DB, "shop__orders", '{"_dp.deleted": true}'))
      m:close()
      assert.are.equal(54, #gone)
      assert.are.equal(tostring(n - 54),
        assert(pg:query("SELECT count(*) AS n FROM silver.shop__orders WHERE _dp_is_current AND NOT _dp_is_deleted"))[1].n)
    end)
  end)

  describe("its settings", function()
    local f = fixture("bronze_state_settings", SHOP)

    it("refuses a bad DP_BRONZE_WRITERS or DP_SORT_MEM at start, naming it, instead of using the default", function()
      for _, bad in ipairs({ { DP_BRONZE_WRITERS = "9", says = "DP_BRONZE_WRITERS must be a whole number from 1 to 8" },
        { DP_BRONZE_WRITERS = "two", says = "DP_BRONZE_WRITERS must be a whole number from 1 to 8" },
        { DP_SORT_MEM = "16M", says = "DP_SORT_MEM must be a number of bytes above 0" },
        { DP_SORT_MEM = "-1", says = "DP_SORT_MEM must be a number of bytes above 0" },
        { DP_SORT_MEM = " -9223372036854775809", says = "DP_SORT_MEM must be a number of bytes above 0" } }) do
        local says = bad.says
        bad.says = nil
        local e = H.with(f.env, bad)
        local rc, _, err = H.engine(e, "run", "shop", "--entity", "orders")
        assert.are.equal(2, rc, err)
        assert.matches(says, err, 1, true)
        -- doctor names it as a failed check; help still answers
        local out
        rc, out = H.engine(e, "doctor")
        assert.are.equal(1, rc, out)
        assert.matches("fail  bronze settings   " .. says, out, 1, true)
        assert.are.equal(0, (H.engine(e, "run", "--help")))
        bad.says = says
      end
      local rc, out = H.engine(H.with(f.env, { DP_SORT_MEM = "1000", DP_BRONZE_WRITERS = "3" }), "doctor")
      assert.matches("ok    bronze settings   sorts 1000 bytes in memory (DP_SORT_MEM), 3 writers", out, 1, true)
      assert.is_number(rc)
    end)
  end)

  describe("a key file of many keys", function()
    local f = fixture("bronze_state_sort", SHOP)
    local env, pg
    before_each(function() env, pg = f.env, f.pg end)

    it("keeps a larger key file in order, also when sorting goes through disk", function()
      local lines = {}
      for i = 1, 1200 do lines[i] = string.format('{"order_id": %d, "total": "%d.00", "status": "paid"}', i * 7919 % 1201, i) end
      H.write_export(env.DP_DATA_DIR .. "/inbox/shop/orders-1.jsonl", table.concat(lines, "\n") .. "\n")
      -- sorting memory for 16 records: the run's records and the collection's keys go through
      -- 75 sorted runs on disk (the first 64 merged into one on the way) and their merge
      local small = H.with(env, { DP_SORT_MEM = "1" })
      assert.are.equal(0, (H.engine(small, "run", "shop", "--entity", "orders")))
      assert.are.same({ src = "collection", dups = "0" }, bronze_details(pg, "orders"))
      local rc, _, err = H.engine(small, "run", "shop", "--entity", "orders", "--full-refresh")
      assert.are.equal(0, rc, err)
      assert.are.same({ src = "collection", dups = "0" }, bronze_details(pg, "orders"))
      assert.are.equal("1200", assert(pg:query([[SELECT records_unchanged FROM audit.entity_layer_run
        WHERE layer = 'bronze' AND entity = 'orders' ORDER BY started_at DESC LIMIT 1]]))[1].records_unchanged)
      assert.are.equal("1200", assert(pg:query("SELECT count(*) AS n FROM silver.shop__orders"))[1].n)
      rc, _, err = H.engine(env, "run", "shop", "--entity", "orders")
      assert.are.equal(0, rc, err)
      assert.are.equal("", err) -- no word of a damaged key file
      assert.are.same({ src = "key file", dups = "0" }, bronze_details(pg, "orders"))
      local keys = assert(io.open(state_dir(env, "shop", "orders") .. "/keys.idx", "rb")):read("*a")
      assert.are.equal(128 + 1200 * 25, #keys)
      local prev = ""
      for i = 0, 1199 do
        local k = keys:sub(129 + i * 25, 128 + i * 25 + 16)
        assert.is_true(k > prev, "key " .. i .. " out of order")
        prev = k
      end
    end)

  end)

  describe("progress", function()
    it("logs records per second per entity and layer while a step runs (not a terminal)", function()
      local env = H.fresh_env("bronze_state_progress")
      H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
      local rc, _, err = H.engine(H.with(env, { DP_LOG_LEVEL = "info", DP_PROGRESS_SECONDS = "0" }),
        "run", "bank", "--entity", "transactions")
      assert.are.equal(0, rc, err)
      assert.matches("raw bank%.transactions: 6 records so far %([%d,]+/s%)", err)
      assert.matches("bronze bank%.transactions: 6 records read so far %([%d,]+/s%)", err)
      assert.matches("bronze bank%.transactions: 6 keys compared so far", err)
      assert.matches("silver bank%.transactions: 6 records so far", err)
      -- the default interval (30 s) says nothing about a run this short
      H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
      rc, _, err = H.engine(H.with(env, { DP_LOG_LEVEL = "info" }), "run", "bank", "--entity", "transactions")
      assert.are.equal(0, rc, err)
      assert.is_nil(err:find("so far", 1, true))
    end)
  end)

  describe("progress on a terminal", function()
    it("is cleared before every log line (never a log line after it on the same row)", function()
      local env = H.fresh_env("progress_tty")
      local lines = {}
      for i = 1, 300000 do
        lines[i] = ('{"id":"TX-%d","booked_on":"2026-10-01","amount":-1.5,"currency":"EUR","description":"d"}'):format(i)
      end
      H.write_file(env.DP_DATA_DIR .. "/inbox/bank/transactions-2026-10.jsonl", table.concat(lines, "\n") .. "\n")
      H.sh("touch -d '1 minute ago' " .. H.sh_quote(env.DP_DATA_DIR .. "/inbox/bank/transactions-2026-10.jsonl"))
      local parts = { "env", "DP_LOG_LEVEL=info", "DP_PROGRESS_SECONDS=0" }
      for k, v in pairs(env) do
        if k:match("^DP_") and k ~= "DP_LOG_LEVEL" then parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end
      end
      parts[#parts + 1] = H.sh_quote(H.bin) .. " run bank --entity transactions --layer raw"
      local typescript = os.tmpname()
      -- script(1) gives the engine a terminal; what it drew lands in the typescript file
      local rc = H.sh("env -u LD_PRELOAD script -qec " .. H.sh_quote(table.concat(parts, " ")) .. " " .. typescript
        .. " >/dev/null 2>&1")
      local out = H.read_file(typescript)
      os.remove(typescript)
      assert.equal(0, rc, out)
      assert.truthy(out:find("records (", 1, true), "no progress line was drawn: " .. out:sub(1, 400))
      assert.truthy(out:find("raw bank.transactions: 300000 in", 1, true), out:sub(-600))
      -- "\r\27[K" clears the row; a log line's timestamp never follows "(N/s)" on the same row
      assert.is_nil(out:find("/s%)%d%d%d%d%-%d%d%-%d%dT"), out:sub(1, 600))
    end)
  end)

  describe("the bench's bronze baseline (dp.core)", function()
    it("exports a collection as BSON and inserts the same documents elsewhere", function()
      local env = H.fresh_env("bronze_state_bson")
      H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
      assert.are.equal(0, (H.engine(env, "run", "bank", "--entity", "transactions")))
      local file = H.tmpdir("bson") .. "/t.bson"
      local m = H.mongo()
      assert.are.equal(6, assert(m:export_bson(env.DP_BRONZE_DB, "bank__transactions", file)))
      assert.are.equal(6, assert(m:insert_bson(env.DP_BRONZE_DB, "copy", file)))
      local a = assert(m:find(env.DP_BRONZE_DB, "bank__transactions", "{}"))
      local b = assert(m:find(env.DP_BRONZE_DB, "copy", "{}"))
      table.sort(a)
      table.sort(b)
      assert.are.same(a, b)
      local f = assert(io.open(file, "ab"))
      f:write("\100\0\0\0\2x\0") -- a torn document at the end: 100 bytes announced, 7 there
      f:close()
      local ok, err = m:insert_bson(env.DP_BRONZE_DB, "copy2", file)
      assert.is_nil(ok)
      assert.matches("not a whole BSON file", err)
      m:close()
    end)
  end)

  describe("a first load that rejects many rows", function()
    local f = fixture("bronze_state_rejects", SHOP)

    it("keeps them all (more than fit the 4 MB kept in memory), in order", function()
      local lines = {}
      for i = 1, 20000 do
        lines[i] = string.format('{"order_id": %d, "total": "about %d euros", "status": "paid", "note": "%s"}', i, i,
          string.rep("n", 120))
      end
      H.write_export(f.env.DP_DATA_DIR .. "/inbox/shop/orders-1.jsonl", table.concat(lines, "\n") .. "\n")
      local rc, _, err = H.engine(f.env, "run", "shop", "--entity", "orders")
      assert.are.equal(0, rc, err)
      assert.are.same({ 20000, 0, 0, 0, 0, 20000 }, silver_counts(f.pg, "orders"))
      local r = assert(f.pg:query([[SELECT count(*) AS n, min(raw_line) AS lo, max(raw_line) AS hi,
        count(DISTINCT _dp_key_hash) AS keys FROM silver.shop__orders__rejected]]))[1]
      assert.are.same({ n = "20000", lo = "1", hi = "20000", keys = "20000" }, r)
      assert.are.equal("0", assert(f.pg:query("SELECT count(*) AS n FROM silver.shop__orders"))[1].n)
    end)
  end)

  describe("straight into an empty table", function()
    it("gives the rows the staged merge gives", function()
      local env = H.fresh_env("bronze_state_direct")
      local pg = H.pg(env)
      H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
      local rc, _, err = H.engine(H.with(env, { DP_LOG_LEVEL = "debug" }), "run", "bank", "--entity", "transactions")
      assert.are.equal(0, rc, err)
      assert.matches("input from change files, straight into the empty table", err, 1, true)
      local direct = H.bank_history(pg)
      -- a stranger's row makes the table non-empty: the replay stages and merges
      assert(pg:query([[CREATE TEMP TABLE one AS SELECT * FROM silver.bank__transactions LIMIT 1;
        UPDATE one SET id = 'STRANGER', _dp_key_hash = gen_random_uuid();
        DELETE FROM silver.bank__transactions;
        INSERT INTO silver.bank__transactions OVERRIDING SYSTEM VALUE SELECT * FROM one;]]))
      rc, _, err = H.engine(H.with(env, { DP_LOG_LEVEL = "debug" }), "replay", "bank", "--from", "bronze",
        "--entity", "transactions")
      assert.are.equal(0, rc, err)
      assert.matches("staged and merged", err, 1, true)
      assert(pg:query("DELETE FROM silver.bank__transactions WHERE id = 'STRANGER'"))
      assert.are.same(direct, H.bank_history(pg))
      pg:close()
    end)
  end)
end)
