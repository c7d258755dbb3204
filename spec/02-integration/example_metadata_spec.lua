-- The example metadata in metadata/ validates, covers what the models offer (every column
-- type, composite keys, nested paths, full and delta loads, scd1 and scd2), and every enabled
-- file-based system runs end to end on its sample exports (metadata/demo/<system>/export-N/).
-- The API examples in metadata/examples/ ship disabled and validate too.
local H = require "helpers"
local metadata = require "dp.metadata"

local META = H.root .. "/metadata"
local EXAMPLES = H.root .. "/metadata/examples"

-- The sub-folders of dir, sorted.
local function subdirs(dir)
  local rc, out = H.sh("cd " .. H.sh_quote(dir) .. " 2>/dev/null && for d in */; do echo \"${d%/}\"; done | sort")
  local names = {}
  if rc == 0 then
    for n in out:gmatch("[^\n]+") do if n ~= "*" then names[#names + 1] = n end end
  end
  return names
end

-- The folders export-1, export-2, ... of a system's sample data, in order.
local function exports(system)
  local names = subdirs(META .. "/demo/" .. system)
  local out = {}
  for _, n in ipairs(names) do
    local i = tonumber(n:match("^export%-(%d+)$"))
    if i then out[i] = META .. "/demo/" .. system .. "/" .. n end
  end
  return out
end

describe("example metadata", function()
  local meta

  setup(function()
    local errs
    meta, errs = metadata.load_dir(META, { scripts_dir = H.root })
    assert(meta, errs and table.concat(errs, "\n"))
  end)

  it("has at least three systems and about eight entities", function()
    assert.is_true(#meta.systems >= 3)
    assert.is_true(#meta.entities >= 7)
    for _, e in ipairs(meta.entities) do assert.is_string(e.description, e.name .. " has no description") end
  end)

  it("covers every column type, composite keys, nested paths, full and delta loads, scd1 and scd2", function()
    local seen = {}
    local function see(k) seen[k] = true end
    for _, e in ipairs(meta.entities) do
      see("load " .. e.load_type)
      if #e.primary_key > 1 then see("composite key") end
      if e.load_type == "full" then see("delete " .. e.delete_detection) end
      for _, c in ipairs(e.columns) do
        see("type " .. c.type)
        see("history " .. c.history)
        if c.path:find(".", 1, true) then see("nested path") end
      end
    end
    local missing = {}
    for _, t in ipairs(require("dp.models").COLUMN_TYPES) do
      if not seen["type " .. t] then missing[#missing + 1] = "type " .. t end
    end
    for _, k in ipairs({ "load full", "load delta", "composite key", "nested path", "history scd1", "history scd2",
      "delete close", "delete tombstone", "delete ignore" }) do
      if not seen[k] then missing[#missing + 1] = k end
    end
    assert.are.same({}, missing)
  end)

  it("has sample exports for every enabled system", function()
    for _, s in ipairs(meta.systems) do
      if s.enabled then
        assert.are.equal("file", s.type, s.name .. ": an enabled example system must run without the internet")
        assert.is_true(#exports(s.name) >= 2, s.name .. " needs metadata/demo/" .. s.name .. "/export-1 and export-2")
      end
    end
  end)
end)

describe("enabled example systems run end to end on their sample exports", function()
  local env, pg

  setup(function()
    env = H.fresh_env("examples")
    pg = H.pg(env)
  end)
  teardown(function() if pg then pg:close() end end)

  local function silver_counts(run_id)
    local rows = assert(pg:query([[SELECT entity, status, records_in, records_inserted, records_updated, records_deleted,
      records_unchanged, records_rejected FROM audit.entity_layer_run WHERE run_id = $1 AND layer = 'silver'
      ORDER BY entity]], run_id))
    local out = {}
    for _, r in ipairs(rows) do
      out[r.entity] = { r.status, tonumber(r.records_in), tonumber(r.records_inserted), tonumber(r.records_updated),
        tonumber(r.records_deleted), tonumber(r.records_unchanged), tonumber(r.records_rejected) }
    end
    return out
  end

  local function run(system, export_dir)
    H.fill_inbox(env, "inbox/" .. system, export_dir)
    local rc, out, err = H.engine(env, "run", system)
    assert.are.equal(0, rc, (out or "") .. (err or ""))
    local r = assert(pg:query("SELECT run_id, status FROM audit.system_run WHERE system = $1 ORDER BY started_at DESC LIMIT 1", system))[1]
    assert.are.equal("succeeded", r.status)
    return silver_counts(r.run_id)
  end

  -- { status, in, inserted, updated, deleted, unchanged, rejected } per entity and export
  local EXPECTED = {
    fitness = {
      { activities = { "succeeded", 3, 3, 0, 0, 0, 0 }, body_measurements = { "succeeded", 4, 4, 0, 0, 0, 0 },
        sleep = { "succeeded", 4, 4, 0, 0, 0, 0 } },
      -- 2 new workouts; measurements: one corrected (scd2), one source renamed (scd1), one new,
      -- one deleted (tombstone); sleep: one score recomputed (scd1), three new, the three nights
      -- no longer in the export kept (delete detection ignore). Silver reads only what bronze
      -- changed, deletions included: unchanged keys are not read again.
      { activities = { "succeeded", 2, 2, 0, 0, 0, 0 }, body_measurements = { "succeeded", 4, 1, 2, 1, 0, 0 },
        sleep = { "succeeded", 7, 3, 1, 0, 0, 0 } },
    },
    listening = {
      { playlists = { "succeeded", 3, 3, 0, 0, 0, 0 }, streams = { "succeeded", 6, 6, 0, 0, 0, 0 } },
      -- playlists: one renamed (scd1), one with a track more (scd2), one new, one removed (closed)
      { playlists = { "succeeded", 4, 1, 2, 1, 0, 0 }, streams = { "succeeded", 4, 4, 0, 0, 0, 0 } },
    },
  }

  it("fitness: workouts (delta), sleep (full, no delete detection), measurements (composite key, tombstones)", function()
    local ex = exports("fitness")
    assert.are.same(EXPECTED.fitness[1], run("fitness", ex[1]))
    assert.are.same(EXPECTED.fitness[2], run("fitness", ex[2]))
    local a = assert(pg:query([[SELECT activity_id::text AS id, activity_uuid::text AS u, distance_km::text AS km,
      avg_heart_rate AS hr, indoor::text AS indoor, laps->0->>'km' AS lap1 FROM silver.fitness__activities
      WHERE _dp_is_current ORDER BY activity_id LIMIT 1]]))[1]
    assert.are.same({ id = "8102345501", u = "5b1f0e2a-9c4d-4e8b-a3f1-2d7c6e9b8a01", km = "5.012", hr = "148",
      indoor = "false", lap1 = "1" }, a)
    assert.are.equal("5", assert(pg:query("SELECT count(*) AS n FROM silver.fitness__activities WHERE _dp_is_current"))[1].n)
    assert.are.equal("7", assert(pg:query("SELECT count(*) AS n FROM silver.fitness__sleep WHERE _dp_is_current"))[1].n)
    local m = assert(pg:query([[SELECT measured_on::text AS d, metric, value::text AS v, _dp_is_deleted::text AS del
      FROM silver.fitness__body_measurements WHERE _dp_is_current ORDER BY measured_on, metric]]))
    assert.are.same({
      { d = "2026-09-20", metric = "body_fat", v = "18.40", del = "true" },
      { d = "2026-09-20", metric = "weight", v = "80.90", del = "false" },
      { d = "2026-09-27", metric = "blood_pressure_systolic", v = "124.00", del = "false" },
      { d = "2026-09-27", metric = "weight", v = "80.20", del = "false" },
      { d = "2026-10-04", metric = "weight", v = "79.80", del = "false" },
    }, m)
  end)

  it("listening: plays (delta, composite key) and playlists (full, scd1 renames, scd2 track lists)", function()
    local ex = exports("listening")
    assert.are.same(EXPECTED.listening[1], run("listening", ex[1]))
    assert.are.same(EXPECTED.listening[2], run("listening", ex[2]))
    assert.are.equal("10", assert(pg:query("SELECT count(*) AS n FROM silver.listening__streams"))[1].n)
    local p = assert(pg:query([[SELECT name, jsonb_array_length(tracks) AS n, _dp_is_current::text AS cur
      FROM silver.listening__playlists ORDER BY name, _dp_id]]))
    assert.are.same({
      { name = "Focus", n = "0", cur = "true" },
      { name = "Old favourites", n = "2", cur = "false" },
      { name = "Running", n = "2", cur = "false" },
      { name = "Running", n = "3", cur = "true" },
      { name = "Slow Sunday morning", n = "1", cur = "true" },
    }, p)
  end)
end)

describe("API examples (metadata/examples/)", function()
  -- Validated with the real rest connector (connectors/rest.lua).
  local function scripts_dir() return H.root end

  it("validate, ship disabled, and keep secrets as references", function()
    local dirs = subdirs(EXAMPLES)
    assert.is_true(#dirs > 0, "no example under metadata/examples")
    for _, d in ipairs(dirs) do
      local m, errs = metadata.load_dir(EXAMPLES .. "/" .. d, { scripts_dir = scripts_dir() })
      assert.is_nil(errs, errs and (d .. ":\n" .. table.concat(errs, "\n")))
      for _, s in ipairs(m.systems) do
        assert.is_false(s.enabled, s.name .. " needs the internet or a token: ship it with enabled false")
      end
      assert.is_nil(m.texts["systems.json"]:find('"token"%s*:%s*"'), "a token value in " .. d .. "/systems.json")
    end
  end)
end)
