-- docker/ferretdb-tuning.sql: what bronze needs from the PostgreSQL database behind FerretDB v1
-- (docs/deployment.md#bronze-on-ferretdb). Run it once, as a superuser, connected to FerretDB's
-- database (`ferretdb` in the compose stack and the test services); running it again changes
-- nothing. A real MongoDB needs none of it.
--
-- FerretDB turns a filter {_id: "<text>"} into `_jsonb->'_id' @> $1`: a containment test that its
-- own `_id` index does not serve. Two things make it an index lookup (0.7-1.1 ms instead of a
-- sequential scan of the collection's table):
--   1. a GIN index on `((_jsonb->'_id') jsonb_path_ops)` on every collection's table, made by
--      an event trigger for tables FerretDB creates from now on, and below for those it has;
--   2. plan_cache_mode = force_custom_plan for the database: FerretDB's statements are
--      prepared, and PostgreSQL's generic plan for them does not use that index.
-- The index is made with fastupdate = off: with GIN's default pending list, every lookup also
-- reads the whole list of entries not yet merged into the index (after a 1,000,000-document
-- load: 138 pages, 55,000 entries, 2.1 ms a lookup instead of 0.09 ms; docs/performance.md).
-- Names: dp_ferretdb_id_gin (the trigger and its function), <table, cut>_<hash>_dp_id_gin (the
-- indexes; those of earlier versions of this file are <table, cut>_dp_id_gin).

-- Takes effect for FerretDB's new connections (restart FerretDB to apply it at once).
DO $$
BEGIN
  EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_custom_plan', current_database());
END
$$;

-- The index of one collection table: a table with a jsonb column `_jsonb`, in a schema of its
-- own (FerretDB: one schema per MongoDB database), other than FerretDB's metadata table.
CREATE OR REPLACE FUNCTION public.dp_ferretdb_id_gin_index(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  nsp text;
  rel text;
  idx regclass;
BEGIN
  SELECT n.nspname, c.relname INTO nsp, rel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = tbl AND c.relkind = 'r';
  IF nsp IS NULL OR nsp IN ('public', 'pg_catalog', 'information_schema') OR nsp LIKE 'pg\_%'
     OR rel = '_ferretdb_database_metadata'
     OR NOT EXISTS (SELECT 1 FROM pg_attribute
                     WHERE attrelid = tbl AND attname = '_jsonb' AND atttypid = 'jsonb'::regtype
                       AND NOT attisdropped) THEN
    RETURN;
  END IF;
  -- the table's index, found by its table (two long table names may begin alike)
  SELECT i.indexrelid INTO idx FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
   WHERE i.indrelid = tbl AND x.relname LIKE '%\_dp\_id\_gin' LIMIT 1;
  IF idx IS NULL THEN
    -- named by the table's name, cut, and a hash of it whole: unique in the schema
    EXECUTE format('CREATE INDEX %I ON %I.%I USING gin ((_jsonb->''_id'') jsonb_path_ops) '
                   'WITH (fastupdate = off)', left(rel, 40) || '_' || left(md5(rel), 8) || '_dp_id_gin', nsp, rel);
  ELSIF NOT EXISTS (SELECT 1 FROM pg_class x WHERE x.oid = idx
                     AND x.reloptions && ARRAY['fastupdate=off', 'fastupdate=false']) THEN
    -- an index made by an earlier version of this file: its pending list goes into the index
    EXECUTE format('ALTER INDEX %s SET (fastupdate = off)', idx);
    PERFORM gin_clean_pending_list(idx);
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION public.dp_ferretdb_id_gin() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
  cmd record;
BEGIN
  FOR cmd IN SELECT objid FROM pg_event_trigger_ddl_commands()
              WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
    PERFORM public.dp_ferretdb_id_gin_index(cmd.objid::regclass);
  END LOOP;
END
$$;

SET client_min_messages = warning;
DROP EVENT TRIGGER IF EXISTS dp_ferretdb_id_gin;
CREATE EVENT TRIGGER dp_ferretdb_id_gin ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
  EXECUTE FUNCTION public.dp_ferretdb_id_gin();

-- The collections FerretDB has already.
DO $$
DECLARE
  t regclass;
BEGIN
  FOR t IN SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND n.nspname NOT IN ('public', 'pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\_%' LOOP
    PERFORM public.dp_ferretdb_id_gin_index(t);
  END LOOP;
END
$$;
