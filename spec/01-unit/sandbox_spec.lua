-- The script sandbox and the connector shape check.
local sandbox = require "dp.sandbox"

local dir
local function write(name, text)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

local function run(src)
  local path = write("script.lua", src)
  local res, err = sandbox.dofile(path)
  return res, err, path
end

local function run_error(src)
  local res, err, path = run(src)
  assert.is_nil(res)
  assert.is_string(err)
  return err, path
end

describe("sandbox", function()
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'"))
  end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  describe("environment", function()
    it("runs plain Lua with the allowed library", function()
      local res = run([[
        local t = {}
        for w in string.gmatch("b a c", "%a") do t[#t + 1] = w end
        table.sort(t)
        return { table.concat(t), math.max(1, 2), type(os.time()), select("#", 1, 2), ("x"):upper(),
          bit.band(6, 3), tostring(pcall(error, "e")) }
      ]])
      assert.same({ "abc", 2, "number", 2, "X", 2, "false" }, res)
    end)

    it("refuses os.execute with a clear error naming the script line", function()
      local err, path = run_error('local x = 1\nos.execute("touch /tmp/pwned")')
      assert.equal(path .. ":2: os.execute is not available to scripts (allowed: os.time, os.date, os.clock)", err)
    end)

    it("has no io", function()
      local err, path = run_error('return io.open("/etc/passwd"):read("*a")')
      assert.equal(path .. ":1: undefined global 'io' (scripts have no io: connectors read their inbox with ctx.files)", err)
    end)

    it("refuses require of ffi and other modules", function()
      local err, path = run_error('local ffi = require "ffi"')
      assert.equal(path .. ':1: require: module "ffi" is not available to scripts (allowed: cjson, dp.connector, dp.csv, dp.models, dp.paginators)', err)
      err = run_error('require "dp.core"')
      assert.matches('require: module "dp.core" is not available to scripts', err, 1, true)
      err = run_error('require "io"')
      assert.matches('require: module "io" is not available to scripts', err, 1, true)
    end)

    it("refuses to create a global", function()
      local err, path = run_error("counter = 1")
      assert.equal(path .. ":1: assignment to undeclared global 'counter' (declare it local)", err)
      err, path = run_error("function helper() end")
      assert.equal(path .. ":1: assignment to undeclared global 'helper' (declare it local)", err)
    end)

    it("refuses to read an undefined global", function()
      local err, path = run_error("local x = 1\nreturn undefined_thing")
      assert.equal(path .. ":2: undefined global 'undefined_thing'", err)
    end)

    it("has no loaders, debug, package, jit, print", function()
      for _, name in ipairs({ "loadstring", "load", "dofile", "loadfile", "debug", "package", "jit", "getfenv",
        "setfenv", "collectgarbage", "print", "module", "newproxy" }) do
        local err = run_error("return " .. name)
        assert.matches("undefined global '" .. name .. "'", err, 1, true)
      end
    end)

    it("refuses precompiled bytecode", function()
      local path = write("compiled.lua", string.dump(function() return 1 end))
      local res, err = sandbox.dofile(path)
      assert.is_nil(res)
      assert.equal(path .. ": precompiled bytecode is not allowed in scripts: ship the Lua source", err)
    end)

    it("gives scripts copies of the libraries and hides the string metatable", function()
      run([[
        string.upper = nil
        table.insert = nil
        math.floor = nil
        return getmetatable("")
      ]])
      assert.is_function(string.upper)
      assert.is_function(table.insert)
      assert.is_function(math.floor)
      assert.is_nil((run('return getmetatable("")')))
      assert.is_nil((run("return string.dump")))
    end)

    it("gives each script its own cjson and dp.models", function()
      local res = run([[
        local cjson = require "cjson"
        local models = require "dp.models"
        models.Column = nil
        return { cjson.encode({ a = 1 }), type(models.string_or_secret), cjson.null == require("cjson").null }
      ]])
      assert.same({ '{"a":1}', "function", true }, res)
      assert.is_table(require("dp.models").Column)
    end)

    it("reports syntax errors with file and line", function()
      local err, path = run_error("local x = \nreturn (")
      assert.matches("^" .. path:gsub("%p", "%%%0") .. ":2: ", err)
    end)
  end)

  describe("connectors", function()
    local function load(src)
      return sandbox.load_connector(write("conn.lua", src))
    end

    local function load_error(src)
      local conn, err = load(src)
      assert.is_nil(conn)
      return (err:gsub("^.-conn%.lua", "conn.lua"))
    end

    it("loads a well-formed connector and builds its models", function()
      local conn = assert(load([[
        return {
          description = "test",
          system_schema = { fields = { { inbox = { type = "string", required = true } } } },
          extract = function(ctx) return nil end,
        }
      ]]))
      assert.is_function(conn.extract)
      assert.same({ type = "record", fields = {} }, conn.entity_schema)
      assert.is_table(conn.system_model)
      assert.is_table(conn.entity_model)
      assert.equal("test", conn.description)
    end)

    it("must return a table", function()
      assert.equal("conn.lua: a connector must return a table with extract (and system_schema, entity_schema), got null",
        load_error("local x = 1"))
    end)

    it("must have an extract function taking ctx", function()
      assert.equal("conn.lua: extract must be a function(ctx), got null", load_error("return {}"))
      assert.equal('conn.lua: extract must be a function(ctx), got "x"', load_error('return { extract = "x" }'))
      assert.equal("conn.lua: extract must take the context as its parameter: function(ctx)",
        load_error("return { extract = function() end }"))
      assert.truthy(load("return { extract = function(...) end }"))
    end)

    it("rejects unknown keys with a did-you-mean, but allows private _keys", function()
      assert.equal('conn.lua: unknown key "entity_shema" in the returned table (did you mean "entity_schema"?)',
        load_error("return { extract = function(ctx) end, entity_shema = {} }"))
      assert.truthy(load("return { extract = function(ctx) end, _helper = function() end }"))
    end)

    it("checks the schemas against the metaschema", function()
      assert.equal("conn.lua: system_schema must be a table (a record schema), got \"inbox\"",
        load_error('return { extract = function(ctx) end, system_schema = "inbox" }'))
      assert.equal('conn.lua: entity_schema: pattern: unknown type "strng" (expected one of any, boolean, enum, integer, list, map, number, record, string, union)',
        load_error('return { extract = function(ctx) end, entity_schema = { fields = { { pattern = { type = "strng" } } } } }'))
      assert.equal('conn.lua: system_schema field "type" clashes with the base System field',
        load_error('return { extract = function(ctx) end, system_schema = { fields = { { type = { type = "string" } } } } }'))
    end)

    it("reports an error raised while loading, with file and line", function()
      local conn, err = load('local x = 1\nerror("cannot start")')
      assert.is_nil(conn)
      assert.matches("conn%.lua:2: cannot start$", err)
    end)

    it("reports a missing file", function()
      local conn, err = sandbox.load_connector(dir .. "/nope.lua")
      assert.is_nil(conn)
      assert.equal(dir .. "/nope.lua: No such file or directory", err)
    end)

    it("runtime errors in extract carry the script's file and line", function()
      local conn = assert(load("return {\n extract = function(ctx)\n  local t = nil\n  return t.x\n end }"))
      local ok, err = pcall(conn.extract, {})
      assert.is_false(ok)
      assert.matches("conn%.lua:4: attempt to index local 't' %(a nil value%)", err)
    end)
  end)
end)
