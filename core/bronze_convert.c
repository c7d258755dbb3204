/* bronze_convert.c - bronze collections written before dp-engine 0.2 (binary UUID _ids) found and
 * converted to the text _id (docs/storage.md#bronze-ids-from-before-02).
 *
 * A conversion copies before it removes, so no document is ever missing: each document with a
 * binary _id is inserted again with the text _id of the same key (everything else as it was),
 * and only when every one has its copy are the binary ones removed with one delete. Resumable:
 * an attempt that stopped left copies, which the next one finds (a duplicate _id) and counts as
 * already copied. Audited: one row per attempt in audit.bronze_id_conversion (migration 0010). */
#include "bronze_convert.h"
#include "bronze.h"
#include "log.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CBATCH 1000 /* copies per insert_many */

/* A collection of bronze keyed documents (not the rejects, not _dp_sync, not the server's). */
static int is_keyed_collection(const char *name) {
  size_t n = strlen(name);
  return strcmp(name, "_dp_sync") != 0 && strncmp(name, "system.", 7) != 0 &&
         !(n > 10 && strcmp(name + n - 10, "__rejected") == 0);
}

/* {_id: {$type: "binData"}} */
static void binary_filter(bson_t *f) {
  bson_t t;
  bson_init(f);
  BSON_APPEND_DOCUMENT_BEGIN(f, "_id", &t);
  BSON_APPEND_UTF8(&t, "$type", "binData");
  bson_append_document_end(f, &t);
}

int dp_bronze_legacy_collections(mongoc_client_t *cli, const char *db, dp_strlist *out, dp_err *e) {
  memset(out, 0, sizeof *out);
  mongoc_database_t *d = mongoc_client_get_database(cli, db);
  bson_error_t be;
  char **names = mongoc_database_get_collection_names_with_opts(d, NULL, &be);
  int rc = 0;
  if (!names) rc = dp_err_set(e, DP_EMONGO, "bronze: cannot list the collections of %s: %s", db, DP_BRONZE_SERVER_MSG(be));
  for (size_t i = 0; rc == 0 && names[i]; i++) {
    if (!is_keyed_collection(names[i])) continue;
    mongoc_collection_t *c = mongoc_database_get_collection(d, names[i]);
    bson_t f, opts = BSON_INITIALIZER, proj;
    binary_filter(&f);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "_id", 1);
    bson_append_document_end(&opts, &proj);
    BSON_APPEND_INT64(&opts, "limit", 1);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &f, &opts, NULL);
    const bson_t *doc;
    int found = mongoc_cursor_next(cur, &doc);
    if (!found && mongoc_cursor_error(cur, &be))
      rc = dp_err_set(e, DP_EMONGO, "bronze: cannot read %s.%s: %s", db, names[i], DP_BRONZE_SERVER_MSG(be));
    mongoc_cursor_destroy(cur);
    bson_destroy(&f);
    bson_destroy(&opts);
    mongoc_collection_destroy(c);
    if (found) {
      char **grown = realloc(out->v, (out->n + 1) * sizeof *grown);
      char *copy = strdup(names[i]);
      if (!grown || !copy) {
        free(copy);
        if (grown) out->v = grown;
        rc = dp_err_set(e, DP_ENOMEM, "out of memory");
        break;
      }
      out->v = grown;
      out->v[out->n++] = copy;
    }
  }
  bson_strfreev(names);
  mongoc_database_destroy(d);
  if (rc) dp_strlist_free(out);
  return rc;
}

void dp_strlist_free(dp_strlist *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  memset(l, 0, sizeof *l);
}

static int count_docs(mongoc_collection_t *c, const bson_t *filter, int64_t *n, dp_err *e) {
  bson_error_t be;
  bson_t empty = BSON_INITIALIZER;
  *n = mongoc_collection_count_documents(c, filter ? filter : &empty, NULL, NULL, NULL, &be);
  bson_destroy(&empty);
  if (*n < 0)
    return dp_err_set(e, DP_EMONGO, "bronze: cannot count the documents of %s: %s", mongoc_collection_get_name(c),
                      DP_BRONZE_SERVER_MSG(be));
  return 0;
}

/* Inserts the copies; a copy whose _id is there already (an earlier attempt wrote it) counts as
 * already copied, any other failure is an error. Frees the docs. */
static int insert_copies(mongoc_collection_t *c, bson_t **docs, size_t n, dp_bronze_conversion *cv, dp_err *e) {
  bson_t opts = BSON_INITIALIZER, reply;
  bson_error_t be;
  int rc = 0;
  BSON_APPEND_BOOL(&opts, "ordered", false);
  BSON_APPEND_BOOL(&opts, "validate", false); /* the keys bronze stored, as they are */
  bool ok = mongoc_collection_insert_many(c, (const bson_t **)docs, n, &opts, &reply, &be);
  int64_t dups = 0, other = 0;
  if (!ok) {
    bson_iter_t it, we;
    if (bson_iter_init_find(&it, &reply, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &we)) {
      while (bson_iter_next(&we)) {
        bson_iter_t one;
        if (BSON_ITER_HOLDS_DOCUMENT(&we) && bson_iter_recurse(&we, &one) && bson_iter_find(&one, "code") &&
            bson_iter_as_int64(&one) == 11000)
          dups++;
        else
          other++;
      }
    } else {
      other = 1;
    }
    if (other)
      rc = dp_err_set(e, DP_EMONGO, "bronze: cannot write the converted documents of %s: %s",
                      mongoc_collection_get_name(c), DP_BRONZE_SERVER_MSG(be));
  }
  if (rc == 0) {
    cv->copied += (int64_t)n - dups;
    cv->already_copied += dups;
  }
  bson_destroy(&reply);
  bson_destroy(&opts);
  for (size_t i = 0; i < n; i++) bson_destroy(docs[i]);
  return rc;
}

/* The copies of every document with a binary _id. */
static int copy_documents(mongoc_collection_t *c, dp_bronze_conversion *cv, dp_err *e) {
  bson_t f;
  binary_filter(&f);
  bson_t opts = BSON_INITIALIZER;
  BSON_APPEND_INT32(&opts, "batchSize", CBATCH);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &f, &opts, NULL);
  bson_t *docs[CBATCH];
  size_t n = 0;
  int rc = 0;
  const bson_t *doc;
  while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    uint8_t key[16];
    if (!bson_iter_init_find(&it, doc, "_id") || dp_bronze_iter_id(&it, key) != DP_BRONZE_ID_BINARY) {
      rc = dp_err_set(e, DP_EMIGRATE,
                      "bronze: %s has a document whose binary _id is not a bronze key hash (a UUID of 16 bytes): "
                      "not converted; look at it, or rebuild the collection with 'dp-engine replay SYSTEM --from raw'",
                      mongoc_collection_get_name(c));
      break;
    }
    bson_t *copy = bson_new();
    dp_bronze_append_id(copy, "_id", key);
    bson_copy_to_excluding_noinit(doc, copy, "_id", NULL);
    docs[n++] = copy;
    if (n == CBATCH) {
      rc = insert_copies(c, docs, n, cv, e);
      n = 0;
    }
  }
  bson_error_t be;
  if (rc == 0 && mongoc_cursor_error(cur, &be))
    rc = dp_err_set(e, DP_EMONGO, "bronze: cannot read %s: %s", mongoc_collection_get_name(c), DP_BRONZE_SERVER_MSG(be));
  if (rc == 0 && n) rc = insert_copies(c, docs, n, cv, e);
  else
    for (size_t i = 0; i < n; i++) bson_destroy(docs[i]);
  mongoc_cursor_destroy(cur);
  bson_destroy(&f);
  bson_destroy(&opts);
  return rc;
}

static int remove_binary(mongoc_collection_t *c, dp_bronze_conversion *cv, dp_err *e) {
  bson_t f, reply;
  bson_error_t be;
  binary_filter(&f);
  int rc = 0;
  if (!mongoc_collection_delete_many(c, &f, NULL, &reply, &be))
    rc = dp_err_set(e, DP_EMONGO, "bronze: cannot remove the converted documents of %s: %s",
                    mongoc_collection_get_name(c), DP_BRONZE_SERVER_MSG(be));
  bson_iter_t it;
  if (rc == 0 && bson_iter_init_find(&it, &reply, "deletedCount")) cv->removed = bson_iter_as_int64(&it);
  bson_destroy(&reply);
  bson_destroy(&f);
  return rc;
}

/* The audit row of the attempt: inserted at the start (id into cv->audit_id), updated at the end. */
static int audit_begin(PGconn *pg, const char *db, const char *coll, dp_bronze_conversion *cv, dp_err *e) {
  char before[24], binary[24];
  snprintf(before, sizeof before, "%lld", (long long)cv->documents_before);
  snprintf(binary, sizeof binary, "%lld", (long long)cv->binary_before);
  const char *v[] = {db, coll, before, binary};
  PGresult *r = NULL;
  int rc = dp_pg_exec(pg,
                      "INSERT INTO audit.bronze_id_conversion (database_name, collection, status, documents_before, "
                      "binary_before) VALUES ($1, $2, 'running', $3, $4) RETURNING id",
                      4, v, &r, e);
  if (rc == 0) cv->audit_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return rc;
}

static void audit_end(PGconn *pg, const dp_bronze_conversion *cv, const char *error) {
  char id[24], copied[24], already[24], removed[24], after[24];
  snprintf(id, sizeof id, "%lld", (long long)cv->audit_id);
  snprintf(copied, sizeof copied, "%lld", (long long)cv->copied);
  snprintf(already, sizeof already, "%lld", (long long)cv->already_copied);
  snprintf(removed, sizeof removed, "%lld", (long long)cv->removed);
  snprintf(after, sizeof after, "%lld", (long long)cv->documents_after);
  const char *v[] = {id, error ? "failed" : "succeeded", copied, already, removed, error ? NULL : after, error};
  dp_err ae;
  if (dp_pg_exec(pg,
                 "UPDATE audit.bronze_id_conversion SET status = $2, ended_at = now(), copied = $3, "
                 "already_copied = $4, removed = $5, documents_after = $6, error = $7 WHERE id = $1",
                 7, v, NULL, &ae) != 0)
    dp_log(DP_LOG_WARN, "bronze: cannot write the audit row of the conversion: %s", ae.msg);
}

int dp_bronze_convert_ids(mongoc_client_t *cli, const char *db, PGconn *audit, const char *coll,
                          dp_bronze_conversion *cv, dp_err *e) {
  memset(cv, 0, sizeof *cv);
  mongoc_collection_t *c = mongoc_client_get_collection(cli, db, coll);
  bson_t f;
  binary_filter(&f);
  int rc = count_docs(c, NULL, &cv->documents_before, e);
  if (rc == 0) rc = count_docs(c, &f, &cv->binary_before, e);
  if (rc == 0 && cv->binary_before > 0) {
    rc = audit_begin(audit, db, coll, cv, e);
    if (rc == 0) {
      rc = copy_documents(c, cv, e);
      /* every document with a binary _id has its copy now: the count proves it before any goes */
      int64_t still = 0;
      if (rc == 0) rc = count_docs(c, &f, &still, e);
      if (rc == 0 && cv->copied + cv->already_copied != still)
        rc = dp_err_set(e, DP_EMIGRATE,
                        "bronze: %s: %lld documents with a binary _id but %lld copies: nothing removed (is "
                        "something else writing to it?)",
                        coll, (long long)still, (long long)(cv->copied + cv->already_copied));
      if (rc == 0) rc = remove_binary(c, cv, e);
      if (rc == 0) rc = count_docs(c, NULL, &cv->documents_after, e);
      if (rc == 0 && cv->documents_after != cv->documents_before + cv->copied - cv->removed)
        rc = dp_err_set(e, DP_EMIGRATE, "bronze: %s: %lld documents before, %lld copied, %lld removed, but %lld after",
                        coll, (long long)cv->documents_before, (long long)cv->copied, (long long)cv->removed,
                        (long long)cv->documents_after);
      audit_end(audit, cv, rc ? e->msg : NULL);
    }
  }
  bson_destroy(&f);
  mongoc_collection_destroy(c);
  return rc;
}
