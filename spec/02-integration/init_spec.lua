-- `dp-engine init system|connector` against the real services: the scaffolded metadata
-- validates and loads its own sample through raw, bronze and silver; nothing is overwritten.
local H = require "helpers"

local FIX = H.root .. "/spec/fixtures/infer"

describe("dp-engine init", function()
  local env, meta_dir

  setup(function()
    env = H.fresh_env("init")
    meta_dir = env.DP_DATA_DIR .. "/metadata"
    env.DP_METADATA = meta_dir
  end)

  local function run(...) return H.engine(env, ...) end

  it("scaffolds a system from a ; CSV with decimal commas, and the sample loads into silver exactly", function()
    local rc, out, err = run("init", "system", "giro", "--type", "file", "--from", FIX .. "/bank-transactions-2026-10.csv",
      "--entity", "transactions")
    assert.are.equal(0, rc, err)
    assert.matches("entity giro.transactions: 7 records from 1 file, primary key (reference)", out, 1, true)
    assert.matches("wrote " .. meta_dir .. "/entities.json (entity giro.transactions)", out, 1, true)
    rc, out, err = run("metadata", "validate")
    assert.are.equal(0, rc, err)
    assert.matches("1 system, 1 entity", out, 1, true)
    local ents = H.cjson.decode(H.read_file(meta_dir .. "/entities.json"))
    assert.are.same({ delimiter = ";", decimal_comma = { "Amount", "Balance after" } }, ents[1].source.csv)

    local inbox = env.DP_DATA_DIR .. "/inbox/giro"
    H.sh("mkdir -p " .. H.sh_quote(inbox) .. " && cp " .. H.sh_quote(FIX .. "/bank-transactions-2026-10.csv") .. " " .. H.sh_quote(inbox))
    H.backdate(inbox .. "/bank-transactions-2026-10.csv")
    rc, out, err = run("run", "giro")
    assert.are.equal(0, rc, (out or "") .. (err or ""))
    local pg = H.pg(env)
    local rows = assert(pg:query([[SELECT reference, booking_date::text AS d, value_date, amount::text AS a,
      balance_after::text AS b, counterparty_iban AS iban, description FROM silver.giro__transactions ORDER BY reference]]))
    local rejected = assert(pg:query("SELECT count(*) AS n FROM silver.giro__transactions__rejected"))
    pg:close()
    assert.are.equal("0", rejected[1].n)
    assert.are.equal(7, #rows)
    assert.are.same({ "REF-2026-0001", "2026-10-01", "01.10.2026", "-1250.00", "1134.04" },
      { rows[1].reference, rows[1].d, rows[1].value_date, rows[1].a, rows[1].b })
    assert.are.equal("-89.10", rows[5].a)
    assert.are.equal("Electricity\r\nmeter 1234", rows[5].description)
    assert.are.equal("12345.67", rows[7].a)
    assert.is_nil(rows[2].iban)
  end)

  it("adds to existing files, keeping their text, and refuses to overwrite anything", function()
    local before_sys = H.read_file(meta_dir .. "/systems.json")
    local before_ent = H.read_file(meta_dir .. "/entities.json")
    local rc, _, err = run("init", "system", "giro", "--type", "file", "--from", FIX .. "/bank-transactions-2026-10.csv")
    assert.are.equal(2, rc)
    assert.matches('system "giro" exists already in ' .. meta_dir .. "/systems.json: nothing is overwritten", err, 1, true)
    assert.are.equal(before_sys, H.read_file(meta_dir .. "/systems.json"))

    local rc2, out2, err2 = run("init", "system", "fit", "--type", "rest", "--base-url", "https://api.example.com/v1",
      "--path", "/workouts", "--from", FIX .. "/fitness-workouts-response.json", "--entity", "workouts")
    assert.are.equal(0, rc2, err2)
    assert.matches('warning: field "device.name" is left out', out2, 1, true)
    local after_sys = H.read_file(meta_dir .. "/systems.json")
    assert.are.equal(before_sys:gsub("%s*%]%s*$", ""), after_sys:sub(1, #before_sys:gsub("%s*%]%s*$", "")))
    assert.are.equal(before_ent:gsub("%s*%]%s*$", ""), H.read_file(meta_dir .. "/entities.json"):sub(1, #before_ent:gsub("%s*%]%s*$", "")))
    local ents = H.cjson.decode(H.read_file(meta_dir .. "/entities.json"))
    assert.are.same({ path = "/workouts", record_selector = "data.workouts" }, ents[2].source)
    local rc3, out3 = run("metadata", "validate")
    assert.are.equal(0, rc3)
    assert.matches("2 systems, 2 entities", out3, 1, true)
    -- a --dry-run writes nothing
    local rc4, out4 = run("init", "system", "other", "--type", "file", "--dry-run", "--from",
      H.root .. "/metadata/demo/bank/export-1/accounts-2026-10.json")
    assert.are.equal(0, rc4)
    assert.matches("would write " .. meta_dir .. "/systems.json", out4, 1, true)
    assert.matches('"name": "other"', out4, 1, true)
    assert.are.equal(after_sys, H.read_file(meta_dir .. "/systems.json"))
  end)

  it("refuses when the metadata is invalid already, and explains bad arguments", function()
    local dir = env.DP_DATA_DIR .. "/broken"
    H.write_file(dir .. "/systems.json", '[{"name": "x", "type": "file"}]')
    H.write_file(dir .. "/entities.json", "[]")
    local rc, _, err = run("init", "system", "y", "--type", "file", "--dir", dir)
    assert.are.equal(2, rc)
    assert.matches("the metadata in " .. dir .. " is invalid already", err, 1, true)
    assert.matches("systems.json[0].inbox: required field missing", err, 1, true)
    rc, _, err = run("init", "system", "y", "--dir", dir)
    assert.are.equal(2, rc)
    assert.matches("init system needs --type file or --type rest", err, 1, true)
    rc, _, err = run("init", "system", "y", "--type", "rest", "--dir", env.DP_DATA_DIR .. "/new")
    assert.are.equal(2, rc)
    assert.matches("--type rest needs --base-url URL", err, 1, true)
    rc, _, err = run("init", "system", "y", "--type", "file", "--entity", "e", "--dir", env.DP_DATA_DIR .. "/new")
    assert.are.equal(2, rc)
    assert.matches("--entity e needs a --from SAMPLE before it", err, 1, true)
    rc, _, err = run("init", "system", "y", "--type", "file", "--from")
    assert.are.equal(2, rc)
    assert.matches("option --from needs a value", err, 1, true)
    rc, _, err = run("init", "system", "Bad-Name", "--type", "file", "--dir", env.DP_DATA_DIR .. "/new")
    assert.are.equal(2, rc)
    assert.matches("is not a valid name", err, 1, true)
    assert.is_false(H.exists(env.DP_DATA_DIR .. "/new/systems.json"))
  end)

  it("refuses samples that are not UTF-8 or are directories, naming the file and line; writes nothing", function()
    local dir = env.DP_DATA_DIR .. "/edge-meta"
    local samples = env.DP_DATA_DIR .. "/edge-samples"
    H.write_file(samples .. "/latin1.csv", "id;name\n1;Caf\233\n")
    H.write_file(samples .. "/latin1.jsonl", '{"id": 1, "name": "Caf\233"}\n')
    H.write_file(samples .. "/surrogate.jsonl", '{"id": 1, "s": "ok"}\n{"id": 2, "s": "\\ud800"}\n')
    local function refused(file, msg)
      local rc, _, err = run("init", "system", "edge", "--type", "file", "--dir", dir, "--from", file)
      assert.are.equal(2, rc, err)
      assert.matches("--from " .. file .. ": " .. msg, err, 1, true)
      return err
    end
    local err = refused(samples .. "/latin1.csv", "line 2, column 6: byte 0xE9 is not UTF-8 (the engine reads UTF-8 only);")
    assert.matches("iconv -f cp1252 -t utf-8 " .. samples .. "/latin1.csv > " .. samples .. "/latin1.csv.utf8", err, 1, true)
    refused(samples .. "/latin1.jsonl", "line 1, column 23: byte 0xE9 is not UTF-8")
    refused(samples .. "/surrogate.jsonl", "line 2: column 17: a lone surrogate \\ud800")
    refused(samples, "is a directory; give a sample file")
    assert.is_false(H.exists(dir .. "/systems.json"))
  end)

  it("infers from a sample's first 10000 records, reading only their lines of a large file", function()
    local dir = env.DP_DATA_DIR .. "/sampled-meta"
    local samples = env.DP_DATA_DIR .. "/sampled-samples"
    local pad = ("p"):rep(500)
    -- records after the 10000th have a column the first ones lack: it is not inferred
    local function jsonl(n, padded)
      local t = {}
      for i = 1, n do
        t[i] = string.format('{"id": %d, "v": "x%s"%s}', i, padded and pad or "", i > 10000 and ', "late": 1' or "")
      end
      return table.concat(t, "\n") .. "\n"
    end
    H.write_file(samples .. "/small.jsonl", jsonl(12000, false)) -- read whole (under 8 MiB)
    H.write_file(samples .. "/large.jsonl", jsonl(20000, true))  -- about 10 MiB: only its first lines are read
    -- a large CSV whose records around the 10000th hold quoted line breaks: its head ends at a record's end
    local rows = { "id,note,pad" }
    for i = 1, 12000 do
      rows[#rows + 1] = string.format('%d,%s,%s', i, (i >= 9995 and i <= 10005) and '"two\nlines"' or "one", pad .. pad)
    end
    H.write_file(samples .. "/large.csv", table.concat(rows, "\n") .. "\n")
    for _, case in ipairs({ { "small.jsonl", "small" }, { "large.jsonl", "large" }, { "large.csv", "large" } }) do
      local file = samples .. "/" .. case[1]
      local rc, out, err = run("init", "system", "sampled", "--type", "file", "--dir", dir, "--from", file, "--dry-run")
      assert.are.equal(0, rc, err)
      assert.matches("entity sampled." .. case[2] .. ": 10000 records from 1 file (of " .. case[1]
        .. " only the first 10000 records), primary key (id)", out, 1, true)
      assert.is_nil(out:find("late", 1, true), out)
      assert.matches("(10000 records; of " .. case[1] .. " only the first 10000)", out, 1, true)
    end
    -- a JSON document is read whole to be parsed: one over 16 MiB is refused, with a way to cut it
    local big = samples .. "/big.json"
    local f = assert(io.open(big, "wb"))
    local rec = '{"id": 1, "pad": "' .. ("q"):rep(1000) .. '"},'
    f:write("[")
    for _ = 1, 17 * 1024 do f:write(rec) end
    f:write('{"id": 2}]')
    local mib = math.floor(f:seek("end") / 1048576)
    f:close()
    local rc, _, err = run("init", "system", "sampled", "--type", "file", "--dir", dir, "--from", big, "--dry-run")
    os.remove(big)
    assert.are.equal(2, rc, err)
    assert.matches("--from " .. big .. ": a JSON sample is read whole, and this one is " .. mib .. " MiB (at most 16): give its "
      .. "first records, e.g. jq '.[:1000]' " .. big .. " > sample.json", err, 1, true)
    assert.is_false(H.exists(dir .. "/systems.json"))
  end)

  it("keeps as text what the engine's cast would refuse, and ambiguous commas as strings; it all loads", function()
    local dir = env.DP_DATA_DIR .. "/odd-meta"
    local samples = env.DP_DATA_DIR .. "/odd-samples"
    local long = ("9"):rep(1001)
    H.write_file(samples .. "/odd.jsonl", '{"id": 1, "big": 1e400, "t": "2026-01-01T12:00:99", "d": "0000-01-01", "n": '
      .. long .. '}\n{"id": 2, "big": 2.5, "t": "2026-01-01T12:00:00Z", "d": "2026-01-01", "n": 1}\n')
    H.write_file(samples .. "/us.csv", 'id,amount\n1,"1,500"\n2,"12,000"\n')
    H.write_file(samples .. "/eu.csv", "id;amount;total\n1;1,500;-54,37\n2;12,000;1.234\n")
    local rc, out, err = run("init", "system", "odd", "--type", "file", "--dir", dir, "--from", samples .. "/odd.jsonl",
      "--from", samples .. "/us.csv", "--from", samples .. "/eu.csv")
    assert.are.equal(0, rc, err)
    assert.matches('warning: column big: looks like double, but the engine\'s cast says "1e400" does not fit a double'
      .. " (too large): the column is text", out, 1, true)
    assert.matches("warning: column n: whole numbers with more than 1000 digits (1001): a decimal holds at most 1000,"
      .. " so the column is text", out, 1, true)
    assert.matches('warning: column amount: values such as "1,500" are ambiguous in a comma-delimited file', out, 1, true)
    assert.matches('warning: column amount: every value with a comma has three digits after it ("1,500")', out, 1, true)
    assert.matches('warning: column total: "1.234" is read as 1234: with decimal commas, dots group thousands', out, 1, true)
    local ents = H.cjson.decode(H.read_file(dir .. "/entities.json"))
    local types = {}
    for _, e in ipairs(ents) do
      for _, c in ipairs(e.columns) do
        types[e.name .. "." .. c.name] = c.type .. (c.scale and ("(" .. c.precision .. "," .. c.scale .. ")") or "")
      end
    end
    assert.are.same({ ["odd.id"] = "integer", ["odd.big"] = "text", ["odd.t"] = "string", ["odd.d"] = "string",
      ["odd.n"] = "text", ["us.id"] = "integer", ["us.amount"] = "string", ["eu.id"] = "integer",
      ["eu.amount"] = "string", ["eu.total"] = "decimal(12,2)" }, types)
    assert.are.same({ delimiter = ";", decimal_comma = { "total" } }, ents[3].source.csv)
    assert.is_nil(ents[2].source.csv)

    local e2 = {}
    for k, v in pairs(env) do e2[k] = v end
    e2.DP_METADATA = dir
    local inbox = env.DP_DATA_DIR .. "/inbox/odd"
    H.sh("mkdir -p " .. H.sh_quote(inbox) .. " && cp " .. H.sh_quote(samples) .. "/* " .. H.sh_quote(inbox))
    for _, f in ipairs({ "odd.jsonl", "us.csv", "eu.csv" }) do H.backdate(inbox .. "/" .. f) end
    rc, out, err = H.engine(e2, "run", "odd")
    assert.are.equal(0, rc, (out or "") .. (err or ""))
    local pg = H.pg(env)
    local odd = assert(pg:query("SELECT id, big, t, d, length(n) AS n FROM silver.odd__odd ORDER BY id"))
    local us = assert(pg:query("SELECT amount FROM silver.odd__us ORDER BY id"))
    local eu = assert(pg:query("SELECT amount, total::text AS total FROM silver.odd__eu ORDER BY id"))
    local rejected = 0
    for _, t in ipairs({ "odd", "us", "eu" }) do
      rejected = rejected + tonumber(assert(pg:query("SELECT count(*) AS n FROM silver.odd__" .. t .. "__rejected"))[1].n)
    end
    pg:close()
    assert.are.equal(0, rejected)
    assert.are.same({ "1e400", "2026-01-01T12:00:99", "0000-01-01", "1001" }, { odd[1].big, odd[1].t, odd[1].d, odd[1].n })
    assert.are.same({ "1,500", "12,000" }, { us[1].amount, us[2].amount })
    assert.are.same({ "1,500", "-54.37", "12,000", "1234.00" }, { eu[1].amount, eu[1].total, eu[2].amount, eu[2].total })
  end)

  it("scaffolds the example systems from their exports, and each loads with no rejected row", function()
    local dir = env.DP_DATA_DIR .. "/examples"
    local e2 = H.with(env, { DP_METADATA = dir })
    for _, sys in ipairs({ "bank", "fitness", "listening" }) do
      local args = { "init", "system", sys, "--type", "file" }
      local rc0, out0 = H.sh("ls -1 " .. H.root .. "/metadata/demo/" .. sys .. "/export-1")
      assert.are.equal(0, rc0)
      for f in out0:gmatch("[^\n]+") do
        args[#args + 1] = "--from"
        args[#args + 1] = H.root .. "/metadata/demo/" .. sys .. "/export-1/" .. f
      end
      local rc, _, err = H.engine(e2, unpack(args))
      assert.are.equal(0, rc, err)
      H.fill_inbox(e2, "inbox/" .. sys, H.root .. "/metadata/demo/" .. sys .. "/export-1")
      local rc2, out2, err2 = H.engine(e2, "run", sys)
      assert.are.equal(0, rc2, (out2 or "") .. (err2 or ""))
    end
    local pg = H.pg(env)
    local tables = assert(pg:query([[SELECT table_name FROM information_schema.tables
      WHERE table_schema = 'silver' AND table_name LIKE '%__rejected' AND table_name NOT LIKE 'giro%' ORDER BY 1]]))
    assert.is_true(#tables >= 7)
    for _, t in ipairs(tables) do
      local n = assert(pg:query('SELECT count(*) AS n FROM silver."' .. t.table_name .. '"'))
      assert.are.equal("0", n[1].n, t.table_name)
    end
    local acts = assert(pg:query("SELECT id::text AS id, summary_distance_km::text AS km FROM silver.fitness__activities ORDER BY id"))
    pg:close()
    assert.are.equal("8102345501", acts[1].id)
    assert.are.equal("5.012", acts[1].km)
  end)

  it("scaffolds a connector whose spec passes and whose options connectors show prints", function()
    local scripts = H.tmpdir("initconn")
    H.sh("cp -r " .. H.sh_quote(H.root .. "/connectors") .. " " .. H.sh_quote(scripts) .. "/")
    local e2 = H.with(env, { DP_SCRIPTS = scripts })
    local rc, out, err = H.engine(e2, "init", "connector", "notes_api")
    assert.are.equal(0, rc, err)
    assert.matches("wrote " .. scripts .. "/connectors/notes_api.lua", out, 1, true)
    assert.matches("wrote " .. scripts .. "/spec/notes_api_connector_spec.lua", out, 1, true)
    local rc2, out2 = H.engine(e2, "connectors", "show", "notes_api")
    assert.are.equal(0, rc2)
    assert.matches("\n  path  string  (required)\n", out2, 1, true)
    local rc3, out3 = H.sh("cd " .. H.sh_quote(H.root) .. " && busted -o TAP " .. H.sh_quote(scripts .. "/spec/notes_api_connector_spec.lua") .. " 2>&1")
    assert.are.equal(0, rc3, out3)
    assert.matches("ok 2 ", out3, 1, true)
    local rc4, _, err4 = H.engine(e2, "init", "connector", "notes_api")
    assert.are.equal(2, rc4)
    assert.matches("notes_api.lua exists already: nothing is overwritten", err4, 1, true)
    local rc5, _, err5 = H.engine(e2, "init", "connector", "Notes")
    assert.are.equal(2, rc5)
    assert.matches("is not a connector type", err5, 1, true)
    H.sh("rm -rf " .. H.sh_quote(scripts))
  end)
end)
