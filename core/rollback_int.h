/* rollback_int.h - private to rollback*.c: what undoing one (run, entity) does, per layer. */
#ifndef DP_ROLLBACK_INT_H
#define DP_ROLLBACK_INT_H

#include <stdint.h>
#include <libpq-fe.h>
#include "engine.h"
#include "meta.h"

/* One (run, entity) to undo and what undoing it does (dry run: would do). */
typedef struct dp__rb_item {
  size_t run, ent; /* indexes into plan.runs and plan.ents */
  int64_t silver_removed, silver_restored, rejects_removed;
  int64_t bronze_touched, bronze_rebuilt, bronze_removed, bronze_rejects_removed;
  int64_t raw_files;
  int cursor_restored;
  int silver_done; /* an earlier attempt undid silver (dp.rollback_done): the counts are its */
} dp__rb_item;

/* rollback_silver.c: the counts of what undoing the run does to silver (refuses a run merged
 * before migration 0012; an earlier attempt that undid silver: its counts, silver_done), and the
 * undo itself in one transaction that records it in dp.rollback_done (nothing when silver_done).
 * a: audit connection; rb: the rollback's run id. */
int dp__rollback_silver_plan(PGconn *a, PGconn *c, const dp_entity *ent, const char *run, dp__rb_item *it, dp_err *e);
int dp__rollback_silver(PGconn *c, const dp_entity *ent, const char *run, const char *rb, dp__rb_item *it, dp_err *e);
/* rollback_bronze.c: bronze back to the state before the run (dry_run: counts only). */
int dp__rollback_bronze(dp_engine *eng, const dp_entity *ent, const char *run, int dry_run, dp__rb_item *it, dp_err *e);

#endif
