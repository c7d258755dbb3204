-- Hostile source records (issue #11, items 1-3): numbers that do not fit, NUL bytes, values and
-- keys a MongoDB server cannot hold. Each record ends loaded exactly, rejected with a reason
-- (bronze's <collection>__rejected and silver's __rejected table), or in a clear failure.
local H = require "helpers"

local META = H.root .. "/spec/fixtures/pipelines/hostile"

describe("hostile source records", function()
  local env, pg

  setup(function()
    env = H.fresh_env("hostile", { metadata = META })
    pg = H.pg(env)
  end)
  teardown(function() if pg then pg:close() end end)

  local function put(name, bytes)
    H.sh("rm -f " .. H.sh_quote(env.DP_DATA_DIR .. "/inbox/hz") .. "/*")
    H.write_export(env.DP_DATA_DIR .. "/inbox/hz/" .. name, bytes)
  end

  local function run(entity)
    return H.engine(env, "run", "hz", "--entity", entity)
  end

  local function last_run()
    return assert(pg:query("SELECT run_id::text, status, error FROM audit.system_run ORDER BY started_at DESC LIMIT 1"))[1]
  end

  local function counts(run_id, entity, layer)
    local r = assert(pg:query([[SELECT status, records_in AS i, records_inserted AS ins, records_rejected AS rej,
      details FROM audit.entity_layer_run WHERE run_id = $1 AND entity = $2 AND layer = $3]], run_id, entity, layer))[1]
    r.i, r.ins, r.rej = tonumber(r.i), tonumber(r.ins), tonumber(r.rej)
    return r
  end

  local function current(entity, cols)
    return assert(pg:query("SELECT " .. cols .. " FROM silver.hz__" .. entity .. " WHERE _dp_is_current ORDER BY id"))
  end

  it("keeps integers of 2^64 and more exact, and rejects them from columns they do not fit", function()
    put("recs-1.jsonl", table.concat({
      '{"id":"w1","txt":36893488147419103232,"j":{"x":18446744073709551618}}',
      '{"id":"w2","b":18446744073709551616}',
      '{"id":"w3","b":99999999999999999999999}',
      '{"id":"w4","d":1e400}',
      '{"id":"w5","n":123456789012345678901234567890.123456,"d":1E+2,"i":-0,"b":9223372036854775807}',
      '{"id":"w6","i":2147483648}',
      '{"id":"w7","d":1e-400}',
      '{"id":"w8","j":[1e400,-0.0,0.1,1.00000000000000000001]}',
    }, "\n") .. "\n")
    local rc, out, err = run("recs")
    assert.are.equal(0, rc, out .. err)
    local r = last_run()
    local s = counts(r.run_id, "recs", "silver")
    assert.are.same({ "succeeded", 8, 3, 5 }, { s.status, s.i, s.ins, s.rej })
    assert.are.same({
      { id = "w1", txt = "36893488147419103232", j = '{"x": 18446744073709551618}' },
      { id = "w5", n = "123456789012345678901234567890.123456", d = "100", i = "0", b = "9223372036854775807" },
      { id = "w8", j = "true" }, -- the value exactly (jsonb writes 1e400 in full)
    }, current("recs", "id, txt, CASE WHEN id = 'w8' THEN (j = '[1e400, -0.0, 0.1, 1.00000000000000000001]'::jsonb)::text "
      .. "ELSE j::text END AS j, n::text AS n, d::text AS d, i::text AS i, b::text AS b"))
    local rej = assert(pg:query([[SELECT column_name, value, reason FROM silver.hz__recs__rejected
      WHERE _dp_run_id = $1 ORDER BY raw_line]], r.run_id))
    assert.are.same({
      { column_name = "b", value = "18446744073709551616", reason = 'column b: "18446744073709551616" is out of range for bigint' },
      { column_name = "b", value = "99999999999999999999999", reason = 'column b: "99999999999999999999999" is out of range for bigint' },
      { column_name = "d", value = "1e400", reason = 'column d: "1e400" does not fit a double (too large)' },
      { column_name = "i", value = "2147483648", reason = "column i: 2147483648 is out of range for integer" },
    }, { rej[1], rej[2], rej[3], rej[4] })
    assert.are.equal(5, #rej)
    assert.matches("too small for a double", rej[5].reason)
  end)

  it("keeps every byte of a line: a NUL byte is a clear failure naming file and line, never a lost record", function()
    put("recs-1.jsonl", '{"id":"ok"}\n\0{"id":"a"}\n')
    local rc, out, err = run("recs")
    assert.are.equal(1, rc)
    assert.matches("recs%-1%.jsonl:2: invalid JSON at byte 1", out .. err)
    put("recs-1.jsonl", '{"id":"b"}\0{"id":"c"}\n')
    rc, out, err = run("recs")
    assert.are.equal(1, rc)
    assert.matches("recs%-1%.jsonl:1: invalid JSON at byte 11", out .. err)
    -- in CSV a NUL byte is data: it reaches silver's text column as a rejection with its reason
    put("rows-1.csv", 'id,i,b,d,n,txt\nr1,1,2,3,4,"a\0b"\nr2,1,2,3,4,ok\n')
    rc, out, err = run("rows")
    assert.are.equal(0, rc, out .. err)
    local r = last_run()
    local b = counts(r.run_id, "rows", "bronze")
    assert.are.same({ 2, 2, 0 }, { b.i, b.ins, b.rej })
    local rej = assert(pg:query("SELECT reason FROM silver.hz__rows__rejected WHERE _dp_run_id = $1", r.run_id))
    assert.are.same({ { reason = 'column txt: "a\\0b" contains a NUL character' } }, rej)
  end)

  it("stores or rejects one bad record with its reason, and loads the rest of the entity", function()
    local deep = string.rep('{"a":', 120) .. "1" .. string.rep("}", 120)
    put("recs-1.jsonl", table.concat({
      '{"id":"k1","txt":"a\\u0000b","j":{"s":"x\\u0000y"}}',
      '{"id":"k2","txt":"\\ud800"}',
      '{"id":"k3","j":{"a.b":{"c":1},"":2,"%":3}}',
      '{"id":"k4","n":1,"n":2}',
      '{"id":"k5","j":' .. deep .. '}',
      '{"id":"k6","txt":"fine","j":{"x":{"$numberLong":"5"}}}',
      '{"id":"k7","\\u0000":1}',
      '{"id":"k8","$set":{"x":1},"j":{"$k":{"a.b":"%2E"}}}',
      '{"id":"k9","j":{"k\\u0000":1}}',
    }, "\n") .. "\n")
    local rc, out, err = run("recs")
    assert.are.equal(0, rc, out .. err)
    assert.is_nil((out .. err):find("msg_insert", 1, true))
    assert.is_nil((out .. err):find("SQLSTATE", 1, true))
    local r = last_run()
    assert.are.equal("succeeded", r.status)
    local b = counts(r.run_id, "recs", "bronze")
    -- k2, k4 and k5 cannot be stored; the others are, keys encoded where a server needs it
    assert.are.same({ "succeeded", 9, 6, 3 }, { b.status, b.i, b.ins, b.rej })
    local m = H.mongo()
    local docs = assert(m:find(env.DP_BRONZE_DB, "hz__recs__rejected", "{}"))
    local k8 = assert(m:find(env.DP_BRONZE_DB, "hz__recs", '{"data.id": "k8"}'))
    m:close()
    local reasons = {}
    for _, js in ipairs(docs) do
      local d = H.cjson.decode(js)
      reasons[tonumber(type(d._dp.raw.line) == "table" and d._dp.raw.line["$numberLong"] or d._dp.raw.line)] = d._dp.reason
      assert.matches("^raw/hz/recs/", d._dp.raw.file)
      assert.is_nil(d.data) -- the reference and the reason, not the record
    end
    assert.matches("lone surrogate", reasons[2])
    assert.matches('duplicate member "n"', reasons[4])
    assert.matches("nested deeper than 98 levels", reasons[5])
    assert.are.same({ ["%24set"] = { x = 1 }, id = "k8", j = { ["%24k"] = { ["a%2Eb"] = "%2E" } } },
      H.cjson.decode(k8[1]).data)
    local s = counts(r.run_id, "recs", "silver")
    assert.are.same({ "succeeded", 4, 5 }, { s.status, s.ins, s.rej }) -- in: also the keys of the earlier test, now deleted
    assert.are.same({
      { id = "k3", j = '{"": 2, "%": 3, "a.b": {"c": 1}}' },
      { id = "k6", txt = "fine", j = '{"x": {"$numberLong": "5"}}' },
      { id = "k7" },
      { id = "k8", j = '{"$k": {"a.b": "%2E"}}' },
    }, current("recs", "id, txt, j::text AS j"))
    local rej = assert(pg:query([[SELECT raw_line AS line, column_name, reason FROM silver.hz__recs__rejected
      WHERE _dp_run_id = $1 ORDER BY raw_line]], r.run_id))
    assert.are.equal(5, #rej)
    assert.are.same({ line = "1", column_name = "txt", reason = 'column txt: "a\\0b" contains a NUL character' }, rej[1])
    assert.are.same("2", rej[2].line)
    assert.matches("lone surrogate", rej[2].reason)
    assert.are.same({ line = "9", column_name = "j", reason = "column j: holds U+0000 (\\u0000), which a json column (PostgreSQL jsonb) cannot" }, rej[5])
  end)

  it("rejects a record larger than a MongoDB document may be, and loads the others", function()
    local big = string.rep("x", 17 * 1024 * 1024)
    put("log-1.jsonl", '{"b":1}\n{"b":2,"txt":"' .. big .. '"}\n{"b":3,"txt":"' .. big:sub(1, 8 * 1024 * 1024) .. '"}\n')
    local rc, out, err = run("log")
    assert.are.equal(0, rc, out .. err)
    local r = last_run()
    local b = counts(r.run_id, "log", "bronze")
    assert.are.same({ 3, 2, 1 }, { b.i, b.ins, b.rej })
    local rej = assert(pg:query("SELECT raw_line, reason FROM silver.hz__log__rejected WHERE _dp_run_id = $1", r.run_id))
    assert.are.same({ { raw_line = "2", reason = "the record is larger than bronze can store (16 MiB as BSON) at byte 1" } }, rej)
    assert.are.equal("8388608", assert(pg:query("SELECT length(txt)::text AS n FROM silver.hz__log WHERE b = 3 AND _dp_run_id = $1", r.run_id))[1].n)
  end)

  it("keeps an entity without a primary key loading past a bad record", function()
    put("log-1.jsonl", '{"b":1,"$odd":{"a%b":7},"geo":[[1.5,2],[3,[4,[]]],{"k":[[5]]}]}\n{"b":2,"b":3}\n'
      .. '{"b":18446744073709551616,"txt":18446744073709551616}\n')
    local rc, out, err = run("log")
    assert.are.equal(0, rc, out .. err)
    local r = last_run()
    local b = counts(r.run_id, "log", "bronze")
    assert.are.same({ 3, 2, 1 }, { b.i, b.ins, b.rej })
    assert.are.equal("hz__log__rejected", H.cjson.decode(b.details).rejects)
    local s = counts(r.run_id, "log", "silver")
    assert.are.same({ 3, 1, 2 }, { s.i, s.ins, s.rej })
    -- a column path finds a key bronze stored encoded; nested arrays come back as they were
    assert.are.same({ { b = "1", odd = "7", geo = '[[1.5, 2], [3, [4, []]], {"k": [[5]]}]' } },
      assert(pg:query("SELECT b::text AS b, odd::text AS odd, geo::text AS geo FROM silver.hz__log WHERE _dp_run_id = $1",
        r.run_id)))
  end)

  it("rejects values with multi-byte text at the cut-off of messages and reject rows, and exponents with white space", function()
    -- the rejected value (shown to 255 bytes) and the reason (60 bytes) are cut between characters
    put("recs-9.jsonl", table.concat({
      '{"id":"u1","i":"' .. string.rep("x", 253) .. '\195\169"}',
      '{"id":"u2","i":"' .. string.rep("x", 59) .. '\195\169\195\169"}',
      '{"id":"u3","n":"1e 5"}',
      '{"id":"u4","n":"2e\\t3"}',
      '{"id":"u5","n":"1e+2"}',
    }, "\n") .. "\n")
    local rc, out, err = run("recs")
    assert.are.equal(0, rc, out .. err)
    local s = counts(last_run().run_id, "recs", "silver")
    assert.are.same({ "succeeded", 4 }, { s.status, s.rej })
    local rows = assert(pg:query("SELECT reason FROM silver.hz__recs__rejected WHERE _dp_run_id = $1 ORDER BY raw_line",
      last_run().run_id))
    assert.truthy(rows[3].reason:find("is not a decimal number", 1, true), rows[3].reason)
    assert.truthy(rows[4].reason:find("is not a decimal number", 1, true), rows[4].reason)
    local ok = current("recs", "id, n::text AS n")
    local u5
    for _, r in ipairs(ok) do if r.id == "u5" then u5 = r.n end end
    assert.are.equal("100.000000", u5)
  end)
end)
