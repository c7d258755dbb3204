/* retention.h - dp-engine retention: per entity, compress and delete old raw files, purge
 * deleted bronze documents, drop old closed silver versions; every action audited in
 * audit.retention_run (docs/lifecycle.md). */
#ifndef DP_RETENTION_H
#define DP_RETENTION_H

#include "buf.h"
#include "engine.h"

typedef struct dp_retention_opts {
  const char *system; /* only this system, or NULL for all */
  int dry_run;        /* count, change nothing (rows still audited, dry_run = true) */
  int json;           /* report as JSON (else text lines) */
} dp_retention_opts;

/* Applies retention. The report (text or JSON) is appended to out. *failed is set when an action
 * failed or a system was busy (its run lock held). Returns 0, or an error that stopped it before
 * any action (metadata, connection, unknown system: DP_EMETA, DP_EPG, DP_EINVAL, ...). */
int dp_retention_run(dp_engine *eng, const dp_retention_opts *o, dp_buf *out, int *failed, dp_err *e);

#endif
