-- Secret values never reach Prefect: the `leaky` fixture connector (spec/fixtures/secrets) puts
-- its token into log lines, records, an error and a cursor; everything the run sent to Prefect
-- (logs, flow and task run states and their messages, parameters) is searched for it.
local H = require "helpers"
local P = require "prefect_helpers"

local FIXTURES = H.root .. "/spec/fixtures/secrets"
local TOKEN = "tok/3xYz-LEAK-4242"
local NEEDLE = "3xYz-LEAK-4242"

describe("Prefect and secrets", function()
  local env, pg

  setup(function()
    env = H.fresh_env("prefect_secrets", { metadata = FIXTURES .. "/metadata" })
    env.DP_SCRIPTS = FIXTURES .. "/scripts"
    env.DP_SECRETS_DIR = env.DP_DATA_DIR .. "/no-secret-files"
    env.DP_MASTER_KEY_FILE = H.tmpdir("prefect-leak-key") .. "/master.key"
    assert(H.sh(H.sh_quote(H.bin) .. " secrets gen-key > " .. H.sh_quote(env.DP_MASTER_KEY_FILE)) == 0)
    local parts = {}
    for k, v in pairs(env) do if k:match("^DP_") then parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end end
    local rc, out = H.sh("printf %s " .. H.sh_quote(TOKEN) .. " | env " .. table.concat(parts, " ") .. " "
      .. H.sh_quote(H.bin) .. " secrets set leak_token 2>&1")
    assert(rc == 0, out)
    pg = H.pg(env)
  end)
  teardown(function() if pg then pg:close() end end)

  it("ships the leaky connector's log lines redacted, and no state message carries the value", function()
    local rc, out, err = P.engine(P.env(env, { DP_LOG_LEVEL = "debug" }), "run", "leaky")
    assert.are.equal(1, rc, out .. err)
    local run = assert(pg:query("SELECT run_id::text, prefect_flow_run_id::text AS f FROM audit.system_run"))[1]
    assert.are.equal(run.run_id, run.f)
    local sent = {}
    local logs = P.logs(run.run_id)
    assert.is_true(#logs > 0)
    for _, l in ipairs(logs) do sent[#sent + 1] = l.message end
    local fr = P.flow_run(run.run_id)
    sent[#sent + 1] = H.cjson.encode(fr)
    for _, t in pairs(P.task_runs(run.run_id)) do sent[#sent + 1] = tostring(t.message) end
    local all = table.concat(sent, "\n")
    assert.is_nil(all:find(NEEDLE, 1, true))
    assert.is_truthy(all:find("[redacted:leak_token]", 1, true))
    assert.are.equal("FAILED", fr.state_type)
  end)
end)
