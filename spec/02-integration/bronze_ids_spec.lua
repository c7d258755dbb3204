-- Bronze collections written before dp-engine 0.2 (binary UUID _ids): a run refuses them and
-- names the conversion, `dp-engine migrate` names them, `dp-engine migrate --bronze-ids` converts
-- them keeping every document (resumable, audited), and runs go on as before afterwards.
local H = require "helpers"
local cjson = require "cjson"

local DEMO = H.root .. "/metadata/demo/bank"

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function hex_to_base64(hex)
  local bytes = {}
  for i = 1, #hex, 2 do bytes[#bytes + 1] = tonumber(hex:sub(i, i + 1), 16) end
  local out = {}
  for i = 1, #bytes, 3 do
    local a, b, c = bytes[i], bytes[i + 1], bytes[i + 2]
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local idx = { math.floor(n / 262144) % 64, math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    for k = 1, 4 do
      if (k == 3 and not b) or (k == 4 and not c) then out[#out + 1] = "=" else out[#out + 1] = B64:sub(idx[k] + 1, idx[k] + 1) end
    end
  end
  return table.concat(out)
end

-- The documents of a collection as canonical extended JSON texts, by _id.
local function canonical(env, coll)
  local m = H.mongo()
  local docs = assert(m:find(env.DP_BRONZE_DB, coll, "{}"))
  m:close()
  local out = {}
  for _, js in ipairs(docs) do
    local d = cjson.decode(js)
    out[#out + 1] = d
  end
  return out
end

-- Rewrites a bronze collection in the form of before 0.2: the same documents, the _id the same
-- key hash as a binary UUID. keep_text: how many also keep a text copy (an attempt that stopped).
local function make_old(env, coll, keep_text)
  local m = H.mongo()
  local raw = assert(m:find(env.DP_BRONZE_DB, coll, "{}", '{"sort": {"_id": 1}}'))
  -- (a command's name must be its first key: no cjson table here)
  assert(m:command(env.DP_BRONZE_DB, '{"delete": "' .. coll .. '", "deletes": [{"q": {}, "limit": 0}]}'))
  for i, js in ipairs(raw) do
    local hex = js:match('^{ "_id" : "(%x+)"')
    assert(hex and #hex == 32, js)
    local old = js:gsub('^{ "_id" : "%x+"', '{ "_id" : { "$binary" : { "base64" : "' .. hex_to_base64(hex) .. '", "subType" : "04" } }', 1)
    local docs = { old }
    if i <= keep_text then docs[2] = js end
    assert(m:command(env.DP_BRONZE_DB, '{"insert": "' .. coll .. '", "documents": [' .. table.concat(docs, ",") .. ']}'))
  end
  m:close()
  return #raw
end

describe("bronze _ids of the binary form (before 0.2)", function()
  local env, pg, before

  setup(function()
    env = H.fresh_env("bronze_ids")
    pg = H.pg(env)
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-1")
    local rc, _, err = H.engine(env, "run", "bank")
    assert(rc == 0, err)
    before = {}
    for _, d in ipairs(canonical(env, "bank__transactions")) do before[d._id] = cjson.encode(d) end
  end)

  teardown(function()
    if pg then pg:close() end
  end)

  it("are refused by a run, which names the conversion", function()
    local n = make_old(env, "bank__transactions", 2)
    assert.are.equal(6, n)
    H.fill_inbox(env, "inbox/bank", DEMO .. "/export-2")
    local rc, _, err = H.engine(env, "run", "bank", "--full-refresh")
    assert.are_not.equal(0, rc)
    assert.matches("bank__transactions holds _ids of the binary form", err, 1, true)
    assert.matches("dp-engine migrate --bronze-ids", err, 1, true)
    -- nothing was written beside the old documents
    assert.are.equal(8, #canonical(env, "bank__transactions"))
  end)

  it("are named by dp-engine migrate", function()
    local rc, out, err = H.engine(env, "migrate")
    assert.are.equal(0, rc, err)
    assert.matches("up to date", out)
    assert.matches("1 bronze collection of " .. env.DP_BRONZE_DB .. " has _ids of the binary form", err, 1, true)
    assert.matches("bank__transactions", err, 1, true)
    assert.not_matches("bank__accounts", err, 1, true)
    assert.matches("dp-engine migrate --bronze-ids", err, 1, true)
    assert.matches("replay SYSTEM --from raw", err, 1, true)
  end)

  it("are converted by migrate --bronze-ids, keeping every document, audited", function()
    local rc, out, err = H.engine(env, "migrate", "--bronze-ids")
    assert.are.equal(0, rc, err)
    assert.matches("bronze bank__transactions: 8 documents, 6 converted %(4 copied now, 2 by an earlier attempt%), 6 after", out)
    -- the same documents, field for field, under the same text _id
    local after = canonical(env, "bank__transactions")
    assert.are.equal(6, #after)
    for _, d in ipairs(after) do
      assert.are.equal("string", type(d._id))
      assert.are.equal(before[d._id], cjson.encode(d))
    end
    local a = assert(pg:query([[SELECT database_name, collection, status, documents_before, binary_before, copied,
      already_copied, removed, documents_after, error FROM audit.bronze_id_conversion]]))
    assert.are.equal(1, #a)
    assert.are.same({ env.DP_BRONZE_DB, "bank__transactions", "succeeded", "8", "6", "4", "2", "6", "6" },
      { a[1].database_name, a[1].collection, a[1].status, a[1].documents_before, a[1].binary_before, a[1].copied,
        a[1].already_copied, a[1].removed, a[1].documents_after })
    -- nothing left to convert: migrate names nothing, a second conversion does nothing
    rc, out, err = H.engine(env, "migrate")
    assert.are.equal(0, rc, err)
    assert.not_matches("binary form", err, 1, true)
    rc, out = H.engine(env, "migrate", "--bronze-ids")
    assert.are.equal(0, rc)
    assert.matches("bronze ids: 0 collections converted", out)
  end)

  it("leaves a collection runs load as before", function()
    local rc, _, err = H.engine(env, "run", "bank")
    assert.are.equal(0, rc, err)
    local r = assert(pg:query([[SELECT records_in, records_inserted, records_updated, records_unchanged
      FROM audit.entity_layer_run WHERE entity = 'transactions' AND layer = 'bronze' ORDER BY started_at DESC LIMIT 1]]))
    -- the refused run left the key file untrusted: the collection is read, and only what changed
    -- in export-2 is written
    assert.are.equal(tonumber(r[1].records_in),
      tonumber(r[1].records_inserted) + tonumber(r[1].records_updated) + tonumber(r[1].records_unchanged))
    assert.is_true(tonumber(r[1].records_unchanged) > 0)
    for _, d in ipairs(canonical(env, "bank__transactions")) do assert.are.equal("string", type(d._id)) end
  end)
end)
