/* runinfo.h - the identity of a run and the per-entity-layer counters. No heap memory. */
#ifndef DP_RUNINFO_H
#define DP_RUNINFO_H

#include <stdint.h>

struct dp_err;

typedef struct dp_runinfo {
  uint8_t id[16];
  char id_str[37];
  int64_t ts_us;      /* run start, microseconds since the epoch (UTC) */
  char ts_str[40];    /* the same as ISO 8601 text */
} dp_runinfo;

typedef struct dp_counts {
  int64_t in, inserted, updated, deleted, unchanged, rejected;
} dp_counts;

/* Fills a new run identity (UUID v7, now). */
void dp_runinfo_new(dp_runinfo *r);
/* Sets the run's start (ts_us and ts_str) to us microseconds since the epoch. */
void dp_runinfo_set_ts(dp_runinfo *r, int64_t us);
/* The same with a given id (text UUID) and now; 0, or DP_EINVAL with e. */
int dp_runinfo_from_id(dp_runinfo *r, const char *id, struct dp_err *e);

#endif
