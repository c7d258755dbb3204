-- `dp-engine connectors list|show` and the generated option tables of docs/connectors.md: one
-- source (the schemas' field descriptions), so the docs cannot drift from the code.
local H = require "spec.helpers"
local doc = require "dp.connectors_doc"
local models = require "dp.models"
local sandbox = require "dp.sandbox"

local function load(type_name)
  return assert(sandbox.load_connector(H.root .. "/connectors/" .. type_name .. ".lua"))
end

local function types()
  local out = {}
  for _, c in ipairs(doc.list(H.root, sandbox.load_connector)) do out[#out + 1] = c.type end
  return out
end

local ENV = { DP_HOME = H.root, DP_SCRIPTS = H.root, DP_LOG_LEVEL = "warn" }

describe("schema descriptions", function()
  it("every field of System, Entity, Column and GoldModel has a description", function()
    for name, def in pairs({ System = models.System, Entity = models.Entity, Column = models.Column,
        GoldModel = models.GoldModel, Trigger = models.Trigger, SecretRef = models.SecretRef }) do
      local missing = doc.undescribed(def, "")
      assert.are.same({}, missing, name .. ": fields without a description: " .. table.concat(missing, ", "))
    end
  end)

  it("every field of every shipped connector's schemas has a description", function()
    assert.is_true(#types() >= 2)
    for _, t in ipairs(types()) do
      local conn = load(t)
      for _, key in ipairs({ "system_schema", "entity_schema" }) do
        local missing = doc.undescribed(conn[key], "")
        assert.are.same({}, missing, t .. " " .. key .. ": fields without a description: " .. table.concat(missing, ", "))
      end
    end
  end)

  it("finds a field without a description, nested ones included", function()
    local def = { type = "record", fields = {
      { a = { type = "string", description = "x" } },
      { b = { type = "record", description = "y", fields = { { c = { type = "integer" } } } } },
      { d = { type = "string" } },
    } }
    assert.are.same({ "b.c", "d" }, doc.undescribed(def, ""))
  end)
end)

describe("docs/connectors.md option tables", function()
  it("are what `connectors show TYPE --markdown` generates, for every connector type", function()
    local text = H.read_file(H.root .. "/docs/connectors.md")
    local found = doc.find_blocks(text)
    for _, t in ipairs(types()) do
      for _, b in ipairs(doc.blocks(load(t), t)) do
        local have = found[b.id]
        assert.is_not_nil(have, "docs/connectors.md has no generated block " .. b.id
          .. ": add the markers " .. doc.begin_marker(t, b.id) .. " / " .. doc.END_MARKER .. " and run bash docs/generate.sh")
        assert.are.equal(b.text, have.text, "docs/connectors.md:" .. have.line .. ": the block " .. b.id
          .. " differs from the schema of connectors/" .. t .. ".lua: run bash docs/generate.sh")
      end
    end
  end)

  it("splice replaces only the blocks it is given and keeps the rest of the text", function()
    local m1 = doc.begin_marker("x", "x system")
    local text = "intro\n" .. m1 .. "\nold\n" .. doc.END_MARKER .. "\nafter\n"
    local new, n = doc.splice(text, { { id = "x system", text = "| a |\n| b |" } })
    assert.are.equal(1, n)
    assert.are.equal("intro\n" .. m1 .. "\n| a |\n| b |\n" .. doc.END_MARKER .. "\nafter\n", new)
    assert.are.equal("| a |\n| b |", doc.find_blocks(new)["x system"].text)
    assert.are.equal(2, doc.find_blocks(new)["x system"].line)
    local same, n0 = doc.splice(text, { { id = "y source", text = "z" } })
    assert.are.equal(0, n0)
    assert.are.equal(text, same)
  end)

  it("a changed description makes the docs disagree", function()
    local conn = load("file")
    local before = doc.blocks(conn, "file")[1].text
    conn.system_schema.fields[1].inbox.description = "changed"
    assert.are_not.equal(before, doc.blocks(conn, "file")[1].text)
  end)
end)

describe("dp-engine connectors", function()
  it("list names every type with its description", function()
    local rc, out, err = H.engine(ENV, "connectors", "list")
    assert.are.equal(0, rc, err)
    assert.matches("\nfile  JSON Lines, JSON%-array and CSV exports", "\n" .. out)
    assert.matches("\nrest  any JSON REST API", out)
    rc, out = H.engine(ENV, "connectors", "list", "--json")
    assert.are.equal(0, rc)
    local list = H.cjson.decode(out)
    assert.are.equal("file", list[1].type)
    assert.are.equal("rest", list[2].type)
  end)

  it("show TYPE prints each option with type, default and meaning", function()
    local rc, out, err = H.engine(ENV, "connectors", "show", "file")
    assert.are.equal(0, rc, err)
    assert.matches("System options", out, 1, true)
    assert.matches("\n  inbox  string  (required)\n      folder of the exports", out, 1, true)
    assert.matches("\n  files  all | latest  (default all)\n", out, 1, true)
    assert.matches("\n  csv.delimiter  string\n", out, 1, true)
    rc, out = H.engine(ENV, "connectors", "show", "rest")
    assert.are.equal(0, rc)
    assert.matches('auth: pick one with "type"', out, 1, true)
    assert.matches("\n  type = oauth2\n    token_url  string  (required)\n", out, 1, true)
  end)

  it("show TYPE --json is one document with every option", function()
    local rc, out = H.engine(ENV, "connectors", "show", "rest", "--json")
    assert.are.equal(0, rc)
    local d = H.cjson.decode(out)
    assert.are.equal("rest", d.type)
    local by = {}
    for _, o in ipairs(d.system) do by[o.name] = o end
    assert.is_true(by.base_url.required)
    assert.are.equal("5", by["retry.max_attempts"].default)
    assert.are.equal("auth", d.variants[1].field)
  end)

  it("an unknown type exits 2 and names the known ones, with a hint", function()
    local rc, _, err = H.engine(ENV, "connectors", "show", "fil")
    assert.are.equal(2, rc)
    assert.matches('no connector type "fil"', err, 1, true)
    assert.matches('did you mean "file"?', err, 1, true)
    assert.matches("known: file, rest", err, 1, true)
    rc, _, err = H.engine(ENV, "connectors", "show", "../x")
    assert.are.equal(2, rc)
    assert.matches("is not a connector type", err, 1, true)
    rc, _, err = H.engine(ENV, "connectors", "show")
    assert.are.equal(2, rc)
    assert.matches("connectors show needs a TYPE", err, 1, true)
  end)

  it("a connector that does not load is named in list, with the reason", function()
    local dir = H.tmpdir("conn")
    H.sh("mkdir -p " .. dir .. "/connectors && cp " .. H.root .. "/connectors/file.lua " .. dir .. "/connectors/")
    H.write_file(dir .. "/connectors/broken.lua", "return { extract = 1 }\n")
    local env = { DP_HOME = H.root, DP_SCRIPTS = dir, DP_LOG_LEVEL = "warn" }
    local rc, out = H.engine(env, "connectors", "list")
    assert.are.equal(0, rc)
    assert.matches("broken  does not load: .*extract must be a function", out)
    local rc2, _, err = H.engine(env, "connectors", "show", "broken")
    assert.are.equal(2, rc2)
    assert.matches("extract must be a function", err, 1, true)
    H.sh("rm -rf " .. dir)
  end)
end)
