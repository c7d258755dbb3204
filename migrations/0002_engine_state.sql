-- 0002_engine_state.sql: the dp schema for engine state.
-- (dp.schema_migration itself is created by `dp-engine migrate` before any migration runs.)
CREATE SCHEMA IF NOT EXISTS dp;

-- The committed delta cursor of each entity. Written in the same transaction as the
-- entity's silver merge, so it only advances when the data it covers is in silver.
CREATE TABLE dp.entity_cursor (
  system      text        NOT NULL,
  entity      text        NOT NULL,
  cursor      text,
  run_id      uuid        NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (system, entity)
);

CREATE SCHEMA IF NOT EXISTS silver;
