-- dp-engine secrets through the real binary: round trips, the file on disk, keys, a wrong key
-- and a tampered file (clear error, file untouched), rotation, concurrent writers, the prompt.
local H = require "helpers"
local sh_quote = H.sh_quote

describe("dp-engine secrets", function()
  local root, key, env

  -- Runs `dp-engine secrets ...` with env (DP_* only) and stdin text; returns rc, stdout, stderr.
  local function secrets(e, stdin, ...)
    -- (MONGOC_DISABLE_SHM survives the clean environment: see spec/run.sh)
    local parts = { "env -i PATH=\"$PATH\" MONGOC_DISABLE_SHM=1" }
    for k, v in pairs(e) do parts[#parts + 1] = k .. "=" .. sh_quote(v) end
    parts[#parts + 1] = sh_quote(H.bin) .. " secrets"
    for _, a in ipairs({ ... }) do parts[#parts + 1] = sh_quote(a) end
    local inf, errf = os.tmpname(), os.tmpname()
    H.write_file(inf, stdin or "")
    local rc, out = H.sh(table.concat(parts, " ") .. " <" .. sh_quote(inf) .. " 2>" .. sh_quote(errf))
    local err = H.read_file(errf)
    os.remove(inf)
    os.remove(errf)
    return rc, out, err
  end

  local function with(e, extra)
    local out = {}
    for k, v in pairs(e) do out[k] = v end
    for k, v in pairs(extra) do out[k] = v ~= false and v or nil end
    return out
  end

  local function new_key(name)
    local path = root .. "/" .. name
    assert(H.sh("(umask 077; " .. sh_quote(H.bin) .. " secrets gen-key > " .. sh_quote(path) .. ")") == 0)
    return path
  end

  local function mode(path)
    local _, out = H.sh("stat -c %a " .. sh_quote(path))
    return (out:gsub("%s+$", ""))
  end

  before_each(function()
    root = H.tmpdir("secrets-cli")
    key = new_key("master.key")
    env = { DP_HOME = H.root, DP_DATA_DIR = root .. "/data", DP_MASTER_KEY_FILE = key, DP_SECRETS_DIR = root .. "/none" }
  end)
  after_each(function() H.sh("rm -rf " .. sh_quote(root)) end)

  it("sets, gets, lists and removes secrets", function()
    local rc, out, err = secrets(env, "ghp_0123456789abcdef\n", "set", "github_token")
    assert.are.equal(0, rc, err)
    assert.equal("stored secret github_token in " .. root .. "/data/secrets.enc\n", err)
    assert.equal("", out)
    assert.are.equal(0, (secrets(env, "line one\r\nline two\r\n", "set", "multi.line-1")))
    assert.are.equal(0, (secrets(env, "aaaa-first", "set", "a_first")))

    rc, out = secrets(env, nil, "get", "github_token")
    assert.are.equal(0, rc)
    assert.equal("ghp_0123456789abcdef", out) -- exactly: no newline added off a terminal
    assert.equal("line one\r\nline two", select(2, secrets(env, nil, "get", "multi.line-1")))

    rc, out = secrets(env, nil, "list")
    assert.are.equal(0, rc)
    local names = {}
    for line in out:gmatch("[^\n]+") do
      local name, ts = line:match("^(%S+)%s+(%S+)$")
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", ts)
      names[#names + 1] = name
    end
    assert.same({ "a_first", "github_token", "multi.line-1" }, names)
    assert.is_nil(out:find("ghp_", 1, true))

    assert.are.equal(0, (secrets(env, "replaced-value", "set", "github_token")))
    assert.equal("replaced-value", select(2, secrets(env, nil, "get", "github_token")))

    rc, _, err = secrets(env, nil, "rm", "github_token")
    assert.are.equal(0, rc, err)
    rc, _, err = secrets(env, nil, "get", "github_token")
    assert.are.equal(1, rc)
    assert.equal("dp-engine secrets: no secret named github_token in the store " .. root .. "/data/secrets.enc\n", err)
    rc, _, err = secrets(env, nil, "rm", "github_token")
    assert.are.equal(1, rc)
    assert.matches("no secret named github_token", err)
    assert.same({ "a_first", "multi.line-1" }, (function()
      local t = {}
      for n in select(2, secrets(env, nil, "list")):gmatch("(%S+)%s+%S+\n") do t[#t + 1] = n end
      return t
    end)())
  end)

  it("works before the store exists: list is empty, get and rm say there is no store", function()
    local rc, out, err = secrets(env, nil, "list")
    assert.are.equal(0, rc)
    assert.equal("", out)
    assert.matches("no secrets yet: there is no store at", err, 1, true)
    rc, _, err = secrets(env, nil, "get", "x")
    assert.are.equal(1, rc)
    assert.matches("no secret named x: there is no store at " .. root .. "/data/secrets.enc yet", err, 1, true)
    assert.are.equal(1, (secrets(env, nil, "rm", "x")))
  end)

  it("writes a 0600 file with the documented header and no plaintext", function()
    assert.are.equal(0, (secrets(env, "plain-text-needle", "set", "s1")))
    local file = root .. "/data/secrets.enc"
    assert.equal("600", mode(file))
    assert.equal("600", mode(file .. ".lock"))
    local data = H.read_file(file)
    assert.equal("DPSECRET\1", data:sub(1, 9))
    assert.is_nil(data:find("plain-text-needle", 1, true))
    assert.is_nil(data:find("s1", 18, true))
    -- 41 header bytes + 16 tag + content (4 + 1 + 2 + 8 + 4 + 17)
    assert.equal(41 + 16 + 36, #data)
    -- a new nonce for every write
    assert.are.equal(0, (secrets(env, "plain-text-needle", "set", "s1")))
    assert.are_not.equal(data:sub(18, 41), H.read_file(file):sub(18, 41))
    local _, listing = H.sh("ls -A " .. sh_quote(root .. "/data"))
    assert.equal("secrets.enc\nsecrets.enc.lock\n", listing)
    -- a store made readable by others gets a warning
    H.sh("chmod 644 " .. sh_quote(file))
    local _, _, err = secrets(with(env, { DP_LOG_LEVEL = "warn" }), nil, "list")
    assert.matches("can be read by others %(mode 644%)", err)
    assert.are.equal(0, (secrets(env, "v-again", "set", "s1")))
    assert.equal("600", mode(file))
  end)

  it("never takes a value from the command line, and refuses empty values and bad names (exit 2)", function()
    local rc, _, err = secrets(env, "x", "set", "name", "the-value")
    assert.are.equal(2, rc)
    assert.matches("the value is never taken from the command line", err, 1, true)
    rc, _, err = secrets(env, "", "set", "name")
    assert.are.equal(2, rc)
    assert.matches("the value of secret name is empty", err, 1, true)
    rc, _, err = secrets(env, "\n", "set", "name")
    assert.are.equal(2, rc)
    for _, bad in ipairs({ "a b", "../x", "..", string.rep("n", 129), "" }) do
      rc, _, err = secrets(env, "value", "set", bad)
      assert.are.equal(2, rc, bad)
    end
    assert.matches('"a b" is not a secret name', select(3, secrets(env, "value", "set", "a b")), 1, true)
    rc, _, err = secrets(env, string.rep("x", 65537), "set", "big")
    assert.are.equal(2, rc)
    assert.matches("over the 65536-byte limit", err, 1, true)
    assert.are.equal(0, (secrets(env, string.rep("x", 65536), "set", "big")))
    assert.are.equal(65536, #select(2, secrets(env, nil, "get", "big")))
    rc, _, err = secrets(env, nil, "frob")
    assert.are.equal(2, rc)
    assert.matches("unknown secrets command: frob", err)
    assert.are.equal(2, (secrets(env, nil)))
    assert.are.equal(2, (secrets(env, nil, "get")))
    assert.are.equal(2, (secrets(env, nil, "list", "extra")))
    for _, cmd in ipairs({ "set", "get", "list", "rm", "rotate-key", "gen-key" }) do
      local hrc, out = secrets(env, nil, cmd, "--help")
      assert.are.equal(0, hrc, cmd)
      assert.matches("usage: dp%-engine secrets " .. cmd:gsub("%-", "%%-"), out)
    end
  end)

  it("reads the key as base64, hex or 32 raw bytes, from a file or DP_MASTER_KEY", function()
    local raw = root .. "/raw.key"
    assert(H.sh("head -c 32 /dev/urandom > " .. sh_quote(raw)) == 0)
    local _, hex = H.sh("od -An -tx1 " .. sh_quote(raw) .. " | tr -d ' \\n'")
    local _, b64 = H.sh("base64 " .. sh_quote(raw))
    assert.equal(64, #hex)
    local e = with(env, { DP_MASTER_KEY_FILE = raw })
    assert.are.equal(0, (secrets(e, "one-value", "set", "one")))
    H.write_file(root .. "/hex.key", hex .. "\n")
    for _, variant in ipairs({
      { DP_MASTER_KEY_FILE = root .. "/hex.key" },
      { DP_MASTER_KEY_FILE = false, DP_MASTER_KEY = hex },
      { DP_MASTER_KEY_FILE = false, DP_MASTER_KEY = (b64:gsub("%s+$", "")) },
    }) do
      local rc, out, err = secrets(with(env, variant), nil, "get", "one")
      assert.are.equal(0, rc, err)
      assert.equal("one-value", out)
    end
    -- problems with the key are configuration errors (exit 2), and never print key material
    local rc, _, err = secrets(with(env, { DP_MASTER_KEY = hex }), nil, "list")
    assert.are.equal(2, rc)
    assert.matches("both DP_MASTER_KEY_FILE and DP_MASTER_KEY are set", err, 1, true)
    rc, _, err = secrets(with(env, { DP_MASTER_KEY_FILE = false }), nil, "list")
    assert.are.equal(2, rc)
    assert.matches("no master key: set DP_MASTER_KEY_FILE", err, 1, true)
    rc, _, err = secrets(with(env, { DP_MASTER_KEY_FILE = false, DP_MASTER_KEY = hex:sub(1, 62) }), nil, "list")
    assert.are.equal(2, rc)
    assert.matches("DP_MASTER_KEY is not a key: expected 32 bytes written as 44 base64 characters or 64 hex digits (found 62 characters)", err, 1, true)
    assert.is_nil(err:find(hex:sub(1, 62), 1, true))
    rc, _, err = secrets(with(env, { DP_MASTER_KEY_FILE = root .. "/missing.key" }), nil, "list")
    assert.are.equal(2, rc)
    assert.matches("cannot read DP_MASTER_KEY_FILE " .. root .. "/missing.key", err, 1, true)
    H.write_file(root .. "/zero.key", string.rep("0", 64))
    rc, _, err = secrets(with(env, { DP_MASTER_KEY_FILE = root .. "/zero.key" }), "x", "set", "x")
    assert.are.equal(2, rc)
    assert.matches("is all zero bytes", err)
  end)

  it("refuses a wrong key clearly and leaves the file byte-identical", function()
    assert.are.equal(0, (secrets(env, "value-one", "set", "one")))
    local file = root .. "/data/secrets.enc"
    local before = H.read_file(file)
    local wrong = with(env, { DP_MASTER_KEY_FILE = new_key("wrong.key") })
    for _, args in ipairs({ { "get", "one" }, { "list" }, { "set", "two" }, { "rm", "one" } }) do
      local rc, out, err = secrets(wrong, "value-two", unpack(args))
      assert.are.equal(2, rc, args[1])
      assert.equal("", out)
      assert.matches("^dp%-engine secrets: the secret store " .. file:gsub("%p", "%%%0")
        .. " was sealed with another key %(key id %x+; the configured key has id %x+%), or its header is damaged", err)
      assert.equal(before, H.read_file(file), args[1])
    end
    local rc = secrets(with(wrong, { DP_NEW_MASTER_KEY_FILE = new_key("new.key") }), nil, "rotate-key")
    assert.are.equal(2, rc)
    assert.equal(before, H.read_file(file))
    assert.equal("value-one", select(2, secrets(env, nil, "get", "one")))
  end)

  it("detects a tampered or damaged file, and leaves it as it was", function()
    assert.are.equal(0, (secrets(env, "value-one", "set", "one")))
    local file = root .. "/data/secrets.enc"
    local good = H.read_file(file)
    local function flip(s, i) return s:sub(1, i - 1) .. string.char(bit.bxor(s:byte(i), 1)) .. s:sub(i + 1) end
    local cases = {
      { "ciphertext", flip(good, 50), "failed authentication: it was modified or damaged" },
      { "tag", flip(good, #good), "failed authentication" },
      { "nonce", flip(good, 20), "failed authentication" },
      { "version", flip(good, 9), "has format version 0; this dp%-engine reads version 1" },
      { "magic", "X" .. good:sub(2), "is not a dp%-engine secret store %(no DPSECRET header%)" },
      { "cut short", good:sub(1, 50), "is cut short %(50 bytes%)" },
      { "empty", "", "is not a dp%-engine secret store" },
      { "key id", flip(good, 12), "was sealed with another key" },
    }
    for _, c in ipairs(cases) do
      H.write_file(file, c[2])
      for _, args in ipairs({ { "get", "one" }, { "list" }, { "set", "two" }, { "rm", "one" } }) do
        local rc, out, err = secrets(env, "value-two", unpack(args))
        assert.are.equal(c[1] == "key id" and 2 or 1, rc, c[1] .. " " .. args[1])
        assert.equal("", out)
        assert.is_truthy(err:find(c[3]), c[1] .. ": " .. err)
        assert.equal(c[2], H.read_file(file), c[1] .. " " .. args[1] .. ": the file changed")
      end
    end
    H.write_file(file, good)
    assert.equal("value-one", select(2, secrets(env, nil, "get", "one")))
  end)

  it("rotates the key atomically, keeping values and update times", function()
    assert.are.equal(0, (secrets(env, "value-one", "set", "one")))
    assert.are.equal(0, (secrets(env, "value-two", "set", "two")))
    local _, listed = secrets(env, nil, "list")
    local file = root .. "/data/secrets.enc"
    local before = H.read_file(file)
    local newkey = new_key("new.key")
    local rc, out, err = secrets(with(env, { DP_NEW_MASTER_KEY_FILE = newkey }), nil, "rotate-key")
    assert.are.equal(0, rc, err)
    assert.matches("^re%-encrypted 2 secrets in .-secrets%.enc: key id (%x+) %-> (%x+)\n", out)
    assert.are_not.equal(before:sub(10, 17), H.read_file(file):sub(10, 17))
    assert.equal("600", mode(file))
    -- the old key no longer opens it; the new one does, with the same content
    assert.are.equal(2, (secrets(env, nil, "get", "one")))
    local new_env = with(env, { DP_MASTER_KEY_FILE = newkey })
    assert.equal("value-one", select(2, secrets(new_env, nil, "get", "one")))
    assert.equal("value-two", select(2, secrets(new_env, nil, "get", "two")))
    assert.equal(listed, select(2, secrets(new_env, nil, "list")))
    -- refused: no new key, the same key, no store
    rc, _, err = secrets(new_env, nil, "rotate-key")
    assert.are.equal(2, rc)
    assert.matches("no new master key: set DP_NEW_MASTER_KEY_FILE", err, 1, true)
    rc, _, err = secrets(with(new_env, { DP_NEW_MASTER_KEY_FILE = newkey }), nil, "rotate-key")
    assert.are.equal(2, rc)
    assert.matches("is the current key", err, 1, true)
    rc, _, err = secrets(with(new_env, { DP_DATA_DIR = root .. "/empty", DP_NEW_MASTER_KEY_FILE = key }), nil, "rotate-key")
    assert.are.equal(1, rc)
    assert.matches("there is no store at", err, 1, true)
  end)

  it("loses no update when ten `set` run at once", function()
    local parts = {}
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. sh_quote(v) end
    local cmd = "for i in 0 1 2 3 4 5 6 7 8 9; do printf value-$i | env " .. table.concat(parts, " ") .. " "
      .. sh_quote(H.bin) .. " secrets set name$i 2>/dev/null & done; wait"
    assert.are.equal(0, (H.sh(cmd)))
    local _, out = secrets(env, nil, "list")
    local n = 0
    for name in out:gmatch("(name%d)%s") do
      n = n + 1
      assert.equal("value-" .. name:sub(5), select(2, secrets(env, nil, "get", name)))
    end
    assert.equal(10, n, out)
  end)

  it("resolves a name as a run does: environment, then secret files, then the store", function()
    local e = with(env, { DP_SECRETS_DIR = root .. "/run-secrets" })
    assert.are.equal(0, (secrets(e, "from-store", "set", "api.key")))
    local rc, out, err = secrets(e, nil, "get", "api.key", "--resolve")
    assert.are.equal(0, rc, err)
    assert.equal("from-store", out)
    assert.equal("secret api.key came from the store " .. root .. "/data/secrets.enc\n", err)
    H.write_file(root .. "/run-secrets/api.key", "from-file\n")
    rc, out, err = secrets(e, nil, "get", "api.key", "--resolve")
    assert.equal("from-file", out)
    assert.equal("secret api.key came from the file " .. root .. "/run-secrets/api.key\n", err)
    rc, out, err = secrets(with(e, { DP_SECRET_API_KEY = "from-env" }), nil, "get", "--resolve", "api.key")
    assert.equal("from-env", out)
    assert.equal("secret api.key came from the environment variable DP_SECRET_API_KEY\n", err)
    -- the plain `get` reads the store only
    assert.equal("from-store", select(2, secrets(with(e, { DP_SECRET_API_KEY = "from-env" }), nil, "get", "api.key")))
    rc, _, err = secrets(e, nil, "get", "nope", "--resolve")
    assert.are.equal(1, rc)
    assert.matches('secret "nope" was not found: no DP_SECRET_NOPE in the environment, no file '
      .. root .. "/run-secrets/nope, no secret of that name in the store", err, 1, true)
  end)

  it("asks twice on a terminal without echoing the value", function()
    if H.sh("command -v script >/dev/null") ~= 0 then pending("needs script(1)") return end
    local out = root .. "/tty.out"
    H.write_file(out, "")
    -- the feeder waits for each prompt, which appears only once echo is off
    local function wait_for(text)
      return "for i in $(seq 200); do grep -q " .. sh_quote(text) .. " " .. sh_quote(out) .. " && break; sleep 0.05; done; "
    end
    local parts = {}
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. sh_quote(v) end
    local run = "env " .. table.concat(parts, " ") .. " " .. sh_quote(H.bin) .. " secrets set typed"
    local function typed(first, second)
      return H.sh("(" .. wait_for("not shown") .. "printf '%s\\n' " .. sh_quote(first) .. "; " .. wait_for("confirm")
        .. "printf '%s\\n' " .. sh_quote(second) .. ") | script -qfec " .. sh_quote(run) .. " /dev/null > " .. sh_quote(out))
    end
    assert.are.equal(0, (typed("typed-value-42", "typed-value-42")))
    local screen = H.read_file(out)
    assert.matches("Value of secret typed (not shown): ", screen, 1, true)
    assert.matches("Again, to confirm: ", screen, 1, true)
    assert.is_nil(screen:find("typed-value-42", 1, true), "the value was echoed: " .. screen)
    assert.equal("typed-value-42", select(2, secrets(env, nil, "get", "typed")))
    H.write_file(out, "")
    typed("other-value-1", "other-value-2")
    assert.matches("the two values differ; nothing was stored", H.read_file(out), 1, true)
    assert.equal("typed-value-42", select(2, secrets(env, nil, "get", "typed")))
  end)
end)
