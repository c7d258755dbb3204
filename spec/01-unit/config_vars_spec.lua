-- Configuration in one place: the table of environment variables in core/config.h
-- (dp.core.config_vars) is the one docs/index.md's "Configuration (environment)" table shows
-- and the one `dp-engine --help` prints.
local H = require "helpers"
local core = require "dp.core"

-- The variable names in the first column of docs/index.md's configuration table.
local function documented()
  local text = assert(H.read_file("docs/index.md"))
  local section = assert(text:match("\n## Configuration %(environment%)\n(.-)\n## "), "no configuration section")
  local names = {}
  for line in section:gmatch("[^\n]+") do
    local first = line:match("^|([^|]*)|")
    if first then
      for name in first:gmatch("`([%u_][%u%d_<>]*)`") do names[name] = true end
    end
  end
  return names
end

local function in_c()
  local names = {}
  for _, v in ipairs(core.config_vars()) do names[v.name] = v end
  return names
end

describe("configuration table", function()
  it("has a name and a description on every row", function()
    local vars = core.config_vars()
    assert.is_true(#vars > 30)
    for _, v in ipairs(vars) do
      assert.is_string(v.name)
      assert.is_true(#v.description > 0, v.name)
    end
  end)

  it("names every variable docs/index.md documents, and the docs name every one of it", function()
    local doc, c = documented(), in_c()
    local missing_in_docs, missing_in_c = {}, {}
    for name in pairs(c) do if not doc[name] then missing_in_docs[#missing_in_docs + 1] = name end end
    for name in pairs(doc) do if not c[name] then missing_in_c[#missing_in_c + 1] = name end end
    table.sort(missing_in_docs)
    table.sort(missing_in_c)
    assert.same({}, missing_in_docs, "in core/config.h but not in docs/index.md")
    assert.same({}, missing_in_c, "in docs/index.md but not in core/config.h")
  end)

  it("is what `dp-engine --help` prints under Environment", function()
    local rc, out = H.sh(H.sh_quote(H.bin) .. " --help")
    assert.equal(0, rc)
    local env = assert(out:match("\nEnvironment[^\n]*\n(.*)$"))
    local printed = {}
    for line in env:gmatch("[^\n]+") do printed[#printed + 1] = line:match("^  (%S+)") end
    local want = {}
    for _, v in ipairs(core.config_vars()) do want[#want + 1] = v.name end
    assert.same(want, printed)
  end)

  it("covers every variable core/ reads by a literal name", function()
    local c = in_c()
    local p = assert(io.popen("grep -rhoE '(getenv|dp_config_get|dp_config_env|env_num|parse_limit)\\(\"[A-Z_]+\"' core/"))
    local seen = 0
    for name in p:read("*a"):gmatch('"([A-Z_]+)"') do
      seen = seen + 1
      local ok = c[name] or name:match("^DP_TEST_") or name == "TZDIR" or name == "TMPDIR"
      assert.is_truthy(ok, name .. " is read in core/ but not in core/config.h's table")
    end
    p:close()
    assert.is_true(seen > 10)
  end)
end)
