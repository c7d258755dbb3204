-- dp.core JSON scanner: validates, compacts and splits JSON while keeping number text exact.
local core = require "dp.core"

describe("JSON scanner", function()
  it("compacts and keeps numbers exactly as written", function()
    assert.are.equal('{"a":[1,2.50,9007199254740993,-0.0,1e400],"b":"x y"}',
      core.json_compact(' { "a" : [ 1 , 2.50, 9007199254740993, -0.0, 1e400 ] ,\n "b" : "x y" } '))
    assert.are.equal('"123456789012345678901234567890.123"', core.json_compact(' "123456789012345678901234567890.123" '))
  end)

  it("names the byte where the input goes wrong", function()
    local cases = {
      { '{"a": 1,}', "invalid JSON at byte 9: expected a string key" },
      { '{"a" 1}', "invalid JSON at byte 6: expected ':'" },
      { '[1, 2', "invalid JSON at byte 6: expected ',' or ']'" },
      { '{"a": tru}', "invalid JSON at byte 7: unexpected character" },
      { '{"a": 01}', "invalid JSON at byte 8: expected ',' or '}'" },
      { '{"a": "x\ty"}', "invalid JSON at byte 9: control character in string (escape it)" },
      { '{"a": "\\q"}', "invalid JSON at byte 8: bad escape in string" },
      { '{"a": "\255"}', "invalid JSON at byte 8: invalid UTF-8 in string" },
      { '{} {}', "invalid JSON at byte 4: unexpected data after the JSON value" },
      { '', "invalid JSON at byte 1: unexpected end of input" },
      { '{"a": 1.}', "invalid JSON at byte 9: bad number: digits expected after '.'" },
    }
    for _, c in ipairs(cases) do
      local ok, err = core.json_compact(c[1])
      assert.is_nil(ok, c[1])
      assert.are.equal(c[2], err, c[1])
    end
  end)

  it("refuses nesting deeper than 512", function()
    local ok, err = core.json_compact(string.rep("[", 600) .. string.rep("]", 600))
    assert.is_nil(ok)
    assert.matches("nesting too deep", err)
  end)

  it("splits a top-level array into compact elements", function()
    assert.are.same({ '{"a":1}', '{"b":[]}', '2' }, core.json_array_elements(' [ {"a": 1} ,\n {"b": [ ]}, 2 ] '))
    assert.are.same({}, core.json_array_elements('[]'))
    local ok, err = core.json_array_elements('{"a": 1}')
    assert.is_nil(ok)
    assert.are.equal("invalid JSON at byte 1: expected a top-level array", err)
    ok, err = core.json_array_elements('[{"a": 1}, {"b": }]')
    assert.is_nil(ok)
    assert.are.equal("invalid JSON at byte 18: unexpected character", err)
  end)
end)
