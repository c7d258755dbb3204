-- dp.core hashing: XXH3-128 over the canonical typed encoding (docs/auditing.md#hashing).
-- The vectors were checked against an independent implementation (Python's xxhash package
-- over the same byte layout); they must never change, or every stored hash would.
local core = require "dp.core"

describe("typed hashing", function()
  it("matches the documented test vectors", function()
    assert.are.equal("99aa06d3-0147-98d8-6001-c324468d497f", core.hash({}))
    assert.are.equal("2ea572b4-4e1a-026a-9cfa-e7960ebc7421", core.hash({ { "string", "" } }))
    assert.are.equal("626d368f-e0e7-4b4f-1a03-8927df1311d6", core.hash({ { "string" } }))
    assert.are.equal("32fe7070-a885-0619-6e85-b3d39c60e6ee", core.hash({ { "integer", "1" } }))
    assert.are.equal("f0b8acb3-ef73-e7ae-4269-9d304018a3d1", core.hash({ { "string", "TX-1001" } }))
    assert.are.equal("497ebffd-60d4-63ef-78c0-8e409ca38c6d",
      core.hash({ { "integer", "42" }, { "string", "a" }, { "timestamp", "2024-01-01T00:00:00.000000Z" } }))
  end)

  it("matches the per-type vectors of docs/auditing.md, from every listed source value", function()
    local vectors = {
      { { type = "integer" }, { "1", '"1"', "1.0" }, "1", "32fe7070-a885-0619-6e85-b3d39c60e6ee" },
      { { type = "bigint" }, { '"-9223372036854775808"' }, "-9223372036854775808", "c55ceb30-c97b-d105-8bac-17ca927a3dad" },
      { { type = "text" }, { '"Grüße\\n"' }, "Grüße\n", "09438e53-8a50-0eb8-9e7e-6d282c1c86dd" },
      { { type = "decimal", precision = 10, scale = 2 }, { "12.5", '"12.50"', '"1.25e1"' }, "12.50",
        "17fc94f2-ea93-e7ee-5971-53f1aaab2eb0" },
      { { type = "decimal", precision = 10, scale = 2 }, { '"-0.005"', "-0.01" }, "-0.01",
        "c3d096c1-fbbd-46fb-c198-615be56e5c00" },
      { { type = "double" }, { "0.1", '"0.1"' }, "0.1", "c6658acc-07d7-2ad6-6950-7d245fb7ad70" },
      { { type = "double" }, { "1e100" }, "1e+100", "ee21e6d8-43a0-3c72-0079-cf3653c76114" },
      { { type = "boolean" }, { "true", '"Yes"', '"t"', "1" }, "true", "7c89f99f-fda1-bd60-8323-f3fb1322a1f7" },
      { { type = "boolean" }, { "false", '"off"', "0" }, "false", "221916c2-9866-db6a-7e51-613ada8f2233" },
      { { type = "date" }, { '"2024-02-29"' }, "2024-02-29", "13853f93-e6d7-71ef-dad2-5fafe3cb5304" },
      { { type = "timestamp" }, { '"2024-01-01T00:00:00+01:00"', '"2023-12-31T23:00:00Z"', "1704063600" },
        "2023-12-31T23:00:00.000000Z", "9cbd5da5-bf5b-1fe1-f8cf-38d6d08ce411" },
      { { type = "json" }, { '{"a": [1, "x", null]}' }, '{"a":[1,"x",null]}', "1402b831-a836-c320-cf2b-7dfd6dd1d376" },
      { { type = "uuid" }, { '"0190F6C2-1234-7ABC-8DEF-0123456789AB"' }, "0190f6c2-1234-7abc-8def-0123456789ab",
        "8df36091-41bf-3834-335d-f4b956cac589" },
    }
    for _, v in ipairs(vectors) do
      local col, sources, text, hash = v[1], v[2], v[3], v[4]
      col.name = "c"
      for _, src in ipairs(sources) do
        local ok, got = core.cast(col, src)
        assert.is_true(ok, col.type .. " " .. src .. ": " .. tostring(got))
        assert.are.equal(text, got, col.type .. " from " .. src)
      end
      assert.are.equal(hash, core.hash({ { col.type, text } }), col.type .. " " .. text)
    end
  end)

  it("tells NULL from the empty string", function()
    assert.are_not.equal(core.hash({ { "string" } }), core.hash({ { "string", "" } }))
    assert.are_not.equal(core.hash({ { "string" }, { "string", "" } }), core.hash({ { "string", "" }, { "string" } }))
  end)

  it("keeps value boundaries: ('ab','c') differs from ('a','bc')", function()
    assert.are_not.equal(core.hash({ { "string", "ab" }, { "string", "c" } }),
      core.hash({ { "string", "a" }, { "string", "bc" } }))
  end)

  it("hashes by type family, so widening integer to bigint or string to text keeps hashes", function()
    assert.are.equal(core.hash({ { "integer", "7" } }), core.hash({ { "bigint", "7" } }))
    assert.are.equal(core.hash({ { "string", "x" } }), core.hash({ { "text", "x" } }))
    assert.are_not.equal(core.hash({ { "integer", "7" } }), core.hash({ { "string", "7" } }))
  end)

  it("gives the same hash to one value in two source representations", function()
    local int = { name = "n", type = "integer" }
    local _, a = core.cast(int, "1")
    local _, b = core.cast(int, '"1"')
    assert.are.equal(a, b)
    local ts = { name = "t", type = "timestamp" }
    local _, t1 = core.cast(ts, '"2024-01-01T00:00:00+01:00"')
    local _, t2 = core.cast(ts, '"2023-12-31T23:00:00Z"')
    assert.are.equal(t1, t2)
    local entity = { system = "s", name = "e", primary_key = { "id" },
      columns = { { name = "id", type = "integer" }, { name = "at", type = "timestamp" } } }
    local h1 = assert(core.row_hashes(entity, '{"id": 1, "at": "2024-01-01T00:00:00+01:00"}'))
    local h2 = assert(core.row_hashes(entity, '{"id": "1", "at": "2023-12-31T23:00:00Z"}'))
    assert.are.same(h1, h2)
  end)

  it("splits key, scd1 and scd2 columns", function()
    local entity = { system = "s", name = "e", primary_key = { "id" },
      columns = { { name = "id", type = "integer" }, { name = "name", type = "text", history = "scd1" },
        { name = "amount", type = "decimal", precision = 10, scale = 2 } } }
    local a = assert(core.row_hashes(entity, '{"id": 1, "name": "x", "amount": "1.5"}'))
    local b = assert(core.row_hashes(entity, '{"id": 1, "name": "y", "amount": 1.50}'))
    assert.are.equal(a.key, b.key)
    assert.are_not.equal(a.scd1, b.scd1)
    assert.are.equal(a.scd2, b.scd2)
    assert.are.equal(core.hash({ { "integer", "1" } }), a.key)
    assert.are.equal(core.hash({ { "decimal", "1.50" } }), a.scd2)
  end)
end)
