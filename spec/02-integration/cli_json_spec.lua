-- --json output and JSON log lines (docs/cli.md#output, docs/cli.md#logs): one JSON document on
-- stdout and nothing else; every log line one object with the same keys; progress never drawn
-- when stdout is not a terminal.
local H = require "helpers"
local cjson = H.cjson

local DEMO = H.root .. "/metadata/demo"
local KEYS = { "ts", "level", "event", "msg", "run_id", "system", "entity", "layer", "counts" }

local one_doc = H.json_stdout

-- Every stderr line decoded, asserting each is a JSON object with every key of the schema.
local function log_lines(err)
  local lines = {}
  for l in err:gmatch("[^\n]+") do
    local ok, t = pcall(cjson.decode, l)
    assert(ok and type(t) == "table", "not a JSON log line: " .. l)
    for _, k in ipairs(KEYS) do assert(t[k] ~= nil, "key " .. k .. " missing in " .. l) end
    lines[#lines + 1] = t
  end
  return lines
end

describe("JSON output", function()
  local env, pg

  setup(function()
    env = H.fresh_env("json_out")
    pg = H.pg(env)
    H.fill_inbox(env, "inbox/bank", DEMO .. "/bank/export-1")
  end)
  teardown(function() if pg then pg:close() end end)

  it("run --json prints the audited run and nothing else on stdout, whatever the log level", function()
    local rc, out, err = H.engine(H.with(env, { DP_LOG_LEVEL = "debug", DP_PROGRESS_SECONDS = "0" }), "run", "bank", "--json")
    assert.are.equal(0, rc, err)
    local doc = one_doc(out)
    local row = assert(pg:query("SELECT run_id::text AS id, status FROM audit.system_run ORDER BY started_at DESC LIMIT 1"))[1]
    assert.are.equal(row.id, doc.run_id)
    assert.are.equal("succeeded", doc.status)
    assert.are.equal("bank", doc.system)
    assert.are.equal(3, #doc.layers)
    assert.are.equal(6, #doc.entities)
    for _, x in ipairs(doc.entities) do
      if x.entity == "transactions" and x.layer == "silver" then assert.are.equal(6, x.records_inserted) end
    end
    -- the same object as runs show --json's element
    local _, shown = H.engine(env, "runs", "show", doc.run_id, "--json")
    assert.are.same(one_doc(shown)[1], doc)
  end)

  it("run --json prints the run also when it failed (exit 1)", function()
    H.write_export(env.DP_DATA_DIR .. "/inbox/bank/transactions-2026-10.jsonl", "{broken\n")
    local rc, out = H.engine(env, "run", "bank", "--json")
    assert.are.equal(1, rc)
    local doc = one_doc(out)
    assert.are.equal("partial", doc.status)
    H.fill_inbox(env, "inbox/bank", DEMO .. "/bank/export-1")
  end)

  it("replay --json prints the replay's run", function()
    local rc, out, err = H.engine(env, "replay", "bank", "--from", "bronze", "--json")
    assert.are.equal(0, rc, err)
    local doc = one_doc(out)
    assert.are.equal("replay", doc.trigger_kind)
    assert.are.equal("succeeded", doc.status)
  end)

  it("gold run --json prints every model run, failed ones too", function()
    local rc, out = H.engine(env, "gold", "run", "monthly_overview", "--json")
    assert.are.equal(1, rc) -- fitness never ran
    local doc = one_doc(out)
    assert.are.equal("failed", doc.status)
    assert.are.equal(1, #doc.models)
    assert.are.equal("monthly_overview", doc.models[1].system)
    assert.matches("run `dp-engine run fitness` first", doc.models[1].error, 1, true)
    H.fill_inbox(env, "inbox/fitness", DEMO .. "/fitness/export-1")
    assert.are.equal(0, (H.engine(env, "run", "fitness")))
    rc, out = H.engine(env, "gold", "run", "monthly_overview", "--json")
    assert.are.equal(0, rc)
    doc = one_doc(out)
    assert.are.equal("succeeded", doc.status)
    assert.are.equal("gold", doc.models[1].layers[1].layer)
  end)

  it("run --with-gold --json adds the model runs", function()
    local rc, out, err = H.engine(env, "run", "fitness", "--with-gold", "--json")
    assert.are.equal(0, rc, err)
    local doc = one_doc(out)
    assert.are.equal("fitness", doc.system)
    assert.are.equal(1, #doc.gold)
    assert.are.equal("monthly_overview", doc.gold[1].system)
  end)

  it("metadata validate --json says valid, or lists every error (exit 2)", function()
    local rc, out = H.engine(env, "metadata", "validate", "--json")
    assert.are.equal(0, rc)
    local doc = one_doc(out)
    assert.is_true(doc.valid)
    assert.are.equal(3, doc.systems)
    assert.are.equal(7, doc.entities)
    assert.are.equal(2, doc.gold_models)
    assert.matches("^%x+$", doc.hash)
    local dir = H.tmpdir("json_badmeta")
    H.write_file(dir .. "/systems.json", '[{"name": "bank", "type": "file", "inbox": "x", "enabeld": true}]')
    H.write_file(dir .. "/entities.json", '[{"name": "t", "system": "bank", "source": {"pattern": "*.jsonl"}, "columns": [{"name": "id", "type": "strng"}]}]')
    rc, out = H.engine(env, "metadata", "validate", "--dir", dir, "--json")
    assert.are.equal(2, rc)
    doc = one_doc(out)
    assert.is_false(doc.valid)
    assert.are.same({ 'systems.json[0].enabeld: unknown field (did you mean "enabled"?)',
      'entities.json[0].columns[0].type: "strng" is not one of string, text, integer, bigint, decimal, double, boolean, date, timestamp, json, uuid' },
      doc.errors)
  end)
end)

describe("JSON log lines", function()
  local env, pg

  setup(function()
    env = H.with(H.fresh_env("json_logs"), { DP_LOG_FORMAT = "json", DP_LOG_LEVEL = "info", DP_PROGRESS_SECONDS = "0" })
    pg = H.pg(env)
    H.fill_inbox(env, "inbox/bank", DEMO .. "/bank/export-1")
  end)
  teardown(function() if pg then pg:close() end end)

  it("carry run_id, system, entity, layer, event and counts, one schema for every line", function()
    local rc, out, err = H.engine(env, "run", "bank", "--json")
    assert.are.equal(0, rc, err)
    local run_id = one_doc(out).run_id
    local lines = log_lines(err)
    local events = {}
    for _, l in ipairs(lines) do
      events[l.event] = (events[l.event] or 0) + 1
      if l.event ~= "log" or l.run_id ~= cjson.null then assert.are.equal(run_id, l.run_id, cjson.encode(l)) end
    end
    assert.are.equal(1, events.run_started)
    assert.are.equal(1, events.run_finished)
    assert.are.equal(6, events.layer_succeeded) -- 2 entities x 3 layers
    assert.is_true((events.progress or 0) > 0)
    local audit = {}
    for _, r in ipairs(assert(pg:query("SELECT entity, layer, records_in::int AS i, records_inserted::int AS ins, "
      .. "records_unchanged::int AS unch FROM audit.entity_layer_run WHERE run_id = $1", run_id))) do
      audit[r.entity .. "/" .. r.layer] = r
    end
    for _, l in ipairs(lines) do
      if l.event == "layer_succeeded" then
        assert.are.equal("bank", l.system)
        local a = audit[l.entity .. "/" .. l.layer]
        assert.is_table(a, l.entity .. "/" .. l.layer)
        assert.are.equal(tonumber(a.i), l.counts["in"])
        assert.are.equal(tonumber(a.ins), l.counts.inserted)
        assert.are.equal(tonumber(a.unch), l.counts.unchanged)
        for _, k in ipairs({ "updated", "deleted", "rejected" }) do assert.is_number(l.counts[k]) end
      elseif l.event == "progress" then
        assert.is_string(l.entity)
        assert.is_string(l.layer)
        assert.is_true(l.counts["in"] > 0)
      elseif l.event == "run_started" then
        assert.are.equal(cjson.null, l.entity)
        assert.are.equal(cjson.null, l.counts)
      end
    end
  end)

  it("give a connector's own lines the step they belong to, and a failure its event", function()
    H.write_export(env.DP_DATA_DIR .. "/inbox/bank/transactions-2026-10.jsonl", "{broken\n")
    local rc, _, err = H.engine(env, "run", "bank")
    assert.are.equal(1, rc)
    local failed, read_line
    for _, l in ipairs(log_lines(err)) do
      if l.event == "layer_failed" then failed = l end
      if l.event == "log" and l.msg:find("read .*accounts") then read_line = l end
    end
    assert.is_table(failed)
    assert.are.equal("error", failed.level)
    assert.are.equal("transactions", failed.entity)
    assert.are.equal("raw", failed.layer)
    assert.is_table(read_line)
    assert.are.equal("accounts", read_line.entity)
    assert.are.equal("raw", read_line.layer)
    assert.are.equal("bank", read_line.system)
  end)

  it("tell a gold model's lines by layer gold", function()
    local rc, _, err = H.engine(env, "gold", "run", "listening_daily")
    assert.are.equal(1, rc)
    local seen
    for _, l in ipairs(log_lines(err)) do
      if l.event == "layer_failed" then seen = l end
    end
    assert.is_table(seen)
    assert.are.equal("gold", seen.layer)
    assert.are.equal("listening_daily", seen.system)
    assert.is_string(seen.run_id)
  end)
end)

describe("progress", function()
  it("is never drawn when stdout is not a terminal (stderr is)", function()
    local env = H.fresh_env("json_tty")
    H.fill_inbox(env, "inbox/bank", DEMO .. "/bank/export-1")
    local outfile = env.DP_DATA_DIR .. "/out.json"
    local parts = { "env", "DP_LOG_LEVEL=info", "DP_PROGRESS_SECONDS=0" }
    for k, v in pairs(env) do
      if k:match("^DP_") and k ~= "DP_LOG_LEVEL" then parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end
    end
    parts[#parts + 1] = H.sh_quote(H.bin) .. " run bank --json >" .. H.sh_quote(outfile)
    local typescript = os.tmpname()
    -- script(1) gives the engine a terminal for stderr; stdout goes to a file
    local rc = H.sh("env -u LD_PRELOAD script -qec " .. H.sh_quote(table.concat(parts, " ")) .. " " .. typescript
      .. " >/dev/null 2>&1")
    local tty = H.read_file(typescript)
    os.remove(typescript)
    assert.are.equal(0, rc, tty)
    assert.are.equal("succeeded", one_doc(H.read_file(outfile)).status)
    assert.is_nil(tty:find("\r\27[K", 1, true), "a progress line was drawn: " .. tty:sub(1, 400))
    assert.truthy(tty:find("records so far", 1, true), tty:sub(1, 400)) -- progress comes as log lines instead
  end)
end)
