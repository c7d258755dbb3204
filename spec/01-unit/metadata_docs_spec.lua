-- The examples in docs/metadata.md and docs/connectors.md validate: a doc example that stops
-- validating fails here.
local metadata = require "dp.metadata"
local models = require "dp.models"
local schema = require "dp.schema"
local sandbox = require "dp.sandbox"
local cjson = require "cjson"

-- Code blocks of a Markdown file: { lang, text, label = last non-blank line before the fence }.
local function blocks(path)
  return require("helpers").markdown_blocks(require("helpers").read_file(path))
end

local function assert_valid(texts)
  local meta, errs = metadata.load_texts(texts, { scripts_dir = "." })
  assert.is_nil(errs, errs and table.concat(errs, "\n"))
  return meta
end

describe("documentation examples", function()
  it("docs/metadata.md: the complete example folder validates", function()
    local texts = {}
    for _, b in ipairs(blocks("docs/metadata.md")) do
      local file = b.lang == "json" and b.label and b.label:match("^`(%a+%.json)`$")
      if file then texts[file] = b.text end
    end
    assert.is_string(texts["systems.json"], "no `systems.json` example found")
    assert.is_string(texts["entities.json"], "no `entities.json` example found")
    local meta = assert_valid(texts)
    assert.is_true(#meta.entities > 0)
  end)

  it("docs/metadata.md: the reader's messages quoted on the page are the messages of the fixtures", function()
    -- every message of the invalid fixture corpus (spec/01-unit/metadata_spec.lua checks that
    -- the validator gives exactly these)
    local known = {}
    for name in io.popen("ls spec/fixtures/metadata/invalid"):lines() do
      for line in io.lines("spec/fixtures/metadata/invalid/" .. name .. "/expected.txt") do known[#known + 1] = line end
    end
    local function found(fragment)
      for _, line in ipairs(known) do if line:find(fragment, 1, true) then return true end end
      return false
    end
    local section, n = nil, 0
    for line in io.lines("docs/metadata.md") do
      section = line:match("^## (.*)") or section
      if section == "How the files are read" or section == "Validation" then
        -- the last cell of a table row, when it is one `code span`
        local msg = line:match("^|.*| `([^`]+)` |$")
        if msg and (section == "How the files are read" or msg:match("^%a+%.json:%d")) or (msg and msg:find("holds a control character", 1, true)) then
          for fragment in (msg .. "..."):gmatch("(.-)%.%.%.") do
            fragment = fragment:gsub("^%s+", ""):gsub("%s+$", "")
            if fragment ~= "" then
              assert.is_true(found(fragment), "docs/metadata.md quotes a message no fixture gives: " .. fragment)
              n = n + 1
            end
          end
        end
      end
    end
    assert.is_true(n >= 8, "too few quoted messages found: " .. n)
  end)

  it("docs/metadata.md: trigger examples validate", function()
    local n = 0
    for _, b in ipairs(blocks("docs/metadata.md")) do
      if b.lang == "json" and b.text:match('^%s*"triggers"') then
        local list = cjson.decode("{" .. b.text .. "}").triggers
        for i, t in ipairs(list) do
          local _, errs = schema.validate(models.Trigger, t, "triggers[" .. (i - 1) .. "]")
          assert.is_nil(errs, errs and table.concat(errs, "\n"))
          n = n + 1
        end
      end
    end
    assert.is_true(n > 0, "no trigger example found")
  end)

  it("docs/metadata.md: every JSON example is checked (columns, secret references)", function()
    local n, unknown = 0, {}
    local column_types = {}
    for _, t in ipairs(models.COLUMN_TYPES) do column_types[t] = true end
    for i, b in ipairs(blocks("docs/metadata.md")) do
      local file = b.lang == "json" and b.label and b.label:match("^`(%a+%.json)`$")
      if b.lang == "json" and not file and not b.text:match('^%s*"triggers"') then
        local v = cjson.decode(b.text)
        local model
        if type(v) == "table" and v.secret ~= nil then model = models.SecretRef
        elseif type(v) == "table" and v.name and column_types[v.type] then model = models.Column end
        if model then
          local _, errs = schema.validate(model, v, "example")
          assert.is_nil(errs, errs and table.concat(errs, "\n"))
          n = n + 1
        else
          unknown[#unknown + 1] = "block " .. i .. ": " .. b.text
        end
      end
    end
    assert.are.same({}, unknown)
    assert.is_true(n >= 3)
  end)

  it("docs/connectors.md: the file connector's system and entity examples validate", function()
    local systems, entities = {}, {}
    for _, b in ipairs(blocks("docs/connectors.md")) do
      if b.lang == "json" then
        local v = cjson.decode(b.text)
        if v.system then entities[#entities + 1] = v elseif v.type then systems[#systems + 1] = v end
      end
    end
    assert.is_true(#systems > 0 and #entities > 0, "no system or entity example found")
    assert_valid({ ["systems.json"] = cjson.encode(systems), ["entities.json"] = cjson.encode(entities) })
  end)

  it("docs/connectors.md: the example connector loads in the sandbox", function()
    local n = 0
    for _, b in ipairs(blocks("docs/connectors.md")) do
      if b.lang == "lua" and b.text:match("extract") then
        local path = os.tmpname()
        local f = assert(io.open(path, "wb"))
        f:write(b.text)
        f:close()
        local conn, err = sandbox.load_connector(path)
        os.remove(path)
        assert.is_nil(err)
        assert.is_function(conn.extract)
        n = n + 1
      end
    end
    assert.is_true(n > 0, "no connector example found")
  end)
end)
