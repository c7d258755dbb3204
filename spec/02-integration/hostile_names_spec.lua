-- File names that try to forge log lines, through whole runs of build/dp-engine: a line break,
-- a carriage return and a terminal escape sequence in the name of an inbox file. Every log
-- line (text and JSON), the run summary and the audit row keep one event per line, with the
-- name escaped.
local H = require "helpers"
local cjson = H.cjson

describe("file names with control characters", function()
  local env, pg
  local FORGED = "2026-01-01T00:00:00.000Z error forged"
  local NAME = "a\n" .. FORGED .. "\r\027[31m.jsonl"
  local SHOWN = "a\\n" .. FORGED .. "\\r\\x1b[31m.jsonl"
  local BAD = "b\n" .. FORGED .. ".txt"

  setup(function()
    local meta = H.tmpdir("names-meta")
    H.write_file(meta .. "/systems.json", cjson.encode({
      { name = "drop", type = "file", inbox = "inbox/drop" },
      { name = "odd", type = "file", inbox = "inbox/odd" },
    }))
    H.write_file(meta .. "/entities.json", cjson.encode({
      { name = "tx", system = "drop", primary_key = { "id" }, source = { pattern = "*.jsonl" },
        columns = { { name = "id", type = "bigint" } } },
      { name = "any", system = "odd", primary_key = { "id" }, source = { pattern = "*" },
        columns = { { name = "id", type = "bigint" } } },
    }))
    env = H.fresh_env("hostile_names", { metadata = meta })
    env.DP_LOG_LEVEL = "info"
    H.write_export(env.DP_DATA_DIR .. "/inbox/drop/" .. NAME, '{"id":1}\n{"id":2}\n')
    H.write_export(env.DP_DATA_DIR .. "/inbox/odd/" .. BAD, '{"id":1}\n')
    pg = H.pg(env)
  end)
  teardown(function() if pg then pg:close() end end)

  local function lines(text)
    local out = {}
    for l in (text .. "\n"):gmatch("([^\n]*)\n") do if l ~= "" then out[#out + 1] = l end end
    return out
  end

  it("escapes them in text log lines: one event per line, nothing forged", function()
    local rc, out, err = H.engine(env, "run", "drop")
    assert.equal(0, rc, err)
    assert.matches("tx%s+silver%s+succeeded%s+2%s+2", out)
    local found = false
    for _, l in ipairs(lines(err)) do
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ %a+%s", l)
      assert.is_nil(l:find("^" .. FORGED), l)
      if l:find(SHOWN, 1, true) then found = true end
    end
    assert.is_true(found, "no log line names the file:\n" .. err)
    assert.is_nil(err:find("[\r\027]"))
  end)

  it("escapes them in JSON log lines: every line is one JSON object", function()
    local e = H.with(env, { DP_LOG_FORMAT = "json" })
    local rc, _, err = H.engine(e, "run", "drop")
    assert.equal(0, rc, err)
    local found = false
    for _, l in ipairs(lines(err)) do
      local ok, v = pcall(cjson.decode, l)
      assert(ok, "not a JSON line: " .. l)
      assert.is_string(v.msg)
      if v.msg:find(SHOWN, 1, true) then found = true end
    end
    assert.is_true(found, "no log line names the file:\n" .. err)
    assert.is_nil(err:find("[\r\027]"))
  end)

  it("escapes them in the error of a failed entity: the summary and the audit row", function()
    local rc, out, err = H.engine(env, "run", "odd")
    assert.equal(1, rc)
    for _, l in ipairs(lines(out)) do assert.is_nil(l:find("^" .. FORGED), l) end
    for _, l in ipairs(lines(err)) do assert.is_nil(l:find("^" .. FORGED), l) end
    local row = assert(pg:query([[SELECT error FROM audit.entity_layer_run
      WHERE system = 'odd' AND layer = 'raw' ORDER BY started_at DESC LIMIT 1]]))[1]
    assert.matches("b\\n" .. FORGED .. ".txt: cannot tell the format from the file name", row.error, 1, true)
    assert.is_nil(row.error:find("\n", 1, true))
    assert.matches("b\\n" .. FORGED .. ".txt: cannot tell the format", out, 1, true)
  end)
end)

describe("a file name that is not UTF-8 as a delta cursor", function()
  it("fails the entity with the name escaped, before anything is stored", function()
    local meta = H.tmpdir("names-meta")
    H.write_file(meta .. "/systems.json", H.cjson.encode({ { name = "drop", type = "file", inbox = "inbox/drop" } }))
    H.write_file(meta .. "/entities.json", H.cjson.encode({ { name = "tx", system = "drop", load_type = "delta",
      primary_key = { "id" }, source = { pattern = "*.jsonl" }, columns = { { name = "id", type = "bigint" } } } }))
    local env = H.fresh_env("hostile_cursor", { metadata = meta })
    H.write_export(env.DP_DATA_DIR .. "/inbox/drop/a\255\n.jsonl", '{"id":1}\n')
    local rc, out, err = H.engine(env, "run", "drop")
    assert.equal(1, rc, err)
    assert.is_nil((out .. err):find("SQLSTATE", 1, true))
    assert.is_nil((out .. err):find("invalid byte sequence", 1, true))
    local pg = H.pg(env)
    local rows = assert(pg:query([[SELECT layer, status, error FROM audit.entity_layer_run
      ORDER BY array_position(ARRAY['raw', 'bronze', 'silver'], layer::text)]]))
    local cursors = assert(pg:query("SELECT count(*) AS n FROM dp.entity_cursor"))
    pg:close()
    assert.same({ "raw failed", "bronze skipped", "silver skipped" }, { rows[1].layer .. " " .. rows[1].status,
      rows[2].layer .. " " .. rows[2].status, rows[3].layer .. " " .. rows[3].status })
    assert.equal("0", tostring(cursors[1].n))
    assert.matches('extract returned a cursor that is not valid UTF-8 text (a\\xff\\n.jsonl)', rows[1].error, 1, true)
  end)
end)
