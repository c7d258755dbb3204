-- 0005_gold_sandbox.sql: the role and the function that gold scripts' SQL runs under
-- (docs/gold.md#the-sql-sandbox, docs/storage.md#roles).
--
-- dp_gold (NOLOGIN) may read silver and gold and nothing else. Every query a gold script wrote
-- runs inside gold_sandbox.query(sql, params), a SECURITY DEFINER function owned by dp_gold: in
-- it PostgreSQL checks privileges as dp_gold and refuses SET ROLE, RESET ROLE, SET SESSION
-- AUTHORIZATION (also through set_config) and transaction control. Only the engine's user may
-- call the function.
--
-- Roles belong to the whole cluster: several databases (and their migrations, at the same time)
-- share dp_gold, so it is created only when missing, and a concurrent creation is not an error.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'dp_gold') THEN
    BEGIN
      CREATE ROLE dp_gold NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL; -- another database's migration created it meanwhile
    END;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'dp_gold' AND (rolsuper OR rolbypassrls)) THEN
    RAISE EXCEPTION 'the role dp_gold exists and is a superuser or bypasses row security; gold SQL must not run under it'
      USING HINT = 'ALTER ROLE dp_gold NOSUPERUSER NOBYPASSRLS, or drop it and migrate again';
  END IF;
  -- A non-superuser engine account must be a member to hand the function to dp_gold (a
  -- superuser needs no membership). Granting needs CREATEROLE; a deployer can grant it beforehand.
  IF NOT pg_catalog.pg_has_role(current_user, 'dp_gold', 'MEMBER') THEN
    EXECUTE format('GRANT dp_gold TO %I', current_user);
  END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS silver;
CREATE SCHEMA IF NOT EXISTS gold;
GRANT USAGE ON SCHEMA silver, gold TO dp_gold;
GRANT SELECT ON ALL TABLES IN SCHEMA silver, gold TO dp_gold;
-- tables and views the engine creates later (silver per entity, gold per model build)
ALTER DEFAULT PRIVILEGES IN SCHEMA silver GRANT SELECT ON TABLES TO dp_gold;
ALTER DEFAULT PRIVILEGES IN SCHEMA gold GRANT SELECT ON TABLES TO dp_gold;

CREATE SCHEMA gold_sandbox;
REVOKE ALL ON SCHEMA gold_sandbox FROM PUBLIC;

-- Runs one query as dp_gold. The engine passes the query text it built around the script's
-- query and the parameter values as text[] ($1 inside the query); the caller names the result
-- columns and their types (AS r(...)).
CREATE FUNCTION gold_sandbox.query(sql text, params text[]) RETURNS SETOF record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  RETURN QUERY EXECUTE sql USING params;
END
$fn$;
REVOKE ALL ON FUNCTION gold_sandbox.query(text, text[]) FROM PUBLIC;
-- The new owner needs CREATE on the schema for the change of owner only.
GRANT CREATE ON SCHEMA gold_sandbox TO dp_gold;
ALTER FUNCTION gold_sandbox.query(text, text[]) OWNER TO dp_gold;
REVOKE CREATE ON SCHEMA gold_sandbox FROM dp_gold;
-- (after the change of owner, which rewrites the grants the old owner made)
DO $$
BEGIN
  EXECUTE format('GRANT EXECUTE ON FUNCTION gold_sandbox.query(text, text[]) TO %I', current_user);
END
$$;
