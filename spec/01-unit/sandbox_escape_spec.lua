-- Sandbox escapes (issue #11, items 5 and 6; docs/connectors.md, "What the sandbox promises,
-- and what it does not"). Each case runs a hostile connector (or gold script) through the
-- engine's real entry points and asserts two things: the attack fails with a clear error, and
-- the engine is unchanged afterwards (string.format intact, another system's secret still out
-- of reach, the next extract sees the metadata as written).
local ffi = require "ffi"
local cjson = require "cjson"
local H = require "helpers"
local core = H.core
local engine = require "dp.engine"
local sandbox = require "dp.sandbox"
local gold = require "dp.gold"

pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);")

local VICTIM_SECRET = "victim-only-s3cret-value"
local EVIL_SECRET = "evil-own-token-value"

local real = {
  format = string.format, rep = string.rep, concat = table.concat, dump = string.dump,
  sub = string.sub, encode = cjson.encode,
}

local root, scripts, meta_texts

local function systems_json(extra_evil)
  local evil = { name = "evil", type = "evil", token = { secret = "evil_token" } }
  for k, v in pairs(extra_evil or {}) do evil[k] = v end
  return cjson.encode({ evil, { name = "victim", type = "victim", token = { secret = "victim_token" } } })
end

local ENTITIES = cjson.encode({
  { name = "items", system = "evil", primary_key = { "id" }, columns = { { name = "id", type = "string" } } },
  { name = "items", system = "victim", primary_key = { "id" }, columns = { { name = "id", type = "string" } } },
})

local function write_connector(name, src)
  H.write_file(scripts .. "/connectors/" .. name .. ".lua", src)
end

-- A connector whose extract runs body (ctx in scope); top runs at load.
local function evil(body, top)
  write_connector("evil", (top or "") .. [[

return {
  system_schema = { fields = { { token = { type = "any" } } } },
  extract = function(ctx)
]] .. body .. [[

  end,
}
]])
end

local function load_meta(systems)
  return engine.load_metadata_texts({ ["systems.json"] = systems or systems_json(), ["entities.json"] = ENTITIES })
end

-- Runs extract of evil.items; returns ok, cursor-or-error, records (decoded).
local function extract(system)
  local meta = assert(load_meta())
  local records = {}
  local ok, res = pcall(engine.extract, meta, system or "evil", "items", nil, function(batch)
    for _, r in ipairs(batch) do records[#records + 1] = r end
  end, function() end)
  return ok, res, records
end

local function attack_fails(body, top)
  evil(body, top)
  local ok, err = extract()
  assert.is_false(ok, "the attack was expected to fail: " .. tostring(err))
  return tostring(err)
end

-- The engine after an attack: its string library and string methods are the real ones, cjson
-- encodes, and a plain connector of the same system sees its own metadata and secret only.
local function assert_engine_intact()
  assert.equal(real.format, string.format)
  assert.equal("5|ab", string.format("%d|%s", 5, "ab"))
  assert.equal(real.concat, table.concat)
  assert.equal(real.dump, string.dump)
  assert.equal("xxx", ("x"):rep(3))
  assert.equal(real.sub, ("").sub)
  assert.equal('{"a":1}', cjson.encode({ a = 1 }))
  evil([[
    local ok, other = pcall(ctx.secret, "victim_token")
    ctx.emit({ { id = "probe", pk = ctx.entity.primary_key, cols = #ctx.entity.columns, name = ctx.entity.name,
      own = ctx.secret("evil_token") == "]] .. EVIL_SECRET .. [[", token = ctx.system.token == "]] .. EVIL_SECRET .. [[",
      other = ok and other or "refused",
      fmt = string.format("%d", 7) } })
    return "done"
]])
  local ok, cursor, records = extract()
  assert.is_true(ok, tostring(cursor))
  assert.equal("done", cursor)
  local r = cjson.decode(records[1])
  assert.same({ "id" }, r.pk)
  assert.equal(1, r.cols)
  assert.equal("items", r.name)
  assert.is_true(r.own)
  assert.is_true(r.token)
  assert.equal("refused", r.other)
  assert.equal("7", r.fmt)
  assert.is_nil(records[1]:find(VICTIM_SECRET, 1, true))
end

describe("sandbox escapes", function()
  local saved_limits
  setup(function()
    root = H.tmpdir("escape")
    scripts = root .. "/scripts"
    H.sh("mkdir -p " .. H.sh_quote(scripts .. "/connectors") .. " " .. H.sh_quote(scripts .. "/gold"))
    write_connector("victim", [[
return { system_schema = { fields = { { token = { type = "any" } } } }, extract = function(ctx) end }
]])
    engine.configure { scripts_dir = scripts, data_dir = root }
    ffi.C.setenv("DP_SECRET_EVIL_TOKEN", EVIL_SECRET, 1)
    ffi.C.setenv("DP_SECRET_VICTIM_TOKEN", VICTIM_SECRET, 1)
    ffi.C.setenv("DP_SECRETS_DIR", root .. "/no-secret-files", 1)
    ffi.C.setenv("DP_SECRETS_FILE", root .. "/no-store.enc", 1)
    saved_limits = core.script_limits()
    -- small limits keep the hostile cases quick; the defaults are documented
    core.script_limits { seconds = 1, load_seconds = 1, memory_mb = 64 }
  end)
  teardown(function()
    core.script_limits(saved_limits)
    for _, k in ipairs({ "DP_SECRET_EVIL_TOKEN", "DP_SECRET_VICTIM_TOKEN", "DP_SECRETS_DIR", "DP_SECRETS_FILE" }) do
      ffi.C.unsetenv(k)
    end
    engine.all_connectors = false
    core.redact_reset()
    H.sh("rm -rf " .. H.sh_quote(root))
  end)

  it("starts from an engine a plain connector can use", function()
    assert_engine_intact()
  end)

  describe("shared metatables and secret lookup (item 5)", function()
    it("a list in ctx.entity has no metatable to change, and the engine's lookup ignores metatables", function()
      local err = attack_fails([[
    local mt = getmetatable(ctx.entity.columns) or getmetatable(ctx.entity.primary_key)
    if not mt then error("no metatable reachable", 0) end
    mt.__index = function(_, k) if k == "secret" then return "victim_token" end end
    return "changed"
]])
      assert.equal("no metatable reachable", err)
      -- and were a script to set one on its copy, the engine reads its own metadata raw
      evil([[
    setmetatable(ctx.entity.primary_key, { __index = function(_, k) if k == "secret" then return "victim_token" end end })
    setmetatable(ctx.entity, { __index = function() return { secret = "victim_token" } end })
    return "set on my copy"
]])
      local ok, cursor = extract()
      assert.is_true(ok, tostring(cursor))
      assert_engine_intact()
    end)

    it("the engine's dp.schema.array metatable is out of reach through the dp.* modules too", function()
      local err = attack_fails([[
    local models = require "dp.models"
    local v = assert(require("dp.connector").http_fields())
    for _, x in ipairs({ v, models.SYSTEM_FIELDS, models.COLUMN_TYPES, ctx.entities.items.columns }) do
      if getmetatable(x) ~= nil then error("got a metatable", 0) end
    end
    error("none", 0)
]])
      assert.equal("none", err)
      assert_engine_intact()
    end)

    it("a schema function cannot change the metadata the engine is building", function()
      write_connector("evil", [[
return {
  system_schema = {
    fields = {
      { token = { type = "any", custom_validator = function(v)
        if type(v) == "table" then v.secret = "victim_token" end
        return true
      end } },
      { extra = { type = "any", default = function() return setmetatable({}, { __index = function() return "victim_token" end }) end } },
    },
    checks = { function(system) system.token = { secret = "victim_token" } return true end },
  },
  extract = function(ctx)
    local ok, v = pcall(ctx.secret, "victim_token")
    return tostring(ok) .. "|" .. tostring(getmetatable(ctx.system.extra)) .. "|" .. tostring(ctx.system.extra.secret)
  end,
}
]])
      local ok, cursor = extract()
      assert.is_true(ok, tostring(cursor))
      assert.equal("false|nil|nil", cursor)
      assert_engine_intact()
    end)

    it("math.randomseed is not the script's to call", function()
      local err = attack_fails("math.randomseed(42)")
      assert.matches("randomseed", err, 1, true)
      assert_engine_intact()
    end)

    it("ctx.secret serves only the system's own references", function()
      local err = attack_fails('return ctx.secret("victim_token")')
      assert.matches('does not reference a secret named "victim_token"', err, 1, true)
      assert_engine_intact()
    end)

    it("changing ctx.system after the HTTP client was made does not reach the client or other systems", function()
      evil([[
    ctx.system.token = { secret = "victim_token" }
    ctx.system.name = "victim"
    rawset(ctx.entity, "name", "other")
    ctx.entity.primary_key[1] = "pwned"
    return "changed my copy"
]])
      assert.is_true((extract()))
      assert_engine_intact()
    end)
  end)

  describe("the string metatable and shared libraries", function()
    it("getmetatable(\"\") gives nothing, and string.dump is gone, also as (\"\").dump", function()
      local err = attack_fails([[
    local mt = getmetatable("")
    error(tostring(mt) .. "|" .. tostring(("").dump) .. "|" .. tostring(string.dump), 0)
]])
      assert.equal("nil|nil|nil", err)
      assert.equal(false, getmetatable("")) -- protected for the engine's own code too
      assert_engine_intact()
    end)

    it("replacing string.format, table.concat or cjson.encode changes only the script's copies", function()
      evil([[
    string.format = function() return "pwned" end
    string.rep = function() return "pwned" end
    table.concat = function() return "pwned" end
    local cj = require "cjson"
    cj.encode = function() return "pwned" end
    ctx.json.encode = function() return "pwned" end
    require("dp.connector").json_string = function() return "pwned" end
    rawset(string, "sub", function() return "pwned" end)
    return "replaced"
]])
      assert.is_true((extract()))
      assert.equal(real.encode, cjson.encode)
      assert_engine_intact()
      evil([[ return require("dp.connector").json_string("a") ]])
      local ok, cursor = extract()
      assert.is_true(ok)
      assert.equal('"a"', cursor)
    end)

    it("a script's own metatables work as in plain Lua", function()
      evil([[
    local C = {}
    C.__index = C
    function C.name(self) return self.n end
    local o = setmetatable({ n = "obj" }, C)
    local locked = setmetatable({}, { __metatable = "locked" })
    local ok = pcall(setmetatable, locked, {})
    return o:name() .. "|" .. tostring(getmetatable(o) == C) .. "|" .. getmetatable(locked) .. "|" .. tostring(ok)
]])
      local ok, cursor = extract()
      assert.is_true(ok, tostring(cursor))
      assert.equal("obj|true|locked|false", cursor)
    end)

    it("engine objects (ctx.http, ctx.log, dp.* instances) give no metatable, and engine metatables cannot be replaced", function()
      local err = attack_fails([[
    local p = require("dp.paginators").new({ type = "single_page" }, ctx.json)
    local got = { getmetatable(ctx.http), getmetatable(ctx.log), getmetatable(p), getmetatable(ctx.json.null) }
    local ok, e = pcall(setmetatable, p, {})
    error(#got .. "|" .. tostring(ok) .. "|" .. tostring(e), 0)
]])
      assert.matches("^0|false|.*metatable belongs to the engine", err)
      assert_engine_intact()
    end)
  end)

  describe("the classics", function()
    local names = { "load", "loadstring", "dofile", "loadfile", "debug", "ffi", "jit", "package", "setfenv",
      "getfenv", "io", "collectgarbage", "newproxy", "_G", "module", "print" }
    for _, name in ipairs(names) do
      it(name .. " is not there", function()
        local err = attack_fails("local x = " .. name .. "\n    return tostring(x)")
        assert.matches("evil.lua:%d+: undefined global '" .. name:gsub("_", "%%_") .. "'", err)
        assert_engine_intact()
      end)
    end

    for _, call in ipairs({ 'os.execute("true")', "os.exit(0)", 'os.getenv("HOME")', 'os.remove("/tmp/x")' }) do
      it(call .. " is refused", function()
        local err = attack_fails("return " .. call)
        assert.matches("os%.%a+ is not available to scripts %(allowed: os.time, os.date, os.clock%)", err)
        assert_engine_intact()
      end)
    end

    for _, mod in ipairs({ "ffi", "jit", "debug", "io", "os", "dp.core", "dp.engine", "dp.sandbox", "dp.schema", "socket" }) do
      it("require " .. mod .. " is refused", function()
        local err = attack_fails('return require("' .. mod .. '")')
        assert.matches('require: module "' .. mod:gsub("%.", "%%.") .. '" is not available to scripts', err)
        assert_engine_intact()
      end)
    end

    it("precompiled bytecode is refused at load", function()
      local bc = real.dump(function() return 1 end)
      assert.equal("\27LJ", bc:sub(1, 3))
      H.write_file(scripts .. "/connectors/evil.lua", bc)
      local meta, errs = load_meta()
      assert.is_nil(meta)
      assert.matches("evil.lua: precompiled bytecode is not allowed in scripts: ship the Lua source", errs[1], 1, true)
      H.write_file(scripts .. "/connectors/evil.lua", "--\n" .. bc)
      meta, errs = load_meta()
      assert.is_nil(meta)
      assert.matches("evil.lua", errs[1], 1, true)
      assert_engine_intact()
    end)

    it("rawget/rawequal on what the engine handed over reach copies only", function()
      evil([[
    local cols = rawget(ctx.entity, "columns")
    rawset(cols, 1, { name = "pwned", type = "text" })
    rawset(ctx, "secret", nil)
    if rawequal(ctx.entity, ctx.entities.items) then error("shared", 0) end
    return "ok"
]])
      local ok, res = extract()
      assert.is_true(ok, tostring(res))
      assert_engine_intact()
    end)

    it("an error object whose __tostring loops does not run on the engine's path", function()
      local t0 = os.time()
      local err = attack_fails([[
    error(setmetatable({}, { __tostring = function() while true do end end }))
]])
      assert.equal("(error object is a table value)", err)
      assert.is_true(os.time() - t0 < 5)
      assert_engine_intact()
    end)

    it("yielding across the engine fails with a clear error", function()
      local err = attack_fails("coroutine.yield()")
      assert.matches("attempt to yield", err, 1, true)
      err = attack_fails([[
    local co = coroutine.wrap(function() ("abc"):gsub(".", function() coroutine.yield() end) end)
    co()
]])
      assert.matches("attempt to yield across", err, 1, true)
      assert_engine_intact()
    end)
  end)

  describe("time and memory limits (item 6)", function()
    local function limit_error(err, var)
      assert.matches("connectors/evil.lua: extract (system \"evil\", entity \"items\"): stopped: ", err, 1, true)
      assert.matches(var, err, 1, true)
    end

    it("while true do end in extract stops at the deadline, naming the script, system, entity and limit", function()
      local err = attack_fails("while true do end")
      limit_error(err, "time limit of 1 s of CPU time (DP_SCRIPT_TIMEOUT)")
      assert_engine_intact()
    end)

    it("a backtracking pattern in one string.find call stops at the deadline (the matcher checks it)", function()
      for _, body in ipairs({
        'return (("a"):rep(600)):find(("a-"):rep(4) .. "b")',
        'return string.match(("a"):rep(600), ("a*"):rep(5) .. "b")',
        'local n = 0 for _ in (("a"):rep(400)):gmatch(("a-"):rep(4) .. "b") do n = n + 1 end return n',
        'return (("a"):rep(600)):gsub(("a-"):rep(4) .. "b", "x")',
      }) do
        local t0 = core.monotonic()
        local err = attack_fails(body)
        limit_error(err, "time limit of 1 s of CPU time (DP_SCRIPT_TIMEOUT)")
        assert.truthy(core.monotonic() - t0 < 5, body)
      end
      -- and the matcher still matches as the library does
      local cases = {
        { "hello world", "(%w+) (%w+)" }, { "key = value", "^(%w+)%s*=%s*(%w+)$" }, { "[[x]]", "%b[]" },
        { "THE (quick) fox", "%f[%a]%a+" }, { "abc", "()b()" }, { "aaa", "a-" }, { "x=1, y=22", "(%a)=(%d+)" },
      }
      for _, c in ipairs(cases) do
        assert.same({ string.find(c[1], c[2]) }, { core.str_find(c[1], c[2]) }, c[2])
        assert.same({ string.match(c[1], c[2]) }, { core.str_match(c[1], c[2]) }, c[2])
        assert.same({ string.gsub(c[1], c[2], "<%0>") }, { core.str_gsub(c[1], c[2], "<%0>") }, c[2])
        local a, b = {}, {}
        for x in string.gmatch(c[1], c[2]) do a[#a + 1] = x end
        for x in core.str_gmatch(c[1], c[2]) do b[#b + 1] = x end
        assert.same(a, b, c[2])
      end
      assert_engine_intact()
    end)

    it("memory built inside one C call (cjson.decode of many small tables) is capped", function()
      -- (the limits of this block: 1 s, 64 MiB)
      local ok, err = pcall(attack_fails,
        'local i = "[" .. ("[]"):rep(2000, ",") .. "]" return #ctx.json.decode("[" .. i:rep(2000, ",") .. "]")')
      assert.is_true(ok, tostring(err))
      limit_error(err, "memory limit of 64 MiB (DP_SCRIPT_MEMORY)")
      assert_engine_intact()
    end)

    it("time waiting in the engine's own calls is not CPU time; the wall-clock limit is the backstop", function()
      local server = H.http_server()
      local body = [[
    for i = 1, 4 do ctx.http.get("]] .. server.url .. [[/slow?delay=0.4") end
    return "waited"
]]
      evil(body)
      local ok, res = extract() -- 1.6 s of waiting under a 1 s CPU limit
      core.script_limits { wall_seconds = 1 }
      local ok2, err = pcall(attack_fails, body)
      core.script_limits { wall_seconds = 21600 }
      server.stop()
      assert.is_true(ok, tostring(res))
      assert.equal("waited", res)
      assert.is_true(ok2, tostring(err))
      limit_error(err, "the script ran past its wall-clock limit of 1 s (DP_SCRIPT_WALL_TIMEOUT)")
      assert_engine_intact()
    end)

    it("pcall cannot swallow the deadline: it keeps firing", function()
      local err = attack_fails([[
    while true do
      pcall(function() while true do end end)
      pcall(error, "x")
    end
]])
      limit_error(err, "DP_SCRIPT_TIMEOUT")
      err = attack_fails([[
    local ok, e = pcall(function() while true do end end)
    return "swallowed: " .. tostring(e)
]])
      limit_error(err, "DP_SCRIPT_TIMEOUT")
      assert_engine_intact()
    end)

    it("a coroutine does not escape the hook", function()
      local err = attack_fails([[
    local co = coroutine.create(function() while true do end end)
    while true do coroutine.resume(co) end
]])
      limit_error(err, "DP_SCRIPT_TIMEOUT")
      assert_engine_intact()
    end)

    it("a long loop in a gsub callback stops", function()
      local err = attack_fails([[
    local s = ("x"):rep(1000)
    s:gsub(".", function() for i = 1, 1e12 do end end)
]])
      limit_error(err, "DP_SCRIPT_TIMEOUT")
      assert_engine_intact()
    end)

    it("string.rep and table.concat bombs are refused before they allocate", function()
      local err = attack_fails('return ("x"):rep(2^40)')
      assert.matches("string.rep: a result of 1099511627776 bytes is over the script memory limit (DP_SCRIPT_MEMORY)", err, 1, true)
      err = attack_fails('return string.rep("abc", 1e10, ",")')
      assert.matches("over the script memory limit", err, 1, true)
      err = attack_fails([[
    local big = ("x"):rep(1024 * 1024)
    local t = {}
    for i = 1, 100 do t[i] = big end
    return table.concat(t)
]])
      assert.matches("table.concat: the result is over the script memory limit (DP_SCRIPT_MEMORY)", err, 1, true)
      assert_engine_intact()
    end)

    it("growing the heap in a loop stops at the memory cap", function()
      local err = attack_fails([[
    local t = {}
    local s = ("y"):rep(1024)
    for i = 1, 1e9 do t[i] = s .. i end
]])
      limit_error(err, "memory limit of 64 MiB (DP_SCRIPT_MEMORY)")
      err = attack_fails([[
    local s = "x"
    for i = 1, 40 do s = s .. s end
    return #s
]])
      limit_error(err, "DP_SCRIPT_MEMORY")
      collectgarbage()
      assert_engine_intact()
    end)

    it("a loop at a connector's top level stops at the load limit", function()
      evil("return nil", "while true do end")
      local ok, errs = pcall(load_meta)
      assert.is_true(ok)
      local meta, list = errs, select(2, load_meta())
      assert.is_nil(meta)
      assert.matches("connectors/evil.lua: loading the script: stopped: the script ran past its time limit of 1 s of CPU time (DP_SCRIPT_LOAD_TIMEOUT)",
        table.concat(list, "\n"), 1, true)
      assert_engine_intact()
    end)

    it("a disabled system's connector is not loaded by runs; validate checks it under the load limit", function()
      write_connector("sleeper", "while true do end\nreturn {}")
      local texts = cjson.decode(systems_json())
      texts[#texts + 1] = { name = "dormant", type = "sleeper", enabled = false, anything = { x = 1 } }
      local t0 = os.clock()
      local meta, errs = engine.load_metadata_texts({ ["systems.json"] = cjson.encode(texts), ["entities.json"] = ENTITIES })
      assert.is_table(meta, errs and table.concat(errs, "\n"))
      assert.is_true(os.clock() - t0 < 0.9, "the disabled connector ran")
      local dormant
      for _, s in ipairs(meta.systems) do if s.name == "dormant" then dormant = s end end
      assert.same({ x = 1 }, dormant.anything)
      local ok, err = pcall(engine.extract, meta, "dormant", "items", nil, function() end, function() end)
      assert.is_false(ok)
      assert.matches('system "dormant" is disabled', tostring(err), 1, true)
      engine.all_connectors = true
      meta, errs = engine.load_metadata_texts({ ["systems.json"] = cjson.encode(texts), ["entities.json"] = ENTITIES })
      engine.all_connectors = false
      assert.is_nil(meta)
      assert.matches("sleeper.lua: loading the script: stopped: .*DP_SCRIPT_LOAD_TIMEOUT", table.concat(errs, "\n"))
      assert_engine_intact()
    end)

    it("a function a script hands the engine runs under the limits: schema validators, ctx.on_commit", function()
      write_connector("evil", [[
return {
  system_schema = { fields = { { token = { type = "any", custom_validator = function() while true do end end } } } },
  extract = function(ctx) end,
}
]])
      local meta, errs = load_meta()
      assert.is_nil(meta)
      assert.matches("systems.json%[0%]%.token: .*evil%.lua: system_schema: stopped: .*DP_SCRIPT_TIMEOUT", table.concat(errs, "\n"))

      evil([[ ctx.on_commit(function() while true do end end) return "x" ]])
      local ok, res = extract()
      assert.is_true(ok, tostring(res))
      local failures = engine.after_commit("evil", "items")
      assert.equal(1, #failures)
      assert.matches("ctx.on_commit function: stopped: the script ran past its time limit", failures[1], 1, true)
      engine.discard_pending()
      assert_engine_intact()
    end)

    it("gold scripts: a looping top level, sql(ref) or rows(ctx) stops with the model named", function()
      H.write_file(scripts .. "/gold/top.lua", "while true do end")
      local script, err = gold.compile(scripts .. "/gold/top.lua")
      assert.is_nil(script)
      assert.matches("top.lua: loading the script: stopped: .*DP_SCRIPT_LOAD_TIMEOUT", err)

      H.write_file(scripts .. "/gold/rows.lua", "return { rows = function(ctx) while true do end end }")
      script = assert(gold.compile(scripts .. "/gold/rows.lua"))
      local model = { name = "looper", columns = { { name = "id", type = "text" } }, depends_on = {}, primary_key = {} }
      local ok, berr = pcall(gold.build, model, script, {}, { log = function() end, open_reader = function() error("unused") end })
      assert.is_false(ok)
      assert.matches('gold model looper: .*rows.lua: rows%(ctx%): stopped: the script ran past its time limit', tostring(berr))

      H.write_file(scripts .. "/gold/sql.lua", "return { sql = function(ref) while true do end end }")
      script = assert(gold.compile(scripts .. "/gold/sql.lua"))
      local sql, serr = gold.render_sql(model, script)
      assert.is_nil(sql)
      assert.matches("sql%(ref%): stopped: .*DP_SCRIPT_TIMEOUT", serr)
      assert_engine_intact()
    end)

    it("limits come from DP_SCRIPT_TIMEOUT / DP_SCRIPT_LOAD_TIMEOUT / DP_SCRIPT_MEMORY with documented defaults", function()
      local rc, out = H.sh("cd " .. H.sh_quote(H.root) .. " && luajit -e 'package.cpath=\"build/?.so;\"..package.cpath "
        .. "local l = require(\"dp.core\").script_limits() print(l.seconds, l.load_seconds, l.memory_mb)'")
      assert.equal(0, rc)
      assert.equal("300\t10\t1024", (out:gsub("%s+$", "")))
      rc, out = H.sh("cd " .. H.sh_quote(H.root) .. " && luajit -e 'package.cpath=\"build/?.so;\"..package.cpath "
        .. "print(require(\"dp.core\").script_limits().wall_seconds)'")
      assert.equal("21600", (out:gsub("%s+$", "")))
      rc, out = H.sh("cd " .. H.sh_quote(H.root) .. " && DP_SCRIPT_TIMEOUT=2.5 DP_SCRIPT_MEMORY=100 luajit -e "
        .. "'package.cpath=\"build/?.so;\"..package.cpath local l = require(\"dp.core\").script_limits() print(l.seconds, l.memory_mb)'")
      assert.equal("2.5\t100", (out:gsub("%s+$", "")))
      rc, out = H.sh("cd " .. H.sh_quote(H.root) .. " && DP_SCRIPT_TIMEOUT=soon luajit -e "
        .. "'package.cpath=\"build/?.so;\"..package.cpath print(require(\"dp.core\").script_call(\"x.lua: extract\", \"call\", function() end))'")
      assert.equal('false\tx.lua: extract: DP_SCRIPT_TIMEOUT: "soon" is not a positive number\tconfig', (out:gsub("%s+$", "")))
    end)

    it("the sandbox works again after every limit (nothing left half set)", function()
      assert.is_nil(core.script_memory_left())
      assert_engine_intact()
    end)
  end)
end)
