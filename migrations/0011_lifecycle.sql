-- 0011_lifecycle.sql: retention and forgetting a key (docs/lifecycle.md).

-- One row per action of `dp-engine retention` (and serve's daily job) on one entity, also when
-- nothing matched and with --dry-run.
CREATE TABLE audit.retention_run (
  run_id        uuid        NOT NULL,
  run_ts        timestamptz NOT NULL,
  system        text        NOT NULL,
  entity        text        NOT NULL,
  action        text        NOT NULL
    CHECK (action IN ('compress_raw', 'delete_raw', 'purge_bronze', 'drop_silver_history')),
  dry_run       boolean     NOT NULL,
  status        text        NOT NULL CHECK (status IN ('succeeded', 'failed')),
  items         bigint      NOT NULL DEFAULT 0,
  kept          bigint      NOT NULL DEFAULT 0,
  bytes_before  bigint      NOT NULL DEFAULT 0,
  bytes_after   bigint      NOT NULL DEFAULT 0,
  error         text,
  details       jsonb       NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, system, entity, action)
);
CREATE INDEX retention_run_entity ON audit.retention_run (system, entity, run_ts DESC);

-- The keys `dp-engine forget` removed: the key hash only, never the values. Runs drop the
-- records of these keys when they write raw files, unless allow_return.
CREATE TABLE dp.forgotten_key (
  system        text        NOT NULL,
  entity        text        NOT NULL,
  key_hash      uuid        NOT NULL,
  forgotten_at  timestamptz NOT NULL DEFAULT now(),
  run_id        uuid        NOT NULL,
  allow_return  boolean     NOT NULL DEFAULT false,
  PRIMARY KEY (system, entity, key_hash)
);

-- One row per `dp-engine forget`: what it removed, counted (no values).
CREATE TABLE audit.forget_run (
  run_id            uuid        PRIMARY KEY,
  run_ts            timestamptz NOT NULL,
  system            text        NOT NULL,
  entity            text        NOT NULL,
  key_hash          uuid        NOT NULL,
  dry_run           boolean     NOT NULL,
  allow_return      boolean     NOT NULL,
  status            text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
  raw_files         bigint      NOT NULL DEFAULT 0,
  raw_lines         bigint      NOT NULL DEFAULT 0,
  bronze_documents  bigint      NOT NULL DEFAULT 0,
  silver_versions   bigint      NOT NULL DEFAULT 0,
  silver_rejects    bigint      NOT NULL DEFAULT 0,
  gold_models       text[]      NOT NULL DEFAULT '{}',
  error             text,
  started_at        timestamptz NOT NULL,
  ended_at          timestamptz
);
