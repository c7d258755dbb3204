-- FerretDB tuned for bronze (docker/ferretdb-tuning.sql, applied by spec/services.sh): a new
-- collection gets the GIN index on its _id by the event trigger, FerretDB's lookup by a text _id
-- uses it, and dp_bronze_tuning_check (doctor's check) tells a tuned database from an untuned one.
local H = require "helpers"

-- the URI of another database of the services' PostgreSQL
local function pg_url(db)
  return (os.getenv("DP_POSTGRES_URL"):gsub("/[^/?]*$", "/" .. db))
end

describe("FerretDB tuned for bronze", function()
  local tag = os.getenv("DP_SPEC_TAG")
  local db = "bronze_spec_" .. ((tag and tag ~= "") and (tag .. "_") or "") .. "tuning"
  local m

  setup(function()
    m = H.mongo()
    assert(m:command(db, '{"dropDatabase": 1}'))
  end)

  teardown(function()
    if m then
      m:command(db, '{"dropDatabase": 1}')
      m:close()
    end
  end)

  it("indexes a new collection's _id, and a lookup by a text _id uses the index", function()
    local docs = {}
    for i = 1, 2000 do docs[i] = string.format('{"_id": "%032x", "v": %d}', i, i) end
    assert(m:command(db, '{"insert": "c", "documents": [' .. table.concat(docs, ",") .. ']}'))
    local pg = assert(H.core.pg_connect(pg_url("ferretdb")))
    local idx = assert(pg:query("SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname LIKE '%\\_dp\\_id\\_gin'", db))
    pg:close()
    assert.are.equal(1, #idx)
    assert.matches("USING gin (((_jsonb -> '_id'::text)) jsonb_path_ops)", idx[1].indexdef, 1, true)
    -- no pending list: with it, each lookup also reads every entry not yet merged into the index
    assert.matches("WITH (fastupdate=off)", idx[1].indexdef, 1, true)
    local plan = assert(m:command(db, string.format('{"explain": {"find": "c", "filter": {"_id": "%032x"}}}', 77)))
    assert.matches('"filterPushdown" : true', plan, 1, true)
    assert.matches('"Node Type" : "Bitmap Index Scan"', plan, 1, true)
    assert.matches('_dp_id_gin"', plan, 1, true)
  end)

  it("is what doctor's check finds; an untuned database and no URL are warned about", function()
    local st, msg = m:bronze_tuning(pg_url("ferretdb"))
    assert.are.equal("ok", st, msg)
    assert.matches("bronze is FerretDB v1.24.2: tuned", msg, 1, true)
    -- the engine's own database is not tuned: both things are named, and the fix
    local fix
    st, msg, fix = m:bronze_tuning(pg_url("dp"))
    assert.are.equal("warn", st)
    assert.matches("plan_cache_mode is auto", msg, 1, true)
    assert.matches("no event trigger dp_ferretdb_id_gin", msg, 1, true)
    assert.matches("apply docker/ferretdb-tuning.sql", fix, 1, true)
    st, msg, fix = m:bronze_tuning()
    assert.are.equal("warn", st)
    assert.matches("not checked (DP_FERRETDB_PG_URL is not set)", msg, 1, true)
    assert.matches("set DP_FERRETDB_PG_URL", fix, 1, true)
    st, msg = m:bronze_tuning(pg_url("no_such_database_h19"))
    assert.are.equal("error", st)
    assert.matches("cannot connect to DP_FERRETDB_PG_URL", msg, 1, true)
  end)

  it("turns the pending list off on an index made without it, emptying it, and doctor finds one left with it", function()
    assert(m:command(db, '{"insert": "old", "documents": [{"_id": "a"}]}'))
    local pg = assert(H.core.pg_connect(pg_url("ferretdb")))
    assert(pg:query("CREATE EXTENSION IF NOT EXISTS pgstattuple"))
    local r = assert(pg:query("SELECT x.oid::regclass::text AS idx FROM pg_class x JOIN pg_index i ON i.indexrelid = x.oid "
      .. "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
      .. "WHERE n.nspname = $1 AND t.relname LIKE 'old\\_%' AND x.relname LIKE '%\\_dp\\_id\\_gin'", db))
    assert.are.equal(1, #r)
    local idx = r[1].idx
    local function pending()
      return tonumber(assert(pg:query("SELECT pending_tuples::text AS n FROM pgstatginindex($1::regclass)", idx))[1].n)
    end
    -- as an earlier docker/ferretdb-tuning.sql made it: new entries wait in the pending list
    assert(pg:query("ALTER INDEX " .. idx .. " SET (fastupdate = on)"))
    local docs = {}
    for i = 1, 200 do docs[i] = string.format('{"_id": "k%d"}', i) end
    assert(m:command(db, '{"insert": "old", "documents": [' .. table.concat(docs, ",") .. ']}'))
    assert.is_true(pending() > 0)
    local st, msg = m:bronze_tuning(pg_url("ferretdb"))
    assert.are.equal("warn", st)
    assert.matches("_id indexes with GIN's pending list on (fastupdate)", msg, 1, true)
    -- the tuning function, run again on the table, turns it off and empties the list
    assert(pg:query("SELECT public.dp_ferretdb_id_gin_index(indrelid) FROM pg_index WHERE indexrelid = $1::regclass", idx))
    local opts = assert(pg:query("SELECT array_to_string(reloptions, ',') AS o FROM pg_class WHERE oid = $1::regclass", idx))
    assert.are.equal("fastupdate=off", opts[1].o)
    assert.are.equal(0, pending())
    -- and it made no second index on the table
    assert.are.equal(1, #assert(pg:query("SELECT 1 FROM pg_index WHERE indrelid = (SELECT indrelid FROM pg_index "
      .. "WHERE indexrelid = $1::regclass) AND indexrelid::regclass::text LIKE '%dp_id_gin%'", idx)))
    pg:close()
  end)

  it("is a line of dp-engine doctor", function()
    local env = H.fresh_env("tuning_doctor")
    local rc, out = H.engine(H.with(env, { DP_FERRETDB_PG_URL = pg_url("ferretdb") }), "doctor")
    assert.matches("ok +bronze tuning +bronze is FerretDB v1%.24%.2: tuned", out)
    rc, out = H.engine(H.with(env, { DP_FERRETDB_PG_URL = pg_url(env.DP_POSTGRES_URL:match("/([^/?]+)$")) }), "doctor")
    assert.matches("warn +bronze tuning +bronze is FerretDB v1%.24%.2 without the tuning bronze needs", out)
    assert.matches("fix: apply docker/ferretdb-tuning.sql", out, 1, true)
    assert.is_number(rc)
  end)
end)
