-- Edges of the data lifecycle (docs/lifecycle.md), against the real services: damaged raw and
-- bronze change files are refused (never read as complete), a rollback that stopped after silver
-- committed is finished by running it again, a rollback after retention dropped what the run
-- changed is still exact, compression and forget keep a raw file's times, and the smaller
-- promises of rollback and retention (dry runs change nothing, counts, --json).
local H = require "helpers"

local META = H.root .. "/spec/fixtures/pipelines/rollback"
local DAY = 86400

-- A copy of the rollback fixture's metadata, each entity passed to tweak.
local function meta_with(tweak)
  local dir = H.tmpdir("edge-meta")
  assert(H.sh("cp -r " .. META .. "/. " .. dir) == 0)
  local ents = H.cjson.decode(H.read_file(dir .. "/entities.json"))
  for _, e in ipairs(ents) do tweak(e) end
  H.write_file(dir .. "/entities.json", H.cjson.encode(ents))
  return dir
end

-- accounts with settings (a table set on the entity accounts)
local function accounts_with(fields)
  return meta_with(function(e)
    if e.name == "accounts" then for k, v in pairs(fields) do e[k] = v end end
  end)
end

local function fresh(name, meta)
  local scripts = H.tmpdir(name .. "_scripts")
  assert(H.sh("mkdir -p " .. scripts .. " && cp -r " .. META .. "/gold " .. scripts .. "/gold && ln -sfn "
    .. H.root .. "/connectors " .. scripts .. "/connectors") == 0)
  local env = H.fresh_env(name, { metadata = meta or META })
  env.DP_SCRIPTS = scripts
  return env, H.pg(env), env.DP_DATA_DIR .. "/inbox/rb"
end

-- An accounts export: rows {id, balance}.
local function export(inbox, n, rows)
  local lines = {}
  for _, r in ipairs(rows) do
    lines[#lines + 1] = ('{"id": %d, "name": "n%d", "email": "e%d", "balance": "%s"}'):format(r[1], r[1], r[1], r[2])
  end
  H.write_export(("%s/accounts-%04d.jsonl"):format(inbox, n), table.concat(lines, "\n") .. "\n")
end

-- Runs rb.accounts; returns the run id.
local function run(env, pg)
  local rc, out, err = H.engine(env, "run", "rb", "--entity", "accounts")
  assert.are.equal(0, rc, out .. err)
  return assert(pg:query("SELECT run_id::text AS id FROM audit.system_run WHERE trigger_kind <> 'rollback' "
    .. "ORDER BY run_ts DESC LIMIT 1"))[1].id
end

-- silver.rb__accounts, entity_state and entity_cursor as text, row by row.
local function dump(pg)
  local out = {}
  for _, t in ipairs({ "silver.rb__accounts", "dp.entity_state", "dp.entity_cursor" }) do
    local lines = {}
    for i, r in ipairs(assert(pg:query("SELECT to_jsonb(t)::text AS j FROM " .. t .. " t ORDER BY 1"))) do
      lines[i] = r.j
    end
    out[t] = lines
  end
  return out
end

-- The bronze documents of accounts: id -> {balance, deleted}.
local function bronze_state(env)
  local out = {}
  for _, d in ipairs(H.bronze_docs(env, "rb__accounts", "id")) do
    out[tostring(d.data.id)] = { d.data.balance, d._dp.deleted == true }
  end
  return out
end

-- The raw file of a run (absolute path, as the audit names it).
local function raw_file(env, pg, id)
  return env.DP_DATA_DIR .. "/" .. assert(pg:query("SELECT details->>'file' AS f FROM audit.entity_layer_run "
    .. "WHERE run_id = $1 AND layer = 'raw' AND entity = 'accounts'", id))[1].f
end

local function mtime(path)
  local rc, out = H.sh("stat -c %Y " .. H.sh_quote(path))
  assert(rc == 0, "stat failed on " .. path)
  return tonumber(out)
end

local function rows_of(n)
  local rows = {}
  for i = 1, n do rows[i] = { i, ("%d.%02d"):format(i % 9999, i % 100) } end
  return rows
end

describe("damaged raw files", function()
  it("a truncated or empty .jsonl.gz is refused by replay and forget, naming the file", function()
    local env, pg, inbox = fresh("edge_gz", accounts_with({ raw = { compression = "gzip" } }))
    export(inbox, 1, rows_of(20000))
    local id = run(env, pg)
    local path = raw_file(env, pg, id) .. ".gz"
    if not H.exists(path) then path = raw_file(env, pg, id) end
    assert.matches("%.jsonl%.gz$", path)
    local _, size = H.sh("stat -c %s " .. H.sh_quote(path))
    assert(H.sh("truncate -s " .. math.floor(tonumber(size) / 2) .. " " .. H.sh_quote(path)) == 0)
    local want = assert(pg:query("SELECT count(*) AS n FROM silver.rb__accounts WHERE _dp_is_current "
      .. "AND NOT _dp_is_deleted"))[1].n
    assert.are.equal("20000", want)
    local rc, out, err = H.engine(env, "replay", "rb", "--from", "raw", "--run", id, "--entity", "accounts")
    assert.are_not.equal(0, rc, out)
    assert.matches("raw file " .. path .. " is truncated or damaged", err, 1, true)
    -- nothing was taken as deleted
    assert.are.equal(want, assert(pg:query("SELECT count(*) AS n FROM silver.rb__accounts WHERE _dp_is_current "
      .. "AND NOT _dp_is_deleted"))[1].n)
    local before = H.read_file(path)
    rc, out, err = H.engine(env, "forget", "rb.accounts", "--key", "id=5")
    assert.are.equal(1, rc, out)
    assert.matches(path .. " is truncated or damaged", err, 1, true)
    assert.are.equal(before, H.read_file(path)) -- not rewritten
    -- an empty file is no gzip stream either
    H.write_file(path, "")
    rc, _, err = H.engine(env, "replay", "rb", "--from", "raw", "--run", id, "--entity", "accounts")
    assert.are_not.equal(0, rc)
    assert.matches("raw file " .. path .. " is truncated or damaged", err, 1, true)
    pg:close()
  end)

  it("a plain raw file cut short is refused by replay (its manifest's bytes) and by forget", function()
    local env, pg, inbox = fresh("edge_plain")
    export(inbox, 1, rows_of(50))
    local id = run(env, pg)
    local path = raw_file(env, pg, id)
    local text = H.read_file(path)
    H.write_file(path, text:sub(1, #text - 10)) -- the last line cut
    local rc, out, err = H.engine(env, "replay", "rb", "--from", "raw", "--run", id, "--entity", "accounts")
    assert.are_not.equal(0, rc, out)
    assert.matches("raw file " .. path .. " is truncated or damaged", err, 1, true)
    rc, out, err = H.engine(env, "forget", "rb.accounts", "--key", "id=5")
    assert.are.equal(1, rc, out)
    assert.matches(path .. " is truncated or damaged (its last line is cut)", err, 1, true)
    -- cut at a line end: the manifest counts more lines
    local cut = text:sub(1, text:find("\n", 1, true))
    H.write_file(path, cut)
    rc, out, err = H.engine(env, "forget", "rb.accounts", "--key", "id=5")
    assert.are.equal(1, rc, out)
    assert.matches(path .. " is truncated or damaged: 1 lines, its manifest says 50", err, 1, true)
    assert.are.equal(cut, H.read_file(path))
    pg:close()
  end)

  it("rollback refuses, changing nothing, when an earlier raw file does not match its manifest", function()
    local env, pg, inbox = fresh("edge_rbraw")
    export(inbox, 1, { { 1, "1.00" }, { 2, "2.00" } })
    local first = run(env, pg)
    export(inbox, 2, { { 1, "9.00" }, { 2, "2.00" } })
    local id = run(env, pg)
    local path = raw_file(env, pg, first)
    H.write_file(path, (H.read_file(path):gsub('"n1"', '"x1"'))) -- the same size, other content
    local before = dump(pg)
    local rc, out, err = H.engine(env, "rollback", id)
    assert.are.equal(1, rc, out)
    assert.matches("raw file " .. path .. " is damaged: the sha256 of its lines", err, 1, true)
    assert.matches("nothing was changed", err, 1, true)
    assert.are.same(before, dump(pg))
    pg:close()
  end)

  it("forget refuses a damaged bronze change file, naming it and the byte offset", function()
    local env, pg, inbox = fresh("edge_bson")
    export(inbox, 1, { { 1, "1.00" }, { 2, "2.00" } })
    run(env, pg)
    local dir = env.DP_DATA_DIR .. "/bronze/rb/accounts"
    local _, files = H.sh("ls " .. H.sh_quote(dir) .. "/*.bson 2>/dev/null | head -1")
    local path = files:match("[^\n]+")
    if not path then -- silver consumed it: a pending change file as a crashed silver leaves it
      path = dir .. "/01900000-0000-7000-8000-0000000000ee.bson"
    end
    -- one whole document (5 bytes: an empty BSON document) and a torn one
    assert(H.sh("mkdir -p " .. H.sh_quote(dir)) == 0)
    H.write_file(path, "\5\0\0\0\0" .. "\40\0\0\0\2_id\0")
    local rc, out, err = H.engine(env, "forget", "rb.accounts", "--key", "id=1")
    assert.are.equal(1, rc, out)
    assert.matches("bronze change file " .. path .. " is truncated or damaged at byte 5", err, 1, true)
    pg:close()
  end)
end)

-- Accounts 1 and 2, then a run of second (its id), then retention two days on, whose action
-- removed one item. Returns env, pg, inbox, the silver dump and bronze before the run, the run.
local function retained(name, retention, second, action)
  local env, pg, inbox = fresh(name, accounts_with({ retention = retention }))
  export(inbox, 1, { { 1, "1.00" }, { 2, "2.00" } })
  run(env, pg)
  local want, want_bronze = dump(pg), bronze_state(env)
  export(inbox, 2, second)
  local id = run(env, pg)
  local rc, out, err = H.engine(H.with(env, { DP_TEST_NOW = tostring(os.time() + 2 * DAY) }), "retention")
  assert.are.equal(0, rc, out .. err)
  assert.are.equal("1", assert(pg:query("SELECT items FROM audit.retention_run WHERE action = $1", action))[1].items)
  return env, pg, inbox, want, id, want_bronze
end

describe("rollback, finished and exact", function()
  it("a rollback that failed after silver committed is finished by running it again", function()
    local env, pg, inbox = fresh("edge_retry")
    export(inbox, 1, { { 1, "1.00" }, { 2, "2.00" } })
    run(env, pg)
    local want = dump(pg)
    export(inbox, 2, { { 1, "9.00" }, { 2, "2.00" } })
    local id = run(env, pg)
    local raw = raw_file(env, pg, id)
    H.write_file(env.DP_DATA_DIR .. "/quarantine", "x") -- the quarantine folder cannot be created
    local rc, out, err = H.engine(env, "rollback", id)
    assert.are.equal(1, rc, out .. err)
    assert.matches("cannot create folder", err, 1, true)
    assert.are.same(want, dump(pg)) -- silver committed
    os.remove(env.DP_DATA_DIR .. "/quarantine")
    rc, out, err = H.engine(env, "rollback", id, "--json")
    assert.are.equal(0, rc, out .. err)
    local r = H.json_stdout(out)
    assert.are.equal("succeeded", r.status)
    local item = r.runs[1].entities[1]
    assert.are.equal(1, item.silver_rows_restored) -- the counts of the attempt that undid silver
    assert.are.equal(1, item.silver_versions_removed)
    assert.are.equal(1, item.raw_files_quarantined)
    assert.are.same(want, dump(pg))
    assert.is_false(H.exists(raw))
    assert.is_true(H.exists(env.DP_DATA_DIR .. "/quarantine/" .. id .. "/" .. raw:sub(#env.DP_DATA_DIR + 2)))
    local st = assert(pg:query("SELECT DISTINCT status FROM audit.entity_layer_run WHERE run_id = $1 "
      .. "AND status <> 'skipped'", id))
    assert.are.same({ { status = "rolled_back" } }, st)
    assert.are.equal(r.rollback_run_id, assert(pg:query("SELECT rolled_back_by::text AS b FROM audit.system_run "
      .. "WHERE run_id = $1", id))[1].b)
    pg:close()
  end)

  it("restores the version the run closed after retention dropped it (silver_history_days)", function()
    local env, pg, _, want, id = retained("edge_hist", { silver_history_days = 1 }, { { 1, "9.00" }, { 2, "2.00" } },
      "drop_silver_history")
    local rc, out, err = H.engine(env, "rollback", id)
    assert.are.equal(0, rc, out .. err)
    assert.matches("1 rows restored", out, 1, true)
    assert.are.same(want, dump(pg))
    pg:close()
  end)

  it("restores the document the run deleted after retention purged it (bronze_deleted_days)", function()
    local env, pg, inbox, want, id, want_bronze = retained("edge_purge", { bronze_deleted_days = 1 }, { { 2, "2.00" } },
      "purge_bronze")
    local rc, out, err = H.engine(env, "rollback", id)
    assert.are.equal(0, rc, out .. err)
    assert.are.same(want, dump(pg))
    assert.are.same(want_bronze, bronze_state(env))
    -- the same export again deletes account 1 again: no key left current in silver alone
    export(inbox, 3, { { 2, "2.00" } })
    run(env, pg)
    local cur = assert(pg:query("SELECT id::text AS id, _dp_is_deleted::text AS d FROM silver.rb__accounts "
      .. "WHERE _dp_is_current ORDER BY id"))
    assert.are.same({ { id = "1", d = "true" }, { id = "2", d = "false" } }, cur)
    pg:close()
  end)

  it("--dry-run leaves a running run of the system alone; quarantined files count data files", function()
    local env, pg, inbox = fresh("edge_dry")
    export(inbox, 1, { { 1, "1.00" } })
    local id = run(env, pg)
    local running = "01900000-0000-7000-8000-0000000000ab"
    assert(pg:query([[INSERT INTO audit.system_run (run_id, run_ts, system, trigger_kind, status, started_at,
      engine_version) VALUES ($1, now() - interval '1 hour', 'rb', 'manual', 'running', now(), 'spec')]], running))
    local rc, out, err = H.engine(env, "rollback", id, "--dry-run", "--json")
    assert.are.equal(0, rc, out .. err)
    assert.are.equal(1, H.json_stdout(out).runs[1].entities[1].raw_files_quarantined) -- not its manifest
    assert.are.equal("running", assert(pg:query("SELECT status FROM audit.system_run WHERE run_id = $1",
      running))[1].status)
    assert(pg:query("DELETE FROM audit.system_run WHERE run_id = $1", running))
    rc, out, err = H.engine(env, "rollback", id, "--json")
    assert.are.equal(0, rc, out .. err)
    assert.are.equal(1, H.json_stdout(out).runs[1].entities[1].raw_files_quarantined)
    pg:close()
  end)
end)

describe("retention and forget keep a raw file's times", function()
  it("compression keeps the mtime: raw_delete_days counts from the export", function()
    local env, pg, inbox = fresh("edge_mtime", accounts_with({ retention = { raw_days = 1, raw_delete_days = 30 } }))
    export(inbox, 1, { { 1, "1.00" } })
    local first = run(env, pg)
    export(inbox, 2, { { 1, "2.00" } })
    run(env, pg)
    local path = raw_file(env, pg, first)
    assert(H.sh("touch -d '29 days ago' " .. H.sh_quote(path)) == 0)
    local was = mtime(path)
    local rc, out, err = H.engine(env, "retention")
    assert.are.equal(0, rc, out .. err)
    assert.is_true(H.exists(path .. ".gz"))
    assert.are.equal(was, mtime(path .. ".gz"))
    -- two days on, the file is 31 days old: deleted
    rc, out, err = H.engine(H.with(env, { DP_TEST_NOW = tostring(os.time() + 2 * DAY) }), "retention")
    assert.are.equal(0, rc, out .. err)
    assert.is_false(H.exists(path .. ".gz"))
    -- which ends rollback for the entity's later runs: retention says so
    assert.matches("note: rb.accounts: no run of the entity after these files' runs can be rolled back", out, 1, true)
    rc, out, err = H.engine(env, "rollback", assert(pg:query("SELECT run_id::text AS id FROM audit.system_run "
      .. "ORDER BY run_ts DESC LIMIT 1"))[1].id)
    assert.are.equal(2, rc, out)
    assert.matches("the raw file " .. path .. " of run " .. first .. " is gone", err, 1, true)
    pg:close()
  end)

  it("forget's rewrite keeps the mtime", function()
    local env, pg, inbox = fresh("edge_fmtime")
    export(inbox, 1, { { 1, "1.00" }, { 2, "2.00" } })
    local path = raw_file(env, pg, run(env, pg))
    assert(H.sh("touch -d '20 days ago' " .. H.sh_quote(path)) == 0)
    local was = mtime(path)
    local rc, out, err = H.engine(env, "forget", "rb.accounts", "--key", "id=1")
    assert.are.equal(0, rc, out .. err)
    assert.matches("1 lines in 1 files", out, 1, true)
    assert.are.equal(was, mtime(path))
    pg:close()
  end)
end)

describe("retention --json", function()
  it("prints one whole JSON document or nothing when an audit insert fails half way", function()
    local env, pg, inbox = fresh("edge_json", accounts_with({ retention = { raw_days = 1, silver_history_days = 5 } }))
    export(inbox, 1, { { 1, "1.00" } })
    run(env, pg)
    assert(pg:query([[CREATE FUNCTION spec_fail_retention() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.action = 'drop_silver_history' THEN RAISE EXCEPTION 'spec: no more rows'; END IF;
      RETURN NEW; END $$]]))
    assert(pg:query([[CREATE TRIGGER spec_fail BEFORE INSERT ON audit.retention_run FOR EACH ROW
      EXECUTE FUNCTION spec_fail_retention()]]))
    local rc, out, err = H.engine(env, "retention", "--json")
    assert.are_not.equal(0, rc)
    assert.matches("spec: no more rows", err, 1, true)
    if out ~= "" then H.json_stdout(out) end
    assert.are.equal("", out)
    pg:close()
  end)
end)
