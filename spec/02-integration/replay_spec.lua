-- dp-engine replay: rebuilding bronze and silver from stored raw files, and silver from bronze,
-- without calling the source, audited as runs of their own.
local H = require "helpers"

local history = H.bank_history

local function current(pg)
  local rows = assert(pg:query("SELECT to_jsonb(c) - '_dp_id' - '_dp_run_id' - '_dp_run_ts' - '_dp_valid_from' - '_dp_created_at' - '_dp_updated_at' AS j FROM silver.bank__transactions_current c ORDER BY id"))
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.j end
  return out
end

local function forget_silver(pg)
  assert(pg:query("DROP TABLE silver.bank__transactions CASCADE"))
  assert(pg:query("DELETE FROM dp.entity_state WHERE entity = 'transactions'"))
end

describe("replay", function()
  local env, pg, run1, run2, want_history, want_current

  setup(function()
    env = H.fresh_env("replay")
    pg = H.pg(env)
    run1, run2 = H.run_bank_exports(env, pg)
    want_history, want_current = history(pg), current(pg)
    -- the source is gone: replays must not need it
    H.sh("rm -rf " .. H.sh_quote(env.DP_DATA_DIR .. "/inbox"))
  end)
  teardown(function() if pg then pg:close() end end)

  it("from bronze changes nothing when silver is intact, and is audited as a replay", function()
    local rc, out, err = H.engine(env, "replay", "bank", "--from", "bronze", "--entity", "transactions")
    assert.are.equal(0, rc, err)
    assert.matches("of bank: succeeded", out)
    local r = assert(pg:query("SELECT run_id, trigger_kind FROM audit.system_run ORDER BY started_at DESC LIMIT 1"))[1]
    assert.are.equal("replay", r.trigger_kind)
    local c = assert(pg:query("SELECT layer, records_in, records_unchanged, records_deleted FROM audit.entity_layer_run WHERE run_id = $1", r.run_id))
    -- every bronze document is read: 7 current keys (unchanged) and TX-1004, already closed
    assert.are.same({ { layer = "silver", records_in = "8", records_unchanged = "7", records_deleted = "0" } }, c)
    assert.are.same(want_history, history(pg))
  end)

  it("from raw rebuilds bronze and silver run by run, reproducing silver's history", function()
    forget_silver(pg)
    local m = H.mongo()
    assert(m:command(env.DP_BRONZE_DB, '{"drop": "bank__transactions"}'))
    m:close()
    local rc, _, err = H.engine(env, "replay", "bank", "--from", "raw", "--run", run1, "--entity", "transactions")
    assert.are.equal(0, rc, err)
    rc, _, err = H.engine(env, "replay", "bank", "--from", "raw", "--run", run2, "--entity", "transactions")
    assert.are.equal(0, rc, err)
    assert.are.same(want_history, history(pg))
    assert.are.same(want_current, current(pg))
    local d = assert(pg:query([[SELECT details->>'replay_of' AS of FROM audit.entity_layer_run
      WHERE layer = 'bronze' AND entity = 'transactions' ORDER BY started_at DESC LIMIT 1]]))[1]
    assert.are.equal(run2, d.of)
  end)

  it("from bronze rebuilds a lost silver table's current state", function()
    forget_silver(pg)
    local rc, _, err = H.engine(env, "replay", "bank", "--from", "bronze", "--entity", "transactions")
    assert.are.equal(0, rc, err)
    assert.are.same(want_current, current(pg))
  end)

  it("says what is wrong with a replay it cannot do", function()
    local rc, _, err = H.engine(env, "replay", "bank")
    assert.are.equal(2, rc)
    assert.matches("replay needs --from raw|bronze", err, 1, true)
    rc, _, err = H.engine(env, "replay", "bank", "--from", "bronze", "--run", run1)
    assert.are.equal(2, rc)
    assert.matches("--run goes with --from raw", err, 1, true)
    rc, _, err = H.engine(env, "replay", "bank", "--from", "raw", "--run", "01900000-0000-7000-8000-000000000000", "--entity", "accounts")
    assert.are.equal(1, rc)
    assert.matches("no raw file of bank.accounts from run 01900000", err, 1, true)
  end)
end)
