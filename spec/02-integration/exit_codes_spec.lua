-- One exit-code table (DP_ERRNO_MAP in core/error.h, dp_cli_exit in core/cli.c): the same
-- failure gives the same exit code and a "dp-engine CMD: message" line in every command.
local H = require "helpers"

describe("exit codes", function()
  local env, down

  setup(function()
    env = H.fresh_env("exit_codes")
    down = H.with(env, { DP_MONGO_URL = "mongodb://127.0.0.1:1/" }) -- nothing listens on port 1
  end)

  local function check(cmd_label, rc, err)
    assert.equal(1, rc, cmd_label .. ": " .. tostring(err))
    assert.matches("^dp%-engine " .. cmd_label:gsub("%-", "%%-") .. ": cannot reach MongoDB", err)
    local _, lines = err:gsub("\n", "")
    assert.equal(1, lines, err) -- one line, no usage text
  end

  it("MongoDB down: 1 and the reason in run, metadata push and metadata show", function()
    local rc, _, err = H.engine(down, "run", "bank")
    check("run", rc, err)
    rc, _, err = H.engine(down, "metadata", "push")
    check("metadata push", rc, err)
    rc, _, err = H.engine(H.with(down, { DP_METADATA = "mongo" }), "metadata", "show")
    check("metadata show", rc, err)
    rc, _, err = H.engine(H.with(down, { DP_METADATA = "mongo" }), "run", "bank")
    check("run", rc, err)
  end)

  it("invalid metadata: 2 and the command's name in validate, push and show", function()
    local bad = H.with(env, { DP_METADATA = H.root .. "/spec/fixtures/metadata/invalid/column-duplicate" })
    for _, args in ipairs({ { "metadata", "validate" }, { "metadata", "push" }, { "metadata", "show" } }) do
      local rc, _, err = H.engine(bad, args[1], args[2])
      assert.equal(2, rc, err)
      assert.matches("^dp%-engine " .. args[1] .. " " .. args[2] .. ": invalid metadata", err)
    end
  end)
end)
