-- Metadata fuzzing: mutants of the shipped metadata/, the spec fixtures and the examples
-- (dropped and duplicated keys, wrong kinds, null elements, boundary numbers, control bytes,
-- invalid UTF-8, byte order marks, UTF-16, deep nesting, truncation, huge strings), each checked
-- by an oracle:
--   * the validator never raises and answers within 5 s; the engine binary never crashes and
--     never hangs (killed after 60 s);
--   * a rejected mutant gets at least one message, each naming its file and where (a JSON path,
--     or line:column for a file that is not JSON), one line, short, without parser internals
--     (no "T_" token names, no "cjson", no Lua traceback or validator crash); the binary prints
--     exactly those messages and exits 2;
--   * a mutant that must be refused (BOM, UTF-16, NUL, invalid UTF-8, control bytes, a duplicate
--     key, truncation) is refused;
--   * an accepted mutant is usable: its validated form encodes to JSON that validates again, and
--     for a sample of column mutants `dp-engine run` creates the silver table with every column.
--
-- A fixed seed set runs in the normal suite; run longer by hand with
--   DP_FUZZ_ITER=5000 DP_FUZZ_SEED=7 spec/run.sh spec/03-fuzz/metadata_fuzz_spec.lua
-- (DP_FUZZ_ITER: mutants per seed; DP_FUZZ_SEED: one seed instead of the fixed set). A failure
-- prints the seed, the iteration and the mutation, so that it can be replayed.
local H = require "helpers"
local metadata = require "dp.metadata"
local schema = require "dp.schema"
local reader = require "dp.jsonreader"

local null = schema.null
local FILES = metadata.FILES

local SEEDS = { 11, 2024, 31337 }
if os.getenv("DP_FUZZ_SEED") then SEEDS = { (assert(tonumber(os.getenv("DP_FUZZ_SEED")), "DP_FUZZ_SEED must be a number")) } end
local ITER = tonumber(os.getenv("DP_FUZZ_ITER") or "") or 400

-- The corpora: metadata folders and the scripts folder (connectors/, gold/) each validates with.
local FIX = H.root .. "/spec/fixtures/metadata"
local CORPORA = {
  { dir = H.root .. "/metadata", scripts = H.root },
  { dir = FIX .. "/valid", scripts = FIX .. "/scripts" },
  { dir = H.root .. "/metadata/examples/github", scripts = H.root },
  { dir = H.root .. "/metadata/examples/strava", scripts = H.root },
}

---------------------------------------------------------------------------------------------
-- A small deterministic generator (LuaJIT's math.random differs between builds).

local function rng(seed)
  local s = seed % 2147483647
  if s <= 0 then s = s + 2147483646 end
  local r = {}
  function r.int(lo, hi) -- lo..hi inclusive
    s = (s * 16807) % 2147483647
    return lo + s % (hi - lo + 1)
  end
  function r.pick(list) return list[r.int(1, #list)] end
  return r
end

---------------------------------------------------------------------------------------------
-- Trees: decoded with the strict reader (kinds kept in schema.KIND), encoded back with sorted
-- keys. RAW{text} is JSON text written as is (numbers beyond what a Lua number holds).

local RAW = {}
local function raw(text) return setmetatable({ text }, RAW) end
local function obj(t) schema.KIND[t] = "object"; return t end
local function arr(t) schema.KIND[t] = "array"; return t end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function encode(v)
  if v == null then return "null" end
  local t = type(v)
  if t == "string" then return encode_string(v) end
  if t == "number" then return schema.format_number(v) end
  if t == "boolean" then return tostring(v) end
  if getmetatable(v) == RAW then return v[1] end
  local parts = {}
  if schema.kind(v) == "array" then
    for i = 1, #v do parts[i] = encode(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  for _, k in ipairs(sorted_keys(v)) do parts[#parts + 1] = encode_string(k) .. ":" .. encode(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function copy(v)
  if type(v) ~= "table" or getmetatable(v) == RAW then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  schema.KIND[out] = schema.KIND[v]
  return out
end

-- Every (parent, key) in the tree, in a fixed order.
local function slots(v, out)
  out = out or {}
  if type(v) == "table" and getmetatable(v) ~= RAW then
    local keys = schema.kind(v) == "array" and {} or sorted_keys(v)
    if schema.kind(v) == "array" then for i = 1, #v do keys[i] = i end end
    for _, k in ipairs(keys) do
      out[#out + 1] = { v, k }
      slots(v[k], out)
    end
  end
  return out
end

---------------------------------------------------------------------------------------------
-- Values a mutation puts in.

local NUMBERS = { "0", "-1", "1", "1.0", "1.5", "-0", "2147483647", "2147483648", "-2147483649",
  "9007199254740991", "9007199254740992", "9007199254740993", "9223372036854775807",
  "9223372036854775808", "18446744073709551616", "1e308", "1e309", "-1e309", "1e-400", "1E+2",
  "10485760", "10485761", "1000", "1001", "63", "64", "36500", "36501", "0.1", "123456789012345678901234567890",
  string.rep("9", 5000), "0." .. string.rep("0", 400) .. "1" }

local STRINGS = { "", " ", "x", "ctid", "xmin", "tableoid", "cmax", "oid", "_dp_run_id", "_dp_x", "a__b", "Bank",
  "select", "user", "order", string.rep("a", 63), string.rep("a", 64), "../etc/passwd", "a/b", "a.b", "a..b",
  "Mars/Olympus", "Europe/Nowhere", "Europe/Berlin", "UTC", "0 6 * * *", "61 * * * *",
  "in\0box", "a\nb", "tab\there", "bell\7", "del\127", "é", "😀", "\\", '"', "{\"secret\":\"x\"}",
  "string", "text", "integer", "bigint", "decimal", "double", "boolean", "date", "timestamp", "json", "uuid",
  "full", "delta", "close", "tombstone", "ignore", "reject", "fail", "scd1", "scd2", "table", "incremental",
  "schedule", "file", "after", "callback", "bank", "fitness", "bank.transactions", "*.jsonl",
  string.rep("a/", 5000), string.rep("x", 5000) .. ".lua", string.rep("9", 3000) .. " * * * *" }

local function value(r)
  local k = r.int(1, 12)
  if k == 1 then return null end
  if k == 2 then return r.int(0, 1) == 1 end
  if k == 3 then return raw(r.pick(NUMBERS)) end
  if k <= 5 then return r.pick(STRINGS) end
  if k == 6 then return obj({}) end
  if k == 7 then return arr({}) end
  if k == 8 then return arr({ null }) end
  if k == 9 then return obj({ a = 1 }) end
  if k == 10 then return arr({ r.pick(STRINGS) }) end
  if k == 11 then return string.rep(r.pick({ "a", "é", "\1" }), r.pick({ 1000, 100000 })) end
  local depth = r.pick({ 10, 60, 63, 64, 65, 200 }) -- deep nesting
  return raw(string.rep("[", depth) .. string.rep("]", depth))
end

---------------------------------------------------------------------------------------------
-- Mutations. Each returns a description; text mutations that make the file unreadable as
-- metadata return must_reject = true.

local function tree_mutation(r, doc)
  local all = slots(doc)
  if #all == 0 then return "nothing to mutate" end
  local parent, key = unpack(r.pick(all))
  local where = tostring(key)
  local op = r.int(1, 7)
  if op == 1 then
    if type(key) == "number" then table.remove(parent, key) else parent[key] = nil end
    return "drop " .. where
  elseif op == 2 or op == 3 then
    local v = value(r)
    parent[key] = v
    return "set " .. where .. " = " .. (type(v) == "table" and getmetatable(v) == RAW and v[1]:sub(1, 20) or encode(v):sub(1, 40))
  elseif op == 4 then
    parent[key] = null
    return "null " .. where
  elseif op == 5 then
    local p2, k2 = unpack(r.pick(all))
    parent[key], p2[k2] = p2[k2], parent[key]
    return "swap " .. where .. " and " .. tostring(k2)
  elseif op == 6 then
    if schema.kind(parent) == "array" then
      table.insert(parent, key, copy(parent[key]))
      return "duplicate element " .. where
    end
    parent[r.pick({ "nmae", "extra", "Name", "type ", "_dp" })] = value(r)
    return "add an unknown key next to " .. where
  else
    if schema.kind(parent) == "array" then
      table.insert(parent, key, null)
      return "insert null before element " .. where
    end
    parent[key] = value(r)
    return "set " .. where
  end
end

local function utf16(text, big_endian)
  return (text:gsub(".", function(c) return big_endian and ("\0" .. c) or (c .. "\0") end))
end

local function text_mutation(r, text)
  local op = r.int(1, 8)
  local last = #text - (#(text:match("%s*$")))
  if op == 1 then return "\239\187\191" .. text, "BOM", true end
  if op == 2 then
    local be = r.int(0, 1) == 1
    return (r.int(0, 1) == 1 and (be and "\254\255" or "\255\254") or "") .. utf16(text, be), "UTF-16", true
  end
  if op == 3 then
    local at = r.int(1, math.max(1, last - 1))
    return text:sub(1, at - 1), "truncate at byte " .. at, true
  end
  if op == 4 then -- a byte that is never valid in a metadata file
    local b = r.pick({ 0, 1, 7, 8, 11, 12, 27, 31, 0x80, 0xBF, 0xC0, 0xC1, 0xF5, 0xFF, 0xE2, 0xED })
    local at = r.int(1, #text + 1)
    return text:sub(1, at - 1) .. string.char(b) .. text:sub(at), string.format("byte 0x%02X at %d", b, at), true
  end
  if op == 5 then -- duplicate a member with a string value in the same object
    local members = {}
    for s, m, e in text:gmatch('()("[%w_]+"%s*:%s*"[^"\\]*")()') do members[#members + 1] = { s, m, e } end
    if #members == 0 then return text, "no member to duplicate", false end
    local m = r.pick(members)
    return text:sub(1, m[3] - 1) .. ", " .. m[2] .. text:sub(m[3]), "duplicate member " .. m[2]:sub(1, 30), true
  end
  if op == 6 then -- a structural character in the wrong place
    local at = r.int(1, #text)
    local c = r.pick({ "{", "}", "[", "]", ",", ":", '"', "\\", "'", "/" })
    return text:sub(1, at - 1) .. c .. text:sub(at + 1), "replace byte " .. at .. " with " .. c, false
  end
  if op == 7 then -- an escape that is not one, or a lone surrogate / NUL escape inside a string
    local strings = {}
    for e in text:gmatch('"[%w_]*()"') do strings[#strings + 1] = e end
    if #strings == 0 then return text, "no string", false end
    local at = r.pick(strings)
    local esc = r.pick({ "\\u0000", "\\ud800", "\\udfff", "\\x41", "\\u12", "\\q" })
    return text:sub(1, at - 1) .. esc .. text:sub(at), "escape " .. esc, true
  end
  return text .. r.pick({ " x", "[]", ",", "\n// end" }), "trailing garbage", true
end

---------------------------------------------------------------------------------------------
-- The oracle.

local FORBIDDEN = { "T_%u", "cjson", "traceback", "validator failed", "check failed", "default failed",
  "attempt to", "dp/%w+%.lua:%d+", "stack overflow", "not enough memory" }

local function check_messages(errs, ctx)
  assert(type(errs) == "table" and #errs > 0, ctx .. ": rejected without a message")
  for _, e in ipairs(errs) do
    assert(type(e) == "string", ctx .. ": a message that is not a string")
    local file = e:match("^([%a]+%.json)[%[:]")
    assert(file and (file == FILES[1] or file == FILES[2] or file == FILES[3]),
      ctx .. ": message does not start with the file and path: " .. e:sub(1, 200))
    for _, bad in ipairs(FORBIDDEN) do
      assert(not e:find(bad), ctx .. ": message shows internals (" .. bad .. "): " .. e:sub(1, 300))
    end
    assert(not e:find("[%z\1-\31\127]"), ctx .. ": message holds a control character: " .. schema.quote(e))
    assert(#e <= schema.MAX_MESSAGE, ctx .. ": message of " .. #e .. " bytes")
  end
end

-- The validated meta, written back as JSON, validates again (and to the same thing).
local function check_accepted(meta, scripts, ctx)
  local texts = {}
  for _, file in ipairs(FILES) do
    local items = {}
    for i, item in ipairs(meta[file == "systems.json" and "systems" or file == "entities.json" and "entities" or "gold"]) do
      items[i] = schema.encode(item)
    end
    texts[file] = "[" .. table.concat(items, ",") .. "]"
  end
  local again, errs = metadata.load_texts(texts, { scripts_dir = scripts })
  assert(again, ctx .. ": accepted, but its validated form does not validate: " .. table.concat(errs or {}, "; "))
  for _, k in ipairs({ "systems", "entities", "gold" }) do
    assert(#again[k] == #meta[k], ctx .. ": " .. k .. " changed in number")
  end
end

local function read_corpus(c)
  local texts = {}
  for _, file in ipairs(FILES) do texts[file] = H.try_read(c.dir .. "/" .. file) end
  return texts
end

-- One mutant of a corpus: 1-3 mutations of the text or the tree of one or two files.
local function mutant(r, base)
  local texts, what, must_reject = {}, {}, false
  for k, v in pairs(base) do texts[k] = v end
  for _ = 1, r.int(1, 3) do
    local file = r.pick(FILES)
    if texts[file] then
      if r.int(1, 4) == 1 then
        local t, desc, reject = text_mutation(r, texts[file])
        texts[file] = t
        what[#what + 1] = file .. ": " .. desc
        must_reject = must_reject or reject
      else
        local doc = reader.decode(texts[file], file)
        if doc then -- (an earlier text mutation may have broken it: then leave it)
          what[#what + 1] = file .. ": " .. tree_mutation(r, doc)
          texts[file] = encode(doc)
        end
      end
    end
  end
  return texts, table.concat(what, "; "), must_reject
end

-- H.engine under a deadline: a hang is killed after 60 s and shows as exit 137.
local function engine_timed(env, ...)
  local parts = { "timeout", "-s", "KILL", "60", "env" }
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end
  parts[#parts + 1] = H.sh_quote(H.bin)
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.sh_quote(a) end
  local errfile = os.tmpname()
  local rc, out = H.sh(table.concat(parts, " ") .. " 2>" .. H.sh_quote(errfile))
  local err = H.read_file(errfile)
  os.remove(errfile)
  assert(rc ~= 137, "dp-engine " .. table.concat({ ... }, " ") .. " hung (killed after 60 s)")
  return rc, out, err
end

local function write_dir(dir, texts)
  for _, file in ipairs(FILES) do
    os.remove(dir .. "/" .. file)
    if texts[file] then H.write_file(dir .. "/" .. file, texts[file]) end
  end
end

describe("metadata fuzzing", function()
  local tmp

  setup(function() tmp = H.tmpdir("meta-fuzz") end)
  teardown(function() if tmp then os.execute("rm -rf " .. H.sh_quote(tmp)) end end)

  it("every mutant is either accepted and usable, or rejected with clear messages (validator and binary)", function()
    local bases = {}
    for i, c in ipairs(CORPORA) do
      bases[i] = read_corpus(c)
      assert(metadata.load_texts(bases[i], { scripts_dir = c.scripts }), "corpus " .. c.dir .. " must be valid")
    end
    local counts = { accepted = 0, rejected = 0, binary = 0 }
    local slowest = 0
    for _, seed in ipairs(SEEDS) do
      local r = rng(seed)
      local binary_left = 4 -- per seed: this many rejected and one accepted mutant also go through the binary
      local accepted_binary = 1
      for iter = 1, ITER do
        local ci = r.int(1, #CORPORA)
        local texts, what, must_reject = mutant(r, bases[ci])
        local ctx = string.format("seed %d, iteration %d, corpus %s, mutation %s", seed, iter, CORPORA[ci].dir, what)
        local t0 = os.clock()
        local ok, meta, errs = pcall(metadata.load_texts, texts, { scripts_dir = CORPORA[ci].scripts })
        local took = os.clock() - t0
        if took > slowest then slowest = took end
        assert(ok, ctx .. ": the validator raised: " .. tostring(meta))
        assert(took < 5, ctx .. ": the validator took " .. took .. " s")
        if meta then
          assert(not must_reject, ctx .. ": accepted, but this mutation must be refused")
          counts.accepted = counts.accepted + 1
          check_accepted(meta, CORPORA[ci].scripts, ctx)
        else
          counts.rejected = counts.rejected + 1
          check_messages(errs, ctx)
        end
        -- a sample through the binary: same messages, exit 2 (or 0 and the summary)
        if (not meta and binary_left > 0 and iter % 7 == 0) or (meta and accepted_binary > 0) then
          write_dir(tmp, texts)
          local rc, out, err = engine_timed({ DP_HOME = H.root, DP_SCRIPTS = CORPORA[ci].scripts, DP_LOG_LEVEL = "warn" },
            "metadata", "validate", "--dir", tmp)
          counts.binary = counts.binary + 1
          if meta then
            accepted_binary = accepted_binary - 1
            assert(rc == 0, ctx .. ": the binary exits " .. tostring(rc) .. ": " .. tostring(err))
            assert.matches("^metadata in .* is valid: ", out)
          else
            binary_left = binary_left - 1
            assert(rc == 2, ctx .. ": the binary exits " .. tostring(rc) .. " (expected 2): " .. tostring(err))
            assert.equal("dp-engine metadata validate: invalid metadata in " .. tmp .. ":\n  " .. table.concat(errs, "\n  ") .. "\n", err, ctx)
          end
        end
      end
    end
    if os.getenv("DP_FUZZ_VERBOSE") then
      print(string.format("# metadata fuzz: %d accepted, %d rejected, %d binary runs, slowest %.3f s", counts.accepted, counts.rejected, counts.binary, slowest))
    end
    -- the mutator must reach both sides
    assert(counts.rejected > ITER * #SEEDS / 3, "too few rejected mutants: " .. counts.rejected)
    assert(counts.accepted > 0, "no mutant was accepted: the oracle's accepted side never ran")
    assert(counts.binary >= #SEEDS, "too few binary runs: " .. counts.binary)
  end)

  describe("accepted column mutants make working silver tables", function()
    local env

    setup(function() env = H.fresh_env("meta_fuzz", { metadata = FIX .. "/valid" }) end)

    -- Column shapes at and around every limit, in place of the first column of bank.accounts.
    local NAMES = { "select", "user", "order", "group", "a", string.rep("c", 63), "ctid", "xmin", "_dp_x", "a__b", "café", "Amount" }
    local TYPES = { { type = "string", length = 1 }, { type = "string", length = 10485760 }, { type = "string", length = 10485761 },
      { type = "string", length = 0 }, { type = "decimal", precision = 1000, scale = 1000 }, { type = "decimal", precision = 1, scale = 0 },
      { type = "decimal", precision = 1001 }, { type = "decimal", precision = 10, scale = 11 }, { type = "double" }, { type = "json" },
      { type = "uuid" }, { type = "timestamp" }, { type = "boolean" }, { type = "integer" }, { type = "text", length = 5 } }

    it("for names and types at their limits", function()
      local base = read_corpus(CORPORA[2])
      local seed = SEEDS[1]
      local r = rng(seed)
      local runs, rejected = 0, 0
      local pg = H.pg(env)
      for iter = 1, 60 do
        local doc = reader.decode(base["entities.json"], "entities.json")
        local accounts = doc[2]
        local col = obj({ name = r.pick(NAMES) })
        for k, v in pairs(r.pick(TYPES)) do col[k] = v end
        if r.int(1, 3) == 1 then col.nullable = false end
        accounts.columns[r.int(1, #accounts.columns)] = col
        local texts = {}
        for k, v in pairs(base) do texts[k] = v end
        texts["entities.json"] = encode(doc)
        local ctx = string.format("seed %d, iteration %d, column %s", seed, iter, encode(col))
        local meta, errs = metadata.load_texts(texts, { scripts_dir = CORPORA[2].scripts })
        if not meta then
          rejected = rejected + 1
          check_messages(errs, ctx)
        elseif runs < 4 then
          runs = runs + 1
          -- a fresh table for each shape, so no run meets the table of another
          assert(pg:query("DROP TABLE IF EXISTS silver.bank__accounts, silver.bank__accounts__rejected CASCADE"))
          assert(pg:query("DELETE FROM dp.entity_state WHERE system = 'bank' AND entity = 'accounts'"))
          write_dir(tmp, texts)
          local rc, _, err = engine_timed(H.with(env, { DP_METADATA = tmp, DP_SCRIPTS = CORPORA[2].scripts }),
            "run", "bank", "--entity", "accounts")
          assert(rc == 0, ctx .. ": run exits " .. tostring(rc) .. ": " .. tostring(err))
          local want = {}
          for _, c in ipairs(metadata.find_entity(meta, "bank", "accounts").columns) do want[#want + 1] = c.name end
          local got = {}
          for _, row in ipairs(assert(pg:query([[SELECT attname FROM pg_attribute
              WHERE attrelid = 'silver.bank__accounts'::regclass AND attnum > 0 AND NOT attisdropped
                AND attname NOT LIKE '\_dp\_%' ORDER BY attnum]]))) do
            got[#got + 1] = row.attname
          end
          assert.same(want, got, ctx)
        end
      end
      pg:close()
      assert(runs >= 2, "too few accepted column mutants ran: " .. runs)
      assert(rejected >= 10, "too few rejected column mutants: " .. rejected)
    end)
  end)
end)
