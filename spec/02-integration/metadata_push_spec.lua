-- metadata push / show and DP_METADATA=mongo against the real FerretDB: a pushed set reads
-- back as the same models with the same hash; invalid metadata and a push that stops half way
-- leave the previous set current; a run reads the pushed set and records the folder's hash.
local H = require "helpers"

local FIX = H.root .. "/spec/fixtures/metadata"
local DEMO = H.root .. "/metadata/demo/bank"

-- A copy of a metadata folder in a new temporary folder.
local function copy_dir(from)
  local dir = H.tmpdir("meta")
  assert(H.sh("cp " .. H.sh_quote(from) .. "/*.json " .. H.sh_quote(dir) .. "/") == 0)
  return dir
end

local function one(list)
  assert.are.equal(1, #list)
  return list[1]
end

describe("metadata push", function()
  local env, mongo_env

  setup(function()
    env = H.fresh_env("metadata_push", { metadata = FIX .. "/valid" })
    -- the fixture set uses the spec connectors (inline) and gold scripts
    env.DP_SCRIPTS = FIX .. "/scripts"
    mongo_env = H.with(env, { DP_METADATA = "mongo" })
  end)

  it("reads nothing before the first push (exit 2, saying what to do)", function()
    local rc, _, err = H.engine(mongo_env, "metadata", "validate")
    assert.are.equal(2, rc)
    assert.matches("no metadata has been pushed to MongoDB database " .. env.DP_METADATA_DB
      .. " (run dp-engine metadata push)", err, 1, true)
  end)

  it("pushes a folder and reads back the same models with the same hash", function()
    local rc, out, err = H.engine(env, "metadata", "push")
    assert.are.equal(0, rc, err)
    assert.matches("^pushed metadata in .-/spec/fixtures/metadata/valid to MongoDB database "
      .. env.DP_METADATA_DB:gsub("%p", "%%%0") .. ": 2 systems, 3 entities, 2 gold models %(push [%x-]+, hash %x+%)\n$", out)

    local rc1, from_dir = H.engine(env, "metadata", "show", "--json")
    local rc2, from_mongo, err2 = H.engine(mongo_env, "metadata", "show", "--json")
    assert.are.equal(0, rc1)
    assert.are.equal(0, rc2, err2)
    local a, b = H.cjson.decode(from_dir), H.cjson.decode(from_mongo)
    assert.matches("^MongoDB database " .. env.DP_METADATA_DB:gsub("%p", "%%%0") .. ", push [%x-]+$", b.source)
    assert.are.equal(64, #a.hash)
    assert.are.equal(a.hash, b.hash)
    a.source, b.source = nil, nil
    assert.are.same(a, b)
    assert.are.same(3, #b.entities)
    -- the secret reference stays a reference
    assert.are.same({ secret = "fitness_token" }, b.systems[2].token)

    local _, v1 = H.engine(env, "metadata", "validate")
    local _, v2 = H.engine(mongo_env, "metadata", "validate")
    assert.are.equal(v1:match("%(hash %x+%)"), v2:match("%(hash %x+%)"))
  end)

  it("stores the exact texts, one document per item, and a pointer", function()
    local cur = one(H.metadata_docs(env, "current"))
    assert.are.equal("current", cur._id)
    local push = one(H.metadata_docs(env, "pushes"))
    assert.are.equal(cur.push_id, push._id)
    assert.are.equal(cur.hash, push.hash)
    assert.are.same({ systems = 2, entities = 3, gold = 2 }, push.counts)
    assert.are.equal(H.read_file(FIX .. "/valid/systems.json"), push.files.systems)
    assert.are.equal(H.read_file(FIX .. "/valid/entities.json"), push.files.entities)
    assert.are.equal(H.read_file(FIX .. "/valid/gold.json"), push.files.gold)
    assert.are.equal(FIX .. "/valid", push.source)

    local systems = H.metadata_docs(env, "systems")
    table.sort(systems, function(x, y) return x._dp.index < y._dp.index end)
    assert.are.same({ cur.push_id .. "/bank", cur.push_id .. "/fitness" }, { systems[1]._id, systems[2]._id })
    assert.are.same({ push_id = cur.push_id, index = 1 }, systems[2]._dp)
    assert.are.same({ secret = "fitness_token" }, systems[2].token)
    local ids = {}
    for _, d in ipairs(H.metadata_docs(env, "entities")) do ids[#ids + 1] = d._id:gsub("^[^/]+/", "") end
    table.sort(ids)
    assert.are.same({ "bank.accounts", "bank.transactions", "fitness.workouts" }, ids)
    local gold = H.metadata_docs(env, "gold", '{"name": "monthly_spend"}')
    assert.are.equal("monthly_spend.lua", one(gold).script) -- defaults are filled in
  end)

  it("shows one item readably from MongoDB, and names an unknown one with a did-you-mean (exit 2)", function()
    local rc, out, err = H.engine(mongo_env, "metadata", "show", "bank.accounts")
    assert.are.equal(0, rc, err)
    assert.matches("^metadata from MongoDB database [%w_]+, push [%x-]+ %(hash %x+%): 2 systems, 3 entities, 2 gold models\n", out)
    assert.matches("entity bank.accounts: full load, key (iban, currency), delete detection tombstone", out, 1, true)
    assert.is_nil(out:find("bank.transactions", 1, true))
    rc, out, err = H.engine(mongo_env, "metadata", "show", "bank.acounts")
    assert.are.equal(2, rc)
    assert.are.equal("", out)
    assert.matches('no system, entity (system.entity) or gold model named "bank.acounts" (did you mean "bank.accounts"?)', err, 1, true)
  end)

  it("pushes nothing when the same metadata is already current", function()
    local before = one(H.metadata_docs(env, "current"))
    local rc, out = H.engine(env, "metadata", "push")
    assert.are.equal(0, rc)
    assert.matches("is already current in MongoDB database .- %(push " .. before.push_id:gsub("%-", "%%-")
      .. ", hash %x+%): nothing pushed", out)
    assert.are.equal(1, #H.metadata_docs(env, "pushes"))
  end)

  it("refuses invalid metadata (exit 2) and leaves the pushed set as it was", function()
    local before = one(H.metadata_docs(env, "current"))
    local dir = copy_dir(FIX .. "/valid")
    H.write_file(dir .. "/entities.json", H.read_file(dir .. "/entities.json"):gsub('"decimal"', '"decimel"', 1))
    local rc, out, err = H.engine(env, "metadata", "push", "--dir", dir)
    assert.are.equal(2, rc)
    assert.are.equal("", out)
    assert.matches('invalid metadata in ' .. dir, err, 1, true)
    assert.matches('"decimel" is not one of', err, 1, true)
    assert.are.same(before, one(H.metadata_docs(env, "current")))
    assert.are.equal(1, #H.metadata_docs(env, "pushes"))
    assert.are.equal(3, #H.metadata_docs(env, "entities"))
  end)

  it("keeps the previous set current when a push stops after staging, and cleans up after it next time", function()
    local before = one(H.metadata_docs(env, "current"))
    local dir = copy_dir(FIX .. "/valid")
    -- a valid change: one entity fewer
    -- (read and written with the metadata reader and encoder: cjson would write "records": [] as {})
    local ents = require("dp.jsonreader").decode(H.read_file(dir .. "/entities.json"))
    table.remove(ents, 3)
    H.write_file(dir .. "/entities.json", require("dp.schema").encode(ents))
    local rc, _, err = H.engine(H.with(env, { DP_TEST_PUSH_FAIL = "after-staging" }), "metadata", "push", "--dir", dir)
    assert.are.equal(1, rc)
    assert.matches("stopped after staging push [%x-]+, before the flip", err)
    -- staged: a second push document and its items exist, but the pointer did not move
    assert.are.same(before, one(H.metadata_docs(env, "current")))
    assert.are.equal(2, #H.metadata_docs(env, "pushes"))
    assert.are.equal(3 + 2, #H.metadata_docs(env, "entities"))
    local rc2, shown = H.engine(mongo_env, "metadata", "show", "--json")
    assert.are.equal(0, rc2)
    local meta = H.cjson.decode(shown)
    assert.are.equal(before.hash, meta.hash)
    assert.are.equal(3, #meta.entities)

    -- the next push succeeds and removes the leftovers and the older set from the item collections
    rc, _, err = H.engine(env, "metadata", "push", "--dir", dir)
    assert.are.equal(0, rc, err)
    local now = one(H.metadata_docs(env, "current"))
    assert.are_not.equal(before.push_id, now.push_id)
    local entities = H.metadata_docs(env, "entities")
    assert.are.equal(2, #entities)
    for _, d in ipairs(entities) do assert.are.equal(now.push_id, d._dp.push_id) end
    assert.are.equal(2, #H.metadata_docs(env, "systems"))
    assert.are.equal(2, #H.metadata_docs(env, "gold"))
    -- the earlier push documents are kept (the texts of recent runs' metadata)
    assert.are.equal(3, #H.metadata_docs(env, "pushes"))
    local _, shown2 = H.engine(mongo_env, "metadata", "show", "--json")
    assert.are.equal(2, #H.cjson.decode(shown2).entities)
  end)

  it("keeps the 10 newest push documents", function()
    local dir = copy_dir(FIX .. "/valid")
    local base = H.read_file(dir .. "/systems.json")
    for i = 1, 9 do
      H.write_file(dir .. "/systems.json", base .. string.rep(" ", i))
      local rc, _, err = H.engine(env, "metadata", "push", "--dir", dir)
      assert.are.equal(0, rc, err)
    end
    local pushes = H.metadata_docs(env, "pushes")
    assert.are.equal(10, #pushes)
    local cur = one(H.metadata_docs(env, "current"))
    local found = false
    for _, p in ipairs(pushes) do found = found or p._id == cur.push_id end
    assert.is_true(found)
    assert.are.equal(2, #H.metadata_docs(env, "systems"))
  end)

  it("refuses pushed texts that no longer match their stored hash", function()
    local cur = one(H.metadata_docs(env, "current"))
    local m = H.mongo()
    -- (the command name must come first: write the JSON by hand)
    assert(m:command(env.DP_METADATA_DB, '{"update": "pushes", "updates": [{"q": {"_id": "' .. cur.push_id
      .. '"}, "u": {"$set": {"files.gold": "[]"}}}]}'))
    m:close()
    local rc, _, err = H.engine(mongo_env, "metadata", "validate")
    assert.are.equal(2, rc)
    assert.matches("the stored files hash to %x+, not to the hash " .. cur.hash:sub(1, 12)
      .. " recorded when they were pushed; push the metadata again", err)
  end)

  it("will not push from MongoDB to MongoDB", function()
    local rc, _, err = H.engine(mongo_env, "metadata", "push")
    assert.are.equal(2, rc)
    assert.matches("push reads a metadata folder", err, 1, true)
  end)
end)

describe("DP_METADATA=mongo at run time", function()
  local env, pg

  setup(function()
    env = H.fresh_env("metadata_mongo_run")
    pg = H.pg(env)
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
  end)
  teardown(function() if pg then pg:close() end end)

  it("runs the bank system from the pushed set and records the same metadata hash as the folder", function()
    local rc, _, err = H.engine(env, "run", "bank")
    assert.are.equal(0, rc, err)
    rc, _, err = H.engine(env, "metadata", "push")
    assert.are.equal(0, rc, err)
    local mongo_env = H.with(env, { DP_METADATA = "mongo" })
    rc, _, err = H.engine(mongo_env, "run", "bank")
    assert.are.equal(0, rc, err)
    local runs = assert(pg:query("SELECT status, metadata_hash FROM audit.system_run ORDER BY started_at"))
    assert.are.equal(2, #runs)
    assert.are.same({ "succeeded", "succeeded" }, { runs[1].status, runs[2].status })
    assert.are.equal(64, #runs[1].metadata_hash)
    assert.are.equal(runs[1].metadata_hash, runs[2].metadata_hash)
    assert.are.equal(one(H.metadata_docs(env, "current")).hash, runs[2].metadata_hash)
    assert.are.equal("6", assert(pg:query("SELECT count(*) AS n FROM silver.bank__transactions WHERE _dp_is_current"))[1].n)
  end)

  it("runs nothing when nothing is pushed in the database it is told to use (exit 2)", function()
    local rc, _, err = H.engine(H.with(env, { DP_METADATA = "mongo", DP_METADATA_DB = env.DP_METADATA_DB .. "_none" }), "run", "bank")
    assert.are.equal(2, rc)
    assert.matches("no metadata has been pushed", err, 1, true)
    assert.are.equal("2", assert(pg:query("SELECT count(*) AS n FROM audit.system_run"))[1].n)
  end)
end)
