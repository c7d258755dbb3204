/* rollback_bronze.c - bronze back to the state before a run: the entity's earlier loads are
 * loaded again from their raw files into a scratch collection "S__E__rollback", and every
 * document the run wrote or marked deleted is put back as the scratch collection has it (or
 * removed) (docs/lifecycle.md#undoing-a-run). Bronze's own code is used as is (dp_bronze_load). */
#include "rollback_int.h"
#include "bronze.h"
#include "buf.h"
#include "pg.h"
#include "rawcompress.h"
#include "uuid.h"

#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ID_BATCH 1000 /* bronze ids per find / bulk write */


/* {$or: [{_dp.run_id: run}, {_dp.deleted_run_id: run}]}: the documents the run wrote or marked. */
static void touched_filter(bson_t *f, const char *run) {
  bson_t or, a, b;
  BSON_APPEND_ARRAY_BEGIN(f, "$or", &or);
  BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &a);
  BSON_APPEND_UTF8(&a, "_dp.run_id", run);
  bson_append_document_end(&or, &a);
  BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &b);
  BSON_APPEND_UTF8(&b, "_dp.deleted_run_id", run);
  bson_append_document_end(&or, &b);
  bson_append_array_end(f, &or);
}

/* The ids of the documents the run touched: *ids (owned by the caller) and *n. */
static int touched_ids(mongoc_collection_t *coll, const char *run, uint8_t (**ids)[16], size_t *n, dp_err *e) {
  bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
  touched_filter(&f, run);
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "_id", 1);
  bson_append_document_end(&opts, &proj);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &f, &opts, NULL);
  const bson_t *doc;
  size_t cap = 0;
  int rc = 0;
  *ids = NULL;
  *n = 0;
  while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    uint8_t key[16];
    if (!bson_iter_init_find(&it, doc, "_id") || !dp_bronze_iter_id(&it, key)) continue;
    if (*n == cap) {
      cap = cap ? cap * 2 : 256;
      uint8_t(*g)[16] = realloc(*ids, cap * sizeof *g);
      if (!g) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); break; }
      *ids = g;
    }
    memcpy((*ids)[(*n)++], key, 16);
  }
  bson_error_t be;
  if (rc == 0 && mongoc_cursor_error(cur, &be))
    rc = dp_err_set(e, DP_EMONGO, "bronze %s: %s", mongoc_collection_get_name(coll), be.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(&f);
  bson_destroy(&opts);
  return rc;
}

static int cmp_id(const void *a, const void *b) { return memcmp(a, b, 16); }

/* The keys the run deleted whose bronze document is gone since (retention purged documents
 * deleted that long ago): silver's tombstones of the run name them (_dp_key_hash is the bronze
 * id). Added to *ids (n), once each, so that they are put back from the earlier loads too. */
static int add_purged_ids(dp_engine *eng, const dp_entity *ent, const char *run, uint8_t (**ids)[16], size_t *n,
                          dp_err *e) {
  char name[300];
  dp_buf t = DP_BUF_INIT, q = DP_BUF_INIT;
  snprintf(name, sizeof name, "%s__%s", ent->system, ent->name);
  dp_pg_qualified(&t, "silver", name);
  const char *pt[] = {t.data, run};
  PGresult *r = NULL;
  int rc = dp_pg_exec(eng->data, "SELECT to_regclass($1) IS NOT NULL", 1, pt, &r, e);
  int have = rc == 0 && PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  r = NULL;
  if (have) {
    dp_buf_printf(&q, "SELECT DISTINCT _dp_key_hash::text FROM %s WHERE _dp_run_id = $1::uuid AND _dp_is_deleted",
                  t.data);
    rc = dp_pg_exec(eng->data, q.data, 1, pt + 1, &r, e);
  }
  size_t sorted = *n; /* the touched ids, sorted to look the tombstones' keys up */
  if (sorted) qsort(*ids, sorted, sizeof **ids, cmp_id);
  for (int i = 0; have && rc == 0 && i < PQntuples(r); i++) {
    uint8_t key[16];
    if (dp_uuid_parse(PQgetvalue(r, i, 0), key) != 0 || (sorted && bsearch(key, *ids, sorted, sizeof **ids, cmp_id)))
      continue;
    uint8_t(*g)[16] = realloc(*ids, (*n + 1) * sizeof *g);
    if (!g) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); break; }
    *ids = g;
    memcpy((*ids)[(*n)++], key, 16);
  }
  PQclear(r);
  dp_buf_free(&t);
  dp_buf_free(&q);
  return rc;
}

/* Drops a collection; one that is not there is fine. */
static int drop_collection(mongoc_client_t *cli, const char *db, const char *name, dp_err *e) {
  mongoc_collection_t *c = mongoc_client_get_collection(cli, db, name);
  bson_error_t be;
  int rc = 0;
  if (!mongoc_collection_drop(c, &be) && !strstr(be.message, "ns not found") && be.code != 26)
    rc = dp_err_set(e, DP_EMONGO, "cannot drop %s: %s", name, be.message);
  mongoc_collection_destroy(c);
  return rc;
}

/* The scratch entity: the same columns, collection "S__E__rollback". name: its storage. */
static dp_entity scratch_entity(const dp_entity *ent, char *name, size_t cap) {
  dp_entity s = *ent;
  snprintf(name, cap, "%s__rollback", ent->name);
  s.name = name;
  return s;
}

/* The entity's earlier bronze loads: succeeded, before the run, in run order (replays included):
 * run id, start in microseconds, raw file (relative to DP_DATA_DIR). *r: the caller clears it. */
static int earlier_loads(dp_engine *eng, const dp_entity *ent, const char *run, PGresult **r, dp_err *e) {
  const char *p[] = {ent->system, ent->name, run};
  return dp_pg_exec(eng->audit,
                    "SELECT run_id::text, floor(extract(epoch FROM run_ts) * 1000000)::bigint, details->>'file' "
                    "FROM audit.entity_layer_run WHERE system = $1 AND entity = $2 AND layer = 'bronze' "
                    "AND status = 'succeeded' AND details ? 'file' "
                    "AND run_ts < (SELECT run_ts FROM audit.system_run WHERE run_id = $3::uuid) ORDER BY run_ts",
                    3, p, r, e);
}

/* Before anything changes: every raw file the rebuild reads is there (plain or gzip-compressed). */
static int check_raw_files(dp_engine *eng, const dp_entity *ent, const char *run, dp_err *e) {
  PGresult *r = NULL;
  int rc = earlier_loads(eng, ent, run, &r, e);
  for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
    char path[4400], gz[4410];
    snprintf(path, sizeof path, "%s/%s", eng->cfg.data_dir, PQgetvalue(r, i, 2));
    snprintf(gz, sizeof gz, "%s.gz", path);
    if (access(path, R_OK) != 0 && access(gz, R_OK) != 0)
      rc = dp_err_set(e, DP_ENOTFOUND,
                      "bronze %s.%s: the raw file %s of run %s is gone (retention, or quarantined by a rollback): "
                      "the bronze state before run %s cannot be rebuilt; nothing was changed",
                      ent->system, ent->name, path, PQgetvalue(r, i, 0), run);
    else if ((rc = dp_raw_verify(path, e)) != 0) /* read whole: what its manifest says it holds */
      dp_err_prefix(e, "bronze %s.%s: the state before run %s cannot be rebuilt (nothing was changed): ", ent->system,
                    ent->name, run);
  }
  PQclear(r);
  return rc;
}

/* Loads the earlier loads from their raw files into the scratch collection, each with its own
 * run id and start: bronze as it was before the run. */
static int build_scratch(dp_engine *eng, const dp_entity *ent, const char *run, dp_err *e) {
  char sname[300], cname[300];
  dp_entity s = scratch_entity(ent, sname, sizeof sname);
  dp_bronze_collection_name(&s, cname, sizeof cname);
  int rc = drop_collection(eng->mongo, eng->cfg.bronze_db, cname, e);
  if (rc) return rc;
  PGresult *r = NULL;
  if ((rc = earlier_loads(eng, ent, run, &r, e)) != 0) return rc;
  for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
    dp_runinfo ri;
    const char *file = PQgetvalue(r, i, 2);
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", eng->cfg.data_dir, file);
    if ((rc = dp_runinfo_from_id(&ri, PQgetvalue(r, i, 0), e)) != 0) break;
    dp_runinfo_set_ts(&ri, strtoll(PQgetvalue(r, i, 1), NULL, 10));
    dp_bronze_io io = {NULL, NULL, 0, 0};
    dp_counts n;
    rc = dp_bronze_load(eng->mongo, eng->cfg.bronze_db, &s, &ri, path, file, &io, &n, e);
    if (rc)
      dp_err_prefix(e, "bronze %s.%s: cannot rebuild the state before run %s from the raw file %s of run %s: ",
                    ent->system, ent->name, run, file, PQgetvalue(r, i, 0));
  }
  PQclear(r);
  return rc;
}

/* Puts the touched documents back as the scratch collection has them (removed when it has none),
 * in batches; counts into it. */
static int put_back(mongoc_collection_t *real, mongoc_collection_t *scratch, uint8_t (*ids)[16], size_t n,
                    dp__rb_item *it, dp_err *e) {
  int rc = 0;
  for (size_t at = 0; at < n && rc == 0; at += ID_BATCH) {
    size_t m = n - at < ID_BATCH ? n - at : ID_BATCH;
    char *found = calloc(m, 1);
    if (!found) return dp_err_set(e, DP_ENOMEM, "out of memory");
    bson_t f = BSON_INITIALIZER, in, idf;
    BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &idf);
    BSON_APPEND_ARRAY_BEGIN(&idf, "$in", &in);
    for (size_t i = 0; i < m; i++) {
      char ix[16];
      const char *k;
      bson_uint32_to_string((uint32_t)i, &k, ix, sizeof ix);
      dp_bronze_append_id(&in, k, ids[at + i]);
    }
    bson_append_array_end(&idf, &in);
    bson_append_document_end(&f, &idf);
    bson_t bopts = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&bopts, "ordered", false);
    mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(real, &bopts);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(scratch, &f, NULL, NULL);
    const bson_t *doc;
    bson_error_t be;
    while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
      bson_iter_t iter;
      uint8_t key[16];
      if (!bson_iter_init_find(&iter, doc, "_id") || !dp_bronze_iter_id(&iter, key)) continue;
      for (size_t i = 0; i < m; i++)
        if (memcmp(ids[at + i], key, 16) == 0) found[i] = 1;
      bson_t sel = BSON_INITIALIZER, ro = BSON_INITIALIZER;
      dp_bronze_append_id(&sel, "_id", key);
      BSON_APPEND_BOOL(&ro, "upsert", true);
      if (!mongoc_bulk_operation_replace_one_with_opts(bulk, &sel, doc, &ro, &be))
        rc = dp_err_set(e, DP_EMONGO, "bronze: %s", be.message);
      bson_destroy(&sel);
      bson_destroy(&ro);
      it->bronze_rebuilt++;
    }
    if (rc == 0 && mongoc_cursor_error(cur, &be)) rc = dp_err_set(e, DP_EMONGO, "bronze scratch: %s", be.message);
    for (size_t i = 0; i < m && rc == 0; i++) {
      if (found[i]) continue;
      bson_t sel = BSON_INITIALIZER;
      dp_bronze_append_id(&sel, "_id", ids[at + i]);
      if (!mongoc_bulk_operation_remove_one_with_opts(bulk, &sel, NULL, &be))
        rc = dp_err_set(e, DP_EMONGO, "bronze: %s", be.message);
      bson_destroy(&sel);
      it->bronze_removed++;
    }
    bson_t reply;
    if (rc == 0 && !mongoc_bulk_operation_execute(bulk, &reply, &be))
      rc = dp_err_set(e, DP_EMONGO, "bronze: cannot put documents back: %s", be.message);
    if (rc == 0) bson_destroy(&reply);
    mongoc_cursor_destroy(cur);
    mongoc_bulk_operation_destroy(bulk);
    bson_destroy(&f);
    bson_destroy(&bopts);
    free(found);
  }
  return rc;
}

/* Removes the entity's key file (written by the undone load or a later one) and the run's change
 * file: the next load reads the collection once. */
static void remove_bronze_files(dp_engine *eng, const dp_entity *ent, const char *run) {
  char dir[4200], path[4400];
  snprintf(dir, sizeof dir, "%s/bronze/%s/%s", eng->cfg.data_dir, ent->system, ent->name);
  snprintf(path, sizeof path, "%s/keys.idx", dir);
  unlink(path);
  dp_bronze_change_file(dir, run, path, sizeof path);
  unlink(path);
  strncat(path, ".part", sizeof path - strlen(path) - 1);
  unlink(path);
}

/* Bronze back to the state before the run (plan only: counts the touched documents). */
int dp__rollback_bronze(dp_engine *eng, const dp_entity *ent, const char *run, int dry_run, dp__rb_item *it, dp_err *e) {
  char cname[300], rname[300], sname[300], scname[300];
  dp_bronze_collection_name(ent, cname, sizeof cname);
  dp_bronze_rejects_collection_name(ent, rname, sizeof rname);
  dp_entity s = scratch_entity(ent, sname, sizeof sname);
  dp_bronze_collection_name(&s, scname, sizeof scname);
  mongoc_collection_t *real = mongoc_client_get_collection(eng->mongo, eng->cfg.bronze_db, cname);
  mongoc_collection_t *rej = mongoc_client_get_collection(eng->mongo, eng->cfg.bronze_db, rname);
  uint8_t(*ids)[16] = NULL;
  size_t n = 0;
  bson_error_t be;
  bson_t rf = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&rf, "_dp.run_id", run);
  int rc = touched_ids(real, run, &ids, &n, e);
  if (rc == 0) rc = add_purged_ids(eng, ent, run, &ids, &n, e);
  if (rc) goto cleanup;
  it->bronze_touched = (int64_t)n;
  if (dry_run) {
    if ((rc = check_raw_files(eng, ent, run, e)) != 0) goto cleanup;
    int64_t k = mongoc_collection_count_documents(rej, &rf, NULL, NULL, NULL, &be);
    it->bronze_rejects_removed = k > 0 ? k : 0;
    goto cleanup;
  }
  if (n > 0) {
    if ((rc = build_scratch(eng, ent, run, e)) != 0) goto cleanup;
    mongoc_collection_t *scratch = mongoc_client_get_collection(eng->mongo, eng->cfg.bronze_db, scname);
    rc = put_back(real, scratch, ids, n, it, e);
    mongoc_collection_destroy(scratch);
    if (rc) goto cleanup;
  }
  bson_t reply;
  if (!mongoc_collection_delete_many(rej, &rf, NULL, &reply, &be)) {
    rc = dp_err_set(e, DP_EMONGO, "bronze %s: cannot delete the run's rejects: %s", rname, be.message);
    goto cleanup;
  }
  bson_iter_t ri;
  if (bson_iter_init_find(&ri, &reply, "deletedCount")) it->bronze_rejects_removed = bson_iter_as_int64(&ri);
  bson_destroy(&reply);
  remove_bronze_files(eng, ent, run);
cleanup:
  if (!dry_run && n > 0) { /* the scratch collections, whatever happened */
    dp_err tmp;
    char srname[300];
    dp_bronze_rejects_collection_name(&s, srname, sizeof srname);
    drop_collection(eng->mongo, eng->cfg.bronze_db, scname, &tmp);
    drop_collection(eng->mongo, eng->cfg.bronze_db, srname, &tmp);
  }
  free(ids);
  bson_destroy(&rf);
  mongoc_collection_destroy(real);
  mongoc_collection_destroy(rej);
  return rc;
}

