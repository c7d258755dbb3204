-- dp-engine doctor (docs/cli.md#doctor) against the real services, and what the other commands
-- say instead of an SQL error when the database is not migrated or an upstream never ran.
local H = require "helpers"
local cjson = H.cjson

local DEMO = H.root .. "/metadata/demo"

-- The doctor's --json document (asserting it parses and is the only thing on stdout).
local function doctor_json(env, ...)
  local rc, out, err = H.engine(env, "doctor", "--json", ...)
  local doc = H.json_stdout(out)
  local by = {}
  for _, c in ipairs(doc.checks) do by[c.check] = c end
  return rc, doc, by, err
end

-- env with DP_POSTGRES_URL pointing at a new, empty database (never migrated).
local function unmigrated(env, name)
  local pg = H.pg(env)
  local db = "dp_spec_" .. (os.getenv("DP_SPEC_TAG") or "x") .. "_" .. name
  assert(pg:query("DROP DATABASE IF EXISTS " .. db .. " WITH (FORCE)"))
  assert(pg:query("CREATE DATABASE " .. db))
  pg:close()
  return H.with(env, { DP_POSTGRES_URL = env.DP_POSTGRES_URL:gsub("/[^/?]*(%??[^/]*)$", "/" .. db .. "%1") })
end

-- A metadata folder holding rest systems (and no file system).
local function rest_metadata(systems)
  local dir = H.tmpdir("doctor_meta")
  local ents = {}
  for _, s in ipairs(systems) do
    ents[#ents + 1] = { name = "items", system = s.name, load_type = "full", primary_key = { "id" },
      source = { path = "/items" }, columns = { { name = "id", type = "integer" } } }
  end
  H.write_file(dir .. "/systems.json", cjson.encode(systems))
  H.write_file(dir .. "/entities.json", cjson.encode(ents))
  return dir
end

describe("dp-engine doctor", function()
  local env

  setup(function()
    env = H.fresh_env("doctor")
    for _, s in ipairs({ "bank", "fitness", "listening" }) do H.fill_inbox(env, "inbox/" .. s, DEMO .. "/" .. s .. "/export-1") end
  end)

  it("says ok for a working setup, with the versions of both servers, and exits 0", function()
    local rc, out, err = H.engine(env, "doctor")
    assert.are.equal(0, rc, out .. err)
    assert.matches("ok +postgres +PostgreSQL %d+", out)
    assert.matches("ok +mongodb +MongoDB %d+%.%d+", out)
    assert.matches("ok +migrations +%d+ applied, none pending", out)
    assert.matches("ok +metadata +.- is valid: 3 systems, 7 entities, 2 gold models", out)
    assert.matches("ok +inbox bank +.-inbox/bank %(2 files%)", out)
    assert.matches("ok +inbox fitness", out)
    assert.matches("ok +disk +.-GiB free of", out)
    -- no master key and no secret in the metadata: a warning with its fix, not a failure
    assert.matches("warn +secrets +no master key", out)
    assert.matches("fix: only needed when metadata refers to secrets", out, 1, true)
    assert.is_nil(out:find("fail", 1, true))
  end)

  it("prints one JSON document with --json", function()
    local rc, doc, by = doctor_json(env)
    assert.are.equal(0, rc)
    assert.is_true(doc.ok)
    for _, name in ipairs({ "engine home", "scripts", "postgres", "migrations", "mongodb", "metadata", "secrets",
      "inbox bank", "inbox fitness", "inbox listening", "disk" }) do
      assert.is_table(by[name], name)
    end
    assert.are.equal("ok", by.postgres.status)
    assert.are.equal(cjson.null, by.postgres.fix)
    assert.are.equal("warn", by.secrets.status)
    assert.is_string(by.secrets.fix)
  end)

  it("fails on an engine home without lua/, with its fix, in text and JSON", function()
    local e = H.with(env, { DP_HOME = H.tmpdir("doctor_no_home") })
    local rc, out = H.engine(e, "doctor")
    assert.are.equal(1, rc, out)
    assert.matches("fail +engine home +engine home .-doctor_no_home.- has no lua/dp/engine%.lua", out)
    assert.matches("fix: set DP_HOME to the folder that holds lua/ and migrations/", out, 1, true)
    assert.matches("1 check failed (the other checks need the engine home)", out, 1, true)
    local _, doc, by = doctor_json(e)
    assert.is_false(doc.ok)
    assert.are.equal("fail", by["engine home"].status)
    assert.matches("set DP_HOME", by["engine home"].fix, 1, true)
    -- other commands still fail as before, on stderr
    local rc2, _, err = H.engine(e, "runs")
    assert.are.equal(2, rc2)
    assert.matches("has no lua/dp/engine.lua (set DP_HOME)", err, 1, true)
  end)

  it("fails on a missing inbox, naming the folder and how to make it (exit 1)", function()
    local e = H.with(env, { DP_DATA_DIR = H.tmpdir("doctor_empty") })
    local rc, out = H.engine(e, "doctor")
    assert.are.equal(1, rc, out)
    assert.matches("fail +inbox bank +.-/inbox/bank cannot be read: No such file or directory", out)
    assert.matches("fix: create it %(mkdir %-p .-/inbox/bank%)", out)
    assert.matches("3 checks failed", out, 1, true)
  end)

  it("fails on pending migrations with `dp-engine migrate` as the fix", function()
    local rc, _, by = doctor_json(unmigrated(env, "doctor_unmigrated"))
    assert.are.equal(1, rc)
    assert.are.equal("ok", by.postgres.status)
    assert.are.equal("fail", by.migrations.status)
    assert.matches("^0 applied, %d+ pending %(first: 0001_audit%.sql%)$", by.migrations.message)
    assert.are.equal("run `dp-engine migrate`", by.migrations.fix)
  end)

  it("fails when PostgreSQL cannot be reached and skips what needs it", function()
    local rc, _, by = doctor_json(H.with(env, { DP_POSTGRES_URL = "postgresql://dp@127.0.0.1:1/nothing?connect_timeout=2" }))
    assert.are.equal(1, rc)
    assert.are.equal("fail", by.postgres.status)
    assert.matches("start PostgreSQL", by.postgres.fix, 1, true)
    assert.are.equal("warn", by.migrations.status)
    assert.matches("skipped", by.migrations.message, 1, true)
    assert.are.equal("ok", by.mongodb.status) -- the other checks still run
  end)

  it("fails on invalid metadata, listing the errors, and skips the inboxes", function()
    local dir = H.tmpdir("doctor_bad")
    H.write_file(dir .. "/systems.json", '[{"name": "bank", "type": "file", "inbox": "x", "enabeld": true}]')
    H.write_file(dir .. "/entities.json", '[]')
    local rc, _, by = doctor_json(H.with(env, { DP_METADATA = dir }))
    assert.are.equal(1, rc)
    assert.are.equal("fail", by.metadata.status)
    assert.matches('systems.json[0].enabeld: unknown field', by.metadata.message, 1, true)
    assert.are.equal("warn", by.inboxes.status)
  end)

  it("names FerretDB as bronze's server and fails a DP_DATA_DIR that is a file", function()
    local _, doc, by = doctor_json(env)
    assert.is_true(doc.ok)
    -- the test services run FerretDB (spec/services.sh): buildInfo carries ferretdbVersion
    assert.matches("(FerretDB)", by.mongodb.message, 1, true)
    local file = H.tmpdir("doctor_file") .. "/afile"
    H.write_file(file, "x")
    local rc, _, by2 = doctor_json(H.with(env, { DP_DATA_DIR = file }))
    assert.are.equal(1, rc)
    assert.are.equal("fail", by2.disk.status)
    assert.matches("is not a folder", by2.disk.message, 1, true)
  end)

  it("checks the master key against the secret store", function()
    local _, key = H.engine(env, "secrets", "gen-key")
    key = key:gsub("%s+$", "")
    local e = H.with(env, { DP_MASTER_KEY = key, DP_SECRETS_FILE = env.DP_DATA_DIR .. "/doctor-secrets.enc" })
    local rc, _, by = doctor_json(e)
    assert.are.equal(0, rc)
    assert.matches("no store yet", by.secrets.message, 1, true)
    assert(H.sh("printf s3cret | env " .. "DP_HOME=" .. H.sh_quote(H.root) .. " DP_MASTER_KEY=" .. H.sh_quote(key)
      .. " DP_SECRETS_FILE=" .. H.sh_quote(e.DP_SECRETS_FILE) .. " " .. H.sh_quote(H.bin) .. " secrets set tok 2>/dev/null") == 0)
    rc, _, by = doctor_json(e)
    assert.are.equal(0, rc)
    assert.matches("master key opens .- %(1 secret%)", by.secrets.message)
    local _, other = H.engine(env, "secrets", "gen-key")
    rc, _, by = doctor_json(H.with(e, { DP_MASTER_KEY = other:gsub("%s+$", "") }))
    assert.are.equal(1, rc)
    assert.are.equal("fail", by.secrets.status)
  end)

  describe("rest systems", function()
    local server
    setup(function() server = H.http_server() end)
    teardown(function() if server then server.stop() end end)

    it("resolves each base_url's host and sends a request only with --network", function()
      local dir = rest_metadata({
        { name = "api", type = "rest", base_url = server.url },
        { name = "gone", type = "rest", base_url = "http://no-such-host.invalid/v1" },
      })
      local e = H.with(env, { DP_METADATA = dir })
      server.reset()
      local rc, _, by = doctor_json(e)
      assert.are.equal(1, rc)
      assert.are.equal("ok", by["rest api"].status)
      assert.matches("host 127.0.0.1 resolves (no request sent", by["rest api"].message, 1, true)
      assert.are.equal("fail", by["rest gone"].status)
      assert.matches("host no-such-host.invalid of http://no-such-host.invalid/v1 does not resolve", by["rest gone"].message, 1, true)
      assert.are.equal(0, #server.requests())
      rc, _, by = doctor_json(e, "--network")
      assert.are.equal(1, rc)
      assert.matches("answers HTTP %d+ to a HEAD request", by["rest api"].message)
      local reqs = server.requests()
      assert.are.equal(1, #reqs)
      assert.are.equal("HEAD", reqs[1].method)
    end)

    it("fails without a master key when the metadata refers to a secret", function()
      local dir = rest_metadata({
        { name = "api", type = "rest", base_url = server.url, auth = { type = "bearer", token = { secret = "api_token" } } },
      })
      local rc, _, by = doctor_json(H.with(env, { DP_METADATA = dir }))
      assert.are.equal(1, rc)
      assert.are.equal("fail", by.secrets.status)
      assert.matches("1 of the 1 secret the metadata refers to is not given otherwise", by.secrets.message, 1, true)
      -- the same secret given as DP_SECRET_<NAME>, as the fix says: no failure
      rc, _, by = doctor_json(H.with(env, { DP_METADATA = dir, DP_SECRET_API_TOKEN = "t0ken" }))
      assert.are.equal("ok", by.secrets.status, by.secrets.message)
      assert.matches("every secret the metadata refers to (1) is given", by.secrets.message, 1, true)
    end)
  end)
end)

describe("commands on a database that is not migrated", function()
  local env

  setup(function()
    env = unmigrated(H.fresh_env("unmigrated"), "unmigrated_empty")
    H.fill_inbox(env, "inbox/bank", DEMO .. "/bank/export-1")
  end)

  it("say what to run instead of the SQL error (exit 2), serve too", function()
    for _, args in ipairs({ { "run", "bank" }, { "runs" }, { "show", "bank.transactions" }, { "lineage" },
      { "gold", "run", "monthly_overview" }, { "replay", "bank", "--from", "bronze" }, { "retention", "--dry-run" },
      { "forget", "bank.transactions", "--key", "id=TX-1001", "--dry-run" },
      { "rollback", "0190a0b0-0000-7000-8000-000000000000", "--dry-run" } }) do
      local rc, out, err = H.engine(env, unpack(args))
      local cmd = table.concat(args, " ")
      assert.are.equal(2, rc, cmd .. ": " .. err)
      assert.matches("the database is not migrated: run `dp-engine migrate` (0001_audit.sql and ", err, 1, true)
      assert.is_nil(err:find("ERROR:", 1, true), cmd .. ": " .. err)
      assert.is_nil(err:find("does not exist", 1, true), cmd .. ": " .. err)
      assert.are.equal("", out, cmd)
    end
    -- serve refuses to start (a timeout stands in for a serve that would have started)
    local parts = { "timeout 20 env", "DP_LISTEN=127.0.0.1:0", "DP_API_TOKEN=" .. string.rep("t", 32) }
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end
    parts[#parts + 1] = H.sh_quote(H.bin) .. " serve 2>&1"
    local src, sout = H.sh(table.concat(parts, " "))
    assert.are.equal(2, src, sout)
    assert.matches("dp-engine serve: the database is not migrated: run `dp-engine migrate`", sout, 1, true)
    local rc = H.engine(env, "migrate")
    assert.are.equal(0, rc)
    rc = H.engine(env, "run", "bank")
    assert.are.equal(0, rc)
  end)
end)

describe("gold run before its upstream ran", function()
  local env

  setup(function()
    env = H.fresh_env("missing_upstream")
    H.fill_inbox(env, "inbox/bank", DEMO .. "/bank/export-1")
    assert.are.equal(0, (H.engine(env, "run", "bank")))
  end)

  it("names the missing input and the run that creates it, once, without the SQL error", function()
    local rc, out, err = H.engine(env, "gold", "run", "monthly_overview")
    assert.are.equal(1, rc)
    local msg = "gold model monthly_overview reads silver.fitness__activities_current, which does not exist yet: "
      .. "run `dp-engine run fitness` first"
    local function count(s)
      local n, at = 0, 1
      while true do
        local i = s:find(msg, at, true)
        if not i then return n end
        n, at = n + 1, i + 1
      end
    end
    assert.are.equal(1, count(out), out)
    assert.are.equal(1, count(err), err)
    assert.is_nil((out .. err):find("relation", 1, true), out .. err)
    local pg = H.pg(env)
    local row = assert(pg:query("SELECT status, error FROM audit.system_run WHERE system = 'monthly_overview'"))[1]
    pg:close()
    assert.are.equal("failed", row.status)
    assert.are.equal(msg, row.error)
  end)
end)
