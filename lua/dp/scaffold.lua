-- dp.scaffold: `dp-engine init system|connector` (docs/init.md). Reads the samples, infers the
-- entities (dp.infer), builds the metadata text, checks that the whole set validates and
-- returns the files to write; core/cmd_init.c writes them (temporary file + rename).
local schema = require "dp.schema"
local models = require "dp.models"
local metadata = require "dp.metadata"
local infer = require "dp.infer"

local M = {}
local quote = schema.quote

---------------------------------------------------------------------------------------------
-- JSON text with ordered keys, in the layout of the shipped metadata files

local jstr = require("dp.connector").json_string

-- A value as compact JSON: { {k, v}, ... } pair lists are objects in that order, { [0] = "array",
-- ... } arrays.
local function compact(v)
  local t = type(v)
  if t == "string" then return jstr(v) end
  if t == "number" then return schema.format_number(v) end
  if t == "boolean" then return tostring(v) end
  if v.array then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = compact(x) end
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  local parts = {}
  for i, kv in ipairs(v) do parts[i] = jstr(kv[1]) .. ": " .. compact(kv[2]) end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

local function arr(t) t.array = true return t end

local function item_text(pairs_, indent, multi)
  local out = { indent .. "{" }
  for i, kv in ipairs(pairs_) do
    local line
    if multi and multi[kv[1]] then
      local rows = {}
      for j, x in ipairs(kv[2]) do rows[j] = indent .. "    " .. compact(x) end
      line = indent .. "  " .. jstr(kv[1]) .. ": [\n" .. table.concat(rows, ",\n") .. "\n" .. indent .. "  ]"
    else
      line = indent .. "  " .. jstr(kv[1]) .. ": " .. compact(kv[2])
    end
    out[#out + 1] = line .. (i < #pairs_ and "," or "")
  end
  out[#out + 1] = indent .. "}"
  return table.concat(out, "\n")
end

-- existing: the file's text or nil; items: texts of items (indented by 2). Returns the new text.
local function append_items(existing, items)
  local body = table.concat(items, ",\n")
  if existing == nil then return "[\n" .. body .. "\n]\n" end
  local head = existing:match("^(.*)%]%s*$")
  if not head then error("cannot add to a file that does not end with ]", 0) end
  head = head:gsub("%s+$", "")
  if head:match("%[$") then return head .. "\n" .. body .. "\n]\n" end
  return head .. ",\n" .. body .. "\n]\n"
end

---------------------------------------------------------------------------------------------
-- Samples

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s, rerr, code = f:read("*a")
  f:close()
  if not s then return nil, code == 21 and "is a directory" or tostring(rerr) end -- EISDIR
  return s
end

local function basename(path) return path:match("[^/]*$") end

-- How much of a sample is read: a file of at most SAMPLE_WHOLE_BYTES is read whole; of a larger
-- JSON Lines or CSV file only the lines of its first SAMPLE_RECORDS records; a larger JSON
-- document (read whole to parse it) up to SAMPLE_JSON_BYTES. Types are inferred from at most
-- SAMPLE_RECORDS records of each sample: reading all of a 450 MB export would take gigabytes.
M.SAMPLE_RECORDS = 10000
M.SAMPLE_WHOLE_BYTES = 8 * 1024 * 1024
M.SAMPLE_JSON_BYTES = 16 * 1024 * 1024

-- The lines of the first SAMPLE_RECORDS records of an open JSON Lines or CSV file (csv: a record
-- may span lines inside quotes, and the header line comes first), and whether the file has more.
local function head_lines(f, csv)
  local out, n, inside = {}, 0, false
  local want = M.SAMPLE_RECORDS + (csv and 1 or 0)
  for line in f:lines() do
    if n >= want then
      if line:find("%S") then return table.concat(out, "\n") .. "\n", true end
    else
      out[#out + 1] = line
      if csv then
        local _, quotes = line:gsub('"', "")
        if quotes % 2 == 1 then inside = not inside end
        if not inside then n = n + 1 end
      elseif line:find("%S") then
        n = n + 1
      end
    end
  end
  return table.concat(out, "\n") .. "\n", false
end

-- A sample's text: the whole file, or (a large JSON Lines or CSV file) the lines of its first
-- records. Returns text, partial (the file has more), or nil and the error.
local function read_sample_text(path, format_of)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local _, rerr, code = f:read(0)
  if code == 21 then -- EISDIR
    f:close()
    return nil, "is a directory"
  elseif rerr then
    f:close()
    return nil, tostring(rerr)
  end
  local size = f:seek("end") or 0
  f:seek("set", 0)
  local format = size > M.SAMPLE_WHOLE_BYTES and format_of(f:read(65536) or "")
  f:seek("set", 0)
  if format == "json" and size > M.SAMPLE_JSON_BYTES then
    f:close()
    return nil, ("a JSON sample is read whole, and this one is %d MiB (at most %d): give its first records, "
      .. "e.g. jq '.[:1000]' %s > sample.json"):format(math.floor(size / 1048576), math.floor(M.SAMPLE_JSON_BYTES / 1048576),
      path)
  end
  local text, more
  if format == "jsonl" or format == "csv" then
    text, more = head_lines(f, format == "csv")
  else -- a file of at most SAMPLE_WHOLE_BYTES, or a JSON document: whole
    text, rerr = f:read("*a")
    if not text then
      f:close()
      return nil, tostring(rerr)
    end
  end
  f:close()
  return text, more or false
end

-- The format the file connector reads a file name (or pattern) as, by its extension: jsonl,
-- json, csv, or nil.
function M.format_of_name(name)
  local ext = name:lower():match("%.(%w+)$")
  return ({ jsonl = "jsonl", ndjson = "jsonl", json = "json", csv = "csv", tsv = "csv" })[ext or ""]
end

-- Reads one sample: { file, records, csv, format, selector, delimiter, partial }; partial: the
-- records are the first SAMPLE_RECORDS of the file, not all of it.
function M.read_sample(path, system_type)
  local lower = path:lower()
  local ext = lower:match("%.([%w]+)$") or ""
  -- the format, from the system's type, the extension, or the text's first character
  local function format_of(text)
    local first = text:gsub("^\239\187\191", ""):match("^%s*(.)")
    if system_type == "rest" or ext == "json" then return "json"
    elseif ext == "jsonl" or ext == "ndjson" then return "jsonl"
    elseif ext == "csv" or ext == "tsv" then return "csv"
    elseif first == "[" then return "json"
    elseif first == "{" then
      return (pcall(infer.parse_json, text)) and "json" or "jsonl"
    end
    return "csv"
  end
  local text, err = read_sample_text(path, format_of) -- err: the error, or whether the file has more
  if not text then
    if err == "is a directory" then
      error("--from " .. path .. ": is a directory; give a sample file (--from may repeat, one file each)", 0)
    end
    error("--from " .. path .. ": " .. tostring(err), 0)
  end
  local function fail(msg) error("--from " .. path .. ": " .. msg, 0) end
  local sample = { file = path, partial = err == true }
  local utf8, bad = infer.valid_utf8(text)
  if not utf8 then -- the engine reads UTF-8 only: say so here, not when the run fails
    local line, col = infer.line_col(text, bad)
    fail(("line %d, column %d: byte 0x%02X is not UTF-8 (the engine reads UTF-8 only); convert the file first,"
      .. " e.g. from Windows-1252 or Latin-1: iconv -f cp1252 -t utf-8 %s > %s.utf8"):format(line, col, text:byte(bad),
      path, path))
  end
  local format = format_of(text)
  sample.format = format
  if format == "json" then
    local ok, v = pcall(infer.parse_json, (text:gsub("^\239\187\191", "")))
    if not ok then fail("not valid JSON: " .. tostring(v)) end
    local recs, sel = infer.records_of(v)
    if not recs then fail(sel) end
    if system_type == "file" and not infer.is_array(v) then
      fail("the file connector reads a JSON array of objects, and this is " .. (infer.is_object(v)
        and "an object: a saved API response is a sample for --type rest" or "not one"))
    end
    sample.records, sample.selector = recs, sel
  elseif format == "jsonl" then
    local ok, recs = pcall(infer.parse_jsonl, text)
    if not ok then fail(tostring(recs)) end
    sample.records = recs
  else
    local delim = ext == "tsv" and "\t" or infer.sniff_delimiter(text)
    if not delim then
      fail("cannot tell the CSV delimiter: no one of , ; tab | splits the first lines into the same number of fields")
    end
    local ok, header, recs = pcall(infer.parse_csv, text, delim)
    if not ok then fail(tostring(header)) end
    if #header == 0 then fail("the file is empty") end
    sample.records, sample.csv, sample.delimiter = recs, true, delim
  end
  if #sample.records == 0 then fail("no records in the sample") end
  if #sample.records > M.SAMPLE_RECORDS then
    for i = #sample.records, M.SAMPLE_RECORDS + 1, -1 do sample.records[i] = nil end
    sample.partial = true
  end
  return sample
end

---------------------------------------------------------------------------------------------
-- init system

local function column_pairs(c)
  local p = { { "name", c.name }, { "type", c.type } }
  if c.precision then p[#p + 1] = { "precision", c.precision } end
  if c.scale then p[#p + 1] = { "scale", c.scale } end
  if not c.nullable then p[#p + 1] = { "nullable", false } end
  if c.path then p[#p + 1] = { "path", c.path } end
  return p
end

local function type_text(c)
  if c.type == "decimal" then return "decimal(" .. c.precision .. "," .. c.scale .. ")" end
  return c.type
end

local function plural(n, one, many) return n .. " " .. (n == 1 and one or many) end

-- opts: { dir, name, type, samples = { { file, entity } }, base_url, path, nested, scripts_dir }.
-- Returns { report = text, files = { { path, text } } }, or raises a one-line message.
function M.init_system(opts)
  local name, stype = opts.name, opts.type
  local ok, err = models.identifier(name or "")
  if not ok then error("system name " .. err, 0) end
  if stype ~= "file" and stype ~= "rest" then
    error("--type must be file or rest, got " .. quote(tostring(stype)) .. " (for another connector type,"
      .. " write the system by hand: dp-engine connectors show TYPE lists its options)", 0)
  end
  if stype == "rest" then
    if not opts.base_url then error("--type rest needs --base-url URL (where the API is)", 0) end
    local u_ok, u_err = require("dp.connector").http_url(opts.base_url)
    if not u_ok then error("--base-url " .. u_err, 0) end
  elseif opts.base_url then
    error("--base-url is for --type rest", 0)
  end
  if opts.path and stype ~= "rest" then error("--path is for --type rest", 0) end
  if opts.nested and opts.nested ~= "flatten" and opts.nested ~= "json" then
    error("--nested must be flatten or json, got " .. quote(opts.nested), 0)
  end

  local dir = opts.dir
  local texts, existing = {}, {}
  for _, f in ipairs(metadata.FILES) do texts[f] = read_file(dir .. "/" .. f) end
  local have_any = texts["systems.json"] or texts["entities.json"]
  if have_any then
    for _, f in ipairs({ "systems.json", "entities.json" }) do
      if not texts[f] then error(dir .. "/" .. f .. " is missing (the other file is there): fix the folder first", 0) end
    end
    local meta, errs = metadata.load_texts(texts, { scripts_dir = opts.scripts_dir, connectors = "all" })
    if not meta then
      error("the metadata in " .. dir .. " is invalid already, so nothing is added (dp-engine metadata validate --dir "
        .. dir .. "):\n  " .. table.concat(errs, "\n  "), 0)
    end
    existing = meta
    if metadata.find_system(meta, name) then
      error("system " .. quote(name) .. " exists already in " .. dir .. "/systems.json: nothing is overwritten"
        .. " (choose another name, or remove it first)", 0)
    end
    if metadata.find_gold(meta, name) then
      error(quote(name) .. " is a gold model in " .. dir .. "/gold.json: systems and gold models share one namespace", 0)
    end
  end

  -- samples, grouped by entity name in order of first appearance
  local groups, order = {}, {}
  for _, s in ipairs(opts.samples or {}) do
    local sample = M.read_sample(s.file, stype)
    local ename = s.entity or infer.entity_name(s.file)
    if not ename then
      error("--from " .. s.file .. ": cannot name an entity after the file: give one with --entity NAME", 0)
    end
    local e_ok, e_err = models.identifier(ename)
    if not e_ok then
      error("--from " .. s.file .. ": entity name " .. e_err .. (s.entity and "" or " (give one with --entity NAME)"), 0)
    end
    if not groups[ename] then
      groups[ename] = { samples = {} }
      order[#order + 1] = ename
    end
    table.insert(groups[ename].samples, sample)
  end

  local report, entity_items = {}, {}
  for _, ename in ipairs(order) do
    local g = groups[ename]
    local first = g.samples[1]
    for _, s in ipairs(g.samples) do
      if s.format ~= first.format or s.delimiter ~= first.delimiter or (s.selector or "") ~= (first.selector or "") then
        error("entity " .. quote(ename) .. ": the samples " .. first.file .. " and " .. s.file
          .. " differ in format; give them different --entity names", 0)
      end
    end
    local inf = infer.entity(g.samples, { nested = opts.nested })
    -- the source options
    local source = {}
    if stype == "file" then
      local pattern = infer.file_pattern(first.file)
      if not infer.valid_utf8(pattern) or pattern:find("%c") then
        pattern = pattern:gsub("[%c\128-\255]", "?") -- ? matches that one byte
      end
      for _, s in ipairs(g.samples) do
        if infer.file_pattern(s.file) ~= pattern then
          error("entity " .. quote(ename) .. ": the samples " .. basename(first.file) .. " and " .. basename(s.file)
            .. " give different file patterns; give them different --entity names", 0)
        end
      end
      source[#source + 1] = { "pattern", pattern }
      local ext = first.file:lower():match("%.(%w+)$")
      if M.format_of_name(first.file) ~= first.format then source[#source + 1] = { "format", first.format } end
      if first.csv then
        local csv = {}
        if first.delimiter ~= (ext == "tsv" and "\t" or ",") then csv[#csv + 1] = { "delimiter", first.delimiter } end
        if #inf.decimal_comma > 0 then csv[#csv + 1] = { "decimal_comma", arr(inf.decimal_comma) } end
        if #csv > 0 then source[#source + 1] = { "csv", csv } end
      end
    else
      source[#source + 1] = { "path", opts.path or ("/" .. ename) }
      if first.selector ~= "" then source[#source + 1] = { "record_selector", first.selector } end
    end
    local files, seen_file = {}, {}
    for _, s in ipairs(g.samples) do
      local b = basename(s.file)
      if not infer.valid_utf8(b) or b:find("%c") then b = infer.shown(b):sub(2, -2) end
      if not seen_file[b] then files[#files + 1] = b; seen_file[b] = true end
    end
    local partial = {} -- the samples read in part: their first SAMPLE_RECORDS records
    for _, s in ipairs(g.samples) do
      local b = basename(s.file)
      if not infer.valid_utf8(b) or b:find("%c") then b = infer.shown(b):sub(2, -2) end
      if s.partial then partial[#partial + 1] = b end
    end
    local sampled = #partial > 0 and ("of " .. table.concat(partial, ", ") .. " only the first " .. M.SAMPLE_RECORDS)
      or nil
    local description = "Inferred by dp-engine init from " .. table.concat(files, ", ") .. " ("
      .. plural(inf.records, "record", "records") .. (sampled and ("; " .. sampled) or "")
      .. "): check the types, keys and nullability."
    local cols = {}
    for i, c in ipairs(inf.columns) do cols[i] = column_pairs(c) end
    local item = {
      { "name", ename }, { "system", name }, { "description", description }, { "load_type", "full" },
      { "primary_key", arr(inf.primary_key) }, { "source", source }, { "columns", cols },
    }
    entity_items[#entity_items + 1] = item_text(item, "  ", { columns = true })
    if existing.entities then
      for _, e in ipairs(existing.entities) do
        if e.system == name and e.name == ename then
          error("entity " .. name .. "." .. ename .. " exists already: nothing is overwritten", 0)
        end
      end
    end
    -- the report
    report[#report + 1] = "entity " .. name .. "." .. ename .. ": " .. plural(inf.records, "record", "records")
      .. " from " .. plural(#g.samples, "file", "files") .. (sampled and (" (" .. sampled .. " records)") or "") .. ", "
      .. (#inf.primary_key > 0 and ("primary key (" .. table.concat(inf.primary_key, ", ") .. ")")
        or "no primary key found: the entity appends (set primary_key if it has one)")
    local wn, wt = 4, 4
    for _, c in ipairs(inf.columns) do wn, wt = math.max(wn, #c.name), math.max(wt, #type_text(c)) end
    for _, c in ipairs(inf.columns) do
      local line = string.format("  %-" .. wn .. "s  %-" .. wt .. "s  %-8s", c.name, type_text(c),
        c.nullable and "" or "not null")
      if c.path then line = line .. "  path " .. c.path end
      line = line .. "  (" .. c.why .. ")"
      report[#report + 1] = line
    end
    for _, w in ipairs(inf.warnings) do report[#report + 1] = "  warning: " .. w end
    if #inf.decimal_comma > 0 then
      report[#report + 1] = "  decimal commas in " .. table.concat(inf.decimal_comma, ", ")
        .. ": the file connector converts them (source.csv.decimal_comma)"
    end
  end
  if opts.entity_without_sample then
    error("--entity " .. opts.entity_without_sample .. " needs a --from SAMPLE before it (an entity needs columns)", 0)
  end

  local system = { { "name", name },
    { "description", name .. ": scaffolded by dp-engine init; describe the source here." },
    { "type", stype } }
  if stype == "file" then
    system[#system + 1] = { "inbox", "inbox/" .. name }
  else
    system[#system + 1] = { "base_url", opts.base_url }
  end
  local new = {
    ["systems.json"] = append_items(texts["systems.json"], { item_text(system, "  ") }),
    ["entities.json"] = #entity_items > 0 and append_items(texts["entities.json"], entity_items)
      or texts["entities.json"] or "[]\n",
    ["gold.json"] = texts["gold.json"],
  }
  local meta, errs = metadata.load_texts(new, { scripts_dir = opts.scripts_dir, connectors = "all" })
  if not meta then
    error("the scaffolded metadata does not validate (a bug of dp-engine init; nothing written):\n  "
      .. table.concat(errs, "\n  "), 0)
  end
  local files = { { path = dir .. "/systems.json", text = new["systems.json"] } }
  local written = { dir .. "/systems.json (system " .. name .. ")" }
  if new["entities.json"] ~= texts["entities.json"] then
    files[#files + 1] = { path = dir .. "/entities.json", text = new["entities.json"] }
    local names = {}
    for i, e in ipairs(order) do names[i] = name .. "." .. e end
    written[#written + 1] = dir .. "/entities.json (" .. (#names == 1 and "entity " or "entities ")
      .. table.concat(names, ", ") .. ")"
  end
  if #order == 0 then
    report[#report + 1] = "system " .. name .. " (" .. stype .. "): no --from sample, so no entity yet"
  end
  return { report = table.concat(report, "\n"), files = files, written = written, meta = meta }
end

---------------------------------------------------------------------------------------------
-- init connector

local CONNECTOR_TEMPLATE = [[
-- connectors/@NAME@.lua: a connector for a JSON HTTP API (scaffolded by dp-engine init connector).
-- Each entity reads one endpoint (source.path) and emits the records at source.record_selector,
-- exactly as the API sent them. Add paging, a cursor or another kind of source to extract: see
-- docs/connectors.md, "Writing a connector"; `dp-engine connectors show @NAME@` prints the
-- options below from their descriptions.
local connector = require "dp.connector"

return {
  description = "@NAME@: records from a JSON HTTP API, one endpoint per entity",
  -- base_url, headers, auth, rate_limit, retry, timeout: ctx.http comes set up from them
  system_schema = { fields = connector.http_fields { base_url_required = true } },
  entity_schema = {
    fields = {
      { path = { type = "string", required = true, len_min = 1,
        description = "endpoint path joined to base_url, e.g. /items" } },
      { record_selector = { type = "string", default = "",
        description = "dotted path of the records in the response (\"\": the whole response)" } },
    },
  },
  extract = function(ctx)
    local source = ctx.entity.source
    local resp, err = ctx.http.get(source.path)
    if not resp then error(err, 0) end
    local records, rerr = ctx.json.records(resp.body, source.record_selector)
    if not records then error(ctx.http.redact(resp.url) .. ": " .. rerr, 0) end
    ctx.log.info("%d records from %s", #records, source.path)
    if #records > 0 then ctx.emit(records) end
    return nil -- a full load: no cursor
  end,
}
]]

local SPEC_TEMPLATE = [[
-- spec for connectors/@NAME@.lua (scaffolded by dp-engine init connector). Run it from the
-- dp-engine folder (DP_HOME): busted @SPEC@
local sandbox = require "dp.sandbox"
local core = require "dp.core"
local cjson = require "cjson"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local PATH = here .. "/../connectors/@NAME@.lua"

-- ctx.json as the engine gives it: records cut out of the response text exactly
local function records(text, path)
  local v, err = core.json_select(text, path)
  if v == nil then return nil, err or "no value at " .. path end
  if v:sub(1, 1) == "[" then return core.json_array_elements(v) end
  if v:sub(1, 1) == "{" then return { v } end
  return {}
end

describe("connector @NAME@", function()
  local conn

  setup(function()
    conn = assert(sandbox.load_connector(PATH))
  end)

  it("validates a system and an entity of its type", function()
    local sys, errs = require("dp.schema").validate(conn.system_model,
      { name = "example", type = "@NAME@", base_url = "https://api.example.com" })
    assert.is_nil(errs)
    assert.are.equal("https://api.example.com", sys.base_url)
    local ent
    ent, errs = require("dp.schema").validate(conn.entity_model, { name = "items", system = "example",
      source = { path = "/items", record_selector = "data" }, columns = { { name = "id", type = "bigint" } } })
    assert.is_nil(errs)
    assert.are.equal("/items", ent.source.path)
    local _, bad = require("dp.schema").validate(conn.entity_model, { name = "items", system = "example",
      source = {}, columns = { { name = "id", type = "bigint" } } })
    assert.matches("source.path: required field missing", bad[1], 1, true)
  end)

  it("emits the records of a response exactly", function()
    local body = '{"data": [{"id": 9007199254740993, "name": "a"}, {"id": 2, "name": "b"}]}'
    local emitted, asked = {}, nil
    local ctx = {
      entity = { source = { path = "/items", record_selector = "data" } },
      http = {
        get = function(path) asked = path return { status = 200, body = body, url = "https://api.example.com" .. path } end,
        redact = function(s) return s end,
      },
      json = { records = records, decode = cjson.decode },
      log = { info = function() end, warn = function() end },
      emit = function(batch) for _, r in ipairs(batch) do emitted[#emitted + 1] = r end return #batch end,
    }
    assert.is_nil(conn.extract(ctx))
    assert.are.equal("/items", asked)
    assert.are.same({ '{"id":9007199254740993,"name":"a"}', '{"id":2,"name":"b"}' }, emitted)
  end)
end)
]]

-- opts: { name, scripts_dir }. Returns { report, files, written }.
function M.init_connector(opts)
  local name = opts.name or ""
  local ok, err = models.connector_type(name)
  if not ok then error("connector name " .. err, 0) end
  local conn_path = opts.scripts_dir .. "/connectors/" .. name .. ".lua"
  local spec_rel = "spec/" .. name .. "_connector_spec.lua"
  local spec_path = opts.scripts_dir .. "/" .. spec_rel
  for _, p in ipairs({ conn_path, spec_path }) do
    local f = io.open(p, "rb")
    if f then
      f:close()
      error(p .. " exists already: nothing is overwritten", 0)
    end
  end
  local function fill(t) return (t:gsub("@NAME@", name):gsub("@SPEC@", spec_path)) end
  local files = { { path = conn_path, text = fill(CONNECTOR_TEMPLATE) }, { path = spec_path, text = fill(SPEC_TEMPLATE) } }
  return {
    report = "connector type " .. name .. ": a JSON HTTP API connector to adapt (docs/connectors.md, \"Writing a connector\")",
    files = files,
    written = { conn_path, spec_path },
  }
end

return M
