/* audit.c - audit rows and run locks. */
#include "audit.h"
#include "pg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_KEY "hashtextextended('dp-engine/system/' || $1, 0)"

int dp_audit_lock_system(PGconn *c, const char *system, dp_err *e) {
  const char *p[] = {system};
  PGresult *r = NULL;
  int rc = dp_pg_exec(c, "SELECT pg_try_advisory_lock(" LOCK_KEY ")", 1, p, &r, e);
  if (rc) return rc;
  int got = PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  if (!got) return dp_err_set(e, DP_EBUSY, "system %s is already running (another run holds its lock)", system);
  return 0;
}

void dp_audit_unlock_system(PGconn *c, const char *system) {
  const char *p[] = {system};
  dp_pg_exec(c, "SELECT pg_advisory_unlock(" LOCK_KEY ")", 1, p, NULL, NULL);
}

int dp_audit_mark_crashed(PGconn *c, const char *system, int *n, dp_err *e) {
  const char *p[] = {system};
  PGresult *r = NULL;
  int rc = dp_pg_exec(c,
                      "WITH s AS (UPDATE audit.system_run SET status = 'crashed', ended_at = now(),"
                      "  error = coalesce(error, 'the engine stopped before the run ended')"
                      "  WHERE system = $1 AND status = 'running' RETURNING run_id),"
                      " l AS (UPDATE audit.system_layer_run SET status = 'crashed', ended_at = now()"
                      "  WHERE run_id IN (SELECT run_id FROM s) AND status = 'running'),"
                      " en AS (UPDATE audit.entity_layer_run SET status = 'crashed', ended_at = now()"
                      "  WHERE run_id IN (SELECT run_id FROM s) AND status = 'running')"
                      " SELECT count(*) FROM s",
                      1, p, &r, e);
  if (rc) return rc;
  *n = atoi(PQgetvalue(r, 0, 0));
  PQclear(r);
  return 0;
}

int dp_audit_stamp_run(PGconn *c, const char *system, dp_runinfo *run, dp_err *e) {
  const char *p[] = {system};
  PGresult *r = NULL;
  int rc = dp_pg_exec(c,
                      "SELECT floor(extract(epoch FROM greatest(clock_timestamp(),"
                      " (SELECT max(run_ts) FROM audit.system_run WHERE system = $1) + interval '1 millisecond'))"
                      " * 1000000)::bigint",
                      1, p, &r, e);
  if (rc) return rc;
  dp_runinfo_set_ts(run, strtoll(PQgetvalue(r, 0, 0), NULL, 10));
  PQclear(r);
  return 0;
}

int dp_audit_system_start(PGconn *c, const dp_runinfo *run, const char *system, const char *trigger, const char *detail,
                          const char *metadata_hash, const char *version, dp_err *e) {
  const char *p[] = {run->id_str, run->ts_str, system, trigger, metadata_hash, version, detail};
  return dp_pg_exec(c,
                    "INSERT INTO audit.system_run (run_id, run_ts, system, trigger_kind, status,"
                    " started_at, metadata_hash, engine_version, trigger_detail)"
                    " VALUES ($1, $2, $3, $4, 'running', now(), $5, $6, $7)",
                    7, p, NULL, e);
}

/* Entities succeeded / failed / skipped as text parameters (system and layer rows share them). */
typedef struct entity_counts {
  char ok[16], failed[16], skipped[16];
} entity_counts;

static void format_counts(entity_counts *n, int ok, int failed, int skipped) {
  snprintf(n->ok, sizeof n->ok, "%d", ok);
  snprintf(n->failed, sizeof n->failed, "%d", failed);
  snprintf(n->skipped, sizeof n->skipped, "%d", skipped);
}

int dp_audit_system_end(PGconn *c, const dp_runinfo *run, const char *status, int ok, int failed,
                        int skipped, const char *error, dp_err *e) {
  entity_counts n;
  format_counts(&n, ok, failed, skipped);
  const char *p[] = {run->id_str, status, n.ok, n.failed, n.skipped, error};
  return dp_pg_exec(c,
                    "UPDATE audit.system_run SET status = $2, ended_at = now(), entities_succeeded = $3,"
                    " entities_failed = $4, entities_skipped = $5, error = $6 WHERE run_id = $1",
                    6, p, NULL, e);
}

int dp_audit_layer_start(PGconn *c, const dp_runinfo *run, const char *system, const char *layer, dp_err *e) {
  const char *p[] = {run->id_str, run->ts_str, system, layer};
  return dp_pg_exec(c,
                    "INSERT INTO audit.system_layer_run (run_id, run_ts, system, layer, status, started_at)"
                    " VALUES ($1, $2, $3, $4, 'running', now())",
                    4, p, NULL, e);
}

int dp_audit_layer_end(PGconn *c, const dp_runinfo *run, const char *layer, const char *status, int ok,
                       int failed, int skipped, dp_err *e) {
  entity_counts n;
  format_counts(&n, ok, failed, skipped);
  const char *p[] = {run->id_str, layer, status, n.ok, n.failed, n.skipped};
  return dp_pg_exec(c,
                    "UPDATE audit.system_layer_run SET status = $3, ended_at = now(), entities_succeeded = $4,"
                    " entities_failed = $5, entities_skipped = $6 WHERE run_id = $1 AND layer = $2",
                    6, p, NULL, e);
}

int dp_audit_entity_start(PGconn *c, const dp_runinfo *run, const char *system, const char *entity,
                          const char *layer, const char *status, const char *error, dp_err *e) {
  const char *p[] = {run->id_str, run->ts_str, system, entity, layer, status, error};
  return dp_pg_exec(c,
                    "INSERT INTO audit.entity_layer_run (run_id, run_ts, system, entity, layer, status,"
                    " started_at, ended_at, error)"
                    " VALUES ($1, $2, $3, $4, $5, $6, now(), CASE WHEN $6 = 'running' THEN NULL ELSE now() END, $7)",
                    7, p, NULL, e);
}

int dp_audit_entity_end(PGconn *c, const dp_runinfo *run, const char *entity, const char *layer,
                        const char *status, const dp_counts *n, const char *error,
                        const char *details_json, dp_err *e) {
  char v[6][24];
  const int64_t vals[6] = {n->in, n->inserted, n->updated, n->deleted, n->unchanged, n->rejected};
  for (int i = 0; i < 6; i++) snprintf(v[i], sizeof v[i], "%" PRId64, vals[i]);
  const char *p[] = {run->id_str, entity, layer, status, v[0], v[1], v[2], v[3], v[4], v[5], error,
                     details_json ? details_json : "{}"};
  return dp_pg_exec(c,
                    "UPDATE audit.entity_layer_run SET status = $4, ended_at = now(), records_in = $5,"
                    " records_inserted = $6, records_updated = $7, records_deleted = $8,"
                    " records_unchanged = $9, records_rejected = $10, error = $11, details = $12::jsonb"
                    " WHERE run_id = $1 AND entity = $2 AND layer = $3",
                    12, p, NULL, e);
}

int dp_audit_set_prefect(PGconn *c, const dp_runinfo *run, const char *flow_run_id, const char *report, dp_err *e) {
  const char *p[] = {run->id_str, flow_run_id, report};
  return dp_pg_exec(c, "UPDATE audit.system_run SET prefect_flow_run_id = $2, prefect_report = $3 WHERE run_id = $1",
                    3, p, NULL, e);
}

/* Fills *ids (caller frees) with the flow run ids of the system's runs left running. */
int dp_audit_running_flow_runs(PGconn *c, const char *system, char ***ids, int *n, dp_err *e) {
  const char *p[] = {system};
  PGresult *r = NULL;
  *ids = NULL;
  *n = 0;
  int rc = dp_pg_exec(c,
                      "SELECT prefect_flow_run_id::text FROM audit.system_run WHERE system = $1 AND status = 'running'"
                      " AND prefect_flow_run_id IS NOT NULL",
                      1, p, &r, e);
  if (rc) return rc;
  int rows = PQntuples(r);
  if (rows > 0 && (*ids = calloc((size_t)rows, sizeof **ids)) != NULL) {
    for (int i = 0; i < rows; i++) (*ids)[(*n)++] = strdup(PQgetvalue(r, i, 0));
  }
  PQclear(r);
  return 0;
}
