-- The metadata loader: a valid set loads with defaults; each invalid case under
-- spec/fixtures/metadata/invalid/<case>/ (files that differ from valid/, and expected.txt)
-- gives exactly its expected errors; random mutations never crash the validator.
local metadata = require "dp.metadata"
local schema = require "dp.schema"
local cjson = require "cjson"

local FIX = "spec/fixtures/metadata"
local SCRIPTS = FIX .. "/scripts"

local H = require "helpers"
local tmpdir, write, read = H.tmpdir, H.write_file, H.try_read


local function valid_texts()
  local t = {}
  for _, file in ipairs(metadata.FILES) do t[file] = read(FIX .. "/valid/" .. file) end
  return t
end

local function load(texts, scripts)
  return metadata.load_texts(texts, { scripts_dir = scripts or SCRIPTS })
end


describe("metadata", function()
  describe("a valid set", function()
    local meta, errs

    setup(function()
      meta, errs = metadata.load_dir(FIX .. "/valid", { scripts_dir = SCRIPTS })
    end)

    it("loads, with every item in file order", function()
      assert.is_nil(errs)
      assert.same({ "bank", "fitness" }, { meta.systems[1].name, meta.systems[2].name })
      assert.same({ "transactions", "accounts", "workouts" }, { meta.entities[1].name, meta.entities[2].name, meta.entities[3].name })
      assert.same({ "monthly_spend", "spend_by_merchant" }, { meta.gold[1].name, meta.gold[2].name })
    end)

    it("applies defaults everywhere, including the connector's", function()
      assert.same({ name = "bank", description = "Current account", type = "inline", enabled = true,
        triggers = { { type = "schedule", cron = "0 6 * * *", timezone = "Europe/Berlin" } } }, meta.systems[1])
      assert.same({ secret = "fitness_token" }, meta.systems[2].token)
      local accounts = meta.entities[2]
      assert.equal("full", accounts.load_type)
      assert.equal("tombstone", accounts.delete_detection)
      assert.equal("reject", accounts.on_type_error)
      assert.same({ name = "notes", type = "text", nullable = true, path = "notes", history = "scd2" }, accounts.columns[6])
      assert.same({ name = "amount", type = "decimal", precision = 12, scale = 2, nullable = true, path = "amount",
        history = "scd2" }, meta.entities[1].columns[3])
      assert.equal("monthly_spend.lua", meta.gold[1].script)
      assert.equal("table", meta.gold[1].materialization)
    end)

    it("encodes empty lists as JSON arrays with schema.encode", function()
      local json = schema.encode(meta.entities[3])
      assert.matches('"primary_key":[]', json, 1, true)
      assert.matches('"records":[]', json, 1, true)
    end)

    it("hashes the three files with sha256 over name, length and bytes", function()
      local core = require "dp.core"
      local t = valid_texts()
      local expected = core.sha256("systems.json " .. #t["systems.json"] .. "\n" .. t["systems.json"]
        .. "entities.json " .. #t["entities.json"] .. "\n" .. t["entities.json"]
        .. "gold.json " .. #t["gold.json"] .. "\n" .. t["gold.json"])
      assert.equal(expected, meta.hash)
      assert.matches("^%x+$", meta.hash)
      assert.equal(64, #meta.hash)
      t["gold.json"] = t["gold.json"] .. " "
      assert.are_not.equal(meta.hash, (load(t)).hash)
    end)
  end)

  describe("files", function()
    it("treats an absent gold.json as empty", function()
      local t = valid_texts()
      t["gold.json"] = nil
      local meta = assert(load(t))
      assert.same({}, meta.gold)
      assert.equal(require("dp.core").sha256("systems.json " .. #t["systems.json"] .. "\n" .. t["systems.json"]
        .. "entities.json " .. #t["entities.json"] .. "\n" .. t["entities.json"] .. "gold.json 0\n"), meta.hash)
    end)

    it("requires systems.json and entities.json in the folder", function()
      local d = tmpdir()
      write(d .. "/systems.json", "[]")
      local meta, errs = metadata.load_dir(d, { scripts_dir = SCRIPTS })
      assert.is_nil(meta)
      assert.same({ "entities.json: cannot read " .. d .. "/entities.json" }, errs)
      os.execute("rm -rf '" .. d .. "'")
    end)

    it("accepts empty arrays", function()
      local meta = assert(load({ ["systems.json"] = "[]", ["entities.json"] = " [ ]\n" }))
      assert.same({}, meta.systems)
    end)
  end)

  describe("invalid cases", function()
    local cases = {}
    for name in io.popen("ls " .. FIX .. "/invalid"):lines() do cases[#cases + 1] = name end

    it("has a corpus of at least 30 cases", function()
      assert.is_true(#cases >= 30, #cases .. " cases")
    end)

    for _, name in ipairs(cases) do
      it(name, function()
        local texts = valid_texts()
        for _, file in ipairs(metadata.FILES) do
          texts[file] = read(FIX .. "/invalid/" .. name .. "/" .. file) or texts[file]
        end
        local expected = {}
        for line in io.lines(FIX .. "/invalid/" .. name .. "/expected.txt") do expected[#expected + 1] = line end
        local meta, errs = load(texts)
        assert.is_nil(meta)
        assert.same(expected, errs)
      end)
    end
  end)

  describe("the file connector's options", function()
    local function texts(system, entity)
      local s = { name = "bank", type = "file", inbox = "inbox/bank" }
      local e = { name = "tx", system = "bank", source = { pattern = "tx-*.jsonl" }, columns = { { name = "id", type = "bigint" } } }
      for k, v in pairs(system or {}) do s[k] = v end
      for k, v in pairs(entity or {}) do e[k] = v end
      return { ["systems.json"] = cjson.encode({ s }), ["entities.json"] = cjson.encode({ e }) }
    end

    it("are validated by connectors/file.lua", function()
      local meta = assert(load(texts(), "."))
      assert.same({ pattern = "tx-*.jsonl", files = "all", min_age_seconds = 2, csv = { quote = '"' } }, meta.entities[1].source)
      assert.equal("inbox/bank", meta.systems[1].inbox)
      local _, errs = load(texts({ inbox = cjson.null }, { source = { pattern = "in/tx-*.jsonl", format = "xml", files = "last" } }), ".")
      assert.same({
        "systems.json[0].inbox: required field missing",
        'entities.json[0].source.pattern: "in/tx-*.jsonl" must be a file name pattern, without "/"',
        'entities.json[0].source.format: "xml" is not one of jsonl, json, csv',
        'entities.json[0].source.files: "last" is not one of all, latest',
      }, errs)
    end)
  end)

  describe("mutations of the valid set", function()
    -- Drop a key, change a value's kind, swap two values, null a value, duplicate an item:
    -- every result is either valid metadata or a list of clear errors, never a crash.
    local KINDS = { "x", 0, 1.5, true, cjson.null, {}, { "a" }, { a = 1 } }

    local function paths(v, prefix, out)
      if type(v) == "table" then
        for k, x in pairs(v) do
          local p = { unpack(prefix) }
          p[#p + 1] = k
          out[#out + 1] = p
          paths(x, p, out)
        end
      end
      return out
    end

    local function get_parent(root, p)
      local t = root
      for i = 1, #p - 1 do t = t[p[i]] end
      return t, p[#p]
    end

    it("never crash the validator", function()
      math.randomseed(20240101)
      local base = {}
      for _, file in ipairs(metadata.FILES) do base[file] = cjson.decode(valid_texts()[file]) end
      local valid, invalid = 0, 0
      for _ = 1, 400 do
        local docs = {}
        for file, v in pairs(base) do docs[file] = schema.deep_copy(v) end
        for _ = 1, math.random(1, 3) do
          local file = metadata.FILES[math.random(#metadata.FILES)]
          local all = paths(docs[file], {}, {})
          if #all > 0 then
            local p = all[math.random(#all)]
            local parent, key = get_parent(docs[file], p)
            local op = math.random(5)
            if op == 1 then
              if type(key) == "number" then table.remove(parent, key) else parent[key] = nil end
            elseif op == 2 then
              parent[key] = schema.deep_copy(KINDS[math.random(#KINDS)])
            elseif op == 3 then
              local q = all[math.random(#all)]
              local parent2, key2 = get_parent(docs[file], q)
              parent[key], parent2[key2] = parent2[key2], parent[key]
            elseif op == 4 then
              parent[key] = cjson.null
            else
              docs[file][#docs[file] + 1] = schema.deep_copy(docs[file][1])
            end
          end
        end
        local texts = {}
        for file, v in pairs(docs) do
          local ok, text = pcall(cjson.encode, v)
          texts[file] = ok and text or "[]"
        end
        local ok, meta, errs = pcall(load, texts)
        assert.is_true(ok, tostring(meta))
        if meta then
          valid = valid + 1
        else
          invalid = invalid + 1
          assert.is_true(#errs > 0)
          for _, e in ipairs(errs) do
            assert.matches("^[a-z]+%.json[%[:]", e)
          end
        end
      end
      assert.is_true(invalid > 100, "mutations should mostly be invalid: " .. invalid)
    end)
  end)
end)
