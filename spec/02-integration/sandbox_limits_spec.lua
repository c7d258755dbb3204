-- Script limits through whole runs of build/dp-engine (issue #11, item 6; docs/connectors.md,
-- "What the sandbox promises, and what it does not"): a connector that loops or eats memory
-- fails its entity with an error naming the script, the system, the entity and the limit,
-- writes nothing, keeps no lock, and the next run works; a disabled system's looping connector
-- neither hangs runs of other systems nor `metadata validate`.
local H = require "helpers"
local cjson = H.cjson

local CONNECTOR = [[
return {
  entity_schema = { fields = { { mode = { type = "string", required = true } } } },
  extract = function(ctx)
    local mode = ctx.entity.source.mode
    if mode == "loop" then
      while true do end
    elseif mode == "swallow" then
      while true do pcall(function() while true do end end) end
    elseif mode == "gsub" then
      local s = ("x"):rep(1000000)
      return (s:gsub(".", s))
    end
    ctx.emit({ { id = 1, mode = mode } })
  end,
}
]]

describe("script limits in whole runs", function()
  local env, pg, meta, scripts

  local function entities(mode)
    H.write_file(meta .. "/entities.json", cjson.encode({
      { name = "items", system = "lp", primary_key = { "id" }, source = { mode = mode },
        columns = { { name = "id", type = "bigint" }, { name = "mode", type = "text" } } },
    }))
  end

  local function entity_run(layer)
    return assert(pg:query("SELECT status, error FROM audit.entity_layer_run WHERE system = 'lp' AND entity = 'items' "
      .. "AND layer = $1 ORDER BY started_at DESC LIMIT 1", layer))[1]
  end

  setup(function()
    env = H.fresh_env("sandbox_limits")
    pg = H.pg(env)
    meta, scripts = H.tmpdir("limits-meta"), H.tmpdir("limits-scripts")
    H.sh("mkdir -p " .. H.sh_quote(scripts .. "/connectors"))
    H.write_file(scripts .. "/connectors/looper.lua", CONNECTOR)
    H.write_file(scripts .. "/connectors/sleeper.lua", "while true do end\nreturn {}\n")
    H.write_file(meta .. "/systems.json", cjson.encode({
      { name = "lp", type = "looper" },
      { name = "dormant", type = "sleeper", enabled = false },
    }))
    env.DP_METADATA, env.DP_SCRIPTS = meta, scripts
    env.DP_SCRIPT_TIMEOUT, env.DP_SCRIPT_LOAD_TIMEOUT, env.DP_SCRIPT_MEMORY = "1", "1", "64"
  end)
  teardown(function()
    pg:close()
    H.sh("rm -rf " .. H.sh_quote(meta) .. " " .. H.sh_quote(scripts))
  end)

  for _, case in ipairs({
    { mode = "loop", limit = "the script ran past its time limit of 1 s of CPU time (DP_SCRIPT_TIMEOUT)" },
    { mode = "swallow", limit = "the script ran past its time limit of 1 s of CPU time (DP_SCRIPT_TIMEOUT)" },
    { mode = "gsub", limit = "the script went over its memory limit of 64 MiB (DP_SCRIPT_MEMORY)" },
  }) do
    it("extract in mode " .. case.mode .. " fails its entity with the limit named; the next run works", function()
      entities(case.mode)
      local t0 = os.time()
      local rc, _, err = H.engine(env, "run", "lp")
      assert.equal(1, rc, err)
      assert.is_true(os.time() - t0 < 30, "the run took " .. (os.time() - t0) .. " s")
      local raw = entity_run("raw")
      assert.equal("failed", raw.status)
      assert.equal(scripts .. '/connectors/looper.lua: extract (system "lp", entity "items"): stopped: ' .. case.limit,
        raw.error)
      assert.matches(case.limit, err, 1, true)
      -- nothing half written: no raw file, no bronze or silver step
      local _, files = H.sh("find " .. H.sh_quote(env.DP_DATA_DIR .. "/raw") .. " -name '*.jsonl' 2>/dev/null | wc -l")
      local before = tonumber(files)
      assert.equal("skipped", entity_run("silver").status)

      entities("ok")
      rc, _, err = H.engine(env, "run", "lp")
      assert.equal(0, rc, err)
      assert.equal("succeeded", entity_run("silver").status)
      local rows = assert(pg:query("SELECT id::text, mode FROM silver.lp__items WHERE _dp_is_current"))
      assert.same({ { id = "1", mode = "ok" } }, rows)
      _, files = H.sh("find " .. H.sh_quote(env.DP_DATA_DIR .. "/raw") .. " -name '*.jsonl' | wc -l")
      assert.equal(before + 1, tonumber(files))
    end)
  end

  it("a disabled system's looping connector hangs neither runs nor metadata validate", function()
    entities("ok")
    local t0 = os.time()
    local rc, _, err = H.engine(env, "run", "lp")
    assert.equal(0, rc, err)
    rc, _, err = H.engine(env, "metadata", "validate")
    assert.equal(2, rc)
    assert.matches('systems.json[1].type: connector "sleeper" is broken: ' .. scripts
      .. "/connectors/sleeper.lua: loading the script: stopped: the script ran past its time limit of 1 s of CPU time"
      .. " (DP_SCRIPT_LOAD_TIMEOUT)", err, 1, true)
    assert.is_true(os.time() - t0 < 30)
  end)

  it("a gold model that loops fails with the limit named, keeps no half table, and the next run works", function()
    entities("ok")
    assert.equal(0, (H.engine(env, "run", "lp")))
    H.sh("mkdir -p " .. H.sh_quote(scripts .. "/gold"))
    H.write_file(meta .. "/gold.json", cjson.encode({
      { name = "lp_rows", script = "lp_rows.lua", depends_on = { "lp.items" }, primary_key = { "id" },
        columns = { { name = "id", type = "bigint" }, { name = "mode", type = "text" } } },
    }))
    local function script(loop)
      H.write_file(scripts .. "/gold/lp_rows.lua", [[
return {
  rows = function(ctx)
    for r in ctx:query("SELECT id, mode FROM " .. ctx:ref("lp.items")) do
      ctx:emit({ id = tonumber(r.id), mode = r.mode })
    end
    ]] .. (loop and "while true do end" or "") .. [[

  end,
}
]])
    end
    script(true)
    local t0 = os.time()
    local rc, _, err = H.engine(env, "gold", "run", "lp_rows")
    assert.equal(1, rc)
    assert.is_true(os.time() - t0 < 30)
    assert.matches("gold model lp_rows: " .. scripts .. "/gold/lp_rows.lua: rows(ctx): stopped: the script ran past its "
      .. "time limit of 1 s of CPU time (DP_SCRIPT_TIMEOUT)", err, 1, true)
    assert.same({}, assert(pg:query("SELECT 1 FROM pg_tables WHERE schemaname = 'gold' AND tablename = 'lp_rows'")))

    script(false)
    rc, _, err = H.engine(env, "gold", "run", "lp_rows")
    assert.equal(0, rc, err)
    assert.same({ { id = "1", mode = "ok" } }, assert(pg:query("SELECT id::text, mode FROM gold.lp_rows")))
    H.sh("rm -f " .. H.sh_quote(meta .. "/gold.json"))
  end)

  it("a bad limit value is a configuration error naming the variable", function()
    entities("ok")
    local e2 = {}
    for k, v in pairs(env) do e2[k] = v end
    e2.DP_SCRIPT_TIMEOUT = "forever"
    local rc, _, err = H.engine(e2, "run", "lp")
    assert.are_not.equal(0, rc)
    assert.matches('DP_SCRIPT_TIMEOUT: "forever" is not a positive number', err, 1, true)
  end)
end)
