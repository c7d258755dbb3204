-- What `metadata show` prints and what `metadata push` stores per item (engine.show,
-- engine.push_documents), on the fixture set.
local cjson = require "cjson"

local FIX = "spec/fixtures/metadata"

describe("metadata show and push documents", function()
  local engine, meta

  setup(function()
    package.loaded["dp.engine"] = nil
    engine = require "dp.engine"
    engine.configure({ scripts_dir = FIX .. "/scripts", data_dir = "/tmp" })
    meta = assert(engine.load_metadata(FIX .. "/valid"))
    meta.source = "fixture"
  end)

  it("keeps the exact file texts the hash covers", function()
    local f = assert(io.open(FIX .. "/valid/entities.json", "rb"))
    assert.are.equal(f:read("*a"), meta.texts["entities.json"])
    f:close()
    assert.are.equal(require("dp.metadata").hash(meta.texts), meta.hash)
  end)

  it("prints everything readably: systems with their entities and columns, then gold models", function()
    local text = assert(engine.show(meta))
    assert.matches("^metadata from fixture %(hash " .. meta.hash:sub(1, 12) .. "%): 2 systems, 3 entities, 2 gold models\n", text)
    assert.matches('\nsystem fitness: inline, DISABLED\n', text, 1, true)
    assert.matches('  token: {"secret":"fitness_token"}\n', text, 1, true)
    assert.matches("  triggers: schedule \"0 6 * * *\" Europe/Berlin\n", text, 1, true)
    assert.matches("  entity bank.accounts: full load, key (iban, currency), delete detection tombstone, on type error reject\n", text, 1, true)
    assert.matches("\n    amount%s+decimal%(12,2%)%s+yes%s+scd2\n", text)
    assert.matches("\ngold model monthly_spend: table, script gold/monthly_spend.lua\n", text, 1, true)
  end)

  it("prints one system with its entities, one entity, or one gold model", function()
    local text = assert(engine.show(meta, "bank"))
    assert.matches("system bank:", text, 1, true)
    assert.matches("entity bank.transactions:", text, 1, true)
    assert.is_nil(text:find("fitness", 1, true))
    text = assert(engine.show(meta, "bank.accounts"))
    assert.is_nil(text:find("entity bank.transactions", 1, true))
    assert.matches("entity bank.accounts:", text, 1, true)
    text = assert(engine.show(meta, "spend_by_merchant"))
    assert.matches("gold model spend_by_merchant:", text, 1, true)
    assert.is_nil(text:find("system bank", 1, true))
  end)

  it("names an unknown item with a did-you-mean", function()
    local text, err = engine.show(meta, "bank.acounts")
    assert.is_nil(text)
    assert.are.equal('no system, entity (system.entity) or gold model named "bank.acounts" (did you mean "bank.accounts"?)', err)
  end)

  it("prints JSON with the selected items, keys in model order, empty lists as []", function()
    local text = assert(engine.show(meta, "fitness", true))
    assert.matches('^{"source":"fixture","hash":"%x+","systems":%[{"name":"fitness",', text)
    local v = cjson.decode(text)
    assert.are.equal(1, #v.systems)
    assert.are.same({ "workouts" }, { v.entities[1].name })
    assert.matches('"gold":[]', text, 1, true)
    assert.matches('"primary_key":[]', text, 1, true)
  end)

  it("gives push one JSON document per item, with ids and defaults", function()
    local docs = engine.push_documents(meta)
    assert.are.same({ "bank", "fitness" }, { docs.systems[1].id, docs.systems[2].id })
    assert.are.same({ "bank.transactions", "bank.accounts", "fitness.workouts" },
      { docs.entities[1].id, docs.entities[2].id, docs.entities[3].id })
    assert.are.same({ "monthly_spend", "spend_by_merchant" }, { docs.gold[1].id, docs.gold[2].id })
    assert.are.same(meta.systems[2], cjson.decode(docs.systems[2].json))
    assert.matches('^{"name":"fitness","type":"inline","enabled":false,', docs.systems[2].json)
  end)

  it("shows a file entity's csv options only when it reads CSV (text and JSON)", function()
    engine.configure({ scripts_dir = ".", data_dir = "/tmp" }) -- the shipped connectors and gold scripts
    local shipped = assert(engine.load_metadata("metadata"))
    local text = assert(engine.show(shipped, "bank.transactions"))
    assert.matches("source: .*pattern", text)
    assert.is_nil(text:find("csv", 1, true), text)
    local v = cjson.decode((assert(engine.show(shipped, "bank.transactions", true))))
    assert.is_nil(v.entities[1].source.csv)
    assert.is_table(shipped.entities[1].source.csv) -- the metadata itself keeps its defaults
    local csv_meta = assert(engine.load_metadata(FIX .. "/csv"))
    v = cjson.decode((assert(engine.show(csv_meta, nil, true))))
    assert.are.equal(";", v.entities[1].source.csv.delimiter)
    assert.matches("csv {", assert(engine.show(csv_meta)), 1, true)
    engine.configure({ scripts_dir = FIX .. "/scripts", data_dir = "/tmp" })
  end)

  it("writes / unescaped in JSON for people, keeping backslashes exact", function()
    assert.are.equal('{"name":"x","path":"a/b\\\\/c"}', engine.encode_ordered({ path = "a/b\\/c", name = "x" }))
    assert.are.same({ path = "a/b\\/c" }, cjson.decode(engine.encode_ordered({ path = "a/b\\/c" })))
  end)
end)
