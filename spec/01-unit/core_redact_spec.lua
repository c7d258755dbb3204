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

  describe("through escapes", function()
    local R = "[redacted:t]"
    before_each(function() core.redact_register("T\195\182ken-X/42", "t") end) -- "Töken-X/42"

    it("matches every JSON encoding of the value, mixed with raw bytes, in keys and values", function()
      for _, enc in ipairs({
        "T\\u00f6ken-X/42",                                   -- ensure_ascii
        "T\\u00F6ken-X\\/42",                                -- upper-case hex and \/
        "\\u0054\\u00f6\\u006b\\u0065\\u006e\\u002d\\u0058\\u002f\\u0034\\u0032", -- every character
        "T\195\182k\\u0065n-X\\/4\\u0032",                 -- raw UTF-8 and escapes mixed
        "T%c3%b6ken-X%2f42", "T%C3%B6ken-X%2F42", "T%c3%B6ken-X/42", -- URL-encoded, any case, in part
      }) do
        local out, n = core.redact('{"k":"a ' .. enc .. ' b","' .. enc .. '":1}')
        assert.equal('{"k":"a ' .. R .. ' b","' .. R .. '":1}', out, enc)
        assert.equal(2, n, enc)
      end
    end)

    it("matches JSON inside a JSON string, escaped twice or more", function()
      local inner = '{"auth":"T\\u00f6ken-X\\/42"}'
      local once = H.cjson.encode({ body = inner })      -- the inner escapes escaped again
      local twice = H.cjson.encode({ wrapped = once })
      assert.equal('{"body":"{\\"auth\\":\\"' .. R .. '\\"}"}', (core.redact(once)))
      assert.equal(1, select(2, core.redact(twice)))
      assert.same({ "[redacted:t]", 1 }, { core.redact("T\\\\u00f6ken-X/42") }) -- a JSON string of JSON text
      assert.is_nil((core.redact(twice)):find("ken", 1, true))
    end)

    it("replaces whole escapes, so the record stays valid JSON", function()
      local text = '{"a":"x\\u0054\\u00f6ken-X\\/42\\u0021","b":"\\ud83d\\udd11T\\u00f6ken-X/42\\ud83d\\udd11"}'
      local out = core.redact(text)
      assert.equal('{"a":"x' .. R .. '\\u0021","b":"\\ud83d\\udd11' .. R .. '\\ud83d\\udd11"}', out)
      assert.same({ a = "x" .. R .. "!", b = "\240\159\148\145" .. R .. "\240\159\148\145" }, H.cjson.decode(out))
    end)

    it("leaves text alone that only looks like escapes, and values that differ", function()
      for _, text in ipairs({ 'C:\\new\\T\\u00f6ken-X', "T\\u00f6ken-X/43", "100%", "\\u12", "%zz\\",
        'lone \\ud800 surrogate T\\u00f6ken-Y/42' }) do
        assert.same({ text, 0 }, { core.redact(text) }, text)
      end
    end)

    it("keeps the longest of overlapping values whole, across escapes", function()
      core.redact_register("ken-X/42", "short")
      core.redact_register("T\195\182ken-X/42-and-more", "long")
      assert.equal("[redacted:long] [redacted:t] [redacted:short]",
        (core.redact("T\\u00f6ken-X\\/42-and-more T\\u00f6ken-X/42 ken-X\\/42")))
    end)

    it("redacts escaped values in C error messages and log lines too", function()
      local _, err = core.raw_open("/proc/no-such-T%C3%B6ken-X%2F42/f.jsonl")
      assert.matches("cannot create folder /proc/no-such-" .. R, err, 1, true)
    end)
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
