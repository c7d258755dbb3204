-- Started by Prefect: `dp-engine prefect deploy` makes a process work pool and a deployment,
-- a real `prefect worker start` runs one flow run of it end to end, and the engine attaches.
local H = require "helpers"
local P = require "prefect_helpers"

describe("prefect deploy and a process worker", function()
  local env, pg, worker_pid, whome
  local pool = "dp-spec-" .. (os.getenv("DP_SPEC_TAG") or "x")

  setup(function()
    env = H.fresh_env("prefect_worker")
    pg = H.pg(env)
  end)
  teardown(function()
    if worker_pid then H.sh("kill " .. worker_pid .. "; sleep 1; kill -9 " .. worker_pid .. " 2>/dev/null") end
    if whome then H.sh("rm -rf " .. H.sh_quote(whome)) end
    if pg then pg:close() end
  end)

  it("deploys a system (work pool created once) and a worker runs it; the run id is the flow run id", function()
    local rc, out, err = P.engine(P.env(env, { DP_PREFECT_WORK_POOL = pool }), "prefect", "deploy", "bank")
    assert.are.equal(0, rc, out .. err)
    assert.matches("work pool " .. pool:gsub("%-", "%%-") .. " created", out)
    local dep_id = out:match("deployment dp%-engine%.bank/bank: ([%x%-]+)")
    assert.is_truthy(dep_id, out)
    -- a second deploy updates the same deployment and keeps the pool
    rc, out, err = P.engine(P.env(env, { DP_PREFECT_WORK_POOL = pool }), "prefect", "deploy", "bank")
    assert.are.equal(0, rc, out .. err)
    assert.is_nil(out:match("created"))
    assert.are.equal(dep_id, out:match("deployment dp%-engine%.bank/bank: ([%x%-]+)"))
    local dep = P.api("GET", "/deployments/" .. dep_id)
    assert.are.equal(H.bin .. " run bank", dep.job_variables.command)
    assert.are.equal(pool, dep.work_pool_name)
    assert.are.same({}, dep.schedules) -- serve owns schedules unless --with-schedules

    H.fill_inbox(env, "inbox/bank", H.root .. "/metadata/demo/bank/export-1")
    whome = H.tmpdir("prefect_worker_home")
    local wenv = P.env(env, { PREFECT_HOME = whome, PREFECT_SERVER_ANALYTICS_ENABLED = "false" })
    local _, pid = H.sh(P.env_cmd(wenv) .. " " .. H.sh_quote(P.venv .. "/bin/prefect") .. " worker start --pool "
      .. H.sh_quote(pool) .. " --type process >" .. H.sh_quote(whome .. "/worker.log") .. " 2>&1 & echo $!")
    worker_pid = pid:match("%d+")
    local fr = P.api("POST", "/deployments/" .. dep_id .. "/create_flow_run",
      { parameters = { entities = { "transactions" } } })
    assert.is_truthy(fr.id, H.cjson.encode(fr))
    local done = P.wait_for(90, function()
      local f = P.flow_run(fr.id)
      return f and (f.state_type == "COMPLETED" or f.state_type == "FAILED" or f.state_type == "CRASHED") and f
    end)
    assert.is_truthy(done, H.try_read(whome .. "/worker.log"))
    assert.are.equal("COMPLETED", done.state_type, H.try_read(whome .. "/worker.log"))
    local run = assert(pg:query("SELECT run_id::text, status, trigger_kind, prefect_flow_run_id::text AS f"
      .. " FROM audit.system_run"))
    assert.are.equal(1, #run)
    assert.are.same({ run_id = fr.id, status = "succeeded", trigger_kind = "prefect", f = fr.id }, run[1])
    local steps = assert(pg:query("SELECT count(*)::int AS n FROM audit.entity_layer_run WHERE entity = 'transactions'"))
    assert.are.equal(3, tonumber(steps[1].n))
    local tr = P.task_runs(fr.id)
    assert.are.equal("COMPLETED", tr["transactions/silver"].state)
    assert.is_nil(tr["accounts/raw"])
  end)

  it("--with-schedules turns a system's schedule triggers into Prefect cron schedules", function()
    local rc, out, err = P.engine(P.env(env, { DP_PREFECT_WORK_POOL = pool }), "prefect", "deploy", "listening",
      "--with-schedules")
    assert.are.equal(0, rc, out .. err)
    local dep_id = out:match("deployment dp%-engine%.listening/listening: ([%x%-]+)")
    local dep = P.api("GET", "/deployments/" .. dep_id)
    assert.are.equal(1, #dep.schedules)
    assert.are.equal("30 6 * * mon", dep.schedules[1].schedule.cron)
    assert.are.equal("Europe/Amsterdam", dep.schedules[1].schedule.timezone)
    assert.is_true(dep.schedules[1].active)
    -- deploying again without the flag takes them away (serve owns schedules by default)
    rc, out, err = P.engine(P.env(env, { DP_PREFECT_WORK_POOL = pool }), "prefect", "deploy", "listening")
    assert.are.equal(0, rc, out .. err)
    assert.are.same({}, P.api("GET", "/deployments/" .. dep_id).schedules)
  end)

  it("names an unknown system (exit 2) and deploys nothing", function()
    local rc, out, err = P.engine(P.env(env, { DP_PREFECT_WORK_POOL = pool }), "prefect", "deploy", "nope")
    assert.are.equal(2, rc, out .. err)
    assert.matches("no system named nope", err)
  end)
end)
