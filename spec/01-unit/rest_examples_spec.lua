-- The GitHub example in metadata/examples/github/ (validated, with the other examples, by
-- spec/02-integration/example_metadata_spec.lua) reads what it promises: with its base URL and
-- token swapped for the HTTP test server's, commits are read per repository.
local cjson = require "cjson"

local H = require "helpers"

describe("metadata/examples/github", function()
  it("reads the commits of each repository with the repository's name copied in", function()
    local server = H.http_server()
    local engine = require "dp.engine"
    engine.configure { scripts_dir = ".", data_dir = H.tmpdir("examples") }
    local dir = "metadata/examples/github/"
    local systems = cjson.decode(H.read_file(dir .. "systems.json"))
    systems[1].base_url = server.url
    systems[1].auth = { type = "bearer", token = "tok-123" }
    systems[1].enabled = true -- the example ships disabled; runs load only enabled systems' connectors
    local meta = assert(engine.load_metadata_texts({
      ["systems.json"] = cjson.encode(systems), ["entities.json"] = H.read_file(dir .. "entities.json"),
    }))
    local records = {}
    local cursor = engine.extract(meta, "github", "commits", nil, function(batch)
      for _, r in ipairs(batch) do records[#records + 1] = cjson.decode(r) end
    end, function() end)
    local requests = server.requests()
    server.stop()
    assert.equal("2024-02-02T00:00:00Z", cursor) -- first page of each repository (no Link header here)
    assert.same({ { "octo/a", "a1" }, { "octo/b", "b1" } },
      { { records[1].repo, records[1].sha }, { records[2].repo, records[2].sha } })
    assert.same({ "/user/repos", "affiliation=owner&per_page=100" }, { requests[1].path, requests[1].query })
    assert.same({ "/repos/octo/a/commits", "per_page=100&since=2024-01-01T00%3A00%3A00Z" },
      { requests[2].path, requests[2].query })
    assert.same({ "Bearer tok-123", "2022-11-28" },
      { requests[2].headers.authorization, requests[2].headers["x-github-api-version"] })
  end)
end)
