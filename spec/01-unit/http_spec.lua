-- dp.http (the client connectors get as ctx.http) and its libcurl binding, against the HTTP
-- test server on loopback (spec/http_server.py). Waits are recorded, not slept, unless a test
-- is about real time.
local cjson = require "cjson"
local http = require "dp.http"

local H = require "helpers"

describe("dp.http", function()
  local server, sleeps

  setup(function() server = H.http_server() end)
  teardown(function() server.stop() end)
  before_each(function()
    server.reset()
    http.reset_state()
    sleeps = {}
  end)

  -- A client of the test server; waits are recorded in `sleeps`.
  local function client(opts)
    opts = opts or {}
    local o = {
      name = "spec", base_url = server.url,
      retry = { max_attempts = 3, backoff_seconds = 0.01, max_backoff_seconds = 1, max_wait_seconds = 10 },
      timeout = { connect_seconds = 2, total_seconds = 5 },
      sleep = function(d) sleeps[#sleeps + 1] = d end,
    }
    for k, v in pairs(opts) do o[k] = v end
    return http.new(o)
  end

  local function hits(path)
    local n = 0
    for _, r in ipairs(server.requests()) do if r.path == path then n = n + 1 end end
    return n
  end

  describe("URLs", function()
    it("joins paths to base_url as dlt does, and keeps absolute URLs", function()
      assert.equal("https://h/v1/items", http.join("https://h/v1", "/items"))
      assert.equal("https://h/v1/items", http.join("https://h/v1/", "items"))
      assert.equal("http://other/x", http.join("https://h/v1", "http://other/x"))
      assert.has_error(function() http.join(nil, "/items") end,
        'no base_url: give an absolute http:// or https:// URL, got "/items"')
    end)

    it("encodes query parameters: sorted, percent-encoded, arrays repeated, numbers exact", function()
      assert.equal("a=x%20y%26z&b=true&n=9007199254740993&t=1&t=2",
        http.encode_query({ t = { 1, 2 }, b = true, a = "x y&z", n = "9007199254740993" }))
      assert.equal("http://h/p?q=1&a=2#f", http.add_query("http://h/p?q=1#f", { a = 2 }))
      assert.equal("http://h/p?b=2&api_key=k%2F1", http.set_query_param("http://h/p?api_key=old&b=2", "api_key", "k/1"))
    end)

    it("resolves next links against the current URL", function()
      local cur = "http://h:1/a/b?page=1"
      assert.equal("http://h:1/a/c?page=2", http.resolve(cur, "c?page=2"))
      assert.equal("http://h:1/x?page=2", http.resolve(cur, "/x?page=2"))
      assert.equal("http://h:1/a/b?page=2", http.resolve(cur, "?page=2"))
      assert.equal("https://o/x", http.resolve(cur, "https://o/x"))
    end)

    it("compares origins with default ports", function()
      assert.equal(http.origin("https://API.example.com/x"), http.origin("https://api.example.com:443/y"))
      assert.are_not.equal(http.origin("http://127.0.0.1:80/"), http.origin("http://localhost/"))
    end)

    it("redacts credential-like query values and URL passwords", function()
      assert.equal("https://u:REDACTED@h/p?access_token=REDACTED&page=2&key=REDACTED&mine=REDACTED",
        http.redact_url("https://u:pw@h/p?access_token=abc&page=2&key=k&mine=m", { mine = true }))
    end)

    it("base64 (HTTP basic credentials)", function()
      assert.same({ "YWxpY2U6czNjcmV0", "YQ==", "YWI=", "" },
        { http.base64("alice:s3cret"), http.base64("a"), http.base64("ab"), http.base64("") })
    end)
  end)

  describe("requests", function()
    it("sends method, query parameters and headers", function()
      local resp = assert(client().get("/echo", { params = { q = "a b", n = 2 }, headers = { ["X-Test"] = "1" } }))
      local echo = cjson.decode(resp.body)
      assert.equal(200, resp.status)
      assert.equal("GET", echo.method)
      assert.equal("n=2&q=a%20b", echo.query)
      assert.equal("1", echo.headers["x-test"])
      assert.matches("^dp%-engine/", echo.headers["user-agent"])
      assert.equal(1, resp.attempts)
    end)

    it("sends JSON, form and raw bodies", function()
      local c = client()
      local echo = cjson.decode(assert(c.post("/echo", { json = { a = { 1, 2 } } })).body)
      assert.same({ "POST", '{"a":[1,2]}', "application/json" }, { echo.method, echo.body, echo.headers["content-type"] })
      echo = cjson.decode(assert(c.post("/echo", { form = { grant_type = "x y", b = 1 } })).body)
      assert.same({ "b=1&grant_type=x%20y", "application/x-www-form-urlencoded" }, { echo.body, echo.headers["content-type"] })
      echo = cjson.decode(assert(c.request("PUT", "/echo", { body = "raw", headers = { ["Content-Type"] = "text/plain" } })).body)
      assert.same({ "PUT", "raw", "text/plain" }, { echo.method, echo.body, echo.headers["content-type"] })
    end)

    it("asks for compression and decodes gzip", function()
      local resp = assert(client().get("/gzip"))
      assert.equal("gzip", resp.headers["content-encoding"])
      assert.is_true(cjson.decode(resp.body).gzip)
    end)

    it("follows redirects and reports the final URL", function()
      local resp = assert(client().get("/redirect", { params = { to = "/echo" } }))
      assert.equal(server.url .. "/echo", resp.url)
      assert.equal("/echo", cjson.decode(resp.body).path)
    end)

    it("returns response headers with lower-case names", function()
      local resp = assert(client().get("/link/items"))
      assert.matches('rel="next"', resp.headers.link)
      assert.equal("application/json", resp.headers["content-type"])
    end)

    it("refuses protocols other than http and https, without retrying", function()
      local resp, err = client().get("file:///etc/passwd")
      assert.is_nil(resp)
      assert.equal('GET file:///etc/passwd: url error: Protocol "file" not supported or disabled in libcurl (1 attempt)', err)
      assert.same({}, sleeps)
    end)

    it("caps the response size", function()
      local resp, err = client({ max_response_bytes = 10000 }).get("/big", { params = { bytes = 20000 } })
      assert.is_nil(resp)
      assert.equal("GET " .. server.url .. "/big?bytes=20000: response larger than 10000 bytes (1 attempt)", err)
      assert.truthy(client({ max_response_bytes = 10000 }).get("/big", { params = { bytes = 5000 } }))
    end)

    it("raises on misuse", function()
      assert.has_error(function() client().request("get", "/echo") end,
        'http.request: method must be an upper-case string such as GET, got "get"')
      assert.has_error(function() client().post("/echo", { json = {}, body = "x" }) end,
        "http.request: give one of json, form and body")
    end)
  end)

  describe("errors and retries", function()
    it("a permanent 404 is not retried; the error names method, URL, status and body", function()
      local resp, err, last = client().get("/status/404", { params = { times = 99 } })
      assert.is_nil(resp)
      assert.equal("GET " .. server.url .. '/status/404?times=99: HTTP 404 Not Found (1 attempt): {"error": "status 404, call 1"}', err)
      assert.equal(404, last.status)
      assert.equal(1, hits("/status/404"))
      assert.same({}, sleeps)
    end)

    it("ignore_status returns such a response instead of an error", function()
      local resp = assert(client().get("/status/409", { params = { times = 9 }, ignore_status = { 409 } }))
      assert.equal(409, resp.status)
      resp = assert(client().get("/status/503", { params = { times = 9 }, ignore_status = { 503 } }))
      assert.same({ 503, 3 }, { resp.status, resp.attempts }) -- retried first
    end)

    it("for_system takes only HTTP settings of the expected shape", function()
      local c = http.for_system({ name = "s", base_url = server.url, auth = "not an auth object",
        rate_limit = { requests = 1000, per = "second" }, retry = { max_attempts = 1 } })
      local resp = assert(c.get("/echo"))
      assert.is_nil(cjson.decode(resp.body).headers.authorization)
      -- without a base_url, a relative path is misuse
      assert.has_error(function() http.for_system({ name = "s" }).get("/echo") end,
        'no base_url: give an absolute http:// or https:// URL, got "/echo"')
    end)

    it("429 with Retry-After in seconds: waits exactly that long, then succeeds", function()
      local resp = assert(client().get("/status/429", { params = { retry_after = 7 } }))
      assert.equal(200, resp.status)
      assert.equal(2, resp.attempts)
      assert.same({ 7 }, sleeps)
      assert.equal(2, hits("/status/429"))
    end)

    it("Retry-After as an HTTP date waits until then", function()
      local now = 1792567670 -- 10 s before Wed, 21 Oct 2026 07:28:00 GMT
      local resp = assert(client({ now = function() return now end }).get("/status/503",
        { params = { retry_after = "Wed, 21 Oct 2026 07:28:00 GMT" } }))
      assert.equal(200, resp.status)
      assert.same({ 10 }, sleeps)
      assert.equal(10, http.retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT", now))
      assert.equal(0, http.retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT", now + 60))
      assert.is_nil(http.retry_after_seconds("soon", now))
    end)

    it("500 then success: one back-off wait with jitter in its upper half", function()
      local resp = assert(client().get("/status/500"))
      assert.equal(200, resp.status)
      assert.equal(1, #sleeps)
      assert.is_true(sleeps[1] >= 0.005 and sleeps[1] <= 0.01, tostring(sleeps[1]))
    end)

    it("back-off doubles up to its cap", function()
      local r = { backoff_seconds = 1, max_backoff_seconds = 5 }
      local lo = function() return 0 end
      local hi = function() return 1 end
      assert.same({ 0.5, 1, 2, 2.5, 2.5 }, { http.backoff_seconds(1, r, lo), http.backoff_seconds(2, r, lo),
        http.backoff_seconds(3, r, lo), http.backoff_seconds(4, r, lo), http.backoff_seconds(9, r, lo) })
      assert.same({ 1, 4, 5 }, { http.backoff_seconds(1, r, hi), http.backoff_seconds(3, r, hi), http.backoff_seconds(4, r, hi) })
    end)

    it("gives up after max_attempts, naming the attempts", function()
      local resp, err = client().get("/status/503", { params = { times = 99 } })
      assert.is_nil(resp)
      assert.matches("^GET " .. server.url:gsub("%p", "%%%0") .. "/status/503%?times=99: HTTP 503 Service Unavailable %(3 attempts in [%d.]+ s%): ", err)
      assert.equal(3, hits("/status/503"))
      assert.equal(2, #sleeps)
    end)

    it("does not retry 501", function()
      local _, err = client().get("/status/501", { params = { times = 99 } })
      assert.matches("HTTP 501 Not Implemented %(1 attempt%)", err)
    end)

    it("fails at once when Retry-After asks for more than the retry budget", function()
      local _, err = client().get("/status/429", { params = { retry_after = 3600 } })
      assert.matches("HTTP 429 Too Many Requests: Retry%-After asks for 3600 s, over the retry budget %(max_wait_seconds 10%) %(1 attempt%)", err)
      assert.same({}, sleeps)
    end)

    it("a timeout is retried and reported", function()
      local t0 = H.core.monotonic()
      local resp, err = client({ timeout = { connect_seconds = 1, total_seconds = 0.1 } }).get("/slow", { params = { delay = 0.5 } })
      assert.is_nil(resp)
      assert.matches("^GET " .. server.url:gsub("%p", "%%%0") .. "/slow%?delay=0%.5: timed out: .+ %(3 attempts in [%d.]+ s%)$", err)
      assert.is_true(H.core.monotonic() - t0 < 1.5)
      assert.equal(2, #sleeps)
    end)

    it("a refused connection is a network error, retried", function()
      local resp, err = client({ base_url = "http://127.0.0.1:9" }).get("/x")
      assert.is_nil(resp)
      assert.matches("^GET http://127%.0%.0%.1:9/x: network error: .*%(3 attempts", err)
    end)
  end)

  describe("rate limit", function()
    it("allows at most `requests` starts per window", function()
      local t = 0 -- a clock that only moves when the client sleeps
      local c = http.new { name = "limited", base_url = server.url, rate_limit = { requests = 2, window = 1 },
        clock = function() return t end, sleep = function(d) sleeps[#sleeps + 1] = d; t = t + d end }
      for _ = 1, 5 do assert(c.get("/echo")) end
      assert.same({ 1, 1 }, sleeps) -- starts at 0, 0, 1, 1, 2
    end)

    it("is shared by the clients of one system and holds in real time", function()
      local a = http.new { name = "shared", base_url = server.url, rate_limit = { requests = 3, window = 0.15 } }
      local b = http.new { name = "shared", base_url = server.url, rate_limit = { requests = 3, window = 0.15 } }
      local t0 = H.core.monotonic()
      for _ = 1, 3 do assert(a.get("/echo")) end
      for _ = 1, 4 do assert(b.get("/echo")) end
      local dt = H.core.monotonic() - t0
      assert.is_true(dt >= 0.3, "7 requests at 3 per 0.15 s took only " .. dt .. " s")
    end)
  end)

  describe("auth", function()
    local function auth_get(auth, path, extra)
      local opts = { auth = auth }
      for k, v in pairs(extra or {}) do opts[k] = v end
      return client(opts).get(path)
    end

    it("bearer, basic and API keys in a header or the query", function()
      assert.equal(200, assert(auth_get({ type = "bearer", token = "tok-123" }, "/auth/bearer")).status)
      assert.equal(200, assert(auth_get({ type = "basic", username = "alice", password = "s3cret" }, "/auth/basic")).status)
      assert.equal(200, assert(auth_get({ type = "api_key", name = "X-Api-Key", value = "key-456" }, "/auth/header")).status)
      assert.equal(200, assert(auth_get({ type = "api_key", name = "api_key", value = "key-456", ["in"] = "query" }, "/auth/query")).status)
      local _, err = auth_get({ type = "bearer", token = "wrong" }, "/auth/bearer")
      assert.matches("HTTP 401 Unauthorized", err)
    end)

    it("redacts credentials in errors, even when the server echoes them", function()
      local _, err = auth_get({ type = "bearer", token = "tok-123" }, "/status/403?times=9&echo=1")
      assert.is_nil(err:find("tok-123", 1, true), err)
      assert.matches('"authorization": "Bearer REDACTED"', err, 1, true)
      _, err = auth_get({ type = "api_key", name = "mykey", value = "key-456", ["in"] = "query" }, "/status/403?times=9&echo=1&counter=q")
      assert.is_nil(err:find("key-456", 1, true), err)
      assert.equal("GET " .. server.url .. '/status/403?times=9&echo=1&counter=q&mykey=REDACTED: HTTP 403 Forbidden (1 attempt): '
        .. '{"error": "status 403, call 1", "authorization": null, "query": "times=9&echo=1&counter=q&mykey=REDACTED"}', err)
    end)

    it("sends credentials only to base_url's origin", function()
      local other = server.url:gsub("127%.0%.0%.1", "localhost")
      local c = client({ auth = { type = "bearer", token = "tok-123" }, headers = { ["X-System"] = "s" } })
      local same = cjson.decode(assert(c.get("/echo")).body)
      local away = cjson.decode(assert(c.get(other .. "/echo")).body)
      assert.same({ "Bearer tok-123", "s" }, { same.headers.authorization, same.headers["x-system"] })
      assert.same({}, { away.headers.authorization, away.headers["x-system"] })
    end)

    describe("oauth2", function()
      local function oauth(extra)
        local a = { type = "oauth2", token_url = server.url .. "/oauth/token", grant_type = "refresh_token",
          client_id = "cid", client_secret = "csecret", refresh_token = "rt-1", client_auth = "body" }
        for k, v in pairs(extra or {}) do a[k] = v end
        return a
      end

      it("refresh token grant: fetches a token once and caches it for the system", function()
        local c = client({ auth = oauth() })
        assert(c.get("/auth/oauth"))
        assert(c.get("/auth/oauth"))
        assert(client({ auth = oauth() }).get("/auth/oauth")) -- another entity of the same system
        local token_calls = {}
        for _, r in ipairs(server.requests()) do
          if r.path == "/oauth/token" then token_calls[#token_calls + 1] = r end
        end
        assert.equal(1, #token_calls)
        assert.equal("client_id=cid&client_secret=csecret&grant_type=refresh_token&refresh_token=rt-1", token_calls[1].body)
        assert.equal(3, hits("/auth/oauth"))
      end)

      it("client credentials with HTTP basic client auth, and a scope", function()
        assert(client({ auth = oauth({ grant_type = "client_credentials", refresh_token = nil, client_auth = "basic", scope = "read" }) })
          .get("/auth/oauth"))
        local r = server.requests()[1]
        assert.equal("grant_type=client_credentials&scope=read", r.body)
        assert.equal("Basic " .. http.base64("cid:csecret"), r.headers.authorization)
      end)

      it("fetches a new token when the cached one expires", function()
        local now = 1000
        server.state({ expires_in = 100 })
        local c = client({ auth = oauth(), now = function() return now end })
        assert(c.get("/auth/oauth"))
        now = 1000 + 49 -- still valid (refreshed 50 s before expiry)
        assert(c.get("/auth/oauth"))
        now = 1000 + 51
        assert(c.get("/auth/oauth"))
        assert.equal(2, hits("/oauth/token"))
      end)

      it("a 401 drops the cached token and retries once with a new one", function()
        local c = client({ auth = oauth() })
        assert(c.get("/auth/oauth")) -- at-1, cached
        -- the server revokes at-1 when it issues the next token, here out of band
        server.state({ revoke = { "at-1" } })
        local other = H.core.http_client()
        assert(other:request { method = "POST", url = server.url .. "/oauth/token",
          body = "grant_type=client_credentials&client_id=cid&client_secret=csecret" })
        other:close()
        local resp = assert(c.get("/auth/oauth")) -- at-1 -> 401, then at-3
        assert.equal(200, resp.status)
        local log = server.requests()
        assert.same({ "Bearer at-1", "Bearer at-3" }, { log[#log - 2].headers.authorization, log[#log].headers.authorization })
        assert.equal(3, hits("/oauth/token"))
      end)

      it("a failing token endpoint fails the request with a redacted message", function()
        local _, err = client({ auth = oauth({ refresh_token = "rt-wrong-value" }) }).get("/auth/oauth")
        assert.equal("POST " .. server.url .. '/oauth/token: (OAuth2 token) HTTP 400 Bad Request (1 attempt): {"error": "invalid_grant"}', err)
      end)
    end)

    it("resolves { secret = name } credentials through the resolver, redacting the value", function()
      local asked = {}
      local c = client({ auth = { type = "bearer", token = { secret = "api_token" } },
        secret = function(name) asked[#asked + 1] = name return "tok-123" end })
      assert(c.get("/auth/bearer"))
      assert.same({ "api_token" }, asked)
      assert.equal("Bearer REDACTED", c.redact("Bearer tok-123"))
    end)

    it("without a secret resolver, a secret reference is a clear error", function()
      assert.has_error(function()
        client({ auth = { type = "bearer", token = { secret = "api_token" } } }).get("/auth/bearer")
      end, 'auth.token: secrets are not available (the secret store is issue #7); cannot resolve "api_token"')
    end)
  end)
end)
