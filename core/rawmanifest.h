/* rawmanifest.h - changing a raw file's manifest (<run_id>.manifest.json) when the file is
 * compressed or rewritten, so that it keeps describing the file beside it. */
#ifndef DP_RAWMANIFEST_H
#define DP_RAWMANIFEST_H

#include <stddef.h>
#include <stdint.h>
#include "error.h"

enum { DP_MSET_STR, DP_MSET_INT };
/* One field of the manifest's "details" to set (added, or replacing the one there). */
typedef struct dp_manifest_set {
  const char *name;
  int kind;        /* DP_MSET_STR: str; DP_MSET_INT: num */
  const char *str;
  int64_t num;
} dp_manifest_set;

/* Rewrites the manifest of raw_path (dp_raw_manifest_path) atomically: details.file gets
 * new_base as its last path segment (NULL: unchanged), then sets[0..n) are applied. A raw file
 * without a manifest (written before manifests existed) is left so: 0. */
int dp_raw_manifest_update(const char *raw_path, const char *new_base, const dp_manifest_set *sets, size_t n,
                           dp_err *e);

#endif
