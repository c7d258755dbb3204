/* bronze_writers.c - bronze's batches of writes, on the load's connection or on writer threads, one MongoDB client each (libmongoc's
 * clients are not shared between threads). The caller stays the only one that touches the change
 * file and the counts: a finished batch is reported back to it, in its own thread. */
#include "bronze_writers.h"
#include "log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SLOT_DOCS 1000

enum { IDLE, QUEUED, DONE };

typedef struct slot {
  struct dp_bronze_writers *w;
  pthread_t th;
  int started;
  mongoc_client_t *cli;
  mongoc_collection_t *coll;
  bson_t *docs[SLOT_DOCS]; /* owned while QUEUED or DONE */
  size_t n;
  dp_bronze_write_kind kind;
  int state, ok;
  bson_error_t be;
  double secs;
} slot;

struct dp_bronze_writers {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int n, quit;
  slot *s;
};

/* {_id: the _id of doc} */
static void id_filter(bson_t *sel, const bson_t *doc) {
  bson_iter_t it;
  bson_init(sel);
  if (bson_iter_init_find(&it, doc, "_id")) bson_append_iter(sel, "_id", 3, &it);
}

/* {$set: {_dp.deleted: true, _dp.deleted_run_id, _dp.deleted_at}} from a deletion's document */
static void mark_update(bson_t *upd, const bson_t *doc) {
  bson_t set;
  bson_iter_t it;
  bson_init(upd);
  BSON_APPEND_DOCUMENT_BEGIN(upd, "$set", &set);
  BSON_APPEND_BOOL(&set, "_dp.deleted", true);
  if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.deleted_run_id", &it))
    bson_append_iter(&set, "_dp.deleted_run_id", -1, &it);
  if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.deleted_at", &it))
    bson_append_iter(&set, "_dp.deleted_at", -1, &it);
  bson_append_document_end(upd, &set);
}

int dp_bronze_write_batch(mongoc_collection_t *coll, dp_bronze_write_kind kind, bson_t **docs, size_t n,
                          bson_error_t *be) {
  bson_t opts = BSON_INITIALIZER;
  BSON_APPEND_BOOL(&opts, "ordered", false);
  bool ok = true;
  if (kind == DP_BRONZE_INSERT) {
    BSON_APPEND_BOOL(&opts, "validate", false); /* keys as the source wrote them ("$x", "a.b", "") */
    ok = mongoc_collection_insert_many(coll, (const bson_t **)docs, n, &opts, NULL, be);
  } else { /* one statement per document by _id, never one `$in` for many: FerretDB pushes only
            * an equality down to PostgreSQL */
    mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(coll, &opts);
    bson_t sopts = BSON_INITIALIZER;
    if (kind == DP_BRONZE_REPLACE) {
      /* upsert: a load run again after a crash may find the document gone or already replaced */
      BSON_APPEND_BOOL(&sopts, "upsert", true);
      BSON_APPEND_BOOL(&sopts, "validate", false);
    }
    for (size_t i = 0; ok && i < n; i++) {
      bson_t sel, upd;
      id_filter(&sel, docs[i]);
      if (kind == DP_BRONZE_REPLACE) {
        ok = mongoc_bulk_operation_replace_one_with_opts(bulk, &sel, docs[i], &sopts, be);
      } else {
        mark_update(&upd, docs[i]);
        ok = mongoc_bulk_operation_update_one_with_opts(bulk, &sel, &upd, &sopts, be);
        bson_destroy(&upd);
      }
      bson_destroy(&sel);
    }
    bson_t reply;
    if (ok) ok = mongoc_bulk_operation_execute(bulk, &reply, be) != 0;
    else bson_init(&reply);
    bson_destroy(&reply);
    bson_destroy(&sopts);
    mongoc_bulk_operation_destroy(bulk);
  }
  bson_destroy(&opts);
  return ok;
}

static void *writer(void *arg) {
  slot *s = arg;
  dp_bronze_writers *w = s->w;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (s->state != QUEUED && !w->quit) pthread_cond_wait(&w->cv, &w->mu);
    if (s->state != QUEUED) break;
    pthread_mutex_unlock(&w->mu);
    double t0 = dp_monotonic();
    bson_error_t be;
    memset(&be, 0, sizeof be);
    int ok = dp_bronze_write_batch(s->coll, s->kind, s->docs, s->n, &be);
    double secs = dp_monotonic() - t0;
    pthread_mutex_lock(&w->mu);
    s->ok = ok;
    s->be = be;
    s->secs = secs;
    s->state = DONE;
    pthread_cond_broadcast(&w->cv);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

dp_bronze_writers *dp_bronze_writers_start(const mongoc_uri_t *uri, const char *db, const char *coll, int n,
                                           dp_err *e) {
  dp_bronze_writers *w = calloc(1, sizeof *w);
  slot *s = calloc((size_t)n, sizeof *s);
  if (!w || !s) {
    free(w);
    free(s);
    dp_err_set(e, DP_ENOMEM, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->s = s;
  w->n = n;
  for (int i = 0; i < n; i++) {
    s[i].w = w;
    s[i].cli = mongoc_client_new_from_uri(uri);
    if (!s[i].cli) {
      dp_err_set(e, DP_EMONGO, "bronze: cannot create a MongoDB client for a writer");
      dp_bronze_writers_stop(w);
      return NULL;
    }
    mongoc_client_set_appname(s[i].cli, "dp-engine bronze writer");
    s[i].coll = mongoc_client_get_collection(s[i].cli, db, coll);
    if (pthread_create(&s[i].th, NULL, writer, &s[i]) != 0) {
      dp_err_set(e, DP_ENOMEM, "bronze: cannot start a writer thread");
      dp_bronze_writers_stop(w);
      return NULL;
    }
    s[i].started = 1;
  }
  return w;
}

/* Reports the batch of a DONE slot (mu held; released during the call) and makes it IDLE. */
static int report(dp_bronze_writers *w, slot *s, dp_bronze_done_fn done, void *ctx, dp_err *e) {
  bson_t *docs[SLOT_DOCS];
  size_t n = s->n;
  memcpy(docs, s->docs, n * sizeof *docs);
  int ok = s->ok;
  dp_bronze_write_kind kind = s->kind;
  bson_error_t be = s->be;
  double secs = s->secs;
  s->n = 0;
  s->state = IDLE;
  pthread_mutex_unlock(&w->mu);
  int rc = done(ctx, kind, docs, n, ok, &be, secs, e);
  pthread_mutex_lock(&w->mu);
  return rc;
}

int dp_bronze_writers_put(dp_bronze_writers *w, dp_bronze_write_kind kind, bson_t **docs, size_t n,
                          dp_bronze_done_fn done, void *ctx, dp_err *e) {
  int rc = 0;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    slot *idle = NULL, *fin = NULL;
    for (int i = 0; i < w->n; i++) {
      if (w->s[i].state == DONE && !fin) fin = &w->s[i];
      if (w->s[i].state == IDLE && !idle) idle = &w->s[i];
    }
    if (fin) { /* what finished is reported first: the caller sees errors as early as it can */
      if ((rc = report(w, fin, done, ctx, e)) != 0) break;
      continue;
    }
    if (idle) {
      memcpy(idle->docs, docs, n * sizeof *docs);
      idle->n = n;
      idle->kind = kind;
      idle->state = QUEUED;
      pthread_cond_broadcast(&w->cv);
      pthread_mutex_unlock(&w->mu);
      return 0;
    }
    pthread_cond_wait(&w->cv, &w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  for (size_t i = 0; i < n; i++) bson_destroy(docs[i]);
  return rc;
}

int dp_bronze_writers_drain(dp_bronze_writers *w, dp_bronze_done_fn done, void *ctx, dp_err *e) {
  int rc = 0;
  dp_err ignored;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    slot *fin = NULL;
    int busy = 0;
    for (int i = 0; i < w->n; i++) {
      if (w->s[i].state == DONE && !fin) fin = &w->s[i];
      if (w->s[i].state == QUEUED) busy = 1;
    }
    if (fin) {
      int r = report(w, fin, done, ctx, rc ? &ignored : e);
      if (rc == 0) rc = r;
      continue;
    }
    if (!busy) break;
    pthread_cond_wait(&w->cv, &w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  return rc;
}

void dp_bronze_writers_stop(dp_bronze_writers *w) {
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  w->quit = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  for (int i = 0; i < w->n; i++) {
    slot *s = &w->s[i];
    if (s->started) pthread_join(s->th, NULL);
    for (size_t k = 0; k < s->n; k++) bson_destroy(s->docs[k]);
    if (s->coll) mongoc_collection_destroy(s->coll);
    if (s->cli) mongoc_client_destroy(s->cli);
  }
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w->s);
  free(w);
}
