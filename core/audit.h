/* audit.h - rows in the audit schema (design section 5) and the per-system run lock.
 * All statements run on the engine's audit connection in autocommit, so an audit row is
 * visible at once and survives a rolled-back merge. */
#ifndef DP_AUDIT_H
#define DP_AUDIT_H

#include <libpq-fe.h>
#include "error.h"
#include "runinfo.h"

/* Takes the session advisory lock of a system (two engine processes never run one system
 * at once). Returns DP_EBUSY when another session holds it. */
int dp_audit_lock_system(PGconn *c, const char *system, dp_err *e);
void dp_audit_unlock_system(PGconn *c, const char *system);
/* With the lock held: runs of this system still 'running' were left by a crash. *n gets how many. */
int dp_audit_mark_crashed(PGconn *c, const char *system, int *n, dp_err *e);

/* Sets run's start (run_ts) from PostgreSQL's clock, and later than every earlier run of the
 * system by at least a millisecond (bronze keeps ms): runs of a system are ordered by run_ts
 * (silver reads bronze loads in that order), which must hold whatever the clock of the host that
 * started the run says. Call it holding the system's lock. */
int dp_audit_stamp_run(PGconn *c, const char *system, dp_runinfo *run, dp_err *e);

int dp_audit_system_start(PGconn *c, const dp_runinfo *run, const char *system, const char *trigger, const char *detail,
                          const char *metadata_hash, const char *version, dp_err *e);
int dp_audit_system_end(PGconn *c, const dp_runinfo *run, const char *status, int ok, int failed,
                        int skipped, const char *error, dp_err *e);
int dp_audit_layer_start(PGconn *c, const dp_runinfo *run, const char *system, const char *layer, dp_err *e);
int dp_audit_layer_end(PGconn *c, const dp_runinfo *run, const char *layer, const char *status, int ok,
                       int failed, int skipped, dp_err *e);
/* status "running" or "skipped" (with error as the reason). */
int dp_audit_entity_start(PGconn *c, const dp_runinfo *run, const char *system, const char *entity,
                          const char *layer, const char *status, const char *error, dp_err *e);
int dp_audit_entity_end(PGconn *c, const dp_runinfo *run, const char *entity, const char *layer,
                        const char *status, const dp_counts *n, const char *error,
                        const char *details_json, dp_err *e);

/* Prefect (docs/orchestration.md): the flow run id (NULL: none) and how far reporting got
 * (NULL: in full or not configured; see migrations/0008_prefect.sql). */
int dp_audit_set_prefect(PGconn *c, const dp_runinfo *run, const char *flow_run_id, const char *report, dp_err *e);
/* With the lock held, before dp_audit_mark_crashed: the flow run ids of the runs it will mark.
 * *ids (owned by the caller: free each, then the array) gets *n of them. */
int dp_audit_running_flow_runs(PGconn *c, const char *system, char ***ids, int *n, dp_err *e);

#endif
