/* pg.h - thin helpers over libpq: connect, execute with parameters, quote identifiers,
 * and COPY FROM STDIN in text format. Values always travel as parameters or COPY data.
 * These run the engine's own SQL (dp_pg_exec takes several statements when it has no
 * parameters); SQL that a script wrote goes through pgsandbox.h only. */
#ifndef DP_PG_H
#define DP_PG_H

#include <libpq-fe.h>
#include "buf.h"
#include "error.h"

/* Connects; returns the connection (caller closes with PQfinish) or NULL with e set. */
PGconn *dp_pg_connect(const char *url, dp_err *e);
/* Runs a statement with text parameters (vals may hold NULLs). When out is not NULL the
 * result is returned (caller PQclear()s it); otherwise it is cleared. */
int dp_pg_exec(PGconn *c, const char *sql, int n, const char *const *vals, PGresult **out, dp_err *e);
/* Appends name as a quoted identifier ("name", with embedded quotes doubled). */
int dp_pg_ident(dp_buf *b, const char *name);
/* Appends schema."name". */
int dp_pg_qualified(dp_buf *b, const char *schema, const char *name);
/* Appends s to a COPY text-format field, escaping backslash, tab, newline, CR. */
int dp_pg_copy_escape(dp_buf *b, const char *s, size_t n);
/* Starts COPY; sql is a COPY ... FROM STDIN statement. */
int dp_pg_copy_begin(PGconn *c, const char *sql, dp_err *e);
/* Sends buffered COPY data. */
int dp_pg_copy_put(PGconn *c, const char *data, size_t n, dp_err *e);
/* Ends COPY (errmsg non-NULL aborts it); returns the server's verdict. */
int dp_pg_copy_end(PGconn *c, const char *errmsg, dp_err *e);
/* Convenience: BEGIN / COMMIT / ROLLBACK (rollback ignores errors). */
int dp_pg_begin(PGconn *c, dp_err *e);
int dp_pg_commit(PGconn *c, dp_err *e);
void dp_pg_rollback(PGconn *c);

#endif
