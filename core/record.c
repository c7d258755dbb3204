/* record.c - cast a record to typed canonical texts and hash them. */
#include "record.h"
#include "cast.h"
#include "json.h"
#include "jsonbson.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dp_row_init(dp_row *r, size_t ncols) {
  memset(r, 0, sizeof *r);
  r->ncols = ncols;
  r->off = calloc(ncols ? ncols : 1, sizeof *r->off);
  r->len = calloc(ncols ? ncols : 1, sizeof *r->len);
  r->null = calloc(ncols ? ncols : 1, 1);
  /* 128-byte aligned slots (record.h): calloc's 16 bytes are not enough */
  void *at = NULL;
  if (posix_memalign(&at, 128, (ncols ? ncols : 1) * sizeof *r->at) == 0) memset(at, 0, (ncols ? ncols : 1) * sizeof *r->at);
  else at = NULL;
  r->at = at;
  r->has = calloc(ncols ? ncols : 1, 1);
  r->plen = calloc(ncols ? ncols : 1, sizeof *r->plen);
  r->epath = calloc(ncols ? ncols : 1, sizeof *r->epath);
  if (!r->epath || !r->off || !r->len || !r->null || !r->at || !r->has || !r->plen || dp_buf_reserve(&r->text, 256) != 0) {
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
  free(r->at);
  free(r->has);
  free(r->plen);
  for (size_t i = 0; r->epath && i < r->ncols; i++) free(r->epath[i]);
  free(r->epath);
  r->epath = NULL;
  r->plen = NULL;
  r->plen_of = NULL;
  r->off = r->len = NULL;
  r->null = r->has = NULL;
  r->at = NULL;
}

/* Finds every column's top-level field in one pass over the record: the first field of that
 * name counts (as bson_iter_find would), whatever the order of fields and columns. */
static void find_top_level(dp_row *r, const dp_entity *ent, const bson_t *record, int key_only) {
  size_t nc = ent->ncols;
  memset(r->has, 0, nc);
  if (r->plen_of != ent) {
    r->shared_paths = 0;
    for (size_t i = 0; i < nc; i++) {
      /* each segment of the path encoded as bronze encodes keys */
      const char *p = ent->cols[i].path;
      dp_buf ep = DP_BUF_INIT;
      for (;;) {
        const char *dot = strchr(p, '.');
        size_t sn = dot ? (size_t)(dot - p) : strlen(p);
        dp_key_encode(p, sn, &ep);
        if (!dot) break;
        dp_buf_putc(&ep, '.');
        p = dot + 1;
      }
      free(r->epath[i]);
      r->epath[i] = ep.data ? dp_buf_steal(&ep) : strdup("");
      r->plen[i] = strchr(ent->cols[i].path, '.') ? UINT32_MAX : (uint32_t)strlen(r->epath[i]);
      for (size_t j = 0; j < i; j++) r->shared_paths |= strcmp(ent->cols[i].path, ent->cols[j].path) == 0;
    }
    r->plen_of = ent;
  }
  bson_iter_t it;
  if (nc == 0 || !bson_iter_init(&it, record)) return;
  /* the columns looked for at the top level: once all are found the rest of the record is not
   * read (a key column often comes first) */
  size_t want = 0, got = 0;
  for (size_t i = 0; i < nc; i++) want += r->plen[i] != UINT32_MAX && (!key_only || ent->cols[i].key);
  size_t hint = 0; /* fields usually come in column order: try the next column first */
  while (got < want && bson_iter_next(&it)) {
    uint32_t klen = bson_iter_key_len(&it);
    const char *key = bson_iter_key(&it);
    for (size_t n = 0, i = hint; n < nc; n++, i = i + 1 == nc ? 0 : i + 1) {
      const dp_column *c = &ent->cols[i];
      if (r->has[i] || r->plen[i] != klen || (key_only && !c->key) || memcmp(r->epath[i], key, klen) != 0) continue;
      r->at[i].it = it;
      r->has[i] = 1;
      got++;
      hint = i + 1 == nc ? 0 : i + 1;
      if (!r->shared_paths) break; /* else other columns may read the same field */
    }
  }
}

int dp_row_cast(dp_row *r, const dp_entity *ent, const bson_t *record, int flags, dp_err *e) {
  dp_buf_reset(&r->text);
  find_top_level(r, ent, record, (flags & DP_ROW_KEY_ONLY) != 0);
  for (size_t i = 0; i < ent->ncols; i++) {
    const dp_column *c = &ent->cols[i];
    r->null[i] = 1;
    r->off[i] = r->len[i] = 0;
    if ((flags & DP_ROW_KEY_ONLY) && !c->key) continue;
    bson_iter_t it, child;
    const bson_iter_t *src = NULL;
    if (r->plen[i] != UINT32_MAX) {
      if (r->has[i]) src = &r->at[i].it;
    } else if (bson_iter_init(&it, record) && bson_iter_find_descendant(&it, r->epath[i], &child)) {
      src = &child;
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
        size_t keep = v.data ? dp_utf8_prefix(v.data, v.len, sizeof r->bad_value - 1) : 0;
        memcpy(r->bad_value, v.data ? v.data : "", keep);
        r->bad_value[keep] = '\0';
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

const char *dp_row_path(const dp_row *r, size_t i) { return r->epath[i]; }

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
