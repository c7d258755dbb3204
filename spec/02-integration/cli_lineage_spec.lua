-- dp-engine lineage (docs/cli.md#lineage): systems -> entities -> gold models from the metadata,
-- each with the status of its last run from the audit, as text, dot, mermaid and JSON.
local H = require "helpers"
local cjson = H.cjson

local DEMO = H.root .. "/metadata/demo"

describe("dp-engine lineage", function()
  local env

  local function graph()
    local rc, out, err = H.engine(env, "lineage", "--json")
    assert.are.equal(0, rc, err)
    local g = H.json_stdout(out)
    local nodes = {}
    for _, n in ipairs(g.nodes) do nodes[n.id] = n end
    return g, nodes
  end

  setup(function()
    env = H.fresh_env("lineage")
  end)

  it("draws the example platform from the metadata, every node never run at first", function()
    local g, nodes = graph()
    assert.are.equal(3 + 7 + 2, #g.nodes)
    for _, n in ipairs(g.nodes) do
      assert.are.equal("never run", n.status, n.id)
      assert.are.equal(cjson.null, n.run_id)
    end
    assert.are.equal("system", nodes["system:bank"].kind)
    assert.are.equal("file", nodes["system:bank"].type)
    assert.are.equal("entity", nodes["entity:fitness.activities"].kind)
    assert.are.equal("gold", nodes["gold:monthly_overview"].kind)
    local edges = {}
    for _, e in ipairs(g.edges) do edges[e.from .. ">" .. e.to] = true end
    assert.is_true(edges["system:bank>entity:bank.transactions"])
    assert.is_true(edges["entity:bank.transactions>gold:monthly_overview"])
    assert.is_true(edges["entity:fitness.activities>gold:monthly_overview"])
    assert.is_true(edges["entity:listening.streams>gold:listening_daily"])
    assert.are.equal(7 + 3, #g.edges)
  end)

  it("shows the status of each node's last run from the audit", function()
    H.fill_inbox(env, "inbox/bank", DEMO .. "/bank/export-1")
    assert.are.equal(0, (H.engine(env, "run", "bank")))
    assert.are.equal(1, (H.engine(env, "gold", "run", "monthly_overview"))) -- fitness never ran
    local _, nodes = graph()
    local pg = H.pg(env)
    local bank = assert(pg:query("SELECT run_id::text AS id FROM audit.system_run WHERE system = 'bank'"))[1].id
    local gold = assert(pg:query("SELECT run_id::text AS id FROM audit.system_run WHERE system = 'monthly_overview'"))[1].id
    pg:close()
    assert.are.equal("succeeded", nodes["system:bank"].status)
    assert.are.equal(bank, nodes["system:bank"].run_id)
    assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%dZ$", nodes["system:bank"].last_run)
    assert.are.equal("succeeded", nodes["entity:bank.transactions"].status)
    assert.are.equal(bank, nodes["entity:bank.accounts"].run_id)
    assert.are.equal("never run", nodes["system:fitness"].status)
    assert.are.equal("failed", nodes["gold:monthly_overview"].status)
    assert.are.equal(gold, nodes["gold:monthly_overview"].run_id)
    assert.are.equal("never run", nodes["gold:listening_daily"].status)
    -- a failed entity: its node says so
    H.write_export(env.DP_DATA_DIR .. "/inbox/bank/transactions-2026-10.jsonl", "{not json\n")
    assert.are.equal(1, (H.engine(env, "run", "bank")))
    _, nodes = graph()
    assert.are.equal("failed", nodes["entity:bank.transactions"].status)
    assert.are.equal("partial", nodes["system:bank"].status)
  end)

  it("prints a readable tree by default", function()
    local rc, out = H.engine(env, "lineage")
    assert.are.equal(0, rc)
    assert.matches("\n  bank %(file%)  partial %d", out)
    assert.matches("\n    bank%.transactions  failed [^\n]*%-> gold%.monthly_overview", out)
    assert.matches("\n  gold%.monthly_overview  failed [^\n]*<%- bank%.transactions, fitness%.activities", out)
    assert.matches("\n  gold%.listening_daily  never run  <%- listening%.streams", out)
  end)

  it("gives Graphviz input that dot renders", function()
    local rc, out = H.engine(env, "lineage", "--format", "dot")
    assert.are.equal(0, rc)
    assert.matches("^digraph lineage {", out)
    assert.matches('"entity:bank.transactions" -> "gold:monthly_overview";', out, 1, true)
    assert.matches('subgraph "cluster_bank"', out, 1, true)
    if H.sh("command -v dot >/dev/null") ~= 0 then
      pending("Graphviz dot is not installed")
      return
    end
    local f = os.tmpname()
    H.write_file(f, out)
    local drc, svg = H.sh("dot -Tsvg " .. H.sh_quote(f) .. " 2>&1")
    os.remove(f)
    assert.are.equal(0, drc, svg)
    assert.matches("<svg", svg, 1, true)
    assert.matches("gold.monthly_overview", svg, 1, true)
  end)

  it("gives a Mermaid flowchart", function()
    local rc, out = H.engine(env, "lineage", "--format", "mermaid")
    assert.are.equal(0, rc)
    assert.matches("^flowchart LR\n", out)
    local edges = 0
    for _ in out:gmatch("\n  n%d+ %-%-> n%d+") do edges = edges + 1 end
    assert.are.equal(10, edges)
    assert.matches('[["gold.monthly_overview<br/>failed"]]', out, 1, true)
    assert.matches("classDef failed fill:", out, 1, true)
  end)

  it("refuses an unknown format (exit 2)", function()
    local rc, _, err = H.engine(env, "lineage", "--format", "png")
    assert.are.equal(2, rc)
    assert.matches("--format takes text, dot or mermaid, not png", err, 1, true)
  end)
end)
