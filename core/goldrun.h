/* goldrun.h - the gold run driver: which models run, in which order, audited (docs/gold.md). */
#ifndef DP_GOLDRUN_H
#define DP_GOLDRUN_H

#include "engine.h"

/* Runs gold models, each as its own audited run (system_run.system = the model name, layer
 * "gold"). With system NULL: the models named in models[0..n) and every gold model upstream of
 * them, upstream first; with system set: the models that depend on the system's entities
 * (trigger "after"). A model whose upstream model failed is skipped. Returns 0 when every model
 * succeeded; a run failure sets *run_failed (DP_EIO); DP_EMETA/DP_EINVAL/DP_ECONFIG are
 * configuration errors (nothing ran). */
int dp_gold_run(dp_engine *eng, const char *const *models, int n, const char *system, int *run_failed,
                dp_err *e);

#endif
