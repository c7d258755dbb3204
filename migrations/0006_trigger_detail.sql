-- 0006_trigger_detail.sql: what fired a run (serve, docs/triggers.md): the cron slot, the file
-- name, the upstream and its run id, the callback name. NULL for a run started by hand.
ALTER TABLE audit.system_run ADD COLUMN trigger_detail text;
