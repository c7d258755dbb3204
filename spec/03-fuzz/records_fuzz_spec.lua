-- The source-record fuzz harness (docs/testing.md, "Fuzzing source records"): hostile JSON Lines
-- and CSV exports (spec/03-fuzz/records.lua makes them) go through the engine, and an oracle
-- checks that every line ended loaded exactly, rejected with a reason, or in a clear failure of
-- the run that names the file and the line, and that the audit counts add up.
--
--   spec/run.sh spec/03-fuzz                              the fixed seeds (part of the suite)
--   DP_FUZZ_SEED=1000 DP_FUZZ_ITER=200 spec/run.sh spec/03-fuzz   seeds 1000..1199, by hand
local H = require "helpers"
local F = require "03-fuzz.records"

local META = H.root .. "/spec/fixtures/pipelines/hostile"
local FIRST = tonumber(os.getenv("DP_FUZZ_SEED") or "") or 1
local ITER = tonumber(os.getenv("DP_FUZZ_ITER") or "") or 8

describe("source-record fuzzing (seeds " .. FIRST .. ".." .. (FIRST + ITER - 1) .. ")", function()
  local env, pg

  setup(function()
    env = H.fresh_env("fuzz", { metadata = META })
    pg = H.pg(env)
  end)
  teardown(function() if pg then pg:close() end end)

  local inbox
  local function put(name, bytes)
    inbox = env.DP_DATA_DIR .. "/inbox/hz"
    H.sh("mkdir -p " .. H.sh_quote(inbox) .. " && rm -f " .. H.sh_quote(inbox) .. "/*")
    H.write_export(inbox .. "/" .. name, bytes)
  end

  local function last_run()
    return assert(pg:query("SELECT run_id::text AS run_id, status FROM audit.system_run ORDER BY started_at DESC LIMIT 1"))[1]
  end

  local function layer(run_id, entity, name)
    local r = assert(pg:query([[SELECT status, records_in, records_inserted, records_updated, records_unchanged,
      records_rejected, details::text AS details, error FROM audit.entity_layer_run
      WHERE run_id = $1 AND entity = $2 AND layer = $3]], run_id, entity, name))[1]
    if not r then return nil end
    for _, k in ipairs({ "records_in", "records_inserted", "records_updated", "records_unchanged", "records_rejected" }) do
      r[k] = tonumber(r[k])
    end
    r.details = r.details and H.cjson.decode(r.details) or {}
    return r
  end

  -- what went wrong, with what to replay it
  local function where(seed, rec, what)
    return ("seed %d (DP_FUZZ_SEED=%d DP_FUZZ_ITER=1), record %s: %s\n  line: %s"):format(seed, seed,
      rec and rec.id or "?", what, rec and rec.line:sub(1, 300):gsub("%z", "\\0") or "")
  end

  -- The oracle for a run that must succeed: recs[k] is the k-th record (raw line k).
  local function check_loaded(seed, entity, recs, cols)
    local run = last_run()
    assert.are.equal("succeeded", run.status, where(seed, nil, "the run did not succeed"))
    local raw, bronze, silver = layer(run.run_id, entity, "raw"), layer(run.run_id, entity, "bronze"),
      layer(run.run_id, entity, "silver")
    -- the count invariant: nothing lost between the layers
    assert.are.equal(#recs, raw.records_in, where(seed, nil, "raw records_in is not the number of records"))
    assert.are.equal(#recs, raw.details.records, where(seed, nil, "raw details.records"))
    assert.are.equal(raw.records_in, bronze.records_in, where(seed, nil, "bronze read another number of records than raw wrote"))
    assert.are.equal(bronze.records_in, bronze.records_inserted + bronze.records_updated + bronze.records_unchanged
      + bronze.records_rejected + (bronze.details.duplicates or 0), where(seed, nil, "bronze's counts do not add up"))
    assert.are.equal("succeeded", silver.status, where(seed, nil, "silver: " .. tostring(silver.error)))
    -- each rejected line once, with a reason
    local rejected = {}
    for _, r in ipairs(assert(pg:query("SELECT raw_line, reason FROM silver.hz__" .. entity
        .. "__rejected WHERE _dp_run_id = $1", run.run_id))) do
      local k = tonumber(r.raw_line)
      assert.is_nil(rejected[k], where(seed, recs[k], "rejected twice"))
      assert.is_truthy(r.reason and r.reason ~= "", where(seed, recs[k], "rejected without a reason"))
      rejected[k] = r.reason
    end
    local nrej = 0
    for _ in pairs(rejected) do nrej = nrej + 1 end
    assert.are.equal(nrej, silver.records_rejected, where(seed, nil, "silver records_rejected"))
    -- the current rows of this seed's ids
    local rows = {}
    local sel = { "id" }
    for _, c in ipairs(cols) do sel[#sel + 1] = c[1] .. "::text AS " .. c[1] end
    for _, r in ipairs(assert(pg:query("SELECT " .. table.concat(sel, ", ") .. " FROM silver.hz__" .. entity
        .. " WHERE _dp_is_current AND NOT _dp_is_deleted AND id LIKE $1", "s" .. seed .. "\\_%"))) do
      rows[r.id] = r
    end
    for k, rec in ipairs(recs) do
      if rec.expect == "reject" then
        assert.is_truthy(rejected[k], where(seed, rec, "must be rejected, was not"))
        assert.is_nil(rows[rec.id], where(seed, rec, "must be rejected, was loaded"))
      else
        local row = rows[rec.id]
        assert.is_nil(rejected[k], where(seed, rec, "must load, was rejected: " .. tostring(rejected[k])))
        assert.is_truthy(row, where(seed, rec, "must load, is not in silver"))
        for _, c in ipairs(cols) do
          local name, want = c[1], rec.values[c[1]]
          local got = row[name]
          if want.ok == "NULL" then
            assert.is_nil(got, where(seed, rec, name .. " must be NULL"))
          elseif c[2] == "double" then
            assert.are.equal(want.num, tonumber(got), where(seed, rec, name .. " as a double"))
          elseif c[2] == "json" then
            local eq = assert(pg:query("SELECT (j = $1::jsonb)::text AS eq FROM silver.hz__" .. entity
              .. " WHERE id = $2 AND _dp_is_current", rec.j, rec.id))[1].eq
            assert.are.equal("true", eq, where(seed, rec, "j is not the source's JSON value: " .. tostring(got)))
          elseif type(want.ok) == "string" then
            assert.are.equal(want.ok, got, where(seed, rec, name .. " is not the source's value"))
          end
        end
      end
    end
  end

  local function check_failed(seed, entity, file, line, rc, out)
    assert.are.equal(1, rc, where(seed, nil, "a line that is not JSON must fail the run: " .. out))
    assert.matches(file:gsub("%p", "%%%0") .. ":" .. line .. ":", out, 1, false)
    local run = last_run()
    local raw = layer(run.run_id, entity, "raw")
    assert.are.equal("failed", raw.status, where(seed, nil, "raw must fail"))
    local bronze = layer(run.run_id, entity, "bronze")
    assert.is_true(bronze == nil or bronze.status == "skipped", where(seed, nil, "bronze must not run after a failed raw layer"))
    local exists = assert(pg:query("SELECT to_regclass($1) IS NOT NULL AS e", "silver.hz__" .. entity))[1].e
    local n = (exists == "t" or exists == true or exists == "true") and assert(pg:query("SELECT count(*) AS n FROM silver.hz__"
      .. entity .. " WHERE _dp_run_id = $1", run.run_id))[1].n or "0"
    assert.are.equal("0", n, where(seed, nil, "a failed raw layer must write nothing to silver"))
  end

  for seed = FIRST, FIRST + ITER - 1 do
    it("JSON Lines, seed " .. seed .. ": loaded exactly, rejected with a reason, or a clear failure", function()
      local r = F.rng(seed)
      local recs, lines = {}, {}
      local broken_k, broken_at
      local nrec = r.int(15, 45)
      if r.chance(0.25) then broken_k = r.int(2, nrec) end
      for k = 1, nrec do
        if r.chance(0.05) then lines[#lines + 1] = r.pick({ "", "   ", "\t" }) end
        if k == broken_k then
          lines[#lines + 1] = F.broken_line(r)
          broken_at = #lines
        else
          local rec = F.jsonl_record(r, ("s%d_%d"):format(seed, k))
          recs[#recs + 1] = rec
          lines[#lines + 1] = rec.line
        end
      end
      local file = ("recs-%d.jsonl"):format(seed)
      put(file, (r.chance(0.2) and "\239\187\191" or "") .. table.concat(lines, "\n") .. (r.chance(0.8) and "\n" or ""))
      local rc, out, err = H.engine(env, "run", "hz", "--entity", "recs")
      if broken_at then
        check_failed(seed, "recs", file, broken_at, rc, out .. err)
      else
        assert.are.equal(0, rc, where(seed, nil, "exit code: " .. out .. err))
        assert.is_nil((out .. err):find("SQLSTATE", 1, true), "another program's internals in a message")
        assert.is_nil((out .. err):find("%.go:%d"), "another program's internals in a message")
        check_loaded(seed, "recs", recs, F.JSONL_COLUMNS)
      end
    end)

    it("CSV, seed " .. seed .. ": loaded exactly, rejected with a reason, or a clear failure", function()
      local r = F.rng(seed * 7919 + 1)
      local recs, rows = {}, { "id,i,b,d,n,txt" }
      local nl = r.chance(0.3) and "\r\n" or "\n"
      local broken
      for k = 1, r.int(10, 30) do
        local rec = F.csv_record(r, ("s%d_%d"):format(seed, k))
        recs[#recs + 1] = rec
        rows[#rows + 1] = rec.line
      end
      if r.chance(0.25) then
        broken = r.pick({ "x,1,2,3,4,\255", "too,few", '"s_unterminated,1,2,3,4,5' })
        if broken:sub(1, 1) == '"' then rows[#rows + 1] = broken else table.insert(rows, r.int(2, #rows), broken) end
      end
      local text = table.concat(rows, nl) .. nl
      if broken and broken:sub(1, 1) == '"' then text = text:sub(1, -(#nl + 1)) end
      local file = ("rows-%d.csv"):format(seed)
      put(file, (r.chance(0.2) and "\239\187\191" or "") .. text)
      local rc, out, err = H.engine(env, "run", "hz", "--entity", "rows")
      if broken then
        -- the physical line where the broken row starts
        local before = text:sub(1, (text:find(broken, 1, true) or 1) - 1)
        local _, line = before:gsub("\n", "")
        check_failed(seed, "rows", file, line + 1, rc, out .. err)
      else
        assert.are.equal(0, rc, where(seed, nil, "exit code: " .. out .. err))
        check_loaded(seed, "rows", recs, F.CSV_COLUMNS)
      end
    end)
  end
end)
