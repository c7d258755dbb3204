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
