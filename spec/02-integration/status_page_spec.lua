-- The status page serve shows at / (docs/status-page.md), looked at with headless Chromium (the
-- DOM after the scripts ran, and screenshots kept under .dp/test-output/status-page/), and
-- without JavaScript (curl, the session cookie).
local H = require "helpers"

local TOKEN = "spec-status-token-0123456789abcdef"
local FIXTURE = H.root .. "/spec/fixtures/serve"
local OUT = H.root .. "/.dp/test-output/status-page"

local function sh_env(env, extra)
  local parts = { "env" }
  for k, v in pairs(env) do if k:match("^DP_") then parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end end
  for k, v in pairs(extra or {}) do parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end
  return table.concat(parts, " ")
end

local function chromium(url, what, file)
  -- --virtual-time-budget lets the page's fetches finish before the DOM is dumped
  local cmd = "env -u LD_PRELOAD timeout 90 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars"
    .. " --virtual-time-budget=8000 --window-size=" .. (what == "phone" and "390,844" or "1100,800")
  if file then cmd = cmd .. " --screenshot=" .. H.sh_quote(file) .. " " .. H.sh_quote(url) .. " >/dev/null 2>&1"
  else cmd = cmd .. " --dump-dom " .. H.sh_quote(url) .. " 2>/dev/null" end
  local rc, out = H.sh(cmd)
  assert(rc == 0, "chromium failed (" .. tostring(rc) .. ") on " .. url)
  return out
end

local function curl(args)
  local _, out = H.sh("env -u LD_PRELOAD curl -s --max-time 30 " .. args)
  return out
end

describe("the status page", function()
  local env, srv, url, pid, rcfile, run_id

  setup(function()
    env = H.fresh_env("status_page", { metadata = FIXTURE .. "/metadata" })
    local scripts = H.tmpdir("status-scripts")
    H.sh(("mkdir -p %s/connectors %s/gold && cp %s/connectors/*.lua %s/connectors/*.lua %s/connectors/ && cp %s/gold/*.lua %s/gold/")
      :format(scripts, scripts, H.sh_quote(H.root), H.sh_quote(FIXTURE), scripts, H.sh_quote(FIXTURE), scripts))
    env.DP_SCRIPTS = scripts
    H.sh("mkdir -p " .. H.sh_quote(env.DP_DATA_DIR .. "/inbox/bank") .. " " .. H.sh_quote(OUT))
    H.sh(("cp -p %s/metadata/demo/bank/export-1/* %s/inbox/bank/"):format(H.sh_quote(H.root), H.sh_quote(env.DP_DATA_DIR)))
    -- data to look at: two bank runs (the second changes, adds and drops), a failed run
    assert.equal(0, (H.engine(env, "run", "bank")))
    H.sh(("cp -p %s/metadata/demo/bank/export-2/* %s/inbox/bank/"):format(H.sh_quote(H.root), H.sh_quote(env.DP_DATA_DIR)))
    assert.equal(0, (H.engine(env, "run", "bank")))
    assert.equal(0, (H.engine(env, "gold", "run", "bank_count")))
    assert.equal(0, (H.engine(env, "run", "hooked")))
    local out = os.tmpname()
    rcfile = os.tmpname()
    os.remove(rcfile)
    local pidfile = os.tmpname()
    H.sh("(sh -c " .. H.sh_quote("echo $$ > " .. pidfile .. "; exec " .. sh_env(env, { DP_API_TOKEN = TOKEN,
      DP_LISTEN = "127.0.0.1:0", DP_FILE_SETTLE_MS = "600000", PREFECT_UI_URL = "http://prefect.example/" })
      .. " " .. H.sh_quote(H.bin) .. " serve >" .. out
      .. " 2>/dev/null") .. "; echo $? > " .. rcfile .. ") >/dev/null 2>&1 & true")
    for _ = 1, 200 do
      local port = (H.try_read(out) or ""):match("listening on port (%d+)")
      if port and H.try_read(pidfile) then
        url = "http://127.0.0.1:" .. port
        pid = tonumber(H.read_file(pidfile))
        break
      end
      H.sh("sleep 0.05")
    end
    assert(url, "serve did not start")
    local pg = H.pg(env)
    run_id = assert(pg:query("SELECT run_id::text AS id FROM audit.system_run WHERE system = 'bank' ORDER BY started_at DESC"))[1].id
    -- as if Prefect had reported the run (issue #14): the page links to the flow run
    assert(pg:query("UPDATE audit.system_run SET prefect_flow_run_id = $1 WHERE run_id::text = $2",
      "5f0c4b0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", run_id))
    pg:close()
  end)

  teardown(function()
    if pid then H.sh("kill -TERM " .. pid .. "; for i in $(seq 1 200); do [ -s " .. rcfile .. " ] && break; sleep 0.05; done") end
  end)

  it("without the token shows the sign-in form and no data", function()
    local dom = chromium(url .. "/")
    assert.truthy(dom:find('id="login"', 1, true))
    assert.falsy(dom:find("bank", 1, true))
    local html = curl(H.sh_quote(url .. "/"))
    assert.truthy(html:find('<form method="post" action="/login"', 1, true))
    assert.falsy(html:find("bank", 1, true))
    chromium(url .. "/", nil, OUT .. "/signin.png")
  end)

  it("signed in through /#token=: the overview lists every system and model with its last run", function()
    local dom = chromium(url .. "/#token=" .. TOKEN)
    assert.truthy(dom:find('data-name="bank" data-status="succeeded" data-freshness="none"', 1, true), dom)
    assert.truthy(dom:find('data-name="hooked" data-status="succeeded"', 1, true))
    assert.truthy(dom:find('data-name="bank_count" data-status="succeeded"', 1, true))
    assert.truthy(dom:find('data-name="slow" data-status="never"', 1, true))
    assert.truthy(dom:find("(disabled)", 1, true))
    assert.falsy(dom:find('id="login"', 1, true))
    chromium(url .. "/#token=" .. TOKEN, nil, OUT .. "/overview.png")
    chromium(url .. "/#token=" .. TOKEN, "phone", OUT .. "/overview-phone.png")
  end)

  it("a wrong token gets the sign-in form again, with the reason", function()
    local dom = chromium(url .. "/#token=wrong-token-0123456789")
    assert.truthy(dom:find('id="login"', 1, true))
    assert.truthy(dom:find("That token was refused.", 1, true))
  end)

  it("the system page: entities with current rows, versions and rejects; runs with counts", function()
    local dom = chromium(url .. "/#token=" .. TOKEN .. "&page=/system/bank")
    -- export 1: 6 transactions; export 2 changes one amount (a version), drops one, adds two
    local row = dom:match('<tr data%-entity="transactions">(.-)</tr>')
    assert.truthy(row, dom)
    local nums = {}
    for n in row:gmatch('<td class="num">([%d,]+)</td>') do nums[#nums + 1] = n end
    assert.same({ "7", "9", "0" }, nums)
    assert.truthy(dom:find("Changes per run", 1, true))
    assert.truthy(dom:find('href="http://prefect.example/runs/flow-run/5f0c4b0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"', 1, true))
    assert.truthy(dom:find("<svg", 1, true))
    chromium(url .. "/#token=" .. TOKEN .. "&page=/system/bank", nil, OUT .. "/system.png")
  end)

  it("the run page: a timeline bar per entity-layer step", function()
    local dom = chromium(url .. "/#token=" .. TOKEN .. "&page=/run/" .. run_id)
    assert.truthy(dom:find("Timeline", 1, true))
    local bars = 0
    for _ in dom:gmatch("transactions · %a+") do bars = bars + 1 end
    assert.equal(3, bars)
    chromium(url .. "/#token=" .. TOKEN .. "&page=/run/" .. run_id, nil, OUT .. "/run.png")
  end)

  it("the lineage page: systems, entities and gold models with status", function()
    local dom = chromium(url .. "/#token=" .. TOKEN .. "&page=/lineage")
    assert.truthy(dom:find('data-node="bank" data-status="succeeded"', 1, true))
    assert.truthy(dom:find('data-node="bank.transactions"', 1, true))
    assert.truthy(dom:find('data-node="bank_count" data-status="succeeded"', 1, true))
    chromium(url .. "/#token=" .. TOKEN .. "&page=/lineage", nil, OUT .. "/lineage.png")
  end)

  it("works without JavaScript: the sign-in form posts, a cookie session shows the overview", function()
    local jar = os.tmpname()
    local bad = curl("-o /dev/null -w '%{http_code}' -d token=nope " .. H.sh_quote(url .. "/login"))
    assert.equal("401", bad)
    local code = curl("-c " .. jar .. " -o /dev/null -w '%{http_code}' --data-urlencode token=" .. TOKEN .. " "
      .. H.sh_quote(url .. "/login"))
    assert.equal("303", code)
    local cookies = H.read_file(jar)
    assert.truthy(cookies:find("dp_session", 1, true))
    assert.falsy(cookies:find(TOKEN, 1, true)) -- the cookie is derived from the token, not the token
    local html = curl("-b " .. jar .. " " .. H.sh_quote(url .. "/"))
    assert.truthy(html:find('<th scope="row">bank</th>', 1, true), html)
    assert.truthy(html:find('class="status s-succeeded"', 1, true))
    -- the cookie opens the pages, not the API
    assert.equal("401", curl("-b " .. jar .. " -o /dev/null -w '%{http_code}' " .. H.sh_quote(url .. "/api/v1/overview")))
    local out = curl("-b " .. jar .. " -c " .. jar .. " -o /dev/null -w '%{http_code}' " .. H.sh_quote(url .. "/logout"))
    assert.equal("303", out)
    html = curl("-b " .. jar .. " " .. H.sh_quote(url .. "/"))
    assert.truthy(html:find('id="login"', 1, true))
    os.remove(jar)
  end)

  it("serves its files with a content security policy; unknown files are 404", function()
    local head = curl("-D - -o /dev/null " .. H.sh_quote(url .. "/"))
    assert.truthy(head:find("Content-Security-Policy: default-src 'none'; script-src 'self'", 1, true), head)
    assert.equal("200", curl("-o /dev/null -w '%{http_code}' " .. H.sh_quote(url .. "/ui/app.js")))
    assert.equal("200", curl("-o /dev/null -w '%{http_code}' " .. H.sh_quote(url .. "/ui/style.css")))
    assert.equal("404", curl("--path-as-is -o /dev/null -w '%{http_code}' " .. H.sh_quote(url .. "/ui/../serve.c")))
    assert.equal("404", curl("-o /dev/null -w '%{http_code}' " .. H.sh_quote(url .. "/ui/nope.js")))
  end)
end)
