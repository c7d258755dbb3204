-- dp.lineage: the graph of systems -> entities -> gold models, with the status of each node's last
-- run, as text, Graphviz dot, Mermaid or JSON (`dp-engine lineage`, docs/cli.md#lineage).
-- Trusted engine code: it gets the validated metadata and the statuses the C side read from the
-- audit, and returns the text to print.
local cjson = require("cjson").new()

local M = {}

-- The graph: nodes in metadata order (systems, each followed by its entities, then gold models)
-- and edges system -> entity, input (entity or gold model) -> gold model.
-- status: node id -> { status, last_run, run_id } (ids "system:bank", "entity:bank.transactions",
-- "gold:monthly_overview").
function M.graph(meta, status)
  local nodes, edges = {}, {}
  local function node(kind, id, name, extra)
    local s = status[id] or {}
    local n = { id = id, kind = kind, name = name, status = s.status or "never run",
      last_run = s.last_run or cjson.null, run_id = s.run_id or cjson.null }
    for k, v in pairs(extra or {}) do n[k] = v end
    nodes[#nodes + 1] = n
  end
  for _, sys in ipairs(meta.systems or {}) do
    node("system", "system:" .. sys.name, sys.name, { type = sys.type, enabled = sys.enabled ~= false })
    for _, e in ipairs(meta.entities or {}) do
      if e.system == sys.name then
        local id = "entity:" .. e.system .. "." .. e.name
        node("entity", id, e.system .. "." .. e.name, { enabled = e.enabled ~= false })
        edges[#edges + 1] = { from = "system:" .. sys.name, to = id }
      end
    end
  end
  for _, g in ipairs(meta.gold or {}) do
    node("gold", "gold:" .. g.name, g.name, { materialization = g.materialization })
    for _, d in ipairs(g.depends_on or {}) do
      edges[#edges + 1] = { from = (d:find(".", 1, true) and "entity:" or "gold:") .. d, to = "gold:" .. g.name }
    end
  end
  return { nodes = nodes, edges = edges }
end

local function when(n)
  return n.last_run ~= cjson.null and (" " .. n.last_run) or ""
end

local function text(g)
  local out, by_id, inputs = {}, {}, {}
  for _, n in ipairs(g.nodes) do by_id[n.id] = n end
  for _, e in ipairs(g.edges) do
    inputs[e.to] = inputs[e.to] or {}
    table.insert(inputs[e.to], by_id[e.from] and by_id[e.from].name or e.from:gsub("^%a+:", ""))
  end
  local readers = {}
  for _, e in ipairs(g.edges) do
    if e.to:match("^gold:") then
      readers[e.from] = readers[e.from] or {}
      table.insert(readers[e.from], "gold." .. e.to:sub(6))
    end
  end
  out[#out + 1] = "systems and entities (last run):"
  for _, n in ipairs(g.nodes) do
    if n.kind == "system" then
      out[#out + 1] = ("  %s (%s%s)  %s%s"):format(n.name, n.type or "?", n.enabled and "" or ", disabled", n.status, when(n))
    elseif n.kind == "entity" then
      local to = readers[n.id] and ("  -> " .. table.concat(readers[n.id], ", ")) or ""
      out[#out + 1] = ("    %s  %s%s%s"):format(n.name, n.status, when(n), to)
    end
  end
  out[#out + 1] = "gold models (last run):"
  local any = false
  for _, n in ipairs(g.nodes) do
    if n.kind == "gold" then
      any = true
      out[#out + 1] = ("  gold.%s  %s%s  <- %s"):format(n.name, n.status, when(n), table.concat(inputs[n.id] or {}, ", "))
    end
  end
  if not any then out[#out + 1] = "  (none)" end
  return table.concat(out, "\n") .. "\n"
end

local COLOURS = { succeeded = "#c8e6c9", failed = "#ffcdd2", partial = "#ffe0b2", crashed = "#ffcdd2",
  skipped = "#eeeeee", running = "#bbdefb" }

-- A dot string; "\1" in s becomes dot's line break \n.
local function dq(s) return '"' .. (tostring(s):gsub('[\\"]', "\\%0"):gsub("\1", "\\n")) .. '"' end

local function dot(g)
  local out = { "digraph lineage {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
    '  edge [color="#607d8b"];' }
  for _, n in ipairs(g.nodes) do
    local label = (n.kind == "gold" and "gold." .. n.name or n.name) .. "\1" .. n.status
    local fill = COLOURS[n.status] or "#ffffff"
    local shape = n.kind == "system" and "folder" or n.kind == "gold" and "box3d" or "box"
    local line = ("  %s [label=%s, shape=%s, fillcolor=%s];"):format(dq(n.id), dq(label), shape, dq(fill))
    if n.kind == "system" then
      out[#out + 1] = ("  subgraph %s {"):format(dq("cluster_" .. n.name))
      out[#out + 1] = ('    label=%s; style="rounded,dashed"; color="#90a4ae";'):format(dq(n.name .. " (" .. (n.type or "?") .. ")"))
      out[#out + 1] = "  " .. line
      for _, e in ipairs(g.nodes) do
        if e.kind == "entity" and e.name:sub(1, #n.name + 1) == n.name .. "." then
          out[#out + 1] = ("    %s [label=%s, fillcolor=%s];"):format(dq(e.id), dq(e.name .. "\1" .. e.status),
            dq(COLOURS[e.status] or "#ffffff"))
        end
      end
      out[#out + 1] = "  }"
    elseif n.kind == "gold" then
      out[#out + 1] = line
    end
  end
  for _, e in ipairs(g.edges) do out[#out + 1] = ("  %s -> %s;"):format(dq(e.from), dq(e.to)) end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

local function mermaid(g)
  local ids, count, out = {}, 0, { "flowchart LR" }
  local function mid(id)
    if not ids[id] then count = count + 1; ids[id] = "n" .. count end
    return ids[id]
  end
  local function label(s) return '"' .. tostring(s):gsub('"', "#quot;") .. '"' end
  for _, n in ipairs(g.nodes) do
    local shown = (n.kind == "gold" and "gold." .. n.name or n.name) .. "<br/>" .. n.status
    local open, close = "[", "]"
    if n.kind == "system" then open, close = "[(", ")]" elseif n.kind == "gold" then open, close = "[[", "]]" end
    out[#out + 1] = ("  %s%s%s%s"):format(mid(n.id), open, label(shown), close)
  end
  for _, e in ipairs(g.edges) do out[#out + 1] = ("  %s --> %s"):format(mid(e.from), mid(e.to)) end
  local classes = {}
  for _, n in ipairs(g.nodes) do
    local c = n.status:gsub("%s", "_")
    classes[c] = classes[c] or {}
    table.insert(classes[c], mid(n.id))
  end
  local names = {}
  for c in pairs(classes) do names[#names + 1] = c end
  table.sort(names)
  for _, c in ipairs(names) do
    local list = classes[c]
    if COLOURS[c] then
      out[#out + 1] = ("  classDef %s fill:%s"):format(c, COLOURS[c])
      out[#out + 1] = ("  class %s %s"):format(table.concat(list, ","), c)
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- The graph in format "text" | "dot" | "mermaid" | "json".
function M.render(meta, status, format)
  local g = M.graph(meta, status)
  if format == "dot" then return dot(g) end
  if format == "mermaid" then return mermaid(g) end
  if format == "json" then
    local function arr(t) return #t == 0 and "[]" or cjson.encode(t) end
    return '{"nodes":' .. arr(g.nodes) .. ',"edges":' .. arr(g.edges) .. "}\n"
  end
  return text(g)
end

return M
