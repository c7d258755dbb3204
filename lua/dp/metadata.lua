-- dp.metadata: loads and validates systems.json, entities.json and gold.json.
--
--   meta, errs = metadata.load_dir(dir, { scripts_dir = "." })
--   meta, errs = metadata.load_texts({ ["systems.json"] = s, ["entities.json"] = e,
--                                      ["gold.json"] = g_or_nil }, opts)
--
-- Returns meta = { hash, texts, systems, entities, gold } (validated, defaults applied, arrays
-- in file order; texts: the exact file texts the hash covers, what `metadata push` stores), or
-- nil and every error as "<file>[<i>].<path>: <message>", sorted by file then position. Never
-- partly applied.
local schema = require "dp.schema"
local models = require "dp.models"
local sandbox = require "dp.sandbox"
local jsonreader = require "dp.jsonreader"

local M = {}
local quote, hint = schema.quote, schema.hint

M.FILES = { "systems.json", "entities.json", "gold.json" }
local RANK = { ["systems.json"] = 1, ["entities.json"] = 2, ["gold.json"] = 3 }

-- Line and column (1-based) of a byte offset in text.
function M.line_col(text, byte)
  local line, col = 1, 1
  for i = 1, math.min(byte - 1, #text) do
    if text:byte(i) == 10 then line, col = line + 1, 1 else col = col + 1 end
  end
  return line, col
end

-- Error collector: each error remembers its file and item position for sorting.
local function collector()
  local list, seq = {}, 0
  local c = {}
  function c.add(file, index, text)
    seq = seq + 1
    list[#list + 1] = { RANK[file] or 9, index or -1, seq, schema.one_line(text) }
  end
  function c.add_all(file, index, texts)
    for _, t in ipairs(texts) do c.add(file, index, t) end
  end
  function c.count() return #list end
  function c.result()
    table.sort(list, function(a, b)
      for i = 1, 3 do if a[i] ~= b[i] then return a[i] < b[i] end end
      return false
    end)
    local out = {}
    for i, e in ipairs(list) do out[i] = e[4] end
    return out
  end
  return c
end

-- Decodes one file with the strict reader (dp.jsonreader: file:line:column messages in words,
-- duplicate keys, BOM / UTF-16, NUL, invalid UTF-8 and inexact numbers refused).
local function decode(file, text, errs)
  local v, err = jsonreader.decode(text, file)
  if err then
    errs.add(file, -1, err)
    return nil
  end
  if schema.kind(v) ~= "array" then
    errs.add(file, -1, file .. ": expected a JSON array at the top level, got " .. schema.describe(v))
    return nil
  end
  return v
end

-- The metadata hash: sha256 over "<name> <length>\n<bytes>" for each file in M.FILES order
-- (an absent gold.json counts as empty).
function M.hash(texts)
  local parts = {}
  for _, name in ipairs(M.FILES) do
    local t = texts[name] or ""
    parts[#parts + 1] = name .. " " .. #t .. "\n" .. t
  end
  return require("dp.core").sha256(table.concat(parts))
end

local function name_of(item)
  return type(item) == "table" and type(item.name) == "string" and item.name or nil
end

-- Cycles in a graph given as nodes (ordered names) and edges[name] = { names }. Returns a list
-- of cycles, each an array of names starting at the node that comes first in `nodes`.
local function find_cycles(nodes, edges)
  local order, state, stack, cycles, seen = {}, {}, {}, {}, {}
  for i, n in ipairs(nodes) do order[n] = i end
  local function visit(n)
    state[n] = "open"
    stack[#stack + 1] = n
    for _, m in ipairs(edges[n] or {}) do
      if order[m] then
        if state[m] == "open" then
          local cyc, start = {}, nil
          for i = #stack, 1, -1 do if stack[i] == m then start = i break end end
          for i = start, #stack do cyc[#cyc + 1] = stack[i] end
          local first = 1
          for i, x in ipairs(cyc) do if order[x] < order[cyc[first]] then first = i end end
          local rot = {}
          for i = 0, #cyc - 1 do rot[#rot + 1] = cyc[(first - 1 + i) % #cyc + 1] end
          local sorted = { unpack(rot) }
          table.sort(sorted)
          local key = table.concat(sorted, " ")
          if not seen[key] then
            seen[key] = true
            cycles[#cycles + 1] = rot
          end
        elseif state[m] == nil then
          visit(m)
        end
      end
    end
    stack[#stack] = nil
    state[n] = "done"
  end
  for _, n in ipairs(nodes) do if state[n] == nil then visit(n) end end
  return cycles
end

-- Loads connectors/<type>.lua for each system type; a missing or broken connector is an error
-- at systems.json[i].type (for every system of that type). With opts.connectors = "enabled"
-- (what runs use) a disabled system ("enabled": false) loads no script: its connector's code
-- never runs, and its own attributes are kept as written, checked against the base System model
-- only. Each load runs under DP_SCRIPT_LOAD_TIMEOUT (dp.sandbox).
local function load_connectors(systems, opts, errs)
  local connectors, failed = {}, {}
  for i, s in ipairs(systems) do
    local t = type(s) == "table" and (opts.connectors ~= "enabled" or rawget(s, "enabled") ~= false) and s.type
    if type(t) == "string" and models.connector_type(t) then -- (else: reported by the model)
      if not connectors[t] and not failed[t] then
        local path = (opts.scripts_dir or ".") .. "/connectors/" .. t .. ".lua"
        if not sandbox.read_script(path) then
          failed[t] = "no connector " .. quote(t) .. " (" .. path .. " does not exist)"
        else
          local conn, err = sandbox.load_connector(path)
          connectors[t] = conn
          failed[t] = not conn and ("connector " .. quote(t) .. " is broken: " .. err) or nil
        end
      end
      if failed[t] then errs.add("systems.json", i - 1, "systems.json[" .. (i - 1) .. "].type: " .. failed[t]) end
    end
  end
  return connectors
end

-- Validates one item of a file; a null item is an error, not an absent one (schema.validate
-- treats null as absent, which is right for fields, not for array elements).
local function validate_item(model, item, p)
  if item == schema.null then return nil, { p .. ": expected an object, got null" } end
  return schema.validate(model, item, p)
end

local function validate_systems(systems, connectors, errs)
  local out = {}
  for i, s in ipairs(systems) do
    local p = "systems.json[" .. (i - 1) .. "]"
    local conn = type(s) == "table" and connectors[s.type]
    local v, e
    if conn then
      v, e = validate_item(conn.system_model, s, p)
    elseif schema.kind(s) == "object" or schema.kind(s) == "empty" then
      -- no usable connector (reported above): check the base fields only
      local base = {}
      for _, entry in ipairs(models.SYSTEM_FIELDS) do
        local k = next(entry)
        base[k] = s[k]
      end
      v, e = validate_item(models.System, base, p)
      if v and v.enabled == false and not connectors[s.type] then
        -- a disabled system loads no connector: its own attributes are kept as written
        for k, x in pairs(s) do
          if base[k] == nil and v[k] == nil and type(k) == "string" then v[k] = schema.deep_copy(x) end
        end
      end
    else
      v, e = validate_item(models.System, s, p)
    end
    if e then errs.add_all("systems.json", i - 1, e) end
    out[i] = v or false -- (false, not nil: later loops must see every item)
  end
  return out
end

-- Validates everything; returns meta or nil, errors.
function M.load_texts(texts, opts)
  opts = opts or {}
  local errs = collector()
  -- complete[file]: every item of the file could be named, so "X is not a ..." reference
  -- errors against it are real and not a consequence of another error
  local raw, complete = {}, {}
  for _, file in ipairs(M.FILES) do
    if texts[file] == nil then
      if file ~= "gold.json" then errs.add(file, -1, file .. ": file is missing") end
      raw[file], complete[file] = {}, file == "gold.json"
    else
      raw[file] = decode(file, texts[file], errs)
      complete[file] = raw[file] ~= nil
      raw[file] = raw[file] or {}
      -- (an item that is not an object at all, e.g. null, is an error of its own and names
      -- nothing: it does not switch the reference checks off)
      for _, item in ipairs(raw[file]) do
        if schema.kind(item) == "object"
            and (not name_of(item) or (file == "entities.json" and type(item.system) ~= "string")) then
          complete[file] = false
        end
      end
    end
  end
  local systems_raw, entities_raw, gold_raw = raw["systems.json"], raw["entities.json"], raw["gold.json"]

  local connectors = load_connectors(systems_raw, opts, errs)
  local systems = validate_systems(systems_raw, connectors, errs)

  -- names as written (so an invalid system still counts as existing: no cascading errors)
  local system_at, system_names, system_type = {}, {}, {}
  for i, s in ipairs(systems_raw) do
    local n = name_of(s)
    if n then
      if system_at[n] then
        errs.add("systems.json", i - 1, "systems.json[" .. (i - 1) .. "].name: duplicate system "
          .. quote(n) .. " (also systems.json[" .. system_at[n] .. "])")
      else
        system_at[n], system_names[#system_names + 1], system_type[n] = i - 1, n, s.type
      end
    end
  end

  local entities, entity_at, entity_names = {}, {}, {}
  for i, e in ipairs(entities_raw) do
    local p = "entities.json[" .. (i - 1) .. "]"
    local sys = type(e) == "table" and e.system or nil
    local conn = type(sys) == "string" and connectors[system_type[sys] or false]
    local v, ve = validate_item(conn and conn.entity_model or models.Entity, e, p)
    if ve then errs.add_all("entities.json", i - 1, ve) end
    entities[i] = v or false
    if type(sys) == "string" and not system_at[sys] and sys:match("^[a-z][a-z0-9_]*$")
        and complete["systems.json"] then
      errs.add("entities.json", i - 1, p .. ".system: " .. quote(sys) .. " is not a system in systems.json"
        .. hint(sys, system_names))
    end
    local n = name_of(e)
    if n and type(sys) == "string" then
      local key = sys .. "." .. n
      if entity_at[key] then
        errs.add("entities.json", i - 1, p .. ".name: duplicate entity " .. quote(key)
          .. " (also entities.json[" .. entity_at[key] .. "])")
      else
        entity_at[key], entity_names[#entity_names + 1] = i - 1, key
      end
    end
  end

  -- Silver makes more than a table per entity, in the same PostgreSQL namespace: the view
  -- "<system>__<entity>_current" and the index "<system>__<entity>_key". An entity named like
  -- one of them would collide with it.
  for i, e in ipairs(entities) do
    if e then
      for _, suffix in ipairs({ "_current", "_key" }) do
        local base = e.name:sub(1, -#suffix - 1)
        local other = e.name:sub(-#suffix) == suffix and entity_at[e.system .. "." .. base]
        if other then
          errs.add("entities.json", i - 1, string.format('entities.json[%d].name: %s clashes with the %s silver.%s'
            .. ' of entity %s (entities.json[%d]): choose another name', i - 1, quote(e.name),
            suffix == "_current" and "view" or "index", quote(e.system .. "__" .. e.name), quote(e.system .. "." .. base), other))
        end
      end
    end
  end

  local gold, gold_at, gold_names = {}, {}, {}
  for i, g in ipairs(gold_raw) do
    local p = "gold.json[" .. (i - 1) .. "]"
    local v, ge = validate_item(models.GoldModel, g, p)
    if ge then errs.add_all("gold.json", i - 1, ge) end
    gold[i] = v or false
    local n = name_of(g)
    if n then
      if gold_at[n] then
        errs.add("gold.json", i - 1, p .. ".name: duplicate gold model " .. quote(n)
          .. " (also gold.json[" .. gold_at[n] .. "])")
      elseif system_at[n] then
        errs.add("gold.json", i - 1, p .. ".name: " .. quote(n) .. " is already a system name"
          .. " (systems and gold models share one namespace, for triggers)")
      else
        gold_at[n], gold_names[#gold_names + 1] = i - 1, n
      end
    end
    if v then
      local path = (opts.scripts_dir or ".") .. "/gold/" .. v.script
      if not sandbox.read_script(path) then
        errs.add("gold.json", i - 1, p .. ".script: no gold script " .. quote(v.script) .. " (" .. path .. " does not exist)")
      end
    end
  end

  -- a keyed gold model has the index gold."<name>_pkey": no model may take that name
  for i, g in ipairs(gold) do
    local base = g and g.name:match("^(.+)_pkey$")
    local other = base and gold_at[base]
    if other and gold[other + 1] and #gold[other + 1].primary_key > 0 then
      errs.add("gold.json", i - 1, string.format('gold.json[%d].name: %s clashes with the primary key index'
        .. ' gold.%s of gold model %s (gold.json[%d]): choose another name', i - 1, quote(g.name), quote(g.name),
        quote(base), other))
    end
  end

  -- gold depends_on: entities or gold models; no cycles
  local deps = {}
  for i, g in ipairs(gold) do
    if g and gold_at[g.name] == i - 1 then
      deps[g.name] = {}
      for j, d in ipairs(g.depends_on) do
        local is_entity = d:find(".", 1, true) ~= nil
        local file = is_entity and "entities.json" or "gold.json"
        if not is_entity and gold_at[d] then
          table.insert(deps[g.name], d)
        elseif (is_entity and not entity_at[d] or not is_entity and not gold_at[d]) and complete[file] then
          errs.add("gold.json", i - 1, string.format("gold.json[%d].depends_on[%d]: %s is not %s%s", i - 1, j - 1,
            quote(d), is_entity and "an entity (system.entity) in entities.json" or "a gold model in gold.json",
            hint(d, is_entity and entity_names or gold_names)))
        end
      end
    end
  end
  local dep_cycles = find_cycles(gold_names, deps)
  for _, cyc in ipairs(dep_cycles) do
    cyc[#cyc + 1] = cyc[1]
    errs.add("gold.json", gold_at[cyc[1]], "gold.json[" .. gold_at[cyc[1]] .. "].depends_on: cycle "
      .. table.concat(cyc, " -> "))
  end

  -- "after" triggers name a system or a gold model; together with depends_on they must not
  -- form a loop (each run would start the next forever)
  local runs_after, trigger_at, nodes = {}, {}, {}
  for _, n in ipairs(system_names) do nodes[#nodes + 1] = n end
  for _, n in ipairs(gold_names) do nodes[#nodes + 1] = n end
  local function add_edge(from, to) runs_after[from] = runs_after[from] or {}; table.insert(runs_after[from], to) end
  local function check_triggers(file, list, at)
    for i, item in ipairs(list) do
      if item and at[item.name] == i - 1 then
        for j, t in ipairs(item.triggers) do
          if t.type == "after" then
            local p = string.format("%s[%d].triggers[%d].upstream", file, i - 1, j - 1)
            if system_at[t.upstream] or gold_at[t.upstream] then
              add_edge(t.upstream, item.name)
              trigger_at[t.upstream .. " " .. item.name] = { file, i - 1, p }
            elseif complete["systems.json"] and complete["gold.json"] then
              errs.add(file, i - 1, p .. ": no system or gold model named " .. quote(t.upstream)
                .. hint(t.upstream, nodes))
            end
          end
        end
      end
    end
  end
  check_triggers("systems.json", systems, system_at)
  check_triggers("gold.json", gold, gold_at)
  if #dep_cycles == 0 then
    for i, g in ipairs(gold) do
      if g and gold_at[g.name] == i - 1 then
        for _, d in ipairs(g.depends_on) do
          local up = d:match("^([^.]+)%.") or d
          if system_at[up] or gold_at[up] then add_edge(up, g.name) end
        end
      end
    end
    for _, cyc in ipairs(find_cycles(nodes, runs_after)) do
      -- report at the first "after" trigger on the loop
      local where
      for k = 1, #cyc do
        where = where or trigger_at[cyc[k] .. " " .. cyc[k % #cyc + 1]]
      end
      if not where then -- not reachable (a loop of depends_on only is a cycle above); be safe
        local file = system_at[cyc[1]] and "systems.json" or "gold.json"
        local at = system_at[cyc[1]] or gold_at[cyc[1]]
        where = { file, at, string.format("%s[%d]", file, at) }
      end
      cyc[#cyc + 1] = cyc[1]
      errs.add(where[1], where[2], where[3] .. ": trigger loop " .. table.concat(cyc, " -> ")
        .. " (each run would start the next forever)")
    end
  end

  if errs.count() > 0 then return nil, errs.result() end
  local kept = {}
  for _, file in ipairs(M.FILES) do kept[file] = texts[file] end
  return { hash = M.hash(texts), texts = kept, systems = systems, entities = entities, gold = gold }
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Reads the three files from dir (gold.json optional) and validates them.
function M.load_dir(dir, opts)
  local texts = {}
  for _, name in ipairs(M.FILES) do texts[name] = read(dir .. "/" .. name) end
  local missing = {}
  for _, name in ipairs({ "systems.json", "entities.json" }) do
    if texts[name] == nil then missing[#missing + 1] = name .. ": cannot read " .. dir .. "/" .. name end
  end
  if #missing > 0 then return nil, missing end
  return M.load_texts(texts, opts)
end

-- Lookups over a loaded meta.
function M.find_system(meta, name)
  for _, s in ipairs(meta.systems) do if s.name == name then return s end end
end

function M.find_entity(meta, system, name)
  for _, e in ipairs(meta.entities) do if e.system == system and e.name == name then return e end end
end

function M.find_gold(meta, name)
  for _, g in ipairs(meta.gold) do if g.name == name then return g end end
end

return M
