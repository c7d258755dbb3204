-- The command line's exit codes and the audit rules around a run: crashed runs are marked
-- at the next start, and one system never runs twice at the same time.
local H = require "helpers"

local DEMO = H.root .. "/metadata/demo/bank"

describe("dp-engine command line", function()
  local env = { DP_HOME = H.root }

  it("prints its version and help, and exits 2 on an unknown command", function()
    local rc, out = H.engine(env, "--version")
    assert.are.equal(0, rc)
    assert.matches("^dp%-engine %d+%.%d+%.%d+", out)
    rc, out = H.engine(env, "--help")
    assert.are.equal(0, rc)
    assert.matches("usage: dp%-engine COMMAND", out)
    local err
    rc, _, err = H.engine(env, "frobnicate")
    assert.are.equal(2, rc)
    assert.matches("unknown command: frobnicate", err)
    assert.matches("usage: dp%-engine", err)
    rc, out = H.engine(env, "run", "--help")
    assert.are.equal(0, rc)
    assert.matches("usage: dp%-engine run SYSTEM", out)
  end)

  it("says plainly which commands are not built yet (exit 2)", function()
    for _, cmd in ipairs({ "retention" }) do
      local rc, _, err = H.engine(env, cmd)
      assert.are.equal(2, rc, cmd)
      assert.matches("not built yet", err, 1, true)
    end
  end)

  it("exits 2 on invalid metadata, listing every error with file and path", function()
    local dir = H.tmpdir("badmeta")
    H.write_file(dir .. "/systems.json", '[{"name": "bank", "type": "file", "inbox": "x", "enabeld": true}]')
    H.write_file(dir .. "/entities.json", '[{"name": "t", "system": "bank", "source": {"pattern": "*.jsonl"}, "columns": [{"name": "id", "type": "strng"}]}]')
    local rc, _, err = H.engine({ DP_HOME = H.root, DP_METADATA = dir }, "metadata", "validate")
    assert.are.equal(2, rc)
    assert.matches('systems.json[0].enabeld: unknown field (did you mean "enabled"?)', err, 1, true)
    assert.matches('entities.json[0].columns[0].type: "strng" is not one of', err, 1, true)
    rc, _, err = H.engine({ DP_HOME = H.root, DP_METADATA = dir }, "run", "bank")
    assert.are.equal(2, rc)
  end)
end)

describe("run bookkeeping", function()
  local env, pg

  setup(function()
    env = H.fresh_env("cli_audit")
    pg = H.pg(env)
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
  end)
  teardown(function() if pg then pg:close() end end)

  it("exits 2 for an unknown system or entity, running nothing", function()
    local rc, _, err = H.engine(env, "run", "nope")
    assert.are.equal(2, rc)
    assert.matches("no system named nope", err)
    rc, _, err = H.engine(env, "run", "bank", "--entity", "nope")
    assert.are.equal(2, rc)
    assert.matches("system bank has no entity named nope", err)
    rc, _, err = H.engine(env, "run", "bank", "--layer", "silver")
    assert.are.equal(2, rc)
    assert.matches("--layer must start at raw", err, 1, true)
    assert.are.equal("0", assert(pg:query("SELECT count(*) AS n FROM audit.system_run"))[1].n)
  end)

  it("runs only the layers asked for", function()
    local rc, _, err = H.engine(env, "run", "bank", "--entity", "accounts", "--layer", "raw")
    assert.are.equal(0, rc, err)
    local rows = assert(pg:query("SELECT entity, layer, status FROM audit.entity_layer_run ORDER BY started_at"))
    assert.are.same({ { entity = "accounts", layer = "raw", status = "succeeded" } }, rows)
  end)

  it("marks a run left running by a crash as crashed when the system next starts", function()
    local id = "01900000-0000-7000-8000-000000000001"
    assert(pg:query("INSERT INTO audit.system_run (run_id, run_ts, system, status, started_at, engine_version) VALUES ($1, now(), 'bank', 'running', now() - interval '1 hour', 'test')", id))
    assert(pg:query("INSERT INTO audit.system_layer_run (run_id, run_ts, system, layer, status, started_at) VALUES ($1, now(), 'bank', 'bronze', 'running', now())", id))
    assert(pg:query("INSERT INTO audit.entity_layer_run (run_id, run_ts, system, entity, layer, status, started_at) VALUES ($1, now(), 'bank', 'transactions', 'bronze', 'running', now())", id))
    local rc, _, err = H.engine(env, "run", "bank")
    assert.are.equal(0, rc, err)
    assert.are.same({ status = "crashed" }, assert(pg:query("SELECT status FROM audit.system_run WHERE run_id = $1", id))[1])
    assert.are.same({ status = "crashed" }, assert(pg:query("SELECT status FROM audit.system_layer_run WHERE run_id = $1", id))[1])
    assert.are.same({ status = "crashed" }, assert(pg:query("SELECT status FROM audit.entity_layer_run WHERE run_id = $1", id))[1])
  end)

  it("refuses to run a system that another process is running (exit 1)", function()
    local holder = H.pg(env)
    assert(holder:query("SELECT pg_advisory_lock(hashtextextended('dp-engine/system/' || $1, 0))", "bank"))
    local rc, _, err = H.engine(env, "run", "bank")
    assert.are.equal(1, rc)
    assert.matches("system bank is already running", err)
    holder:close()
    rc = H.engine(env, "run", "bank")
    assert.are.equal(0, rc)
  end)

  it("lists runs and shows one run in detail, readably and as JSON", function()
    local rc, out, err = H.engine(env, "runs", "--system", "bank", "--limit", "2")
    assert.are.equal(0, rc, err)
    assert.matches("run_id%s+system%s+trigger%s+status", out)
    local _, n = out:gsub("\n", "")
    assert.are.equal(3, n) -- header + 2 runs
    rc, out = H.engine(env, "runs", "list", "--json")
    assert.are.equal(0, rc)
    local runs = H.cjson.decode(out)
    assert.is_true(#runs >= 3)
    local id = runs[1].run_id
    rc, out = H.engine(env, "runs", "show", id, "--json")
    assert.are.equal(0, rc)
    local one = H.cjson.decode(out)[1]
    assert.are.equal(id, one.run_id)
    assert.are.equal(3, #one.layers)
    assert.are.equal(6, #one.entities)
    assert.are.equal("raw", one.entities[1].layer)
    rc, out = H.engine(env, "runs", "show", id)
    assert.are.equal(0, rc)
    assert.matches("transactions%s+silver%s+succeeded", out)
    rc, _, err = H.engine(env, "runs", "show", "01900000-0000-7000-8000-00000000ffff")
    assert.are.equal(1, rc)
    assert.matches("no run 01900000%-0000%-7000%-8000%-00000000ffff", err)
    rc = H.engine(env, "runs", "--limit", "x")
    assert.are.equal(2, rc)
  end)

  it("refuses an applied migration that was edited", function()
    local home = H.tmpdir("home")
    assert(H.sh("cp -r " .. H.sh_quote(H.root .. "/lua") .. " " .. H.sh_quote(H.root .. "/migrations") .. " " .. H.sh_quote(home)) == 0)
    local e2 = {}
    for k, v in pairs(env) do e2[k] = v end
    e2.DP_HOME = home
    local rc, out = H.engine(e2, "migrate")
    assert.are.equal(0, rc)
    assert.matches("0 applied", out)
    local f = home .. "/migrations/0002_engine_state.sql"
    H.write_file(f, H.read_file(f) .. "\n-- edited\n")
    local err
    rc, _, err = H.engine(e2, "migrate")
    assert.are.equal(1, rc)
    assert.matches("migration 0002_engine_state.sql was changed after it was applied", err, 1, true)
    H.write_file(home .. "/migrations/0002_engine_state.sql", H.read_file(H.root .. "/migrations/0002_engine_state.sql"))
    H.write_file(home .. "/migrations/9999_extra.sql", "CREATE TABLE dp.spec_extra (x int);")
    rc, out = H.engine(e2, "migrate")
    assert.are.equal(0, rc)
    assert.matches("1 applied", out)
    local names = {}
    for _, r in ipairs(assert(pg:query("SELECT name FROM dp.schema_migration ORDER BY name"))) do names[#names + 1] = r.name end
    assert.are.equal("9999_extra.sql", names[#names])
  end)
end)

describe("one version", function()
  it("--version, dp.core.version and the audit's engine_version agree (core/version.h.in)", function()
    local env = H.fresh_env("one_version")
    local rc, out = H.engine(env, "--version")
    assert.equal(0, rc)
    local v = out:match("^dp%-engine (%S+)\n$")
    assert.truthy(v, out)
    assert.equal(H.core.version, v)
    local cmake = H.read_file(H.root .. "/CMakeLists.txt"):match("project%(dp%-engine VERSION ([%d.]+)")
    assert.equal(cmake, v)
    H.sh("mkdir -p " .. H.sh_quote(env.DP_DATA_DIR .. "/inbox/bank") .. " && cp -p " .. H.sh_quote(H.root)
      .. "/metadata/demo/bank/export-1/* " .. H.sh_quote(env.DP_DATA_DIR .. "/inbox/bank/"))
    assert.equal(0, (H.engine(env, "run", "bank")))
    local pg = H.pg(env)
    local row = assert(pg:query("SELECT DISTINCT engine_version FROM audit.system_run"))
    pg:close()
    assert.equal(1, #row)
    assert.equal(v, row[1].engine_version)
  end)
end)
