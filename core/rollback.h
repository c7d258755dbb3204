/* rollback.h - undo a run (docs/lifecycle.md#undoing-a-run): silver back from the merge's
 * before-images (dp.silver_undo), bronze rebuilt from the raw files of earlier loads, the cursor
 * back, the run's raw files quarantined, gold rebuilt; audited as a run of its own. */
#ifndef DP_ROLLBACK_H
#define DP_ROLLBACK_H

#include "engine.h"

typedef struct dp_rollback_opts {
  const char *run_id; /* the run to undo */
  int dry_run;        /* only report what would be undone */
  int cascade;        /* undo the later runs of its entities too, newest first */
  int json;           /* report as one JSON object on stdout */
} dp_rollback_opts;

/* Undoes o->run_id and prints the report. Returns 0; DP_EINVAL / DP_ENOTFOUND / DP_EMETA when it
 * refuses (nothing changed); another code when a step failed (*failed set: the message says which
 * step; running it again finishes the rollback). */
int dp_rollback(dp_engine *eng, const dp_rollback_opts *o, int *failed, dp_err *e);

#endif
