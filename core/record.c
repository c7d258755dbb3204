/* record.c - cast a record to typed canonical texts and hash them. */
#include "record.h"
#include "cast.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dp_row_init(dp_row *r, size_t ncols) {
  memset(r, 0, sizeof *r);
  r->ncols = ncols;
  r->off = calloc(ncols ? ncols : 1, sizeof *r->off);
  r->len = calloc(ncols ? ncols : 1, sizeof *r->len);
  r->null = calloc(ncols ? ncols : 1, 1);
  if (!r->off || !r->len || !r->null || dp_buf_reserve(&r->text, 256) != 0) {
    dp_row_free(r);
    return DP_ENOMEM;
  }
  return 0;
}

void dp_row_free(dp_row *r) {
  dp_buf_free(&r->text);
  dp_hasher_free(&r->h);
  free(r->off);
  free(r->len);
  free(r->null);
  r->off = r->len = NULL;
  r->null = NULL;
}

int dp_row_cast(dp_row *r, const dp_entity *ent, const bson_t *record, int flags, dp_err *e) {
  dp_buf_reset(&r->text);
  for (size_t i = 0; i < ent->ncols; i++) {
    const dp_column *c = &ent->cols[i];
    r->null[i] = 1;
    r->off[i] = r->len[i] = 0;
    if ((flags & DP_ROW_KEY_ONLY) && !c->key) continue;
    bson_iter_t it, child;
    const bson_iter_t *src = NULL;
    if (bson_iter_init(&it, record)) {
      if (strchr(c->path, '.') ? bson_iter_find_descendant(&it, c->path, &child)
                               : bson_iter_find(&it, c->path))
        src = strchr(c->path, '.') ? &child : &it;
    }
    int is_null = 0;
    size_t start = r->text.len;
    int rc = dp_cast_bson(c, src, &r->text, &is_null, e);
    if (rc == 0 && c->key && is_null) rc = dp_err_set(e, DP_ECAST, "primary key value is missing or null");
    if (rc) {
      r->bad_col = i;
      r->bad_value[0] = '\0';
      if (src) {
        dp_buf v = DP_BUF_INIT;
        dp_bson_value_to_json(src, &v);
        snprintf(r->bad_value, sizeof r->bad_value, "%s", v.data ? v.data : "");
        dp_buf_free(&v);
      }
      dp_err_prefix(e, "column %s: ", c->name);
      return rc;
    }
    r->null[i] = (unsigned char)is_null;
    r->off[i] = start;
    r->len[i] = r->text.len - start;
  }
  return 0;
}

static void add_col(dp_row *r, const dp_column *c, size_t i) {
  dp_hasher_add(&r->h, dp_type_tag(c->type), r->null[i] ? NULL : r->text.data + r->off[i],
                r->len[i]);
}

void dp_row_hash(dp_row *r, const dp_entity *ent, int which, uint8_t out[16]) {
  dp_hasher_reset(&r->h);
  if (which == DP_HASH_KEY) {
    for (size_t k = 0; k < ent->npk; k++) add_col(r, &ent->cols[ent->pk[k]], ent->pk[k]);
  } else {
    for (size_t i = 0; i < ent->ncols; i++) {
      const dp_column *c = &ent->cols[i];
      if (c->key || c->scd1 != (which == DP_HASH_SCD1)) continue;
      add_col(r, c, i);
    }
  }
  dp_hasher_digest(&r->h, out);
}
