/* rawmanifest.c - rewriting a raw file's manifest (see rawmanifest.h). */
#include "rawmanifest.h"
#include "buf.h"
#include "cast.h"
#include "jsonbson.h"
#include "rawcompress.h"
#include "rawfile.h"

#include <bson/bson.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const dp_manifest_set *find_set(const dp_manifest_set *sets, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(sets[i].name, key) == 0) return &sets[i];
  return NULL;
}

/* details with file's last segment replaced and the sets applied, appended to out */
static void edit_details(bson_iter_t *it, bson_t *out, const char *new_base, const dp_manifest_set *sets,
                         size_t n) {
  bson_iter_t d;
  bson_t child;
  bson_append_document_begin(out, "details", -1, &child);
  if (BSON_ITER_HOLDS_DOCUMENT(it) && bson_iter_recurse(it, &d)) {
    while (bson_iter_next(&d)) {
      const char *k = bson_iter_key(&d);
      if (find_set(sets, n, k)) continue;
      if (new_base && strcmp(k, "file") == 0 && BSON_ITER_HOLDS_UTF8(&d)) {
        uint32_t len;
        const char *v = bson_iter_utf8(&d, &len);
        const char *slash = strrchr(v, '/');
        dp_buf f = DP_BUF_INIT;
        if (slash) dp_buf_append(&f, v, (size_t)(slash - v + 1));
        dp_buf_puts(&f, new_base);
        BSON_APPEND_UTF8(&child, "file", f.data);
        dp_buf_free(&f);
        continue;
      }
      bson_append_iter(&child, k, -1, &d);
    }
  }
  for (size_t i = 0; i < n; i++) {
    if (sets[i].kind == DP_MSET_STR) BSON_APPEND_UTF8(&child, sets[i].name, sets[i].str);
    else BSON_APPEND_INT64(&child, sets[i].name, sets[i].num);
  }
  bson_append_document_end(out, &child);
}

int dp_raw_manifest_update(const char *raw_path, const char *new_base, const dp_manifest_set *sets, size_t n,
                           dp_err *e) {
  char mpath[4200];
  dp_raw_manifest_path(raw_path, mpath, sizeof mpath);
  if (access(mpath, F_OK) != 0 && errno == ENOENT) return 0;
  char *text = NULL;
  size_t len = 0;
  int rc = dp_read_file(mpath, &text, &len, e);
  if (rc) return rc;
  bson_t doc, out = BSON_INITIALIZER;
  dp_buf js = DP_BUF_INIT;
  rc = dp_json_to_bson(text, len, &doc, e);
  if (rc) {
    dp_err_prefix(e, "manifest %s: ", mpath);
    goto cleanup;
  }
  bson_iter_t it;
  int had_details = 0;
  if (bson_iter_init(&it, &doc)) {
    while (bson_iter_next(&it)) {
      if (strcmp(bson_iter_key(&it), "details") == 0) {
        edit_details(&it, &out, new_base, sets, n);
        had_details = 1;
      } else {
        bson_append_iter(&out, bson_iter_key(&it), -1, &it);
      }
    }
  }
  if (!had_details) {
    rc = dp_err_set(e, DP_EINVAL, "manifest %s has no details", mpath);
    goto cleanup;
  }
  dp_bson_to_json(&out, &js);
  dp_buf_putc(&js, '\n');
  rc = dp_write_file_atomic(mpath, js.data, js.len, e);
cleanup:
  bson_destroy(&doc);
  bson_destroy(&out);
  dp_buf_free(&js);
  free(text);
  return rc;
}
