-- The schema DSL: each rule accepts what it should and rejects the rest with an exact message.
local schema = require "dp.schema"
local cjson = require "cjson"

local function errors_of(def, value, prefix)
  local out, errs = schema.validate(def, value, prefix)
  assert.is_nil(out)
  return errs
end

local function record(fields, extra)
  local def = { type = "record", fields = fields }
  for k, v in pairs(extra or {}) do def[k] = v end
  return def
end

describe("schema DSL", function()
  describe("scalar types", function()
    it("accepts a string and rejects other kinds", function()
      assert.equal("x", schema.validate({ type = "string" }, "x"))
      assert.same({ "expected a string, got 5" }, errors_of({ type = "string" }, 5))
      assert.same({ "name: expected a string, got true" }, errors_of({ type = "string" }, true, "name"))
    end)

    it("treats a JSON number with a fraction as not an integer", function()
      assert.equal(3, schema.validate({ type = "integer" }, 3))
      assert.same({ "n: expected an integer, got 1.5" }, errors_of({ type = "integer" }, 1.5, "n"))
      assert.same({ "n: expected an integer, got \"3\"" }, errors_of({ type = "integer" }, "3", "n"))
      assert.equal(3, schema.validate({ type = "integer" }, cjson.decode("3.0")))
    end)

    it("accepts finite numbers only", function()
      assert.equal(1.25, schema.validate({ type = "number" }, 1.25))
      assert.same({ "expected a number, got Infinity" }, errors_of({ type = "number" }, math.huge))
      assert.same({ "expected a number, got NaN" }, errors_of({ type = "number" }, 0 / 0))
    end)

    it("checks booleans", function()
      assert.equal(false, schema.validate({ type = "boolean" }, false))
      assert.same({ "on: expected a boolean, got \"yes\"" }, errors_of({ type = "boolean" }, "yes", "on"))
    end)

    it("checks enums (one_of) on strings, numbers and the enum type", function()
      local def = { type = "string", one_of = { "full", "delta" } }
      assert.equal("delta", schema.validate(def, "delta"))
      assert.same({ 'load_type: "ful" is not one of full, delta' }, errors_of(def, "ful", "load_type"))
      assert.same({ "3 is not one of 1, 2" }, errors_of({ type = "integer", one_of = { 1, 2 } }, 3))
      local enum = { type = "enum", one_of = { "a", 1, true } }
      assert.equal(1, schema.validate(enum, 1))
      assert.same({ '"b" is not one of a, 1, true' }, errors_of(enum, "b"))
    end)

    it("checks between", function()
      local def = { type = "integer", between = { 1, 10 } }
      assert.equal(10, schema.validate(def, 10))
      assert.same({ "x: 0 is not between 1 and 10" }, errors_of(def, 0, "x"))
      assert.same({ "x: 11 is not between 1 and 10" }, errors_of(def, 11, "x"))
    end)

    it("checks string length with len_min, len_max and len", function()
      assert.same({ "s: must have at least 1 character, got 0" }, errors_of({ type = "string", len_min = 1 }, "", "s"))
      assert.same({ "s: must have at most 3 characters, got 4" }, errors_of({ type = "string", len_max = 3 }, "abcd", "s"))
      assert.same({ "s: must have at least 2 characters, got 1" }, errors_of({ type = "string", len = { 2, 4 } }, "a", "s"))
      assert.equal("abc", schema.validate({ type = "string", len = { 2, 4 } }, "abc"))
    end)

    it("checks match (Lua pattern)", function()
      local def = { type = "string", match = "^[a-z]+$" }
      assert.equal("abc", schema.validate(def, "abc"))
      assert.same({ 'code: "aB" does not match the pattern ^[a-z]+$' }, errors_of(def, "aB", "code"))
    end)

    it("runs custom validators after the type checks", function()
      local def = { type = "integer", custom_validator = function(v)
        if v % 2 == 0 then return true end
        return nil, v .. " is odd"
      end }
      assert.equal(4, schema.validate(def, 4))
      assert.same({ "n: 3 is odd" }, errors_of(def, 3, "n"))
      assert.same({ 'n: expected an integer, got "x"' }, errors_of(def, "x", "n"))
    end)

    it("reports a crashing validator as an error instead of crashing", function()
      local errs = errors_of({ type = "string", custom_validator = function() error("boom", 0) end }, "x", "f")
      assert.same({ "f: validator failed: boom" }, errs)
    end)

    it("accepts any JSON value for type any, as a copy", function()
      local input = { a = { 1, 2 } }
      local out = schema.validate({ type = "any" }, input)
      assert.same(input, out)
      assert.are_not.equal(input.a, out.a)
    end)
  end)

  describe("records", function()
    local Person = record({
      { name = { type = "string", required = true } },
      { age = { type = "integer", between = { 0, 150 } } },
      { active = { type = "boolean", default = true } },
      { tags = { type = "list", elements = { type = "string" }, default = {} } },
    })

    it("applies defaults and returns a new table, leaving the input untouched", function()
      local input = { name = "ada" }
      local out = schema.validate(Person, input)
      assert.same({ name = "ada", active = true, tags = {} }, out)
      assert.same({ name = "ada" }, input)
    end)

    it("copies table defaults, so two results never share one", function()
      local a = schema.validate(Person, { name = "a" })
      local b = schema.validate(Person, { name = "b" })
      table.insert(a.tags, "x")
      assert.same({}, b.tags)
    end)

    it("reports a missing required field", function()
      assert.same({ "p.name: required field missing" }, errors_of(Person, {}, "p"))
    end)

    it("treats JSON null as absent", function()
      local out = schema.validate(Person, { name = "ada", age = cjson.null, active = cjson.null })
      assert.same({ name = "ada", active = true, tags = {} }, out)
      assert.same({ "p.name: required field missing" }, errors_of(Person, { name = cjson.null }, "p"))
    end)

    it("rejects unknown keys, with a did-you-mean for a near miss", function()
      assert.same({ "p.name: required field missing", 'p.nmae: unknown field (did you mean "name"?)' },
        errors_of(Person, { nmae = "ada" }, "p"))
      assert.same({ "p.colour: unknown field" }, errors_of(Person, { name = "a", colour = "red" }, "p"))
    end)

    it("collects all errors, in field order, not only the first", function()
      local errs = errors_of(Person, { age = 200, active = "no", tags = { "a", 1 } }, "p")
      assert.same({
        "p.name: required field missing",
        "p.age: 200 is not between 0 and 150",
        'p.active: expected a boolean, got "no"',
        "p.tags[1]: expected a string, got 1",
      }, errs)
    end)

    it("rejects an array where an object is expected", function()
      assert.same({ "p: expected an object, got an array" }, errors_of(Person, { "ada" }, "p"))
    end)

    it("computes function defaults from the other fields", function()
      local def = record({
        { name = { type = "string", required = true } },
        { path = { type = "string", default = function(r) return r.name end } },
      })
      assert.same({ name = "x", path = "x" }, schema.validate(def, { name = "x" }))
      assert.same({ name = "x", path = "y" }, schema.validate(def, { name = "x", path = "y" }))
    end)

    it("runs record checks after the fields, naming the record or a field", function()
      local def = record({
        { lo = { type = "integer", required = true } },
        { hi = { type = "integer", required = true } },
      }, { checks = {
        function(r) if r.lo > r.hi then return nil, { { "hi", "must be >= lo" } } end return true end,
        function(r) if r.lo == r.hi then return nil, "lo and hi are equal" end return true end,
      } })
      assert.same({ lo = 1, hi = 2 }, schema.validate(def, { lo = 1, hi = 2 }))
      assert.same({ "r.hi: must be >= lo" }, errors_of(def, { lo = 3, hi = 2 }, "r"))
      assert.same({ "r: lo and hi are equal" }, errors_of(def, { lo = 2, hi = 2 }, "r"))
      -- checks do not run on a record whose fields are invalid
      assert.same({ "r.hi: required field missing" }, errors_of(def, { lo = 3 }, "r"))
    end)

    it("accepts entity_checks as a synonym of checks", function()
      local def = record({ { a = { type = "integer" } } },
        { entity_checks = { function(r) return r.a ~= 1, "a must not be 1" end } })
      assert.same({ "a must not be 1" }, errors_of(def, { a = 1 }))
    end)
  end)

  describe("lists and maps", function()
    it("validates list elements with 0-based indexes", function()
      local def = { type = "list", elements = { type = "integer" } }
      assert.same({ 1, 2 }, schema.validate(def, { 1, 2 }))
      assert.same({ "xs[1]: expected an integer, got 2.5", "xs[2]: expected an integer, got null" },
        errors_of(def, { 1, 2.5, cjson.null }, "xs"))
      assert.same({ "xs: expected an array, got an object" }, errors_of(def, { a = 1 }, "xs"))
    end)

    it("checks list length and uniqueness", function()
      local def = { type = "list", elements = { type = "string" }, len_min = 1, unique = true }
      assert.same({ "k: must have at least 1 item, got 0" }, errors_of(def, {}, "k"))
      assert.same({ 'k[2]: duplicate value "a" (same as [0])' }, errors_of(def, { "a", "b", "a" }, "k"))
    end)

    it("validates map keys and values", function()
      local def = { type = "map", keys = { type = "string", match = "^%l+$" }, values = { type = "integer" } }
      assert.same({ a = 1 }, schema.validate(def, { a = 1 }))
      assert.same({ 'm["B c"]: invalid key: "B c" does not match the pattern ^%l+$', "m.x: expected an integer, got \"1\"" },
        errors_of(def, { ["B c"] = 1, x = "1" }, "m"))
    end)
  end)

  describe("unions", function()
    local Trigger = {
      type = "union", discriminator = "type",
      choices = {
        schedule = record({ { cron = { type = "string", required = true } } }),
        file = record({ { path = { type = "string", required = true } } }),
      },
    }

    it("picks the record by the discriminator field and keeps it in the result", function()
      assert.same({ type = "file", path = "/in" }, schema.validate(Trigger, { type = "file", path = "/in" }))
    end)

    it("names the discriminator when it is missing or unknown", function()
      assert.same({ "t.type: required field missing" }, errors_of(Trigger, { path = "/in" }, "t"))
      assert.same({ 't.type: "cron" is not one of file, schedule' }, errors_of(Trigger, { type = "cron" }, "t"))
    end)

    it("validates with the chosen record only", function()
      assert.same({ 't.cron: required field missing', 't.path: unknown field' },
        errors_of(Trigger, { type = "schedule", path = "/in" }, "t"))
    end)

    it("picks an alternative by the JSON kind of the value", function()
      local def = { type = "union", alternatives = {
        { type = "string" },
        record({ { secret = { type = "string", required = true } } }),
      } }
      assert.equal("plain", schema.validate(def, "plain"))
      assert.same({ secret = "s" }, schema.validate(def, { secret = "s" }))
      assert.same({ "pw.secrte: unknown field (did you mean \"secret\"?)", "pw.secret: required field missing" },
        (function() local e = errors_of(def, { secrte = "s" }, "pw"); table.sort(e, function(a, b) return a > b end); return e end)())
      assert.same({ "pw: expected a string or an object, got 5" }, errors_of(def, 5, "pw"))
    end)
  end)

  describe("metaschema: schema.define", function()
    local function define_error(def)
      local ok, err = pcall(schema.define, def)
      assert.is_false(ok)
      return err
    end

    it("returns a valid definition", function()
      local def = record({ { a = { type = "string" } } })
      assert.equal(def, schema.define(def))
    end)

    it("rejects an unknown type", function()
      assert.equal('schema.define: a: unknown type "strng" (expected one of any, boolean, enum, integer, list, map, number, record, string, union)',
        define_error(record({ { a = { type = "strng" } } })))
    end)

    it("rejects an unknown attribute with a did-you-mean", function()
      assert.equal('schema.define: a: unknown attribute "requried" for a string field (did you mean "required"?)',
        define_error(record({ { a = { type = "string", requried = true } } })))
      assert.equal('schema.define: a: unknown attribute "between" for a string field',
        define_error(record({ { a = { type = "string", between = { 1, 2 } } } })))
    end)

    it("rejects a default that does not validate", function()
      assert.equal('schema.define: a: default does not validate: expected an integer, got "x"',
        define_error(record({ { a = { type = "integer", default = "x" } } })))
    end)

    it("accepts false as a boolean default, and applies it", function()
      local def = record({ { a = { type = "boolean", default = false } } })
      assert.same({ a = false }, (schema.validate(def, {})))
    end)

    it("rejects malformed attributes", function()
      assert.equal("schema.define: a: between must be { lo, hi } with lo <= hi",
        define_error(record({ { a = { type = "integer", between = { 5, 1 } } } })))
      assert.equal("schema.define: a: match must be a valid Lua pattern",
        define_error(record({ { a = { type = "string", match = "[a-" } } })))
      assert.equal("schema.define: a: one_of value 1 is not a string",
        define_error(record({ { a = { type = "string", one_of = { 1 } } } })))
      assert.equal("schema.define: a: a list field needs elements",
        define_error(record({ { a = { type = "list" } } })))
      assert.equal("schema.define: a: required must be a boolean",
        define_error(record({ { a = { type = "string", required = "yes" } } })))
    end)

    it("rejects malformed record field lists", function()
      assert.equal('schema.define: duplicate field "a"',
        define_error(record({ { a = { type = "string" } }, { a = { type = "string" } } })))
      assert.equal("schema.define: fields[0] must be a table with exactly one { name = field } entry",
        define_error(record({ { a = { type = "string" }, b = { type = "string" } } })))
    end)

    it("checks nested definitions with their path", function()
      assert.equal('schema.define: cols.elements.kind: unknown type "txt" (expected one of any, boolean, enum, integer, list, map, number, record, string, union)',
        define_error(record({ { cols = { type = "list", elements = record({ { kind = { type = "txt" } } }) } } })))
    end)

    it("rejects ambiguous unions", function()
      assert.equal("schema.define: two alternatives accept a JSON number",
        define_error({ type = "union", alternatives = { { type = "integer" }, { type = "number" } } }))
      assert.equal("schema.define: choices must map names to record definitions",
        define_error({ type = "union", discriminator = "type", choices = { a = { type = "string" } } }))
    end)

    it("validate() checks an undefined schema before using it", function()
      assert.has_error(function() schema.validate({ type = "nope" }, 1) end)
    end)
  end)

  describe("helpers", function()
    it("suggests names within Levenshtein distance 2", function()
      assert.equal("name", schema.did_you_mean("nmae", { "name", "type" }))
      assert.equal("primary_key", schema.did_you_mean("primary_keys", { "primary_key", "cursor" }))
      assert.is_nil(schema.did_you_mean("colour", { "name", "type" }))
    end)

    it("writes jq-like paths", function()
      assert.equal("a.b[0]", schema.join(schema.join("a", "b"), 0))
      assert.equal('a["x y"]', schema.join("a", "x y"))
    end)
  end)
  describe("JSON kinds and exact numbers (issue 11)", function()
    it("tells an empty object from an empty array when the reader marked them", function()
      local reader = require "dp.jsonreader"
      local v = reader.decode('{"obj": {}, "arr": []}')
      assert.same({ 'l: expected an array, got an empty object' }, errors_of({ type = "list", elements = { type = "string" } }, v.obj, "l"))
      assert.same({ 'm: expected an object, got an empty array' }, errors_of({ type = "map", values = { type = "string" } }, v.arr, "m"))
      assert.same({ 'r: expected an object, got an empty array' }, errors_of(record({ { a = { type = "string" } } }), v.arr, "r"))
      -- a value of type any keeps them apart through validation and encoding
      local any = reader.decode('{"a": [], "b": {}, "c": [{"d": []}]}')
      assert.equal('{"a":[],"b":{},"c":[{"d":[]}]}', schema.encode(schema.validate({ type = "any" }, any)))
      -- an unmarked empty Lua table still fits both
      assert.same({}, schema.validate({ type = "list", elements = { type = "string" } }, {}))
      assert.same({}, schema.validate({ type = "map", values = { type = "string" } }, {}))
    end)

    it("encodes numbers exactly (cjson keeps 14 digits)", function()
      assert.equal("[9007199254740991,123456789012345.5,0.1,-2]", schema.encode(setmetatable({ 9007199254740991, 123456789012345.5, 0.1, -2 }, schema.ARRAY)))
    end)

    it("keeps every message one line of bounded length, whatever a validator returns", function()
      local def = { type = "string", custom_validator = function(v) return nil, "bad:\n" .. v end }
      local errs = errors_of(def, string.rep("é", 1000), "p")
      assert.equal(schema.MAX_MESSAGE, #errs[1])
      assert.matches("^p: bad:\\u000aé", errs[1])
      assert.matches("é%.%.%.$", errs[1])
    end)

    it("checks multiline in definitions", function()
      assert.has_error(function() schema.define({ type = "string", multiline = "yes" }) end, "schema.define: multiline must be a boolean")
    end)
  end)
end)
