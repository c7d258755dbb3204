-- dp.connector: the library connectors build on; scripts may require it (a fresh instance per
-- script). Pure data and pure functions: it hands out no I/O.
--
--   connector.http_fields { base_url_required = true }  -- system_schema fields for ctx.http
--   connector.Auth                                      -- the auth union (none, bearer, basic, api_key, oauth2)
--   connector.compare_cursor(a, b), connector.max_cursor(a, b)
--   connector.iso_to_unix("2024-01-01T00:00:00Z")      -- 1704067200
--   connector.json_string(s)                           -- s as a JSON string literal
--   connector.batcher(ctx, size)                       -- push(record), flush()
--
-- The shape of a connector module is checked by dp.sandbox.load_connector, not here.
local schema = require "dp.schema"
local models = require "dp.models"

local M = {}
local quote = schema.quote
local sos = models.string_or_secret

local function http_url(v)
  if not v:lower():match("^https?://[^/?#]+") then
    return nil, quote(v) .. " is not an http:// or https:// URL"
  end
  return true
end
M.http_url = http_url

-- An HTTP header or query parameter name (RFC 9110 token).
local function token(v)
  if not v:match("^[%w!#$%%&'*+.^_`|~-]+$") then
    return nil, quote(v) .. " is not a valid header or parameter name"
  end
  return true
end
M.header_name = token

local function auth_def()
  return {
    type = "union",
    discriminator = "type",
    default = { type = "none" },
    description = "how requests authenticate; credentials may be {\"secret\": \"name\"}",
    choices = {
      none = { type = "record", fields = {} },
      bearer = { type = "record", fields = {
        { token = sos { required = true, len_min = 1, description = "sent as Authorization: Bearer <token>" } },
      } },
      basic = { type = "record", fields = {
        { username = sos { required = true, len_min = 1, description = "user name of HTTP basic auth" } },
        { password = sos { required = true, description = "password of HTTP basic auth" } },
      } },
      api_key = { type = "record", fields = {
        { name = { type = "string", required = true, custom_validator = token,
          description = "header or query parameter name" } },
        { value = sos { required = true, len_min = 1, description = "the key" } },
        { ["in"] = { type = "string", one_of = { "header", "query" }, default = "header",
          description = "send it as a header or as a query parameter" } },
      } },
      oauth2 = { type = "record",
        fields = {
          { token_url = { type = "string", required = true, custom_validator = http_url,
            description = "where the access token is fetched (form POST)" } },
          { grant_type = { type = "string", one_of = { "refresh_token", "client_credentials" }, default = "refresh_token",
            description = "the OAuth2 grant used to get an access token" } },
          { client_id = sos { required = true, len_min = 1, description = "the application's client id" } },
          { client_secret = sos { description = "the application's secret (required for client_credentials)" } },
          { refresh_token = sos { description = "long-lived refresh token (required for refresh_token)" } },
          { scope = { type = "string", description = "scopes to ask for, space-separated" } },
          { client_auth = { type = "string", one_of = { "body", "basic" }, default = "body",
            description = "send the client credentials in the form body or as HTTP basic auth" } },
        },
        checks = {
          function(a)
            if a.grant_type == "refresh_token" and a.refresh_token == nil then
              return nil, { { "refresh_token", 'required when grant_type is "refresh_token"' } }
            end
            if a.grant_type == "client_credentials" and a.client_secret == nil then
              return nil, { { "client_secret", 'required when grant_type is "client_credentials"' } }
            end
            return true
          end,
        },
      },
    },
  }
end

M.Auth = schema.define(auth_def())

-- The system fields of an HTTP source (see docs/connectors.md, "System fields for HTTP"); a new
-- list each call, to put in a connector's system_schema.fields (add your own after them).
function M.http_fields(opts)
  opts = opts or {}
  return {
    { base_url = { type = "string", required = opts.base_url_required == true, custom_validator = http_url,
      description = "http:// or https:// URL that relative paths are joined to" } },
    { headers = { type = "map", keys = { type = "string", custom_validator = token,
      description = "header name" }, values = sos { description = "header value" }, default = {},
      description = "headers sent with every request" } },
    { auth = auth_def() },
    { rate_limit = { type = "record",
      description = "at most that many request starts in any window, shared by the system's entities in one run",
      fields = {
      { requests = { type = "integer", required = true, between = { 1, 1000000 },
        description = "request starts allowed per window" } },
      { per = { type = "string", one_of = { "second", "minute", "hour" }, default = "second",
        description = "the window" } },
    } } },
    { retry = { type = "record", default = {}, description = "retries of network errors, 408, 429 and 5xx",
      fields = {
      { max_attempts = { type = "integer", between = { 1, 20 }, default = 5,
        description = "attempts per request (1: no retry)" } },
      { backoff_seconds = { type = "number", between = { 0, 3600 }, default = 1,
        description = "the first back-off; it doubles after each attempt" } },
      { max_backoff_seconds = { type = "number", between = { 0, 86400 }, default = 60,
        description = "cap on one back-off" } },
      { max_wait_seconds = { type = "number", between = { 0, 86400 }, default = 300,
        description = "cap on the total time spent waiting for one request" } },
    } } },
    { timeout = { type = "record", default = {}, description = "timeouts per attempt", fields = {
      { connect_seconds = { type = "number", between = { 0.001, 600 }, default = 10,
        description = "to connect" } },
      { total_seconds = { type = "number", between = { 0.001, 86400 }, default = 60,
        description = "for the whole attempt" } },
    } } },
    { max_response_bytes = { type = "integer", between = { 1024, 2 ^ 40 }, default = 64 * 1024 * 1024,
      description = "a larger response fails (not retried)" } },
  }
end

---------------------------------------------------------------------------------------------
-- Cursors

local function int_text(v)
  if type(v) ~= "string" then return nil end
  local sign, digits = v:match("^(%-?)0*(%d+)$")
  if not digits then return nil end
  if digits == "0" then sign = "" end
  return sign, digits
end

-- Orders two cursor values: -1, 0 or 1. Integers (numbers or integer texts such as
-- "9007199254740993") compare as exact numbers, other numbers as numbers, the rest as text.
function M.compare_cursor(a, b)
  if type(a) == "number" and a == math.floor(a) and math.abs(a) < 2 ^ 53 then a = string.format("%d", a) end
  if type(b) == "number" and b == math.floor(b) and math.abs(b) < 2 ^ 53 then b = string.format("%d", b) end
  local sa, da = int_text(a)
  local sb, db = int_text(b)
  if da and db then
    if sa ~= sb then return sa == "-" and -1 or 1 end
    local r
    if #da ~= #db then r = #da < #db and -1 or 1
    elseif da == db then r = 0
    else r = da < db and -1 or 1 end
    return sa == "-" and -r or r
  end
  local na, nb = tonumber(a), tonumber(b)
  if na and nb and type(a) ~= "boolean" then
    if na == nb then return 0 end
    return na < nb and -1 or 1
  end
  a, b = tostring(a), tostring(b)
  if a == b then return 0 end
  return a < b and -1 or 1
end

-- The larger of two cursor values (either may be nil).
function M.max_cursor(a, b)
  if a == nil then return b end
  if b == nil then return a end
  return M.compare_cursor(a, b) >= 0 and a or b
end

local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Seconds since 1970 of an ISO 8601 timestamp ("2024-01-01", "2024-01-01T10:00:00Z",
-- "2024-01-01 10:00:00.5+01:00"; no zone means UTC), truncated to whole seconds; or nil, err.
function M.iso_to_unix(s)
  if type(s) ~= "string" then return nil, "not a timestamp: " .. schema.describe(s) end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil, quote(s) .. " is not an ISO 8601 timestamp" end
  local h, mi, sec, zone = 0, 0, 0, ""
  if rest ~= "" then
    local hh, mm, tail = rest:match("^[Tt ](%d%d):(%d%d)(.*)$")
    if not hh then return nil, quote(s) .. " is not an ISO 8601 timestamp" end
    h, mi = tonumber(hh), tonumber(mm)
    local ss, tail2 = tail:match("^:(%d%d)(.*)$")
    if ss then sec, tail = tonumber(ss), tail2 end
    tail = tail:gsub("^[.,]%d+", "")
    zone = tail
  end
  local offset = 0
  if zone ~= "" and zone ~= "Z" and zone ~= "z" then
    local sign, zh, zm = zone:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil, quote(s) .. " has an unknown time zone " .. quote(zone) end
    offset = (tonumber(zh) * 3600 + tonumber(zm) * 60) * (sign == "-" and -1 or 1)
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then
    return nil, quote(s) .. " is not a valid date and time"
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
end

---------------------------------------------------------------------------------------------
-- Records

-- s as a JSON string literal (UTF-8 kept as is; quotes, backslashes and control characters
-- escaped). Unlike cjson it leaves "/" alone.
function M.json_string(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\r" then return "\\r" end
    if c == "\t" then return "\\t" end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- Collects records and emits them in batches of `size` (default 1000).
function M.batcher(ctx, size)
  size = size or 1000
  local batch, total = {}, 0
  local b = {}
  function b.push(rec)
    batch[#batch + 1] = rec
    total = total + 1
    if #batch >= size then
      ctx.emit(batch)
      batch = {}
    end
  end
  function b.flush()
    if #batch > 0 then ctx.emit(batch) end
    batch = {}
    return total
  end
  return b
end

return M
