/* lifecycle.h - what retention, forget and rollback share (docs/lifecycle.md): the clock, the
 * tables and folders of an entity, its raw files. An entity's lifecycle settings (retention.*
 * and raw.compression) are its dp_entity's lifecycle field (meta.h), read by the bridge. */
#ifndef DP_LIFECYCLE_H
#define DP_LIFECYCLE_H

#include <stddef.h>
#include "meta.h" /* dp_lifecycle */

struct dp_err;

/* Now, in seconds since the epoch: DP_TEST_NOW when set (the specs' injectable clock), else
 * the wall clock. */
long long dp_lifecycle_now(void);
/* Appends the quoted silver table of system.entity (suffix "" or "__rejected") to b. */
struct dp_buf;
void dp_lifecycle_silver_table(struct dp_buf *b, const char *system, const char *entity, const char *suffix);
/* The entity's bronze state folder DP_DATA_DIR/bronze/<system>/<entity> and its raw folder
 * DP_DATA_DIR/raw/<system>/<entity>. */
void dp_lifecycle_bronze_dir(const char *data_dir, const char *system, const char *entity, char *buf, size_t cap);
void dp_lifecycle_raw_dir(const char *data_dir, const char *system, const char *entity, char *buf, size_t cap);

/* The raw files (X.jsonl, X.jsonl.gz; not temporary files or manifests) under dir, at any depth,
 * in name order: *out gets a heap array of heap paths (caller frees each and the array), *n
 * how many. A missing dir gives none. 0, or DP_ENOMEM / DP_EIO. */
int dp_lifecycle_raw_files(const char *dir, char ***out, size_t *n, struct dp_err *e);
void dp_lifecycle_free_list(char **list, size_t n);

#endif
