-- connectors/rest.lua through engine.extract, against the HTTP test server on loopback
-- (spec/http_server.py): paginators, auth, incremental parameters, parent/child, errors.
local cjson = require "cjson"
local http = require "dp.http"

local H = require "helpers"

describe("rest connector", function()
  local engine, server, data

  setup(function()
    engine = require "dp.engine"
    server = H.http_server()
    data = H.tmpdir("rest")
  end)
  teardown(function()
    server.stop()
    os.execute("rm -rf '" .. data .. "'")
  end)
  before_each(function()
    engine.configure { scripts_dir = ".", data_dir = data }
    server.reset()
    http.reset_state()
  end)

  local FAST = { max_attempts = 3, backoff_seconds = 0.001, max_backoff_seconds = 0.01, max_wait_seconds = 5 }

  -- Loads metadata (system fields merged over a test system; entities: source tables or full
  -- entities) and runs one entity. Returns cursor, records, logs.
  local function run(sys, entities, opts)
    opts = opts or {}
    local system = { name = "api", type = "rest", base_url = server.url, retry = FAST }
    for k, v in pairs(sys or {}) do system[k] = v end
    local list = {}
    for i, e in ipairs(entities) do
      if e.source == nil then e = { source = e } end
      local ent = { name = "e" .. i, system = "api", columns = { { name = "id", type = "bigint" } } }
      for k, v in pairs(e) do ent[k] = v end
      list[i] = ent
    end
    local meta, errs = engine.load_metadata_texts({
      ["systems.json"] = cjson.encode({ system }), ["entities.json"] = cjson.encode(list),
    })
    assert(meta, errs and table.concat(errs, "\n"))
    local records, logs = {}, {}
    local cursor = engine.extract(meta, "api", opts.entity or list[#list].name, opts.cursor, function(batch)
      for _, r in ipairs(batch) do records[#records + 1] = r end
    end, function(level, msg) logs[#logs + 1] = level .. ": " .. msg end)
    return cursor, records, logs
  end

  local function run_error(...)
    local ok, err = pcall(run, ...)
    assert.is_false(ok)
    return tostring(err)
  end

  local function validation_errors(sys, source)
    local system = { name = "api", type = "rest", base_url = server.url }
    for k, v in pairs(sys or {}) do system[k] = v end
    local _, errs = engine.load_metadata_texts({
      ["systems.json"] = cjson.encode({ system }),
      ["entities.json"] = cjson.encode({ { name = "e", system = "api", source = source or { path = "/x" },
        columns = { { name = "id", type = "bigint" } } } }),
    })
    return errs
  end

  local function ids(records)
    local out = {}
    for i, r in ipairs(records) do out[i] = cjson.decode(r).id end
    return out
  end

  local function queries(path)
    local out = {}
    for _, r in ipairs(server.requests()) do
      if r.path == path then out[#out + 1] = r.query end
    end
    return out
  end

  local ALL = { 1, 2, 3, 4, 5, 6, 7 }

  describe("paginators", function()
    it("single_page (the default) reads one response; the whole body is the record list", function()
      local _, records = run(nil, { { path = "/single/items" } })
      assert.same(ALL, ids(records))
      assert.same({ '{"id":1,"name":"item-1"}' }, { records[1] })
      assert.same({ "" }, queries("/single/items"))
    end)

    it("offset: stops when the total is reached", function()
      local _, records = run(nil, { { path = "/offset/items", record_selector = "items",
        paginator = { type = "offset", limit = 3, total_path = "total" } } })
      assert.same(ALL, ids(records))
      assert.same({ "limit=3&offset=0", "limit=3&offset=3", "limit=3&offset=6" }, queries("/offset/items"))
    end)

    it("offset: without a total, stops at the first empty page (or a short one when asked)", function()
      local _, records = run(nil, { { path = "/offset/items", params = { nototal = 1 }, record_selector = "items",
        paginator = { type = "offset", limit = 3, offset_param = "offset", limit_param = "limit" } } })
      assert.same(ALL, ids(records))
      assert.equal(4, #queries("/offset/items"))
      server.reset()
      run(nil, { { path = "/offset/items", params = { nototal = 1 }, record_selector = "items",
        paginator = { type = "offset", limit = 3, stop_on_short_page = true } } })
      assert.equal(3, #queries("/offset/items"))
    end)

    it("page_number: stops at the page count in the body", function()
      local _, records = run(nil, { { path = "/page/items", record_selector = "data",
        paginator = { type = "page_number", page_size = 3, size_param = "per_page", total_pages_path = "meta.total_pages" } } })
      assert.same(ALL, ids(records))
      assert.same({ "page=1&per_page=3", "page=2&per_page=3", "page=3&per_page=3" }, queries("/page/items"))
    end)

    it("page_number: without a page count, stops at the first empty page", function()
      local _, records = run(nil, { { path = "/page/items", params = { per_page = 4 }, record_selector = "data",
        paginator = { type = "page_number" } } })
      assert.same(ALL, ids(records))
      assert.same({ "page=1&per_page=4", "page=2&per_page=4", "page=3&per_page=4" }, queries("/page/items"))
    end)

    it("cursor: sends the next token from the body until it is null", function()
      local _, records = run(nil, { { path = "/cursor/items", record_selector = "results",
        paginator = { type = "cursor", cursor_path = "paging.next", cursor_param = "cursor" } } })
      assert.same(ALL, ids(records))
      assert.same({ "", "cursor=t3", "cursor=t6" }, queries("/cursor/items"))
    end)

    it("next_url: follows absolute and relative next links, without resending the params", function()
      local _, records = run(nil, { { path = "/next_url/items", params = { p = 1 }, record_selector = "items",
        paginator = { type = "next_url", next_url_path = "links.next" } } })
      assert.same(ALL, ids(records))
      assert.same({ "p=1", "p=2", "p=3" }, queries("/next_url/items"))
      server.reset()
      _, records = run(nil, { { path = "/next_url/items", params = { relative = 1 }, record_selector = "items",
        paginator = { type = "next_url", next_url_path = "links.next" } } })
      assert.same(ALL, ids(records))
      assert.same({ "relative=1", "p=2&relative=1", "p=3&relative=1" }, queries("/next_url/items"))
    end)

    it("link_header: follows rel=\"next\" in the Link header", function()
      local _, records = run(nil, { { path = "/link/items", params = { per_page = 3 }, paginator = { type = "link_header" } } })
      assert.same(ALL, ids(records))
      assert.same({ "per_page=3", "page=2&per_page=3", "page=3&per_page=3" }, queries("/link/items"))
    end)

    it("max_pages stops early with a warning", function()
      local _, records, logs = run(nil, { { path = "/link/items", paginator = { type = "link_header", max_pages = 2 } } })
      assert.same({ 1, 2, 3, 4, 5, 6 }, ids(records))
      local warned = false
      for _, l in ipairs(logs) do warned = warned or l:match("^warn: .*stopping after max_pages = 2") ~= nil end
      assert.is_true(warned)
    end)

    it("a next token or link that repeats fails instead of looping", function()
      local err = run_error(nil, { { path = "/page/items", record_selector = "data",
        paginator = { type = "cursor", cursor_path = "meta.total_pages", cursor_param = "x" } } })
      assert.equal("GET " .. server.url .. '/page/items?x=3: the next-page token at "meta.total_pages" is "3" again: '
        .. "stopping instead of looping", err)
      err = run_error(nil, { { path = "/link/items", paginator = { type = "link_header", rel = "last" } } })
      assert.equal("GET " .. server.url .. "/link/items?page=3&per_page=3: the next page is \""
        .. server.url .. "/link/items?page=3&per_page=3\" again: stopping instead of looping", err)
    end)
  end)

  describe("records", function()
    it("keeps the source text of each record exactly (big integers, decimals)", function()
      local _, records = run(nil, { { path = "/numbers", record_selector = "records" } })
      assert.same({ '{"id":9007199254740993,"amount":"1234567890123456789012.12345678","big":9223372036854775807,'
        .. '"neg":-9223372036854775808,"ratio":0.1}' }, records)
    end)

    it("fails on malformed JSON, naming the URL and the byte", function()
      assert.equal("GET " .. server.url .. "/malformed: invalid JSON at byte 32: expected a string key",
        run_error(nil, { { path = "/malformed", record_selector = "items" } }))
    end)

    it("fails when the record selector is not in the response", function()
      local err = run_error(nil, { { path = "/offset/items", record_selector = "data.items" } })
      assert.equal("GET " .. server.url .. '/offset/items: record_selector "data.items" is not in the response: '
        .. '{"items": [{"id": 1, "name": "item-1"}', err:sub(1, #server.url + 110))
    end)

    it("fails on records that are not objects", function()
      assert.equal("GET " .. server.url .. '/offset/items: the value at "total" is a number, not an array or object of records',
        run_error(nil, { { path = "/offset/items", record_selector = "total" } }))
      assert.equal("GET " .. server.url .. '/scalars: record 2 at record_selector "" is not a JSON object: 2',
        run_error(nil, { { path = "/scalars" } }))
    end)

    it("an object at the selector is one record", function()
      local _, records = run(nil, { { path = "/page/items", record_selector = "meta" } })
      assert.same({ '{"total_pages":3}' }, records)
    end)
  end)

  describe("auth", function()
    local function authed(auth, path)
      local _, records = run({ auth = auth }, { { path = path } })
      return cjson.decode(records[1]).auth
    end

    it("none, bearer, basic, api_key in a header or the query", function()
      assert.equal(401, (select(2, pcall(run, nil, { { path = "/auth/bearer" } })):match("HTTP (%d+)") + 0))
      assert.equal("bearer", authed({ type = "bearer", token = "tok-123" }, "/auth/bearer"))
      assert.equal("basic", authed({ type = "basic", username = "alice", password = "s3cret" }, "/auth/basic"))
      assert.equal("header", authed({ type = "api_key", name = "X-Api-Key", value = "key-456" }, "/auth/header"))
      assert.equal("query", authed({ type = "api_key", name = "api_key", value = "key-456", ["in"] = "query" }, "/auth/query"))
    end)

    it("oauth2 with a refresh token and with client credentials", function()
      local base = { type = "oauth2", token_url = server.url .. "/oauth/token", client_id = "cid", client_secret = "csecret" }
      local a = { refresh_token = "rt-1" }
      for k, v in pairs(base) do a[k] = v end
      assert.equal("oauth", authed(a, "/auth/oauth"))
      http.reset_state()
      local b = { grant_type = "client_credentials", client_auth = "basic" }
      for k, v in pairs(base) do b[k] = v end
      assert.equal("oauth", authed(b, "/auth/oauth"))
      assert.equal(2, #queries("/oauth/token"))
    end)

    it("a secret reference that cannot be found fails before any request, naming it", function()
      local err = run_error({ auth = { type = "bearer", token = { secret = "spec_missing_token" } } }, { { path = "/auth/bearer" } })
      assert.matches('^systems.json%[0%].auth.token %(system "api"%): secret "spec_missing_token" was not found', err)
      assert.same({}, server.requests())
    end)

    it("are validated with the system", function()
      assert.same({
        'systems.json[0].auth.refresh_token: required when grant_type is "refresh_token"',
      }, validation_errors({ auth = { type = "oauth2", token_url = "https://x/token", client_id = "c" } }))
      assert.same({
        'systems.json[0].auth.type: "digest" is not one of api_key, basic, bearer, none, oauth2',
      }, validation_errors({ auth = { type = "digest" } }))
      assert.same({
        'systems.json[0].base_url: "ftp://x" is not an http:// or https:// URL',
        'systems.json[0].auth.in: "cookie" is not one of header, query',
      }, validation_errors({ base_url = "ftp://x", auth = { type = "api_key", name = "k", value = "v", ["in"] = "cookie" } }))
    end)
  end)

  describe("incremental", function()
    local events = { path = "/events", record_selector = "events", paginator = { type = "page_number" },
      incremental = { cursor_path = "updated_at", param = "since", initial_value = "2024-01-02T00:00:00Z" } }

    it("sends the initial value on the first run and returns the largest cursor value", function()
      local cursor, records = run(nil, { { load_type = "delta", source = events } })
      assert.equal("2024-01-03T00:00:00Z", cursor)
      assert.same({ 2, 3 }, ids(records))
      assert.same({ "page=1&since=2024-01-02T00%3A00%3A00Z", "page=2&since=2024-01-02T00%3A00%3A00Z" }, queries("/events"))
    end)

    it("sends the committed cursor on the next run; with nothing new the cursor stays", function()
      local cursor, records = run(nil, { { load_type = "delta", source = events } }, { cursor = "2024-01-03T00:00:00Z" })
      assert.equal("2024-01-03T00:00:00Z", cursor)
      assert.same({ 3 }, ids(records))
      assert.equal("page=1&since=2024-01-03T00%3A00%3A00Z", queries("/events")[1])
      cursor, records = run(nil, { { load_type = "delta", source = events } }, { cursor = "2025-01-01T00:00:00Z" })
      assert.equal("2025-01-01T00:00:00Z", cursor)
      assert.same({}, records)
    end)

    it("compares integer cursors exactly, also as strings", function()
      server.state({ events = {
        { id = 1, updated_at = "9007199254740993" }, { id = 2, updated_at = "9007199254740992" },
        { id = 3, updated_at = "10" },
      } })
      local src = { path = "/events", record_selector = "events", params = { per_page = 10 },
        incremental = { cursor_path = "updated_at", param = "since" } }
      local cursor = run(nil, { { load_type = "delta", source = src } })
      assert.equal("9007199254740993", cursor)
    end)

    it("can send the cursor as unix seconds, or in a header", function()
      local src = { path = "/echo", record_selector = "",
        incremental = { cursor_path = "nope", param = "after", send_as = "unix_seconds" } }
      run(nil, { { load_type = "delta", source = src } }, { cursor = "2024-01-01T01:00:00+01:00" })
      assert.equal("after=1704067200", queries("/echo")[1])
      src.incremental = { cursor_path = "nope", param = "X-Since", ["in"] = "header" }
      server.reset()
      local _, records = run(nil, { { load_type = "delta", source = src } }, { cursor = "c1" })
      assert.equal("c1", cjson.decode(records[1]).headers["x-since"])
    end)

    it("takes the cursor path from the entity's cursor column when not given", function()
      local src = { path = "/events", record_selector = "events", params = { per_page = 10 },
        incremental = { param = "since" } }
      local cursor = run(nil, { { load_type = "delta", cursor = "changed", source = src,
        columns = { { name = "id", type = "bigint" }, { name = "changed", type = "timestamp", path = "updated_at" } } } })
      assert.equal("2024-01-03T00:00:00Z", cursor)
      assert.equal('source.incremental needs "cursor_path", or a "cursor" column on the entity',
        run_error(nil, { { load_type = "delta", source = src } }))
    end)

    it("needs a delta load", function()
      assert.equal('source.incremental needs "load_type": "delta" (entity "e1" is a full load)',
        run_error(nil, { { source = events } }))
    end)
  end)

  describe("parent and child", function()
    local repos = { name = "repos", enabled = false, source = { path = "/repos" } }
    local commits = { name = "commits", load_type = "delta", columns = { { name = "sha", type = "text" } },
      source = { parent = "repos", path = "/repos/{parent.full_name}/commits", paginator = { type = "page_number" },
        include_from_parent = { repo = "full_name", repo_id = "id" }, ignore_status = { 409 },
        incremental = { cursor_path = "commit.committer.date", param = "since" } } }

    it("reads the child endpoint for each parent record, copying parent fields in", function()
      local cursor, records = run(nil, { repos, commits })
      assert.equal("2024-02-03T00:00:00Z", cursor)
      assert.same({
        '{"repo":"octo/a","repo_id":1,"sha":"a1","commit":{"committer":{"date":"2024-02-01T00:00:00Z"}}}',
        '{"repo":"octo/a","repo_id":1,"sha":"a2","commit":{"committer":{"date":"2024-02-03T00:00:00Z"}}}',
        '{"repo":"octo/b","repo_id":2,"sha":"b1","commit":{"committer":{"date":"2024-02-02T00:00:00Z"}}}',
      }, records)
      local paths = {}
      for _, r in ipairs(server.requests()) do paths[#paths + 1] = r.path .. "?" .. r.query end
      assert.same({ "/repos?", "/repos/octo/a/commits?page=1", "/repos/octo/a/commits?page=2", "/repos/octo/a/commits?page=3",
        "/repos/octo/b/commits?page=1", "/repos/octo/b/commits?page=2", "/repos/octo/empty/commits?page=1" }, paths)
    end)

    it("sends the incremental parameter to the child requests only", function()
      run(nil, { repos, commits }, { cursor = "2024-02-02T00:00:00Z" })
      assert.same({ "" }, queries("/repos"))
      assert.same({ "page=1&since=2024-02-02T00%3A00%3A00Z", "page=2&since=2024-02-02T00%3A00%3A00Z" },
        queries("/repos/octo/a/commits"))
    end)

    it("without ignore_status, a child error fails the entity", function()
      local c = H.cjson.decode(H.cjson.encode(commits))
      c.source.ignore_status = nil
      local err = run_error(nil, { repos, c })
      assert.matches("^GET " .. server.url:gsub("%p", "%%%0") .. "/repos/octo/empty/commits%?page=1: HTTP 409 Conflict %(1 attempt%)", err)
    end)

    it("names a missing parent, a parent field that is not there, and a cycle", function()
      local c = H.cjson.decode(H.cjson.encode(commits))
      c.source.parent = "nope"
      assert.equal('source.parent: no entity "nope" in system "api"', run_error(nil, { repos, c }))
      c.source.parent = "repos"
      c.source.path = "/repos/{parent.owner.login}/commits"
      assert.matches('^placeholder {parent.owner.login}: the parent record has no "owner.login": {"id":1', run_error(nil, { repos, c }))
      local a = { name = "a", source = { parent = "b", path = "/x/{parent.id}" } }
      local b = { name = "b", source = { parent = "a", path = "/y/{parent.id}" } }
      assert.equal('source.parent: entity "a" is its own ancestor (a -> b -> a)', run_error(nil, { a, b }, { entity = "a" }))
    end)

    it("placeholders and include_from_parent need a parent", function()
      assert.same({
        'entities.json[0].source.include_from_parent: needs "parent"',
        'entities.json[0].source.path: {parent.…} placeholders need "parent"',
      }, validation_errors(nil, { path = "/x/{parent.id}", include_from_parent = { a = "b" } }))
    end)
  end)

  describe("failures", function()
    it("retries 429 with Retry-After and 500, then succeeds", function()
      local _, records = run(nil, { { path = "/status/429", params = { retry_after = 0 }, record_selector = "items" } })
      assert.same({ '{"id":1,"calls":2}' }, records)
      _, records = run(nil, { { path = "/status/500", record_selector = "items" } })
      assert.same({ '{"id":1,"calls":2}' }, records)
    end)

    it("a permanent 404 fails with method, URL and status", function()
      assert.equal("GET " .. server.url .. '/status/404?times=99: HTTP 404 Not Found (1 attempt): {"error": "status 404, call 1"}',
        run_error(nil, { { path = "/status/404", params = { times = 99 } } }))
    end)

    it("a timeout fails after the configured attempts", function()
      local err = run_error({ timeout = { total_seconds = 0.1 }, retry = { max_attempts = 2, backoff_seconds = 0.001 } },
        { { path = "/slow", params = { delay = 0.5 } } })
      assert.matches("^GET " .. server.url:gsub("%p", "%%%0") .. "/slow%?delay=0%.5: timed out: .*%(2 attempts in", err)
    end)

    it("paginator and source options are validated", function()
      assert.same({ "entities.json[0].source.paginator.limit: required field missing" },
        validation_errors(nil, { path = "/x", paginator = { type = "offset" } }))
      assert.same({ 'entities.json[0].source.paginator.type: "scroll" is not one of cursor, link_header, next_url, offset, page_number, single_page' },
        validation_errors(nil, { path = "/x", paginator = { type = "scroll" } }))
      assert.same({ "entities.json[0].source.path: required field missing",
        'entities.json[0].source.record_selector: "a..b" is not a dotted path (e.g. meta.next)' },
        validation_errors(nil, { record_selector = "a..b" }))
      assert.same({ 'entities.json[0].source.json: a request body needs "method": "POST"' },
        validation_errors(nil, { path = "/x", json = { q = 1 } }))
    end)
  end)

  describe("POST endpoints", function()
    it("send the JSON body on every page", function()
      local _, records = run(nil, { { path = "/echo", method = "POST", json = { query = "x" } } })
      local echo = cjson.decode(records[1])
      assert.same({ "POST", '{"query":"x"}' }, { echo.method, echo.body })
    end)
  end)
end)
