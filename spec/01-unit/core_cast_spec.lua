-- dp.core casting: source values to a column's canonical text (docs/data-types.md).
local core = require "dp.core"

local function cast(col, json)
  local ok, v = core.cast(col, json)
  if ok then return v end
  return nil, v
end

local function fails(col, json, msg)
  local ok, err = core.cast(col, json)
  assert.is_false(ok, json)
  assert.are.equal(msg, err)
end

describe("casting", function()
  it("integers and bigints from numbers and strings, with range checks", function()
    local int, big = { name = "n", type = "integer" }, { name = "n", type = "bigint" }
    assert.are.equal("42", cast(int, "42"))
    assert.are.equal("42", cast(int, '" 42 "'))
    assert.are.equal("-7", cast(int, "-7.0"))
    assert.are.equal("9007199254740993", cast(big, "9007199254740993"))
    assert.are.equal("9223372036854775807", cast(big, '"9223372036854775807"'))
    fails(int, "2147483648", "column n: 2147483648 is out of range for integer")
    fails(big, '"9223372036854775808"', 'column n: "9223372036854775808" is out of range for bigint')
    fails(int, "1.5", "column n: 1.5 is not an integer")
    fails(int, '"12a"', 'column n: "12a" is not an integer')
    fails(int, "true", "column n: true (a boolean) is not a integer")
  end)

  it("decimals at the declared scale, rounding half away from zero, refusing overflow", function()
    local d = { name = "d", type = "decimal", precision = 6, scale = 2 }
    assert.are.equal("12.35", cast(d, '"12.345"'))
    assert.are.equal("-12.35", cast(d, '"-12.345"'))
    assert.are.equal("12.35", cast(d, "12.345"))
    assert.are.equal("1.00", cast(d, "1"))
    assert.are.equal("0.00", cast(d, '"-0.001"'))
    assert.are.equal("1500.00", cast(d, '"1.5e3"'))
    assert.are.equal("9999.99", cast(d, '"9999.994"'))
    fails(d, '"9999.995"', 'column d: "9999.995" does not fit decimal(6,2)')
    fails(d, '"abc"', 'column d: "abc" is not a decimal number')
    local wide = { name = "d", type = "decimal", precision = 38, scale = 8 }
    assert.are.equal("123456789012345678901234567890.12345679", cast(wide, '"123456789012345678901234567890.123456789"'))
  end)

  it("timestamps to UTC with microseconds; dates strictly", function()
    local ts, date = { name = "t", type = "timestamp" }, { name = "d", type = "date" }
    assert.are.equal("2023-12-31T23:00:00.000000Z", cast(ts, '"2024-01-01T00:00:00+01:00"'))
    assert.are.equal("2024-01-01T10:11:12.123456Z", cast(ts, '"2024-01-01 10:11:12.1234567"'))
    assert.are.equal("2024-03-01T00:00:00.000000Z", cast(ts, '"2024-03-01"'))
    assert.are.equal("2023-11-14T22:13:20.000000Z", cast(ts, "1700000000"))
    assert.are.equal("2024-02-29", cast(date, '"2024-02-29"'))
    fails(date, '"2023-02-29"', 'column d: "2023-02-29" is not a date (YYYY-MM-DD)')
    fails(ts, '"yesterday"', 'column t: "yesterday" is not an ISO 8601 timestamp')
    fails(ts, '"2024-01-01T25:00:00Z"', 'column t: "2024-01-01T25:00:00Z" is not an ISO 8601 timestamp')
  end)

  it("booleans from the documented spellings", function()
    local b = { name = "b", type = "boolean" }
    for _, v in ipairs({ "true", '"TRUE"', '"yes"', '"y"', '"t"', '"1"', '"on"', "1" }) do
      assert.are.equal("true", cast(b, v), v)
    end
    for _, v in ipairs({ "false", '"No"', '"n"', '"f"', '"0"', '"off"', "0" }) do
      assert.are.equal("false", cast(b, v), v)
    end
    fails(b, '"maybe"', 'column b: "maybe" is not a boolean (true/false, yes/no, y/n, t/f, 1/0, on/off)')
    fails(b, "2", "column b: 2 is not a boolean (only 0 and 1 are)")
    -- 1.0 and 0.0 are the numbers 1 and 0 (as -7.0 is an integer): same rule, same result
    assert.are.equal("true", cast(b, "1.0"))
    assert.are.equal("false", cast(b, "0.0"))
    fails(b, "0.5", "column b: 0.5 is not a boolean (only 0 and 1 are)")
  end)

  it("strings with a length limit in characters, json, uuid, double", function()
    local s = { name = "s", type = "string", length = 3 }
    assert.are.equal("héé", cast(s, '"héé"'))
    fails(s, '"abcd"', 'column s: "abcd" is 4 characters, longer than string(3)')
    assert.are.equal("12", cast({ name = "s", type = "text" }, "12"))
    fails({ name = "s", type = "text" }, '{"a":1}', "column s: an object is not a text (use a json column)")
    local j = { name = "j", type = "json" }
    assert.are.equal('{"a":[1,2.5,"x"],"b":null}', cast(j, '{"a": [1, 2.5, "x"], "b": null}'))
    assert.are.equal('"text"', cast(j, '"text"'))
    assert.are.equal("6f9619ff-8b86-d011-b42d-00cf4fc964ff", cast({ name = "u", type = "uuid" }, '"6F9619FF-8B86-D011-B42D-00CF4FC964FF"'))
    fails({ name = "u", type = "uuid" }, '"nope"', 'column u: "nope" is not a UUID')
    assert.are.equal("0.1", cast({ name = "f", type = "double" }, "0.1"))
    assert.are.equal("1.5", cast({ name = "f", type = "double" }, '"1.5"'))
  end)

  it("NULL: absent and null are NULL, refused when the column is not nullable", function()
    local ok, v = core.cast({ name = "n", type = "integer" }, "null")
    assert.is_true(ok)
    assert.is_nil(v)
    fails({ name = "n", type = "integer", nullable = false }, "null", "column n: is null but the column is not nullable")
  end)

  it("numbers beyond int64 and double: exact where the column can hold them, refused where not", function()
    local int, big = { name = "n", type = "integer" }, { name = "n", type = "bigint" }
    local dbl, txt, js = { name = "n", type = "double" }, { name = "n", type = "text" }, { name = "n", type = "json" }
    local dec = { name = "n", type = "decimal", precision = 38, scale = 6 }
    -- 2^64, and a number libbson turned into 200376420520689663
    fails(big, "18446744073709551616", 'column n: "18446744073709551616" is out of range for bigint')
    fails(big, "99999999999999999999999", 'column n: "99999999999999999999999" is out of range for bigint')
    fails(int, "18446744073709551616", 'column n: "18446744073709551616" is out of range for integer')
    fails(big, "1.00000000000000000001", 'column n: "1.00000000000000000001" is not an integer')
    fails(big, '"99999999999999999999999999999999999999"', 'column n: "99999999999999999999999999999999999999" is out of range for bigint')
    fails(big, "1e20", "column n: 1e+20 is out of range for bigint")
    assert.are.equal("36893488147419103232", cast(txt, "36893488147419103232"))
    assert.are.equal('{"x":18446744073709551618}', cast(js, '{"x":18446744073709551618}'))
    assert.are.equal("[1e400,0.1,-0]", cast(js, "[1e400,0.1,-0.0]"))
    assert.are.equal("18446744073709551616.000000", cast(dec, "18446744073709551616"))
    assert.are.equal("123456789012345678901234567890.123456", cast(dec, "123456789012345678901234567890.123456"))
    fails(dec, "1e400", 'column n: "1e400" does not fit decimal(38,6)')
    assert.are.equal("0.000000", cast(dec, "1e-400"))
    assert.are.equal("-0.000001", cast(dec, "-0.0000005"))
    fails(dbl, "1e400", 'column n: "1e400" does not fit a double (too large)')
    fails(dbl, "-1e309", 'column n: "-1e309" does not fit a double (too large)')
    fails(dbl, "1e-400", 'column n: "1e-400" is too small for a double (it would be 0)')
    fails(dbl, '"1e-400"', 'column n: "1e-400" is too small for a double (it would be 0)')
    assert.are.equal("1.8446744073709552e+19", cast(dbl, "18446744073709551616"))
    assert.are.equal("100", cast(dbl, "1E+2"))
    assert.are.equal("100", cast(big, "1E+2"))
    assert.are.equal("0", cast(big, "-0"))
  end)

  it("strings holding U+0000: refused by text and json columns, shown escaped in the reason", function()
    fails({ name = "t", type = "text" }, '"a\\u0000b"', 'column t: "a\\0b" contains a NUL character')
    fails({ name = "j", type = "json" }, '{"k":"\\u0000"}', "column j: holds U+0000 (\\u0000), which a json column (PostgreSQL jsonb) cannot")
    fails({ name = "j", type = "json" }, '{"\\u0000":1}', "column j: holds U+0000 (\\u0000), which a json column (PostgreSQL jsonb) cannot")
    assert.are.equal('{"k":"\\\\u0000"}', cast({ name = "j", type = "json" }, '{"k":"\\\\u0000"}'))
    assert.are.equal('{"a.b":{"$x":1,"%":2}}', cast({ name = "j", type = "json" }, '{"a.b":{"$x":1,"%":2}}'))
  end)

  it("records bronze cannot store are refused with the reason and the byte", function()
    local t = { name = "t", type = "text" }
    fails(t, '"\\ud800"', "a lone surrogate (\\ud800-\\udbff without its pair) is not a character at byte 7")
    fails(t, '{"n":1,"n":2}', 'duplicate member "n" (a key may come once per object) at byte 6')
    fails(t, string.rep("[", 98) .. string.rep("]", 98), "nested deeper than 98 levels (the most bronze can store) at byte 103")
    assert.are.equal("\240\159\152\128", cast(t, '"\\ud83d\\ude00"'))
  end)

  it("finds a repeated key in objects of every size (up to 8, 9 to 64, and more keys are checked differently)", function()
    local t, j = { name = "t", type = "text" }, { name = "j", type = "json" }
    local function object(n, again)
      local parts = {}
      for i = 1, n do parts[i] = string.format('"k%d":%d', i, i) end
      if again then parts[#parts + 1] = string.format('"k%d":0', again) end
      return "{" .. table.concat(parts, ",") .. "}"
    end
    for _, n in ipairs({ 3, 8, 9, 20, 63, 64, 65, 200 }) do
      for _, again in ipairs({ 1, math.ceil(n / 2), n }) do
        fails(t, object(n, again), string.format('duplicate member "k%d" (a key may come once per object) at byte 6', again))
      end
      assert.is_string(cast(j, object(n)), n) -- no repeat: accepted
    end
  end)
end)
