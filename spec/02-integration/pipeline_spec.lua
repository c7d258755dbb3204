-- The walking skeleton end to end: the demo bank system runs through raw, bronze and silver
-- against the real PostgreSQL and FerretDB, three times (initial; changed + removed + added;
-- identical rerun), with the exact silver versions, bronze documents and audit counts.
local H = require "helpers"

local DEMO = H.root .. "/metadata/demo/bank"

local function runs(pg)
  return assert(pg:query("SELECT run_id, run_ts, status, entities_succeeded, entities_failed, metadata_hash, engine_version"
    .. " FROM audit.system_run ORDER BY started_at"))
end

local function counts(pg, run_id)
  local rows = assert(pg:query([[SELECT entity, layer, status, records_in, records_inserted, records_updated,
      records_deleted, records_unchanged, records_rejected, error FROM audit.entity_layer_run
      WHERE run_id = $1 ORDER BY entity, layer]], run_id))
  local out = {}
  for _, r in ipairs(rows) do
    out[r.entity .. "/" .. r.layer] = { r.status, tonumber(r.records_in), tonumber(r.records_inserted),
      tonumber(r.records_updated), tonumber(r.records_deleted), tonumber(r.records_unchanged),
      tonumber(r.records_rejected) }
  end
  return out
end

local function transactions(pg)
  return assert(pg:query([[SELECT id, booked_on::text, amount::text, currency, counterparty, counterparty_iban,
      description, category, _dp_valid_from::text AS vf, _dp_valid_to::text AS vt, _dp_is_current::text AS cur,
      _dp_is_deleted::text AS del, _dp_run_id::text AS run, _dp_key_hash::text AS kh,
      _dp_scd1_hash::text AS h1, _dp_scd2_hash::text AS h2, _dp_created_at::text AS created,
      _dp_updated_at::text AS updated
      FROM silver.bank__transactions ORDER BY id, _dp_valid_from]]))
end

local function snapshot(pg)
  local parts = {}
  for _, t in ipairs({ "bank__transactions", "bank__accounts" }) do
    local rows = assert(pg:query("SELECT to_jsonb(t)::text AS j FROM silver." .. t .. " t ORDER BY _dp_id"))
    for _, r in ipairs(rows) do parts[#parts + 1] = r.j end
  end
  return table.concat(parts, "\n")
end

describe("demo bank system through raw, bronze and silver", function()
  local env, pg, run1, run2, run3

  setup(function()
    env = H.fresh_env("pipeline")
    pg = H.pg(env)
  end)

  teardown(function()
    if pg then pg:close() end
  end)

  it("loads the first export: every row a current version, audited per layer", function()
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
    local rc, out, err = H.engine(env, "run", "bank")
    assert.are.equal(0, rc, err)
    assert.matches("of bank: succeeded", out)
    local r = runs(pg)
    assert.are.equal(1, #r)
    run1 = r[1]
    assert.are.equal("succeeded", run1.status)
    assert.are.equal("2", run1.entities_succeeded)
    assert.are.equal(64, #run1.metadata_hash)
    assert.are.same({
      ["accounts/bronze"] = { "succeeded", 2, 2, 0, 0, 0, 0 },
      ["accounts/raw"] = { "succeeded", 2, 2, 0, 0, 0, 0 },
      ["accounts/silver"] = { "succeeded", 2, 2, 0, 0, 0, 0 },
      ["transactions/bronze"] = { "succeeded", 6, 6, 0, 0, 0, 0 },
      ["transactions/raw"] = { "succeeded", 6, 6, 0, 0, 0, 0 },
      ["transactions/silver"] = { "succeeded", 6, 6, 0, 0, 0, 0 },
    }, counts(pg, run1.run_id))
    local layers = assert(pg:query("SELECT layer, status, entities_succeeded FROM audit.system_layer_run WHERE run_id = $1 ORDER BY started_at", run1.run_id))
    assert.are.same({ { layer = "raw", status = "succeeded", entities_succeeded = "2" },
      { layer = "bronze", status = "succeeded", entities_succeeded = "2" },
      { layer = "silver", status = "succeeded", entities_succeeded = "2" } }, layers)

    local rows = transactions(pg)
    assert.are.equal(6, #rows)
    local ids = {}
    for i, row in ipairs(rows) do
      ids[i] = row.id
      assert.are.equal("true", row.cur)
      assert.are.equal("false", row.del)
      assert.is_nil(row.vt)
      assert.are.equal(run1.run_ts, row.vf)
      assert.are.equal(run1.run_id, row.run)
    end
    assert.are.same({ "TX-1001", "TX-1002", "TX-1003", "TX-1004", "TX-1005", "TX-1006" }, ids)
    -- typed values: a JSON number and a decimal string both land at the declared scale;
    -- nested paths and a missing nested value
    assert.are.equal("3200.00", rows[3].amount)
    assert.are.equal("-54.37", rows[2].amount)
    assert.are.equal("2026-10-02", rows[2].booked_on)
    assert.are.equal("Albert Heijn", rows[2].counterparty)
    assert.is_nil(rows[2].counterparty_iban)
    assert.is_nil(rows[4].counterparty_iban)
    assert.are.equal("NL02ABNA0123456789", rows[1].counterparty_iban)
  end)

  it("stores the key and change hashes the C core computes for the typed row", function()
    local rows = transactions(pg)
    local entity = {
      system = "bank", name = "transactions", primary_key = { "id" },
      columns = {
        { name = "id", type = "string", length = 40, nullable = false },
        { name = "booked_on", type = "date" },
        { name = "amount", type = "decimal", precision = 12, scale = 2 },
        { name = "currency", type = "string", length = 3 },
        { name = "counterparty", type = "string", length = 200, path = "counterparty.name" },
        { name = "counterparty_iban", type = "string", length = 34, path = "counterparty.iban" },
        { name = "description", type = "text" },
        { name = "category", type = "string", length = 40, history = "scd1" },
      },
    }
    local first = H.read_file(DEMO .. "/export-1/transactions-2026-10.jsonl"):match("^[^\n]+")
    local h = assert(H.core.row_hashes(entity, first))
    assert.are.equal(h.key, rows[1].kh)
    assert.are.equal(h.scd1, rows[1].h1)
    assert.are.equal(h.scd2, rows[1].h2)
    -- the key hash is the hash of the typed key alone
    assert.are.equal(H.core.hash({ { "string", "TX-1001" } }), rows[1].kh)
  end)

  it("keeps one bronze document per key with the _dp block and the raw reference", function()
    local docs = H.bronze_docs(env, "bank__transactions", "id")
    assert.are.equal(6, #docs)
    for i, d in ipairs(docs) do
      assert.are.equal(run1.run_id, d._dp.run_id)
      assert.is_false(d._dp.deleted)
      assert.matches("^raw/bank/transactions/%d%d%d%d/%d%d/%d%d/" .. run1.run_id:gsub("%-", "%%-") .. "%.jsonl$", d._dp.raw.file)
      assert.are.equal(i, d._dp.raw.line)
      -- the _id is the key hash as text: 32 lowercase hex digits (docs/storage.md)
      assert.are.equal("string", type(d._id))
      assert.matches("^%x+$", d._id)
      assert.are.equal(32, #d._id)
      assert.are.equal(d._id, d._id:lower())
    end
    -- the record is kept as the source sent it: a decimal string stays a string, a number a number
    assert.are.equal("-1250.00", docs[1].data.amount)
    assert.are.equal(3200, docs[3].data.amount)
    assert.are.equal("Housing Co-op", docs[1].data.counterparty.name)
    -- the raw file is there, complete, with its manifest
    local raw = env.DP_DATA_DIR .. "/" .. docs[1]._dp.raw.file
    local lines = 0
    for _ in H.read_file(raw):gmatch("[^\n]+") do lines = lines + 1 end
    assert.are.equal(6, lines)
    local manifest = H.cjson.decode(H.read_file((raw:gsub("%.jsonl$", ".manifest.json"))))
    assert.are.equal(6, manifest.details.records)
    assert.are.equal(H.core.sha256(H.read_file(raw)), manifest.details.sha256)
  end)

  it("applies the second export: scd2 change versions, scd1 change in place, removal closes, additions insert", function()
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
    local rc, out, err = H.engine(env, "run", "bank")
    assert.are.equal(0, rc, err)
    run2 = runs(pg)[2]
    assert.are.same({
      ["accounts/bronze"] = { "succeeded", 2, 0, 1, 0, 1, 0 },
      ["accounts/raw"] = { "succeeded", 2, 2, 0, 0, 0, 0 },
      ["accounts/silver"] = { "succeeded", 1, 0, 1, 0, 0, 0 },
      -- TX-1007, TX-1008 new; TX-1002 (category, scd1) and TX-1005 (amount, scd2) changed;
      -- TX-1004 gone; TX-1001, TX-1003, TX-1006 unchanged. Silver reads only what bronze
      -- changed: 2 new, 2 changed, 1 deletion.
      ["transactions/bronze"] = { "succeeded", 7, 2, 2, 1, 3, 0 },
      ["transactions/raw"] = { "succeeded", 7, 7, 0, 0, 0, 0 },
      ["transactions/silver"] = { "succeeded", 5, 2, 2, 1, 0, 0 },
    }, counts(pg, run2.run_id))

    local rows = transactions(pg)
    local got = {}
    for _, r in ipairs(rows) do
      got[#got + 1] = { r.id, r.amount, r.category, r.cur, r.vf == run1.run_ts and "run1" or r.vf == run2.run_ts and "run2" or r.vf,
        r.vt == nil and "-" or r.vt == run2.run_ts and "run2" or r.vt }
    end
    assert.are.same({
      { "TX-1001", "-1250.00", "housing", "true", "run1", "-" },
      { "TX-1002", "-54.37", "food", "true", "run1", "-" },          -- scd1: overwritten in place
      { "TX-1003", "3200.00", "income", "true", "run1", "-" },
      { "TX-1004", "-12.99", "entertainment", "false", "run1", "run2" }, -- removed: closed
      { "TX-1005", "-89.10", "utilities", "false", "run1", "run2" },   -- scd2: closed ...
      { "TX-1005", "-91.10", "utilities", "true", "run2", "-" },       -- ... and a new version
      { "TX-1006", "-23.50", "eating out", "true", "run1", "-" },
      { "TX-1007", "-45.00", "transport", "true", "run2", "-" },
      { "TX-1008", "150.00", "transfers", "true", "run2", "-" },
    }, got)
    -- the _current view: current, non-deleted rows only
    local cur = assert(pg:query("SELECT id FROM silver.bank__transactions_current ORDER BY id"))
    local cur_ids = {}
    for i, r in ipairs(cur) do cur_ids[i] = r.id end
    assert.are.same({ "TX-1001", "TX-1002", "TX-1003", "TX-1005", "TX-1006", "TX-1007", "TX-1008" }, cur_ids)
    -- the two versions of TX-1005 share the key hash and differ in the scd2 hash
    assert.are.equal(rows[5].kh, rows[6].kh)
    assert.are_not.equal(rows[5].h2, rows[6].h2)

    -- scd1 on accounts: the new name is on every version of the key
    local acc = assert(pg:query("SELECT iban, name, balance::text, _dp_is_current::text AS cur FROM silver.bank__accounts ORDER BY iban, _dp_id"))
    assert.are.same({
      { iban = "NL20INGB0001234567", name = "Everyday account", balance = "2384.04", cur = "false" },
      { iban = "NL20INGB0001234567", name = "Everyday account", balance = "2486.04", cur = "true" },
      { iban = "NL69INGB0123456789", name = "Savings", balance = "10500.00", cur = "true" },
    }, acc)

    -- bronze: the removed key is marked deleted, not dropped
    local docs = H.bronze_docs(env, "bank__transactions", "id")
    assert.are.equal(8, #docs)
    assert.is_true(docs[4]._dp.deleted)
    assert.are.equal("TX-1004", docs[4].data.id)
    assert.are.equal(run2.run_id, docs[4]._dp.deleted_run_id)
    assert.are.equal("food", docs[2].data.category)
  end)

  it("changes nothing on an identical rerun", function()
    local before = snapshot(pg)
    local rc, _, err = H.engine(env, "run", "bank")
    assert.are.equal(0, rc, err)
    run3 = runs(pg)[3]
    assert.are.same({
      ["accounts/bronze"] = { "succeeded", 2, 0, 0, 0, 2, 0 },
      ["accounts/raw"] = { "succeeded", 2, 2, 0, 0, 0, 0 },
      ["accounts/silver"] = { "succeeded", 0, 0, 0, 0, 0, 0 },
      -- bronze sees every record unchanged and writes nothing, so silver has nothing to read
      ["transactions/bronze"] = { "succeeded", 7, 0, 0, 0, 7, 0 },
      ["transactions/raw"] = { "succeeded", 7, 7, 0, 0, 0, 0 },
      ["transactions/silver"] = { "succeeded", 0, 0, 0, 0, 0, 0 },
    }, counts(pg, run3.run_id))
    assert.are.equal(before, snapshot(pg))
  end)

  it("fails an entity on a malformed export line, names file and line, and loses nothing", function()
    local before = snapshot(pg)
    local bronze_before = #H.bronze_docs(env, "bank__transactions")
    local dir = H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
    local good = H.read_file(dir .. "/transactions-2026-10.jsonl")
    local broken = good:gsub("\n", "\n{\"id\": \"TX-1009\", \"amount\": -1,,}\n", 1)
    H.write_export(dir .. "/transactions-2026-10.jsonl", broken)

    local rc, out, err = H.engine(env, "run", "bank")
    assert.are.equal(1, rc)
    assert.matches("transactions%-2026%-10%.jsonl:2:", err)
    local run4 = runs(pg)[4]
    assert.are.equal("partial", run4.status)     -- accounts still loaded
    assert.are.equal("1", run4.entities_failed)
    local rows = assert(pg:query("SELECT layer, status, error FROM audit.entity_layer_run WHERE run_id = $1 AND entity = 'transactions' ORDER BY started_at", run4.run_id))
    assert.are.equal("raw", rows[1].layer)
    assert.are.equal("failed", rows[1].status)
    assert.matches("transactions%-2026%-10%.jsonl:2: invalid JSON at byte %d+", rows[1].error)
    assert.are.equal("skipped", rows[2].status)
    assert.are.equal("skipped", rows[3].status)
    -- nothing changed downstream, and no raw file was left under a final name
    assert.are.equal(before, snapshot(pg))
    assert.are.equal(bronze_before, #H.bronze_docs(env, "bank__transactions"))
    local _, listing = H.sh("find " .. H.sh_quote(env.DP_DATA_DIR .. "/raw/bank/transactions") .. " -name '" .. run4.run_id .. "*'")
    assert.are.equal("", listing)

    -- fixed: the rerun succeeds and silver is as after a clean run
    H.write_export(dir .. "/transactions-2026-10.jsonl", good)
    rc, out, err = H.engine(env, "run", "bank")
    assert.are.equal(0, rc, err)
    assert.are.equal("succeeded", runs(pg)[5].status)
    assert.are.equal(before, snapshot(pg))
  end)
end)
