-- The C/Lua boundary in one module (docs/architecture.md, "The boundary between C and Lua"):
-- only core/luabridge.c and the files that implement dp.core's own functions touch the Lua
-- stack or call into the engine's Lua; every other C file reaches Lua through the bridge.
local H = require "helpers"

-- dp.core's own functions (the module and the *_lua_register parts of other concerns)
local DP_CORE = {
  ["luabridge.c"] = true, ["luamod.c"] = true, ["config.c"] = true, ["cron.c"] = true, ["gold.c"] = true,
  ["http.c"] = true, ["inbox.c"] = true, ["luapattern.c"] = true, ["secretlookup.c"] = true,
}
-- what other files may still name: the state's life, not its stack
local LIFECYCLE = { lua_close = true }

local function c_files()
  local rc, out = H.sh("ls " .. H.sh_quote(H.root .. "/core") .. "/*.c")
  assert(rc == 0, out)
  local files = {}
  for path in out:gmatch("[^\n]+") do files[#files + 1] = path end
  return files
end

describe("the C/Lua boundary", function()
  it("only the bridge and dp.core's own functions use the Lua C API", function()
    local offenders = {}
    for _, path in ipairs(c_files()) do
      local name = path:match("([^/]+)$")
      if not DP_CORE[name] then
        local text = assert(H.read_file(path))
        local n = 0
        for line in (text .. "\n"):gmatch("(.-)\n") do
          n = n + 1
          for fn in line:gmatch("%f[%w_](luaL?_[%w_]+)%s*%(") do
            if not LIFECYCLE[fn] then offenders[#offenders + 1] = name .. ":" .. n .. ": " .. fn end
          end
          if line:find("lauxlib.h", 1, true) then offenders[#offenders + 1] = name .. ":" .. n .. ": lauxlib.h" end
        end
      end
    end
    assert.same({}, offenders)
  end)

  it("calls into the engine's Lua only through dp_engine_call", function()
    local found = {}
    for _, path in ipairs(c_files()) do
      local text = assert(H.read_file(path))
      for _ in text:gmatch('lua_getglobal%(L, "__dp_engine"%)') do found[#found + 1] = path:match("([^/]+)$") end
    end
    -- luabridge.c: dp_engine_call itself, and setting the all_connectors flag on the module
    assert.same({ "luabridge.c", "luabridge.c" }, found)
  end)
end)
