-- spec/helpers.lua: the facade specs use to reach the real services and the engine.
--
-- The services (PostgreSQL and FerretDB on loopback) are started by spec/services.sh, which
-- spec/run.sh calls before busted; their URLs arrive in DP_POSTGRES_URL / DP_MONGO_URL.
-- Each spec file asks for a fresh environment: its own PostgreSQL database (migrated), its own
-- bronze database in MongoDB, its own data folder. Nothing is shared between spec files.
local core = require "dp.core"
local cjson = require "cjson"

local H = {}

H.root = os.getenv("DP_HOME") or io.popen("pwd"):read("*l")
-- DP_ENGINE_BUILD: the build folder whose binary the specs run (default build/; spec/sanitize.sh
-- sets build-asan/ and points busted's cpath at the dp.core module built there too).
H.build = os.getenv("DP_ENGINE_BUILD") or "build"
H.bin = H.root .. "/" .. H.build .. "/dp-engine"
H.core = core
H.cjson = cjson

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
H.sh_quote = sh_quote

-- Runs a shell command; returns its exit code and stdout.
function H.sh(cmd)
  local p = io.popen(cmd .. '; echo "__rc=$?"')
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.-)__rc=(%d+)%s*$")
  return tonumber(rc), body
end

function H.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- The content of a file, or nil when it cannot be read.
function H.try_read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function H.write_file(path, s)
  H.sh("mkdir -p " .. sh_quote(path:match("^(.*)/[^/]*$")))
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

function H.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- The fenced code blocks of a Markdown text, in order: { lang ("" for a plain fence), text, line
-- (of the opening fence), label (the last non-blank line before it that is not an HTML
-- comment), tags (the <!-- ... --> lines right before the fence: { { line, text } }) }. A block
-- whose closing fence never comes (it must be ``` alone on its line) has unclosed = true; one
-- holding a line that starts with ``` (a closing fence with text after it?) has fence_inside =
-- that line.
function H.markdown_blocks(text)
  local out, cur, label, tags, n = {}, nil, nil, {}, 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if cur then
      if line:match("^```%s*$") then
        out[#out + 1] = cur
        cur = nil
      else
        if line:match("^```") then cur.fence_inside = cur.fence_inside or n end
        cur.text = cur.text .. line .. "\n"
      end
    else
      local lang = line:match("^```(%S*)")
      if lang then
        cur = { lang = lang, text = "", line = n, label = label, tags = tags }
        tags = {}
      elseif line:match("^<!%-%-.*%-%->%s*$") then
        tags[#tags + 1] = { line = n, text = line }
      elseif line:find("%S") then
        label, tags = line, {}
      end
    end
  end
  if cur then
    cur.unclosed = true
    out[#out + 1] = cur
  end
  return out
end

function H.tmpdir(tag)
  local rc, out = H.sh("mktemp -d /tmp/dp-spec-" .. (tag or "x") .. "-XXXXXX")
  assert(rc == 0, "mktemp failed")
  return (out:gsub("%s+$", ""))
end

local function services()
  local pg, mongo = os.getenv("DP_POSTGRES_URL"), os.getenv("DP_MONGO_URL")
  if not pg or not mongo then
    error("DP_POSTGRES_URL / DP_MONGO_URL are not set: run the specs with spec/run.sh, "
      .. "which starts PostgreSQL and FerretDB (spec/services.sh)", 2)
  end
  return pg, mongo
end

-- A PostgreSQL URL for database db on the same server as DP_POSTGRES_URL.
local function url_for(db)
  local pg = services()
  local base, query = pg:match("^(.-)(%?.*)$")
  base = base or pg
  return base:gsub("/[^/]*$", "/" .. db) .. (query or "")
end

-- A fresh, migrated environment for one spec file. Returns a table of environment variables
-- (DP_POSTGRES_URL, DP_MONGO_URL, DP_BRONZE_DB, DP_METADATA_DB, DP_DATA_DIR, DP_METADATA,
-- DP_HOME, DP_LOG_LEVEL). opts.metadata: the metadata folder (default the repository's).
function H.fresh_env(name, opts)
  opts = opts or {}
  local pg, mongo = services()
  -- DP_SPEC_TAG keeps two test runs against the same services apart (e.g. two worktrees).
  local tag = os.getenv("DP_SPEC_TAG")
  if tag and tag ~= "" then
    assert(tag:match("^[a-z0-9_]+$"), "DP_SPEC_TAG must match [a-z0-9_]+")
    name = tag .. "_" .. name
  end
  local db = "dp_spec_" .. name
  local admin = assert(core.pg_connect(pg))
  assert(admin:query("DROP DATABASE IF EXISTS " .. db .. " WITH (FORCE)"))
  assert(admin:query("CREATE DATABASE " .. db))
  admin:close()
  local bronze, metadata_db = "bronze_spec_" .. name, "metadata_spec_" .. name
  local m = assert(core.mongo_connect(mongo))
  assert(m:command(bronze, '{"dropDatabase": 1}'))
  assert(m:command(metadata_db, '{"dropDatabase": 1}'))
  m:close()
  local env = {
    DP_POSTGRES_URL = url_for(db),
    DP_MONGO_URL = mongo,
    DP_BRONZE_DB = bronze,
    DP_METADATA_DB = metadata_db,
    DP_DATA_DIR = H.tmpdir(name),
    DP_METADATA = opts.metadata or (H.root .. "/metadata"),
    DP_HOME = H.root,
    DP_LOG_LEVEL = "warn",
  }
  local rc, out, err = H.engine(env, "migrate")
  assert(rc == 0, "migrate failed: " .. tostring(out) .. tostring(err))
  return env
end

-- A command's stdout decoded as the one JSON document it must be (--json); fails the test
-- when anything else is there.
function H.json_stdout(out)
  local ok, doc = pcall(cjson.decode, out)
  assert(ok, "stdout is not one JSON document: " .. tostring(out))
  return doc
end

-- Runs the engine binary with env; returns exit code, stdout, stderr.
function H.engine(env, ...)
  local parts = { "env" }
  for k, v in pairs(env) do
    if k:match("^DP_") then parts[#parts + 1] = k .. "=" .. sh_quote(v) end
  end
  parts[#parts + 1] = sh_quote(H.bin)
  for _, a in ipairs({ ... }) do parts[#parts + 1] = sh_quote(a) end
  local errfile = os.tmpname()
  local rc, out = H.sh(table.concat(parts, " ") .. " 2>" .. sh_quote(errfile))
  local err = H.read_file(errfile)
  os.remove(errfile)
  return rc, out, err
end

-- Starts the engine with env in the background, paused at a test hook (DP_TEST_PAUSE = point),
-- waits (at most 30 s) until it reaches it, and kills it with SIGKILL. Returns true when it
-- was killed at that point.
function H.engine_killed_at(env, point, ...)
  local marker = os.tmpname()
  os.remove(marker)
  local parts = { "env", "DP_TEST_PAUSE=" .. point, "DP_TEST_PAUSE_FILE=" .. sh_quote(marker) }
  for k, v in pairs(env) do
    if k:match("^DP_") then parts[#parts + 1] = k .. "=" .. sh_quote(v) end
  end
  parts[#parts + 1] = sh_quote(H.bin)
  for _, a in ipairs({ ... }) do parts[#parts + 1] = sh_quote(a) end
  local cmd = table.concat(parts, " ") .. " >/dev/null 2>&1 & pid=$!; "
    .. "for i in $(seq 1 300); do [ -s " .. sh_quote(marker) .. " ] && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done; "
    .. "if [ -s " .. sh_quote(marker) .. " ]; then kill -9 $pid; wait $pid 2>/dev/null; echo killed; "
    .. "else wait $pid 2>/dev/null; echo ended; fi"
  local _, out = H.sh("(" .. cmd .. ") 2>/dev/null")
  os.remove(marker)
  return out:match("killed") ~= nil
end

-- The demo bank's silver.bank__transactions, one line per version, without what differs
-- between runs by nature (ids, run ids, times): for comparing a rebuilt silver with a clean one.
function H.bank_history(pg)
  local rows = assert(pg:query([[SELECT id, amount::text, category, description, _dp_is_current::text AS cur,
      _dp_is_deleted::text AS del, _dp_key_hash::text AS kh, _dp_scd1_hash::text AS h1, _dp_scd2_hash::text AS h2,
      (_dp_valid_to IS NULL)::text AS open FROM silver.bank__transactions ORDER BY id, _dp_valid_from, _dp_id]]))
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = table.concat({ r.id, r.amount, r.category, r.description, r.cur, r.del, r.kh, r.h1, r.h2, r.open }, "|")
  end
  return out
end

function H.pg(env)
  return assert(core.pg_connect(env.DP_POSTGRES_URL))
end

function H.mongo()
  local _, mongo = services()
  return assert(core.mongo_connect(mongo))
end

-- All documents of a collection in the spec's pushed-metadata database, decoded.
function H.metadata_docs(env, collection, filter)
  local m = H.mongo()
  local docs = assert(m:find(env.DP_METADATA_DB, collection, filter or "{}"))
  m:close()
  local out = {}
  for i, js in ipairs(docs) do out[i] = cjson.decode(js) end
  return out
end

-- A copy of env with some variables changed (false removes one).
function H.with(env, changes)
  local out = {}
  for k, v in pairs(env) do out[k] = v end
  for k, v in pairs(changes) do out[k] = v or nil end
  return out
end

-- All documents of a bronze collection, decoded, sorted by data[sort_key].
function H.bronze_docs(env, collection, sort_key)
  local m = H.mongo()
  local docs = assert(m:find(env.DP_BRONZE_DB, collection, "{}"))
  m:close()
  local out = {}
  for i, js in ipairs(docs) do out[i] = cjson.decode(js) end
  if sort_key then
    table.sort(out, function(a, b) return tostring(a.data[sort_key]) < tostring(b.data[sort_key]) end)
  end
  return out
end

-- Replaces the inbox of a system with copies of the files in from_dir, backdated a minute (the
-- file connector does not read files changed in the last seconds: they may still be written).
function H.fill_inbox(env, inbox, from_dir)
  local dir = env.DP_DATA_DIR .. "/" .. inbox
  assert(H.sh("rm -rf " .. sh_quote(dir) .. " && mkdir -p " .. sh_quote(dir) .. " && cp " ..
    sh_quote(from_dir) .. "/* " .. sh_quote(dir) .. "/ && touch -d '1 minute ago' " .. sh_quote(dir) .. "/*") == 0)
  return dir
end

-- The demo bank's two exports loaded in two whole runs of bank (export-1, then export-2, which
-- changes, removes and adds transactions); returns the two run ids, in order.
function H.run_bank_exports(env, pg)
  local demo = H.root .. "/metadata/demo/bank"
  for _, export in ipairs({ "export-1", "export-2" }) do
    H.fill_inbox(env, "inbox/bank", demo .. "/" .. export)
    local rc, out, err = H.engine(env, "run", "bank")
    assert(rc == 0, "run bank on " .. export .. ": " .. tostring(out) .. tostring(err))
  end
  local runs = assert(pg:query("SELECT run_id FROM audit.system_run WHERE system = 'bank' ORDER BY started_at"))
  return runs[1].run_id, runs[2].run_id
end

-- Backdates a file's modification time by a minute: the file connector does not read files
-- changed in the last few seconds (they may still be being written).
function H.backdate(path)
  assert(H.sh("touch -d '1 minute ago' " .. sh_quote(path)) == 0, "touch failed on " .. path)
end

-- Writes an export file into an inbox, backdated so that it counts as completely written.
function H.write_export(path, s)
  H.write_file(path, s)
  H.backdate(path)
end

-- Starts the HTTP test server (spec/http_server.py) on a free loopback port, as a separate
-- process that exits by itself when this busted process is gone. Returns
--   server.url                  "http://127.0.0.1:PORT"
--   server.requests()           what it received (array of {method, path, query, params, headers, body})
--   server.reset()              forget requests, counters and state
--   server.state(t)             merge t into the server's state (e.g. { fail_page = 2 })
--   server.stop()               stop it (call in teardown)
function H.http_server()
  local dir = H.tmpdir("http")
  local port_file = dir .. "/port"
  -- $PPID in the shell that popen starts is this process: the server watches it.
  local rc, out = H.sh("python3 " .. sh_quote(H.root .. "/spec/http_server.py") .. " " .. sh_quote(port_file)
    .. " $PPID >" .. sh_quote(dir .. "/server.log") .. " 2>&1 & echo $!")
  assert(rc == 0, "cannot start spec/http_server.py")
  local pid = assert(tonumber(out:match("(%d+)")), "no pid from the HTTP test server")
  local port
  for _ = 1, 200 do
    port = H.try_read(port_file)
    if port and port:match("^%d+$") then break end
    port = nil
    core.sleep(0.025)
  end
  if not port then
    H.sh("kill " .. pid)
    error("the HTTP test server did not start: " .. tostring(H.try_read(dir .. "/server.log")), 2)
  end
  local url = "http://127.0.0.1:" .. port
  local client = core.http_client()
  local function call(method, path, body)
    local resp, kind, err = client:request { method = method, url = url .. path, body = body, timeout = 5,
      headers = body and { "Content-Type: application/json" } or nil }
    assert(resp, tostring(kind) .. ": " .. tostring(err))
    assert(resp.status == 200, path .. ": HTTP " .. resp.status)
    return cjson.decode(resp.body)
  end
  local server = { url = url, pid = pid }
  function server.requests() return call("GET", "/__requests") end
  function server.reset() call("POST", "/__reset", "{}") end
  function server.state(t) call("POST", "/__state", cjson.encode(t)) end
  function server.stop()
    client:close()
    H.sh("kill " .. pid .. " 2>/dev/null; rm -rf " .. sh_quote(dir))
  end
  return server
end

return H
