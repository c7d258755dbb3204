-- dp.http: the HTTP client that connectors get as ctx.http (trusted code).
--
--   local client = http.new {
--     name = "github",                       -- system name: rate limit and token cache key
--     base_url = "https://api.github.com",   -- relative paths are joined to it
--     headers = { Accept = "..." },          -- sent with every request to base_url's origin
--     auth = { type = "bearer", token = "..." | { secret = "name" } },
--     rate_limit = { requests = 10, window = 1 },                      -- seconds
--     retry = { max_attempts = 5, backoff_seconds = 1, max_backoff_seconds = 60, max_wait_seconds = 300 },
--     timeout = { connect_seconds = 10, total_seconds = 60 },
--     max_response_bytes = 64 * 1024 * 1024,
--     secret = function(name) ... end,       -- resolves { secret = name } (ctx.secret)
--     log = ctx.log,                          -- debug lines per attempt
--     sleep, clock, now, random,              -- injectable for specs
--   }
--   resp, err = client.request(method, url_or_path, { params, headers, json | form | body, ignore_status })
--   resp, err = client.get(url_or_path, opts); client.post(...)
--   url = client.url(url_or_path, params); text = client.redact(text)
--   client = http.for_system(validated_system, { secret = fn, log = ctx.log })
--
-- libcurl does one attempt (core/http.c); this module adds URLs, bodies, auth, retries with
-- exponential back-off, jitter and Retry-After, a per-system rate limit and error messages with
-- credentials redacted. Runtime failures return nil, err; misuse raises.
local core = require "dp.core"
local schema = require "dp.schema"

local M = {}
local cjson = require("cjson").new()

M.DEFAULT_RETRY = { max_attempts = 5, backoff_seconds = 1, max_backoff_seconds = 60, max_wait_seconds = 300 }
M.DEFAULT_TIMEOUT = { connect_seconds = 10, total_seconds = 60 }
M.DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
M.PER = { second = 1, minute = 60, hour = 3600 }
M.REDACTED = "REDACTED"

local REASONS = {
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content", [301] = "Moved Permanently",
  [302] = "Found", [304] = "Not Modified", [400] = "Bad Request", [401] = "Unauthorized",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout",
  [409] = "Conflict", [410] = "Gone", [413] = "Content Too Large", [415] = "Unsupported Media Type",
  [422] = "Unprocessable Content", [429] = "Too Many Requests", [500] = "Internal Server Error",
  [501] = "Not Implemented", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
}

-- Statuses worth another attempt: 408, 429 and 5xx except 501 and 505.
function M.retryable_status(status)
  if status == 408 or status == 429 then return true end
  return status >= 500 and status <= 599 and status ~= 501 and status ~= 505
end

function M.status_text(status)
  local r = REASONS[status]
  return "HTTP " .. status .. (r and (" " .. r) or "")
end

---------------------------------------------------------------------------------------------
-- URLs

-- Percent-encodes s (RFC 3986: unreserved characters stay); `keep` is a set of characters
-- that also stay as they are (e.g. "/" for path segments).
function M.escape(s, keep)
  return (tostring(s):gsub("[^%w%-%._~]", function(c)
    if keep and keep:find(c, 1, true) then return c end
    return string.format("%%%02X", c:byte())
  end))
end

local function param_text(v, name)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return schema.format_number(v) end
  if t == "boolean" then return tostring(v) end
  error("query parameter " .. schema.quote(name) .. " must be a string, number or boolean, got "
    .. schema.describe(v), 4)
end

-- "a=1&b=x%20y" from a map (sorted names; an array value repeats the name; nil is left out).
function M.encode_query(params)
  local names = {}
  for k in pairs(params or {}) do names[#names + 1] = tostring(k) end
  table.sort(names)
  local parts = {}
  for _, k in ipairs(names) do
    local v = params[k]
    local list = (type(v) == "table" and v ~= cjson.null) and v or { v }
    for _, x in ipairs(list) do
      if x ~= cjson.null then parts[#parts + 1] = M.escape(k) .. "=" .. M.escape(param_text(x, k)) end
    end
  end
  return table.concat(parts, "&")
end

-- Adds params to the query of url (after any query it has, before a #fragment).
function M.add_query(url, params)
  local q = M.encode_query(params)
  if q == "" then return url end
  local base, frag = url:match("^([^#]*)(#.*)$")
  base, frag = base or url, frag or ""
  return base .. (base:find("?", 1, true) and (base:sub(-1) == "?" and "" or "&") or "?") .. q .. frag
end

-- url with every `name` parameter removed and name=value added.
function M.set_query_param(url, name, value)
  local base, frag = url:match("^([^#]*)(#.*)$")
  base, frag = base or url, frag or ""
  local path, query = base:match("^([^?]*)%?(.*)$")
  path = path or base
  local kept, ename = {}, M.escape(name)
  for part in (query or ""):gmatch("[^&]+") do
    local k = part:match("^([^=]*)")
    if k ~= ename and k ~= name then kept[#kept + 1] = part end
  end
  kept[#kept + 1] = ename .. "=" .. M.escape(value)
  return path .. "?" .. table.concat(kept, "&") .. frag
end

function M.is_absolute(url)
  return type(url) == "string" and url:lower():match("^https?://") ~= nil
end

-- base_url + path as dlt joins them: "https://h/v1" + "/items" -> "https://h/v1/items".
function M.join(base, path)
  -- any scheme counts as absolute: libcurl then refuses what is not http or https
  if M.is_absolute(path) or tostring(path):match("^%a[%w+.-]*://") then return path end
  if not base then
    error("no base_url: give an absolute http:// or https:// URL, got " .. schema.quote(path), 3)
  end
  path = tostring(path or "")
  if path == "" then return base end
  return (base:gsub("/+$", "")) .. "/" .. (path:gsub("^/+", ""))
end

-- Resolves a reference found in a response (next link) against the URL it came from.
function M.resolve(current, ref)
  if M.is_absolute(ref) then return ref end
  local scheme, authority, path = current:match("^(%a[%w+.-]*://)([^/?#]*)([^?#]*)")
  if not scheme then return ref end
  if ref:sub(1, 2) == "//" then return scheme:match("^(.-)//") .. ref end
  if ref:sub(1, 1) == "/" then return scheme .. authority .. ref end
  if ref:sub(1, 1) == "?" then return scheme .. authority .. path .. ref end
  local dir = path:match("^(.*/)") or "/"
  return scheme .. authority .. dir .. ref
end

-- "https://host:443" for a URL (scheme and host lower-cased, default port filled in).
function M.origin(url)
  local scheme, authority = tostring(url):match("^(%a[%w+.-]*)://([^/?#]*)")
  if not scheme then return nil end
  scheme = scheme:lower()
  authority = authority:gsub("^.*@", ""):lower()
  if not authority:match(":%d+$") then authority = authority .. (scheme == "https" and ":443" or ":80") end
  return scheme .. "://" .. authority
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 (RFC 4648, with padding), for HTTP Basic credentials.
function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local d1, d2 = math.floor(n / 262144) % 64, math.floor(n / 4096) % 64
    local d3, d4 = math.floor(n / 64) % 64, n % 64
    out[#out + 1] = B64:sub(d1 + 1, d1 + 1) .. B64:sub(d2 + 1, d2 + 1)
      .. (b and B64:sub(d3 + 1, d3 + 1) or "=") .. (c and B64:sub(d4 + 1, d4 + 1) or "=")
  end
  return table.concat(out)
end

---------------------------------------------------------------------------------------------
-- Redaction

local SENSITIVE_EXACT = { key = true, code = true, sig = true, auth = true, pwd = true, pass = true,
  session = true, sessionid = true, jwt = true }

function M.sensitive_name(name)
  local n = tostring(name):lower()
  if SENSITIVE_EXACT[n] then return true end
  for _, w in ipairs({ "token", "secret", "password", "passwd", "api_key", "apikey", "api%-key",
    "signature", "credential", "authorization", "access_key" }) do
    if n:find(w) then return true end
  end
  return false
end

-- Replaces the values of credential-like query parameters (and of the names in `extra`) and a
-- password in the URL's user info.
function M.redact_url(url, extra)
  url = tostring(url):gsub("^(%a[%w+.-]*://[^/?#:@]*):[^/?#@]*@", "%1:" .. M.REDACTED .. "@")
  -- a value runs over the characters a URL may hold (so "...&key=x"}" keeps its quote and brace)
  return (url:gsub("([?&])([^=&#%s\"']+)=([%w%%%-%._~+/=:@!$()*,;?]*)", function(sep, name, value)
    local plain = name:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    if value ~= "" and (M.sensitive_name(plain) or (extra and extra[plain])) then
      return sep .. name .. "=" .. M.REDACTED
    end
  end))
end

local function plain_replace(text, find, repl)
  local out, i = {}, 1
  while true do
    local a, b = text:find(find, i, true)
    if not a then break end
    out[#out + 1] = text:sub(i, a - 1)
    out[#out + 1] = repl
    i = b + 1
  end
  out[#out + 1] = text:sub(i)
  return table.concat(out)
end

---------------------------------------------------------------------------------------------
-- Retry timing

-- Seconds to wait for a Retry-After value (delta seconds or an HTTP date), or nil.
function M.retry_after_seconds(value, now)
  if type(value) ~= "string" then return nil end
  local secs = value:match("^%s*(%d+)%s*$")
  if secs then return tonumber(secs) end
  local t = core.http_date(value)
  if not t then return nil end
  return math.max(0, t - (now or core.time()))
end

-- Back-off before attempt n + 1 (n >= 1): min(max, base * 2^(n-1)), "equal jitter": a random
-- point in the upper half.
function M.backoff_seconds(n, retry, random)
  local d = math.min(retry.max_backoff_seconds, retry.backoff_seconds * 2 ^ (n - 1))
  return d / 2 + (random or math.random)() * d / 2
end

---------------------------------------------------------------------------------------------
-- State shared by the clients of one Lua state (one per run worker): rate limiters and OAuth2
-- tokens, per system.

local limiters = {}
local tokens = {}

-- At most `requests` starts in any `window` seconds: waits for the oldest of the last
-- `requests` starts to leave the window.
local function limiter(key, requests, window)
  local k = key .. "|" .. requests .. "|" .. window
  local l = limiters[k]
  if not l then
    l = { starts = {}, next = 1, n = requests, window = window }
    limiters[k] = l
  end
  return l
end

local function limiter_wait(l, clock, sleep)
  local oldest = l.starts[l.next]
  if oldest then
    local wait = oldest + l.window - clock()
    if wait > 0 then sleep(wait) end
  end
  l.starts[l.next] = clock()
  l.next = l.next % l.n + 1
end

-- Forgets rate limiter and token state (specs).
function M.reset_state()
  limiters, tokens = {}, {}
end

---------------------------------------------------------------------------------------------
-- The client

local function copy_defaults(t, defaults)
  local out = {}
  for k, v in pairs(defaults) do out[k] = v end
  for k, v in pairs(t or {}) do out[k] = v end
  return out
end

local function body_snippet(body)
  if type(body) ~= "string" or body == "" then return "" end
  local s = body:sub(1, 300):gsub("[%c]", " ")
  if #body > 300 then s = s .. "..." end
  return ": " .. s
end

local function plural(n, word) return n .. " " .. word .. (n == 1 and "" or "s") end

-- "(1 attempt)" or "(3 attempts in 2.1 s)"
local function tried(attempts, elapsed)
  return "(" .. plural(attempts, "attempt") .. (attempts > 1 and string.format(" in %.1f s", elapsed) or "") .. ")"
end

function M.new(opts)
  opts = opts or {}
  if opts.base_url ~= nil and not M.is_absolute(opts.base_url) then
    error("http.new: base_url must be an http:// or https:// URL, got " .. schema.describe(opts.base_url), 2)
  end
  local retry = copy_defaults(opts.retry, M.DEFAULT_RETRY)
  local timeout = copy_defaults(opts.timeout, M.DEFAULT_TIMEOUT)
  local max_bytes = opts.max_response_bytes or M.DEFAULT_MAX_RESPONSE_BYTES
  local sleep, clock, now = opts.sleep or core.sleep, opts.clock or core.monotonic, opts.now or core.time
  local random = opts.random or math.random
  local name = opts.name or "http"
  local log = opts.log
  local auth = opts.auth or { type = "none" }
  local base_origin = opts.base_url and M.origin(opts.base_url)
  local rl = opts.rate_limit and limiter(name, opts.rate_limit.requests, opts.rate_limit.window)
  local handle
  local secrets = {}          -- resolved credential values, for redaction
  -- Credentials this client resolves or derives (an OAuth access token, a basic-auth header)
  -- also go to the engine's redaction registry (core/redact.c), which scrubs logs and errors.
  local function keep_secret(v, label)
    if type(v) ~= "string" or #v < 4 or secrets[v] then return end
    secrets[v] = true
    if core.redact_register then pcall(core.redact_register, v, label) end
  end
  local redact_params = {}    -- query parameter names whose values are credentials
  if auth.type == "api_key" and auth["in"] == "query" then redact_params[auth.name] = true end

  local client = {}

  local function resolve(v, what)
    if type(v) == "table" and type(v.secret) == "string" then
      if not opts.secret then
        error(what .. ": secrets are not available (the secret store is issue #7); cannot resolve "
          .. schema.quote(v.secret), 0)
      end
      local value = opts.secret(v.secret)
      if type(value) ~= "string" then
        error(what .. ": secret " .. schema.quote(v.secret) .. " has no value", 0)
      end
      v = value
    end
    keep_secret(v, name .. " " .. what)
    return v
  end

  local function redact_secrets(text)
    local list = {}
    for s in pairs(secrets) do list[#list + 1] = s end
    table.sort(list, function(a, b) return #a > #b end)
    for _, s in ipairs(list) do text = plain_replace(text, s, M.REDACTED) end
    return text
  end

  -- text (a URL, or a message with URLs in it) with credentials replaced by REDACTED.
  function client.redact(text)
    return redact_secrets(M.redact_url(tostring(text), redact_params))
  end

  -- "<what> <url>: <detail>" with the URL redacted on its own (a query value ends at the URL's
  -- end, not at the ":" after it) and the detail redacted as text.
  local function message(what, url, detail)
    return redact_secrets(what .. " " .. M.redact_url(url, redact_params)) .. ": " .. client.redact(detail)
  end

  function client.url(url_or_path, params)
    return M.add_query(M.join(opts.base_url, url_or_path), params)
  end

  local function debug(fmt, ...)
    if log and log.debug then log.debug(client.redact(string.format(fmt, ...))) end
  end

  -- One logical request with retries. req = { method, url, headers = {lines}, body }.
  -- Returns resp, nil, attempts, elapsed (any status that is not retried, or retried to the
  -- end: then also err_text and the last response as `last`) | nil, err_text, attempts,
  -- elapsed, last_resp.
  local function perform(req)
    handle = handle or core.http_client()
    local attempts, waited, t0 = 0, 0, clock()
    while true do
      attempts = attempts + 1
      if rl then limiter_wait(rl, clock, sleep) end
      local resp, kind, msg = handle:request {
        method = req.method, url = req.url, headers = req.headers, body = req.body,
        connect_timeout = timeout.connect_seconds, timeout = timeout.total_seconds, max_bytes = max_bytes,
      }
      local why
      if resp then
        debug("%s %s -> %d in %.3f s", req.method, req.url, resp.status, resp.seconds)
        if not M.retryable_status(resp.status) then return resp, nil, attempts, clock() - t0 end
        why = M.status_text(resp.status)
      else
        debug("%s %s -> %s: %s", req.method, req.url, kind, msg)
        if kind ~= "network" and kind ~= "timeout" then
          local what = kind == "too_large" and msg or (kind .. " error: " .. msg)
          return nil, what, attempts, clock() - t0, nil
        end
        why = (kind == "timeout" and "timed out: " or "network error: ") .. msg
      end
      local function give_up(extra)
        return nil, why .. (extra or ""), attempts, clock() - t0, resp
      end
      if attempts >= retry.max_attempts then return give_up() end
      local delay = resp and M.retry_after_seconds(resp.headers["retry-after"], now())
      if delay then
        if waited + delay > retry.max_wait_seconds then
          return give_up(string.format(": Retry-After asks for %s s, over the retry budget (max_wait_seconds %s)",
            schema.format_number(delay), schema.format_number(retry.max_wait_seconds)))
        end
      else
        delay = M.backoff_seconds(attempts, retry, random)
        if waited + delay > retry.max_wait_seconds then
          return give_up(string.format(" (the next wait would pass max_wait_seconds %s)",
            schema.format_number(retry.max_wait_seconds)))
        end
      end
      debug("%s %s: %s; retrying (attempt %d of %d) in %.3f s", req.method, req.url, why, attempts + 1, retry.max_attempts, delay)
      sleep(delay)
      waited = waited + delay
    end
  end

  local function form_body(t)
    return M.encode_query(t)
  end

  -- OAuth2: a cached access token, fetched with a form POST to token_url when missing or
  -- about to expire.
  local token_key = name .. "|" .. tostring(auth.token_url) .. "|" .. tostring(type(auth.client_id) == "table" and auth.client_id.secret or auth.client_id)
  local function oauth_token(force)
    local cached = tokens[token_key]
    if cached and not force and now() < cached.expires_at then return cached.token end
    local form = { grant_type = auth.grant_type or "refresh_token" }
    local headers = { "Content-Type: application/x-www-form-urlencoded", "Accept: application/json" }
    local cid = auth.client_id and resolve(auth.client_id, "auth.client_id")
    local csecret = auth.client_secret and resolve(auth.client_secret, "auth.client_secret")
    if (auth.client_auth or "body") == "basic" then
      local b64 = M.base64((cid or "") .. ":" .. (csecret or ""))
      keep_secret(b64, name .. " oauth2 client credentials")
      headers[#headers + 1] = "Authorization: Basic " .. b64
    else
      form.client_id, form.client_secret = cid, csecret
    end
    if form.grant_type == "refresh_token" then form.refresh_token = resolve(auth.refresh_token, "auth.refresh_token") end
    if auth.scope then form.scope = auth.scope end
    local resp, err, attempts, elapsed, last = perform({ method = "POST", url = auth.token_url, headers = headers,
      body = form_body(form) })
    resp = resp or last
    if not resp or resp.status < 200 or resp.status > 299 then
      local what = resp and M.status_text(resp.status) or err
      return nil, message("POST", auth.token_url, "(OAuth2 token) " .. what .. " " .. tried(attempts, elapsed)
        .. body_snippet(resp and resp.body))
    end
    local ok, t = pcall(cjson.decode, resp.body)
    if not ok or type(t) ~= "table" or type(t.access_token) ~= "string" or t.access_token == "" then
      return nil, message("POST", auth.token_url, "(OAuth2 token) the response has no access_token" .. body_snippet(resp.body))
    end
    keep_secret(t.access_token, name .. " oauth2 access token")
    keep_secret(t.refresh_token, name .. " oauth2 refresh token")
    local expires_in = tonumber(t.expires_in) or 3600
    tokens[token_key] = { token = t.access_token, expires_at = now() + expires_in - math.min(60, expires_in / 2) }
    return t.access_token
  end

  -- Header lines and URL with auth and system headers (only for base_url's origin).
  local function credentials(url, headers)
    if base_origin and M.origin(url) ~= base_origin then return url end
    for k, v in pairs(opts.headers or {}) do
      if headers[k:lower()] == nil then headers[k:lower()] = { k, resolve(v, "headers." .. k) } end
    end
    local t = auth.type
    if t == "bearer" then
      headers.authorization = { "Authorization", "Bearer " .. resolve(auth.token, "auth.token") }
    elseif t == "basic" then
      local user = resolve(auth.username, "auth.username")
      local b64 = M.base64(user .. ":" .. resolve(auth.password, "auth.password"))
      keep_secret(b64, name .. " basic auth")
      headers.authorization = { "Authorization", "Basic " .. b64 }
    elseif t == "api_key" then
      local value = resolve(auth.value, "auth.value")
      if auth["in"] == "query" then
        url = M.set_query_param(url, auth.name, value)
      else
        headers[auth.name:lower()] = { auth.name, value }
      end
    elseif t == "oauth2" then
      local token, err = oauth_token(false)
      if not token then return nil, err end
      headers.authorization = { "Authorization", "Bearer " .. token }
    end
    return url
  end

  function client.request(method, url_or_path, ropts)
    if type(method) ~= "string" or not method:match("^%u+$") then
      error("http.request: method must be an upper-case string such as GET, got " .. schema.describe(method), 2)
    end
    ropts = ropts or {}
    local url = client.url(url_or_path, ropts.params)
    local headers, body = {}, nil
    for k, v in pairs(ropts.headers or {}) do headers[tostring(k):lower()] = { tostring(k), tostring(v) } end
    local nbodies = (ropts.json ~= nil and 1 or 0) + (ropts.form ~= nil and 1 or 0) + (ropts.body ~= nil and 1 or 0)
    if nbodies > 1 then error("http.request: give one of json, form and body", 2) end
    if ropts.json ~= nil then
      body = cjson.encode(ropts.json)
      headers["content-type"] = headers["content-type"] or { "Content-Type", "application/json" }
    elseif ropts.form ~= nil then
      body = M.encode_query(ropts.form)
      headers["content-type"] = headers["content-type"] or { "Content-Type", "application/x-www-form-urlencoded" }
    elseif ropts.body ~= nil then
      if type(ropts.body) ~= "string" then error("http.request: body must be a string", 2) end
      body = ropts.body
    end
    local ignore = {}
    for _, s in ipairs(ropts.ignore_status or {}) do ignore[s] = true end

    local refreshed = false
    while true do
      local hdrs = {}
      for k, v in pairs(headers) do hdrs[k] = v end
      local full, err = credentials(url, hdrs)
      if not full then return nil, err end
      local lines = {}
      for _, v in pairs(hdrs) do lines[#lines + 1] = v[1] .. ": " .. v[2] end
      table.sort(lines)
      local resp, perr, attempts, elapsed, last = perform({ method = method, url = full, headers = lines, body = body })
      if resp and resp.status == 401 and auth.type == "oauth2" and not refreshed
          and not (base_origin and M.origin(full) ~= base_origin) then
        -- the token may have been revoked early: fetch a new one, once
        refreshed = true
        local _, terr = oauth_token(true)
        if terr then return nil, terr end
      elseif resp and ((resp.status >= 200 and resp.status <= 299) or ignore[resp.status]) then
        resp.attempts = attempts
        return resp
      elseif last and ignore[last.status] then -- retried to the end, and ignorable
        last.attempts = attempts
        return last
      else
        resp = resp or last
        if resp and not perr then perr = M.status_text(resp.status) end
        return nil, message(method, full, perr .. " " .. tried(attempts, elapsed) .. body_snippet(resp and resp.body)), resp
      end
    end
  end

  function client.get(url_or_path, ropts) return client.request("GET", url_or_path, ropts) end
  function client.post(url_or_path, ropts) return client.request("POST", url_or_path, ropts) end

  return client
end

local AUTH_TYPES = { none = true, bearer = true, basic = true, api_key = true, oauth2 = true }

-- The client of a validated system: the fields of dp.connector.http_fields. A field of another
-- shape (a connector of its own may use the name `auth` for something else) is left out.
function M.for_system(system, opts)
  opts = opts or {}
  local function tbl(v) return type(v) == "table" and v or nil end
  local rl = tbl(system.rate_limit)
  local auth = tbl(system.auth)
  return M.new {
    name = system.name,
    base_url = M.is_absolute(system.base_url) and system.base_url or nil,
    headers = tbl(system.headers),
    auth = auth and AUTH_TYPES[auth.type] and auth or nil,
    rate_limit = rl and type(rl.requests) == "number" and { requests = rl.requests, window = M.PER[rl.per] or 1 } or nil,
    retry = tbl(system.retry), timeout = tbl(system.timeout),
    max_response_bytes = type(system.max_response_bytes) == "number" and system.max_response_bytes or nil,
    secret = opts.secret, log = opts.log,
  }
end

return M
