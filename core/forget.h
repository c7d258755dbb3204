/* forget.h - dp-engine forget: remove one key of an entity from raw, bronze, silver and gold,
 * record its hash (never its values) in dp.forgotten_key, and keep later runs from bringing it
 * back (docs/lifecycle.md#forgetting-a-key). */
#ifndef DP_FORGET_H
#define DP_FORGET_H

#include <libpq-fe.h>
#include "buf.h"
#include "engine.h"
#include "meta.h"

typedef struct dp_forget_opts {
  const char *target;  /* "SYSTEM.ENTITY" */
  const char *key;     /* "k1=v1[,k2=v2]": every primary-key column once */
  int dry_run;         /* count, change nothing (audited with dry_run = true) */
  int allow_return;    /* record it, but let later loads bring the key back */
} dp_forget_opts;

/* Forgets the key. The report (counts, the key hash; never a value) is appended to out; *failed
 * is set when a store failed after the work began (the command can be run again). Returns 0, or
 * an error: DP_EINVAL / DP_EMETA / DP_ECAST for a wrong target or key (nothing done), DP_EBUSY when
 * the system is running, DP_EPG / DP_EMONGO / DP_EIO for a failing store. */
int dp_forget(dp_engine *eng, const dp_forget_opts *o, dp_buf *out, int *failed, dp_err *e);

/* The forgotten keys of one entity, for the raw writer (run.c): it drops their records. */
typedef struct dp_forget_filter dp_forget_filter;
/* *out gets the entity's filter (caller frees with dp_forget_filter_free), or NULL when it has no
 * forgotten key (nothing to check). ent must outlive the filter. */
int dp_forget_filter_load(PGconn *c, const dp_entity *ent, dp_forget_filter **out, dp_err *e);
/* 1 when the record (one compact JSON object) has a forgotten key: leave it out; else 0 (also
 * when its key cannot be read: bronze rejects it with the reason as before). */
int dp_forget_filter_drops(dp_forget_filter *f, const char *json, size_t len);
/* How many records the filter dropped. */
long long dp_forget_filter_dropped(const dp_forget_filter *f);
void dp_forget_filter_free(dp_forget_filter *f);

#endif
