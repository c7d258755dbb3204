-- Silver rules beyond the demo: tombstones, a deleted key returning, rejected rows,
-- on_type_error = fail, delta loads with a committed cursor, exact big integers.
local H = require "helpers"

local META = H.root .. "/spec/fixtures/pipelines/shop"

local function put(env, name, lines)
  H.write_export(env.DP_DATA_DIR .. "/inbox/shop/" .. name, table.concat(lines, "\n") .. "\n")
end

local function clear(env)
  H.sh("rm -f " .. H.sh_quote(env.DP_DATA_DIR .. "/inbox/shop") .. "/*")
end

local function last_run(pg)
  return assert(pg:query("SELECT run_id, run_ts, status FROM audit.system_run ORDER BY started_at DESC LIMIT 1"))[1]
end

local function layer_counts(pg, run_id, entity, layer)
  local r = assert(pg:query([[SELECT status, records_in, records_inserted, records_updated, records_deleted,
    records_unchanged, records_rejected, error FROM audit.entity_layer_run
    WHERE run_id = $1 AND entity = $2 AND layer = $3]], run_id, entity, layer))[1]
  return { r.status, tonumber(r.records_in), tonumber(r.records_inserted), tonumber(r.records_updated),
    tonumber(r.records_deleted), tonumber(r.records_unchanged), tonumber(r.records_rejected) }, r.error
end

local O1 = '{"order_id": 1, "total": "10.00", "status": "paid", "note": "a", "placed_at": "2026-01-01T10:00:00+01:00", "big": 9007199254740993, "tags": ["x", {"y": 1}]}'
local O2 = '{"order_id": 2, "total": 20, "status": "paid", "note": "b", "placed_at": "2026-01-02T10:00:00Z", "big": "9223372036854775807", "tags": null}'
local O3 = '{"order_id": 3, "total": 30.5, "status": "open", "note": "c", "placed_at": "2026-01-03", "big": -1, "tags": {}}'

describe("silver rules", function()
  local env, pg

  setup(function()
    env = H.fresh_env("silver_rules", { metadata = META })
    pg = H.pg(env)
  end)
  teardown(function() if pg then pg:close() end end)

  local function run(...)
    local rc, out, err = H.engine(env, "run", "shop", ...)
    return rc, out, err
  end

  it("keeps 64-bit integers exact and casts each type", function()
    put(env, "orders-1.jsonl", { O1, O2, O3 })
    local rc, _, err = run("--entity", "orders")
    assert.are.equal(0, rc, err)
    local rows = assert(pg:query("SELECT order_id, total::text, big::text, placed_at::text, tags::text FROM silver.shop__orders ORDER BY order_id"))
    assert.are.same({
      { order_id = "1", total = "10.00", big = "9007199254740993", placed_at = "2026-01-01 09:00:00+00", tags = '["x", {"y": 1}]' },
      { order_id = "2", total = "20.00", big = "9223372036854775807", placed_at = "2026-01-02 10:00:00+00" },
      { order_id = "3", total = "30.50", big = "-1", placed_at = "2026-01-03 00:00:00+00", tags = "{}" },
    }, rows)
  end)

  it("writes a tombstone version for a key missing from a full load", function()
    clear(env)
    put(env, "orders-1.jsonl", { O1, O2 })
    local rc, _, err = run("--entity", "orders")
    assert.are.equal(0, rc, err)
    local r = last_run(pg)
    -- silver reads what bronze changed: the one deletion
    assert.are.same({ "succeeded", 1, 0, 0, 1, 0, 0 }, (layer_counts(pg, r.run_id, "orders", "silver")))
    local v = assert(pg:query("SELECT _dp_is_current::text AS cur, _dp_is_deleted::text AS del, _dp_valid_to::text AS vt, _dp_valid_from::text AS vf, status FROM silver.shop__orders WHERE order_id = 3 ORDER BY _dp_id"))
    assert.are.equal(2, #v)
    assert.are.same({ "false", "false", r.run_ts }, { v[1].cur, v[1].del, v[1].vt })
    assert.are.same({ "true", "true", r.run_ts, "open" }, { v[2].cur, v[2].del, v[2].vf, v[2].status })
    -- the tombstoned key is not in the _current view
    assert.are.same({ { order_id = "1" }, { order_id = "2" } },
      assert(pg:query("SELECT order_id FROM silver.shop__orders_current ORDER BY order_id")))
    -- a rerun of the same state does not add another tombstone
    rc = run("--entity", "orders")
    assert.are.equal(0, rc)
    assert.are.equal("2", assert(pg:query("SELECT count(*) AS n FROM silver.shop__orders WHERE order_id = 3"))[1].n)
  end)

  it("gives a deleted key that returns a new current version", function()
    clear(env)
    put(env, "orders-1.jsonl", { O1, O2, O3 })
    local rc = run("--entity", "orders")
    assert.are.equal(0, rc)
    local r = last_run(pg)
    assert.are.same({ "succeeded", 1, 1, 0, 0, 0, 0 }, (layer_counts(pg, r.run_id, "orders", "silver")))
    local v = assert(pg:query("SELECT _dp_is_current::text AS cur, _dp_is_deleted::text AS del FROM silver.shop__orders WHERE order_id = 3 ORDER BY _dp_id"))
    assert.are.same({ { cur = "false", del = "false" }, { cur = "false", del = "true" }, { cur = "true", del = "false" } }, v)
  end)

  it("rejects a row that cannot be cast, keeps its key alive, and loads the rest", function()
    clear(env)
    local bad2 = O2:gsub('"total": 20', '"total": "twenty"')
    local changed1 = O1:gsub('"note": "a"', '"note": "a2"')
    put(env, "orders-1.jsonl", { changed1, bad2, O3 })
    local rc, _, err = run("--entity", "orders")
    assert.are.equal(0, rc, err)
    local r = last_run(pg)
    -- 1 updated (scd1 note), 1 rejected; key 3 unchanged in bronze, so not read; key 2 is not
    -- taken for deleted
    assert.are.same({ "succeeded", 2, 0, 1, 0, 0, 1 }, (layer_counts(pg, r.run_id, "orders", "silver")))
    local rej = assert(pg:query("SELECT column_name, value, reason, raw_file, raw_line::int AS line, record->>'order_id' AS id FROM silver.shop__orders__rejected WHERE _dp_run_id = $1", r.run_id))
    assert.are.equal(1, #rej)
    assert.are.equal("total", rej[1].column_name)
    assert.are.equal('"twenty"', rej[1].value)
    assert.are.equal('column total: "twenty" is not a decimal number', rej[1].reason)
    assert.matches("^raw/shop/orders/.+%.jsonl$", rej[1].raw_file)
    assert.are.equal("2", rej[1].line)
    assert.are.equal("2", rej[1].id)
    local cur = assert(pg:query("SELECT order_id, note FROM silver.shop__orders WHERE _dp_is_current AND NOT _dp_is_deleted ORDER BY order_id"))
    assert.are.same({ { order_id = "1", note = "a2" }, { order_id = "2", note = "b" }, { order_id = "3", note = "c" } }, cur)
    -- scd1: the note is overwritten on every version of key 1
    assert.are.equal("0", assert(pg:query("SELECT count(*) AS n FROM silver.shop__orders WHERE order_id = 1 AND note <> 'a2'"))[1].n)
  end)

  it("applies in silver what bronze changed in an earlier run whose silver step never ran", function()
    clear(env)
    local changed3 = O3:gsub('"status": "open"', '"status": "shipped"')
    put(env, "orders-1.jsonl", { (O1:gsub('"note": "a"', '"note": "a2"')), O2, changed3 })
    -- bronze takes the change, silver does not run (as if the engine died before it)
    local rc, _, err = run("--entity", "orders", "--layer", "raw", "--layer", "bronze")
    assert.are.equal(0, rc, err)
    assert.are.equal("open", assert(pg:query("SELECT status FROM silver.shop__orders WHERE order_id = 3 AND _dp_is_current"))[1].status)
    -- the next run finds nothing new in bronze, yet silver catches up
    rc, _, err = run("--entity", "orders")
    assert.are.equal(0, rc, err)
    local r = last_run(pg)
    assert.are.same({ "succeeded", 3, 0, 0, 0, 3, 0 }, (layer_counts(pg, r.run_id, "orders", "bronze")))
    -- silver reads the two keys bronze rewrote since silver's last commit: order 3 (status) and
    -- order 2 (its rejected record was replaced by a valid one equal to the current version)
    assert.are.same({ "succeeded", 2, 0, 1, 0, 1, 0 }, (layer_counts(pg, r.run_id, "orders", "silver")))
    assert.are.equal("shipped", assert(pg:query("SELECT status FROM silver.shop__orders WHERE order_id = 3 AND _dp_is_current"))[1].status)
  end)

  it("fails the entity with on_type_error = fail, naming column, value and raw line, writing nothing", function()
    put(env, "strict-1.jsonl", { '{"id": 1, "n": 1}', '{"id": 2, "n": "two"}' })
    local rc, _, err = run("--entity", "strict")
    assert.are.equal(1, rc)
    local r = last_run(pg)
    assert.are.equal("failed", r.status)
    local counts, msg = layer_counts(pg, r.run_id, "strict", "silver")
    assert.are.equal("failed", counts[1])
    assert.matches('column n: "two" is not an integer %(value "two"; raw file raw/shop/strict/.+%.jsonl line 2%)', msg)
    assert.matches('column n: "two" is not an integer', err)
    -- the failed merge rolled back whole: not even the table it created is there
    assert.is_nil(assert(pg:query("SELECT to_regclass('silver.shop__strict')::text AS t"))[1].t)
  end)

  it("loads delta files after the committed cursor only, without delete detection", function()
    put(env, "events-001.jsonl", { '{"event_id": 1, "kind": "a"}', '{"event_id": 2, "kind": "b"}' })
    local rc, _, err = run("--entity", "events")
    assert.are.equal(0, rc, err)
    assert.are.equal("events-001.jsonl", assert(pg:query("SELECT cursor FROM dp.entity_cursor WHERE system = 'shop' AND entity = 'events'"))[1].cursor)

    put(env, "events-002.jsonl", { '{"event_id": 3, "kind": "c"}', '{"event_id": 2, "kind": "b2"}' })
    rc, _, err = run("--entity", "events")
    assert.are.equal(0, rc, err)
    local r = last_run(pg)
    assert.are.same({ "succeeded", 2, 2, 0, 0, 0, 0 }, (layer_counts(pg, r.run_id, "events", "raw")))
    assert.are.same({ "succeeded", 2, 1, 1, 0, 0, 0 }, (layer_counts(pg, r.run_id, "events", "silver")))
    assert.are.equal("events-002.jsonl", assert(pg:query("SELECT cursor FROM dp.entity_cursor WHERE entity = 'events'"))[1].cursor)
    local cur = assert(pg:query("SELECT event_id, kind FROM silver.shop__events WHERE _dp_is_current ORDER BY event_id"))
    assert.are.same({ { event_id = "1", kind = "a" }, { event_id = "2", kind = "b2" }, { event_id = "3", kind = "c" } }, cur)

    -- nothing new: nothing extracted, cursor unchanged
    rc = run("--entity", "events")
    assert.are.equal(0, rc)
    r = last_run(pg)
    assert.are.same({ "succeeded", 0, 0, 0, 0, 0, 0 }, (layer_counts(pg, r.run_id, "events", "raw")))

    -- --full-refresh reads from the start again: 4 records, 3 keys. Event 2 comes twice ("b"
    -- then "b2"): the last one wins, and that is what bronze holds already, so nothing is
    -- written and silver has nothing to read
    rc = run("--entity", "events", "--full-refresh")
    assert.are.equal(0, rc)
    r = last_run(pg)
    assert.are.same({ "succeeded", 4, 4, 0, 0, 0, 0 }, (layer_counts(pg, r.run_id, "events", "raw")))
    assert.are.same({ "succeeded", 4, 0, 0, 0, 3, 0 }, (layer_counts(pg, r.run_id, "events", "bronze")))
    assert.are.equal("1", assert(pg:query([[SELECT details->>'duplicates' AS d FROM audit.entity_layer_run
      WHERE run_id = $1 AND entity = 'events' AND layer = 'bronze']], r.run_id))[1].d)
    assert.are.same({ "succeeded", 0, 0, 0, 0, 0, 0 }, (layer_counts(pg, r.run_id, "events", "silver")))
    local cur2 = assert(pg:query("SELECT event_id, kind FROM silver.shop__events WHERE _dp_is_current ORDER BY event_id"))
    assert.are.same({ { event_id = "1", kind = "a" }, { event_id = "2", kind = "b2" }, { event_id = "3", kind = "c" } }, cur2)
  end)

  it("delta with a delete marker and an event-time valid_from column", function()
    put(env, "ledger-001.jsonl", {
      '{"entry_id": 1, "amount": "10.00", "op": "I", "at": "2026-01-01T10:00:00Z"}',
      '{"entry_id": 2, "amount": "20.00", "op": "I", "at": "2026-01-02T10:00:00Z"}' })
    local rc, _, err = run("--entity", "ledger")
    assert.are.equal(0, rc, err)
    put(env, "ledger-002.jsonl", {
      '{"entry_id": 1, "amount": "11.00", "op": "U", "at": "2026-01-05T10:00:00+01:00"}',
      '{"entry_id": 2, "amount": "20.00", "op": "D", "at": "2026-01-06T10:00:00Z"}' })
    rc, _, err = run("--entity", "ledger")
    assert.are.equal(0, rc, err)
    local r = last_run(pg)
    assert.are.same({ "succeeded", 2, 0, 1, 1, 0, 0 }, (layer_counts(pg, r.run_id, "ledger", "silver")))
    local rows = assert(pg:query([[SELECT entry_id, amount::text, _dp_valid_from::text AS vf, _dp_valid_to::text AS vt,
      _dp_is_current::text AS cur FROM silver.shop__ledger ORDER BY entry_id, _dp_valid_from]]))
    assert.are.same({
      { entry_id = "1", amount = "10.00", vf = "2026-01-01 10:00:00+00", vt = "2026-01-05 09:00:00+00", cur = "false" },
      { entry_id = "1", amount = "11.00", vf = "2026-01-05 09:00:00+00", cur = "true" },
      -- the marker closes the version at the run's time
      { entry_id = "2", amount = "20.00", vf = "2026-01-02 10:00:00+00", vt = r.run_ts, cur = "false" },
    }, rows)
    assert.are.same({ { entry_id = "1" } }, assert(pg:query("SELECT entry_id FROM silver.shop__ledger_current")))
  end)

  it("resolves a key repeated in one run by valid_from, then by the last line", function()
    put(env, "ledger-003.jsonl", {
      -- entry 3: the update carries the later event time, though the file has it first
      '{"entry_id": 3, "amount": "31.00", "op": "U", "at": "2026-02-02T10:00:00Z"}',
      '{"entry_id": 3, "amount": "30.00", "op": "I", "at": "2026-02-01T10:00:00Z"}',
      -- entry 4: the same event time twice: the later line wins; a missing time counts as oldest
      '{"entry_id": 4, "amount": "40.00", "op": "I", "at": "2026-02-03T10:00:00Z"}',
      '{"entry_id": 4, "amount": "41.00", "op": "U", "at": "2026-02-03T10:00:00Z"}',
      '{"entry_id": 4, "amount": "49.00", "op": "U"}' })
    local rc, _, err = run("--entity", "ledger")
    assert.are.equal(0, rc, err)
    local r = last_run(pg)
    assert.are.same({ "succeeded", 5, 2, 0, 0, 0, 0 }, (layer_counts(pg, r.run_id, "ledger", "bronze")))
    assert.are.equal("3", assert(pg:query([[SELECT details->>'duplicates' AS d FROM audit.entity_layer_run
      WHERE run_id = $1 AND entity = 'ledger' AND layer = 'bronze']], r.run_id))[1].d)
    local rows = assert(pg:query([[SELECT entry_id, amount::text, _dp_valid_from::text AS vf FROM silver.shop__ledger
      WHERE entry_id IN (3, 4) ORDER BY entry_id, _dp_valid_from]]))
    assert.are.same({
      { entry_id = "3", amount = "31.00", vf = "2026-02-02 10:00:00+00" },
      { entry_id = "4", amount = "41.00", vf = "2026-02-03 10:00:00+00" },
    }, rows)
  end)

  it("does not advance the cursor when the run fails", function()
    put(env, "events-003.jsonl", { '{"event_id": 4, "kind": "d"}', '{"event_id": 5, "kind": ' })
    local rc = run("--entity", "events")
    assert.are.equal(1, rc)
    assert.are.equal("events-002.jsonl", assert(pg:query("SELECT cursor FROM dp.entity_cursor WHERE entity = 'events'"))[1].cursor)
    put(env, "events-003.jsonl", { '{"event_id": 4, "kind": "d"}', '{"event_id": 5, "kind": "e"}' })
    rc = run("--entity", "events")
    assert.are.equal(0, rc)
    assert.are.equal("events-003.jsonl", assert(pg:query("SELECT cursor FROM dp.entity_cursor WHERE entity = 'events'"))[1].cursor)
    assert.are.equal("5", assert(pg:query("SELECT count(*) AS n FROM silver.shop__events WHERE _dp_is_current"))[1].n)
  end)
end)
