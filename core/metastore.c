/* metastore.c - pushed metadata in MongoDB: stage, flip one pointer, clean up; read current. */
#include "metastore.h"
#include "log.h"
#include "uuid.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static const char *FILES[DP_META_NFILES] = {"systems.json", "entities.json", "gold.json"};
/* Collections of the items, and the keys of the texts in a push document ("." is not safe in
 * a MongoDB field name). */
static const char *COLLS[DP_META_NFILES] = {"systems", "entities", "gold"};

#define MAX_TEXTS (15 * 1024 * 1024) /* a push document must stay under MongoDB's 16 MiB */
#define READ_TRIES 3

const char *dp_metastore_file(int i) { return i >= 0 && i < DP_META_NFILES ? FILES[i] : "?"; }

static int64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int mongo_err(dp_err *e, const char *what, const char *db, const bson_error_t *be) {
  return dp_err_set(e, DP_EMONGO, "metadata push: cannot %s in MongoDB database %s: %s", what, db, be->message);
}

/* Reads the pointer document. Sets *found; copies push_id and hash. */
static int read_pointer(mongoc_client_t *cli, const char *db, int *found, char push_id[37], char hash[65],
                        int64_t *pushed_at, dp_err *e) {
  mongoc_collection_t *coll = mongoc_client_get_collection(cli, db, "current");
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&filter, "_id", "current");
  BSON_APPEND_INT64(&opts, "limit", 1);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
  const bson_t *doc;
  int rc = 0;
  *found = 0;
  push_id[0] = hash[0] = '\0';
  if (pushed_at) *pushed_at = 0;
  if (mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, "push_id") && BSON_ITER_HOLDS_UTF8(&it)) {
      snprintf(push_id, 37, "%s", bson_iter_utf8(&it, NULL));
      *found = 1;
    }
    if (bson_iter_init_find(&it, doc, "hash") && BSON_ITER_HOLDS_UTF8(&it))
      snprintf(hash, 65, "%s", bson_iter_utf8(&it, NULL));
    if (pushed_at && bson_iter_init_find(&it, doc, "pushed_at") && BSON_ITER_HOLDS_DATE_TIME(&it))
      *pushed_at = bson_iter_date_time(&it);
  }
  bson_error_t be;
  if (mongoc_cursor_error(cur, &be))
    rc = dp_err_set(e, DP_EMONGO, "cannot read %s.current from MongoDB: %s", db, be.message);
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(coll);
  bson_destroy(&filter);
  bson_destroy(&opts);
  return rc;
}

/* Writes the push document: the exact texts, their hash and where they came from. */
static int insert_push_doc(mongoc_client_t *cli, const char *db, const dp_metastore_set *set, const char *push_id,
                           int64_t at, dp_err *e) {
  mongoc_collection_t *coll = mongoc_client_get_collection(cli, db, "pushes");
  bson_t doc = BSON_INITIALIZER, counts, files;
  BSON_APPEND_UTF8(&doc, "_id", push_id);
  BSON_APPEND_UTF8(&doc, "hash", set->hash);
  BSON_APPEND_DATE_TIME(&doc, "pushed_at", at);
  BSON_APPEND_UTF8(&doc, "source", set->source ? set->source : "");
  BSON_APPEND_UTF8(&doc, "engine_version", set->engine_version ? set->engine_version : "");
  BSON_APPEND_DOCUMENT_BEGIN(&doc, "counts", &counts);
  for (int i = 0; i < DP_META_NFILES; i++) BSON_APPEND_INT64(&counts, COLLS[i], (int64_t)set->nitems[i]);
  bson_append_document_end(&doc, &counts);
  BSON_APPEND_DOCUMENT_BEGIN(&doc, "files", &files);
  for (int i = 0; i < DP_META_NFILES; i++)
    if (set->texts[i]) bson_append_utf8(&files, COLLS[i], -1, set->texts[i], (int)set->lens[i]);
  bson_append_document_end(&doc, &files);
  bson_error_t be;
  int rc = 0;
  if (!mongoc_collection_insert_one(coll, &doc, NULL, NULL, &be)) rc = mongo_err(e, "stage the push", db, &be);
  bson_destroy(&doc);
  mongoc_collection_destroy(coll);
  return rc;
}

/* Writes one document per item into its collection: _id "<push>/<id>", _dp, the item. */
static int insert_items(mongoc_client_t *cli, const char *db, int which, const dp_metastore_set *set,
                        const char *push_id, dp_err *e) {
  size_t n = set->nitems[which];
  if (n == 0) return 0;
  int rc = 0;
  bson_t *docs = calloc(n, sizeof *docs);
  const bson_t **ptrs = calloc(n, sizeof *ptrs);
  size_t built = 0;
  if (!docs || !ptrs) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); goto cleanup; }
  for (size_t i = 0; i < n; i++) {
    const dp_metastore_item *it = &set->items[which][i];
    bson_t item, dp;
    bson_error_t be;
    if (!bson_init_from_json(&item, it->json, -1, &be)) {
      rc = dp_err_set(e, DP_EJSON, "metadata push: %s %s is not a JSON object: %s", COLLS[which], it->id, be.message);
      goto cleanup;
    }
    char id[512];
    snprintf(id, sizeof id, "%s/%s", push_id, it->id);
    bson_init(&docs[i]);
    built++;
    BSON_APPEND_UTF8(&docs[i], "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&docs[i], "_dp", &dp);
    BSON_APPEND_UTF8(&dp, "push_id", push_id);
    BSON_APPEND_INT64(&dp, "index", (int64_t)i);
    bson_append_document_end(&docs[i], &dp);
    bson_concat(&docs[i], &item);
    bson_destroy(&item);
    ptrs[i] = &docs[i];
  }
  {
    mongoc_collection_t *coll = mongoc_client_get_collection(cli, db, COLLS[which]);
    bson_error_t be;
    if (!mongoc_collection_insert_many(coll, ptrs, n, NULL, NULL, &be)) rc = mongo_err(e, "stage the push", db, &be);
    mongoc_collection_destroy(coll);
  }
cleanup:
  for (size_t i = 0; i < built; i++) bson_destroy(&docs[i]);
  free(docs);
  free(ptrs);
  return rc;
}

/* Deletes item documents whose push id compares op ("$lt" or "$eq") to push_id. Push ids are
 * UUID v7 texts: they sort by time, so "$lt" removes older sets (and the leftovers of pushes
 * that failed) but never a newer set another push may be staging. */
static int delete_items(mongoc_client_t *cli, const char *db, const char *op, const char *push_id, dp_err *e) {
  int rc = 0;
  for (int i = 0; i < DP_META_NFILES && rc == 0; i++) {
    mongoc_collection_t *coll = mongoc_client_get_collection(cli, db, COLLS[i]);
    bson_t filter = BSON_INITIALIZER, cond;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "_dp.push_id", &cond);
    BSON_APPEND_UTF8(&cond, op, push_id);
    bson_append_document_end(&filter, &cond);
    bson_error_t be;
    if (!mongoc_collection_delete_many(coll, &filter, NULL, NULL, &be))
      rc = dp_err_set(e, DP_EMONGO, "cannot delete old %s documents in MongoDB database %s: %s", COLLS[i], db,
                      be.message);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
  }
  return rc;
}

/* Keeps the newest DP_METASTORE_KEEP_PUSHES push documents (never the current one). */
static int prune_pushes(mongoc_client_t *cli, const char *db, const char *current, dp_err *e) {
  mongoc_collection_t *coll = mongoc_client_get_collection(cli, db, "pushes");
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort, proj, del = BSON_INITIALIZER, idc, in;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
  BSON_APPEND_INT32(&sort, "_id", -1);
  bson_append_document_end(&opts, &sort);
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "_id", 1);
  bson_append_document_end(&opts, &proj);
  BSON_APPEND_INT64(&opts, "skip", DP_METASTORE_KEEP_PUSHES);
  BSON_APPEND_DOCUMENT_BEGIN(&del, "_id", &idc);
  BSON_APPEND_ARRAY_BEGIN(&idc, "$in", &in);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
  const bson_t *doc;
  int n = 0, rc = 0;
  while (mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_UTF8(&it)) continue;
    const char *id = bson_iter_utf8(&it, NULL);
    if (strcmp(id, current) == 0) continue;
    char key[16];
    const char *k;
    bson_uint32_to_string((uint32_t)n++, &k, key, sizeof key);
    bson_append_utf8(&in, k, -1, id, -1);
  }
  bson_append_array_end(&idc, &in);
  bson_append_document_end(&del, &idc);
  bson_error_t be;
  if (mongoc_cursor_error(cur, &be))
    rc = dp_err_set(e, DP_EMONGO, "cannot list old pushes in MongoDB database %s: %s", db, be.message);
  else if (n > 0 && !mongoc_collection_delete_many(coll, &del, NULL, NULL, &be))
    rc = dp_err_set(e, DP_EMONGO, "cannot delete old pushes in MongoDB database %s: %s", db, be.message);
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(coll);
  bson_destroy(&filter);
  bson_destroy(&opts);
  bson_destroy(&del);
  return rc;
}

/* After a flip (or when nothing changed): older sets go; a failure here is only logged, the
 * push itself is done. */
static void clean_up(mongoc_client_t *cli, const char *db, const char *current) {
  dp_err e;
  dp_err_clear(&e);
  if (delete_items(cli, db, "$lt", current, &e) != 0 || prune_pushes(cli, db, current, &e) != 0)
    dp_log(DP_LOG_WARN, "metadata push: clean-up of older pushes failed (the next push retries): %s", e.msg);
}

/* Points "current" at push_id, but only if it still points at previous ("" = no pointer yet). */
static int flip(mongoc_client_t *cli, const char *db, const char *previous, const char *push_id, const char *hash,
                int64_t at, dp_err *e) {
  mongoc_collection_t *coll = mongoc_client_get_collection(cli, db, "current");
  bson_error_t be;
  bson_t reply;
  int rc = 0, ok;
  int64_t matched = 1;
  if (previous[0] == '\0') {
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "_id", "current");
    BSON_APPEND_UTF8(&doc, "push_id", push_id);
    BSON_APPEND_UTF8(&doc, "hash", hash);
    BSON_APPEND_DATE_TIME(&doc, "pushed_at", at);
    ok = mongoc_collection_insert_one(coll, &doc, NULL, &reply, &be);
    bson_destroy(&doc);
    if (!ok && be.code == 11000) matched = 0; /* duplicate key: another push got there first */
  } else {
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, set;
    BSON_APPEND_UTF8(&filter, "_id", "current");
    BSON_APPEND_UTF8(&filter, "push_id", previous);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
    BSON_APPEND_UTF8(&set, "push_id", push_id);
    BSON_APPEND_UTF8(&set, "hash", hash);
    BSON_APPEND_DATE_TIME(&set, "pushed_at", at);
    bson_append_document_end(&update, &set);
    ok = mongoc_collection_update_one(coll, &filter, &update, NULL, &reply, &be);
    bson_iter_t it;
    if (ok && bson_iter_init_find(&it, &reply, "matchedCount")) matched = bson_iter_as_int64(&it);
    bson_destroy(&filter);
    bson_destroy(&update);
  }
  if (matched == 0)
    rc = dp_err_set(e, DP_EBUSY,
                    "metadata push: another push became current in MongoDB database %s while this one was "
                    "being written; nothing was changed (push again)",
                    db);
  else if (!ok)
    rc = mongo_err(e, "make the push current", db, &be);
  bson_destroy(&reply);
  mongoc_collection_destroy(coll);
  return rc;
}

int dp_metastore_push(mongoc_client_t *cli, const char *db, const dp_metastore_set *set, dp_metastore_pushed *out,
                      dp_err *e) {
  memset(out, 0, sizeof *out);
  size_t total = 0;
  for (int i = 0; i < DP_META_NFILES; i++) {
    if (!set->texts[i]) continue;
    total += set->lens[i];
    if (!bson_utf8_validate(set->texts[i], set->lens[i], false))
      return dp_err_set(e, DP_EINVAL, "metadata push: %s is not UTF-8 text without NUL bytes; MongoDB cannot store it",
                        FILES[i]);
  }
  if (total > MAX_TEXTS)
    return dp_err_set(e, DP_EINVAL, "metadata push: the files hold %zu bytes, over the %d bytes one push can store",
                      total, MAX_TEXTS);

  int found;
  char hash[65];
  int rc = read_pointer(cli, db, &found, out->previous, hash, NULL, e);
  if (rc) return rc;
  if (found && strcmp(hash, set->hash) == 0) {
    snprintf(out->push_id, sizeof out->push_id, "%s", out->previous);
    out->unchanged = 1;
    clean_up(cli, db, out->push_id);
    return 0;
  }

  uint8_t id[16];
  dp_uuid_v7(id);
  dp_uuid_format(id, out->push_id);
  int64_t at = now_ms();
  rc = insert_push_doc(cli, db, set, out->push_id, at, e);
  for (int i = 0; i < DP_META_NFILES && rc == 0; i++) rc = insert_items(cli, db, i, set, out->push_id, e);
  if (rc == 0 && set->fail_after_staging)
    rc = dp_err_set(e, DP_EIO, "metadata push: stopped after staging push %s, before the flip (test hook "
                               "DP_TEST_PUSH_FAIL=after-staging)", out->push_id);
  if (rc) return rc; /* staged documents stay behind: the next push's clean-up removes them */

  rc = flip(cli, db, out->previous, out->push_id, set->hash, at, e);
  if (rc == DP_EBUSY) {
    dp_err tmp;
    delete_items(cli, db, "$eq", out->push_id, &tmp);
    return rc;
  }
  if (rc) return rc;
  dp_log(DP_LOG_INFO, "metadata push %s is current in MongoDB database %s (previous: %s)", out->push_id, db,
         out->previous[0] ? out->previous : "none");
  clean_up(cli, db, out->push_id);
  return 0;
}

void dp_metastore_current_free(dp_metastore_current *c) {
  for (int i = 0; i < DP_META_NFILES; i++) free(c->texts[i]);
  memset(c, 0, sizeof *c);
}

/* Reads the push document push_id into out; *found = 0 when it is not there (pruned). */
static int read_push(mongoc_client_t *cli, const char *db, const char *push_id, dp_metastore_current *out, int *found,
                     dp_err *e) {
  mongoc_collection_t *coll = mongoc_client_get_collection(cli, db, "pushes");
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&filter, "_id", push_id);
  BSON_APPEND_INT64(&opts, "limit", 1);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
  const bson_t *doc;
  int rc = 0;
  *found = 0;
  if (mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it, files;
    *found = 1;
    if (bson_iter_init_find(&it, doc, "hash") && BSON_ITER_HOLDS_UTF8(&it))
      snprintf(out->hash, sizeof out->hash, "%s", bson_iter_utf8(&it, NULL));
    if (bson_iter_init_find(&it, doc, "pushed_at") && BSON_ITER_HOLDS_DATE_TIME(&it))
      out->pushed_at_ms = bson_iter_date_time(&it);
    if (!bson_iter_init_find(&it, doc, "files") || !BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &files)) {
      rc = dp_err_set(e, DP_EMONGO, "push %s in MongoDB database %s has no files", push_id, db);
    } else {
      while (rc == 0 && bson_iter_next(&files)) {
        for (int i = 0; i < DP_META_NFILES; i++) {
          if (strcmp(bson_iter_key(&files), COLLS[i]) != 0 || !BSON_ITER_HOLDS_UTF8(&files)) continue;
          uint32_t len;
          const char *s = bson_iter_utf8(&files, &len);
          free(out->texts[i]);
          out->texts[i] = malloc((size_t)len + 1);
          if (!out->texts[i]) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); break; }
          memcpy(out->texts[i], s, len);
          out->texts[i][len] = '\0';
          out->lens[i] = len;
        }
      }
    }
  }
  bson_error_t be;
  if (rc == 0 && mongoc_cursor_error(cur, &be))
    rc = dp_err_set(e, DP_EMONGO, "cannot read %s.pushes from MongoDB: %s", db, be.message);
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(coll);
  bson_destroy(&filter);
  bson_destroy(&opts);
  return rc;
}

int dp_metastore_read(mongoc_client_t *cli, const char *db, dp_metastore_current *out, dp_err *e) {
  memset(out, 0, sizeof *out);
  /* The pointer can move on between the two reads and, after many pushes, the push it named
   * can be pruned: read the pointer again then. */
  for (int tries = 0; tries < READ_TRIES; tries++) {
    int found;
    char hash[65];
    int rc = read_pointer(cli, db, &found, out->push_id, hash, NULL, e);
    if (rc) return rc;
    if (!found)
      return dp_err_set(e, DP_ENOTFOUND,
                        "no metadata has been pushed to MongoDB database %s (run dp-engine metadata push)", db);
    rc = read_push(cli, db, out->push_id, out, &found, e);
    if (rc) { dp_metastore_current_free(out); return rc; }
    if (found) return 0;
    dp_metastore_current_free(out);
  }
  return dp_err_set(e, DP_EMONGO, "MongoDB database %s: the current push keeps changing or its document is missing", db);
}
