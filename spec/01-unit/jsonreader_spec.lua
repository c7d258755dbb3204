-- dp.jsonreader: the strict JSON reader for metadata files. Each case is what a user would see
-- for a file they got wrong: file:line:column, the JSON path, and the rule in words.
local reader = require "dp.jsonreader"
local schema = require "dp.schema"

local function err(text)
  local v, e = reader.decode(text, "systems.json")
  assert.is_nil(v, "expected an error for " .. text)
  return e
end

describe("the metadata JSON reader", function()
  it("decodes JSON, keeping null, and empty objects apart from empty arrays", function()
    local v = assert(reader.decode('[{"a": null, "b": {}, "c": [], "d": [1, -2.5, 1e3, true, false, "x\\u00e9\\ud83d\\ude00"]}]', "f.json"))
    assert.equal(schema.null, v[1].a)
    assert.equal("object", schema.kind(v[1].b))
    assert.equal("array", schema.kind(v[1].c))
    assert.equal("an empty object", schema.describe(v[1].b))
    assert.equal("an empty array", schema.describe(v[1].c))
    assert.same({ 1, -2.5, 1000, true, false, "xé😀" }, v[1].d)
    assert.equal(9007199254740991, reader.decode("[9007199254740991]")[1])
  end)

  it("says what is wrong with a syntax error in words, with line, column and path", function()
    assert.equal('systems.json:2:39: at [0]: a comma before "}": remove the trailing comma',
      err('[\n  { "name": "bank", "type": "inline", }\n]'))
    assert.equal('systems.json:1:4: a comma before "]": remove the trailing comma', err("[1,]"))
    assert.equal('systems.json:1:10: at [0]: expected ":" after the member name "name", found "1"', err('[{"name" 1}]'))
    assert.equal('systems.json:1:4: expected "," or "]" after element [0], found "2"', err("[1 2]"))
    assert.equal("systems.json:1:8: at [0].a: expected a value, found True (JSON's literals are true, false and null, in lowercase)",
      err('[{"a": True}]'))
    assert.equal("systems.json:1:2: at [0]: expected a value, found ' (strings use double quotes)", err("['x']"))
    assert.equal("systems.json:2:1: at [0]: expected a value, found / (JSON has no comments)", err("[\n// c\n1]"))
    assert.equal("systems.json:1:4: unexpected x after the end of the JSON value", err("[] x"))
    assert.equal("systems.json:1:1: the file is empty: expected a JSON value", err(""))
    assert.equal("systems.json:1:7: at [0]: the file ends inside the object that starts at line 1, column 2 (is the file cut short?)",
      err('[{"a":'))
    assert.equal('systems.json:1:3: at [0]: a string that is never closed (no ending ")', err('[ "abc'))
    assert.equal("systems.json:1:5: at [0]: a line break inside a string: write it escaped (\\n, \\t, \\uXXXX), or close the string with \"",
      err('[ "a\nb" ]'))
  end)

  it("never shows lua-cjson's token names or character offsets", function()
    for _, text in ipairs({ "[", "]", "[}", "{", '{"a"}', '{"a":}', "[1,,2]", '{"a":1,}', "[nul]", "[-]", '"\\x"' }) do
      local e = err(text)
      assert.matches("^systems%.json:%d+:%d+: ", e)
      assert.not_matches("T_[A-Z]", e)
      assert.not_matches("at character", e)
    end
  end)

  it("refuses a key repeated in one object (cjson keeps the last one silently)", function()
    assert.equal('systems.json:3:5: at [0]: duplicate key "enabled" (first at line 2, column 5): a key may appear only once in an object',
      err('[{\n    "enabled": false,\n    "enabled": true\n}]'))
    -- the same key in two objects is fine
    assert.is_table(reader.decode('[{"a":1},{"a":2}]'))
  end)

  it("names the encoding of a file that is not UTF-8", function()
    assert.equal("systems.json:1:1: the file starts with a UTF-8 byte order mark (BOM): save it as UTF-8 without a BOM",
      err("\239\187\191[]"))
    assert.equal("systems.json:1:1: the file is UTF-16 (little-endian), not UTF-8: save it as UTF-8", err("\255\254[\0]\0"))
    assert.equal("systems.json:1:1: the file is UTF-16 (big-endian), not UTF-8: save it as UTF-8", err("\254\255\0[\0]"))
    assert.equal("systems.json:1:1: the file looks like UTF-16 (little-endian), not UTF-8: save it as UTF-8", err("[\0]\0"))
    assert.equal("systems.json:1:1: the file is UTF-32, not UTF-8: save it as UTF-8", err("\255\254\0\0[\0\0\0"))
    assert.equal("systems.json:2:5: invalid UTF-8 (byte 0xE9): a metadata file must be UTF-8 text", err('[\n"caf\233"]'))
    assert.equal("systems.json:1:3: invalid UTF-8 (byte 0xC0): a metadata file must be UTF-8 text", err('["\192\175"]'))
    assert.equal("systems.json:1:3: invalid UTF-8 (byte 0xED): a metadata file must be UTF-8 text", err('["\237\160\128"]'))
    assert.equal("systems.json:1:3: a NUL byte (0x00): a metadata file must be UTF-8 text", err('["\0"]'))
  end)

  it("refuses NUL and lone surrogates written as escapes", function()
    assert.equal("systems.json:1:13: at [0].inbox: \\u0000 (NUL) is not allowed in metadata strings", err('[{"inbox":"a\\u0000b"}]'))
    assert.equal("systems.json:1:3: at [0]: \\ud800 is half of a UTF-16 surrogate pair without its other half", err('["\\ud800"]'))
    assert.equal("systems.json:1:3: at [0]: \\udc00 is half of a UTF-16 surrogate pair without its other half", err('["\\udc00x"]'))
  end)

  it("keeps numbers exact or refuses them, never rounds", function()
    assert.equal("systems.json:1:2: at [0]: 9007199254740993 cannot be kept exactly: metadata numbers must lie within"
      .. " -9007199254740991 and 9007199254740991 (2^53-1); write a larger value as a string", err("[9007199254740993]"))
    assert.matches("18446744073709551616 cannot be kept exactly", err("[18446744073709551616]"), 1, true)
    assert.matches("-1e20 cannot be kept exactly", err("[-1e20]"), 1, true)
    assert.equal("systems.json:1:2: at [0]: 1e400 is too large for a number", err("[1e400]"))
    assert.equal("systems.json:1:2: at [0]: 1e-400 is too small for a number (it would read as 0)", err("[1e-400]"))
    assert.equal(0, reader.decode("[0e-400]")[1])
    assert.equal('systems.json:1:2: at [0]: "01" is not a JSON number', err("[01]"))
    assert.equal('systems.json:1:2: at [0]: "0x10" is not a JSON number', err("[0x10]"))
    assert.equal('systems.json:1:2: at [0]: "1." is not a JSON number', err("[1.]"))
    assert.equal("systems.json:1:2: at [0]: expected a value, found NaN (not a JSON number)", err("[NaN]"))
  end)

  it("limits nesting", function()
    local ok = string.rep("[", reader.MAX_DEPTH) .. string.rep("]", reader.MAX_DEPTH)
    assert.is_table(reader.decode(ok))
    local deep = string.rep("[", reader.MAX_DEPTH + 1) .. string.rep("]", reader.MAX_DEPTH + 1)
    assert.matches("^systems%.json:1:65: at %[0%]%[0%].*: nested deeper than 64 levels$", err(deep))
    -- far deeper input is refused just as plainly (no Lua stack overflow)
    assert.matches("nested deeper than 64 levels$", err(string.rep("[", 100000)))
  end)
end)
