/* retention_job.h - serve's daily retention (docs/lifecycle.md#the-daily-job-under-serve): a
 * timer on serve's loop that fires at DP_RETENTION_AT (HH:MM UTC) and runs dp_retention_run on
 * libuv's thread pool with an engine of its own, then arms itself for the next day. */
#ifndef DP_RETENTION_JOB_H
#define DP_RETENTION_JOB_H

#include <stdint.h>
#include <uv.h>
#include "error.h"

typedef struct dp_retention_job dp_retention_job;

/* Arms the job on loop; at is "HH:MM" (UTC) or "off" (then *out is NULL). clock_offset: seconds
 * serve adds to the wall clock (DP_TEST_NOW). The job is freed by dp_retention_job_stop. Returns
 * 0, or DP_ECONFIG naming the bad value. */
int dp_retention_job_start(uv_loop_t *loop, const char *at, int64_t clock_offset, dp_retention_job **out, dp_err *e);
/* Stops the timer (a retention already running finishes; the loop waits for it) and frees the
 * job once its handles are closed. NULL is fine. */
void dp_retention_job_stop(dp_retention_job *j);

#endif
