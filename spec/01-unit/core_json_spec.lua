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

  describe("json_select", function()
    local doc = ' { "data": { "items": [ {"id": 9007199254740993, "v": 1.10}, {"id": 2} ] },'
      .. ' "n\\u00e4me": "x", "dup": 1, "dup": 2, "empty": [], "nil": null } '

    it("returns the compact text of the value at a dotted path, numbers as written", function()
      assert.equal('[{"id":9007199254740993,"v":1.10},{"id":2}]', core.json_select(doc, "data.items"))
      assert.equal("9007199254740993", core.json_select(doc, "data.items.0.id"))
      assert.equal('{"id":2}', core.json_select(doc, "data.items.1"))
      assert.equal("null", core.json_select(doc, "nil"))
      assert.equal("[]", core.json_select(doc, "empty"))
      assert.equal(core.json_compact(doc), core.json_select(doc, ""))
      assert.equal(core.json_compact(doc), core.json_select(doc))
    end)

    it("matches keys written with escapes; the first of duplicate keys wins", function()
      assert.equal('"x"', core.json_select(doc, "n\195\164me"))
      assert.equal("1", core.json_select(doc, "dup"))
    end)

    it("returns nothing for a path that leads nowhere", function()
      for _, path in ipairs({ "missing", "data.items.2", "data.items.x", "data.items.0.id.deeper", "dup.x" }) do
        local v, err = core.json_select(doc, path)
        assert.is_nil(v, path)
        assert.is_nil(err, path)
      end
    end)

    it("validates the whole text first: malformed JSON anywhere is an error with the byte", function()
      local v, err = core.json_select('{"a": 1, "b": [1, 2,]}', "a")
      assert.is_nil(v)
      assert.equal("invalid JSON at byte 21: unexpected character", err)
      v, err = core.json_select('{"a": 1} x', "a")
      assert.is_nil(v)
      assert.equal("invalid JSON at byte 10: unexpected data after the JSON value", err)
    end)
  end)
end)
