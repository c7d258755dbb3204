-- engine.extract's emit redacts records in every JSON encoding of a registered value, and also
-- for a system that references no secret while a value is registered in the process (serve
-- runs many systems; one system's export may hold another system's token). Needs dp.core.
local cjson = require "cjson"
local H = require "helpers"
local core = H.core

describe("emit redaction", function()
  local engine, root

  setup(function()
    package.loaded["dp.engine"] = nil
    engine = require "dp.engine"
    root = H.tmpdir("emit-redact")
    H.write_file(root .. "/scripts/connectors/probe.lua", [[
      return {
        system_schema = { fields = { { records = { type = "string" } } } },
        extract = function(ctx) ctx.emit({ ctx.system.records, { t = "T\195\182ken-X/42 in a table" } }) end,
      }
    ]])
  end)
  teardown(function()
    core.redact_reset()
    H.sh("rm -rf " .. H.sh_quote(root))
  end)
  before_each(function()
    core.redact_reset()
    engine.configure { scripts_dir = root .. "/scripts", data_dir = root .. "/data" }
  end)

  local function run(record)
    local meta = assert(engine.load_metadata_texts({
      ["systems.json"] = cjson.encode({ { name = "plain", type = "probe", records = record } }),
      ["entities.json"] = cjson.encode({ { name = "e", system = "plain", columns = { { name = "id", type = "bigint" } } } }),
    }))
    local out, logs = {}, {}
    engine.extract(meta, "plain", "e", nil, function(batch)
      for _, r in ipairs(batch) do out[#out + 1] = r end
    end, function(level, msg) logs[#logs + 1] = level .. ": " .. msg end)
    return out, logs
  end

  it("leaves records alone while nothing is registered", function()
    local out = run('{"a":"T\\u00f6ken-X\\/42"}')
    assert.same({ '{"a":"T\\u00f6ken-X\\/42"}', '{"t":"T\195\182ken-X\\/42 in a table"}' }, out)
  end)

  it("redacts another system's registered token, however it is encoded, and warns once", function()
    assert(core.redact_register("T\195\182ken-X/42", "other_token"))
    local out, logs = run('{"a":"\\u0054\\u00F6ken-X\\/42","T\\u00f6ken-X/42":{"b":["x","T%c3%b6ken-X%2F42"]}}')
    assert.same({ '{"a":"[redacted:other_token]","[redacted:other_token]":{"b":["x","[redacted:other_token]"]}}',
      '{"t":"[redacted:other_token] in a table"}' }, out)
    for _, r in ipairs(out) do assert(cjson.decode(r)) end
    assert.equal(1, #logs)
    assert.matches('held the value of secret "other_token"', logs[1], 1, true)
  end)
end)
