-- 0009_gold_sandbox_functions.sql: functions gold SQL (role dp_gold, through PUBLIC) must not
-- reach (docs/gold.md#the-sql-sandbox): advisory locks (a query could hold a system's run lock or
-- the migration lock), large objects (the one write without table privileges), and NOTIFY. Their
-- EXECUTE is revoked from PUBLIC in this database and granted to the engine's own user. Changing
-- the privileges of pg_catalog functions needs a superuser: without one this says so and does
-- nothing (the gold build still fails on large objects it finds at the end).
DO $$
DECLARE
  f regprocedure;
BEGIN
  IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    RAISE NOTICE 'dp-engine: not a superuser: advisory lock, large object and NOTIFY functions stay open to gold SQL';
    RETURN;
  END IF;
  FOR f IN
    SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'pg_catalog'
      AND (p.proname LIKE 'pg\_%advisory%'
           OR p.proname IN ('lo_create', 'lo_creat', 'lo_from_bytea', 'lo_import', 'lo_export', 'lo_unlink',
                            'lo_put', 'lowrite', 'lo_open', 'pg_notify'))
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, current_user);
  END LOOP;
END $$;
