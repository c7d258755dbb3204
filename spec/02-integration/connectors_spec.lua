-- Connectors through whole runs of build/dp-engine: the rest connector against the HTTP test
-- server (exact numbers into silver, retries, a failed extraction that writes nothing and keeps
-- the cursor, the resume), the file connector (CSV into typed silver, archiving only after the
-- commit), and the sandbox refusing a connector that reaches for os.execute or io.
local H = require "helpers"
local cjson = H.cjson

local function write_json(path, v)
  H.write_file(path, cjson.encode(v))
end

describe("connectors in whole runs", function()
  local server, env, pg, meta

  setup(function()
    server = H.http_server()
    meta = H.tmpdir("connectors-meta")
    write_json(meta .. "/systems.json", {
      { name = "api", type = "rest", base_url = server.url,
        retry = { max_attempts = 2, backoff_seconds = 0.001, max_backoff_seconds = 0.01 },
        timeout = { connect_seconds = 2, total_seconds = 5 } },
      { name = "drop", type = "file", inbox = "inbox/drop", archive = "archive/drop" },
      { name = "vault", type = "rest", base_url = server.url, retry = { max_attempts = 1 },
        auth = { type = "bearer", token = { secret = "spec_api_token" } } },
    })
    write_json(meta .. "/entities.json", {
      { name = "numbers", system = "api", primary_key = { "id" },
        source = { path = "/numbers", record_selector = "records" },
        columns = {
          { name = "id", type = "bigint" },
          { name = "amount", type = "decimal", precision = 38, scale = 8 },
          { name = "amount_text", type = "text", path = "amount" },
          { name = "big", type = "bigint" },
          { name = "neg", type = "bigint" },
        } },
      { name = "events", system = "api", load_type = "delta", primary_key = { "id" },
        source = { path = "/events", record_selector = "events", paginator = { type = "page_number" },
          incremental = { cursor_path = "updated_at", param = "since", initial_value = "2024-01-01T00:00:00Z" } },
        columns = {
          { name = "id", type = "bigint" },
          { name = "kind", type = "string", length = 10 },
          { name = "updated_at", type = "timestamp" },
        } },
      { name = "flaky", system = "api", primary_key = { "id" },
        source = { path = "/status/429", params = { retry_after = 0 }, record_selector = "items" },
        columns = { { name = "id", type = "bigint" }, { name = "calls", type = "integer" } } },
      { name = "whoami", system = "vault", primary_key = { "id" },
        source = { path = "/auth/bearer" },
        columns = { { name = "id", type = "bigint" }, { name = "auth", type = "text" } } },
      { name = "leak", system = "vault", primary_key = { "id" },
        source = { path = "/status/403", params = { times = 99, echo = 1 } },
        columns = { { name = "id", type = "bigint" } } },
      { name = "cards", system = "drop", primary_key = { "id" },
        source = { pattern = "cards-*.csv" },
        columns = {
          { name = "id", type = "integer" },
          { name = "amount", type = "decimal", precision = 10, scale = 2 },
          { name = "booked_on", type = "date" },
          { name = "note", type = "text" },
        } },
      { name = "strict", system = "drop", primary_key = { "id" }, on_type_error = "fail",
        source = { pattern = "strict-*.jsonl" },
        columns = { { name = "id", type = "integer" }, { name = "n", type = "integer" } } },
    })
    env = H.fresh_env("connectors", { metadata = meta })
    pg = H.pg(env)
  end)

  teardown(function()
    if pg then pg:close() end
    server.stop()
  end)

  local function run(...)
    return H.engine(env, "run", ...)
  end

  local function last_run()
    return assert(pg:query("SELECT run_id, status FROM audit.system_run ORDER BY started_at DESC LIMIT 1"))[1]
  end

  local function entity_error(run_id, entity, layer)
    return assert(pg:query("SELECT status, error FROM audit.entity_layer_run WHERE run_id = $1 AND entity = $2 AND layer = $3",
      run_id, entity, layer))[1]
  end

  local function cursor(system, entity)
    local r = assert(pg:query("SELECT cursor FROM dp.entity_cursor WHERE system = $1 AND entity = $2", system, entity))[1]
    return r and r.cursor
  end

  describe("rest", function()
    it("keeps 9007199254740993 and a 30-digit decimal string exact from the source to silver", function()
      local rc, _, err = run("api", "--entity", "numbers")
      assert.equal(0, rc, err)
      local rows = assert(pg:query("SELECT id::text, amount::text, amount_text, big::text, neg::text FROM silver.api__numbers"))
      assert.same({ { id = "9007199254740993", amount = "1234567890123456789012.12345678",
        amount_text = "1234567890123456789012.12345678", big = "9223372036854775807", neg = "-9223372036854775808" } }, rows)
      -- and in raw, the line is the source's text
      local doc = H.bronze_docs(env, "api__numbers")[1]
      local raw = H.read_file(env.DP_DATA_DIR .. "/" .. doc._dp.raw.file)
      assert.equal('{"id":9007199254740993,"amount":"1234567890123456789012.12345678","big":9223372036854775807,'
        .. '"neg":-9223372036854775808,"ratio":0.1}\n', raw)
    end)

    it("waits out a 429 with Retry-After and succeeds", function()
      local rc, _, err = run("api", "--entity", "flaky")
      assert.equal(0, rc, err)
      assert.same({ { id = "1", calls = "2" } }, assert(pg:query("SELECT id, calls FROM silver.api__flaky")))
    end)

    it("commits the cursor of an incremental entity with its silver merge", function()
      server.reset()
      local rc, _, err = run("api", "--entity", "events")
      assert.equal(0, rc, err)
      assert.equal("2024-01-03T00:00:00Z", cursor("api", "events"))
      assert.equal("page=1&since=2024-01-01T00%3A00%3A00Z", server.requests()[1].query)
      assert.equal("3", assert(pg:query("SELECT count(*) AS n FROM silver.api__events"))[1].n)
    end)

    it("a failed extraction writes nothing to raw, bronze or silver and keeps the cursor", function()
      server.state({ fail_page = 2, events = {
        { id = 1, kind = "a", updated_at = "2024-01-01T00:00:00Z" },
        { id = 2, kind = "b", updated_at = "2024-01-02T00:00:00Z" },
        { id = 3, kind = "c2", updated_at = "2024-01-03T00:00:00Z" },
        { id = 4, kind = "d", updated_at = "2024-01-04T00:00:00Z" },
        { id = 5, kind = "e", updated_at = "2024-01-05T00:00:00Z" },
      } })
      local rc, _, err = run("api", "--entity", "events")
      assert.equal(1, rc)
      assert.matches("GET " .. server.url .. "/events?page=2&since=2024-01-03T00%3A00%3A00Z: HTTP 500 Internal Server Error (2 attempts", err, 1, true)
      local r = last_run()
      local raw = entity_error(r.run_id, "events", "raw")
      assert.equal("failed", raw.status)
      assert.matches("HTTP 500 Internal Server Error", raw.error, 1, true)
      assert.equal("skipped", entity_error(r.run_id, "events", "bronze").status)
      assert.equal("2024-01-03T00:00:00Z", cursor("api", "events"))
      -- page 1 (events 3 and 4) was extracted before page 2 failed: none of it is kept
      local docs = H.bronze_docs(env, "api__events", "id")
      assert.equal(3, #docs)
      assert.same({ { n = "3", kinds = "a,b,c" } },
        assert(pg:query("SELECT count(*) AS n, string_agg(kind, ',' ORDER BY id) AS kinds FROM silver.api__events")))
      local _, files = H.sh("find " .. H.sh_quote(env.DP_DATA_DIR .. "/raw/api/events") .. " -name '" .. r.run_id .. "*'")
      assert.equal("", files)
    end)

    it("the next run resumes from the last committed cursor", function()
      server.reset()
      server.state({ events = {
        { id = 3, kind = "c2", updated_at = "2024-01-03T00:00:00Z" },
        { id = 4, kind = "d", updated_at = "2024-01-04T00:00:00Z" },
        { id = 5, kind = "e", updated_at = "2024-01-05T00:00:00Z" },
      } })
      local rc, _, err = run("api", "--entity", "events")
      assert.equal(0, rc, err)
      assert.equal("page=1&since=2024-01-03T00%3A00%3A00Z", server.requests()[1].query)
      assert.equal("2024-01-05T00:00:00Z", cursor("api", "events"))
      assert.same({ { kinds = "a,b,c2,d,e" } },
        assert(pg:query("SELECT string_agg(kind, ',' ORDER BY id) AS kinds FROM silver.api__events WHERE _dp_is_current")))
    end)
  end)

  describe("rest with a secret", function()
    it("authenticates with the secret's value and never writes it anywhere", function()
      local e2 = {}
      for k, v in pairs(env) do e2[k] = v end
      e2.DP_SECRET_SPEC_API_TOKEN = "tok-123"
      e2.DP_LOG_LEVEL = "debug"
      local rc, out, err = H.engine(e2, "run", "vault", "--entity", "whoami")
      assert.equal(0, rc, err)
      assert.same({ { id = "1", auth = "bearer" } }, assert(pg:query("SELECT id, auth FROM silver.vault__whoami")))
      -- a server that echoes the token in an error page
      local rc2, out2, err2 = H.engine(e2, "run", "vault", "--entity", "leak")
      assert.equal(1, rc2)
      local r = last_run()
      local e = entity_error(r.run_id, "leak", "raw")
      assert.matches("HTTP 403 Forbidden", e.error, 1, true)
      for _, text in ipairs({ out, err, out2, err2, e.error }) do
        assert.is_nil(text:find("tok-123", 1, true), text)
      end
      local _, grep = H.sh("grep -rl tok-123 " .. H.sh_quote(env.DP_DATA_DIR) .. " 2>/dev/null")
      assert.equal("", grep)
    end)
  end)

  describe("file", function()
    local inbox, archive
    setup(function()
      inbox = env.DP_DATA_DIR .. "/inbox/drop"
      archive = env.DP_DATA_DIR .. "/archive/drop"
    end)

    local function listing(dir)
      local names = H.core.listdir(dir) or {}
      table.sort(names)
      return names
    end

    it("loads CSV into typed silver columns and archives the file after the commit", function()
      H.write_export(inbox .. "/cards-2026-10.csv",
        "id,amount,booked_on,note\r\n1,12.30,2026-10-01,coffee\r\n2,-5,2026-10-02,\r\n3,\"1,000.00\",2026-10-03,\"multi\r\nline\"\r\n")
      local rc, out, err = run("drop", "--entity", "cards")
      assert.equal(0, rc, err)
      assert.matches("cards%s+silver%s+succeeded%s+3%s+2", out)
      local rows = assert(pg:query("SELECT id, amount::text, booked_on::text, note FROM silver.drop__cards WHERE _dp_is_current ORDER BY id"))
      assert.same({ { id = "1", amount = "12.30", booked_on = "2026-10-01", note = "coffee" },
        { id = "2", amount = "-5.00", booked_on = "2026-10-02" } }, rows)
      local rej = assert(pg:query("SELECT column_name, value FROM silver.drop__cards__rejected"))
      assert.same({ { column_name = "amount", value = '"1,000.00"' } }, rej)
      assert.same({}, listing(inbox))
      assert.same({ "cards-2026-10.csv" }, listing(archive))
    end)

    it("does not archive when the run fails, nor when it stops before silver", function()
      H.write_export(inbox .. "/strict-1.jsonl", '{"id": 1, "n": 1}\n{"id": 2, "n": "two"}\n')
      local rc = run("drop", "--entity", "strict")
      assert.equal(1, rc)
      assert.equal("failed", entity_error(last_run().run_id, "strict", "silver").status)
      assert.same({ "strict-1.jsonl" }, listing(inbox))
      assert.same({ "cards-2026-10.csv" }, listing(archive))

      H.write_export(inbox .. "/strict-1.jsonl", '{"id": 1, "n": 1}\n{"id": 2, "n": 2}\n')
      rc = run("drop", "--entity", "strict", "--layer", "raw", "--layer", "bronze")
      assert.equal(0, rc)
      assert.same({ "strict-1.jsonl" }, listing(inbox))

      rc = run("drop", "--entity", "strict")
      assert.equal(0, rc)
      assert.same({}, listing(inbox))
      assert.same({ "cards-2026-10.csv", "strict-1.jsonl" }, listing(archive))
    end)
  end)

  describe("sandbox", function()
    it("a connector that calls os.execute or opens /etc/passwd fails with a clear error", function()
      local scripts = H.tmpdir("evil")
      local marker = scripts .. "/pwned"
      H.write_file(scripts .. "/connectors/evil.lua", [[
return {
  entity_schema = { fields = { { action = { type = "string", required = true } } } },
  extract = function(ctx)
    if ctx.entity.source.action == "execute" then
      os.execute("touch ]] .. marker .. [[")
    else
      return io.open("/etc/passwd"):read("*a")
    end
  end,
}
]])
      local m = H.tmpdir("evil-meta")
      write_json(m .. "/systems.json", { { name = "evil", type = "evil" } })
      write_json(m .. "/entities.json", {
        { name = "exec", system = "evil", source = { action = "execute" }, columns = { { name = "id", type = "integer" } } },
        { name = "passwd", system = "evil", source = { action = "read" }, columns = { { name = "id", type = "integer" } } },
      })
      local e2 = {}
      for k, v in pairs(env) do e2[k] = v end
      e2.DP_METADATA, e2.DP_SCRIPTS = m, scripts
      local rc, _, err = H.engine(e2, "run", "evil")
      assert.equal(1, rc)
      local r = last_run()
      assert.equal(scripts .. "/connectors/evil.lua:5: os.execute is not available to scripts (allowed: os.time, os.date, os.clock)",
        entity_error(r.run_id, "exec", "raw").error)
      assert.equal(scripts .. "/connectors/evil.lua:7: undefined global 'io' (scripts have no io: connectors read their inbox with ctx.files)",
        entity_error(r.run_id, "passwd", "raw").error)
      assert.matches("os.execute is not available to scripts", err, 1, true)
      assert.is_false(H.exists(marker))
    end)
  end)
end)
