-- rest connector: any JSON REST API, declared in metadata (like dlt's rest_api source and
-- Airbyte's low-code connectors). See docs/connectors.md, "The rest connector".
--
-- systems.json:  { "name": "github", "type": "rest", "base_url": "https://api.github.com",
--                  "auth": { "type": "bearer", "token": { "secret": "github_token" } } }
--   + headers, rate_limit, retry, timeout, max_response_bytes (dp.connector.http_fields)
-- entities.json: "source": { "path": "/user/repos", "params": { "per_page": 100 },
--                  "record_selector": "", "paginator": { "type": "link_header" },
--                  "incremental": { "cursor_path": "updated_at", "param": "since" },
--                  "parent": "repos", "include_from_parent": { "repo": "full_name" } }
--
-- Records are cut out of each response by the C scanner (ctx.json.records) and emitted as the
-- exact source text, one batch per page. The new cursor is the largest cursor_path value seen.
local connector = require "dp.connector"
local paginators = require "dp.paginators"

local PLACEHOLDER = "{parent%.([^{}]+)}"

local function q(s)
  return '"' .. tostring(s) .. '"'
end

local function scalar(v)
  local t = type(v)
  return t == "string" or t == "number" or t == "boolean"
end

local function param_value(v)
  if scalar(v) then return true end
  return nil, "expected a string, number or boolean"
end

local function dotted_or_root(v)
  if v == "" then return true end
  return paginators.dotted_path(v)
end

local function uses_parent(source)
  if source.path:find(PLACEHOLDER) then return true end
  for _, v in pairs(source.params or {}) do
    if type(v) == "string" and v:find(PLACEHOLDER) then return true end
  end
  return false
end

local entity_schema = {
  fields = {
    { path = { type = "string", required = true, len_min = 1,
      description = "endpoint path joined to base_url, or an absolute URL; may hold {parent.<path>} placeholders" } },
    { method = { type = "string", one_of = { "GET", "POST" }, default = "GET", description = "the HTTP method" } },
    { params = { type = "map", keys = { type = "string", custom_validator = connector.header_name,
      description = "parameter name" },
      values = { type = "any", custom_validator = param_value, description = "string, number or boolean" },
      default = {}, description = "query parameters; string values may hold {parent.<path>}" } },
    { headers = { type = "map", keys = { type = "string", custom_validator = connector.header_name,
      description = "header name" }, values = { type = "string", description = "header value" }, default = {},
      description = "extra headers for this entity" } },
    { json = { type = "any", description = "JSON request body (with method POST)" } },
    { record_selector = { type = "string", default = "", custom_validator = dotted_or_root,
      description = "dotted path to the records: an array, one object, or null (none); \"\" is the whole response" } },
    { paginator = paginators.schema() },
    { incremental = { type = "record", description = "what to send from the cursor; needs load_type delta",
      fields = {
      { cursor_path = { type = "string", custom_validator = paginators.dotted_path,
        description = "dotted path of the cursor in each record (default: the path of the entity's cursor column)" } },
      { param = { type = "string", required = true, custom_validator = connector.header_name,
        description = "query parameter (or header) to send the cursor in" } },
      { ["in"] = { type = "string", one_of = { "query", "header" }, default = "query",
        description = "send it as a query parameter or a header" } },
      { initial_value = { type = "string", description = "what to send when there is no cursor yet (default: nothing)" } },
      { send_as = { type = "string", one_of = { "value", "unix_seconds" }, default = "value",
        description = "value: as stored; unix_seconds: an ISO 8601 timestamp as seconds since 1970" } },
    } } },
    { parent = { type = "string", match = "^[a-z][a-z0-9_]*$",
      description = "another entity of the system, read first; each of its records fills {parent.<path>}" } },
    { include_from_parent = { type = "map", keys = { type = "string", len_min = 1, description = "record field" },
      values = { type = "string", custom_validator = paginators.dotted_path, description = "dotted path in the parent record" },
      default = {}, description = "parent fields copied into each child record" } },
    { ignore_status = { type = "list", elements = { type = "integer", between = { 100, 599 }, description = "an HTTP status" },
      default = {}, description = "statuses that mean no records here (e.g. [404, 409])" } },
  },
  checks = {
    function(s)
      local errs = {}
      if not s.parent then
        if next(s.include_from_parent) then
          errs[#errs + 1] = { "include_from_parent", 'needs "parent"' }
        end
        if uses_parent(s) then
          errs[#errs + 1] = { "path", '{parent.…} placeholders need "parent"' }
        end
      end
      if s.json ~= nil and s.method ~= "POST" then
        errs[#errs + 1] = { "json", 'a request body needs "method": "POST"' }
      end
      if #errs > 0 then return nil, errs end
      return true
    end,
  },
}

-- The chain of entities from the top parent down to this one.
local function chain_of(ctx)
  local chain, names = {}, {}
  local e = ctx.entity
  while true do
    for _, n in ipairs(names) do
      if n == e.name then
        error("source.parent: entity " .. q(e.name) .. " is its own ancestor ("
          .. table.concat(names, " -> ") .. " -> " .. e.name .. ")", 0)
      end
    end
    names[#names + 1] = e.name
    table.insert(chain, 1, e)
    local parent = e.source.parent
    if not parent then break end
    local pe = ctx.entities[parent]
    if not pe then
      error("source.parent: no entity " .. q(parent) .. " in system " .. q(ctx.system.name), 0)
    end
    e = pe
  end
  return chain
end

-- Fills {parent.x} placeholders from the parent record (exact text; strings decoded).
local function fill(ctx, template, parent, in_path)
  if not parent then return template end
  return (template:gsub(PLACEHOLDER, function(path)
    local v, err = ctx.json.value(parent, path)
    if err then error(err, 0) end
    if v == nil then
      error("placeholder {parent." .. path .. "}: the parent record has no " .. q(path) .. ": " .. parent:sub(1, 200), 0)
    end
    if type(v) ~= "string" then v = tostring(v) end
    if in_path then
      return (v:gsub("[^%w%-%._~/]", function(c) return string.format("%%%02X", c:byte()) end))
    end
    return v
  end))
end

-- Adds the include_from_parent fields at the front of a record (compact JSON text).
local function add_parent_fields(ctx, rec, parent, fields, names)
  local parts = {}
  for _, name in ipairs(names) do
    if ctx.json.select(rec, name) ~= nil then
      error("include_from_parent: the record already has a field " .. q(name) .. ": " .. rec:sub(1, 200), 0)
    end
    local v = ctx.json.select(parent, fields[name]) or "null"
    parts[#parts + 1] = connector.json_string(name) .. ":" .. v
  end
  if #parts == 0 then return rec end
  local head = table.concat(parts, ",")
  if rec == "{}" then return "{" .. head .. "}" end
  return "{" .. head .. "," .. rec:sub(2)
end

local function cursor_param(inc, value)
  if inc.send_as == "unix_seconds" and not tostring(value):match("^%-?%d+$") then
    local secs, err = connector.iso_to_unix(value)
    if not secs then error("incremental: cannot send cursor " .. q(value) .. " as unix_seconds: " .. err, 0) end
    return string.format("%d", secs)
  end
  return value
end

local function extract(ctx)
  local source = ctx.entity.source
  local inc = source.incremental
  if inc and ctx.entity.load_type ~= "delta" then
    error('source.incremental needs "load_type": "delta" (entity ' .. q(ctx.entity.name) .. ' is a full load)', 0)
  end
  local cursor_path = inc and inc.cursor_path
  if inc and not cursor_path then
    -- default: the source path of the entity's cursor column
    for _, col in ipairs(ctx.entity.columns) do
      if col.name == ctx.entity.cursor then cursor_path = col.path end
    end
    if not cursor_path then
      error('source.incremental needs "cursor_path", or a "cursor" column on the entity', 0)
    end
  end
  local chain = chain_of(ctx)
  local since = ctx.cursor or (inc and inc.initial_value)
  local new_cursor = ctx.cursor
  local stats = { records = 0, pages = 0 }

  -- Reads every page of entity e (filled from the parent record, if any); calls
  -- on_records(records) for each page.
  local function read(e, parent, leaf, on_records)
    local s = e.source
    local params = {}
    for k, v in pairs(s.params) do
      params[k] = type(v) == "string" and fill(ctx, v, parent, false) or v
    end
    local headers = {}
    for k, v in pairs(s.headers) do headers[k] = v end
    if leaf and inc and since ~= nil then
      local value = cursor_param(inc, since)
      if inc["in"] == "header" then headers[inc.param] = value else params[inc.param] = value end
    end
    local req = { url = fill(ctx, s.path, parent, true), params = params }
    local pager = paginators.new(s.paginator, ctx.json)
    pager:init(req)
    local ignore = {}
    for _, st in ipairs(s.ignore_status) do ignore[st] = true end
    local pages = 0
    while true do
      local resp, err = ctx.http.request(s.method, req.url,
        { params = req.params, headers = headers, json = s.json, ignore_status = s.ignore_status })
      if not resp then error(err, 0) end
      local where = s.method .. " " .. ctx.http.redact(resp.url)
      if ignore[resp.status] then
        ctx.log.info("%s: HTTP %d, read as no records (ignore_status)", where, resp.status)
        return
      end
      local records, rerr = ctx.json.records(resp.body, s.record_selector)
      if not records then
        if rerr:match("^no value at") then
          rerr = "record_selector " .. q(s.record_selector) .. " is not in the response: " .. resp.body:sub(1, 200)
        end
        error(where .. ": " .. rerr, 0)
      end
      for i, rec in ipairs(records) do
        if rec:sub(1, 1) ~= "{" then
          error(where .. ": record " .. i .. " at record_selector " .. q(s.record_selector)
            .. " is not a JSON object: " .. rec:sub(1, 100), 0)
        end
      end
      pages = pages + 1
      on_records(records, #records)
      local ok, more = pcall(pager.next, pager, req, resp, #records)
      if not ok then error(where .. ": " .. tostring(more), 0) end
      if not more then return end
      if s.paginator.max_pages and pages >= s.paginator.max_pages then
        ctx.log.warn("%s: stopping after max_pages = %d (there are more pages)", where, s.paginator.max_pages)
        return
      end
    end
  end

  local leaf_source = chain[#chain].source
  local names = {}
  for name in pairs(leaf_source.include_from_parent) do names[#names + 1] = name end
  table.sort(names)

  local function walk(level, parent)
    local e = chain[level]
    local leaf = level == #chain
    read(e, parent, leaf, function(records)
      if not leaf then
        for _, rec in ipairs(records) do walk(level + 1, rec) end
        return
      end
      if #names > 0 then
        for i, rec in ipairs(records) do
          records[i] = add_parent_fields(ctx, rec, parent, leaf_source.include_from_parent, names)
        end
      end
      if inc then
        for _, rec in ipairs(records) do
          local v = ctx.json.value(rec, cursor_path)
          if v ~= nil and type(v) ~= "boolean" then new_cursor = connector.max_cursor(new_cursor, v) end
        end
      end
      stats.records = stats.records + #records
      stats.pages = stats.pages + 1
      if #records > 0 then ctx.emit(records) end
    end)
  end
  walk(1, nil)

  ctx.log.info("%d records in %d pages", stats.records, stats.pages)
  if ctx.entity.load_type == "delta" and inc then return new_cursor end
  return nil
end

return {
  description = "any JSON REST API, declared in metadata: paths, paginators, auth, incremental, parent/child",
  system_schema = { fields = connector.http_fields { base_url_required = true } },
  entity_schema = entity_schema,
  extract = extract,
}
