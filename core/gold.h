/* gold.h - materialization of gold models (docs/gold.md): one transaction per model build on a
 * borrowed connection. `table` models are built into gold."<model>__build" and swapped in with
 * DROP + RENAME at the end of the transaction; `incremental` models stage their rows in a temp
 * table and merge them by primary key. Rows arrive either as a SELECT that PostgreSQL runs
 * (dp_gold_insert_select) or as JSON objects cast by the C casting of silver (dp_gold_emit_json).
 * A failed build is rolled back (dp_gold_abort): the previous gold table stays.
 * SQL written by a script never runs as the engine: it runs through the SQL sandbox
 * (pgsandbox.h) as the role dp_gold, one query at a time, under the gold statement timeout. */
#ifndef DP_GOLD_H
#define DP_GOLD_H

#include <libpq-fe.h>
#include <lua.h>
#include "buf.h"
#include "error.h"
#include "meta.h"
#include "record.h"
#include "runinfo.h"

typedef struct dp_gold_builder {
  PGconn *c;              /* borrowed: the data connection, in a transaction while building */
  const dp_entity *model; /* borrowed: name and columns of the model (system is ignored) */
  int incremental;
  int full_refresh;       /* incremental: rows the build did not produce are deleted (set after begin) */
  char run_id[37];
  char run_ts[40];
  int in_txn, in_copy;
  long timeout_ms;        /* statement_timeout of the script's queries (0: none) */
  char prev_timeout[32];  /* the connection's statement_timeout, restored after them */
  int64_t rows;           /* rows received (emitted or selected) */
  dp_row row;             /* cast scratch (owned) */
  dp_buf line;            /* COPY line scratch (owned) */
} dp_gold_builder;

/* Starts a build: BEGIN, a check of the SQL sandbox, CREATE SCHEMA gold, the build table (table)
 * or the model table and a temp stage (incremental). materialization is "table" or
 * "incremental"; timeout_ms the statement timeout of the script's queries (0: none). On error
 * the transaction is rolled back and b holds nothing to free. */
int dp_gold_begin(dp_gold_builder *b, PGconn *c, const dp_entity *model, const char *materialization,
                  const char *run_id, const char *run_ts, long timeout_ms, dp_err *e);
/* Adds the rows of a query a script wrote (its output columns named like the model's columns),
 * run in the SQL sandbox; PostgreSQL's assignment casts type them. *n gets the number of rows
 * (may be NULL). */
int dp_gold_insert_select(dp_gold_builder *b, const char *select_sql, int64_t *n, dp_err *e);
/* Adds one row given as a JSON object text keyed by column name; cast like silver values.
 * Errors: DP_EJSON, DP_ECAST ("row N: column c: reason"), DP_EPG. */
int dp_gold_emit_json(dp_gold_builder *b, const char *json, size_t n, dp_err *e);
/* Swaps (table) or merges (incremental) and commits; fills counts. Frees b's scratch. */
int dp_gold_finish(dp_gold_builder *b, dp_counts *counts, dp_err *e);
/* Rolls back and frees b's scratch. Safe to call twice or after finish. */
void dp_gold_abort(dp_gold_builder *b);

/* Pushes a Lua object for a builder: b:emit(json_text), b:insert_select(sql) -> n. The builder is
 * borrowed (the caller finishes or aborts it); dp_gold_lua_detach makes the object unusable. */
void dp_gold_lua_push(lua_State *L, dp_gold_builder *b);
void dp_gold_lua_detach(lua_State *L, int idx);
/* dp.core registrar: gold_begin(pg, model, materialization, run_id, run_ts[, timeout_ms]) ->
 * builder with emit, insert_select, statement_timeout, finish -> counts, abort (and __gc
 * abort), for specs; gold_reader(pg, timeout_ms) -> reader for ctx:query (docs/gold.md): a
 * REPEATABLE READ READ ONLY transaction on pg with declare(cursor, sql, params...),
 * fetch(cursor, n) -> rows, close_cursor(cursor), finish() (rollback; __gc too); gold_sql_check(sql)
 * -> true | nil, reason. */
void dp_gold_lua_register(lua_State *L);

#endif
