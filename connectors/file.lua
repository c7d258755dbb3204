-- file connector: reads JSON Lines or JSON-array exports dropped in the system's inbox folder.
--
-- systems.json:  { "name": "bank", "type": "file", "inbox": "inbox/bank" }
--   inbox   folder to read; relative paths are under DP_DATA_DIR
-- entities.json: "source": { "pattern": "transactions-*.jsonl", "format": "jsonl", "files": "all" }
--   pattern glob over file names in the inbox (required)
--   format  jsonl | json (default: from the extension: .jsonl/.ndjson -> jsonl, .json -> json)
--   files   all (default) | latest: only the last file in name order
--
-- Files are read in name order. A delta entity reads only files whose name sorts after the
-- cursor and returns the last file name read as the new cursor; a full load returns nil.
-- Records are emitted as the compact source text (large integers stay exact), 1000 per batch.

local BATCH = 1000
local BOM = "\239\187\191"

local function no_slash(v)
  if v:find("/", 1, true) then return nil, '"' .. v .. '" must be a file name pattern, without "/"' end
  return true
end

local function json_kind(text)
  local c = text:sub(1, 1)
  if c == "[" then return "an array" end
  if c == '"' then return "a string" end
  if c == "t" or c == "f" then return "a boolean" end
  if c == "n" then return "null" end
  return "a number"
end

local function line_col(text, byte)
  local line, col = 1, 1
  for i = 1, math.min(byte - 1, #text) do
    if text:byte(i) == 10 then line, col = line + 1, 1 else col = col + 1 end
  end
  return line, col
end

local function format_of(source, name)
  if source.format then return source.format end
  local lower = name:lower()
  if lower:match("%.jsonl$") or lower:match("%.ndjson$") then return "jsonl" end
  if lower:match("%.json$") then return "json" end
  error(name .. ': cannot tell the format from the file name (expected .jsonl, .ndjson or .json):'
    .. ' set source.format to "jsonl" or "json"', 0)
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
    local line, col = line_col(text, byte)
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

local function extract(ctx)
  local source = ctx.entity.source
  local delta = ctx.entity.load_type == "delta"
  local names = ctx.files.list(source.pattern)
  if #names == 0 then
    if delta then
      ctx.log.info("no file matching %q in inbox %s: nothing new to load", source.pattern, ctx.files.inbox)
      return ctx.cursor
    end
    -- A full load of nothing would mark every key deleted: refuse rather than lose history.
    error(("no file matching %q in inbox %s: a full load needs the current export "
      .. "(loading nothing would mark every row deleted)"):format(source.pattern, ctx.files.inbox), 0)
  end
  if source.files == "latest" then names = { names[#names] } end
  if delta and ctx.cursor then
    local newer = {}
    for _, n in ipairs(names) do
      if n > ctx.cursor then newer[#newer + 1] = n end
    end
    if #newer == 0 then
      ctx.log.info("no file matching %q after cursor %q in inbox %s", source.pattern, ctx.cursor, ctx.files.inbox)
      return ctx.cursor
    end
    names = newer
  end
  local formats = {}
  for i, n in ipairs(names) do formats[i] = format_of(source, n) end -- fail before emitting

  local batch = {}
  local function push(rec)
    batch[#batch + 1] = rec
    if #batch >= BATCH then
      ctx.emit(batch)
      batch = {}
    end
  end
  for i, name in ipairs(names) do
    local reader = formats[i] == "jsonl" and read_jsonl or read_json
    reader(ctx, name, push)
    ctx.log.info("read %s", ctx.files.path(name))
  end
  if #batch > 0 then ctx.emit(batch) end
  if delta then return names[#names] end
  return nil
end

return {
  description = "JSON Lines and JSON-array exports dropped in an inbox folder",
  system_schema = {
    fields = {
      { inbox = { type = "string", required = true, len_min = 1 } },
    },
  },
  entity_schema = {
    fields = {
      { pattern = { type = "string", required = true, len_min = 1, custom_validator = no_slash } },
      { format = { type = "string", one_of = { "jsonl", "json" } } },
      { files = { type = "string", one_of = { "all", "latest" }, default = "all" } },
    },
  },
  extract = extract,
}
