/* bronze_writers.h - bronze's inserts on more connections than one: threads, each with its own
 * MongoDB client, inserting whole batches while the load goes on reading and sorting
 * (docs/performance.md#the-initial-load-overlapping-the-layers). Internal to bronze.c. */
#ifndef DP_BRONZE_WRITERS_H
#define DP_BRONZE_WRITERS_H

#include <mongoc/mongoc.h>
#include "error.h"

typedef struct dp_bronze_writers dp_bronze_writers;

/* What a batch does with its documents (all unordered, client-side validation off: jsonbson.c
 * checked the keys): insert them (insert_many); replace each by its _id (upsert), one statement
 * per document; or mark each _id deleted, one update per document, setting _dp.deleted,
 * _dp.deleted_run_id and _dp.deleted_at to the document's own (a deletion's change-file
 * document: {_id, _dp: {deleted, deleted_run_id, deleted_at}}). */
typedef enum { DP_BRONZE_INSERT, DP_BRONZE_REPLACE, DP_BRONZE_MARK_DELETED } dp_bronze_write_kind;

/* Writes docs[0..n) to coll as kind says, on the caller's connection: 1, or 0 with be. Statements
 * by _id go in one bulk write: the caller keeps n small (FerretDB, docs/performance.md). */
int dp_bronze_write_batch(mongoc_collection_t *coll, dp_bronze_write_kind kind, bson_t **docs, size_t n,
                          bson_error_t *be);

/* Called in the caller's thread for every batch a writer finished: docs (owned by the callee,
 * which destroys them), whether the write succeeded (be says why not) and its seconds. */
typedef int (*dp_bronze_done_fn)(void *ctx, dp_bronze_write_kind kind, bson_t **docs, size_t n, int ok,
                                 const bson_error_t *be, double secs, dp_err *e);

/* Starts n writer threads, each with a client of uri, writing batches to db.coll. Returns them
 * (dp_bronze_writers_stop frees) or NULL with e. */
dp_bronze_writers *dp_bronze_writers_start(const mongoc_uri_t *uri, const char *db, const char *coll, int n,
                                           dp_err *e);
/* Hands the batch docs[0..n) (at most 1000) to a free writer, first waiting for one and
 * reporting what it finished through done. Takes the docs: on an error they are destroyed too. */
int dp_bronze_writers_put(dp_bronze_writers *w, dp_bronze_write_kind kind, bson_t **docs, size_t n,
                          dp_bronze_done_fn done, void *ctx, dp_err *e);
/* Waits for every batch handed over and reports each through done; the first error is returned
 * (the batches after it are still waited for and their documents freed). */
int dp_bronze_writers_drain(dp_bronze_writers *w, dp_bronze_done_fn done, void *ctx, dp_err *e);
/* Stops the threads (after a drain) and frees everything, batches not reported included. */
void dp_bronze_writers_stop(dp_bronze_writers *w);

#endif
