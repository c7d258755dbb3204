/* pg.c - libpq helpers. */
#include "pg.h"

#include <string.h>

PGconn *dp_pg_connect(const char *url, dp_err *e) {
  if (url == NULL || *url == '\0') {
    dp_err_set(e, DP_ECONFIG, "DP_POSTGRES_URL is not set");
    return NULL;
  }
  PGconn *c = PQconnectdb(url);
  if (c == NULL || PQstatus(c) != CONNECTION_OK) {
    /* The URL may hold a password: do not repeat it. */
    dp_err_set(e, DP_EPG, "cannot connect to PostgreSQL: %s",
               c ? PQerrorMessage(c) : "out of memory");
    size_t n = strlen(e ? e->msg : "");
    if (e && n && e->msg[n - 1] == '\n') e->msg[n - 1] = '\0';
    if (c) PQfinish(c);
    return NULL;
  }
  PGresult *r = PQexec(c, "SET client_min_messages = warning; SET TIME ZONE 'UTC'");
  PQclear(r);
  return c;
}

static void set_pg_error(dp_err *e, PGconn *c, PGresult *r, const char *sql) {
  const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(c);
  char first[120];
  size_t k = 0;
  while (sql[k] && sql[k] != '\n' && k < sizeof first - 1) { first[k] = sql[k]; k++; }
  first[k] = '\0';
  dp_err_set(e, DP_EPG, "%s", msg && *msg ? msg : "PostgreSQL error");
  size_t n = e ? strlen(e->msg) : 0;
  while (e && n && (e->msg[n - 1] == '\n' || e->msg[n - 1] == ' ')) e->msg[--n] = '\0';
  if (e) {
    size_t left = sizeof e->msg - n;
    snprintf(e->msg + n, left, " (in: %s%s)", first, strlen(sql) > k ? " ..." : "");
  }
}

int dp_pg_exec(PGconn *c, const char *sql, int n, const char *const *vals, PGresult **out,
               dp_err *e) {
  PGresult *r = n > 0 ? PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0) : PQexec(c, sql);
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    set_pg_error(e, c, r, sql);
    PQclear(r);
    return DP_EPG;
  }
  if (out) *out = r;
  else PQclear(r);
  return 0;
}

int dp_pg_ident(dp_buf *b, const char *name) {
  dp_buf_putc(b, '"');
  for (const char *p = name; *p; p++) {
    if (*p == '"') dp_buf_putc(b, '"');
    dp_buf_putc(b, *p);
  }
  return dp_buf_putc(b, '"');
}

int dp_pg_qualified(dp_buf *b, const char *schema, const char *name) {
  dp_pg_ident(b, schema);
  dp_buf_putc(b, '.');
  return dp_pg_ident(b, name);
}

int dp_pg_copy_escape(dp_buf *b, const char *s, size_t n) {
  /* the hot loop of every COPY: room for the worst case, then bytes straight into the buffer */
  if (dp_buf_reserve(b, 2 * n)) return DP_ENOMEM;
  char *o = b->data + b->len;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    switch (ch) {
      case '\\': *o++ = '\\'; *o++ = '\\'; break;
      case '\t': *o++ = '\\'; *o++ = 't'; break;
      case '\n': *o++ = '\\'; *o++ = 'n'; break;
      case '\r': *o++ = '\\'; *o++ = 'r'; break;
      default: *o++ = ch;
    }
  }
  *o = '\0';
  b->len = (size_t)(o - b->data);
  return 0;
}

int dp_pg_copy_begin(PGconn *c, const char *sql, dp_err *e) {
  PGresult *r = PQexec(c, sql);
  if (!r || PQresultStatus(r) != PGRES_COPY_IN) {
    set_pg_error(e, c, r, sql);
    PQclear(r);
    return DP_EPG;
  }
  PQclear(r);
  return 0;
}

int dp_pg_copy_put(PGconn *c, const char *data, size_t n, dp_err *e) {
  if (n == 0) return 0;
  if (PQputCopyData(c, data, (int)n) != 1)
    return dp_err_set(e, DP_EPG, "COPY failed: %s", PQerrorMessage(c));
  return 0;
}

int dp_pg_copy_end(PGconn *c, const char *errmsg, dp_err *e) {
  int rc = 0;
  if (PQputCopyEnd(c, errmsg) != 1) rc = dp_err_set(e, DP_EPG, "COPY end failed: %s", PQerrorMessage(c));
  PGresult *r;
  while ((r = PQgetResult(c)) != NULL) {
    if (rc == 0 && PQresultStatus(r) != PGRES_COMMAND_OK && errmsg == NULL) {
      set_pg_error(e, c, r, "COPY");
      rc = DP_EPG;
    }
    PQclear(r);
  }
  return rc;
}

int dp_pg_begin(PGconn *c, dp_err *e) { return dp_pg_exec(c, "BEGIN", 0, NULL, NULL, e); }
int dp_pg_commit(PGconn *c, dp_err *e) { return dp_pg_exec(c, "COMMIT", 0, NULL, NULL, e); }
void dp_pg_rollback(PGconn *c) {
  PGresult *r = PQexec(c, "ROLLBACK");
  PQclear(r);
}
