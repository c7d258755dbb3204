-- Runs reported to a real Prefect 3 server (started by spec/prefect.sh, with basic auth): the
-- run id is the flow run id, task runs per entity and layer, states, logs, failures, attach mode,
-- a process worker, and Prefect down or hanging before and during a run.
local H = require "helpers"
local P = require "prefect_helpers"

local DEMO = H.root .. "/metadata/demo/bank"

local function latest_run(pg)
  return assert(pg:query("SELECT run_id::text, status, trigger_kind, prefect_flow_run_id::text AS flow_run,"
    .. " prefect_report, error FROM audit.system_run ORDER BY started_at DESC LIMIT 1"))[1]
end

describe("Prefect reporting", function()
  local env, pg

  setup(function()
    env = H.fresh_env("prefect_reporting")
    pg = H.pg(env)
  end)
  teardown(function() if pg then pg:close() end end)

  it("a system run is a COMPLETED flow run whose id is the run id of the audit and of every silver row", function()
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
    local rc, out, err = P.engine(P.env(env), "run", "bank")
    assert.are.equal(0, rc, out .. err)
    local run = latest_run(pg)
    assert.are.equal("succeeded", run.status)
    assert.are.equal(run.run_id, run.flow_run)
    assert.is_nil(run.prefect_report)
    local ids = assert(pg:query("SELECT DISTINCT _dp_run_id::text AS id FROM silver.bank__transactions"))
    assert.are.same({ { id = run.run_id } }, ids)

    local fr = assert(P.flow_run(run.run_id))
    assert.are.equal("COMPLETED", fr.state_type)
    local flow = P.api("GET", "/flows/" .. fr.flow_id)
    assert.are.equal("dp-engine.bank", flow.name)
    assert.are.same({ entities = { "transactions", "accounts" }, layers = { "raw", "bronze", "silver" },
      full_refresh = false }, fr.parameters)
    table.sort(fr.tags)
    assert.are.same({ "dp-engine", "system:bank", "trigger:manual" }, fr.tags)

    local tr = P.task_runs(run.run_id)
    local names = {}
    for name, t in pairs(tr) do
      names[#names + 1] = name
      assert.are.equal("COMPLETED", t.state, name)
    end
    table.sort(names)
    assert.are.same({ "accounts/bronze", "accounts/raw", "accounts/silver", "transactions/bronze",
      "transactions/raw", "transactions/silver" }, names)
    -- the graph: raw -> bronze -> silver per entity
    assert.is_nil(tr["transactions/raw"].upstream)
    assert.are.equal("transactions/raw", tr["transactions/bronze"].upstream)
    assert.are.equal("transactions/bronze", tr["transactions/silver"].upstream)
    assert.are.equal("accounts/bronze", tr["accounts/silver"].upstream)

    -- logs arrive, tied to the flow run and to the task run of their step
    local logs = P.logs(run.run_id)
    local started, silver_line = false, nil
    for _, l in ipairs(logs) do
      if l.message:find("run " .. run.run_id .. " of bank started", 1, true) then started = true end
      if l.message:find("^silver bank%.transactions: ") then silver_line = l end
    end
    assert.is_true(started)
    assert.is_truthy(silver_line)
    assert.are.equal(tr["transactions/silver"].id, silver_line.task_run_id)
    assert.are.equal(20, silver_line.level)
  end)

  it("a failing entity: task run FAILED with the error, flow run FAILED with the message", function()
    H.sh("rm -f " .. H.sh_quote(env.DP_DATA_DIR .. "/inbox/bank") .. "/accounts-*")
    local rc, out, err = P.engine(P.env(env), "run", "bank")
    assert.are.equal(1, rc, out .. err)
    local run = latest_run(pg)
    assert.are.equal("partial", run.status)
    assert.are.equal(run.run_id, run.flow_run)
    local fr = assert(P.flow_run(run.run_id))
    assert.are.equal("FAILED", fr.state_type)
    assert.are.equal("partial: 1 of 2 entities failed", fr.state.message)
    local tr = P.task_runs(run.run_id)
    assert.are.equal("FAILED", tr["accounts/raw"].state)
    assert.matches('no file matching "accounts%-%*%.json"', tr["accounts/raw"].message)
    assert.is_nil(tr["accounts/bronze"]) -- skipped steps are not task runs
    assert.are.equal("COMPLETED", tr["transactions/silver"].state)
    local errors = 0
    for _, l in ipairs(P.logs(run.run_id)) do
      if l.level == 40 and l.task_run_id == tr["accounts/raw"].id then errors = errors + 1 end
    end
    assert.are.equal(1, errors)
  end)

  it("attach mode: reuses the flow run of PREFECT__FLOW_RUN_ID and honours its parameters", function()
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
    local flow = P.api("POST", "/flows/", { name = "dp-engine.bank" })
    local fr, code = P.api("POST", "/flow_runs/", { flow_id = flow.id, state = { type = "PENDING", name = "Pending" },
      parameters = { entities = { "accounts" }, layers = { "raw", "bronze" } } })
    assert.are.equal(201, code)
    local rc, out, err = P.engine(P.env(env, { PREFECT__FLOW_RUN_ID = fr.id }), "run", "bank")
    assert.are.equal(0, rc, out .. err)
    local run = latest_run(pg)
    assert.are.equal(fr.id, run.run_id)
    assert.are.equal(fr.id, run.flow_run)
    assert.are.equal("prefect", run.trigger_kind)
    local steps = assert(pg:query("SELECT entity || '/' || layer AS s FROM audit.entity_layer_run WHERE run_id = $1"
      .. " ORDER BY 1", fr.id))
    assert.are.same({ { s = "accounts/bronze" }, { s = "accounts/raw" } }, steps)
    assert.are.equal("COMPLETED", P.flow_run(fr.id).state_type)
    -- no second flow run was made for it
    local runs = P.api("POST", "/flow_runs/filter", { flow_runs = { id = { any_ = { fr.id } } } })
    assert.are.equal(1, #runs)

    -- Prefect starts the same flow run again (a retry): the audit keeps one row per run, so this
    -- attempt gets its own UUID v7; prefect_flow_run_id and prefect_report say which flow run
    rc, out, err = P.engine(P.env(env, { PREFECT__FLOW_RUN_ID = fr.id }), "run", "bank")
    assert.are.equal(0, rc, out .. err)
    local again = latest_run(pg)
    assert.are_not.equal(fr.id, again.run_id)
    assert.are.equal("7", again.run_id:sub(15, 15))
    assert.are.equal(fr.id, again.flow_run)
    assert.are.equal("flow run " .. fr.id .. " ran before (as run " .. fr.id .. ", succeeded): this attempt's run id"
      .. " is a UUID v7", again.prefect_report)
    assert.are.equal("COMPLETED", P.flow_run(fr.id).state_type)
  end)

  it("without the auth string the server refuses, and the run goes on with its own UUID v7", function()
    local rc, out, err = P.engine(P.env(env, { PREFECT_API_AUTH_STRING = false }), "run", "bank")
    assert.are.equal(0, rc, out .. err)
    local run = latest_run(pg)
    assert.is_nil(run.flow_run)
    assert.are.equal("7", run.run_id:sub(15, 15))
    assert.matches("^not reported: no flow run %(POST /flows/: HTTP 401", run.prefect_report)
  end)

  it("Prefect down before the run: the run succeeds at once, the audit says why there is no flow run", function()
    local rc, out, err, secs = P.engine(P.env(env, { PREFECT_API_URL = "http://127.0.0.1:9/api" }), "run", "bank")
    assert.are.equal(0, rc, out .. err)
    assert.is_true(secs < 5, secs)
    local run = latest_run(pg)
    assert.is_nil(run.flow_run)
    assert.matches("^not reported: no flow run %(POST http://127%.0%.0%.1:9/api/flows/: .*connect", run.prefect_report)
    assert.matches("prefect: cannot create a flow run", err)
  end)

  it("Prefect hanging before the run: the run goes on after one short timeout", function()
    P.freeze()
    local ok, rc, out, err, secs = pcall(P.engine, P.env(env), "run", "bank")
    P.thaw()
    assert(ok, rc)
    assert.are.equal(0, rc, out .. err)
    assert.is_true(secs < 5, secs)
    local run = latest_run(pg)
    assert.is_nil(run.flow_run)
    assert.matches("^not reported: no flow run %(POST .*/flows/: .*timed out", run.prefect_report)
  end)

  it("Prefect stopped in the middle of a run: the data run succeeds, under 5 s of delay; the audit says where reporting stopped", function()
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1") -- changes against export-2: silver merges
    local marker = os.tmpname()
    os.remove(marker)
    local e = P.env(env, { DP_TEST_PAUSE = "silver", DP_TEST_PAUSE_SECONDS = "2", DP_TEST_PAUSE_FILE = marker })
    local errfile = os.tmpname()
    local cmd = "t0=$(date +%s%N); " .. P.env_cmd(e) .. " " .. H.sh_quote(H.bin)
      .. " run bank --entity transactions >/dev/null 2>" .. H.sh_quote(errfile) .. " & pid=$!; "
      .. "for i in $(seq 1 300); do [ -s " .. H.sh_quote(marker) .. " ] && break; sleep 0.05; done; "
      .. "kill -STOP " .. P.pid .. "; wait $pid; rc=$?; t1=$(date +%s%N); kill -CONT " .. P.pid .. "; "
      .. "echo rc=$rc ms=$(( (t1 - t0) / 1000000 ))"
    local _, out = H.sh(cmd)
    H.sh("kill -CONT " .. P.pid)
    os.remove(marker)
    local err = H.read_file(errfile)
    os.remove(errfile)
    local rc, ms = out:match("rc=(%d+) ms=(%d+)")
    assert.are.equal("0", rc, out .. err)
    -- 2 s of the test pause (in the silver merge, once), the rest is the run and reporting:
    -- under 5 s more
    assert.is_true(tonumber(ms) < 2000 + 5000, ms)
    local run = latest_run(pg)
    assert.are.equal("succeeded", run.status)
    assert.are.equal(run.run_id, run.flow_run)
    assert.matches("^incomplete: reporting stopped at ", run.prefect_report)
    -- one warning for the run, not one per call
    local _, n = err:gsub("prefect: ", "")
    assert.are.equal(1, n, err)
    -- the flow run exists (created before the stop) but never got its final state
    local fr = P.wait_for(10, function() return P.flow_run(run.run_id) end)
    assert.are_not.equal("COMPLETED", fr.state_type)
    local ids = assert(pg:query("SELECT DISTINCT _dp_run_id::text AS id FROM silver.bank__transactions"
      .. " WHERE _dp_run_id = $1", run.run_id))
    assert.are.equal(1, #ids)
  end)

  it("a run left running by a crash: its flow run is set CRASHED at the next start", function()
    local killed = P.engine_killed_at(P.env(env), "silver", "run", "bank", "--entity", "transactions")
    assert.is_true(killed)
    local crashed = latest_run(pg)
    assert.are.equal("running", crashed.status)
    assert.are.equal("RUNNING", P.flow_run(crashed.flow_run).state_type)
    local rc, out, err = P.engine(P.env(env), "run", "bank")
    assert.are.equal(0, rc, out .. err)
    local fr = P.wait_for(5, function()
      local f = P.flow_run(crashed.flow_run)
      return f.state_type == "CRASHED" and f
    end)
    assert.is_truthy(fr)
  end)

  it("a gold model run is a flow run of its own (dp-engine.gold.<model>), FAILED with its error when it fails", function()
    -- monthly_overview reads fitness, which this spec never loaded: the model fails
    local rc, out, err = P.engine(P.env(env), "gold", "run", "monthly_overview")
    assert.are.equal(1, rc, out .. err)
    local run = latest_run(pg)
    assert.are.equal(run.run_id, run.flow_run)
    local fr = assert(P.flow_run(run.run_id))
    assert.are.equal("dp-engine.gold.monthly_overview", P.api("GET", "/flows/" .. fr.flow_id).name)
    assert.are.equal("FAILED", fr.state_type)
    assert.matches("does not exist", fr.state.message)
    local tr = P.task_runs(run.run_id)
    assert.are.equal("FAILED", tr["monthly_overview/gold"].state)
    assert.matches("fitness__activities", tr["monthly_overview/gold"].message)
  end)
end)
