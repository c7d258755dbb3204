/* metastore.h - pushed metadata in MongoDB (database DP_METADATA_DB, default "metadata").
 *
 * A push stages a new set (one document in "pushes" with the files' exact texts and hash,
 * one document per item in "systems", "entities" and "gold", all tagged with the push id),
 * then flips the one pointer document in "current" (a single-document write: atomic, also
 * in FerretDB, which has no multi-document transactions), then deletes older sets. Readers
 * follow the pointer, so they see the previous set or the new one, never a mix.
 * See docs/metadata.md#metadata-in-mongodb. */
#ifndef DP_METASTORE_H
#define DP_METASTORE_H

#include <mongoc/mongoc.h>
#include <stddef.h>
#include <stdint.h>
#include "error.h"

enum { DP_META_SYSTEMS, DP_META_ENTITIES, DP_META_GOLD, DP_META_NFILES };

/* "systems.json", "entities.json", "gold.json" (index DP_META_*). */
const char *dp_metastore_file(int i);

/* Pushes kept in "pushes" (the newest ones), so a recent run's metadata_hash can be looked up. */
#define DP_METASTORE_KEEP_PUSHES 10

typedef struct dp_metastore_item {
  const char *id;    /* "bank", "bank.transactions", "monthly_spend" */
  const char *json;  /* the validated item as a JSON object */
} dp_metastore_item;

/* What to push. Everything is borrowed from the caller. */
typedef struct dp_metastore_set {
  const char *texts[DP_META_NFILES]; /* exact file texts; NULL = the file is absent */
  size_t lens[DP_META_NFILES];
  const char *hash;                  /* sha256 hex over the texts (dp.metadata.hash) */
  const char *source;                /* the folder pushed, for people */
  const char *engine_version;
  const dp_metastore_item *items[DP_META_NFILES];
  size_t nitems[DP_META_NFILES];
  int fail_after_staging;            /* test hook: stop before the flip, as a crash would */
} dp_metastore_set;

typedef struct dp_metastore_pushed {
  char push_id[37];    /* the new push, or the current one when unchanged */
  char previous[37];   /* the push that was current before ("" when none) */
  int unchanged;       /* the current set already had this hash: nothing was written */
} dp_metastore_pushed;

/* Stages the set, flips "current" to it and cleans up older sets. On failure before the flip
 * the previous set stays current (its documents untouched). Returns 0, DP_EINVAL (a text that
 * MongoDB cannot store), DP_EBUSY (another push became current meanwhile) or DP_EMONGO. */
int dp_metastore_push(mongoc_client_t *cli, const char *db, const dp_metastore_set *set,
                      dp_metastore_pushed *out, dp_err *e);

/* The current pushed set. texts are owned by the struct (free with dp_metastore_current_free). */
typedef struct dp_metastore_current {
  char push_id[37];
  char hash[65];
  int64_t pushed_at_ms;
  char *texts[DP_META_NFILES]; /* NULL = the file was absent */
  size_t lens[DP_META_NFILES];
} dp_metastore_current;

/* Reads the set "current" points at into out. DP_ENOTFOUND when nothing was pushed yet. */
int dp_metastore_read(mongoc_client_t *cli, const char *db, dp_metastore_current *out, dp_err *e);
void dp_metastore_current_free(dp_metastore_current *c);

#endif
