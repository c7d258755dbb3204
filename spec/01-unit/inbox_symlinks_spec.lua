-- ctx.files against a hostile inbox (core/inbox.c through engine.extract): symbolic links are
-- refused unless the system sets follow_symlinks, and then followed only to files inside the
-- inbox; the inbox and archive folders themselves; FIFOs; names with control characters.
-- Needs dp.core (build/dp/core.so).
local cjson = require "cjson"

local H = require "helpers"
local write = H.write_export

local function sh(cmd) assert(H.sh(cmd) == 0, cmd) end
local q = H.sh_quote

describe("inbox files", function()
  local engine, root, data, inbox, private, scripts

  setup(function()
    package.loaded["dp.engine"] = nil
    engine = require "dp.engine"
    root = H.tmpdir("inbox-links")
    data = root .. "/data"
    scripts = root .. "/scripts"
    private = root .. "/private.jsonl"
    H.write_file(private, '{"id":666,"secret":"from outside the inbox"}\n')
    sh("mkdir -p " .. q(scripts .. "/connectors"))
    sh("cp " .. q(H.root .. "/connectors/file.lua") .. " " .. q(scripts .. "/connectors/file.lua"))
  end)
  teardown(function() os.execute("rm -rf " .. q(root)) end)

  before_each(function()
    inbox = data .. "/inbox/bank"
    sh("rm -rf " .. q(data) .. " && mkdir -p " .. q(inbox))
    engine.configure { scripts_dir = scripts, data_dir = data }
    engine.discard_pending()
  end)

  -- Runs the file connector on system bank (extra system fields in sys); returns records and
  -- log lines, or raises the connector's error.
  local function run(sys, source)
    local system = { name = "bank", type = "file", inbox = "inbox/bank" }
    for k, v in pairs(sys or {}) do system[k] = v end
    local meta = assert(engine.load_metadata_texts({
      ["systems.json"] = cjson.encode({ system }),
      ["entities.json"] = cjson.encode({ { name = "tx", system = "bank", primary_key = { "id" },
        source = source or { pattern = "*.jsonl", min_age_seconds = 0 }, columns = { { name = "id", type = "bigint" } } } }),
    }))
    local records, logs = {}, {}
    engine.extract(meta, "bank", "tx", nil, function(batch)
      for _, r in ipairs(batch) do records[#records + 1] = r end
    end, function(level, msg) logs[#logs + 1] = level .. ": " .. msg end)
    return records, logs
  end

  local function run_error(sys, source)
    local ok, err = pcall(run, sys, source)
    assert.is_false(ok, "expected the run to fail")
    return tostring(err)
  end

  -- A connector whose extract runs body with ctx (for the ctx.files functions one by one).
  local function probe(body, sys)
    H.write_file(scripts .. "/connectors/probe.lua", "local function body(ctx) " .. body .. [[

      end
      return {
        system_schema = { fields = { { inbox = { type = "string" } }, { archive = { type = "string" } },
          { follow_symlinks = { type = "boolean", default = false } } } },
        extract = function(ctx) return body(ctx) end,
      }
    ]])
    local system = { name = "p", type = "probe", inbox = "inbox/bank" }
    for k, v in pairs(sys or {}) do system[k] = v end
    local meta = assert(engine.load_metadata_texts({
      ["systems.json"] = cjson.encode({ system }),
      ["entities.json"] = cjson.encode({ { name = "e", system = "p", columns = { { name = "id", type = "bigint" } } } }),
    }))
    local out = {}
    local ok, err = pcall(engine.extract, meta, "p", "e", nil, function(batch)
      for _, r in ipairs(batch) do out[#out + 1] = cjson.decode(r) end
    end, function() end)
    return ok and out or nil, not ok and tostring(err) or nil
  end

  describe("without follow_symlinks (the default)", function()
    it("fails the entity on a link to a file outside the inbox, naming it and the fix", function()
      write(inbox .. "/a.jsonl", '{"id":1}\n')
      sh("ln -s " .. q(private) .. " " .. q(inbox .. "/t.jsonl"))
      local err = run_error()
      assert.matches('ctx.files.list: "t.jsonl" in inbox ' .. inbox .. " is a symbolic link, and symbolic links are not followed"
        .. ' (replace the link by the file, or set "follow_symlinks": true on the system)', err, 1, true)
      assert.is_nil(err:find("from outside", 1, true))
    end)

    it("fails on a link to a file inside the inbox too, and on a dangling link", function()
      write(inbox .. "/a.jsonl", '{"id":1}\n')
      sh("ln -s a.jsonl " .. q(inbox .. "/b.jsonl"))
      assert.matches('"b.jsonl" in inbox .* is a symbolic link, and symbolic links are not followed', run_error())
      sh("rm " .. q(inbox .. "/b.jsonl") .. " && ln -s nowhere " .. q(inbox .. "/b.jsonl"))
      assert.matches('"b.jsonl" in inbox .* is a symbolic link, and symbolic links are not followed', run_error())
    end)

    it("ignores links that the pattern does not match", function()
      write(inbox .. "/a.jsonl", '{"id":1}\n')
      sh("ln -s " .. q(private) .. " " .. q(inbox .. "/t.secret"))
      local records = run()
      assert.same({ '{"id":1}' }, records)
    end)

    it("refuses a link by name in every ctx.files function", function()
      sh("ln -s " .. q(private) .. " " .. q(inbox .. "/t.jsonl"))
      for _, call in ipairs({ 'ctx.files.read("t.jsonl")', 'ctx.files.lines("t.jsonl")',
        'ctx.files.chunks("t.jsonl")', 'ctx.files.stat("t.jsonl")' }) do
        local out, err = probe(call)
        assert.is_nil(out, call)
        assert.matches('"t.jsonl" in inbox ' .. inbox:gsub("%p", "%%%0") .. " is a symbolic link, and symbolic links are not followed", err)
        assert.is_nil(err:find("from outside", 1, true))
      end
      -- archive: the link stays where it is, the file it points to is untouched
      local out = probe('ctx.files.archive("t.jsonl")', { archive = "archive/bank" })
      assert.same({}, out)
      local errs = engine.after_commit("p", "e")
      assert.matches('archiving t.jsonl: "t.jsonl" in inbox .* is a symbolic link', errs[1])
      local _, target = H.sh("readlink " .. q(inbox .. "/t.jsonl"))
      assert.equal(private, (target:gsub("%s+$", "")))
      assert.equal('{"id":666,"secret":"from outside the inbox"}\n', H.read_file(private))
    end)

    it("refuses an inbox folder that is itself a link, and an archive folder that is one", function()
      sh("mkdir -p " .. q(root .. "/elsewhere") .. " && cp " .. q(private) .. " " .. q(root .. "/elsewhere/x.jsonl"))
      sh("ln -s " .. q(root .. "/elsewhere") .. " " .. q(data .. "/inbox/linked"))
      local err = run_error({ inbox = "inbox/linked" })
      assert.matches("the inbox folder " .. data .. "/inbox/linked is a symbolic link, and symbolic links are not followed"
        .. " (point the system's inbox at the real folder, or set \"follow_symlinks\": true on the system)", err, 1, true)
      -- a trailing slash does not make it followed
      assert.matches("is a symbolic link", run_error({ inbox = "inbox/linked/" }))

      write(inbox .. "/a.jsonl", '{"id":1}\n')
      sh("ln -s " .. q(root .. "/elsewhere") .. " " .. q(data .. "/archive-link"))
      local records = run({ archive = "archive-link" })
      assert.same({ '{"id":1}' }, records)
      local errs = engine.after_commit("bank", "tx")
      assert.matches("the archive folder " .. data .. "/archive-link is a symbolic link", errs[1], 1, true)
      assert.same({ "a.jsonl" }, H.core.listdir(inbox))
      assert.same({ "x.jsonl" }, H.core.listdir(root .. "/elsewhere"))
    end)
  end)

  describe("with follow_symlinks: true", function()
    local follow = { follow_symlinks = true }

    it("reads a link to a file inside the inbox (also in a subfolder)", function()
      sh("mkdir -p " .. q(inbox .. "/store"))
      write(inbox .. "/store/real.data", '{"id":1}\n{"id":2}\n')
      sh("ln -s store/real.data " .. q(inbox .. "/t.jsonl"))
      sh("ln -s store " .. q(inbox .. "/dir.jsonl")) -- a link to a folder is skipped like a folder
      local records = run(follow)
      assert.same({ '{"id":1}', '{"id":2}' }, records)
    end)

    it("still refuses a link that leads outside the inbox, also through another link", function()
      write(inbox .. "/a.jsonl", '{"id":1}\n')
      sh("ln -s " .. q(private) .. " " .. q(inbox .. "/t.jsonl"))
      local err = run_error(follow)
      assert.matches('"t.jsonl" in inbox ' .. inbox .. " is a symbolic link to " .. private
        .. ", outside the inbox: not read (follow_symlinks follows only links that stay inside the inbox)", err, 1, true)
      sh("rm " .. q(inbox .. "/t.jsonl"))
      sh("ln -s " .. q(private) .. " " .. q(inbox .. "/hop") .. " && ln -s hop " .. q(inbox .. "/t.jsonl"))
      assert.matches("is a symbolic link to " .. private:gsub("%p", "%%%0") .. ", outside the inbox", run_error(follow))
      sh("rm " .. q(inbox .. "/t.jsonl") .. " " .. q(inbox .. "/hop") .. " && ln -s ../.. " .. q(inbox .. "/up"))
      local _, err2 = probe('ctx.files.read("up")', follow)
      assert.matches("is a symbolic link to .*, outside the inbox", err2)
      local _, err3 = probe('ctx.files.stat("nothere")', follow)
      assert.matches('no file "nothere" in inbox', err3, 1, true)
    end)

    it("names a dangling link", function()
      sh("ln -s gone.data " .. q(inbox .. "/t.jsonl"))
      assert.matches('"t.jsonl" in inbox .* is a symbolic link to a file that does not exist', run_error(follow))
    end)

    it("accepts an inbox folder that is a link, and checks against the folder it leads to", function()
      sh("mkdir -p " .. q(root .. "/real-inbox"))
      write(root .. "/real-inbox/a.jsonl", '{"id":7}\n')
      sh("ln -s " .. q(root .. "/real-inbox") .. " " .. q(data .. "/inbox/linked"))
      local sys = { inbox = "inbox/linked", follow_symlinks = true }
      assert.same({ '{"id":7}' }, (run(sys)))
      sh("ln -s " .. q(private) .. " " .. q(root .. "/real-inbox/b.jsonl"))
      assert.matches("outside the inbox", run_error(sys))
      os.remove(root .. "/real-inbox/b.jsonl")
      os.remove(root .. "/real-inbox/a.jsonl")
      os.remove(data .. "/inbox/linked")
      sh("rmdir " .. q(root .. "/real-inbox"))
    end)

    it("archives the link itself, never the file it leads to", function()
      sh("mkdir -p " .. q(inbox .. "/store"))
      write(inbox .. "/store/real.data", '{"id":1}\n')
      sh("ln -s store/real.data " .. q(inbox .. "/t.jsonl"))
      run({ follow_symlinks = true, archive = "archive/bank" })
      assert.is_nil(engine.after_commit("bank", "tx"))
      local _, target = H.sh("readlink " .. q(data .. "/archive/bank/t.jsonl"))
      assert.equal("store/real.data", (target:gsub("%s+$", "")))
      assert.equal('{"id":1}\n', H.read_file(inbox .. "/store/real.data"))
    end)
  end)

  describe("other entries", function()
    it("skips a FIFO in a listing and refuses to read one, without blocking", function()
      write(inbox .. "/a.jsonl", '{"id":1}\n')
      sh("mkfifo " .. q(inbox .. "/p.jsonl"))
      assert.same({ '{"id":1}' }, (run()))
      local _, err = probe('ctx.files.read("p.jsonl")')
      assert.matches('"p.jsonl" in inbox .* is a named pipe, not a regular file', err)
      local _, err2 = probe('ctx.files.read("..")')
      assert.matches('is not a file name in the inbox', err2)
    end)

    it("escapes control characters of file names in paths and messages", function()
      local name = "evil\n2026-01-01T00:00:00.000Z error forged\027[2J.txt"
      write(inbox .. "/" .. name, '{"id":1}\n')
      local out = assert(probe('ctx.emit({ { p = ctx.files.path(ctx.files.list()[1]) } })'))
      assert.equal(inbox .. "/evil\\n2026-01-01T00:00:00.000Z error forged\\x1b[2J.txt", out[1].p)
      local err = run_error(nil, { pattern = "*", min_age_seconds = 0 })
      assert.matches("evil\\n2026-01-01T00:00:00.000Z error forged\\x1b[2J.txt: cannot tell the format", err, 1, true)
      assert.is_nil(err:find("\n", 1, true))
    end)
  end)
end)
