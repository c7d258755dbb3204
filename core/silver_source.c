/* silver_source.c - silver's input: the change files of the bronze loads since silver's last
 * commit, or a query of bronze itself; the records bronze rejected; consumed change files. */
#include "silver.h"
#include "silver_int.h"
#include "bronze.h"
#include "jsonbson.h"
#include "log.h"
#include "pg.h"
#include "rawfile.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int dp__silver_source_next(dp__silver_source *src, const bson_t **doc, dp_err *e) {
  if (src->cur) {
    if (mongoc_cursor_next(src->cur, doc)) return 1;
    bson_error_t be;
    if (mongoc_cursor_error(src->cur, &be))
      return dp_err_set(e, DP_EMONGO, "silver: cannot read bronze %s: %s", src->cname, be.message);
    return 0;
  }
  for (;;) {
    if (!src->reader) {
      if (!src->files || !src->files[src->fi]) return 0;
      bson_error_t be;
      src->reader = bson_reader_new_from_file(src->files[src->fi], &be);
      if (!src->reader) return dp_err_set(e, DP_EIO, "silver: cannot open %s: %s", src->files[src->fi], be.message);
    }
    bool eof = false;
    *doc = bson_reader_read(src->reader, &eof);
    if (*doc) return 1;
    if (!eof || !dp_bson_file_whole(src->files[src->fi], (long long)bson_reader_tell(src->reader)))
      return dp_err_set(e, DP_EIO,
                        "silver: change file %s is damaged near byte %lld; remove it and run again "
                        "(silver then reads bronze itself)",
                        src->files[src->fi], (long long)bson_reader_tell(src->reader));
    bson_reader_destroy(src->reader);
    src->reader = NULL;
    src->fi++;
  }
}

void dp__silver_source_close(dp__silver_source *src) {
  if (src->cur) mongoc_cursor_destroy(src->cur);
  if (src->coll) mongoc_collection_destroy(src->coll);
  if (src->reader) bson_reader_destroy(src->reader);
  for (size_t i = 0; src->files && src->files[i]; i++) free(src->files[i]);
  free(src->files);
  memset(src, 0, sizeof *src);
}

/* The bronze documents written by loads that started after since_ms (the start of silver's last
 * committed run, in ms; < 0 for all). Loads are ordered by their run's start time, not by run id:
 * runs of one system never overlap, so start times increase, while run ids need not (serve hands
 * them out when it queues a run, Prefect's are random). */
void dp__silver_source_query(dp__silver_source *src, mongoc_client_t *cli, const char *db, const dp_entity *ent,
                         int64_t since_ms) {
  dp_bronze_collection_name(ent, src->cname, sizeof src->cname);
  src->coll = mongoc_client_get_collection(cli, db, src->cname);
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
  if (since_ms >= 0) {
    bson_t or, a, b, ga, gb;
    BSON_APPEND_ARRAY_BEGIN(&filter, "$or", &or);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &a);
    BSON_APPEND_DOCUMENT_BEGIN(&a, "_dp.run_ts", &ga);
    BSON_APPEND_DATE_TIME(&ga, "$gt", since_ms);
    bson_append_document_end(&a, &ga);
    bson_append_document_end(&or, &a);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &b);
    BSON_APPEND_DOCUMENT_BEGIN(&b, "_dp.deleted_at", &gb);
    BSON_APPEND_DATE_TIME(&gb, "$gt", since_ms);
    bson_append_document_end(&b, &gb);
    bson_append_document_end(&or, &b);
    bson_append_array_end(&filter, &or);
  }
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "data", 1);
  BSON_APPEND_INT32(&proj, "_dp.raw", 1);
  BSON_APPEND_INT32(&proj, "_dp.deleted", 1);
  bson_append_document_end(&opts, &proj);
  src->cur = mongoc_collection_find_with_opts(src->coll, &filter, &opts, NULL);
  bson_destroy(&filter);
  bson_destroy(&opts);
}

/* The change files of the bronze loads of the entity that started after `since` (silver's last
 * committed run's run_ts as text; "": all), in load order,
 * when every such load succeeded and its file is there: 1 (files and *dups filled), 0 when silver
 * must ask bronze instead. A load that was rolled back, and a rollback's own row, changed nothing
 * silver has to read (docs/lifecycle.md#undoing-a-run). */
int dp__silver_change_files(PGconn *c, const dp_entity *ent, const char *dir, const char *since, char ***files,
                        dp_err *e) {
  const char *p[] = {ent->system, ent->name, since};
  PGresult *r = NULL;
  *files = NULL;
  int rc = dp_pg_exec(c,
                      "SELECT run_id::text, status FROM audit.entity_layer_run WHERE system = $1 AND entity = $2 AND layer = 'bronze' "
                      "AND status NOT IN ('skipped', 'rolled_back') AND ($3 = '' OR run_ts > $3::timestamptz) "
                      "AND run_id NOT IN (SELECT run_id FROM audit.system_run WHERE trigger_kind = 'rollback') "
                      "ORDER BY run_ts",
                      3, p, &r, e);
  if (rc) return rc;
  int n = PQntuples(r), ok = 1;
  char **v = calloc((size_t)n + 1, sizeof *v);
  if (!v) { PQclear(r); return dp_err_set(e, DP_ENOMEM, "out of memory"); }
  for (int i = 0; i < n && ok; i++) {
    char path[4200];
    dp_bronze_change_file(dir, PQgetvalue(r, i, 0), path, sizeof path);
    ok = strcmp(PQgetvalue(r, i, 1), "succeeded") == 0 && access(path, R_OK) == 0;
    if (ok) {
      if (!(v[i] = strdup(path))) ok = 0;
    } else {
      dp_log(DP_LOG_INFO, "silver %s.%s: bronze load %s %s; reading bronze itself", ent->system, ent->name,
             PQgetvalue(r, i, 0), strcmp(PQgetvalue(r, i, 1), "succeeded") ? PQgetvalue(r, i, 1) : "left no change file");
    }
  }
  PQclear(r);
  if (!ok) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
    return 0;
  }
  *files = v;
  return 1;
}

/* After a commit every change file in the folder is consumed: it was read, or the bronze query
 * covered its load (runs of a system never overlap, so no later load exists yet); .part files are
 * loads that never finished. A failed removal is harmless: later runs only read files of loads
 * after their own last commit. */
void dp__silver_remove_consumed(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    size_t len = strlen(de->d_name);
    int full = len == 41 && strcmp(de->d_name + 36, ".bson") == 0;
    int part = len == 46 && strcmp(de->d_name + 36, ".bson.part") == 0;
    if (full || part) {
      char path[4400];
      snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
      unlink(path);
    }
  }
  closedir(d);
}

/* The records bronze could not store or key (jsonbson.h), since silver's last commit: each a row
 * of the __rejected table with bronze's reason and the raw reference, counted as read and
 * rejected. The record itself stays in the raw file at that line. */
int dp__silver_bronze_rejects(PGconn *c, mongoc_client_t *cli, const char *db, const dp_entity *ent, const dp_runinfo *run,
                          const char *since, int64_t since_ms, dp_counts *out, dp_err *e) {
  char cname[300];
  /* only the rejects of bronze loads that succeeded: a crashed or failed load may have left some,
   * and its rerun rejects those lines again */
  const char *pa[] = {ent->system, ent->name, since};
  PGresult *ok_runs = NULL;
  int rc = dp_pg_exec(c,
                      "SELECT run_id::text FROM audit.entity_layer_run WHERE system = $1 AND entity = $2 "
                      "AND layer = 'bronze' AND status = 'succeeded' AND ($3 = '' OR run_ts > $3::timestamptz)",
                      3, pa, &ok_runs, e);
  if (rc) return rc;
  if (PQntuples(ok_runs) == 0) {
    PQclear(ok_runs);
    return 0;
  }
  dp_bronze_rejects_collection_name(ent, cname, sizeof cname);
  mongoc_collection_t *coll = mongoc_client_get_collection(cli, db, cname);
  bson_t filter = BSON_INITIALIZER, gt;
  if (since_ms >= 0) {
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "_dp.run_ts", &gt);
    BSON_APPEND_DATE_TIME(&gt, "$gt", since_ms);
    bson_append_document_end(&filter, &gt);
  }
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, NULL, NULL);
  dp_buf q = DP_BUF_INIT;
  dp_buf_puts(&q, "INSERT INTO ");
  dp__silver_tbl(&q, ent, "__rejected");
  dp_buf_puts(&q, " (_dp_run_id, _dp_run_ts, reason, raw_file, raw_line) VALUES ($1, $2, $3, $4, $5)");
  const bson_t *doc;
  while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    const char *reason = "bronze could not store the record", *file = NULL, *rid = NULL;
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.run_id", &it) && BSON_ITER_HOLDS_UTF8(&it))
      rid = bson_iter_utf8(&it, NULL);
    int counted = 0;
    for (int i = 0; rid && i < PQntuples(ok_runs) && !counted; i++) counted = strcmp(PQgetvalue(ok_runs, i, 0), rid) == 0;
    if (!counted) continue;
    char line[24] = "";
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.reason", &it) && BSON_ITER_HOLDS_UTF8(&it))
      reason = bson_iter_utf8(&it, NULL);
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.raw.file", &it) && BSON_ITER_HOLDS_UTF8(&it))
      file = bson_iter_utf8(&it, NULL);
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.raw.line", &it))
      snprintf(line, sizeof line, "%" PRId64, bson_iter_as_int64(&it));
    const char *p[] = {run->id_str, run->ts_str, reason, file, line[0] ? line : NULL};
    rc = dp_pg_exec(c, q.data, 5, p, NULL, e);
    if (rc == 0) {
      out->in++;
      out->rejected++;
    }
  }
  bson_error_t be;
  if (rc == 0 && mongoc_cursor_error(cur, &be))
    rc = dp_err_set(e, DP_EMONGO, "silver: cannot read bronze %s: %s", cname, be.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  mongoc_collection_destroy(coll);
  dp_buf_free(&q);
  PQclear(ok_runs);
  return rc;
}
