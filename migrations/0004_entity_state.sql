-- 0004_entity_state.sql: per-entity state of the silver layer.
-- silver_run_id is the last run whose silver merge committed for the entity. Silver reads the
-- bronze documents written after it (run ids are UUID v7, so they sort by time), which makes a
-- run that failed after bronze harmless: the next run picks its changes up. definition_hash is
-- the hash of the entity's columns and keys at that commit: when metadata changes it, silver
-- re-reads every bronze document once, so new and changed columns are filled for every key.
CREATE TABLE dp.entity_state (
  system         text        NOT NULL,
  entity         text        NOT NULL,
  silver_run_id  uuid,
  definition_hash text,
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (system, entity)
);
