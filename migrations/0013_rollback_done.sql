-- 0013_rollback_done.sql: a rollback that stopped after silver committed can be finished
-- (docs/lifecycle.md#undoing-a-run).
--
-- Silver's rollback transaction deletes the run's before-images (dp.silver_undo) and, in the same
-- transaction, records here that silver of (run, entity) was undone, with its counts. A rollback
-- run again after a later step failed (raw quarantine, audit marks) finds the row, takes silver
-- as done and finishes the other steps.
CREATE TABLE dp.rollback_done (
  run_id          uuid        NOT NULL,
  system          text        NOT NULL,
  entity          text        NOT NULL,
  layer           text        NOT NULL CHECK (layer IN ('silver')),
  rollback_run_id uuid        NOT NULL,
  done_at         timestamptz NOT NULL DEFAULT now(),
  rows_removed    bigint      NOT NULL DEFAULT 0,
  rows_restored   bigint      NOT NULL DEFAULT 0,
  rejects_removed bigint      NOT NULL DEFAULT 0,
  cursor_restored boolean     NOT NULL DEFAULT false,
  PRIMARY KEY (run_id, system, entity, layer)
);
