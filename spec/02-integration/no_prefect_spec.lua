-- Without PREFECT_API_URL nothing is reported and nothing changes (docs/orchestration.md); the
-- Prefect server specs themselves are in spec/04-prefect (spec/prefect.sh).
local H = require "helpers"

local function engine_with(env, extra, ...)
  local parts = { "env", "-u", "PREFECT_API_URL", "-u", "PREFECT__FLOW_RUN_ID" }
  for k, v in pairs(env) do
    if k:match("^DP_") then parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end
  end
  for k, v in pairs(extra) do parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end
  parts[#parts + 1] = H.sh_quote(H.bin)
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.sh_quote(a) end
  local errfile = os.tmpname()
  local rc, out = H.sh(table.concat(parts, " ") .. " 2>" .. H.sh_quote(errfile))
  local err = H.read_file(errfile)
  os.remove(errfile)
  return rc, out, err
end

describe("without Prefect", function()
  local env, pg

  setup(function()
    env = H.fresh_env("no_prefect")
    pg = H.pg(env)
  end)
  teardown(function() if pg then pg:close() end end)

  it("a run has its own UUID v7 and no Prefect columns; PREFECT__FLOW_RUN_ID alone attaches to nothing", function()
    H.fill_inbox(env, "inbox/bank", H.root .. "/metadata/demo/bank/export-1")
    local rc, out, err = engine_with(env, { PREFECT__FLOW_RUN_ID = "0b8f5d4e-6d4c-4a8e-9a0e-1f2b3c4d5e6f" }, "run", "bank")
    assert.are.equal(0, rc, out .. err)
    assert.matches("PREFECT__FLOW_RUN_ID is set but PREFECT_API_URL is not: not attached", err)
    local r = assert(pg:query("SELECT run_id::text, trigger_kind, prefect_flow_run_id, prefect_report FROM audit.system_run"))
    assert.are.equal(1, #r)
    assert.are.equal("7", r[1].run_id:sub(15, 15))
    assert.are.equal("manual", r[1].trigger_kind)
    assert.is_nil(r[1].prefect_flow_run_id)
    assert.is_nil(r[1].prefect_report)
  end)

  it("prefect deploy says what is missing (exit 2); prefect alone prints its usage", function()
    local rc, _, err = engine_with(env, {}, "prefect", "deploy")
    assert.are.equal(2, rc)
    assert.matches("PREFECT_API_URL is not set", err)
    rc, _, err = engine_with(env, {}, "prefect")
    assert.are.equal(2, rc)
    assert.matches("usage: dp%-engine prefect deploy", err)
    local out
    rc, out = engine_with(env, {}, "prefect", "deploy", "--help")
    assert.are.equal(0, rc)
    assert.matches("%-%-with%-schedules", out)
  end)

  it("a malformed PREFECT_API_URL is a configuration error for deploy and a warning for a run", function()
    local rc, _, err = engine_with(env, { PREFECT_API_URL = "ftp://x" }, "prefect", "deploy")
    assert.are.equal(2, rc)
    assert.matches("PREFECT_API_URL must start with http:// or https://", err)
    local out
    rc, out, err = engine_with(env, { PREFECT_API_URL = "ftp://x" }, "run", "bank")
    assert.are.equal(0, rc, out .. err)
    local r = assert(pg:query("SELECT prefect_report FROM audit.system_run ORDER BY started_at DESC LIMIT 1"))
    assert.are.equal("not reported: PREFECT_API_URL must start with http:// or https://", r[1].prefect_report)
  end)
end)
