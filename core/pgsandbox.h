/* pgsandbox.h - untrusted SQL: queries written by gold scripts (docs/gold.md#the-sql-sandbox).
 *
 * The engine's own SQL goes through pg.h (dp_pg_exec, multi-statement text allowed). SQL that a
 * script wrote never does: it goes through here, and runs only inside the SECURITY DEFINER
 * function gold_sandbox.query(sql, params) that migration 0005 creates, owned by the NOLOGIN
 * role dp_gold. Inside it PostgreSQL runs the query with dp_gold's privileges (read silver and
 * gold, nothing else), and refuses SET ROLE, RESET ROLE, SET SESSION AUTHORIZATION (also through
 * set_config) and COMMIT/ROLLBACK, so the query can neither change role nor end the engine's
 * transaction. The engine additionally
 *   - checks the text is one query (first word SELECT, WITH, VALUES, TABLE or "("; no second
 *     statement after a ';'), which makes for clear errors (the boundary is the role);
 *   - describes it with the extended protocol (PQprepare: one statement only) to learn the
 *     types of its parameters and columns, and passes the parameter values as a text[]
 *     parameter, cast back to the described types inside the query;
 *   - reports errors by PostgreSQL's primary message (and hint) only, with the line of the
 *     script's query, never the wrapper text or the function's context lines. */
#ifndef DP_PGSANDBOX_H
#define DP_PGSANDBOX_H

#include <libpq-fe.h>
#include "buf.h"
#include "error.h"

/* A prepared untrusted query. The caller owns the struct; dp_pg_sandbox_free frees its buffers. */
typedef struct dp_pg_sandbox {
  dp_buf from;    /* FROM item: gold_sandbox.query($1, $2::text[]) AS r(<columns with types>) */
  dp_buf columns; /* select list over r, named like the query's (or the model's) columns */
  dp_buf sql;     /* value of $1: the query as the sandbox function runs it */
  dp_buf params;  /* value of $2: the parameter values as a text[] literal */
  int ncols;
} dp_pg_sandbox;

/* Checks that sql is a single query (see above). Returns 0, or DP_EINVAL with e saying why
 * ("only a query can run here (SELECT, WITH, VALUES or TABLE), not COMMIT", "the SQL holds a
 * second statement after ';' (line 1)"). */
int dp_pg_sandbox_check(const char *sql, dp_err *e);

/* Checks that the sandbox is installed and sound on c: gold_sandbox.query exists, is SECURITY
 * DEFINER and owned by dp_gold, and dp_gold is no superuser, does not bypass row security and is
 * a member of no other role. Returns 0, or DP_ECONFIG saying what to fix. */
int dp_pg_sandbox_verify(PGconn *c, dp_err *e);

/* Prepares the untrusted query sql on c (described, not run). names: NULL to keep every column
 * the query returns, under its own name (ctx:query); or the nnames column names to select from
 * it by name (an SQL model: a missing one is an error, others are dropped). vals: the nvals
 * parameter values ($1..; NULL elements are SQL NULL), exactly as many as the query uses.
 * Fills s (free it with dp_pg_sandbox_free, also after an error). Errors: DP_EINVAL (not one
 * query, parameter count), DP_EPG (PostgreSQL refused it, e.g. a syntax error or an unknown
 * column, with the line of the query). */
int dp_pg_sandbox_prepare(dp_pg_sandbox *s, PGconn *c, const char *sql, const char *const *names,
                          int nnames, int nvals, const char *const *vals, dp_err *e);
void dp_pg_sandbox_free(dp_pg_sandbox *s);

/* Runs an engine statement that executes untrusted SQL (one that uses s->from), with $1, $2 =
 * s->sql, s->params followed by the nextra values. timeout_ms only words the error when the
 * statement timeout fires (the caller sets it, dp_pg_set_statement_timeout). When out is not
 * NULL the result is returned (caller PQclear()s it). */
int dp_pg_sandbox_exec(PGconn *c, const dp_pg_sandbox *s, const char *stmt, int nextra,
                       const char *const *extra, long timeout_ms, PGresult **out, dp_err *e);

/* Runs a statement that continues untrusted work (FETCH from a sandboxed cursor), with the
 * same error wording as dp_pg_sandbox_exec. */
int dp_pg_sandbox_run(PGconn *c, const char *stmt, long timeout_ms, PGresult **out, dp_err *e);

/* Sets statement_timeout for the rest of the current transaction (SET LOCAL); 0 = none. */
int dp_pg_set_statement_timeout(PGconn *c, long ms, dp_err *e);
/* What dp_pg_set_statement_timeout also sets for each gold statement. */
#define DP_GOLD_WORK_MEM "64MB"
#define DP_GOLD_TEMP_FILE_LIMIT "4GB"

/* Fails when the untrusted SQL of this transaction left writes that table privileges cannot
 * stop (large objects owned by dp_gold). Returns 0 or DP_EPG ("the query created large
 * objects ..."). */
int dp_pg_sandbox_check_writes(PGconn *c, dp_err *e);

#endif
