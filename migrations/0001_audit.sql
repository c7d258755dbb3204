-- 0001_audit.sql: the audit schema (design section 5). Every table carries run_id and run_ts.
CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE audit.system_run (
  run_id               uuid        PRIMARY KEY,
  run_ts               timestamptz NOT NULL,
  system               text        NOT NULL,
  trigger_kind         text        NOT NULL DEFAULT 'manual',
  status               text        NOT NULL
    CHECK (status IN ('running', 'succeeded', 'failed', 'partial', 'crashed')),
  started_at           timestamptz NOT NULL,
  ended_at             timestamptz,
  entities_succeeded   integer     NOT NULL DEFAULT 0,
  entities_failed      integer     NOT NULL DEFAULT 0,
  entities_skipped     integer     NOT NULL DEFAULT 0,
  error                text,
  engine_version       text        NOT NULL,
  metadata_hash        text,
  prefect_flow_run_id  uuid
);
CREATE INDEX system_run_system_started ON audit.system_run (system, started_at DESC);
CREATE INDEX system_run_running ON audit.system_run (system) WHERE status = 'running';

CREATE TABLE audit.system_layer_run (
  run_id               uuid        NOT NULL REFERENCES audit.system_run (run_id),
  run_ts               timestamptz NOT NULL,
  system               text        NOT NULL,
  layer                text        NOT NULL CHECK (layer IN ('raw', 'bronze', 'silver', 'gold')),
  status               text        NOT NULL
    CHECK (status IN ('running', 'succeeded', 'failed', 'partial', 'crashed')),
  started_at           timestamptz NOT NULL,
  ended_at             timestamptz,
  entities_succeeded   integer     NOT NULL DEFAULT 0,
  entities_failed      integer     NOT NULL DEFAULT 0,
  entities_skipped     integer     NOT NULL DEFAULT 0,
  error                text,
  PRIMARY KEY (run_id, layer)
);

CREATE TABLE audit.entity_layer_run (
  run_id               uuid        NOT NULL REFERENCES audit.system_run (run_id),
  run_ts               timestamptz NOT NULL,
  system               text        NOT NULL,
  entity               text        NOT NULL,
  layer                text        NOT NULL CHECK (layer IN ('raw', 'bronze', 'silver', 'gold')),
  status               text        NOT NULL
    CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'crashed')),
  started_at           timestamptz NOT NULL,
  ended_at             timestamptz,
  records_in           bigint      NOT NULL DEFAULT 0,
  records_inserted     bigint      NOT NULL DEFAULT 0,
  records_updated      bigint      NOT NULL DEFAULT 0,
  records_deleted      bigint      NOT NULL DEFAULT 0,
  records_unchanged    bigint      NOT NULL DEFAULT 0,
  records_rejected     bigint      NOT NULL DEFAULT 0,
  error                text,
  details              jsonb       NOT NULL DEFAULT '{}'::jsonb,
  PRIMARY KEY (run_id, entity, layer)
);
CREATE INDEX entity_layer_run_entity ON audit.entity_layer_run (system, entity, layer, started_at DESC);

-- Latest run of every entity and layer.
CREATE VIEW audit.entity_latest AS
SELECT DISTINCT ON (system, entity, layer) *
FROM audit.entity_layer_run
ORDER BY system, entity, layer, started_at DESC;

-- History of system runs, newest first, with the totals of their entity-layer rows.
CREATE VIEW audit.system_history AS
SELECT r.system, r.run_id, r.run_ts, r.trigger_kind, r.status, r.started_at, r.ended_at,
       r.ended_at - r.started_at AS duration,
       r.entities_succeeded, r.entities_failed, r.entities_skipped, r.error,
       coalesce(sum(e.records_in) FILTER (WHERE e.layer = 'raw'), 0) AS records_extracted,
       coalesce(sum(e.records_inserted) FILTER (WHERE e.layer = 'silver'), 0) AS silver_inserted,
       coalesce(sum(e.records_updated) FILTER (WHERE e.layer = 'silver'), 0) AS silver_updated,
       coalesce(sum(e.records_deleted) FILTER (WHERE e.layer = 'silver'), 0) AS silver_deleted,
       coalesce(sum(e.records_rejected) FILTER (WHERE e.layer = 'silver'), 0) AS silver_rejected
FROM audit.system_run r
LEFT JOIN audit.entity_layer_run e ON e.run_id = r.run_id
GROUP BY r.run_id
ORDER BY r.started_at DESC;
