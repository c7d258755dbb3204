-- The redaction registry (core/redact.c) through dp.core, and its use by dp_err_set / dp_log
-- (seen through dp.core functions whose errors come from C).
local H = require "helpers"
local core = H.core

describe("redaction", function()
  before_each(function() core.redact_reset() end)
  after_each(function() core.redact_reset() end)

  it("does nothing while no value is registered", function()
    assert.equal(0, core.redact_count())
    assert.same({ "token abcdef", 0 }, { core.redact("token abcdef") })
  end)

  it("replaces every occurrence of a registered value by [redacted:LABEL]", function()
    assert.is_true(core.redact_register("abcdef123", "gh_token"))
    assert.equal(1, core.redact_count())
    assert.same({ "a [redacted:gh_token] b [redacted:gh_token]abc", 2 },
      { core.redact("a abcdef123 b abcdef123abc") })
    assert.same({ "[redacted]", 1 }, { (function()
      core.redact_register("zzzz-unlabelled") return core.redact("zzzz-unlabelled") end)() })
  end)

  it("matches the JSON-escaped and URL-encoded forms too", function()
    core.redact_register('p/w"x y', "pw")
    local text = table.concat({ 'raw p/w"x y', 'cjson p\\/w\\"x y', 'json p/w\\"x y', "url p%2Fw%22x%20y" }, "|")
    local out, n = core.redact(text)
    assert.equal("raw [redacted:pw]|cjson [redacted:pw]|json [redacted:pw]|url [redacted:pw]", out)
    assert.equal(4, n)
    -- what a connector's table record turns into
    local encoded = H.cjson.encode({ t = 'p/w"x y' })
    assert.equal('{"t":"[redacted:pw]"}', (core.redact(encoded)))
  end)

  it("replaces the longer of two overlapping values whole", function()
    core.redact_register("secret", "short")
    core.redact_register("secret-and-more", "long")
    assert.equal("x [redacted:long] y [redacted:short]", (core.redact("x secret-and-more y secret")))
  end)

  it("refuses values shorter than 4 bytes, and counts a value once", function()
    local ok, err = core.redact_register("abc")
    assert.is_nil(ok)
    assert.equal("values shorter than 4 bytes are not redacted", err)
    core.redact_register("abcd", "a")
    core.redact_register("abcd", "a")
    assert.equal(1, core.redact_count())
  end)

  it("keeps binary values and text around them intact", function()
    core.redact_register("\0\1\2\3\255", "bin")
    assert.equal("a\0[redacted:bin]b", (core.redact("a\0\0\1\2\3\255b")))
  end)

  it("redacts C error messages (dp_err_set), also where they are cut to size", function()
    local value = string.rep("v", 60) .. "-SECRET-TAIL"
    core.redact_register(value, "long")
    -- raw_open's error comes from dp_err_set and names the folder it could not create
    local _, err = core.raw_open("/proc/no-such-" .. value .. "/f.jsonl")
    assert.matches("cannot create folder /proc/no-such-[redacted:long]", err, 1, true)
    -- a message longer than dp_err's 2048 bytes, with the value across the cut
    local _, long = core.raw_open(string.rep("d", 1990) .. value .. "/" .. string.rep("x", 3000) .. "/f")
    assert.matches("^path too long: ddd", long)
    assert.equal(2047, #long)
    assert.is_nil(long:find("vvvv", 1, true), "half a value survived the cut")
    assert.is_nil(long:find("SECRET", 1, true))
  end)
end)
