-- dp-engine serve against the real services: the HTTP API, triggers, queueing, shutdown.
-- Fixture: spec/fixtures/serve (bank from the examples, plus echo-connector systems).
local H = require "helpers"

local TOKEN = "spec-serve-token-0123456789abcdef"
local FIXTURE = H.root .. "/spec/fixtures/serve"

-- A scripts root with the shipped connectors and the fixture's connector and gold script.
local function scripts_dir()
  local dir = H.tmpdir("serve-scripts")
  assert(H.sh(("mkdir -p %s/connectors %s/gold && cp %s/connectors/*.lua %s/connectors/*.lua %s/connectors/ && "
    .. "cp %s/gold/*.lua %s/gold/"):format(dir, dir, H.sh_quote(H.root), H.sh_quote(FIXTURE), dir,
    H.sh_quote(FIXTURE), dir)) == 0)
  return dir
end

local function env_prefix(env, extra)
  local parts = { "env" }
  local all = {}
  for k, v in pairs(env) do all[k] = v end
  for k, v in pairs(extra or {}) do all[k] = v end
  for k, v in pairs(all) do
    if k:match("^DP_") then parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end
  end
  return table.concat(parts, " ")
end

-- Starts serve in the background; returns { pid, port, url, out, err, rcfile } once it listens.
-- A wrapper shell records serve's exit code in rcfile (the spec's shells are not its parent).
local function start_serve(env, extra)
  local out, err, pidfile, rcfile = os.tmpname(), os.tmpname(), os.tmpname(), os.tmpname()
  os.remove(rcfile)
  os.remove(pidfile)
  local settings = { DP_LISTEN = "127.0.0.1:0", DP_API_TOKEN = TOKEN, DP_LOG_LEVEL = "info" }
  for k, v in pairs(extra or {}) do settings[k] = v end
  local inner = "echo $$ > " .. pidfile .. "; exec " .. env_prefix(env, settings) .. " " .. H.sh_quote(H.bin)
    .. " serve >" .. out .. " 2>" .. err
  H.sh("(sh -c " .. H.sh_quote(inner) .. "; echo $? > " .. rcfile .. ") >/dev/null 2>&1 & true")
  for _ = 1, 300 do
    local port = (H.try_read(out) or ""):match("listening on port (%d+)")
    local pid = tonumber(H.try_read(pidfile) or "")
    if port and pid then
      return { pid = pid, port = tonumber(port), url = "http://127.0.0.1:" .. port, out = out, err = err,
        rcfile = rcfile }
    end
    if H.exists(rcfile) then break end
    H.sh("sleep 0.05")
  end
  error("serve did not start: " .. tostring(H.try_read(err)))
end

-- Stops serve with SIGTERM; returns its exit code and the seconds it took.
local function stop_serve(s)
  local t0 = H.core.monotonic()
  H.sh("kill -TERM " .. s.pid .. "; for i in $(seq 1 400); do [ -s " .. s.rcfile .. " ] && break; sleep 0.05; done")
  return tonumber(H.try_read(s.rcfile) or ""), H.core.monotonic() - t0
end

-- Runs fn(srv, pg) against a serve started on env with extra settings; stops it whatever happens.
local function with_serve(env, extra, fn)
  local srv = start_serve(env, extra)
  local pg = H.pg(env)
  local ok, err = pcall(fn, srv, pg)
  stop_serve(srv)
  pg:close()
  assert(ok, err)
end

-- One HTTP request with curl; returns status, body.
local function http(method, url, opts)
  opts = opts or {}
  local bodyfile, infile = os.tmpname(), nil
  -- (env -u LD_PRELOAD: under spec/sanitize.sh the ASan runtime is preloaded into every child,
  -- and curl, not built with it, hangs)
  local cmd = { "env -u LD_PRELOAD curl -s --max-time 60 -o", bodyfile, "-w '%{http_code}' -X", method }
  if opts.token ~= false then cmd[#cmd + 1] = "-H " .. H.sh_quote("Authorization: Bearer " .. (opts.token or TOKEN)) end
  if opts.body then
    infile = os.tmpname()
    H.write_file(infile, opts.body)
    cmd[#cmd + 1] = "--data-binary @" .. infile
  end
  cmd[#cmd + 1] = H.sh_quote(url)
  local _, code = H.sh(table.concat(cmd, " "))
  local body = H.read_file(bodyfile)
  os.remove(bodyfile)
  if infile then os.remove(infile) end
  return tonumber(code), body
end

local function json(s) return H.cjson.decode(s) end

-- Polls fn until it returns a truthy value (at most `seconds`).
local function eventually(seconds, what, fn)
  local t0 = H.core.monotonic()
  while H.core.monotonic() - t0 < seconds do
    local v = fn()
    if v then return v end
    H.sh("sleep 0.1")
  end
  error("timed out waiting for " .. what)
end

local function runs_of(pg, system)
  return assert(pg:query("SELECT run_id::text, trigger_kind, trigger_detail, status, error FROM audit.system_run"
    .. " WHERE system = $1 ORDER BY started_at", system))
end

local function finished(pg, run_id)
  local r = assert(pg:query("SELECT status FROM audit.system_run WHERE run_id::text = $1", run_id))
  return r[1] and r[1].status ~= "running" and r[1].status
end

-- The runs of a system (read afresh), once its first run has finished; nil before.
local function first_finished(pg, system)
  local rows = runs_of(pg, system)
  if rows[1] and finished(pg, rows[1].run_id) then return runs_of(pg, system) end
end

local function setup_env(name)
  local env = H.fresh_env(name, { metadata = FIXTURE .. "/metadata" })
  env.DP_SCRIPTS = scripts_dir()
  H.sh("mkdir -p " .. H.sh_quote(env.DP_DATA_DIR .. "/inbox/bank"))
  return env
end

local function drop_bank_export(env, n)
  H.sh(("cp -p %s/metadata/demo/bank/export-%d/* %s/inbox/bank/"):format(H.sh_quote(H.root), n,
    H.sh_quote(env.DP_DATA_DIR)))
end

describe("serve", function()
  local env, srv, pg

  setup(function()
    env = setup_env("serve")
    drop_bank_export(env, 1) -- there at start: the file trigger fires once for it
    srv = start_serve(env, { DP_FILE_SETTLE_MS = "2500", DP_API_MAX_BODY = "4096", DP_API_REQUEST_TIMEOUT = "1" })
    pg = H.pg(env)
  end)

  teardown(function()
    if srv then stop_serve(srv) end
    if pg then pg:close() end
  end)

  it("refuses to start without a token, except insecure on loopback", function()
    local rc, _, err = H.engine(env, "serve")
    assert.equal(2, rc)
    assert.truthy(err:find("serve needs an API token", 1, true), err)
    local rc2, err2 = H.sh(env_prefix(env, { DP_API_INSECURE = "1", DP_LISTEN = "0.0.0.0:0" }) .. " "
      .. H.sh_quote(H.bin) .. " serve 2>&1")
    assert.equal(2, rc2)
    assert.truthy(err2:find("serve needs an API token", 1, true), err2)
    local rc3, _, err3 = H.engine(env, "serve", "--bogus")
    assert.equal(2, rc3)
    assert.truthy(err3:find("unexpected argument", 1, true))
  end)

  it("answers /health without a token, naming PostgreSQL and MongoDB", function()
    local code, body = http("GET", srv.url .. "/health", { token = false })
    assert.equal(200, code)
    local h = json(body)
    assert.equal("ok", h.status)
    assert.is_true(h.postgres.ok)
    assert.is_true(h.mongodb.ok)
  end)

  it("runs the system a file in its inbox at start triggered, once", function()
    local r = eventually(30, "the file-triggered bank run", function() return first_finished(pg, "bank") end)
    assert.equal(1, #r)
    assert.equal("file", r[1].trigger_kind)
    assert.equal("transactions-2026-10.jsonl", r[1].trigger_detail)
    assert.equal("succeeded", r[1].status)
  end)

  it("after bank succeeded: the after-trigger and the gold dependant ran, each once", function()
    local bank = runs_of(pg, "bank")[1]
    local f = eventually(30, "the follower run", function() return first_finished(pg, "follower") end)
    assert.equal(1, #f)
    assert.equal("after", f[1].trigger_kind)
    assert.equal("bank run " .. bank.run_id, f[1].trigger_detail)
    local g = eventually(30, "the gold run", function() return first_finished(pg, "bank_count") end)
    assert.equal(1, #g)
    assert.equal("succeeded", g[1].status)
    assert.equal("after", g[1].trigger_kind)
    assert.equal("bank run " .. bank.run_id, g[1].trigger_detail)
    local n = assert(pg:query("SELECT transactions::text AS n FROM gold.bank_count"))
    assert.equal("6", n[1].n)
  end)

  it("POST /api/v1/systems/{name}/runs: 202 with the run id the audit then carries; GET shows it", function()
    local code, body = http("POST", srv.url .. "/api/v1/systems/hooked/runs",
      { body = '{"entities": ["events"], "layers": ["raw", "bronze", "silver"], "full_refresh": false}' })
    assert.equal(202, code, body)
    local id = json(body).run_id
    assert.truthy(id:match("^%x+%-%x+%-%x+%-%x+%-%x+$"))
    assert.equal("succeeded", eventually(30, "the API run", function() return finished(pg, id) end))
    local c2, one = http("GET", srv.url .. "/api/v1/runs/" .. id)
    assert.equal(200, c2)
    local run = json(one)
    assert.equal(id, run.run_id)
    assert.equal("api", run.trigger_kind)
    assert.equal("succeeded", run.status)
    local silver
    for _, x in ipairs(run.entities) do
      if x.layer == "silver" then silver = x end
    end
    assert.equal("events", silver.entity)
    assert.equal(1, silver.records_in)
    local c3, list = http("GET", srv.url .. "/api/v1/runs?system=hooked&limit=1")
    assert.equal(200, c3)
    assert.equal(id, json(list)[1].run_id)
  end)

  it("POST /api/v1/gold/{model}/runs builds the model under the run id it answered", function()
    local code, body = http("POST", srv.url .. "/api/v1/gold/bank_count/runs")
    assert.equal(202, code, body)
    local id = json(body).run_id
    assert.equal("succeeded", eventually(30, "the gold run", function() return finished(pg, id) end))
    local r = runs_of(pg, "bank_count")
    assert.equal(id, r[#r].run_id)
    assert.equal("api", r[#r].trigger_kind)
    -- a body may ask for a full refresh, and only that
    code, body = http("POST", srv.url .. "/api/v1/gold/bank_count/runs", { body = '{"full_refresh": true}' })
    assert.equal(202, code, body)
    assert.equal("succeeded", eventually(30, "the gold run", function() return finished(pg, json(body).run_id) end))
    code, body = http("POST", srv.url .. "/api/v1/gold/bank_count/runs", { body = '{"entities": ["x"]}' })
    assert.equal(400, code, body)
    assert.matches("a gold run takes only full_refresh", json(body).error, 1, true)
  end)

  it("answers errors as JSON with the right status", function()
    local cases = {
      { "GET", "/api/v1/runs", { token = false }, 401 },
      { "GET", "/api/v1/runs", { token = "wrong-token-0123456789abcdef" }, 401 },
      { "GET", "/metrics", { token = "x" }, 401 },
      { "POST", "/api/v1/systems/nope/runs", {}, 404 },
      { "POST", "/api/v1/gold/nope/runs", {}, 404 },
      { "GET", "/api/v1/nothing", {}, 404 },
      { "GET", "/api/v1/systems/bank/runs/extra", {}, 404 },
      { "GET", "/api/v1/runs/01a24ecc-7193-75b2-b2d7-5cb7c863bb45", {}, 404 },
      { "GET", "/api/v1/runs/not-a-uuid", {}, 404 },
      { "GET", "/api/v1/systems/bank/runs", {}, 405 },
      { "POST", "/api/v1/runs", {}, 405 },
      { "POST", "/api/v1/systems/off/runs", {}, 409 },
      { "POST", "/api/v1/systems/bank/runs", { body = "{not json" }, 400 },
      { "POST", "/api/v1/systems/bank/runs", { body = '{"layers": ["gold"]}' }, 400 },
      { "POST", "/api/v1/systems/bank/runs", { body = '{"layers": ["bronze"]}' }, 400 },
      { "POST", "/api/v1/systems/bank/runs", { body = '{"entities": "transactions"}' }, 400 },
      { "POST", "/api/v1/systems/bank/runs", { body = '{"colour": 1}' }, 400 },
      { "POST", "/api/v1/systems/bank/runs", { body = string.rep("x", 5000) }, 413 },
      { "GET", "/api/v1/runs?limit=0", {}, 400 },
      { "GET", "/api/v1/runs?limit=abc", {}, 400 },
      { "GET", "/api/v1/runs?system=a'b", {}, 400 },
      { "POST", "/api/v1/hooks/hooked/unknown", { body = "{}" }, 404 },
      { "POST", "/api/v1/hooks/hooked/ping", { body = "{oops" }, 400 },
    }
    for _, c in ipairs(cases) do
      local code, body = http(c[1], srv.url .. c[2], c[3])
      assert.equal(c[4], code, c[1] .. " " .. c[2] .. " -> " .. tostring(code) .. " " .. tostring(body))
      assert.is_string(json(body).error, c[2])
    end
  end)

  it("a client that sends its request too slowly gets 408; headers over 16 KiB get 431", function()
    local script = ("exec 3<>/dev/tcp/127.0.0.1/%d; printf 'GET /health HTTP/1.1\\r\\nHost: x\\r\\n' >&3; "
      .. "sleep 1.5; timeout 5 cat <&3"):format(srv.port)
    local _, out = H.sh("bash -c " .. H.sh_quote(script))
    assert.truthy(out:find("^HTTP/1.1 408"), out)
    assert.truthy(out:find('"error":"request not received in time"', 1, true), out)
    local f = os.tmpname()
    H.write_file(f, "X-Big: " .. string.rep("a", 20000))
    local _, code = H.sh("env -u LD_PRELOAD curl -s -o /dev/null -w '%{http_code}' -H @" .. f .. " " .. srv.url .. "/health")
    os.remove(f)
    assert.equal("431", code)
  end)

  it("answers the first of pipelined requests and ignores the rest; refuses a body without the token", function()
    local req = "GET /ui/app.js HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
    local script = ("exec 3<>/dev/tcp/127.0.0.1/%d; printf '%s%s%sGET /health HTTP/1.1\\r\\n\\r\\n' >&3; timeout 5 cat <&3")
      :format(srv.port, req, req, req)
    local _, out = H.sh("bash -c " .. H.sh_quote(script))
    local answers = 0
    for _ in out:gmatch("HTTP/1%.1 %d%d%d") do answers = answers + 1 end
    assert.equal(1, answers, out)
    assert.equal(200, (http("GET", srv.url .. "/health", { token = false }))) -- still up
    -- a body is not read before the token is right
    local code, body = http("POST", srv.url .. "/api/v1/systems/bank/runs", { token = false, body = string.rep("x", 3000) })
    assert.equal(401, code, body)
  end)

  it("a callback's JSON body reaches the connector as ctx.event", function()
    local code, body = http("POST", srv.url .. "/api/v1/hooks/hooked/ping", { body = '{"file": "x.jsonl", "n": 42}' })
    assert.equal(202, code, body)
    local id = json(body).run_id
    assert.equal("succeeded", eventually(30, "the callback run", function() return finished(pg, id) end))
    local r = runs_of(pg, "hooked")
    assert.equal("callback", r[#r].trigger_kind)
    assert.equal("ping", r[#r].trigger_detail)
    local rows = assert(pg:query("SELECT event->>'file' AS f, event->>'n' AS n FROM silver.hooked__events"
      .. " WHERE _dp_is_current"))
    assert.same({ f = "x.jsonl", n = "42" }, rows[1])
  end)

  it("queues a trigger that fires while its system runs once, merging the rest", function()
    local _, b1 = http("POST", srv.url .. "/api/v1/systems/slow/runs")
    local first = json(b1).run_id
    eventually(30, "the first slow run to start", function()
      local r = assert(pg:query("SELECT 1 FROM audit.system_run WHERE run_id::text = $1", first))
      return r[1]
    end)
    local _, b2 = http("POST", srv.url .. "/api/v1/systems/slow/runs")
    local code3, b3 = http("POST", srv.url .. "/api/v1/systems/slow/runs")
    assert.equal(202, code3)
    local second, third = json(b2), json(b3)
    assert.are_not.equal(first, second.run_id)
    assert.equal(second.run_id, third.run_id)
    assert.is_true(third.merged)
    eventually(40, "the second slow run", function() return finished(pg, second.run_id) end)
    H.sh("sleep 1")
    local runs = runs_of(pg, "slow")
    assert.equal(2, #runs)
    assert.equal(first, runs[1].run_id)
    assert.equal(second.run_id, runs[2].run_id)
  end)

  it("a file written slowly starts one run after its last write; a rename into place starts one", function()
    local before = #runs_of(pg, "bank")
    local inbox = env.DP_DATA_DIR .. "/inbox/bank"
    local lines = {}
    for l in H.read_file(H.root .. "/metadata/demo/bank/export-2/transactions-2026-10.jsonl"):gmatch("[^\n]+\n?") do
      lines[#lines + 1] = l
    end
    -- one writer, three writes a second apart, one close: IN_CLOSE_WRITE once, at the end
    local script = ("exec 3>%s; "):format(H.sh_quote(inbox .. "/transactions-2026-11.jsonl"))
    for i, l in ipairs(lines) do
      script = script .. ("printf '%%s' %s >&3; "):format(H.sh_quote(l))
      if i < 3 then script = script .. "sleep 1; " end
    end
    script = script .. "exec 3>&-"
    assert.equal(0, (H.sh("bash -c " .. H.sh_quote(script))))
    local t_closed = os.time()
    eventually(30, "one run for the slow file", function()
      local r = runs_of(pg, "bank")
      return #r == before + 1 and finished(pg, r[#r].run_id)
    end)
    H.sh("sleep 3")
    local r = runs_of(pg, "bank")
    assert.equal(before + 1, #r)
    assert.equal("transactions-2026-11.jsonl", r[#r].trigger_detail)
    assert.truthy(os.time() - t_closed >= 2)
    -- a rename into place
    local tmp = env.DP_DATA_DIR .. "/transactions-2026-12.jsonl.part"
    H.write_file(tmp, H.read_file(H.root .. "/metadata/demo/bank/export-2/transactions-2026-10.jsonl"))
    H.sh("mv " .. H.sh_quote(tmp) .. " " .. H.sh_quote(inbox .. "/transactions-2026-12.jsonl"))
    eventually(30, "one run for the renamed file", function()
      local rr = runs_of(pg, "bank")
      return #rr == before + 2 and finished(pg, rr[#rr].run_id)
    end)
    H.sh("sleep 3")
    r = runs_of(pg, "bank")
    assert.equal(before + 2, #r)
    assert.equal("transactions-2026-12.jsonl", r[#r].trigger_detail)
  end)

  it("serves Prometheus metrics that promtool accepts", function()
    local code, body = http("GET", srv.url .. "/metrics")
    assert.equal(200, code)
    assert.truthy(body:find('dp_runs_total{system="bank",status="succeeded"} %d'))
    assert.truthy(body:find('dp_records_total{layer="silver",kind="in"} %d'))
    assert.truthy(body:find('dp_last_success_timestamp_seconds{system="bank",entity="transactions"} %d'))
    assert.truthy(body:find('dp_run_duration_seconds_bucket{system="bank",le="%+Inf"} %d'))
    local f = os.tmpname()
    H.write_file(f, body)
    local promtool = os.getenv("DP_PROMTOOL") or "promtool"
    local rc, out = H.sh(H.sh_quote(promtool) .. " check metrics < " .. f .. " 2>&1")
    os.remove(f)
    assert.equal(0, rc, out)
  end)

end)

describe("serve's documentation", function()
  it("the curl examples of docs/triggers.md run against the example metadata", function()
    local doc = H.read_file(H.root .. "/docs/triggers.md")
    local block = doc:match("### HTTP API.-```sh\n(.-)```")
    assert.truthy(block and block:find("curl", 1, true))
    local env = H.fresh_env("serve_docs")
    with_serve(env, nil, function(srv, pg)
      local _, b = http("POST", srv.url .. "/api/v1/systems/bank/runs")
      local run_id = json(b).run_id
      eventually(30, "a run to show", function() return finished(pg, run_id) end)
      local f = os.tmpname()
      H.write_file(f, "set -eu\nunset LD_PRELOAD\ncurl() { command curl -f \"$@\"; echo; }\n" .. block)
      local rc, out = H.sh(("URL=%s TOKEN=%s RUN_ID=%s bash %s 2>&1"):format(srv.url, TOKEN, run_id, f))
      os.remove(f)
      assert.equal(0, rc, out)
      assert.truthy(out:find('"status":"ok"', 1, true), out)
      assert.truthy(out:find("dp_runs_total", 1, true), out)
    end)
  end)
end)

describe("serve schedules", function()
  it("fires a slot in the trigger's time zone, and catches up a missed one at start", function()
    local env = setup_env("serve_clock")
    -- 12:00 in Amsterdam on 2026-07-01 is 10:00Z; start the clock two seconds before it
    local slot = 1782900000 -- 2026-07-01T10:00:00Z
    assert.equal("2026-07-01T10:00:00Z", os.date("!%Y-%m-%dT%H:%M:%SZ", slot))
    with_serve(env, { DP_TEST_NOW = tostring(slot - 2) }, function(srv, pg)
      local runs = eventually(30, "two clock runs", function()
        local r = runs_of(pg, "clock")
        return #r == 2 and finished(pg, r[2].run_id) and r
      end)
      assert.equal("schedule", runs[1].trigger_kind)
      assert.equal("catch-up 2026-06-30T10:00:00Z", runs[1].trigger_detail)
      assert.equal("schedule", runs[2].trigger_kind)
      assert.equal("2026-07-01T10:00:00Z", runs[2].trigger_detail)
      -- the same schedule with catch_up false: the slot only
      local quiet = eventually(30, "the quiet clock's slot", function()
        local r = runs_of(pg, "quiet_clock")
        return #r >= 1 and finished(pg, r[1].run_id) and r
      end)
      H.sh("sleep 1")
      quiet = runs_of(pg, "quiet_clock")
      assert.equal(1, #quiet)
      assert.equal("2026-07-01T10:00:00Z", quiet[1].trigger_detail)
    end)
  end)
end)

describe("serve shutdown", function()
  it("SIGTERM during a run: exits 0 within the grace, the run is failed (shutdown), a rerun gives clean silver", function()
    local env = setup_env("serve_term")
    drop_bank_export(env, 1)
    local marker = os.tmpname()
    -- every run pauses in silver (transaction open, rows staged): the clock's catch-up run too
    local srv = start_serve(env, { DP_TEST_PAUSE = "silver", DP_TEST_PAUSE_FILE = marker, DP_SHUTDOWN_GRACE = "2",
      DP_FILE_SETTLE_MS = "0" })
    local pg = H.pg(env)
    eventually(30, "the bank run to reach silver", function()
      return assert(pg:query("SELECT 1 FROM audit.entity_layer_run WHERE system = 'bank' AND layer = 'silver'"
        .. " AND status = 'running'"))[1]
    end)
    H.sh("sleep 0.5")
    local code, seconds = stop_serve(srv)
    os.remove(marker)
    assert.equal(0, code)
    assert.truthy(seconds < 2 + 5, "took " .. seconds .. " s")
    local r = runs_of(pg, "bank")
    assert.equal(1, #r)
    assert.equal("failed", r[1].status)
    assert.equal("shutdown", r[1].error)
    local rows = assert(pg:query("SELECT count(*)::int AS n FROM audit.entity_layer_run WHERE status = 'running'"))
    assert.equal("0", rows[1].n)
    -- the rerun and a clean run give the same silver
    local rc, out, err = H.engine(env, "run", "bank")
    assert.equal(0, rc, tostring(out) .. tostring(err))
    local clean = H.fresh_env("serve_term_clean", { metadata = FIXTURE .. "/metadata" })
    clean.DP_SCRIPTS = env.DP_SCRIPTS
    H.sh("mkdir -p " .. H.sh_quote(clean.DP_DATA_DIR .. "/inbox/bank"))
    drop_bank_export(clean, 1)
    assert.equal(0, (H.engine(clean, "run", "bank")))
    local pg2 = H.pg(clean)
    assert.same(H.bank_history(pg2), H.bank_history(pg))
    pg:close()
    pg2:close()
  end)
end)

describe("serve with another serve and the CLI", function()
  it("never runs one system twice at the same time", function()
    local env = setup_env("serve_lock")
    drop_bank_export(env, 1)
    local a = start_serve(env)
    local b = start_serve(env)
    local pg = H.pg(env)
    local ok, err = pcall(function()
      -- the start-up file trigger of each, plus requests to both and CLI runs in between
      for _ = 1, 3 do
        http("POST", a.url .. "/api/v1/systems/bank/runs")
        http("POST", b.url .. "/api/v1/systems/bank/runs")
      end
      H.sh(env_prefix(env) .. " " .. H.sh_quote(H.bin) .. " run bank >/dev/null 2>&1 & "
        .. env_prefix(env) .. " " .. H.sh_quote(H.bin) .. " run bank >/dev/null 2>&1 & wait")
      eventually(60, "every queued run", function()
        local r = assert(pg:query("SELECT count(*)::int AS n FROM audit.system_run WHERE system = 'bank'"
          .. " AND status = 'running'"))
        if tonumber(r[1].n) > 0 then return false end
        local _, m1 = http("GET", a.url .. "/metrics")
        local _, m2 = http("GET", b.url .. "/metrics")
        return m1:find("dp_runs_queued 0", 1, true) and m2:find("dp_runs_queued 0", 1, true)
          and m1:find("dp_runs_running 0", 1, true) and m2:find("dp_runs_running 0", 1, true)
      end)
      local runs = assert(pg:query("SELECT started_at, ended_at, status FROM audit.system_run WHERE system = 'bank'"
        .. " ORDER BY started_at"))
      assert.truthy(#runs >= 4, "only " .. #runs .. " runs")
      for i = 2, #runs do
        local o = assert(pg:query("SELECT $1::timestamptz >= $2::timestamptz AS ok", runs[i].started_at, runs[i - 1].ended_at))
        assert.equal("t", o[1].ok, "run " .. i .. " started before run " .. (i - 1) .. " ended")
      end
      for _, r in ipairs(runs) do assert.equal("succeeded", r.status) end
    end)
    stop_serve(a)
    stop_serve(b)
    pg:close()
    assert(ok, err)
  end)
end)

describe("serve reload", function()
  -- a metadata folder of the test's own, to edit
  local function metadata_copy()
    local dir = H.tmpdir("serve-meta")
    assert(H.sh("cp " .. H.sh_quote(FIXTURE) .. "/metadata/*.json " .. H.sh_quote(dir)) == 0)
    return dir
  end

  local function add_system(dir, name)
    local s = H.read_file(dir .. "/systems.json"):gsub("%]%s*$", ',\n  { "name": "' .. name .. '", "type": "echo" }\n]\n')
    H.write_file(dir .. "/systems.json", s)
    local e = H.read_file(dir .. "/entities.json"):gsub("%]%s*$", ',\n  { "name": "events", "system": "' .. name
      .. '", "primary_key": ["id"], "columns": [{ "name": "id", "type": "string", "nullable": false },'
      .. ' { "name": "event", "type": "json" }] }\n]\n')
    H.write_file(dir .. "/entities.json", e)
  end

  it("a broken metadata file keeps the running version (runs use it) and /health says why; a fix is taken", function()
    local env = setup_env("serve_reload")
    local meta = metadata_copy()
    env.DP_METADATA = meta
    with_serve(env, nil, function(srv, pg)
      local good = H.read_file(meta .. "/systems.json")
      H.write_file(meta .. "/systems.json", good:gsub('"hooked"', '"hooked",,', 1))
      local health = eventually(10, "the reload error in /health", function()
        local _, body = http("GET", srv.url .. "/health", { token = false })
        local h = json(body)
        return h.reload and h
      end)
      assert.equal("ok", health.status)
      assert.is_false(health.reload.ok)
      assert.truthy(health.reload.error:find("systems.json", 1, true), health.reload.error)
      -- runs go on, on the previous version (the file on disk is broken)
      local code, body = http("POST", srv.url .. "/api/v1/systems/hooked/runs")
      assert.equal(202, code, body)
      assert.equal("succeeded", eventually(30, "a run on the previous version", function()
        return finished(pg, json(body).run_id)
      end))
      -- fixed, with a new system: taken
      H.write_file(meta .. "/systems.json", good)
      add_system(meta, "newcomer")
      eventually(10, "the new version", function()
        local c = http("POST", srv.url .. "/api/v1/systems/newcomer/runs")
        return c == 202
      end)
      local _, b2 = http("GET", srv.url .. "/health", { token = false })
      assert.is_nil(json(b2).reload)
    end)
  end)

  it("a broken gold script keeps the old version (its run succeeds); a fixed one is used by the next run", function()
    local env = setup_env("serve_gold_reload")
    drop_bank_export(env, 1)
    assert.equal(0, (H.engine(env, "run", "bank")))
    local srv = start_serve(env, { DP_FILE_SETTLE_MS = "600000" })
    local pg = H.pg(env)
    local script = env.DP_SCRIPTS .. "/gold/bank_count.lua"
    local good = H.read_file(script)
    local function gold_run()
      local code, body = http("POST", srv.url .. "/api/v1/gold/bank_count/runs")
      assert.equal(202, code, body)
      local id = json(body).run_id
      assert.equal("succeeded", eventually(30, "the gold run", function() return finished(pg, id) end))
      return assert(pg:query("SELECT transactions::text AS n FROM gold.bank_count"))[1].n
    end
    local ok, err = pcall(function()
      H.write_file(script, "return { sql = function(ref) return 'SELECT' .. end }\n") -- a syntax error
      eventually(10, "the reload error in /health", function()
        local _, body = http("GET", srv.url .. "/health", { token = false })
        local h = json(body)
        return h.reload and h.reload.error:find("bank_count.lua", 1, true)
      end)
      assert.equal("6", gold_run()) -- the previous version, although the file on disk is broken
      H.write_file(script, (good:gsub("count%(%*%)", "count(*) * 10")))
      eventually(10, "the fixed version", function()
        local _, body = http("GET", srv.url .. "/health", { token = false })
        return json(body).reload == nil
      end)
      assert.equal("60", gold_run())
    end)
    H.write_file(script, good)
    stop_serve(srv)
    pg:close()
    assert(ok, err)
  end)

  it("with DP_METADATA=mongo, a new push is picked up by polling its hash", function()
    local env = setup_env("serve_push")
    local meta = metadata_copy()
    local function push()
      local rc, out, perr = H.engine(env, "metadata", "push", "--dir", meta)
      assert.equal(0, rc, tostring(out) .. tostring(perr))
    end
    push()
    env.DP_METADATA = "mongo"
    local srv = start_serve(env, { DP_RELOAD_POLL = "0.3" })
    local ok, err = pcall(function()
      assert.equal(404, (http("POST", srv.url .. "/api/v1/systems/pushed_later/runs")))
      add_system(meta, "pushed_later")
      push()
      eventually(15, "the pushed version", function()
        return http("POST", srv.url .. "/api/v1/systems/pushed_later/runs") == 202
      end)
    end)
    stop_serve(srv)
    assert(ok, err)
  end)
end)

describe("serve's script limits", function()
  it("a connector that loops fails its entity at the deadline, and the worker takes the next run", function()
    local env = setup_env("serve_limits")
    with_serve(env, { DP_WORKERS = "1", DP_SCRIPT_TIMEOUT = "1" }, function(srv, pg)
      local _, b1 = http("POST", srv.url .. "/api/v1/systems/slow/runs") -- busy for 4 s of CPU
      local _, b2 = http("POST", srv.url .. "/api/v1/systems/hooked/runs")
      local t0 = H.core.monotonic()
      assert.equal("failed", eventually(30, "the looping run", function() return finished(pg, json(b1).run_id) end))
      assert.truthy(H.core.monotonic() - t0 < 10)
      local e = assert(pg:query("SELECT error FROM audit.entity_layer_run WHERE run_id::text = $1 AND layer = 'raw'",
        json(b1).run_id))[1].error
      assert.truthy(e:find("DP_SCRIPT_TIMEOUT", 1, true), e)
      assert.equal("succeeded", eventually(30, "the next run", function() return finished(pg, json(b2).run_id) end))
      local n = assert(pg:query("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND database ="
        .. " (SELECT oid FROM pg_database WHERE datname = current_database())"))[1].n
      assert.equal("0", n) -- the failed run released its lock
    end)
  end)
end)

describe("serve's queue", function()
  it("merges waiting runs' entity lists, and never merges callbacks (each event reaches a run)", function()
    local env = setup_env("serve_merge")
    drop_bank_export(env, 1)
    with_serve(env, { DP_WORKERS = "1", DP_FILE_SETTLE_MS = "600000" }, function(srv, pg)
      local _, b0 = http("POST", srv.url .. "/api/v1/systems/slow/runs") -- the only worker: busy 4 s
      local _, b1 = http("POST", srv.url .. "/api/v1/systems/bank/runs", { body = '{"entities": ["transactions"]}' })
      local _, b2 = http("POST", srv.url .. "/api/v1/systems/bank/runs", { body = '{"entities": ["accounts"]}' })
      assert.equal(json(b1).run_id, json(b2).run_id)
      local _, h1 = http("POST", srv.url .. "/api/v1/hooks/hooked/ping", { body = '{"n": 1}' })
      local _, h2 = http("POST", srv.url .. "/api/v1/hooks/hooked/ping", { body = '{"n": 2}' })
      assert.are_not.equal(json(h1).run_id, json(h2).run_id)
      assert.is_nil(json(h2).merged)
      for _, id in ipairs({ json(b0).run_id, json(b1).run_id, json(h1).run_id, json(h2).run_id }) do
        eventually(40, "run " .. id, function() return finished(pg, id) end)
      end
      local ents = assert(pg:query("SELECT string_agg(DISTINCT entity, ',' ORDER BY entity) AS e FROM audit.entity_layer_run"
        .. " WHERE run_id::text = $1", json(b1).run_id))[1].e
      assert.equal("accounts,transactions", ents)
      local v = assert(pg:query("SELECT event->>'n' AS n FROM silver.hooked__events WHERE _dp_is_current"))[1].n
      assert.equal("2", v) -- the second callback ran after the first, with its own event
      local versions = assert(pg:query("SELECT count(*) AS n FROM silver.hooked__events"))[1].n
      assert.equal("2", versions)
    end)
  end)

  it("without a token (loopback only) answers loopback host names only", function()
    local env = setup_env("serve_insecure")
    local srv = start_serve(env, { DP_API_TOKEN = "", DP_API_INSECURE = "1" })
    local ok, err = pcall(function()
      assert.equal(200, (http("GET", srv.url .. "/api/v1/runs", { token = false })))
      local _, code = H.sh("env -u LD_PRELOAD curl -s -o /dev/null -w '%{http_code}' -H 'Host: evil.example:8080' "
        .. srv.url .. "/api/v1/runs")
      assert.equal("403", code)
    end)
    stop_serve(srv)
    assert(ok, err)
  end)
end)

describe("serve's run ids", function()
  it("a run queued before a CLI run but started after it still reaches silver (loads ordered by start)", function()
    local env = setup_env("serve_order")
    with_serve(env, { DP_WORKERS = "1" }, function(srv, pg)
      -- the only worker is busy for 4 s; the callback waits in the queue with its run id
      local _, b1 = http("POST", srv.url .. "/api/v1/systems/slow/runs")
      eventually(30, "the slow run to start", function()
        return assert(pg:query("SELECT 1 FROM audit.system_run WHERE run_id::text = $1", json(b1).run_id))[1]
      end)
      local _, b2 = http("POST", srv.url .. "/api/v1/hooks/hooked/ping", { body = '{"v": 2}' })
      local queued = json(b2).run_id
      -- meanwhile a CLI run of the same system: a later run id, committed first
      local rc, out, cerr = H.engine(env, "run", "hooked")
      assert.equal(0, rc, tostring(out) .. tostring(cerr))
      local cli_id = assert(pg:query("SELECT run_id::text AS id FROM audit.system_run WHERE system = 'hooked'"
        .. " AND trigger_kind = 'manual'"))[1].id
      assert.truthy(cli_id > queued, "the CLI run's id sorts after the queued one")
      assert.equal("succeeded", eventually(30, "the queued run", function() return finished(pg, queued) end))
      local rows = assert(pg:query("SELECT event->>'v' AS v FROM silver.hooked__events WHERE _dp_is_current"))
      assert.equal("2", rows[1].v)
    end)
  end)
end)
