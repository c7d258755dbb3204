-- 0003_schema_change.sql: every change dp-engine makes to a silver table because metadata
-- changed (docs/metadata.md#tables-follow-metadata). Written in the same transaction as the
-- change itself, so a row exists exactly when the change does.
CREATE TABLE audit.schema_change (
  run_id       uuid        NOT NULL REFERENCES audit.system_run (run_id),
  run_ts       timestamptz NOT NULL,
  system       text        NOT NULL,
  entity       text        NOT NULL,
  table_name   text        NOT NULL,
  column_name  text,
  change       text        NOT NULL
    CHECK (change IN ('create_table', 'add_column', 'widen', 'drop_not_null')),
  old_type     text,
  new_type     text,
  applied_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schema_change_table ON audit.schema_change (system, entity, applied_at);
