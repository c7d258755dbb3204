/* goldrun.h - the gold run driver: which models run, in which order, audited (docs/gold.md). */
#ifndef DP_GOLDRUN_H
#define DP_GOLDRUN_H

#include "engine.h"

/* Runs gold models, each as its own audited run (system_run.system = the model name, layer
 * "gold"). With system NULL: the models named in models[0..n) and every gold model upstream of
 * them, upstream first; with system set: the models that depend on the system's entities
 * (trigger "after", with opts' trigger_detail when set: a rollback's rebuild says so). A model whose upstream model failed is skipped. Returns 0 when every model
 * succeeded; a run failure sets *run_failed (DP_EIO); DP_EMETA/DP_EINVAL/DP_ECONFIG are
 * configuration errors (nothing ran). */
/* How serve starts a gold run (NULL from the CLI: trigger "manual", a new id, upstream models
 * first). With only_named, the upstream models are not run (serve runs them on their own
 * triggers), the named model's run gets run_id, trigger and trigger_detail, and a model whose
 * lock another process holds returns DP_EBUSY (serve retries). */
typedef struct dp_gold_opts {
  const char *trigger;
  const char *trigger_detail;
  const char *run_id;
  int only_named;
  const char *prefect_flow_run_id; /* serve: the flow run created at queue time (= run_id), or NULL */
  int quiet;              /* no summary lines on stdout (gold run --json prints the audited runs) */
  int full_refresh;       /* incremental models: delete the rows a build did not produce (gold run
                           * --full-refresh; forget and rollback, so that no row of what they
                           * removed stays) */
  char (*ran)[37];        /* when not NULL: receives the id of every model run started, in order */
  size_t ran_cap;         /* room in ran */
  size_t *nran;           /* with ran: how many it holds */
} dp_gold_opts;

int dp_gold_run(dp_engine *eng, const char *const *models, int n, const char *system, const dp_gold_opts *o,
                int *run_failed, dp_err *e);

#endif
