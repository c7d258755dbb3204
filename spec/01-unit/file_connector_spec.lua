-- connectors/file.lua on temporary inbox folders, run through engine.extract.
-- Needs dp.core (build/dp/core.so): listdir, fnmatch, json_compact, json_array_elements.
local cjson = require "cjson"

local H = require "helpers"
-- inbox files are written backdated (H.write_export): fresh files count as still being written
local tmpdir, write = H.tmpdir, H.write_export

describe("file connector", function()
  local engine, data, inbox

  setup(function()
    engine = require "dp.engine"
    data = tmpdir()
    inbox = data .. "/inbox/bank"
  end)
  teardown(function() os.execute("rm -rf '" .. data .. "'") end)

  before_each(function()
    os.execute("rm -rf '" .. inbox .. "' && mkdir -p '" .. inbox .. "'")
    engine.configure { scripts_dir = ".", data_dir = data }
  end)

  -- Runs the entity with the given source options; returns cursor, records (strings, in
  -- order), batch sizes and log lines.
  local function run(source, opts)
    opts = opts or {}
    local meta, errs = engine.load_metadata_texts({
      ["systems.json"] = cjson.encode({ { name = "bank", type = "file", inbox = "inbox/bank" } }),
      ["entities.json"] = cjson.encode({ { name = "tx", system = "bank", load_type = opts.load_type or "full",
        source = source, columns = { { name = "id", type = "bigint" } } } }),
    })
    assert(meta, errs and table.concat(errs, "\n"))
    local records, sizes, logs = {}, {}, {}
    local cursor = engine.extract(meta, "bank", "tx", opts.cursor, function(batch)
      sizes[#sizes + 1] = #batch
      for _, r in ipairs(batch) do records[#records + 1] = r end
    end, function(level, msg) logs[#logs + 1] = level .. ": " .. msg end)
    return cursor, records, sizes, logs
  end

  local function run_error(source, opts)
    local ok, err = pcall(run, source, opts)
    assert.is_false(ok)
    return tostring(err)
  end

  describe("JSON Lines", function()
    it("reads matching files in name order, skipping blank lines and \\r", function()
      write(inbox .. "/tx-2024-02.jsonl", '{"id":3}\r\n\r\n{"id":4}\r\n')
      write(inbox .. "/tx-2024-01.jsonl", '{"id":1}\n   \n{"id":2}')
      write(inbox .. "/other.jsonl", '{"id":99}\n')
      local cursor, records = run({ pattern = "tx-*.jsonl" })
      assert.is_nil(cursor)
      assert.same({ '{"id":1}', '{"id":2}', '{"id":3}', '{"id":4}' }, records)
    end)

    it("emits compact source text, so large integers stay exact", function()
      write(inbox .. "/tx.jsonl", '{ "id" : 9223372036854775807, "amount": 12.30 }\n')
      local _, records = run({ pattern = "tx.jsonl" })
      assert.same({ '{"id":9223372036854775807,"amount":12.30}' }, records)
    end)

    it("skips a UTF-8 BOM at the start of a file", function()
      write(inbox .. "/tx.jsonl", '\239\187\191{"id":1}\n{"id":2}\n')
      local _, records = run({ pattern = "*.jsonl" })
      assert.same({ '{"id":1}', '{"id":2}' }, records)
    end)

    it("fails on a malformed line with file, line and byte", function()
      write(inbox .. "/tx-1.jsonl", '{"id":1}\n\n{"id": 1 "x": 2}\n')
      local err = run_error({ pattern = "*.jsonl" })
      assert.equal(inbox .. "/tx-1.jsonl:3: invalid JSON at byte 10: expected ',' or '}'", err)
    end)

    it("fails on a line that is not an object", function()
      write(inbox .. "/tx-1.jsonl", '[1, 2]\n')
      assert.equal(inbox .. "/tx-1.jsonl:1: expected a JSON object, got an array", run_error({ pattern = "*.jsonl" }))
    end)

    it("emits in batches of 1000", function()
      local lines = {}
      for i = 1, 2500 do lines[i] = '{"id":' .. i .. "}" end
      write(inbox .. "/tx.jsonl", table.concat(lines, "\n"))
      local _, records, sizes = run({ pattern = "*.jsonl" })
      assert.same({ 1000, 1000, 500 }, sizes)
      assert.equal('{"id":2500}', records[2500])
    end)
  end)

  describe("JSON arrays", function()
    it("splits a top-level array of objects into records", function()
      write(inbox .. "/accounts.json", '\239\187\191[\n  {"id": 1, "name": "a"},\n  {"id": 2}\n]\n')
      local _, records = run({ pattern = "accounts.json" })
      assert.same({ '{"id":1,"name":"a"}', '{"id":2}' }, records)
    end)

    it("fails on malformed JSON naming the file, line and column", function()
      write(inbox .. "/accounts.json", '[\n  {"id": 1},\n  {"id": 2,}\n]\n')
      assert.equal(inbox .. "/accounts.json:3:12: invalid JSON at byte 27: expected a string key",
        run_error({ pattern = "*.json" }))
      -- with a BOM, the byte counts it (it is in the file) and the column does not
      write(inbox .. "/accounts.json", '\239\187\191[\n  {"id": 1},\n  {"id": 2,}\n]\n')
      assert.equal(inbox .. "/accounts.json:3:12: invalid JSON at byte 30: expected a string key",
        run_error({ pattern = "*.json" }))
    end)

    it("fails on an element that is not an object", function()
      write(inbox .. "/accounts.json", '[{"id": 1}, 2]')
      assert.equal(inbox .. "/accounts.json: element [1] is a number, expected a JSON object", run_error({ pattern = "*.json" }))
    end)
  end)

  describe("format", function()
    it("comes from the extension; .ndjson is JSON Lines", function()
      write(inbox .. "/a.ndjson", '{"id":1}\n')
      write(inbox .. "/b.json", '[{"id":2}]')
      local _, records = run({ pattern = "*json" })
      assert.same({ '{"id":1}', '{"id":2}' }, records)
    end)

    it("is an error for another extension unless given", function()
      write(inbox .. "/export.txt", '{"id":1}\n')
      assert.equal('export.txt: cannot tell the format from the file name (expected .jsonl, .ndjson, .json, .csv or .tsv):'
        .. ' set source.format to "jsonl", "json" or "csv"', run_error({ pattern = "*.txt" }))
      local _, records = run({ pattern = "*.txt", format = "jsonl" })
      assert.same({ '{"id":1}' }, records)
    end)
  end)

  describe("file selection", function()
    before_each(function()
      write(inbox .. "/tx-2024-01.jsonl", '{"id":1}\n')
      write(inbox .. "/tx-2024-02.jsonl", '{"id":2}\n')
      write(inbox .. "/tx-2024-03.jsonl", '{"id":3}\n')
    end)

    it("latest: reads only the last file in name order", function()
      local _, records = run({ pattern = "tx-*.jsonl", files = "latest" })
      assert.same({ '{"id":3}' }, records)
    end)

    it("delta: reads files after the cursor and returns the last file name read", function()
      local cursor, records = run({ pattern = "tx-*.jsonl" }, { load_type = "delta" })
      assert.equal("tx-2024-03.jsonl", cursor)
      assert.same({ '{"id":1}', '{"id":2}', '{"id":3}' }, records)
      cursor, records = run({ pattern = "tx-*.jsonl" }, { load_type = "delta", cursor = "tx-2024-01.jsonl" })
      assert.equal("tx-2024-03.jsonl", cursor)
      assert.same({ '{"id":2}', '{"id":3}' }, records)
    end)

    it("delta: keeps the cursor when no newer file exists", function()
      local cursor, records, sizes, logs = run({ pattern = "tx-*.jsonl" }, { load_type = "delta", cursor = "tx-2024-03.jsonl" })
      assert.equal("tx-2024-03.jsonl", cursor)
      assert.same({}, records)
      assert.same({}, sizes)
      assert.same({ 'info: no file matching "tx-*.jsonl" after cursor "tx-2024-03.jsonl" in inbox ' .. inbox }, logs)
    end)

    it("refuses a full load when no file matches, since loading nothing would delete every key", function()
      local ok, err = pcall(run, { pattern = "card-*.jsonl" })
      assert.is_false(ok)
      assert.equal('no file matching "card-*.jsonl" in inbox ' .. inbox
        .. ": a full load needs the current export (loading nothing would mark every row deleted)", err)
    end)

    it("delta: loads nothing and keeps the cursor when no file matches", function()
      local cursor, records, _, logs = run({ pattern = "card-*.jsonl" }, { load_type = "delta", cursor = "card-1.jsonl" })
      assert.equal("card-1.jsonl", cursor)
      assert.same({}, records)
      assert.same({ 'info: no file matching "card-*.jsonl" in inbox ' .. inbox .. ": nothing new to load" }, logs)
    end)
  end)
end)
