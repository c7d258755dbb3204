-- dp.paginators: how a REST endpoint is read page by page; scripts may require it. Each
-- paginator is declared in metadata (paginators.schema()) and driven like dlt's paginators:
--
--   local p = paginators.new(spec, json)     -- spec: a validated paginator; json: ctx.json
--   p:init(req)                              -- req = { url = path_or_url, params = {...} }
--   while true do
--     local resp = ... fetch req ...; local records = ...
--     if not p:next(req, resp, #records) then break end   -- updates req for the next page
--   end
--
-- `next` returns true when there is another page (req changed), false at the end, or raises a
-- plain error when the response makes no sense (a token that repeats, a total that is not a
-- number). No I/O here: the caller does the requests.
local schema = require "dp.schema"

local M = {}
local quote = schema.quote

M.TYPES = { "single_page", "offset", "page_number", "cursor", "next_url", "link_header" }

local function dotted(v)
  for seg in (v .. "."):gmatch("([^.]*)%.") do
    if seg == "" then return nil, quote(v) .. " is not a dotted path (e.g. meta.next)" end
  end
  return true
end
M.dotted_path = dotted

-- The paginator union; a new definition each call (default { type = "single_page" }).
function M.schema()
  local max_pages = { max_pages = { type = "integer", between = { 1, 1000000000 },
    description = "stop after this many pages, with a warning (default: no limit)" } }
  local param = function(default, required, description)
    return { type = "string", default = default, required = required, len_min = 1, description = description }
  end
  local path = function(required, description)
    return { type = "string", required = required, custom_validator = dotted, description = description }
  end
  local stop_short = { stop_on_short_page = { type = "boolean", default = false,
    description = "a page shorter than the page size is the last one" } }
  return {
    type = "union",
    discriminator = "type",
    default = { type = "single_page" },
    description = "how to get the next page",
    choices = {
      single_page = { type = "record", fields = {} },
      offset = { type = "record", fields = {
        { limit = { type = "integer", required = true, between = { 1, 1000000 }, description = "records per page" } },
        { offset_param = param("offset", nil, "query parameter of the offset") },
        { limit_param = param("limit", nil, "query parameter of the limit") },
        { start = { type = "integer", default = 0, between = { 0, 2 ^ 53 }, description = "the first offset" } },
        { total_path = path(false, "dotted path of the total record count in the body") },
        stop_short,
        max_pages,
      } },
      page_number = { type = "record",
        fields = {
          { page_param = param("page", nil, "query parameter of the page number") },
          { start = { type = "integer", default = 1, between = { 0, 2 ^ 53 }, description = "the first page number" } },
          { page_size = { type = "integer", between = { 1, 1000000 }, description = "records per page" } },
          { size_param = param(nil, nil, "query parameter to send page_size in") },
          { total_pages_path = path(false, "dotted path of the page count in the body") },
          stop_short,
          max_pages,
        },
        checks = {
          function(p)
            if p.size_param and not p.page_size then
              return nil, { { "page_size", "required when size_param is given" } }
            end
            if p.stop_on_short_page and not p.page_size then
              return nil, { { "page_size", "required when stop_on_short_page is true" } }
            end
            return true
          end,
        },
      },
      cursor = { type = "record", fields = {
        { cursor_path = path(true, "dotted path of the next token in the body (absent, null or \"\": the end)") },
        { cursor_param = param(nil, true, "query parameter to send the token in") },
        max_pages,
      } },
      next_url = { type = "record", fields = {
        { next_url_path = path(true, "dotted path of the next URL in the body (absent, null or \"\": the end)") },
        max_pages,
      } },
      link_header = { type = "record", fields = {
        { rel = param("next", nil, "the rel of the Link header's URL to follow") },
        max_pages,
      } },
    },
  }
end

-- { rel = url } from a Link header (RFC 8288): `<url>; rel="next", <url>; rel="last"`. A rel
-- with several values ("next last") lists the URL under each.
function M.parse_link(header)
  local out = {}
  if type(header) ~= "string" then return out end
  for url, params in header:gmatch("<([^>]*)>([^<]*)") do
    local rel = params:match('[Rr][Ee][Ll]%s*=%s*"([^"]*)"') or params:match("[Rr][Ee][Ll]%s*=%s*([^;,%s]+)")
    if rel then
      for r in rel:gmatch("%S+") do
        r = r:lower()
        if out[r] == nil then out[r] = url end
      end
    end
  end
  return out
end

local function resolve(current, ref)
  if ref:lower():match("^https?://") then return ref end
  local scheme, authority, path = current:match("^(%a[%w+.-]*://)([^/?#]*)([^?#]*)")
  if not scheme then return ref end
  if ref:sub(1, 2) == "//" then return scheme:match("^(.-)//") .. ref end
  if ref:sub(1, 1) == "/" then return scheme .. authority .. ref end
  if ref:sub(1, 1) == "?" then return scheme .. authority .. path .. ref end
  return scheme .. authority .. (path:match("^(.*/)") or "/") .. ref
end
M.resolve = resolve

local function number_at(json, body, path, what)
  local v, err = json.value(body, path)
  if err then error(err, 0) end
  if v == nil then return nil end
  local n = tonumber(v)
  if not n then error(what .. " at " .. quote(path) .. " is " .. schema.describe(v) .. ", not a number", 0) end
  return n
end

local P = {}
P.__index = P

function M.new(spec, json)
  spec = spec or { type = "single_page" }
  local p = setmetatable({ spec = spec, json = json, seen = {} }, P)
  local known = false
  for _, t in ipairs(M.TYPES) do known = known or t == spec.type end
  if not known then error("unknown paginator type " .. schema.describe(spec.type), 2) end
  return p
end

function P:init(req)
  local s = self.spec
  req.params = req.params or {}
  if s.type == "offset" then
    self.offset = s.start or 0
    req.params[s.offset_param or "offset"] = self.offset
    req.params[s.limit_param or "limit"] = s.limit
  elseif s.type == "page_number" then
    self.page = s.start or 1
    req.params[s.page_param or "page"] = self.page
    if s.size_param then req.params[s.size_param] = s.page_size end
  end
end

-- Moves req to an absolute next URL; the entity's params were for the first request only.
local function go(self, req, resp, ref)
  local url = resolve(resp.url, ref)
  self.seen[resp.url] = true
  if self.seen[url] then
    error("the next page is " .. quote(url) .. " again: stopping instead of looping", 0)
  end
  self.seen[url] = true
  req.url, req.params = url, {}
  return true
end

-- After a page: updates req and returns true when there is a next page.
function P:next(req, resp, count)
  local s, json = self.spec, self.json
  local t = s.type
  if t == "single_page" then return false end
  if t == "offset" then
    if count == 0 then return false end
    if s.stop_on_short_page and count < s.limit then return false end
    self.offset = self.offset + s.limit
    if s.total_path then
      local total = number_at(json, resp.body, s.total_path, "the total")
      if total and self.offset >= total then return false end
    end
    req.params[s.offset_param or "offset"] = self.offset
    return true
  elseif t == "page_number" then
    if count == 0 then return false end
    if s.stop_on_short_page and count < s.page_size then return false end
    if s.total_pages_path then
      local pages = number_at(json, resp.body, s.total_pages_path, "the page count")
      -- pages counted from `start`: the last page is start + pages - 1
      if pages and self.page >= (s.start or 1) + pages - 1 then return false end
    end
    self.page = self.page + 1
    req.params[s.page_param or "page"] = self.page
    return true
  elseif t == "cursor" then
    local token, err = json.value(resp.body, s.cursor_path)
    if err then error(err, 0) end
    if token == nil or token == "" or token == false then return false end
    if type(token) ~= "string" then token = tostring(token) end
    if self.seen[token] then
      error("the next-page token at " .. quote(s.cursor_path) .. " is " .. quote(token) .. " again: stopping instead of looping", 0)
    end
    self.seen[token] = true
    req.params[s.cursor_param] = token
    return true
  elseif t == "next_url" then
    local url, err = json.value(resp.body, s.next_url_path)
    if err then error(err, 0) end
    if url == nil or url == "" or url == false then return false end
    if type(url) ~= "string" then
      error("the next URL at " .. quote(s.next_url_path) .. " is " .. schema.describe(url) .. ", not a string", 0)
    end
    return go(self, req, resp, url)
  elseif t == "link_header" then
    local url = M.parse_link(resp.headers and resp.headers.link)[(s.rel or "next"):lower()]
    if not url or url == "" then return false end
    return go(self, req, resp, url)
  end
  return false
end

return M
