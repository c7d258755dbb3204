-- Secrets at run time: core.secret_get's lookup order (environment, secret files, store), and
-- what engine.extract does with { "secret": "name" } references: resolves them for ctx.system,
-- serves ctx.secret only for the system's own references, redacts logs and records, refuses a
-- cursor holding a secret, and leaves the metadata itself unresolved (for metadata push, #3).
local ffi = require "ffi"
local cjson = require "cjson"
local H = require "helpers"
local core = H.core

pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);")
local set = {}
local function setenv(k, v)
  set[k] = true
  if v == nil then ffi.C.unsetenv(k) else ffi.C.setenv(k, v, 1) end
end
local function clear_env()
  for k in pairs(set) do ffi.C.unsetenv(k) end
  set = {}
end

describe("secrets at run time", function()
  local root, dir, keyfile, store

  -- Stores name = value in the store through the real binary.
  local function store_set(name, value)
    local rc, _, err = H.sh("printf %s " .. H.sh_quote(value) .. " | env DP_MASTER_KEY_FILE=" .. H.sh_quote(keyfile)
      .. " DP_SECRETS_FILE=" .. H.sh_quote(store) .. " DP_HOME=" .. H.sh_quote(H.root) .. " "
      .. H.sh_quote(H.bin) .. " secrets set " .. name .. " 2>&1")
    assert(rc == 0, err)
  end

  setup(function()
    root = H.tmpdir("secrets-unit")
    dir, keyfile, store = root .. "/run-secrets", root .. "/master.key", root .. "/data/secrets.enc"
    assert(H.sh("mkdir -p " .. H.sh_quote(dir) .. " && " .. H.sh_quote(H.bin) .. " secrets gen-key > " .. H.sh_quote(keyfile)) == 0)
  end)
  teardown(function() H.sh("rm -rf " .. H.sh_quote(root)) end)
  before_each(function()
    core.redact_reset()
    setenv("DP_SECRETS_DIR", dir)
    setenv("DP_SECRETS_FILE", store)
    setenv("DP_MASTER_KEY_FILE", keyfile)
  end)
  after_each(function()
    clear_env()
    core.redact_reset()
    H.sh("rm -f " .. H.sh_quote(dir) .. "/*")
  end)

  describe("core.secret_get", function()
    it("looks in the environment, then secret files, then the store", function()
      store_set("api.key-1", "from-the-store")
      assert.same({ "from-the-store", "store", store }, { core.secret_get("api.key-1") })
      H.write_file(dir .. "/api.key-1", "from-a-file\n")
      assert.same({ "from-a-file", "file", dir .. "/api.key-1" }, { core.secret_get("api.key-1") })
      setenv("DP_SECRET_API_KEY_1", "from-the-env")
      assert.same({ "from-the-env", "environment", "DP_SECRET_API_KEY_1" }, { core.secret_get("api.key-1") })
      setenv("DP_SECRET_API_KEY_1", "") -- empty counts as unset
      assert.equal("from-a-file", (core.secret_get("api.key-1")))
    end)

    it("registers what it returns for redaction", function()
      setenv("DP_SECRET_GH", "tok-123456")
      assert.equal(0, core.redact_count())
      core.secret_get("gh")
      assert.equal(1, core.redact_count())
      assert.equal("x [redacted:gh]", (core.redact("x tok-123456")))
    end)

    it("says everywhere it looked when a secret is missing, never needing the key for that", function()
      setenv("DP_MASTER_KEY_FILE", nil)
      setenv("DP_SECRETS_FILE", root .. "/none/secrets.enc")
      local v, err = core.secret_get("gh_token")
      assert.is_nil(v)
      assert.equal('secret "gh_token" was not found: no DP_SECRET_GH_TOKEN in the environment, no file '
        .. dir .. "/gh_token, no store at " .. root .. "/none/secrets.enc", err)
      setenv("DP_MASTER_KEY_FILE", keyfile)
      setenv("DP_SECRETS_FILE", store)
      store_set("other", "other-value")
      _, err = core.secret_get("gh_token")
      assert.matches("no secret of that name in the store " .. store, err, 1, true)
    end)

    it("fails clearly when the store exists but the key is missing or wrong", function()
      store_set("other", "other-value")
      setenv("DP_MASTER_KEY_FILE", nil)
      local _, err = core.secret_get("other")
      assert.matches('secret "other": the store ' .. store .. " cannot be opened: no master key", err, 1, true)
      H.write_file(root .. "/wrong.key", string.rep("ab", 32))
      setenv("DP_MASTER_KEY_FILE", root .. "/wrong.key")
      _, err = core.secret_get("other")
      assert.matches("was sealed with another key", err, 1, true)
    end)

    it("never serves the master key file as a secret", function()
      assert(H.sh("cp " .. H.sh_quote(keyfile) .. " " .. H.sh_quote(dir .. "/dp_master_key")) == 0)
      setenv("DP_MASTER_KEY_FILE", dir .. "/dp_master_key")
      local v, err = core.secret_get("dp_master_key")
      assert.is_nil(v)
      assert.equal('secret "dp_master_key": ' .. dir .. "/dp_master_key is the master key file, which is never served as a secret", err)
    end)

    it("drops one trailing newline of a secret file, and refuses bad names", function()
      H.write_file(dir .. "/crlf", "value\r\n\n")
      assert.equal("value\r\n", (core.secret_get("crlf")))
      H.write_file(dir .. "/crlf", "value\r\n")
      assert.equal("value", (core.secret_get("crlf")))
      local _, err = core.secret_get("../etc/passwd")
      assert.equal('"../etc/passwd" is not a secret name: use 1 to 128 letters, digits, _, . and -', err)
      _, err = core.secret_get("..")
      assert.matches("is not a secret name", err)
    end)
  end)

  describe("engine.extract", function()
    local engine, scripts

    setup(function()
      package.loaded["dp.engine"] = nil
      engine = require "dp.engine"
      scripts = root .. "/scripts"
    end)

    -- Two systems: "a" references a_token (token) and shared_key (auth.key); "b" references
    -- b_token. The connector's extract runs `body` (Lua with ctx in scope) for entity "e" of `sys`.
    local function run(sys, body, opts)
      opts = opts or {}
      H.write_file(scripts .. "/connectors/vault.lua", "local function body(ctx) " .. body .. [[

        end
        local models = require "dp.models"
        return {
          system_schema = { fields = {
            { token = models.string_or_secret {} },
            { auth = { type = "record", fields = { { key = models.string_or_secret {} } } } },
          } },
          entity_schema = { fields = { { param = models.string_or_secret {} } } },
          extract = function(ctx) return body(ctx) end,
        }
      ]])
      engine.configure { scripts_dir = scripts, data_dir = root .. "/data" }
      local meta = assert(engine.load_metadata_texts({
        ["systems.json"] = cjson.encode({
          { name = "b", type = "vault", token = { secret = "b_token" } },
          { name = "a", type = "vault", token = { secret = "a_token" }, auth = { key = { secret = "shared_key" } } },
        }),
        ["entities.json"] = cjson.encode({
          { name = "e", system = sys, source = { param = opts.param },
            columns = { { name = "id", type = "bigint" } } },
        }),
      }))
      local batches, logs = {}, {}
      local cursor = engine.extract(meta, sys, "e", nil,
        function(batch) batches[#batches + 1] = batch end,
        function(level, msg) logs[#logs + 1] = level .. " " .. msg end)
      return cursor, batches, logs, meta
    end

    local function run_error(...)
      local ok, err = pcall(run, ...)
      assert.is_false(ok)
      return (tostring(err):gsub("^.-vault%.lua", "vault.lua"))
    end

    before_each(function()
      setenv("DP_SECRET_A_TOKEN", "a-token-value")
      setenv("DP_SECRET_SHARED_KEY", "shared-key/value")
      setenv("DP_SECRET_B_TOKEN", "b-token-value")
    end)

    it("hands the connector the system with references resolved, and ctx.secret for them", function()
      local _, batches, _, meta = run("a", [[
        ctx.emit({ { token_len = #ctx.system.token, key_len = #ctx.system.auth.key,
          same = ctx.secret("a_token") == ctx.system.token and ctx.secret("shared_key") == ctx.system.auth.key } })
      ]])
      assert.same({ token_len = #"a-token-value", key_len = #"shared-key/value", same = true }, cjson.decode(batches[1][1]))
      -- the metadata keeps the references (what metadata push, #3, must send to MongoDB)
      assert.same({ secret = "a_token" }, meta.systems[2].token)
      assert.same({ secret = "shared_key" }, meta.systems[2].auth.key)
    end)

    it("serves a secret the entity's own source references", function()
      setenv("DP_SECRET_PARAM", "param-value")
      local _, batches = run("b", "ctx.emit({ { p = #ctx.entity.source.param, s = #ctx.secret('param') } })",
        { param = { secret = "param" } })
      assert.same({ p = 11, s = 11 }, cjson.decode(batches[1][1]))
    end)

    it("refuses a secret that another system references", function()
      local err = run_error("b", "\nlocal t = ctx.secret('a_token')")
      assert.equal('vault.lua:2: ctx.secret: system "b" does not reference a secret named "a_token" in its metadata'
        .. " (a connector reads only the secrets its own system references)", err)
      assert.matches("expected a secret name", run_error("b", "ctx.secret(nil)"))
    end)

    it("fails with the metadata path and the name when a secret is missing, before the connector runs", function()
      setenv("DP_SECRET_SHARED_KEY", nil)
      setenv("DP_SECRETS_FILE", root .. "/none/secrets.enc")
      local err = run_error("a", "error('the connector ran')")
      assert.equal('systems.json[1].auth.key (system "a"): secret "shared_key" was not found: no DP_SECRET_SHARED_KEY in'
        .. " the environment, no file " .. dir .. "/shared_key, no store at " .. root .. "/none/secrets.enc", err)
      err = run_error("b", "", { param = { secret = "nope" } })
      assert.matches('^entities%.json%[0%]%.source%.param %(system "b"%): secret "nope" was not found', err)
    end)

    it("redacts secret values in emitted records, with one warning", function()
      local _, batches, logs = run("a", [[
        ctx.emit({ { echo = ctx.secret("shared_key") }, '{"raw":"' .. ctx.system.token .. '"}', { clean = 1 } })
        ctx.emit({ { again = ctx.system.token } })
      ]])
      assert.same({ '{"echo":"[redacted:shared_key]"}', '{"raw":"[redacted:a_token]"}', '{"clean":1}' }, batches[1])
      assert.same({ '{"again":"[redacted:a_token]"}' }, batches[2])
      assert.same({
        'warn emit: record 1 of a batch held the value of secret "shared_key"; it was replaced by [redacted:...]'
          .. " before the raw file (later records are redacted without a warning)",
      }, logs)
    end)

    it("refuses a cursor that holds a secret value", function()
      local err = run_error("a", "return 'since=' .. ctx.system.token")
      assert.matches('vault%.lua: extract returned a cursor that contains the value of secret "a_token"', err)
      assert.is_nil(err:find("a-token-value", 1, true))
    end)

    it("leaves systems without references alone", function()
      local _, batches = run("b", "ctx.emit({ { n = 1 } })")
      assert.same({ { '{"n":1}' } }, batches)
    end)
  end)
end)
