-- 0012_rollback.sql: what `dp-engine rollback` needs (docs/lifecycle.md#undoing-a-run).
--
-- Before-images of what a silver merge changes in place, written in the merge's own transaction:
-- what = 'row': a silver row as it was before the run changed it (scd1 overwrite, version
-- closed), row_id its _dp_id; 'entity_state' / 'entity_cursor': the entity's row of
-- dp.entity_state / dp.entity_cursor before the run (NULL: there was none), row_id 0.
-- Versions a run inserted need none: silver rows carry the run that inserted them (_dp_run_id).
CREATE TABLE dp.silver_undo (
  run_id   uuid   NOT NULL,
  system   text   NOT NULL,
  entity   text   NOT NULL,
  what     text   NOT NULL CHECK (what IN ('row', 'entity_state', 'entity_cursor')),
  row_id   bigint NOT NULL DEFAULT 0,
  before   jsonb,
  PRIMARY KEY (run_id, system, entity, what, row_id)
);

-- A run that was undone: the rollback run that undid it.
ALTER TABLE audit.system_run ADD COLUMN rolled_back_by uuid;

-- The entity rows of an undone run get status 'rolled_back' (the earlier status goes to
-- details.status_before_rollback), so queries for the last successful load skip them.
ALTER TABLE audit.entity_layer_run DROP CONSTRAINT entity_layer_run_status_check;
ALTER TABLE audit.entity_layer_run ADD CONSTRAINT entity_layer_run_status_check
  CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'crashed', 'rolled_back'));
