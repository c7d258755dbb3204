-- Every ```sh block of README.md and docs/*.md runs, so the docs cannot drift from the code
-- (docs/testing.md, "Doc examples"). A block is run by bash with `set -eo pipefail` in an
-- environment of its page's own: a temporary copy of the repository root (metadata/ copied,
-- the rest linked), the example inboxes filled from metadata/demo/*/export-1, a migrated
-- database, bronze and metadata databases of its own, `dp-engine` on PATH and HOME in the copy.
-- The blocks of one page run in order and share exported variables and files.
--
-- Tags, on the lines right before the opening fence (HTML comments: invisible when rendered):
--   <!-- doc-example: skip: REASON -->     not run; busted lists it as pending with the reason
--   <!-- doc-example: setup: COMMAND -->   COMMAND runs first (e.g. dp-engine run bank)
--   <!-- doc-example: stdin: TEXT -->      TEXT is the block's standard input (what a prompt reads)
-- A failing block fails with the file and line of its fence and the end of its output.
local H = require "helpers"

local TIMEOUT = 180 -- seconds per block

local function files()
  local out = { "README.md" }
  local rc, list = H.sh("cd " .. H.sh_quote(H.root) .. " && ls -1 docs/*.md")
  assert(rc == 0)
  for f in list:gmatch("[^\n]+") do out[#out + 1] = f end
  return out
end

-- The sh blocks of a Markdown text: { line = fence line, text, skip, setup = {}, stdin },
-- or raises "FILE:LINE: ..." for a tag it does not know or a block that never closes.
local function blocks(file, text)
  local out = {}
  for _, b in ipairs(H.markdown_blocks(text)) do
    local doc_tags = {}
    for _, t in ipairs(b.tags) do
      local tag = t.text:match("^<!%-%- doc%-example: (.-) %-%->%s*$")
      if tag then
        local kind, arg = tag:match("^(%a+):%s*(.-)%s*$")
        if not (kind == "skip" or kind == "setup" or kind == "stdin") or arg == "" then
          error(file .. ":" .. t.line .. ": unknown doc-example tag " .. H.cjson.encode(tag)
            .. " (skip: REASON, setup: COMMAND or stdin: TEXT)", 0)
        end
        doc_tags[#doc_tags + 1] = { kind = kind, arg = arg, line = t.line }
      end
    end
    if b.unclosed then
      error(file .. ":" .. b.line .. ": a ```" .. b.lang .. " block that never closes (a closing fence must be ``` alone on its line)", 0)
    end
    if b.fence_inside and b.lang == "sh" then
      error(file .. ":" .. b.fence_inside .. ": a line starting with ``` inside the ```sh block of line " .. b.line
        .. " (a closing fence must be ``` alone on its line)", 0)
    end
    if b.lang == "sh" then
      local block = { line = b.line, text = b.text, setup = {} }
      for _, t in ipairs(doc_tags) do
        if t.kind == "skip" then block.skip = t.arg
        elseif t.kind == "setup" then block.setup[#block.setup + 1] = t.arg
        else block.stdin = t.arg end
      end
      out[#out + 1] = block
    elseif #doc_tags > 0 then
      error(file .. ":" .. doc_tags[1].line .. ": a doc-example tag before a ```" .. b.lang .. " block", 0)
    end
  end
  -- a tag anywhere else (not right before a fence)
  local n = 0
  local fences = {}
  for _, b in ipairs(H.markdown_blocks(text)) do
    for _, t in ipairs(b.tags) do fences[t.line] = true end
  end
  for line in (text .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if line:match("^<!%-%- doc%-example:") and not fences[n] then
      error(file .. ":" .. n .. ": a doc-example tag must be right before a ```sh fence", 0)
    end
  end
  return out
end

-- The environment of one page: see the header.
local function environment(file)
  local tag = file:gsub("%.md$", ""):gsub("^docs/", ""):gsub("[^%w]", "_"):lower()
  local env = H.fresh_env("doc_" .. tag)
  local work = H.tmpdir("doc-" .. tag)
  local q = H.sh_quote
  local root = H.root
  local script = table.concat({
    "set -e",
    "cd " .. q(work),
    "for f in " .. q(root) .. "/* " .. q(root) .. "/.busted " .. q(root) .. "/.ci " .. q(root) .. "/.luacheckrc; do n=$(basename \"$f\");"
      .. " case $n in metadata|data|spec) ;; *) ln -s \"$f\" \"$n\" ;; esac; done",
    "cp -rp " .. q(root .. "/metadata") .. " metadata",
    "mkdir spec bin home",
    "for f in " .. q(root) .. "/spec/*; do n=$(basename \"$f\"); [ \"$n\" = services.sh ] || ln -s \"$f\" \"spec/$n\"; done",
    "ln -s " .. q(H.bin) .. " bin/dp-engine",
    "for s in bank fitness listening; do mkdir -p data/inbox/$s && cp metadata/demo/$s/export-1/* data/inbox/$s/"
      .. " && touch -d '1 minute ago' data/inbox/$s/*; done",
  }, "\n")
  local rc, out = H.sh("bash -c " .. q(script) .. " 2>&1")
  assert(rc == 0, "preparing the environment of " .. file .. " failed: " .. out)
  local vars = {
    DP_POSTGRES_URL = env.DP_POSTGRES_URL, DP_MONGO_URL = env.DP_MONGO_URL, DP_BRONZE_DB = env.DP_BRONZE_DB,
    DP_METADATA_DB = env.DP_METADATA_DB, DP_HOME = work, DP_LOG_LEVEL = "warn", HOME = work .. "/home",
    PATH = work .. "/bin:" .. os.getenv("PATH"), MONGOC_DISABLE_SHM = "1",
  }
  -- spec/services.sh in the copy answers `env` with this environment's services, and runs
  -- nothing else (the real one would start or stop the services every spec shares)
  local env_lines = {}
  for _, k in ipairs({ "DP_POSTGRES_URL", "DP_MONGO_URL" }) do
    env_lines[#env_lines + 1] = "export " .. k .. "=" .. q(vars[k])
  end
  H.write_file(work .. "/spec/services.sh", "#!/usr/bin/env bash\n"
    .. "# doc examples (spec/02-integration/doc_examples_spec.lua): the services of this environment\n"
    .. "case \"$1\" in\n  env) cat <<'EOF'\n" .. table.concat(env_lines, "\n") .. "\nEOF\n  ;;\n"
    .. "  *) echo \"spec/services.sh $1: not run by the doc examples\" >&2; exit 2 ;;\nesac\n")
  H.sh("chmod +x " .. q(work .. "/spec/services.sh"))
  local state = work .. "/.doc-example-state"
  local exports = {}
  for k, v in pairs(vars) do exports[#exports + 1] = "export " .. k .. "=" .. q(v) end
  table.sort(exports)
  H.write_file(state, table.concat(exports, "\n") .. "\n")
  return { work = work, state = state, env = env }
end

-- Runs one block; returns exit code and output.
local function run_block(ctx, b)
  local q = H.sh_quote
  local script = ctx.work .. "/.doc-example.sh"
  local parts = { "source " .. q(ctx.state), "cd " .. q(ctx.work), "set -eo pipefail" }
  for _, s in ipairs(b.setup) do parts[#parts + 1] = s end
  parts[#parts + 1] = b.text
  parts[#parts + 1] = "export -p > " .. q(ctx.state)
  H.write_file(script, table.concat(parts, "\n") .. "\n")
  local stdin = "/dev/null"
  if b.stdin then
    stdin = ctx.work .. "/.doc-example.stdin"
    H.write_file(stdin, b.stdin .. "\n")
  end
  return H.sh("cd " .. q(ctx.work) .. " && env -i bash -c " .. q("source " .. q(ctx.state) .. " && timeout "
    .. TIMEOUT .. " bash " .. q(script)) .. " <" .. q(stdin) .. " 2>&1")
end

local function tail(text, n)
  local lines = {}
  for l in text:gmatch("[^\n]*\n?") do if l ~= "" then lines[#lines + 1] = l end end
  local from = math.max(1, #lines - n + 1)
  return table.concat(lines, "", from)
end

describe("doc examples", function()
  it("every tag is one the runner knows, right before a ```sh fence", function()
    for _, file in ipairs(files()) do
      local ok, err = pcall(blocks, file, H.read_file(H.root .. "/" .. file))
      assert.is_true(ok, tostring(err))
    end
    local function err_of(text)
      local ok, err = pcall(blocks, "x.md", text)
      assert.is_false(ok)
      return err
    end
    assert.are.equal('x.md:1: unknown doc-example tag "sikp: x" (skip: REASON, setup: COMMAND or stdin: TEXT)',
      err_of("<!-- doc-example: sikp: x -->\n```sh\nls\n```\n"))
    assert.are.equal("x.md:1: a doc-example tag must be right before a ```sh fence",
      err_of("<!-- doc-example: skip: x -->\n\ntext\n```sh\nls\n```\n"))
    assert.are.equal("x.md:1: a doc-example tag before a ```json block",
      err_of("<!-- doc-example: skip: x -->\n```json\n{}\n```\n"))
    assert.are.equal("x.md:1: a ```sh block that never closes (a closing fence must be ``` alone on its line)",
      err_of("```sh\nls\n``` text\n"))
    assert.are.same({}, blocks("x.md", "<!-- doc-example: skip: x -->\n```sh\nls\n```\n")[1].setup)
    assert.are.equal("x.md:3: a line starting with ``` inside the ```sh block of line 1 (a closing fence must be ``` alone"
      .. " on its line)", err_of("```sh\nls\n``` text\nmore\n```\n"))
    local b = blocks("x.md", "a\n<!-- doc-example: setup: dp-engine run bank -->\n<!-- doc-example: stdin: v -->\n```sh\nls\n```\n```json\n{}\n```\n")
    assert.are.same({ { line = 4, text = "ls\n", setup = { "dp-engine run bank" }, stdin = "v" } }, b)
  end)

  it("a failing block fails (the runner can fail)", function()
    local ctx = environment("docs/runner-check.md")
    local rc, out = run_block(ctx, { line = 1, text = "echo start\nfalse\necho never\n", setup = {} })
    assert.are_not.equal(0, rc)
    assert.matches("start", out, 1, true)
    assert.is_nil(out:find("never", 1, true))
    rc, out = run_block(ctx, { line = 1, text = "export KEPT=1\nread -r x; echo \"got $x\"\n", setup = {}, stdin = "typed" })
    assert.are.equal(0, rc, out)
    assert.matches("got typed", out, 1, true)
    rc, out = run_block(ctx, { line = 1, text = 'test "$KEPT" = 1 && dp-engine --version\n', setup = {} })
    assert.are.equal(0, rc, out)
    H.sh("rm -rf " .. H.sh_quote(ctx.work))
  end)

  for _, file in ipairs(files()) do
    local text = H.read_file(H.root .. "/" .. file)
    local ok, list = pcall(blocks, file, text)
    if ok and #list > 0 then
      describe(file, function()
        local ctx
        teardown(function()
          if ctx then H.sh("rm -rf " .. H.sh_quote(ctx.work)) end
        end)
        for _, b in ipairs(list) do
          local where = file .. ":" .. b.line
          if b.skip then
            pending(where .. " skipped: " .. b.skip)
          else
            it(where, function()
              ctx = ctx or environment(file)
              local rc, out = run_block(ctx, b)
              assert(rc == 0, where .. ": the sh block failed (exit " .. tostring(rc) .. "); the end of its output:\n"
                .. tail(out, 30))
            end)
          end
        end
      end)
    end
  end
end)
