-- dp.core raw writer: a reader never sees a partial file under the final name.
local core = require "dp.core"
local H = require "helpers"

describe("raw writer", function()
  local dir
  before_each(function() dir = H.tmpdir("raw") end)
  after_each(function() H.sh("rm -rf " .. H.sh_quote(dir)) end)

  it("writes under a temporary name and renames on commit", function()
    local path = dir .. "/a/b/run.jsonl"
    local w = assert(core.raw_open(path))
    assert(w:append('{"a":1}'))
    assert(w:append('{"a":2}'))
    assert.is_false(H.exists(path))
    assert.is_true(H.exists(w:tmp_path()))
    local tmp = w:tmp_path()
    local info = assert(w:commit())
    assert.is_true(H.exists(path))
    assert.is_false(H.exists(tmp))
    assert.are.equal('{"a":1}\n{"a":2}\n', H.read_file(path))
    assert.are.equal(2, info.records)
    assert.are.equal(16, info.bytes)
    assert.are.equal(core.sha256('{"a":1}\n{"a":2}\n'), info.sha256)
  end)

  it("leaves nothing behind when aborted", function()
    local path = dir .. "/run.jsonl"
    local w = assert(core.raw_open(path))
    assert(w:append('{"a":1}'))
    local tmp = w:tmp_path()
    w:abort()
    assert.is_false(H.exists(path))
    assert.is_false(H.exists(tmp))
  end)

  it("refuses a record with a newline in it", function()
    local w = assert(core.raw_open(dir .. "/run.jsonl"))
    local ok, err = w:append('{"a":\n1}')
    assert.is_nil(ok)
    assert.matches("one line", err)
    w:abort()
  end)

  it("never shows a partial file under the final name when the process is killed", function()
    local path = dir .. "/killed.jsonl"
    -- a writer process that appends forever until it is killed with SIGKILL
    local script = dir .. "/writer.lua"
    H.write_file(script, ([[
      package.cpath = %q .. "/build/?.so;" .. package.cpath
      local core = require "dp.core"
      local w = assert(core.raw_open(%q))
      local f = io.open(%q, "w") f:write("started") f:close()
      while true do w:append('{"n":123456789}') end
    ]]):format(H.root, path, dir .. "/started"))
    H.sh("(luajit " .. H.sh_quote(script) .. " & pid=$!; for i in $(seq 1 100); do [ -f "
      .. H.sh_quote(dir .. "/started") .. " ] && break; sleep 0.05; done; sleep 0.2; kill -9 $pid; wait $pid) 2>/dev/null")
    assert.is_true(H.exists(dir .. "/started"))
    assert.is_false(H.exists(path))
  end)
end)

describe("raw writer, gzip (a path ending in .gz; docs/lifecycle.md)", function()
  it("writes a gzip file whose lines, counts and checksum are those of the plain lines", function()
    local dir = H.tmpdir("rawgz")
    local path = dir .. "/run.jsonl.gz"
    local w = assert(core.raw_open(path))
    local big = '{"a":"' .. string.rep("x", 300 * 1024) .. '"}' -- over the writer's buffer
    assert(w:append('{"a":1}'))
    assert(w:append(big))
    assert(w:append('{"a":2}'))
    local info = assert(w:commit())
    local plain = '{"a":1}\n' .. big .. "\n" .. '{"a":2}\n'
    local rc, out = H.sh("zcat " .. H.sh_quote(path))
    assert.are.equal(0, rc)
    assert.are.equal(plain, out)
    assert.are.equal(3, info.records)
    assert.are.equal(#plain, info.bytes)
    assert.are.equal(core.sha256(plain), info.sha256)
    assert.is_true(#H.read_file(path) < #plain / 10)
    H.sh("rm -rf " .. H.sh_quote(dir))
  end)
end)
