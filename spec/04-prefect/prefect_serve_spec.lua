-- Runs started by `dp-engine serve` are reported too: serve creates a queued run's flow run
-- before it answers, so the run id it hands out is the flow run id (docs/orchestration.md).
local H = require "helpers"
local P = require "prefect_helpers"

local TOKEN = "spec-prefect-serve-token-0123456789"

describe("serve with Prefect", function()
  local env, pg, srv = nil, nil, {}

  setup(function()
    env = H.fresh_env("prefect_serve")
    pg = H.pg(env)
  end)
  teardown(function()
    if srv.pid then H.sh("kill -TERM " .. srv.pid .. "; sleep 1") end
    if pg then pg:close() end
  end)

  it("a run queued through the HTTP API: its run id is the id of its COMPLETED flow run", function()
    H.fill_inbox(env, "inbox/bank", H.root .. "/metadata/demo/bank/export-1")
    local out, pidfile = os.tmpname(), os.tmpname()
    local e = P.env(env, { DP_LISTEN = "127.0.0.1:0", DP_API_TOKEN = TOKEN, DP_LOG_LEVEL = "info" })
    H.sh("(" .. P.env_cmd(e) .. " " .. H.sh_quote(H.bin) .. " serve >" .. out .. " 2>&1 & echo $! > " .. pidfile .. ")")
    srv.pid = tonumber(P.wait_for(10, function() return H.try_read(pidfile):match("%d+") end))
    local port = P.wait_for(15, function() return (H.try_read(out) or ""):match("listening on port (%d+)") end)
    assert.is_truthy(port, H.try_read(out))
    local _, body = H.sh("curl -s -X POST -H " .. H.sh_quote("Authorization: Bearer " .. TOKEN)
      .. " http://127.0.0.1:" .. port .. "/api/v1/systems/bank/runs")
    local run_id = H.cjson.decode(body).run_id
    assert.is_truthy(run_id, body)
    local row = P.wait_for(30, function()
      local r = pg:query("SELECT status, prefect_flow_run_id::text AS f, prefect_report FROM audit.system_run"
        .. " WHERE run_id = $1 AND status <> 'running'", run_id)
      return r and r[1]
    end)
    assert.is_truthy(row, H.try_read(out))
    assert.are.equal("succeeded", row.status)
    assert.is_nil(row.prefect_report)
    local fr = P.wait_for(5, function()
      local f = P.flow_run(row.f)
      return f and f.state_type == "COMPLETED" and f
    end)
    assert.is_truthy(fr)
    assert.are.equal(run_id, row.f) -- one id: the API's answer, the audit row, the flow run
    local rows = assert(pg:query("SELECT DISTINCT _dp_run_id::text AS id FROM silver.bank__transactions"))
    assert.are.equal(run_id, rows[1].id)
    assert.are.equal("trigger:api", (function()
      for _, t in ipairs(fr.tags) do if t:match("^trigger:") then return t end end
    end)())
    assert.are.equal(6, #P.api("POST", "/task_runs/filter", { flow_runs = { id = { any_ = { row.f } } } }))
  end)
end)
