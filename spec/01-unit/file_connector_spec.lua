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
      ["systems.json"] = cjson.encode({ { name = "bank", type = "file", inbox = "inbox/bank", archive = opts.archive } }),
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

  describe("CSV", function()
    it("reads a header row and emits every value as a string; empty unquoted fields are null", function()
      write(inbox .. "/cards.csv", 'id,amount,note\n1,12.30,coffee\n2,,""\n9007199254740993,-0.5,x\n')
      local _, records = run({ pattern = "*.csv" })
      assert.same({
        '{"id":"1","amount":"12.30","note":"coffee"}',
        '{"id":"2","amount":null,"note":""}',
        '{"id":"9007199254740993","amount":"-0.5","note":"x"}',
      }, records)
    end)

    it("keeps delimiters, doubled quotes and line breaks inside quoted fields", function()
      write(inbox .. "/q.csv", 'id;text\r\n1;"a;b ""quoted""\r\nsecond line"\r\n2;"/path\\x"\r\n')
      local _, records = run({ pattern = "*.csv", csv = { delimiter = ";" } })
      assert.same({ '{"id":"1","text":"a;b \\"quoted\\"\\r\\nsecond line"}', '{"id":"2","text":"/path\\\\x"}' }, records)
    end)

    it("accepts a BOM, no final line end, blank lines, tabs for .tsv, and UTF-8 text", function()
      write(inbox .. "/a.csv", "\239\187\191id,name\n\n1,Jos\195\169\n\n2,\226\130\172")
      write(inbox .. "/b.tsv", "id\tname\n3\ta,b\n")
      local _, records = run({ pattern = "*" })
      assert.same({ '{"id":"1","name":"Jos\195\169"}', '{"id":"2","name":"\226\130\172"}', '{"id":"3","name":"a,b"}' }, records)
    end)

    it("streams large files in chunks, including quoted fields across chunk ends", function()
      local rows = { "id,text" }
      for i = 1, 5000 do rows[#rows + 1] = i .. ',"line one\nline ""two"" ' .. string.rep("x", i % 50) .. '"' end
      write(inbox .. "/big.csv", table.concat(rows, "\r\n") .. "\r\n")
      local _, records, sizes = run({ pattern = "*.csv" })
      assert.equal(5000, #records)
      assert.same({ 1000, 1000, 1000, 1000, 1000 }, sizes)
      assert.equal('{"id":"4999","text":"line one\\nline \\"two\\" ' .. string.rep("x", 4999 % 50) .. '"}', records[4999])
    end)

    it("fails with file and line on a row of the wrong width", function()
      write(inbox .. "/c.csv", 'id,name\n1,"a\nb"\n2,x,extra\n')
      assert.equal(inbox .. "/c.csv:4: 3 fields, but the header has 2", run_error({ pattern = "*.csv" }))
    end)

    it("fails on broken quoting", function()
      write(inbox .. "/c.csv", 'id,name\n1,"a"b\n')
      assert.equal(inbox .. '/c.csv:2: text after the closing quote of field 2 (write a quote inside a quoted field as "")',
        run_error({ pattern = "*.csv" }))
      write(inbox .. "/c.csv", 'id,name\n1,5" screen\n')
      assert.equal(inbox .. '/c.csv:2: a quote inside the unquoted field 2 (quote the whole field, and write the quote as "")',
        run_error({ pattern = "*.csv" }))
      write(inbox .. "/c.csv", 'id,name\n1,"open\n2,x\n')
      assert.equal(inbox .. "/c.csv:2: the file ends inside the quoted field 2 that starts on this line",
        run_error({ pattern = "*.csv" }))
    end)

    it("fails on a bad header and on text that is not UTF-8", function()
      write(inbox .. "/c.csv", 'id,,name\n1,2,3\n')
      assert.equal(inbox .. "/c.csv:1: the header has an empty name (column 2)", run_error({ pattern = "*.csv" }))
      write(inbox .. "/c.csv", 'id,id\n1,2\n')
      assert.equal(inbox .. '/c.csv:1: the header names "id" twice (columns 1 and 2)', run_error({ pattern = "*.csv" }))
      write(inbox .. "/c.csv", 'id,name\n1,caf\233\n')
      assert.equal(inbox .. "/c.csv:2: not valid UTF-8 (CSV files must be UTF-8)", run_error({ pattern = "*.csv" }))
    end)

    it("reads the fields named in decimal_comma as numbers with a decimal point", function()
      write(inbox .. "/c.csv", 'id;amount;note\n1;-1.250,00;1,5\n2;-54,37;x\n3;12.345.678,9;\n4;7;\n5;1.234;\n6;;\n7;"n/a";\n8;+0,5;\n')
      local _, records = run({ pattern = "*.csv", csv = { delimiter = ";", decimal_comma = { "amount" } } })
      assert.same({
        '{"id":"1","amount":"-1250.00","note":"1,5"}',
        '{"id":"2","amount":"-54.37","note":"x"}',
        '{"id":"3","amount":"12345678.9","note":null}',
        '{"id":"4","amount":"7","note":null}',
        '{"id":"5","amount":"1234","note":null}',
        '{"id":"6","amount":null,"note":null}',
        '{"id":"7","amount":"n/a","note":null}',
        '{"id":"8","amount":"+0.5","note":null}',
      }, records)
    end)

    it("fails where a decimal_comma field holds a number that would be misread, or names no header", function()
      write(inbox .. "/c.csv", 'id;amount\n1;-54,37\n2;1.5\n')
      assert.equal(inbox .. '/c.csv:3: field "amount" is in csv.decimal_comma, and "1.5" is not a number written with'
        .. " a decimal comma (1234,56 or 1.234,56)",
        run_error({ pattern = "*.csv", csv = { delimiter = ";", decimal_comma = { "amount" } } }))
      write(inbox .. "/c.csv", 'id;amount\n1;12,5\n')
      assert.equal(inbox .. '/c.csv:1: csv.decimal_comma names "Amount", which is not in the header',
        run_error({ pattern = "*.csv", csv = { delimiter = ";", decimal_comma = { "Amount" } } }))
    end)

    it("validates its options", function()
      local _, errs = engine.load_metadata_texts({
        ["systems.json"] = cjson.encode({ { name = "bank", type = "file", inbox = "inbox/bank" } }),
        ["entities.json"] = cjson.encode({ { name = "tx", system = "bank", source = { pattern = "*.csv",
          csv = { delimiter = ";;", quote = "\n" } }, columns = { { name = "id", type = "bigint" } } } }),
      })
      assert.same({
        "entities.json[0].source.csv.delimiter: must be one character (not a line break)",
        'entities.json[0].source.csv.quote: "\\n" holds a control character (U+000A): this field must be a single line (tabs are allowed)',
      }, errs)
    end)
  end)

  describe("files still being written", function()
    it("never reads names that writers use while writing", function()
      write(inbox .. "/tx-1.jsonl", '{"id":1}\n')
      for _, n in ipairs({ "tx-2.jsonl.part", "tx-3.jsonl.tmp", ".tx-4.jsonl", "~tx-5.jsonl", "tx-6.jsonl.crdownload" }) do
        write(inbox .. "/" .. n, '{"id":0}\n')
      end
      local _, records = run({ pattern = "*" , format = "jsonl" })
      assert.same({ '{"id":1}' }, records)
    end)

    it("skips files changed less than min_age_seconds ago", function()
      write(inbox .. "/tx-1.jsonl", '{"id":1}\n')
      H.write_file(inbox .. "/tx-2.jsonl", '{"id":2}\n') -- just written
      local _, records, _, logs = run({ pattern = "*.jsonl" })
      assert.same({ '{"id":1}' }, records)
      assert.matches("^info: tx%-2%.jsonl changed [%d.]+ s ago %(min_age_seconds 2%): still being written, not read this run$", logs[1])
      _, records = run({ pattern = "*.jsonl", min_age_seconds = 0 })
      assert.same({ '{"id":1}', '{"id":2}' }, records)
    end)

    it("delta: stops at the first file too young to read, so the cursor cannot pass it", function()
      write(inbox .. "/tx-1.jsonl", '{"id":1}\n')
      H.write_file(inbox .. "/tx-2.jsonl", '{"id":2}\n')
      write(inbox .. "/tx-3.jsonl", '{"id":3}\n')
      local cursor, records = run({ pattern = "*.jsonl" }, { load_type = "delta" })
      assert.equal("tx-1.jsonl", cursor)
      assert.same({ '{"id":1}' }, records)
    end)

    it("a full load that finds only young files fails instead of loading nothing", function()
      H.write_file(inbox .. "/tx-1.jsonl", '{"id":1}\n')
      assert.equal('no file matching "*.jsonl" in inbox ' .. inbox .. " (1 matching file(s) still being written): "
        .. "a full load needs the current export (loading nothing would mark every row deleted)", run_error({ pattern = "*.jsonl" }))
    end)
  end)

  describe("archiving", function()
    local archive

    before_each(function()
      archive = data .. "/archive/bank"
      os.execute("rm -rf '" .. archive .. "'")
      engine.discard_pending()
    end)

    local function archived()
      local names = H.core.listdir(archive) or {}
      table.sort(names)
      return names
    end

    it("moves the files read to the archive only when the engine reports the commit", function()
      write(inbox .. "/tx-1.jsonl", '{"id":1}\n')
      write(inbox .. "/tx-2.jsonl", '{"id":2}\n')
      run({ pattern = "*.jsonl" }, { archive = "archive/bank" })
      assert.same({}, archived())
      assert.is_nil(engine.after_commit("bank", "tx"))
      assert.same({ "tx-1.jsonl", "tx-2.jsonl" }, archived())
      assert.same({}, H.core.listdir(inbox))
      assert.equal('{"id":1}\n', H.read_file(archive .. "/tx-1.jsonl"))
    end)

    it("does nothing when the run ends without a commit", function()
      write(inbox .. "/tx-1.jsonl", '{"id":1}\n')
      run({ pattern = "*.jsonl" }, { archive = "archive/bank" })
      engine.discard_pending()
      assert.is_nil(engine.after_commit("bank", "tx"))
      assert.same({}, archived())
      assert.same({ "tx-1.jsonl" }, H.core.listdir(inbox))
    end)

    it("latest: archives the file read and the older ones it superseded; never overwrites", function()
      write(inbox .. "/tx-1.jsonl", '{"id":1}\n')
      write(inbox .. "/tx-2.jsonl", '{"id":2}\n')
      H.write_file(inbox .. "/tx-3.jsonl", '{"id":3}\n') -- still being written: stays
      H.write_file(archive .. "/tx-1.jsonl", "older copy\n")
      local _, records = run({ pattern = "*.jsonl", files = "latest" }, { archive = "archive/bank" })
      assert.same({ '{"id":2}' }, records)
      assert.is_nil(engine.after_commit("bank", "tx"))
      assert.same({ "tx-1.jsonl", "tx-1.jsonl.1", "tx-2.jsonl" }, archived())
      assert.equal("older copy\n", H.read_file(archive .. "/tx-1.jsonl"))
      assert.same({ "tx-3.jsonl" }, H.core.listdir(inbox))
    end)

    it("a failed move is reported by after_commit, not raised", function()
      write(inbox .. "/tx-1.jsonl", '{"id":1}\n')
      run({ pattern = "*.jsonl" }, { archive = "archive/bank" })
      os.remove(inbox .. "/tx-1.jsonl")
      local errs = engine.after_commit("bank", "tx")
      assert.equal(1, #errs)
      assert.matches("^archiving tx%-1%.jsonl: cannot move .*tx%-1%.jsonl to .*archive/bank: No such file or directory$", errs[1])
    end)
  end)
end)
