/* bronze_convert.h - finding and converting bronze collections whose _ids have the binary form
 * written before dp-engine 0.2 (`dp-engine migrate`, `dp-engine migrate --bronze-ids`). */
#ifndef DP_BRONZE_CONVERT_H
#define DP_BRONZE_CONVERT_H

#include <libpq-fe.h>
#include <mongoc/mongoc.h>
#include "error.h"

/* A list of names (owned: dp_strlist_free). */
typedef struct dp_strlist {
  char **v;
  size_t n;
} dp_strlist;
void dp_strlist_free(dp_strlist *l);

/* The keyed collections of bronze database db that hold at least one binary _id, into out
 * (owned by the caller). 0 or an error. */
int dp_bronze_legacy_collections(mongoc_client_t *cli, const char *db, dp_strlist *out, dp_err *e);

/* What one conversion did (the figures of its audit row). */
typedef struct dp_bronze_conversion {
  int64_t audit_id;         /* audit.bronze_id_conversion.id, 0 when nothing needed converting */
  int64_t documents_before, binary_before, copied, already_copied, removed, documents_after;
} dp_bronze_conversion;

/* Converts collection coll of db: every document with a binary _id is copied with the text _id
 * of the same key, then the binary ones are removed; audited in audit.bronze_id_conversion
 * (through the autocommit connection audit). Safe to run again after a failure or a crash. */
int dp_bronze_convert_ids(mongoc_client_t *cli, const char *db, PGconn *audit, const char *coll,
                          dp_bronze_conversion *cv, dp_err *e);

#endif
