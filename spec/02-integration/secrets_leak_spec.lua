-- End to end: secrets referenced from metadata reach their connector and nothing else.
-- The `leaky` fixture connector puts its token into log lines, records (three encodings), an
-- error and a cursor; the `spy` connector tries to read leaky's token. Then every output of the
-- engine is searched for the token: stdout and stderr (debug level, with tracebacks), every
-- PostgreSQL table the runs wrote (audit, dp, silver), every bronze collection, every file under
-- DP_DATA_DIR (raw files, manifests, the store). Zero hits.
-- The variant with a REST source echoing the token in an HTTP error body is in
-- connectors_spec.lua ("rest with a secret").
local H = require "helpers"

local FIXTURES = H.root .. "/spec/fixtures/secrets"
local TOKEN = "tok/3xYz-LEAK-4242"   -- "/" is escaped by JSON encoders and URL encoding
local NEEDLE = "3xYz-LEAK-4242"      -- found in the raw, JSON-escaped and URL-encoded forms alike
local SPY_TOKEN = "spy-OWN-9876"

describe("secrets never leak", function()
  local env, pg
  local outputs = {}

  local function run(system)
    local rc, out, err = H.engine(env, "run", system)
    outputs[#outputs + 1] = out
    outputs[#outputs + 1] = err
    return rc, out, err
  end

  setup(function()
    env = H.fresh_env("secrets_leak", { metadata = FIXTURES .. "/metadata" })
    env.DP_SCRIPTS = FIXTURES .. "/scripts"
    env.DP_LOG_LEVEL = "debug"
    env.DP_SECRETS_DIR = env.DP_DATA_DIR .. "/no-secret-files"
    env.DP_MASTER_KEY_FILE = H.tmpdir("leak-key") .. "/master.key"
    env.DP_SECRET_SPY_TOKEN = SPY_TOKEN
    assert(H.sh(H.sh_quote(H.bin) .. " secrets gen-key > " .. H.sh_quote(env.DP_MASTER_KEY_FILE)) == 0)
    local parts = {}
    for k, v in pairs(env) do if k:match("^DP_") then parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end end
    local rc, out = H.sh("printf %s " .. H.sh_quote(TOKEN) .. " | env " .. table.concat(parts, " ") .. " "
      .. H.sh_quote(H.bin) .. " secrets set leak_token 2>&1")
    assert(rc == 0, out)
    pg = H.pg(env)
  end)
  teardown(function() if pg then pg:close() end end)

  it("runs a connector that leaks its token: the data flows, the token is redacted", function()
    local rc, out = run("leaky")
    assert.are.equal(1, rc) -- failing and cursor fail on purpose
    assert.matches("records%s+silver%s+succeeded", out)
    local notes = {}
    for _, r in ipairs(assert(pg:query('SELECT id, note FROM silver."leaky__records" ORDER BY id'))) do
      notes[#notes + 1] = r.note
    end
    assert.same({ "token is [redacted:leak_token]", "as sent: [redacted:leak_token]",
      "https://api.example/v1?t=[redacted:leak_token]", "clean" }, notes)
  end)

  it("names the secret, never the value, in the errors of failing entities", function()
    local rows = assert(pg:query([[SELECT entity, error FROM audit.entity_layer_run
      WHERE system = 'leaky' AND layer = 'raw' AND status = 'failed' ORDER BY entity]]))
    assert.equal(2, #rows)
    assert.equal("cursor", rows[1].entity)
    assert.matches('extract returned a cursor that contains the value of secret "leak_token"', rows[1].error, 1, true)
    assert.equal("failing", rows[2].entity)
    assert.matches("upstream answered 401: bad token [redacted:leak_token] ([redacted:leak_token])", rows[2].error, 1, true)
  end)

  it("refuses a connector reading another system's secret", function()
    local rc, out, err = run("spy")
    assert.are.equal(1, rc)
    local row = assert(pg:query([[SELECT status, error FROM audit.entity_layer_run
      WHERE system = 'spy' AND entity = 'stolen' AND layer = 'raw']]))[1]
    assert.equal("failed", row.status)
    assert.matches('ctx.secret: system "spy" does not reference a secret named "leak_token" in its metadata', row.error, 1, true)
    assert.matches("spy.lua:10:", row.error, 1, true)
    assert.matches("does not reference a secret named", out, 1, true)
    assert.matches("own token has 12 bytes", err, 1, true)
  end)

  it("fails a system whose secret is missing, naming the secret and the metadata path", function()
    local e = {}
    for k, v in pairs(env) do e[k] = v end
    e.DP_SECRET_SPY_TOKEN = nil
    local rc, out, err = H.engine(e, "run", "spy")
    outputs[#outputs + 1] = out
    outputs[#outputs + 1] = err
    assert.are.equal(1, rc)
    assert.matches('systems.json[1].token (system "spy"): secret "spy_token" was not found: no DP_SECRET_SPY_TOKEN '
      .. "in the environment, no file " .. env.DP_SECRETS_DIR .. "/spy_token, no secret of that name in the store", out, 1, true)
  end)

  it("leaves no trace of the token in any output", function()
    assert.is_true(#outputs >= 6)
    local places = {}
    local function check(where, text)
      places[#places + 1] = where
      if text and text:find(NEEDLE, 1, true) then error("the token leaked into " .. where .. ":\n" .. text, 2) end
    end
    -- the command line output, at debug level (Lua tracebacks included)
    for i, text in ipairs(outputs) do check("engine output " .. i, text) end
    assert.matches("[redacted:leak_token]", table.concat(outputs), 1, true)
    assert.matches("stack traceback", table.concat(outputs), 1, true)
    -- every table in every schema of the engine's database
    local tables = assert(pg:query([[SELECT table_schema || '.' || quote_ident(table_name) AS t
      FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
      AND table_type = 'BASE TABLE' ORDER BY 1]]))
    local seen = {}
    for _, r in ipairs(tables) do
      local rows = assert(pg:query("SELECT t::text AS row FROM " .. r.t .. " t"))
      local texts = {}
      for _, row in ipairs(rows) do texts[#texts + 1] = row.row end
      check("table " .. r.t, table.concat(texts, "\n"))
      seen[r.t] = #rows
    end
    assert.is_true(seen["audit.entity_layer_run"] > 0)
    assert.is_true(seen["audit.system_run"] > 0)
    assert.equal(4, seen['silver.leaky__records'])
    -- every bronze collection
    local m = H.mongo()
    local reply = H.cjson.decode((assert(m:command(env.DP_BRONZE_DB, '{"listCollections": 1, "nameOnly": true}'))))
    local ncoll = 0
    for _, c in ipairs(reply.cursor.firstBatch) do
      local docs = assert(m:find(env.DP_BRONZE_DB, c.name, "{}"))
      check("bronze collection " .. c.name, table.concat(docs, "\n"))
      ncoll = ncoll + 1
    end
    m:close()
    assert.is_true(ncoll >= 1)
    -- every file under the data folder: raw files, manifests, the store
    local _, files = H.sh("find " .. H.sh_quote(env.DP_DATA_DIR) .. " -type f")
    local nraw = 0
    for path in files:gmatch("[^\n]+") do
      check(path, H.read_file(path))
      if path:match("%.jsonl$") then nraw = nraw + 1 end
    end
    assert.is_true(nraw >= 1)
    assert.matches("[redacted:leak_token]", H.read_file((files:match("[^\n]*/records/[^\n]*%.jsonl"))), 1, true)
    -- the store holds it, encrypted
    assert.matches("secrets.enc", files, 1, true)
    -- and the spy's own token, read through the environment, did not leak either
    for i, text in ipairs(outputs) do assert.is_nil(text:find(SPY_TOKEN, 1, true), "engine output " .. i) end
  end)
end)

-- A source that echoes the bearer token back in every JSON encoding (spec/http_server.py,
-- /echo_token): ensure_ascii escapes (T\u00f6ken), every character escaped (\u0054...), "\/",
-- a mix of raw bytes and escapes, upper-case hex, surrogate pairs, the token as an object key,
-- JSON inside a JSON string (escaped twice), deep in an array, URL-encoded with lower-case hex,
-- and in a value silver rejects. No layer may hold the token in any of these forms, nor decoded.
describe("secrets echoed by a source in every JSON encoding", function()
  local ECHO = "T\195\182ken-ECHO/7731-\240\159\148\145" -- "Töken-ECHO/7731-" and a key emoji
  local server, env, pg
  local outputs = {}

  -- text with JSON escapes (\uXXXX, surrogate pairs, \/ ...) and %XX decoded, four times over
  local utf8_char = require("dp.jsonreader").utf8_char
  local SIMPLE = { ["/"] = "/", ['"'] = '"', ["\\"] = "\\", n = "\n", t = "\t", r = "\r", b = "\b", f = "\f" }
  local function decoded(s)
    for _ = 1, 4 do
      s = s:gsub("\\[uU](%x%x%x%x)\\[uU](%x%x%x%x)", function(a, b)
        local hi, lo = tonumber(a, 16), tonumber(b, 16)
        if hi >= 0xD800 and hi < 0xDC00 and lo >= 0xDC00 and lo < 0xE000 then
          return utf8_char(0x10000 + (hi - 0xD800) * 1024 + (lo - 0xDC00))
        end
      end)
      s = s:gsub("\\[uU](%x%x%x%x)", function(h) return utf8_char(tonumber(h, 16)) end)
      s = s:gsub("\\(.)", SIMPLE)
      s = s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    end
    return s
  end

  local function check(where, text)
    if not text then return end
    for _, needle in ipairs({ "ECHO", "T\\u00f6ken", "T\\u00F6ken", "\\u0054\\u00f6", "\\ud83d\\udd11", "%c3%b6ken" }) do
      if text:find(needle, 1, true) then error("the token leaked into " .. where .. " (" .. needle .. "):\n" .. text, 2) end
    end
    local d = decoded(text)
    if d:find("ECHO", 1, true) or d:find(ECHO, 1, true) or d:find("\240\159\148\145", 1, true) then
      error("the token leaked (escaped) into " .. where .. ":\n" .. text, 2)
    end
  end

  setup(function()
    server = H.http_server()
    local meta = H.tmpdir("echo-meta")
    H.write_file(meta .. "/systems.json", H.cjson.encode({ { name = "echo", type = "rest", base_url = server.url,
      retry = { max_attempts = 1 }, auth = { type = "bearer", token = { secret = "echo_token" } } } }))
    H.write_file(meta .. "/entities.json", H.cjson.encode({ { name = "records", system = "echo", primary_key = { "id" },
      source = { path = "/echo_token", record_selector = "items" },
      columns = { { name = "id", type = "bigint" }, { name = "how", type = "text" }, { name = "note", type = "text" },
        { name = "extra", type = "json" }, { name = "n", type = "integer" } } } }))
    env = H.fresh_env("secrets_echo", { metadata = meta })
    env.DP_LOG_LEVEL = "debug"
    env.DP_SECRETS_DIR = env.DP_DATA_DIR .. "/no-secret-files"
    env.DP_SECRET_ECHO_TOKEN = ECHO
    pg = H.pg(env)
  end)
  teardown(function()
    if pg then pg:close() end
    if server then server.stop() end
  end)

  it("loads the records with the token redacted wherever it was, however it was encoded", function()
    local rc, out, err = H.engine(env, "run", "echo")
    outputs[#outputs + 1], outputs[#outputs + 2] = out, err
    assert.equal(0, rc, out .. err)
    -- the server saw the real token: the connector did authenticate with it
    local seen = server.requests() -- header bytes as latin-1 characters: back to bytes
    local header = seen[#seen].headers.authorization:gsub("([\194\195])([\128-\191])", function(a, b)
      return string.char((a:byte() - 0xC0) * 64 + (b:byte() - 0x80))
    end)
    assert.equal("Bearer " .. ECHO, header)
    local rows = assert(pg:query([[SELECT id, how, note, extra::text AS extra FROM silver.echo__records
      WHERE _dp_is_current ORDER BY id]]))
    local R = "[redacted:echo_token]"
    local by_id = {}
    for _, r in ipairs(rows) do by_id[tonumber(r.id)] = r end
    for _, id in ipairs({ 1, 2, 3, 4, 5, 9 }) do assert.equal(R, by_id[id].note, by_id[id].how) end
    assert.equal('{"' .. R .. '": true}', by_id[6].extra)
    assert.equal('{"a": [{"b": ["x", "' .. R .. '"]}]}', by_id[8].extra)
    assert.equal("https://api.example/v1?t=" .. R, by_id[11].note)
    assert.equal("nothing secret", by_id[12].note)
    assert.matches(R, by_id[7].note, 1, true)
    assert.is_nil(by_id[10])
    local rej = assert(pg:query('SELECT column_name, value FROM silver."echo__records__rejected"'))
    assert.same({ { column_name = "n", value = '"' .. R .. '"' } }, rej)
    assert.matches("held the value of secret \"echo_token\"", err, 1, true)
  end)

  it("leaves the token in none of its encodings in any layer, log or file", function()
    assert.equal(2, #outputs)
    for i, text in ipairs(outputs) do check("engine output " .. i, text) end
    local tables = assert(pg:query([[SELECT table_schema || '.' || quote_ident(table_name) AS t
      FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
      AND table_type = 'BASE TABLE' ORDER BY 1]]))
    local seen = {}
    for _, r in ipairs(tables) do
      local rows = assert(pg:query("SELECT t::text AS row FROM " .. r.t .. " t"))
      local texts = {}
      for _, row in ipairs(rows) do texts[#texts + 1] = row.row end
      check("table " .. r.t, table.concat(texts, "\n"))
      seen[r.t] = #rows
    end
    assert.equal(11, seen["silver.echo__records"])
    assert.equal(1, seen["silver.echo__records__rejected"])
    assert.is_true(seen["audit.entity_layer_run"] >= 3)
    local m = H.mongo()
    local reply = H.cjson.decode((assert(m:command(env.DP_BRONZE_DB, '{"listCollections": 1, "nameOnly": true}'))))
    local ndocs = 0
    for _, c in ipairs(reply.cursor.firstBatch) do
      local docs = assert(m:find(env.DP_BRONZE_DB, c.name, "{}"))
      check("bronze collection " .. c.name, table.concat(docs, "\n"))
      ndocs = ndocs + #docs
    end
    m:close()
    assert.is_true(ndocs >= 12)
    local _, files = H.sh("find " .. H.sh_quote(env.DP_DATA_DIR) .. " -type f")
    local nraw = 0
    for path in files:gmatch("[^\n]+") do
      local text = H.read_file(path)
      check(path, text)
      if path:match("%.jsonl$") then
        nraw = nraw + 1
        local n = 0
        for line in text:gmatch("[^\n]+") do
          n = n + 1
          assert(H.cjson.decode(line), "raw line " .. n .. " is no longer JSON: " .. line)
        end
        assert.equal(12, n)
      end
    end
    assert.equal(1, nraw)
  end)
end)
