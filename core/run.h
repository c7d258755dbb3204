/* run.h - the run driver: one system run, layer by layer (raw, bronze, silver), audited. */
#ifndef DP_RUN_H
#define DP_RUN_H

#include "engine.h"
#include "snapshot.h"

enum { DP_LAYER_RAW = 1, DP_LAYER_BRONZE = 2, DP_LAYER_SILVER = 4, DP_LAYER_ALL = 7 };
/* replay from raw: bronze and silver from a stored raw file; from bronze: silver re-reads all
 * of bronze. Neither calls the source nor moves a cursor. */
enum { DP_REPLAY_NONE = 0, DP_REPLAY_RAW = 1, DP_REPLAY_BRONZE = 2 };

typedef struct dp_run_opts {
  const char **entities;  /* --entity filters (borrowed), or NULL for all enabled entities */
  int nentities;
  unsigned layers;        /* DP_LAYER_* mask */
  const char *trigger;    /* "manual", "schedule", ... */
  int full_refresh;       /* ignore the stored delta cursor */
  int replay;             /* DP_REPLAY_*: rebuild the next layers from stored data */
  const char *replay_run; /* replay from raw: that run's raw files (NULL: the latest) */
  const char *trigger_detail; /* what fired it: a cron slot, a file name, an upstream run (audit) */
  const char *event;      /* a callback's JSON body, handed to the connector as ctx.event */
  const char *run_id;     /* the run id to use (serve hands out ids when it queues), or NULL */
  const char *prefect_flow_run_id; /* serve: the flow run it created when it queued the run (then
                                      also run_id), reported to instead of a new one; or NULL */
  int quiet;              /* no summary on stdout (run --json prints the audited run instead) */
  char *run_id_out;       /* when not NULL: receives the run's id (37 bytes) once the run ended */
} dp_run_opts;

/* Loads and validates the metadata in eng->L (creating the state when needed; the engine's Lua
 * keeps the validated table) and returns it as C structs in *out (one reference: the caller
 * dp_snapshot_unref's it). Errors: DP_EMETA with every validation error in e->msg. */
int dp_load_metadata(dp_engine *eng, dp_snapshot **out, dp_err *e);

/* Runs a system. Returns 0 when every entity succeeded, DP_EIO-like codes for run
 * failures (status failed/partial: *run_failed set), or DP_ECONFIG/DP_EMETA/DP_EINVAL for
 * usage and configuration errors (nothing was run). */
int dp_run_system(dp_engine *eng, const char *system, const dp_run_opts *o, int *run_failed, dp_err *e);

#endif
