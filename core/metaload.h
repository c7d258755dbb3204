/* metaload.h - reading the metadata texts (a folder, or the set pushed to MongoDB) and
 * validating them in a Lua state. Runs, commands and serve's snapshots all go through here, so
 * "the metadata a run used" is always a set of exact texts and their hash. */
#ifndef DP_METALOAD_H
#define DP_METALOAD_H

#include <stddef.h>
#include "engine.h"
#include "metastore.h"

typedef struct dp_meta_texts {
  char *texts[DP_META_NFILES]; /* exact file texts; NULL = the file is absent */
  size_t lens[DP_META_NFILES];
  char *source;                /* the folder, or "MongoDB database D, push P" */
  char *pushed_hash;           /* MongoDB: the hash recorded at push time (checked); else NULL */
  /* serve's versions also hold the scripts (connectors/ and gold/ under DP_SCRIPTS), so a run uses
   * the scripts its version validated with; nscripts 0: scripts are read from disk */
  char **script_paths, **script_texts;
  size_t *script_lens, nscripts;
} dp_meta_texts;

/* Reads the texts named by eng->cfg.metadata (opening MongoDB when it is "mongo"). Returns 0
 * and *out (owned by the caller: dp_meta_texts_free), or an error with e. */
int dp_meta_texts_read(dp_engine *eng, dp_meta_texts *out, dp_err *e);
void dp_meta_texts_free(dp_meta_texts *t);

/* Reads every *.lua under DP_SCRIPTS/connectors and DP_SCRIPTS/gold (sub-folders too) into t.
 * Returns 0, or DP_EIO/DP_ENOMEM with e naming the file. */
int dp_meta_scripts_read(const dp_config *cfg, dp_meta_texts *t, dp_err *e);

/* Validating them: dp_meta_validate (luabridge.h). */

#endif
