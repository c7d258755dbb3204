-- The data lifecycle (docs/lifecycle.md): raw files written compressed, `dp-engine retention` on
-- back-dated files and a moved clock (DP_TEST_NOW, no sleeping), replay of compressed files, and
-- `dp-engine forget` leaving no trace of a key's values in any store, then keeping it out.
local H = require "helpers"

local DEMO = H.root .. "/metadata/demo/bank"
local DAY = 86400

-- A copy of the repository's metadata with lifecycle settings on the bank's entities.
local function lifecycle_metadata()
  local dir = H.tmpdir("lifecycle-meta")
  assert(H.sh("cp -r " .. H.sh_quote(H.root .. "/metadata") .. "/. " .. H.sh_quote(dir)) == 0)
  local ents = H.cjson.decode(H.read_file(dir .. "/entities.json"))
  for _, e in ipairs(ents) do
    if e.system == "bank" and e.name == "transactions" then
      e.retention = { raw_days = 1, raw_delete_days = 30, bronze_deleted_days = 10, silver_history_days = 20 }
    elseif e.system == "bank" and e.name == "accounts" then
      e.raw = { compression = "gzip" }
    end
  end
  H.write_file(dir .. "/entities.json", H.cjson.encode(ents))
  return dir
end

-- An incremental gold model that holds the key (bank transactions by id): a forget must take the
-- key's row from it too (gold is rebuilt with a full refresh).
local function with_incremental_model(env)
  local scripts = H.tmpdir("lifecycle-scripts")
  assert(H.sh("mkdir -p " .. H.sh_quote(scripts .. "/gold") .. " && cp " .. H.sh_quote(H.root .. "/gold") .. "/*.lua "
    .. H.sh_quote(scripts .. "/gold") .. " && ln -s " .. H.sh_quote(H.root .. "/connectors") .. " "
    .. H.sh_quote(scripts .. "/connectors")) == 0)
  H.write_file(scripts .. "/gold/tx_amounts.lua",
    'return { sql = function(ref) return "SELECT id, amount FROM " .. ref("bank.transactions") end }\n')
  local gold = H.cjson.decode(H.read_file(env.DP_METADATA .. "/gold.json"))
  gold[#gold + 1] = { name = "tx_amounts", description = "Each transaction's amount, merged by id.",
    script = "tx_amounts.lua", depends_on = { "bank.transactions" }, materialization = "incremental",
    primary_key = { "id" }, columns = { { name = "id", type = "text", nullable = false },
      { name = "amount", type = "decimal", precision = 14, scale = 2 } } }
  H.write_file(env.DP_METADATA .. "/gold.json", H.cjson.encode(gold))
  env.DP_SCRIPTS = scripts
end

local function raw_files(env, entity)
  local dir = env.DP_DATA_DIR .. "/raw/bank/" .. entity
  local _, out = H.sh("find " .. H.sh_quote(dir) .. " -type f -name '*.jsonl*' | sort")
  local files = {}
  for p in out:gmatch("[^\n]+") do files[#files + 1] = p end
  return files
end

-- The text of a raw file, plain or gzip.
local function raw_text(path)
  if path:match("%.gz$") then
    local rc, out = H.sh("zcat " .. H.sh_quote(path))
    assert(rc == 0, "zcat failed on " .. path)
    return out
  end
  return H.read_file(path)
end

local function manifest(path)
  return H.cjson.decode(H.read_file((path:gsub("%.jsonl%.gz$", ""):gsub("%.jsonl$", "")) .. ".manifest.json"))
end

local function backdate(path, days)
  assert(H.sh("touch -d '" .. days .. " days ago' " .. H.sh_quote(path)) == 0)
end

local function latest_retention(pg, action)
  return assert(pg:query([[SELECT items, kept, bytes_before, bytes_after, dry_run::text, status, details::text
    FROM audit.retention_run WHERE entity = 'transactions' AND action = $1 ORDER BY created_at DESC LIMIT 1]],
    action))[1]
end

describe("lifecycle", function()
  local env, pg, run1, run2, want_history

  setup(function()
    env = H.fresh_env("lifecycle", { metadata = lifecycle_metadata() })
    pg = H.pg(env)
    run1, run2 = H.run_bank_exports(env, pg)
    want_history = H.bank_history(pg)
  end)
  teardown(function() if pg then pg:close() end end)

  it("writes raw files gzip-compressed from the start with raw.compression, and loads them", function()
    local files = raw_files(env, "accounts")
    assert.are.equal(2, #files)
    for _, f in ipairs(files) do
      assert.matches("%.jsonl%.gz$", f)
      assert.matches("NL20INGB0001234567", raw_text(f), 1, true)
      local m = manifest(f)
      assert.matches("%.jsonl%.gz$", m.details.file)
      assert.are.equal(2, m.details.records)
    end
    local n = assert(pg:query("SELECT count(*) AS n FROM silver.bank__accounts WHERE _dp_is_current"))[1].n
    assert.are.equal("2", n)
    -- plain files for the entity without the setting
    for _, f in ipairs(raw_files(env, "transactions")) do assert.matches("%.jsonl$", f) end
  end)

  it("retention --dry-run counts what it would do, changes nothing, and is audited as a dry run", function()
    local files = raw_files(env, "transactions")
    for _, f in ipairs(files) do backdate(f, 2) end
    local rc, out, err = H.engine(env, "retention", "--dry-run", "--system", "bank")
    assert.are.equal(0, rc, err)
    assert.matches("(dry run)", out, 1, true)
    assert.are.same(files, raw_files(env, "transactions"))
    local r = latest_retention(pg, "compress_raw")
    assert.are.same({ "2", "true", "succeeded" }, { r.items, r.dry_run, r.status })
  end)

  it("compresses raw files older than raw_days, keeps manifests true, and replay reads them", function()
    local before = {}
    for _, f in ipairs(raw_files(env, "transactions")) do
      before[#before + 1] = { text = raw_text(f), m = manifest(f) }
    end
    local rc, out, err = H.engine(env, "retention", "--json")
    assert.are.equal(0, rc, err)
    local res = H.cjson.decode(out)
    assert.are.equal(false, res.dry_run)
    local files = raw_files(env, "transactions")
    assert.are.equal(2, #files)
    local r = latest_retention(pg, "compress_raw")
    assert.are.same({ "2", "false", "succeeded" }, { r.items, r.dry_run, r.status })
    assert.is_true(tonumber(r.bytes_after) < tonumber(r.bytes_before))
    for i, f in ipairs(files) do
      assert.matches("%.jsonl%.gz$", f)
      assert.are.equal(before[i].text, raw_text(f))
      local m = manifest(f)
      assert.are.equal("gzip", m.details.compression)
      assert.matches("%.jsonl%.gz$", m.details.file)
      -- the content is described as before: records, bytes, checksum of the lines
      assert.are.equal(before[i].m.details.sha256, m.details.sha256)
      assert.are.equal(before[i].m.details.records, m.details.records)
      assert.are.equal(#before[i].text, m.details.bytes)
    end
    -- the same silver from the compressed files
    assert(pg:query("DROP TABLE silver.bank__transactions CASCADE"))
    assert(pg:query("DELETE FROM dp.entity_state WHERE entity = 'transactions'"))
    local m = H.mongo()
    assert(m:command(env.DP_BRONZE_DB, '{"drop": "bank__transactions"}'))
    m:close()
    for _, run in ipairs({ run1, run2 }) do
      rc, _, err = H.engine(env, "replay", "bank", "--from", "raw", "--run", run, "--entity", "transactions")
      assert.are.equal(0, rc, err)
    end
    assert.are.same(want_history, H.bank_history(pg))
  end)

  it("deletes raw files older than raw_delete_days, but keeps the one the cursor and replay need", function()
    -- the files were back-dated 2 days before compression, which kept their times: 29 days
    -- older, they are 31 days old (counted from their export, not from the compression)
    for _, f in ipairs(raw_files(env, "transactions")) do
      assert.matches("%.jsonl%.gz$", f)
      assert(H.sh("touch -d @$(( $(stat -c %Y " .. H.sh_quote(f) .. ") - 29 * 86400 )) " .. H.sh_quote(f)) == 0)
    end
    local rc, _, err = H.engine(env, "retention", "--system", "bank")
    assert.are.equal(0, rc, err)
    local r = latest_retention(pg, "delete_raw")
    assert.are.same({ "1", "1", "succeeded" }, { r.items, r.kept, r.status })
    local files = raw_files(env, "transactions")
    assert.are.equal(1, #files)
    assert.matches(run2, files[1], 1, true)
    local _, left = H.sh("find " .. H.sh_quote(env.DP_DATA_DIR .. "/raw/bank/transactions") .. " -type f")
    assert.is_nil(left:find(run1, 1, true)) -- the file and its manifest
    assert.matches(run1, r.details, 1, true)
  end)

  it("keeps the raw file of a replay that did not finish", function()
    -- a replay of run 1 that crashed: its audit rows say so
    local id = "01900000-0000-7000-8000-0000000000aa"
    assert(pg:query([[INSERT INTO audit.system_run (run_id, run_ts, system, trigger_kind, status, started_at,
      engine_version) VALUES ($1, now(), 'bank', 'replay', 'crashed', now(), 'spec')]], id))
    assert(pg:query([[INSERT INTO audit.entity_layer_run (run_id, run_ts, system, entity, layer, status, started_at,
      details) VALUES ($1, now(), 'bank', 'transactions', 'bronze', 'crashed', now(),
      jsonb_build_object('replay_of', $2::text))]],
      id, run2))
    -- run 2 is also the newest raw run; make a newer one so that only the replay keeps it
    assert(pg:query("UPDATE audit.entity_layer_run SET started_at = started_at - interval '1 day' WHERE run_id = $1",
      run2))
    assert(pg:query([[INSERT INTO audit.system_run (run_id, run_ts, system, status, started_at, engine_version)
      VALUES ('01900000-0000-7000-8000-0000000000bb', now(), 'bank', 'succeeded', now(), 'spec')]]))
    assert(pg:query([[INSERT INTO audit.entity_layer_run (run_id, run_ts, system, entity, layer, status, started_at,
      details) VALUES ('01900000-0000-7000-8000-0000000000bb', now(), 'bank', 'transactions', 'raw', 'succeeded', now(),
      '{"file": "raw/bank/transactions/none.jsonl"}')]]))
    local rc, _, err = H.engine(env, "retention", "--system", "bank")
    assert.are.equal(0, rc, err)
    local r = latest_retention(pg, "delete_raw")
    assert.are.same({ "0", "1" }, { r.items, r.kept })
    assert.are.equal(1, #raw_files(env, "transactions"))
    assert(pg:query("DELETE FROM audit.entity_layer_run WHERE run_id::text LIKE '01900000-%'"))
    assert(pg:query("DELETE FROM audit.system_run WHERE run_id::text LIKE '01900000-%'"))
  end)

  it("skips a system whose run lock is held (a run or replay is on), exit 1", function()
    local other = H.pg(env)
    assert(other:query("SELECT pg_advisory_lock(hashtextextended('dp-engine/system/' || 'bank', 0))"))
    local rc, out = H.engine(env, "retention", "--system", "bank")
    local rcj, outj = H.engine(env, "retention", "--system", "bank", "--json")
    other:close()
    assert.are.equal(1, rc)
    assert.matches("bank: skipped", out, 1, true)
    assert.are.equal(1, rcj)
    local res = H.cjson.decode(outj)
    assert.are.same({}, res.actions)
    assert.are.equal("bank", res.skipped[1].system)
    assert.matches("already running", res.skipped[1].error, 1, true)
  end)

  it("purges old deleted bronze documents and drops old closed silver versions, never a current one", function()
    local current = assert(pg:query("SELECT count(*) AS n FROM silver.bank__transactions WHERE _dp_is_current"))[1].n
    local closed = assert(pg:query("SELECT count(*) AS n FROM silver.bank__transactions WHERE NOT _dp_is_current"))[1].n
    assert.is_true(tonumber(closed) > 0)
    -- 5 days on: nothing is old enough yet
    local now = os.time()
    local rc, _, err = H.engine(H.with(env, { DP_TEST_NOW = tostring(now + 5 * DAY) }), "retention")
    assert.are.equal(0, rc, err)
    assert.are.equal("0", latest_retention(pg, "purge_bronze").items)
    assert.are.equal("0", latest_retention(pg, "drop_silver_history").items)
    -- 25 days on: TX-1004 (deleted by run 2) leaves bronze, the closed versions leave silver
    rc, _, err = H.engine(H.with(env, { DP_TEST_NOW = tostring(now + 25 * DAY) }), "retention")
    assert.are.equal(0, rc, err)
    assert.are.equal("1", latest_retention(pg, "purge_bronze").items)
    assert.are.equal(closed, latest_retention(pg, "drop_silver_history").items)
    for _, d in ipairs(H.bronze_docs(env, "bank__transactions")) do assert.is_false(d._dp.deleted) end
    local after = assert(pg:query([[SELECT count(*) FILTER (WHERE _dp_is_current) AS cur,
      count(*) FILTER (WHERE NOT _dp_is_current) AS closed FROM silver.bank__transactions]]))[1]
    assert.are.same({ cur = current, closed = "0" }, after)
    -- the next run after the purge is as before: nothing new
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
    assert.are.equal(0, (H.engine(env, "run", "bank", "--entity", "transactions")))
    local n = assert(pg:query([[SELECT records_inserted AS i, records_updated AS u FROM audit.entity_layer_run
      WHERE layer = 'silver' ORDER BY started_at DESC LIMIT 1]]))[1]
    assert.are.same({ i = "0", u = "0" }, n)
  end)

  it("runs under serve as a daily job at DP_RETENTION_AT (UTC)", function()
    local function count()
      return tonumber(assert(pg:query("SELECT count(*) AS n FROM audit.retention_run"))[1].n)
    end
    local before = count()
    local t = os.time()
    local slot = t - t % DAY + DAY + 3 * 3600 + 30 * 60 -- tomorrow 03:30Z
    local out, err, pidfile, rcfile = os.tmpname(), os.tmpname(), os.tmpname(), os.tmpname()
    os.remove(rcfile)
    local vars = { DP_LISTEN = "127.0.0.1:0", DP_API_TOKEN = "spec-lifecycle-token-0123456789",
      DP_RETENTION_AT = "03:30", DP_TEST_NOW = tostring(slot - 2), DP_LOG_LEVEL = "info" }
    local parts = { "env" }
    for k, v in pairs(H.with(env, vars)) do
      if k:match("^DP_") then parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end
    end
    local inner = "echo $$ > " .. pidfile .. "; exec " .. table.concat(parts, " ") .. " " .. H.sh_quote(H.bin)
      .. " serve >" .. out .. " 2>" .. err
    H.sh("(sh -c " .. H.sh_quote(inner) .. "; echo $? > " .. rcfile .. ") >/dev/null 2>&1 & true")
    for _ = 1, 100 do
      if (H.try_read(pidfile) or ""):match("%d+") then break end
      H.sh("sleep 0.05")
    end
    local pid = H.read_file(pidfile):match("%d+")
    local ok = false
    for _ = 1, 300 do
      if count() >= before + 4 then ok = true break end
      H.sh("sleep 0.1")
    end
    H.sh("kill -TERM " .. pid .. "; for i in $(seq 1 400); do [ -s " .. rcfile .. " ] && break; sleep 0.05; done")
    local log, rc = H.read_file(err), tonumber(H.try_read(rcfile) or "")
    os.remove(out); os.remove(err); os.remove(pidfile); os.remove(rcfile)
    assert.is_true(ok, "no retention rows after the slot:\n" .. log)
    assert.are.equal(0, rc, log) -- a clean stop, also with the job's timer armed again
    assert.matches("serve: daily retention starts", log, 1, true)
    assert.matches("serve: retention done", log, 1, true)
  end)

  it("refuses bad retention input with a clear message", function()
    local rc, _, err = H.engine(env, "retention", "--system", "nope")
    assert.are.equal(2, rc)
    assert.matches("no system named nope", err, 1, true)
    rc, _, err = H.engine(env, "retention", "--keep")
    assert.are.equal(2, rc)
    assert.matches("unknown option: --keep", err, 1, true)
  end)
end)

describe("forget", function()
  local env, pg, outputs
  local old_manifests = {} -- before the forget: path -> text
  -- values of TX-1005 found nowhere else in the bank demo
  local NEEDLES = { "TX-1005", "Energy Supplier", "NL44INGB0001234567", "Electricity" }

  local function engine(e, ...)
    local rc, out, err = H.engine(e, ...)
    outputs[#outputs + 1] = out .. err
    return rc, out, err
  end

  local function traces(where, text, found)
    for _, n in ipairs(NEEDLES) do
      if text and text:find(n, 1, true) then found[#found + 1] = where .. " holds " .. n end
    end
  end

  -- Every place a value could be: the engine's output, every table of the database, every
  -- bronze collection, every file under the data folder except the source's own inbox.
  local function all_traces()
    local found = {}
    for i, text in ipairs(outputs) do traces("engine output " .. i, text, found) end
    local tables = assert(pg:query([[SELECT table_schema || '.' || quote_ident(table_name) AS t
      FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
      AND table_type = 'BASE TABLE' ORDER BY 1]]))
    for _, r in ipairs(tables) do
      local rows = assert(pg:query("SELECT t::text AS row FROM " .. r.t .. " t"))
      local texts = {}
      for _, row in ipairs(rows) do texts[#texts + 1] = row.row end
      traces("table " .. r.t, table.concat(texts, "\n"), found)
    end
    local m = H.mongo()
    local reply = H.cjson.decode((assert(m:command(env.DP_BRONZE_DB, '{"listCollections": 1, "nameOnly": true}'))))
    for _, c in ipairs(reply.cursor.firstBatch) do
      traces("bronze " .. c.name, table.concat(assert(m:find(env.DP_BRONZE_DB, c.name, "{}")), "\n"), found)
    end
    m:close()
    local _, files = H.sh("find " .. H.sh_quote(env.DP_DATA_DIR) .. " -type f -not -path '*/inbox/*'")
    for path in files:gmatch("[^\n]+") do
      traces(path, path:match("%.gz$") and raw_text(path) or H.read_file(path), found)
    end
    return found
  end

  setup(function()
    outputs = {}
    env = H.fresh_env("forget", { metadata = lifecycle_metadata() })
    env.DP_LOG_LEVEL = "debug"
    with_incremental_model(env)
    pg = H.pg(env)
    -- the gold model monthly_overview reads bank.transactions and fitness.activities
    H.fill_inbox(env, "inbox/fitness", H.root .. "/metadata/demo/fitness/export-1")
    assert.are.equal(0, (engine(env, "run", "fitness")))
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
    assert.are.equal(0, (engine(env, "run", "bank", "--with-gold")))
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
    assert.are.equal(0, (engine(env, "run", "bank", "--with-gold")))
    -- one raw file compressed: forget rewrites both forms
    local f = raw_files(env, "transactions")[1]
    assert(H.sh("gzip " .. H.sh_quote(f)) == 0)
    -- and a copy as a rollback quarantines a run's raw files: forget rewrites those too
    local rel = raw_files(env, "transactions")[2]:sub(#env.DP_DATA_DIR + 2)
    local q = env.DP_DATA_DIR .. "/quarantine/01900000-0000-7000-8000-0000000000cc/" .. rel
    assert(H.sh("mkdir -p " .. H.sh_quote(q:match("^(.*)/")) .. " && cp " .. H.sh_quote(env.DP_DATA_DIR .. "/" .. rel)
      .. " " .. H.sh_quote(q)) == 0)
  end)
  teardown(function() if pg then pg:close() end end)

  it("--dry-run counts every store and changes nothing", function()
    local rc, out, err = engine(env, "forget", "bank.transactions", "--key", "id=TX-1005", "--dry-run")
    assert.are.equal(0, rc, err)
    assert.matches("3 lines in 3 files", out, 1, true)
    assert.matches("1 documents", out, 1, true)
    assert.matches("2 versions", out, 1, true)
    assert.matches("[1-9]%d* before%-images of rollback", out) -- run 2 closed a version of it
    assert.matches("would rebuild \"monthly_overview\"", out, 1, true)
    local n = assert(pg:query("SELECT count(*) AS n FROM silver.bank__transactions WHERE id = 'TX-1005'"))[1].n
    assert.are.equal("2", n)
    assert.are.equal("0", assert(pg:query("SELECT count(*) AS n FROM dp.forgotten_key"))[1].n)
  end)

  it("says what is wrong with a key it cannot use", function()
    local rc, _, err = engine(env, "forget", "bank.transactions", "--key", "iban=1")
    assert.are.equal(2, rc)
    assert.matches("iban is not a primary-key column of bank.transactions", err, 1, true)
    rc, _, err = engine(env, "forget", "bank.nope", "--key", "id=1")
    assert.are.equal(2, rc)
    assert.matches("no entity bank.nope", err, 1, true)
    rc, _, err = engine(env, "forget", "bank.transactions")
    assert.are.equal(2, rc)
    assert.matches("forget needs --key", err, 1, true)
  end)

  it("removes the key from raw, bronze, silver and gold and leaves no trace of its values", function()
    local found = all_traces()
    assert.is_true(#found > 0, "the needles are there before forget")
    for _, f in ipairs(raw_files(env, "transactions")) do
      local m = (f:gsub("%.jsonl%.gz$", ""):gsub("%.jsonl$", "")) .. ".manifest.json"
      old_manifests[m] = H.read_file(m)
    end
    local rc, out, err = engine(env, "forget", "bank.transactions", "--key", "id=TX-1005")
    assert.are.equal(0, rc, err .. out)
    assert.matches("3 lines in 3 files", out, 1, true)
    assert.are.same({}, all_traces())
    -- line numbers of the other records stay: the key's line is an empty line
    for _, f in ipairs(raw_files(env, "transactions")) do
      local m = manifest(f)
      assert.are.equal(1, m.details.forgotten_lines)
      local text = raw_text(f)
      assert.are.equal(m.details.bytes, #text)
      assert.matches("\n\n", text, 1, true)
    end
    local a = assert(pg:query([[SELECT raw_files, raw_lines, bronze_documents, silver_versions, status,
      gold_models::text
      FROM audit.forget_run WHERE NOT dry_run]]))
    assert.are.same({ { raw_files = "3", raw_lines = "3", bronze_documents = "1", silver_versions = "2",
      status = "succeeded", gold_models = "{monthly_overview,tx_amounts}" } }, a)
    local k = assert(pg:query("SELECT count(*) AS n FROM dp.forgotten_key WHERE NOT allow_return"))[1].n
    assert.are.equal("1", k)
    -- the gold model was rebuilt after the forget
    local g = assert(pg:query([[SELECT count(*) AS n FROM audit.system_run WHERE system = 'monthly_overview'
      AND trigger_kind = 'forget' AND status = 'succeeded']]))[1].n
    assert.are.equal("1", g)
    -- the incremental model lost the key's row (a full refresh), and kept the others
    assert.are.same({}, assert(pg:query("SELECT id FROM gold.tx_amounts WHERE id = 'TX-1005'")))
    assert.are.equal(tostring(#assert(pg:query("SELECT id FROM silver.bank__transactions_current"))),
      assert(pg:query("SELECT count(*) AS n FROM gold.tx_amounts"))[1].n)
  end)

  it("completes a forget that stopped between a raw file and its manifest when run again", function()
    local want = {}
    for m, old in pairs(old_manifests) do
      want[m] = H.cjson.decode(H.read_file(m))
      H.write_file(m, old) -- as if the process died after the file's rename
    end
    local rc, out, err = engine(env, "forget", "bank.transactions", "--key", "id=TX-1005")
    assert.are.equal(0, rc, err .. out)
    assert.matches("0 lines in 0 files", out, 1, true)
    assert.matches("nothing to rebuild: silver lost no rows", out, 1, true) -- the first forget rebuilt it
    for m, w in pairs(want) do
      local got = H.cjson.decode(H.read_file(m))
      assert.are.same(w.details, got.details)
    end
  end)

  it("keeps the key out of the next full load, whose source still has it", function()
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
    local rc, _, err = engine(env, "run", "bank", "--full-refresh")
    assert.are.equal(0, rc, err)
    assert.are.same({}, all_traces())
    local d = assert(pg:query([[SELECT details->>'forgotten' AS f FROM audit.entity_layer_run WHERE layer = 'raw'
      AND entity = 'transactions' ORDER BY started_at DESC LIMIT 1]]))[1]
    assert.are.equal("1", d.f)
    assert.are.equal(6, #assert(pg:query("SELECT 1 FROM silver.bank__transactions_current")))
  end)

  it("casts each key value with its column's type and path: a bigint, a composite date + string key", function()
    local rc, out, err = engine(env, "forget", "fitness.activities", "--key", "activity_id=8102345501")
    assert.are.equal(0, rc, err .. out)
    assert.matches("1 lines in 1 files", out, 1, true)
    local q = "SELECT count(*) AS n FROM silver.fitness__activities WHERE activity_id = 8102345501"
    assert.are.equal("0", assert(pg:query(q))[1].n)
    for _, f in ipairs(raw_files(env, "../fitness/activities")) do
      assert.is_nil(raw_text(f):find("8102345501", 1, true))
    end
    rc, out, err = engine(env, "forget", "fitness.body_measurements", "--key", "measured_on=2026-09-20,metric=weight")
    assert.are.equal(0, rc, err .. out)
    assert.matches("1 versions", out, 1, true)
    local left = assert(pg:query([[SELECT metric FROM silver.fitness__body_measurements
      WHERE measured_on = '2026-09-20' ORDER BY metric]]))
    assert.are.same({ { metric = "body_fat" } }, left)
    local _
    rc, _, err = engine(env, "forget", "fitness.body_measurements", "--key", "measured_on=someday,metric=weight")
    assert.are.equal(2, rc)
    assert.matches("--key: column measured_on", err, 1, true)
    rc, _, err = engine(env, "forget", "fitness.body_measurements", "--key", "metric=weight")
    assert.are.equal(2, rc)
    assert.matches("the primary-key column measured_on is missing", err, 1, true)
  end)

  it("lets the key come back after forget --allow-return", function()
    local rc, out, err = engine(env, "forget", "bank.transactions", "--key", "id=TX-1005", "--allow-return")
    assert.are.equal(0, rc, err)
    assert.matches("may bring the key back", out, 1, true)
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
    local _
    rc, _, err = engine(env, "run", "bank")
    assert.are.equal(0, rc, err)
    local n = assert(pg:query("SELECT count(*) AS n FROM silver.bank__transactions_current WHERE id = 'TX-1005'"))[1].n
    assert.are.equal("1", n)
  end)
end)
