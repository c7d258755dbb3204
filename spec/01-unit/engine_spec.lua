-- The connector runtime: engine.extract builds ctx (emit, log, files, json, cursor) for a
-- sandboxed connector. Needs dp.core (build/dp/core.so) for ctx.files and ctx.json.
local cjson = require "cjson"

local H = require "helpers"
local tmpdir, write = H.tmpdir, H.write_file

describe("engine", function()
  local engine, root, scripts, data

  setup(function()
    package.loaded["dp.engine"] = nil
    engine = require "dp.engine"
    root = tmpdir()
    scripts, data = root .. "/scripts", root .. "/data"
    assert(os.execute("mkdir -p '" .. scripts .. "/connectors' '" .. data .. "/inbox/sub'"))
    write(data .. "/inbox/b.jsonl", '{"b":1}\r\n{"b":2}\n')
    write(data .. "/inbox/a.jsonl", '{"a":1}\n')
    write(data .. "/inbox/notes.txt", "hello\n")
  end)
  teardown(function() os.execute("rm -rf '" .. root .. "'") end)

  -- Writes connectors/probe.lua whose extract runs `body`, loads metadata with one system
  -- (extra system fields in `system`) and one entity, and runs engine.extract.
  local function run(body, opts)
    opts = opts or {}
    write(scripts .. "/connectors/probe.lua", "local function body(ctx) " .. body .. [[

      end
      return {
        system_schema = { fields = { { inbox = { type = "string" } } } },
        entity_schema = { fields = { { option = { type = "string", default = "x" } } } },
        extract = function(ctx) return body(ctx) end,
      }
    ]])
    local system = { name = "sys", type = "probe", inbox = opts.inbox == nil and "inbox" or opts.inbox or nil }
    local meta = assert(engine.load_metadata_texts({
      ["systems.json"] = cjson.encode({ system }),
      ["entities.json"] = cjson.encode({ { name = "ent", system = "sys", load_type = "delta",
        columns = { { name = "id", type = "bigint" } } } }),
    }))
    local batches, logs = {}, {}
    local cursor = engine.extract(meta, "sys", "ent", opts.cursor,
      function(batch) batches[#batches + 1] = batch end,
      function(level, msg) logs[#logs + 1] = level .. " " .. msg end)
    return cursor, batches, logs, meta
  end

  local function run_error(body, opts)
    local ok, err = pcall(run, body, opts)
    assert.is_false(ok)
    return (tostring(err):gsub("^.-probe%.lua", "probe.lua"))
  end

  describe("configure", function()
    it("must be called before use", function()
      assert.has_error(function() engine.load_metadata("x") end,
        "engine: configure{ scripts_dir, data_dir } was not called")
    end)

    it("rejects unknown or missing options", function()
      assert.has_error(function() engine.configure { scripts_dir = ".", data = "." } end,
        'engine.configure: unknown option "data"')
      assert.has_error(function() engine.configure { scripts_dir = "." } end,
        "engine.configure: data_dir must be a non-empty string")
    end)

    it("sets where connectors are found", function()
      engine.configure { scripts_dir = scripts, data_dir = data }
      assert.equal(scripts .. "/connectors/file.lua", engine.connector_path("file"))
    end)
  end)

  describe("load_metadata", function()
    it("reads a folder with connectors from scripts_dir", function()
      engine.configure { scripts_dir = "spec/fixtures/metadata/scripts", data_dir = data }
      local meta = assert(engine.load_metadata("spec/fixtures/metadata/valid"))
      assert.equal(3, #meta.entities)
      engine.configure { scripts_dir = ".", data_dir = data }
      local _, errs = engine.load_metadata("spec/fixtures/metadata/valid")
      assert.equal('systems.json[0].type: no connector "inline" (./connectors/inline.lua does not exist)', errs[1])
    end)
  end)

  describe("extract", function()
    before_each(function() engine.configure { scripts_dir = scripts, data_dir = data } end)

    it("gives the connector validated copies of system and entity, and the cursor", function()
      local cursor, batches, _, meta = run([[
        ctx.system.name = "changed"
        ctx.emit({ { system = ctx.system.name, type = ctx.system.type, option = ctx.entity.source.option,
          load_type = ctx.entity.load_type, cursor = ctx.cursor } })
        return "c2"
      ]], { cursor = "c1" })
      assert.equal("c2", cursor)
      assert.same({ system = "changed", type = "probe", option = "x", load_type = "delta", cursor = "c1" },
        cjson.decode(batches[1][1]))
      assert.equal("sys", meta.systems[1].name)
    end)

    it("emit: one C call per batch; tables are encoded, strings kept as sent", function()
      local _, batches = run([[
        ctx.emit({ { a = 1 }, '{"big": 9007199254740993}' })
        ctx.emit({})
        ctx.emit({ '{"c":3}' })
      ]])
      assert.same({ { '{"a":1}', '{"big": 9007199254740993}' }, { '{"c":3}' } }, batches)
    end)

    it("emit: names a record that is neither a table nor a string", function()
      assert.equal("probe.lua:3: emit: record 2 is a number, expected a table or a JSON object string",
        run_error("\n\nctx.emit({ {}, 5 })"))
      assert.equal("probe.lua:1: emit: record 1 is an array, expected a JSON object", run_error("ctx.emit({ { 1, 2 } })"))
      assert.equal("probe.lua:1: emit: expected an array of records, got \"x\"", run_error('ctx.emit("x")'))
    end)

    it("log: one function per level, with optional format arguments", function()
      local _, _, logs = run([[
        ctx.log.debug("d")
        ctx.log.info("read %d records from %s", 3, "a.jsonl")
        ctx.log.warn("w")
        ctx.log.error("e")
      ]])
      assert.same({ "debug d", "info read 3 records from a.jsonl", "warn w", "error e" }, logs)
    end)

    it("json: decode, encode, null, compact and array_elements", function()
      local _, batches = run([[
        local j = ctx.json
        ctx.emit({ { decoded = j.decode('{"x":[1]}').x[1], null = j.encode({ n = j.null }),
          compact = j.compact('{ "a" : [ 1 , 2 ] }'), elements = j.array_elements('[ {"a":1} , 2 ]') } })
      ]])
      assert.same({ decoded = 1, null = '{"n":null}', compact = '{"a":[1,2]}', elements = { '{"a":1}', "2" } },
        cjson.decode(batches[1][1]))
    end)

    it("returns a numeric cursor as a string and refuses other types", function()
      assert.equal("42", (run("return 42")))
      assert.is_nil((run("return nil")))
      assert.matches("probe%.lua: extract returned a cursor of type table, expected a string or nil", run_error("return {}"))
    end)

    it("propagates connector errors with file and line", function()
      assert.equal("probe.lua:4: source is down", run_error('\n\n\nerror("source is down")'))
    end)

    it("raises for an unknown system or entity", function()
      local meta = { systems = {}, entities = {}, gold = {} }
      assert.has_error(function() engine.extract(meta, "nope", "e", nil, print, print) end,
        'engine.extract: no system "nope" in the metadata')
    end)

    describe("ctx.files", function()
      it("lists the inbox's regular files matching a glob, sorted", function()
        local _, batches = run([[
          ctx.emit({ { all = ctx.files.list(), jsonl = ctx.files.list("*.jsonl"), none = #ctx.files.list("*.csv") } })
        ]])
        assert.same({ all = { "a.jsonl", "b.jsonl", "notes.txt" }, jsonl = { "a.jsonl", "b.jsonl" }, none = 0 },
          cjson.decode(batches[1][1]))
      end)

      it("reads a file whole or line by line (without \\r)", function()
        local _, batches = run([[
          local lines = {}
          for l in ctx.files.lines("b.jsonl") do lines[#lines + 1] = l end
          ctx.emit({ { text = ctx.files.read("notes.txt"), lines = lines } })
        ]])
        assert.same({ text = "hello\n", lines = { '{"b":1}', '{"b":2}' } }, cjson.decode(batches[1][1]))
      end)

      it("refuses paths outside the inbox", function()
        assert.equal('probe.lua:1: ctx.files.read: "../x" is not a file name in the inbox (no "/" or "..")',
          run_error('ctx.files.read("../x")'))
        assert.equal('probe.lua:1: ctx.files.read: "/etc/passwd" is not a file name in the inbox (no "/" or "..")',
          run_error('ctx.files.read("/etc/passwd")'))
        assert.equal('probe.lua:1: ctx.files.lines: "sub/x" is not a file name in the inbox (no "/" or "..")',
          run_error('ctx.files.lines("sub/x")'))
        assert.equal('probe.lua:1: ctx.files.list: "../*" is not a file name pattern (no "/")',
          run_error('ctx.files.list("../*")'))
      end)

      it("raises for a missing file or inbox", function()
        assert.equal('probe.lua:1: ctx.files.read: no file "missing.json" in inbox ' .. data .. "/inbox",
          run_error('ctx.files.read("missing.json")'))
        local err = run_error('ctx.files.list("*")', { inbox = "nowhere" })
        assert.equal("probe.lua:1: ctx.files.list: cannot open folder " .. data .. '/nowhere (the inbox of system "sys")', err)
      end)

      it("resolves relative inboxes against data_dir, absolute ones as given", function()
        local _, batches = run("ctx.emit({ { inbox = ctx.files.inbox, n = #ctx.files.list() } })", { inbox = data .. "/inbox/" })
        assert.same({ inbox = data .. "/inbox", n = 3 }, cjson.decode(batches[1][1]))
      end)

      it("raises when the system has no inbox", function()
        assert.equal('probe.lua:1: ctx.files: system "sys" has no inbox folder', run_error("ctx.files.list()", { inbox = false }))
      end)
    end)
  end)
end)
