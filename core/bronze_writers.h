/* bronze_writers.h - bronze's inserts on more connections than one: threads, each with its own
 * MongoDB client, inserting whole batches while the load goes on reading and sorting
 * (docs/performance.md#the-initial-load-overlapping-the-layers). Internal to bronze.c. */
#ifndef DP_BRONZE_WRITERS_H
#define DP_BRONZE_WRITERS_H

#include <mongoc/mongoc.h>
#include "error.h"

typedef struct dp_bronze_writers dp_bronze_writers;

/* Called in the caller's thread for every batch a writer finished: docs (owned by the callee,
 * which destroys them), whether insert_many succeeded (be says why not) and its seconds. */
typedef int (*dp_bronze_done_fn)(void *ctx, bson_t **docs, size_t n, int ok, const bson_error_t *be, double secs,
                                 dp_err *e);

/* Starts n writer threads, each with a client of uri, inserting into db.coll (unordered, not
 * validated, as bronze's own inserts). Returns them (dp_bronze_writers_stop frees) or NULL with e. */
dp_bronze_writers *dp_bronze_writers_start(const mongoc_uri_t *uri, const char *db, const char *coll, int n,
                                           dp_err *e);
/* Hands docs[0..n) (at most 1000) to a free writer, first waiting for one and reporting what it
 * finished through done. Takes the docs: on an error they are destroyed too. */
int dp_bronze_writers_put(dp_bronze_writers *w, bson_t **docs, size_t n, dp_bronze_done_fn done, void *ctx, dp_err *e);
/* Waits for every batch handed over and reports each through done; the first error is returned
 * (the batches after it are still waited for and their documents freed). */
int dp_bronze_writers_drain(dp_bronze_writers *w, dp_bronze_done_fn done, void *ctx, dp_err *e);
/* Stops the threads (after a drain) and frees everything, batches not reported included. */
void dp_bronze_writers_stop(dp_bronze_writers *w);

#endif
