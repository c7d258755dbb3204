/* record.h - one source record cast to an entity's columns: canonical texts in one buffer,
 * plus the key, scd1 and scd2 hashes over them. Shared by bronze (key only) and silver. */
#ifndef DP_RECORD_H
#define DP_RECORD_H

#include <bson/bson.h>
#include <stdint.h>
#include "buf.h"
#include "error.h"
#include "hash.h"
#include "meta.h"

/* libbson declares bson_iter_t 128-byte aligned but 80 bytes long, so the elements of a plain
 * array of them are not aligned (undefined behaviour, found by UBSan): one per 128-byte slot. */
typedef union dp_iter_slot {
  bson_iter_t it;
  char pad[128];
} dp_iter_slot;
_Static_assert(sizeof(bson_iter_t) <= 128, "a bson_iter_t fits its slot");

typedef struct dp_row {
  dp_buf text;        /* canonical texts, back to back (owned) */
  size_t *off;        /* per column: offset into text (owned) */
  size_t *len;        /* per column: length (owned) */
  unsigned char *null;/* per column: 1 when NULL (owned) */
  size_t ncols;
  dp_iter_slot *at;   /* per column: where its top-level field was found (owned, scratch) */
  unsigned char *has; /* per column: 1 when found (owned, scratch) */
  char **epath;       /* per column: its path as bronze stores keys (jsonbson.h: "%" -> "%25",
                       * a leading "$" -> "%24" in each segment) (owned) ... */
  uint32_t *plen;     /* ... its length, UINT32_MAX when dotted (owned) ... */
  const dp_entity *plen_of; /* ... for this entity */
  int shared_paths;   /* two columns of that entity read the same top-level field */
  dp_hasher h;        /* scratch */
  /* set when a cast fails */
  size_t bad_col;
  char bad_value[256];
} dp_row;

int dp_row_init(dp_row *r, size_t ncols);
void dp_row_free(dp_row *r);

#define DP_ROW_KEY_ONLY 1
/* Casts the columns of ent (only key columns with DP_ROW_KEY_ONLY) from the record.
 * On a cast failure returns DP_ECAST with e->msg "column <name>: <reason>" and sets
 * r->bad_col and r->bad_value. */
int dp_row_cast(dp_row *r, const dp_entity *ent, const bson_t *record, int flags, dp_err *e);

/* Column i's path as bronze stores keys, for bson_iter_find_descendant; valid after a
 * dp_row_cast with ent (owned by r). */
const char *dp_row_path(const dp_row *r, size_t i);

enum { DP_HASH_KEY, DP_HASH_SCD1, DP_HASH_SCD2 };
/* Hash over the key columns (primary key order), or the scd1 / scd2 non-key columns. */
void dp_row_hash(dp_row *r, const dp_entity *ent, int which, uint8_t out[16]);

#endif
