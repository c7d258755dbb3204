-- file connector: reads JSON Lines, JSON-array and CSV exports dropped in the system's inbox.
--
-- systems.json:  { "name": "bank", "type": "file", "inbox": "inbox/bank", "archive": "archive/bank" }
--   inbox    folder to read; relative paths are under DP_DATA_DIR
--   archive  folder that read files move to once the run committed (optional)
--   follow_symlinks  follow symbolic links in the inbox to files inside it (default false:
--            a link fails the entity; docs/connectors.md, "Symbolic links")
-- entities.json: "source": { "pattern": "transactions-*.jsonl", "format": "jsonl", "files": "all",
--                            "min_age_seconds": 2, "csv": { "delimiter": ",", "quote": "\"" } }
--   pattern          glob over file names in the inbox (required)
--   format           jsonl | json | csv (default from the extension: .jsonl/.ndjson, .json, .csv/.tsv)
--   files            all (default) | latest: only the last file in name order
--   min_age_seconds  files changed more recently are still being written: not read (default 2)
--
-- Files are read in name order. A delta entity reads only files whose name sorts after the
-- cursor and returns the last file name read as the new cursor; a full load returns nil.
-- Records are emitted as exact JSON text (large integers stay exact), 1000 per batch; CSV values
-- become JSON strings (an empty unquoted field null), typed later by silver's casting.
local connector = require "dp.connector"
local csv = require "dp.csv"

local BATCH = 1000
local BOM = "\239\187\191"
-- Names that tools give files while they write them: never read.
local PARTIAL_SUFFIXES = { ".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart" }

local function no_slash(v)
  if v:find("/", 1, true) then return nil, '"' .. v .. '" must be a file name pattern, without "/"' end
  return true
end

local function one_char(v)
  if #v ~= 1 or v == "\r" or v == "\n" then return nil, "must be one character (not a line break)" end
  return true
end

local function being_written(name)
  if name:match("^[.~]") then return true end
  local lower = name:lower()
  for _, s in ipairs(PARTIAL_SUFFIXES) do
    if lower:sub(-#s) == s then return true end
  end
  return false
end

local function json_kind(text)
  local c = text:sub(1, 1)
  if c == "[" then return "an array" end
  if c == '"' then return "a string" end
  if c == "t" or c == "f" then return "a boolean" end
  if c == "n" then return "null" end
  return "a number"
end

local function format_of(source, name, shown)
  if source.format then return source.format end
  local lower = name:lower()
  if lower:match("%.jsonl$") or lower:match("%.ndjson$") then return "jsonl" end
  if lower:match("%.json$") then return "json" end
  if lower:match("%.csv$") or lower:match("%.tsv$") then return "csv" end
  error(shown .. ': cannot tell the format from the file name (expected .jsonl, .ndjson, .json, .csv or .tsv):'
    .. ' set source.format to "jsonl", "json" or "csv"', 0)
end

local function read_jsonl(ctx, name, push)
  local path = ctx.files.path(name)
  local n = 0
  for line in ctx.files.lines(name) do
    n = n + 1
    if n == 1 and line:sub(1, 3) == BOM then line = line:sub(4) end
    if line:find("%S") then
      local rec, err = ctx.json.compact(line)
      if not rec then error(path .. ":" .. n .. ": " .. err, 0) end
      if rec:sub(1, 1) ~= "{" then
        error(path .. ":" .. n .. ": expected a JSON object, got " .. json_kind(rec), 0)
      end
      push(rec)
    end
  end
end

local function read_json(ctx, name, push)
  local path = ctx.files.path(name)
  local text = ctx.files.read(name)
  local skipped = 0
  if text:sub(1, 3) == BOM then text, skipped = text:sub(4), 3 end
  local elements, err = ctx.json.array_elements(text)
  if not elements then
    local byte = tonumber(tostring(err):match("at byte (%d+)"))
    if not byte then error(path .. ": " .. tostring(err), 0) end
    local line, col = ctx.json.line_col(text, byte)
    err = err:gsub("at byte %d+", "at byte " .. (byte + skipped), 1)
    error(path .. ":" .. line .. ":" .. col .. ": " .. err, 0)
  end
  for i, rec in ipairs(elements) do
    if rec:sub(1, 1) ~= "{" then
      error(path .. ": element [" .. (i - 1) .. "] is " .. json_kind(rec) .. ", expected a JSON object", 0)
    end
    push(rec)
  end
end

-- A number written with a decimal comma, as the engine's casts read it: "-54,37" -> "-54.37",
-- "1.234,56" -> "1234.56", "1.234" -> "1234" (dots group thousands, in threes). A number with a
-- dot that is not such a group ("1.5") would be read as another value: nil, so that the caller
-- fails with the place. Anything else (a word, "") is returned as it is, so that silver's cast
-- reports it (on_type_error) instead of it changing silently.
local function from_decimal_comma(v)
  local sign, int, frac = v:match("^%s*([+-]?)([%d%.]+),(%d+)%s*$")
  if not int then
    sign, int = v:match("^%s*([+-]?)([%d%.]+)%s*$")
    frac = nil
  end
  if not int then return v end
  if int:find(".", 1, true) then
    local rest = int:match("^%d%d?%d?(%..*)$")
    if not rest or rest:gsub("%.%d%d%d", "") ~= "" then return nil end
    int = int:gsub("%.", "")
  end
  return sign .. int .. (frac and ("." .. frac) or "")
end

-- CSV (RFC 4180), streamed in chunks by dp.csv: the header row names the fields; quoted fields
-- may hold the delimiter, "" for a quote, and line breaks (kept exactly).
local function read_csv(ctx, name, push, source)
  local path = ctx.files.path(name)
  local opts = source.csv or {}
  local delim = opts.delimiter or (name:lower():match("%.tsv$") and "\t" or ",")
  local qc = opts.quote or '"'
  if delim == qc then error(path .. ": the CSV delimiter and quote must differ", 0) end
  local header, keys
  local comma = {} -- field index -> true: decimal commas (opts.decimal_comma)

  local function fail(at, msg) error(path .. ":" .. at .. ": " .. msg, 0) end

  csv.rows(ctx.files.chunks(name), { delimiter = delim, quote = qc, fail = fail }, function(fields, quoted, at)
    if not header then
      header, keys = fields, {}
      local seen = {}
      for i, h in ipairs(header) do
        if h == "" then fail(at, "the header has an empty name (column " .. i .. ")") end
        if seen[h] then fail(at, "the header names " .. connector.json_string(h) .. " twice (columns " .. seen[h] .. " and " .. i .. ")") end
        seen[h] = i
        keys[i] = connector.json_string(h) .. ":"
      end
      for _, cname in ipairs(opts.decimal_comma or {}) do
        if not seen[cname] then
          fail(at, "csv.decimal_comma names " .. connector.json_string(cname) .. ", which is not in the header")
        end
        comma[seen[cname]] = true
      end
      return
    end
    if #fields ~= #header then
      fail(at, #fields .. (#fields == 1 and " field" or " fields") .. ", but the header has " .. #header)
    end
    local parts = {}
    for i = 1, #fields do
      local v = fields[i]
      if comma[i] then
        local c = from_decimal_comma(v)
        if not c then
          fail(at, "field " .. connector.json_string(header[i]) .. " is in csv.decimal_comma, and " .. connector.json_string(v)
            .. " is not a number written with a decimal comma (1234,56 or 1.234,56)")
        end
        v = c
      end
      parts[i] = keys[i] .. ((v == "" and not quoted[i]) and "null" or connector.json_string(v))
    end
    local rec, err = ctx.json.compact("{" .. table.concat(parts, ",") .. "}")
    if not rec then
      if err:match("UTF%-8") then fail(at, "not valid UTF-8 (CSV files must be UTF-8)") end
      fail(at, err)
    end
    push(rec)
  end)
  if not header then ctx.log.warn("%s: no header row: the file is empty", path) end
end

local READERS = { jsonl = read_jsonl, json = read_json, csv = read_csv }

-- The files to read this run, and the ones to archive after the commit.
local function choose(ctx, source, delta)
  local all = ctx.files.list(source.pattern)
  local names, partial = {}, 0
  for _, n in ipairs(all) do
    if being_written(n) then partial = partial + 1 else names[#names + 1] = n end
  end
  if partial > 0 then
    ctx.log.info("%d file(s) matching %q have a name of a file being written (.part, .tmp, ...): not read", partial, source.pattern)
  end
  local min_age = source.min_age_seconds
  local function young(n)
    if min_age <= 0 then return false end
    local age = ctx.files.stat(n).age
    if age < min_age then
      ctx.log.info("%s changed %.1f s ago (min_age_seconds %s): still being written, not read this run",
        n, math.max(age, 0), tostring(min_age))
      return true
    end
    return false
  end

  local read, superseded = {}, {}
  if delta then
    local after = {}
    for _, n in ipairs(names) do
      if not ctx.cursor or n > ctx.cursor then after[#after + 1] = n end
    end
    if source.files == "latest" then
      for i = #after, 1, -1 do
        if not young(after[i]) then read = { after[i] } break end
      end
    else
      for _, n in ipairs(after) do
        if young(n) then break end -- reading past it would move the cursor beyond it
        read[#read + 1] = n
      end
    end
  else
    local ok = {}
    for _, n in ipairs(names) do
      if not young(n) then ok[#ok + 1] = n end
    end
    if source.files == "latest" and #ok > 0 then
      read = { ok[#ok] }
      for i = 1, #ok - 1 do superseded[#superseded + 1] = ok[i] end
    else
      read = ok
    end
  end
  return read, superseded, #names
end

local function extract(ctx)
  local source = ctx.entity.source
  local delta = ctx.entity.load_type == "delta"
  local names, superseded, matching = choose(ctx, source, delta)
  if #names == 0 then
    if delta then
      if matching == 0 then
        ctx.log.info("no file matching %q in inbox %s: nothing new to load", source.pattern, ctx.files.inbox)
      else
        ctx.log.info("no file matching %q after cursor %q in inbox %s", source.pattern, tostring(ctx.cursor), ctx.files.inbox)
      end
      return ctx.cursor
    end
    -- A full load of nothing would mark every key deleted: refuse rather than lose history.
    local why = matching > 0 and (" (" .. matching .. " matching file(s) still being written)") or ""
    error(("no file matching %q in inbox %s%s: a full load needs the current export "
      .. "(loading nothing would mark every row deleted)"):format(source.pattern, ctx.files.inbox, why), 0)
  end
  local formats = {}
  for i, n in ipairs(names) do -- fail before emitting; the name as messages show it (escaped)
    formats[i] = format_of(source, n, ctx.files.path(n):match("[^/]*$"))
  end

  local out = connector.batcher(ctx, BATCH)
  for i, name in ipairs(names) do
    READERS[formats[i]](ctx, name, out.push, source)
    ctx.log.info("read %s", ctx.files.path(name))
  end
  out.flush()
  if ctx.system.archive then
    for _, n in ipairs(names) do ctx.files.archive(n) end
    for _, n in ipairs(superseded) do ctx.files.archive(n) end
  end
  if delta then return names[#names] end
  return nil
end

return {
  description = "JSON Lines, JSON-array and CSV exports dropped in an inbox folder",
  system_schema = {
    fields = {
      { inbox = { type = "string", required = true, len_min = 1,
        description = "folder of the exports; absolute, or relative to DP_DATA_DIR" } },
      { archive = { type = "string", len_min = 1,
        description = "folder that read files move to once the run committed (absolute, or relative to DP_DATA_DIR); without it files stay" } },
      { follow_symlinks = { type = "boolean", default = false,
        description = "follow symbolic links in the inbox, to files inside it only; without it a link fails the entity" } },
    },
  },
  entity_schema = {
    fields = {
      { pattern = { type = "string", required = true, len_min = 1, custom_validator = no_slash,
        description = "glob of file names in the inbox (transactions-*.jsonl; no /)" } },
      { format = { type = "string", one_of = { "jsonl", "json", "csv" },
        description = "jsonl (one object per line), json (an array of objects) or csv; default from the extension" } },
      { files = { type = "string", one_of = { "all", "latest" }, default = "all",
        description = "all: every matching file, in name order; latest: only the last one by name" } },
      { min_age_seconds = { type = "number", between = { 0, 86400 }, default = 2,
        description = "a file changed more recently is still being written: not read this run" } },
      { csv = { type = "record", default = {}, description = "CSV options", fields = {
        { delimiter = { type = "string", custom_validator = one_char,
          description = "one character (default , and a tab for .tsv)" } },
        { quote = { type = "string", default = '"', custom_validator = one_char,
          description = "one character" } },
        { decimal_comma = { type = "list", unique = true,
          elements = { type = "string", len_min = 1, description = "a header name" },
          description = "header names whose numbers use a decimal comma (-54,37 or 1.234,56): read as -54.37 and 1234.56" } },
      } } },
    },
  },
  extract = extract,
}
