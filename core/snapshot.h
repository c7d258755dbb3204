/* snapshot.h - one validated version of the metadata as C structs, immutable and
 * reference-counted: serve schedules from it, and runs load the exact metadata texts it was
 * validated from, so a run started on a version finishes on it while a reload swaps in the next.
 *
 * Ownership: dp_snapshot_load returns a snapshot with one reference; dp_snapshot_ref adds one,
 * dp_snapshot_unref drops one and frees it at zero (thread-safe). Everything inside is owned by
 * the snapshot and read-only. */
#ifndef DP_SNAPSHOT_H
#define DP_SNAPSHOT_H

#include <stddef.h>
#include "engine.h"
#include "meta.h"
#include "metaload.h"

enum { DP_TRIG_SCHEDULE, DP_TRIG_FILE, DP_TRIG_AFTER, DP_TRIG_CALLBACK };

typedef struct dp_trigger {
  int kind;                 /* DP_TRIG_* */
  char *cron, *timezone;    /* schedule */
  int catch_up;             /* schedule: run once at start when a slot was missed (default 1) */
  char *path, *pattern;     /* file */
  char *upstream;           /* after */
  char *name;               /* callback (NULL: any name) */
} dp_trigger;

typedef struct dp_snap_target {
  char *name;
  int is_gold;
  int enabled;              /* systems: "enabled"; gold models are always enabled */
  dp_trigger *triggers;
  size_t ntriggers;
  char **depends_on;        /* gold: "system.entity" or a model name */
  size_t ndepends;
  char **entities;          /* systems: their entities' names, in metadata order */
  size_t nentities;
  char *materialization;    /* gold: "table" or "incremental" */
  dp_entity model;          /* gold: the model's columns and primary key (system "gold") */
} dp_snap_target;

typedef struct dp_snapshot {
  int refs;
  char *hash;               /* the metadata hash the audit records */
  char *source;             /* where it was read: the folder, or "MongoDB database D, push P" */
  dp_meta_texts meta;       /* the exact texts it was validated from (a run is handed these;
                               empty in the snapshot a run builds for itself: dp_load_metadata) */
  dp_snap_target *targets;  /* systems first (nsystems of them), then gold models */
  size_t ntargets, nsystems;
  dp_entity *entities;      /* every entity of every system, in metadata order (enabled or not) */
  size_t nentities;
} dp_snapshot;

/* Reads and validates the metadata named by cfg (a folder, or "mongo") in a fresh Lua state,
 * which it closes again. Returns 0 and *out, or DP_EMETA/DP_EIO/DP_EMONGO/... with e. */
int dp_snapshot_load(const dp_config *cfg, dp_snapshot **out, dp_err *e);
dp_snapshot *dp_snapshot_ref(dp_snapshot *s);
void dp_snapshot_unref(dp_snapshot *s);
/* The target named name (is_gold picks the kind), or NULL. */
const dp_snap_target *dp_snapshot_find(const dp_snapshot *s, const char *name, int is_gold);
/* The entity system.name, or NULL. */
const dp_entity *dp_snapshot_entity(const dp_snapshot *s, const char *system, const char *name);

#endif
