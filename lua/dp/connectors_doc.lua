-- dp.connectors_doc: the options of connector types, written from the schema DSL's field
-- descriptions (in the spirit of Fluent Bit's config maps, where help text and docs come from
-- the map). One source for three outputs:
--
--   doc.list(scripts_dir)                   -- `dp-engine connectors list`: { {type, description, path, err} }
--   doc.show(conn, type_name, "text"|"json"|"markdown")   -- `dp-engine connectors show TYPE`
--   doc.blocks(conn, type_name)             -- { {id = "file system", text = "| field | ..."} }
--   doc.splice(markdown, blocks)            -- the text with its generated blocks replaced
--
-- A generated block in docs/ sits between two marker lines:
--   <!-- BEGIN generated: file system (dp-engine connectors show file --markdown) -->
--   ...
--   <!-- END generated -->
-- spec/01-unit/connectors_doc_spec.lua fails when a block differs from what the schemas give.
local schema = require "dp.schema"
local models = require "dp.models"

local M = {}

-- The fields of a record definition as { name, def } pairs, in order.
local function fields_of(def)
  local out = {}
  for _, entry in ipairs(def.fields or {}) do
    local name, fdef = next(entry)
    out[#out + 1] = { name = name, def = fdef }
  end
  return out
end

local function range(def)
  if def.between then
    return " " .. schema.format_number(def.between[1]) .. "-" .. schema.format_number(def.between[2])
  end
  return ""
end

local function is_secret_union(def)
  return def.type == "union" and def.alternatives ~= nil and #def.alternatives == 2
    and (def.alternatives[2].fields ~= nil) and (def.alternatives[1].type == "string")
end

local function sorted_choices(def)
  local names = {}
  for k in pairs(def.choices) do names[#names + 1] = k end
  table.sort(names)
  return names
end

-- A short type text: string, integer 1-20, "GET" | "POST", list of integer, object, ...
local function type_text(def)
  local t = def.type or "record"
  if def.one_of then
    local parts = {}
    for i, v in ipairs(def.one_of) do parts[i] = type(v) == "string" and v or schema.describe(v) end
    return table.concat(parts, " | ")
  end
  if t == "string" or t == "boolean" or t == "any" then return t == "any" and "JSON value" or t end
  if t == "integer" or t == "number" then return t .. range(def) end
  if t == "list" then return "list of " .. type_text(def.elements) end
  if t == "map" then return "object of " .. type_text(def.values) end
  if t == "record" then return "object" end
  if t == "union" then
    if is_secret_union(def) then return "string or secret" end
    if def.discriminator then
      return "object by " .. def.discriminator .. ": " .. table.concat(sorted_choices(def), " | ")
    end
    local parts = {}
    for i, alt in ipairs(def.alternatives) do parts[i] = type_text(alt) end
    return table.concat(parts, " or ")
  end
  return t
end

local function default_text(def)
  if def.required then return "required" end
  local d = def.default
  if d == nil then return "" end
  if type(d) == "function" then return "computed" end
  if type(d) == "string" then return d == "" and '""' or d end
  if type(d) == "table" and next(d) == nil then return def.type == "list" and "[]" or "{}" end
  return schema.encode(d)
end

-- Rows of a record definition: { name = "csv.delimiter", type, default, description, def }.
-- Records are followed into their fields (dotted names); a union with a discriminator gives one
-- row and a variant table (variants[name] = { choice = rows }).
local function rows_of(def, prefix, out, variants)
  for _, f in ipairs(fields_of(def)) do
    local name = prefix .. f.name
    local fdef = f.def
    out[#out + 1] = { name = name, type = type_text(fdef), default = default_text(fdef),
      description = fdef.description or "", def = fdef }
    if (fdef.type or "record") == "record" and fdef.fields and #fdef.fields > 0 then
      rows_of(fdef, name .. ".", out, variants)
    elseif fdef.type == "union" and fdef.discriminator then
      local v = { field = name, discriminator = fdef.discriminator, choices = {} }
      for _, c in ipairs(sorted_choices(fdef)) do
        v.choices[#v.choices + 1] = { name = c, rows = rows_of(fdef.choices[c], "", {}, variants) }
      end
      variants[#variants + 1] = v
    end
  end
  return out
end

-- The documented model of a connector: its system options, entity source options and the
-- variants of its tagged unions (auth, paginator).
function M.model(conn, type_name)
  local variants = {}
  return {
    type = type_name,
    description = conn.description or "",
    path = conn.path,
    system = rows_of(conn.system_schema or { fields = {} }, "", {}, variants),
    source = rows_of(conn.entity_schema or { fields = {} }, "", {}, variants),
    variants = variants,
  }
end

-- Every field of a definition that lacks a description, as paths ("auth.bearer.token"); for
-- the spec that keeps descriptions complete.
function M.undescribed(def, path, out)
  out = out or {}
  local t = def.type or "record"
  if t == "record" then
    for _, f in ipairs(fields_of(def)) do
      local p = path == "" and f.name or path .. "." .. f.name
      if not f.def.description then out[#out + 1] = p end
      M.undescribed(f.def, p, out)
    end
  elseif t == "union" and def.discriminator then
    for _, c in ipairs(sorted_choices(def)) do M.undescribed(def.choices[c], path .. "." .. c, out) end
  elseif t == "list" then
    M.undescribed(def.elements, path .. "[]", out)
  end
  return out
end

---------------------------------------------------------------------------------------------
-- Text

local BASE_SYSTEM = {}
for _, entry in ipairs(models.SYSTEM_FIELDS) do BASE_SYSTEM[#BASE_SYSTEM + 1] = (next(entry)) end

local function wrap(text, width, indent)
  local lines, line = {}, ""
  for word in text:gmatch("%S+") do
    if line ~= "" and #line + 1 + #word > width then
      lines[#lines + 1] = indent .. line
      line = word
    else
      line = line == "" and word or line .. " " .. word
    end
  end
  if line ~= "" then lines[#lines + 1] = indent .. line end
  return lines
end

local function text_rows(out, rows, indent)
  for _, r in ipairs(rows) do
    local head = indent .. r.name .. "  " .. r.type
    if r.default ~= "" then head = head .. "  (" .. (r.default == "required" and "required" or "default " .. r.default) .. ")" end
    out[#out + 1] = head
    for _, l in ipairs(wrap(r.description, 96 - #indent, indent .. "    ")) do out[#out + 1] = l end
  end
  if #rows == 0 then out[#out + 1] = indent .. "(none)" end
end

local function text_show(m)
  local out = { m.type .. ": " .. m.description, "script: " .. tostring(m.path), "" }
  out[#out + 1] = "System options (systems.json, besides " .. table.concat(BASE_SYSTEM, ", ") .. "):"
  text_rows(out, m.system, "  ")
  out[#out + 1] = ""
  out[#out + 1] = "Entity options (entities.json, under \"source\"):"
  text_rows(out, m.source, "  ")
  for _, v in ipairs(m.variants) do
    out[#out + 1] = ""
    out[#out + 1] = v.field .. ": pick one with \"" .. v.discriminator .. "\""
    for _, c in ipairs(v.choices) do
      out[#out + 1] = "  " .. v.discriminator .. " = " .. c.name .. (#c.rows == 0 and "  (no options)" or "")
      if #c.rows > 0 then text_rows(out, c.rows, "    ") end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

---------------------------------------------------------------------------------------------
-- JSON

local function json_rows(rows)
  local out = setmetatable({}, schema.ARRAY)
  for i, r in ipairs(rows) do
    out[i] = { name = r.name, type = r.type, required = r.def.required == true,
      default = (r.default ~= "" and r.default ~= "required") and r.default or nil,
      description = r.description }
  end
  return out
end

local function json_show(m)
  local variants = setmetatable({}, schema.ARRAY)
  for i, v in ipairs(m.variants) do
    local choices = setmetatable({}, schema.ARRAY)
    for j, c in ipairs(v.choices) do choices[j] = { name = c.name, options = json_rows(c.rows) } end
    variants[i] = { field = v.field, discriminator = v.discriminator, choices = choices }
  end
  return schema.encode({ type = m.type, description = m.description, script = m.path,
    system = json_rows(m.system), source = json_rows(m.source), variants = variants }) .. "\n"
end

---------------------------------------------------------------------------------------------
-- Markdown

-- A table cell: | escaped, and < > as entities (a Markdown renderer would take <path> for HTML).
local function cell(s)
  s = s:gsub("|", "\\|"):gsub("<", "&lt;"):gsub(">", "&gt;")
  return s
end

local function code(s)
  if s == "" then return "" end
  return "`" .. s .. "`"
end

local function md_type(t)
  -- one_of lists are shown as code values: `GET` \| `POST`
  if t:find(" | ", 1, true) and not t:find(":", 1, true) then
    local parts = {}
    for p in (t .. " | "):gmatch("(.-) | ") do parts[#parts + 1] = code(p) end
    return table.concat(parts, " \\| ")
  end
  return cell(t)
end

local function md_default(d)
  if d == "" then return "none" end
  if d == "required" or d == "computed" then return d end
  return cell(code(d))
end

local function md_table(rows)
  local out = { "| field | type | default | meaning |", "|---|---|---|---|" }
  for _, r in ipairs(rows) do
    out[#out + 1] = "| " .. code(r.name) .. " | " .. md_type(r.type) .. " | " .. md_default(r.default) .. " | "
      .. cell(r.description) .. " |"
  end
  return table.concat(out, "\n")
end

local function md_variants(v)
  local out = { "| `" .. v.discriminator .. "` | field | type | default | meaning |", "|---|---|---|---|---|" }
  for _, c in ipairs(v.choices) do
    if #c.rows == 0 then
      out[#out + 1] = "| " .. code(c.name) .. " | | | | no options |"
    end
    for i, r in ipairs(c.rows) do
      out[#out + 1] = "| " .. (i == 1 and code(c.name) or "") .. " | " .. code(r.name) .. " | " .. md_type(r.type)
        .. " | " .. md_default(r.default) .. " | " .. cell(r.description) .. " |"
    end
  end
  return table.concat(out, "\n")
end

-- The generated blocks of one connector: "<type> system", "<type> source" and one per tagged
-- union ("rest auth", "rest paginator").
function M.blocks(conn, type_name)
  local m = M.model(conn, type_name)
  local out = {
    { id = type_name .. " system", text = md_table(m.system) },
    { id = type_name .. " source", text = md_table(m.source) },
  }
  for _, v in ipairs(m.variants) do
    out[#out + 1] = { id = type_name .. " " .. v.field, text = md_variants(v) }
  end
  return out
end

function M.begin_marker(type_name, id)
  return "<!-- BEGIN generated: " .. id .. " (dp-engine connectors show " .. type_name .. " --markdown) -->"
end
M.END_MARKER = "<!-- END generated -->"

local function markdown_show(conn, type_name)
  local out = {}
  for _, b in ipairs(M.blocks(conn, type_name)) do
    out[#out + 1] = M.begin_marker(type_name, b.id) .. "\n" .. b.text .. "\n" .. M.END_MARKER
  end
  return table.concat(out, "\n\n") .. "\n"
end

function M.show(conn, type_name, format)
  local m = M.model(conn, type_name)
  if format == "json" then return json_show(m) end
  if format == "markdown" then return markdown_show(conn, type_name) end
  return text_show(m)
end

-- The generated blocks found in a Markdown text: { id = { text = ..., line = N } }.
function M.find_blocks(text)
  local found, cur, line_no = {}, nil, 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    line_no = line_no + 1
    local id = line:match("^<!%-%- BEGIN generated: (.-) %(dp%-engine connectors show [%w_]+ %-%-markdown%) %-%->$")
    if id then
      cur = { id = id, line = line_no, lines = {} }
    elseif cur and line == M.END_MARKER then
      found[cur.id] = { text = table.concat(cur.lines, "\n"), line = cur.line }
      cur = nil
    elseif cur then
      cur.lines[#cur.lines + 1] = line
    end
  end
  return found
end

-- Replaces the content of every generated block of text whose id is in blocks; returns the
-- new text and the number of blocks replaced.
function M.splice(text, blocks)
  local by_id = {}
  for _, b in ipairs(blocks) do by_id[b.id] = b.text end
  local out, skipping, n = {}, false, 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    local id = line:match("^<!%-%- BEGIN generated: (.-) %(dp%-engine connectors show [%w_]+ %-%-markdown%) %-%->$")
    if skipping then
      if line == M.END_MARKER then
        out[#out + 1] = line
        skipping = false
      end
    else
      out[#out + 1] = line
      if id and by_id[id] then
        out[#out + 1] = by_id[id]
        skipping = true
        n = n + 1
      end
    end
  end
  if out[#out] == "" then out[#out] = nil end
  return table.concat(out, "\n") .. "\n", n
end

---------------------------------------------------------------------------------------------
-- The connector types of a scripts folder: { { type, path, description | err } }, by name.

function M.list(scripts_dir, load_connector)
  local core = require "dp.core"
  local names = core.listdir(scripts_dir .. "/connectors")
  local out = {}
  for _, file in ipairs(names or {}) do
    local t = file:match("^([a-z][a-z0-9_]*)%.lua$")
    if t then
      local path = scripts_dir .. "/connectors/" .. file
      local conn, err = load_connector(path)
      out[#out + 1] = { type = t, path = path, description = conn and (conn.description or "") or nil, err = err }
    end
  end
  return out
end

return M
