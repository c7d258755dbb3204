/* bronze.c - raw JSON Lines -> MongoDB documents keyed by the key hash. */
#include "bronze.h"
#include "hash.h"
#include "log.h"
#include "record.h"
#include "uuid.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define BATCH 1000

typedef struct item {
  uint8_t key[16];
  uint8_t content[16];
  int64_t line;
  bson_t data;
  int keep;       /* last occurrence of its key in the batch */
  int existing;   /* 0 new, 1 same content, 2 changed or deleted */
} item;

void dp_bronze_collection_name(const dp_entity *ent, char *buf, size_t cap) {
  snprintf(buf, cap, "%s__%s", ent->system, ent->name);
}

static int64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int cmp_item_ptr(const void *a, const void *b) {
  const item *x = *(item *const *)a, *y = *(item *const *)b;
  int c = memcmp(x->key, y->key, 16);
  if (c) return c;
  return (x->line > y->line) - (x->line < y->line);
}

static int ensure_indexes(mongoc_collection_t *coll, dp_err *e) {
  bson_t cmd = BSON_INITIALIZER, idx, one, key;
  bson_error_t be;
  BSON_APPEND_UTF8(&cmd, "createIndexes", mongoc_collection_get_name(coll));
  BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &idx);
  BSON_APPEND_DOCUMENT_BEGIN(&idx, "0", &one);
  BSON_APPEND_DOCUMENT_BEGIN(&one, "key", &key);
  BSON_APPEND_INT32(&key, "_dp.run_id", 1);
  bson_append_document_end(&one, &key);
  BSON_APPEND_UTF8(&one, "name", "dp_run_id");
  bson_append_document_end(&idx, &one);
  bson_append_array_end(&cmd, &idx);
  bool ok = mongoc_collection_write_command_with_opts(coll, &cmd, NULL, NULL, &be);
  bson_destroy(&cmd);
  if (!ok) return dp_err_set(e, DP_EMONGO, "bronze: cannot create index: %s", be.message);
  return 0;
}

static void append_dp_block(bson_t *doc, const dp_runinfo *run, const uint8_t content[16],
                            const char *raw_ref, int64_t line, int64_t loaded) {
  bson_t dp, raw;
  BSON_APPEND_DOCUMENT_BEGIN(doc, "_dp", &dp);
  BSON_APPEND_UTF8(&dp, "run_id", run->id_str);
  BSON_APPEND_DATE_TIME(&dp, "run_ts", run->ts_us / 1000);
  BSON_APPEND_DATE_TIME(&dp, "loaded_at", loaded);
  BSON_APPEND_BINARY(&dp, "content_hash", BSON_SUBTYPE_BINARY, content, 16);
  BSON_APPEND_BOOL(&dp, "deleted", false);
  BSON_APPEND_DOCUMENT_BEGIN(&dp, "raw", &raw);
  BSON_APPEND_UTF8(&raw, "file", raw_ref);
  BSON_APPEND_INT64(&raw, "line", line);
  bson_append_document_end(&dp, &raw);
  bson_append_document_end(doc, &dp);
}

/* Looks up which keys of the batch exist and whether their content is the same. */
static int classify(mongoc_collection_t *coll, item **sorted, size_t n, dp_err *e) {
  bson_t filter = BSON_INITIALIZER, idf, in, opts = BSON_INITIALIZER, proj;
  BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &idf);
  BSON_APPEND_ARRAY_BEGIN(&idf, "$in", &in);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (!sorted[i]->keep) continue;
    char ix[16];
    const char *key;
    bson_uint32_to_string((uint32_t)k++, &key, ix, sizeof ix);
    bson_append_binary(&in, key, -1, BSON_SUBTYPE_UUID, sorted[i]->key, 16);
  }
  bson_append_array_end(&idf, &in);
  bson_append_document_end(&filter, &idf);
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "_dp.content_hash", 1);
  BSON_APPEND_INT32(&proj, "_dp.deleted", 1);
  bson_append_document_end(&opts, &proj);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
  const bson_t *doc;
  while (mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    bson_subtype_t st;
    uint32_t len = 0;
    const uint8_t *id = NULL, *ch = NULL;
    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_BINARY(&it))
      bson_iter_binary(&it, &st, &len, &id);
    if (!id || len != 16) continue;
    int deleted = 0;
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.content_hash", &it) &&
        BSON_ITER_HOLDS_BINARY(&it))
      bson_iter_binary(&it, &st, &len, &ch);
    bson_iter_t it2;
    if (bson_iter_init(&it2, doc) && bson_iter_find_descendant(&it2, "_dp.deleted", &it2) &&
        BSON_ITER_HOLDS_BOOL(&it2))
      deleted = bson_iter_bool(&it2);
    /* binary search the sorted batch */
    size_t lo = 0, hi = n;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      int c = memcmp(sorted[mid]->key, id, 16);
      if (c < 0) lo = mid + 1;
      else hi = mid;
    }
    for (size_t i = lo; i < n && memcmp(sorted[i]->key, id, 16) == 0; i++) {
      if (!sorted[i]->keep) continue;
      sorted[i]->existing = (!deleted && ch && len == 16 && memcmp(ch, sorted[i]->content, 16) == 0) ? 1 : 2;
    }
  }
  bson_error_t be;
  int rc = 0;
  if (mongoc_cursor_error(cur, &be)) rc = dp_err_set(e, DP_EMONGO, "bronze: lookup failed: %s", be.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  return rc;
}

static int flush_batch(mongoc_collection_t *coll, const dp_entity *ent, const dp_runinfo *run,
                       const char *raw_ref, item *items, size_t n, dp_counts *out, dp_err *e) {
  int rc = 0;
  item **sorted = calloc(n, sizeof *sorted);
  if (!sorted) return dp_err_set(e, DP_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    sorted[i] = &items[i];
    items[i].keep = 1;
    items[i].existing = 0;
  }
  if (ent->npk > 0) {
    /* Duplicate keys inside one batch: the last record wins (bulk writes are unordered). */
    qsort(sorted, n, sizeof *sorted, cmp_item_ptr);
    for (size_t i = 0; i + 1 < n; i++)
      if (memcmp(sorted[i]->key, sorted[i + 1]->key, 16) == 0) sorted[i]->keep = 0;
    rc = classify(coll, sorted, n, e);
    if (rc) goto cleanup;
  }
  bson_t bopts = BSON_INITIALIZER;
  BSON_APPEND_BOOL(&bopts, "ordered", false);
  mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(coll, &bopts);
  bson_destroy(&bopts);
  bson_t upsert = BSON_INITIALIZER;
  BSON_APPEND_BOOL(&upsert, "upsert", true);
  int64_t loaded = now_ms();
  bson_error_t be;
  size_t ops = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    item *it = &items[i];
    if (!it->keep) continue;
    bson_t sel = BSON_INITIALIZER;
    BSON_APPEND_BINARY(&sel, "_id", BSON_SUBTYPE_UUID, it->key, 16);
    bool ok;
    if (it->existing == 1) {
      /* Same content: only record that this run saw the key. */
      bson_t upd = BSON_INITIALIZER, set;
      BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
      BSON_APPEND_UTF8(&set, "_dp.run_id", run->id_str);
      BSON_APPEND_DATE_TIME(&set, "_dp.run_ts", run->ts_us / 1000);
      BSON_APPEND_UTF8(&set, "_dp.raw.file", raw_ref);
      BSON_APPEND_INT64(&set, "_dp.raw.line", it->line);
      bson_append_document_end(&upd, &set);
      ok = mongoc_bulk_operation_update_one_with_opts(bulk, &sel, &upd, NULL, &be);
      bson_destroy(&upd);
      out->unchanged++;
    } else {
      bson_t doc = BSON_INITIALIZER;
      BSON_APPEND_BINARY(&doc, "_id", BSON_SUBTYPE_UUID, it->key, 16);
      BSON_APPEND_DOCUMENT(&doc, "data", &it->data);
      append_dp_block(&doc, run, it->content, raw_ref, it->line, loaded);
      if (ent->npk == 0) {
        ok = mongoc_bulk_operation_insert_with_opts(bulk, &doc, NULL, &be);
      } else {
        ok = mongoc_bulk_operation_replace_one_with_opts(bulk, &sel, &doc, &upsert, &be);
      }
      bson_destroy(&doc);
      if (it->existing == 2) out->updated++;
      else out->inserted++;
    }
    bson_destroy(&sel);
    if (!ok) rc = dp_err_set(e, DP_EMONGO, "bronze: cannot queue a write: %s", be.message);
    ops++;
  }
  if (rc == 0 && ops > 0) {
    bson_t reply;
    if (!mongoc_bulk_operation_execute(bulk, &reply, &be))
      rc = dp_err_set(e, DP_EMONGO, "bronze: bulk write failed: %s", be.message);
    bson_destroy(&reply);
  }
  mongoc_bulk_operation_destroy(bulk);
  bson_destroy(&upsert);
cleanup:
  free(sorted);
  return rc;
}

/* Full loads: keys that this run did not see are marked deleted. */
static int mark_deleted(mongoc_collection_t *coll, const dp_runinfo *run, int64_t *count, dp_err *e) {
  bson_t sel = BSON_INITIALIZER, ne, upd = BSON_INITIALIZER, set, reply;
  BSON_APPEND_DOCUMENT_BEGIN(&sel, "_dp.run_id", &ne);
  BSON_APPEND_UTF8(&ne, "$ne", run->id_str);
  bson_append_document_end(&sel, &ne);
  BSON_APPEND_BOOL(&sel, "_dp.deleted", false);
  BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
  BSON_APPEND_BOOL(&set, "_dp.deleted", true);
  BSON_APPEND_UTF8(&set, "_dp.deleted_run_id", run->id_str);
  BSON_APPEND_DATE_TIME(&set, "_dp.deleted_at", run->ts_us / 1000);
  bson_append_document_end(&upd, &set);
  bson_error_t be;
  int rc = 0;
  if (!mongoc_collection_update_many(coll, &sel, &upd, NULL, &reply, &be)) {
    rc = dp_err_set(e, DP_EMONGO, "bronze: cannot mark deleted keys: %s", be.message);
  } else {
    bson_iter_t it;
    if (bson_iter_init_find(&it, &reply, "modifiedCount")) *count = bson_iter_as_int64(&it);
  }
  bson_destroy(&reply);
  bson_destroy(&sel);
  bson_destroy(&upd);
  return rc;
}

int dp_bronze_load(mongoc_client_t *cli, const char *db, const dp_entity *ent, const dp_runinfo *run,
                   const char *raw_path, const char *raw_ref, dp_counts *out, dp_err *e) {
  char cname[256];
  int rc = 0;
  FILE *f = NULL;
  char *line = NULL;
  size_t cap = 0;
  item *items = calloc(BATCH, sizeof *items);
  size_t n = 0;
  int64_t lineno = 0;
  dp_row row;
  dp_buf scratch = DP_BUF_INIT;
  memset(out, 0, sizeof *out);
  dp_bronze_collection_name(ent, cname, sizeof cname);
  mongoc_collection_t *coll = mongoc_client_get_collection(cli, db, cname);
  if (!items || dp_row_init(&row, ent->ncols)) {
    free(items);
    mongoc_collection_destroy(coll);
    return dp_err_set(e, DP_ENOMEM, "out of memory");
  }
  rc = ensure_indexes(coll, e);
  if (rc) goto cleanup;
  f = fopen(raw_path, "r");
  if (!f) {
    rc = dp_err_set(e, DP_EIO, "bronze: cannot open raw file %s: %s", raw_path, strerror(errno));
    goto cleanup;
  }
  ssize_t len;
  while ((len = getline(&line, &cap, f)) >= 0) {
    lineno++;
    if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
    if (len == 0) continue;
    item *it = &items[n];
    bson_error_t be;
    if (!bson_init_from_json(&it->data, line, len, &be)) {
      rc = dp_err_set(e, DP_EJSON, "bronze: %s line %lld: %s", raw_ref, (long long)lineno, be.message);
      goto cleanup;
    }
    it->line = lineno;
    out->in++;
    dp_hash_bytes(line, (size_t)len, it->content);
    if (ent->npk > 0) {
      if (dp_row_cast(&row, ent, &it->data, DP_ROW_KEY_ONLY, e)) {
        bson_destroy(&it->data);
        dp_err_prefix(e, "bronze: %s line %lld: primary key ", raw_ref, (long long)lineno);
        rc = DP_ECAST;
        goto cleanup;
      }
      dp_row_hash(&row, ent, DP_HASH_KEY, it->key);
    } else {
      dp_uuid_v7(it->key);
    }
    n++;
    if (n == BATCH) {
      rc = flush_batch(coll, ent, run, raw_ref, items, n, out, e);
      for (size_t i = 0; i < n; i++) bson_destroy(&items[i].data);
      n = 0;
      if (rc) goto cleanup;
    }
  }
  if (ferror(f)) {
    rc = dp_err_set(e, DP_EIO, "bronze: cannot read %s", raw_path);
    goto cleanup;
  }
  if (n > 0) {
    rc = flush_batch(coll, ent, run, raw_ref, items, n, out, e);
    for (size_t i = 0; i < n; i++) bson_destroy(&items[i].data);
    n = 0;
    if (rc) goto cleanup;
  }
  if (ent->full_load && ent->npk > 0) /* whatever silver's delete_detection says */
    rc = mark_deleted(coll, run, &out->deleted, e);
cleanup:
  for (size_t i = 0; i < n; i++) bson_destroy(&items[i].data);
  free(items);
  free(line);
  if (f) fclose(f);
  dp_row_free(&row);
  dp_buf_free(&scratch);
  mongoc_collection_destroy(coll);
  return rc;
}
