-- kill -9 of the engine in the middle of the bronze write and inside the silver transaction:
-- the audit shows the crashed run, and a rerun gives the same silver as a clean run.
local H = require "helpers"

local DEMO = H.root .. "/metadata/demo/bank"

local history = H.bank_history

local function two_exports(env, kill_point)
  local pg = H.pg(env)
  H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
  assert.are.equal(0, (H.engine(env, "run", "bank")))
  H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
  if kill_point then
    assert.is_true(H.engine_killed_at(env, kill_point, "run", "bank", "--entity", "transactions"))
    local left = assert(pg:query("SELECT status FROM audit.system_run ORDER BY started_at DESC LIMIT 1"))[1]
    assert.are.equal("running", left.status) -- what a crash leaves behind
    local rc, _, err = H.engine(env, "run", "bank")
    assert.are.equal(0, rc, err)
    local runs = assert(pg:query("SELECT status FROM audit.system_run ORDER BY started_at"))
    assert.are.same({ { status = "succeeded" }, { status = "crashed" }, { status = "succeeded" } }, runs)
    local layer = assert(pg:query([[SELECT e.layer, e.status FROM audit.entity_layer_run e JOIN audit.system_run s
      USING (run_id) WHERE s.status = 'crashed' AND e.status = 'crashed']]))
    assert.are.same({ { layer = kill_point, status = "crashed" } }, layer)
  else
    assert.are.equal(0, (H.engine(env, "run", "bank")))
  end
  local h = history(pg)
  pg:close()
  return h
end

describe("a crash half way", function()
  local clean

  setup(function()
    clean = two_exports(H.fresh_env("crash_clean"))
    assert.are.equal(9, #clean)
  end)

  it("during the bronze write: the rerun gives the same silver as a clean run", function()
    assert.are.same(clean, two_exports(H.fresh_env("crash_bronze"), "bronze"))
  end)

  it("inside the silver transaction: nothing of it stays, the rerun gives the same silver", function()
    assert.are.same(clean, two_exports(H.fresh_env("crash_silver"), "silver"))
  end)
end)
