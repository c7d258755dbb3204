/* pgsandbox.c - untrusted SQL of gold scripts (see pgsandbox.h and docs/gold.md#the-sql-sandbox). */
#include "pgsandbox.h"
#include "pg.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SANDBOX_ROLE "dp_gold"
#define SANDBOX_CALL "gold_sandbox.query($1, $2::text[])"

/* ---------- a scanner that knows PostgreSQL's quoting ---------- */

typedef struct sql_param {
  size_t off, len; /* the "$n" text */
  int n;
} sql_param;

typedef struct sql_scan {
  sql_param *params; /* owned; free() */
  size_t nparams, cap;
  size_t kw_off, kw_len; /* the first significant token */
  size_t semi;           /* the first top-level ';', or SIZE_MAX */
  size_t second;         /* a significant token after it (a second statement), or SIZE_MAX */
  size_t end;            /* just past the last significant token before any ';' */
} sql_scan;

static int ident_start(unsigned char ch) { return isalpha(ch) || ch == '_' || ch >= 0x80; }
static int ident_char(unsigned char ch) { return isalnum(ch) || ch == '_' || ch == '$' || ch >= 0x80; }

/* Index just past a quoted run starting at s[i] (the opening quote q); doubled quotes stay
 * inside; with backslashes (E'...') a backslash escapes the next byte. n when unterminated. */
static size_t skip_quoted(const char *s, size_t n, size_t i, char q, int backslashes) {
  for (i++; i < n; i++) {
    if (backslashes && s[i] == '\\' && i + 1 < n) { i++; continue; }
    if (s[i] == q) {
      if (i + 1 < n && s[i + 1] == q) { i++; continue; }
      return i + 1;
    }
  }
  return n;
}

static int add_param(sql_scan *o, size_t off, size_t len, int num) {
  if (o->nparams == o->cap) {
    size_t cap = o->cap ? o->cap * 2 : 8;
    sql_param *p = realloc(o->params, cap * sizeof *p);
    if (!p) return DP_ENOMEM;
    o->params = p;
    o->cap = cap;
  }
  o->params[o->nparams++] = (sql_param){off, len, num};
  return 0;
}

/* Scans s: its parameters, first token, top-level ';' and where the statement ends. Text
 * PostgreSQL would refuse (an unterminated string) is left for the server to report. */
static int scan_sql(const char *s, sql_scan *o) {
  size_t n = strlen(s), i = 0;
  memset(o, 0, sizeof *o);
  o->semi = o->second = SIZE_MAX;
  int first = 1;
  while (i < n) {
    unsigned char ch = (unsigned char)s[i];
    if (isspace(ch)) { i++; continue; }
    if (ch == '-' && s[i + 1] == '-') {
      while (i < n && s[i] != '\n') i++;
      continue;
    }
    if (ch == '/' && s[i + 1] == '*') {
      int depth = 1;
      for (i += 2; i < n && depth; ) {
        if (s[i] == '/' && s[i + 1] == '*') { depth++; i += 2; }
        else if (s[i] == '*' && s[i + 1] == '/') { depth--; i += 2; }
        else i++;
      }
      continue;
    }
    if (ch == ';') {
      if (o->semi == SIZE_MAX) o->semi = i;
      i++;
      continue;
    }
    size_t start = i;
    if ((ch == 'E' || ch == 'e') && s[i + 1] == '\'') {
      i = skip_quoted(s, n, i + 1, '\'', 1);
    } else if (ident_start(ch)) {
      while (i < n && ident_char((unsigned char)s[i])) i++;
    } else if (isdigit(ch)) {
      while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_')) i++;
    } else if (ch == '\'') {
      i = skip_quoted(s, n, i, '\'', 0);
    } else if (ch == '"') {
      i = skip_quoted(s, n, i, '"', 0);
    } else if (ch == '$' && isdigit((unsigned char)s[i + 1])) {
      long num = 0;
      for (i++; i < n && isdigit((unsigned char)s[i]); i++)
        if (num < 100000) num = num * 10 + (s[i] - '0');
      if (o->semi == SIZE_MAX && add_param(o, start, i - start, (int)num) != 0) return DP_ENOMEM;
    } else if (ch == '$') {
      size_t j = i + 1;
      if (j < n && ident_start((unsigned char)s[j]))
        while (j < n && (isalnum((unsigned char)s[j]) || s[j] == '_' || (unsigned char)s[j] >= 0x80)) j++;
      if (j < n && s[j] == '$') { /* a dollar quote $tag$ ... $tag$ */
        size_t tlen = j + 1 - i;
        const char *close = NULL;
        for (size_t k = j + 1; k + tlen <= n; k++)
          if (memcmp(s + k, s + i, tlen) == 0) { close = s + k; break; }
        i = close ? (size_t)(close - s) + tlen : n;
      } else {
        i++;
      }
    } else {
      i++;
    }
    if (o->semi != SIZE_MAX) {
      if (o->second == SIZE_MAX) o->second = start;
      continue;
    }
    if (first) {
      o->kw_off = start;
      o->kw_len = i - start;
      first = 0;
    }
    o->end = i;
  }
  return 0;
}

/* 1-based line of byte offset off in s. */
static int line_of(const char *s, size_t off) {
  int line = 1;
  for (size_t i = 0; i < off && s[i]; i++) line += s[i] == '\n';
  return line;
}

static int starts_kw(const char *s, size_t len, const char *kw) {
  return len == strlen(kw) && strncasecmp(s, kw, len) == 0;
}

static int check_scan(const char *sql, const sql_scan *sc, dp_err *e) {
  if (sc->kw_len == 0) return dp_err_set(e, DP_EINVAL, "the SQL is empty: expected one query (SELECT ...)");
  const char *kw = sql + sc->kw_off;
  if (!(starts_kw(kw, sc->kw_len, "select") || starts_kw(kw, sc->kw_len, "with") ||
        starts_kw(kw, sc->kw_len, "values") || starts_kw(kw, sc->kw_len, "table") ||
        (sc->kw_len == 1 && kw[0] == '('))) {
    char word[40];
    size_t k = 0;
    for (; k < sc->kw_len && k < sizeof word - 1; k++) word[k] = (char)toupper((unsigned char)kw[k]);
    word[k] = '\0';
    return dp_err_set(e, DP_EINVAL,
                      "only a query can run here (SELECT, WITH, VALUES or TABLE), not %s%s (line %d)", word,
                      sc->kw_len > k ? "..." : "", line_of(sql, sc->kw_off));
  }
  if (sc->second != SIZE_MAX)
    return dp_err_set(e, DP_EINVAL,
                      "the SQL holds a second statement after the ';' on line %d: a gold query must be one "
                      "statement",
                      line_of(sql, sc->semi));
  return 0;
}

int dp_pg_sandbox_check(const char *sql, dp_err *e) {
  sql_scan sc;
  if (scan_sql(sql, &sc) != 0) return dp_err_set(e, DP_ENOMEM, "out of memory");
  int rc = check_scan(sql, &sc, e);
  free(sc.params);
  return rc;
}

/* ---------- errors ---------- */

/* Number of characters (UTF-8) in s[0..n). */
static size_t nchars(const char *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
  return c;
}

/* Line of the user's text at the 1-based character position pos of the prepared text, whose
 * first prefix_chars characters are the engine's wrapper; 0 when outside the user's text. */
static int user_line(const char *user, size_t user_len, size_t prefix_chars, long pos) {
  if (pos <= (long)prefix_chars) return 0;
  size_t want = (size_t)pos - prefix_chars - 1, c = 0;
  for (size_t i = 0; i < user_len; i++) {
    if (((unsigned char)user[i] & 0xC0) == 0x80) continue;
    if (c++ == want) return line_of(user, i);
  }
  return 0;
}

/* Sets e from a failed untrusted statement: PostgreSQL's primary message and hint, the line of
 * the user's query when PostgreSQL gave a position in it, or the timeout in words. */
static int untrusted_error(dp_err *e, PGconn *c, PGresult *r, long timeout_ms, const char *user,
                           size_t user_len, size_t prefix_chars) {
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  const char *prim = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  const char *hint = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_HINT) : NULL;
  const char *pos = r ? PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION) : NULL;
  if (state && strcmp(state, "57014") == 0 && prim && strstr(prim, "statement timeout"))
    return dp_err_set(e, DP_EPG,
                      "the query ran longer than the gold statement timeout of %.3g s "
                      "(DP_GOLD_STATEMENT_TIMEOUT) and was stopped",
                      (double)timeout_ms / 1000.0);
  if (!prim || !*prim) {
    dp_err_set(e, DP_EPG, "PostgreSQL: %s", PQerrorMessage(c));
    size_t n = e ? strlen(e->msg) : 0;
    while (e && n && (e->msg[n - 1] == '\n' || e->msg[n - 1] == ' ')) e->msg[--n] = '\0';
    return DP_EPG;
  }
  /* "near "'x\n) q"": the end of the engine's wrapper is no part of the script's query */
  char pm[1024];
  snprintf(pm, sizeof pm, "%s", prim);
  char *w = strstr(pm, "\n) q\"");
  if (w) memmove(w, w + 4, strlen(w + 4) + 1);
  prim = pm;
  int line = (pos && user) ? user_line(user, user_len, prefix_chars, strtol(pos, NULL, 10)) : 0;
  char where[48] = "";
  if (line) snprintf(where, sizeof where, " (line %d of the query)", line);
  else if (pos && user) snprintf(where, sizeof where, " (at the end of the query)");
  return dp_err_set(e, DP_EPG, "%s%s%s%s%s", prim, where, hint ? " (hint: " : "", hint ? hint : "",
                    hint ? ")" : "");
}

/* ---------- prepare and run ---------- */

/* Appends s as an element of a text[] literal: "..." with " and \ escaped, or NULL. */
static void array_elem(dp_buf *b, const char *s) {
  if (!s) { dp_buf_puts(b, "NULL"); return; }
  dp_buf_putc(b, '"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') dp_buf_putc(b, '\\');
    dp_buf_putc(b, *s);
  }
  dp_buf_putc(b, '"');
}

void dp_pg_sandbox_free(dp_pg_sandbox *s) {
  dp_buf_free(&s->from);
  dp_buf_free(&s->columns);
  dp_buf_free(&s->sql);
  dp_buf_free(&s->params);
}

/* Type names (format_type) of the np parameter types and nf column types of a described
 * statement, in that order. Returns the result (caller PQclear()s it) or NULL with e set. */
static PGresult *type_names(PGconn *c, const PGresult *d, int np, int nf, dp_err *e) {
  dp_buf oids = DP_BUF_INIT, mods = DP_BUF_INIT;
  dp_buf_putc(&oids, '{');
  dp_buf_putc(&mods, '{');
  for (int i = 0; i < np + nf; i++) {
    if (i) { dp_buf_putc(&oids, ','); dp_buf_putc(&mods, ','); }
    if (i < np) {
      dp_buf_printf(&oids, "%u", (unsigned)PQparamtype(d, i));
      dp_buf_puts(&mods, "-1");
    } else {
      dp_buf_printf(&oids, "%u", (unsigned)PQftype(d, i - np));
      dp_buf_printf(&mods, "%d", PQfmod(d, i - np));
    }
  }
  dp_buf_putc(&oids, '}');
  dp_buf_putc(&mods, '}');
  const char *p[] = {oids.data, mods.data};
  PGresult *r = NULL;
  int rc = dp_pg_exec(c,
                      "SELECT pg_catalog.format_type(t, m) FROM unnest($1::oid[], $2::int4[])"
                      " WITH ORDINALITY AS u(t, m, i) ORDER BY i",
                      2, p, &r, e);
  dp_buf_free(&oids);
  dp_buf_free(&mods);
  return rc ? NULL : r;
}

int dp_pg_sandbox_prepare(dp_pg_sandbox *s, PGconn *c, const char *sql, const char *const *names,
                          int nnames, int nvals, const char *const *vals, dp_err *e) {
  int rc = 0;
  sql_scan sc;
  dp_buf prefix = DP_BUF_INIT, wrapped = DP_BUF_INIT;
  PGresult *r = NULL, *d = NULL, *t = NULL;
  memset(s, 0, sizeof *s);
  if (scan_sql(sql, &sc) != 0) return dp_err_set(e, DP_ENOMEM, "out of memory");
  if ((rc = check_scan(sql, &sc, e)) != 0) goto cleanup;

  /* the wrapper: the script's text is always a subquery, so it can only be a query */
  if (names) {
    dp_buf_puts(&prefix, "SELECT ");
    for (int i = 0; i < nnames; i++) {
      if (i) dp_buf_puts(&prefix, ", ");
      dp_buf_puts(&prefix, "q.");
      dp_pg_ident(&prefix, names[i]);
    }
    dp_buf_puts(&prefix, " FROM (\n");
  } else {
    dp_buf_puts(&prefix, "SELECT * FROM (\n");
  }
  size_t prefix_chars = nchars(prefix.data, prefix.len);
  dp_buf_append(&wrapped, prefix.data, prefix.len);
  dp_buf_append(&wrapped, sql, sc.end);
  if (dp_buf_puts(&wrapped, "\n) q") != 0) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); goto cleanup; }

  /* describe it: the extended protocol takes one statement only */
  r = PQprepare(c, "", wrapped.data, 0, NULL);
  if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
    rc = untrusted_error(e, c, r, 0, sql, sc.end, prefix_chars);
    goto cleanup;
  }
  d = PQdescribePrepared(c, "");
  if (!d || PQresultStatus(d) != PGRES_COMMAND_OK) {
    rc = untrusted_error(e, c, d, 0, NULL, 0, 0);
    goto cleanup;
  }
  int np = PQnparams(d), nf = PQnfields(d);
  if (np != nvals) {
    if (names && np > 0)
      rc = dp_err_set(e, DP_EINVAL, "the query of an SQL model takes no parameters, but it uses $%d", np);
    else
      rc = dp_err_set(e, DP_EINVAL, "the query uses %d parameter%s (%s$%d) but %d value%s given", np,
                      np == 1 ? "" : "s", np == 1 ? "" : "$1..", np, nvals, nvals == 1 ? " was" : "s were");
    goto cleanup;
  }
  if (nf == 0) { rc = dp_err_set(e, DP_EINVAL, "the query returns no columns"); goto cleanup; }
  if (!(t = type_names(c, d, np, nf, e))) { rc = DP_EPG; goto cleanup; }

  /* $1: the query with each $n replaced by the n-th element of the text[] parameter, cast to
   * the type PostgreSQL inferred for $n */
  dp_buf_append(&s->sql, prefix.data, prefix.len);
  size_t at = 0;
  for (size_t i = 0; i < sc.nparams; i++) {
    const sql_param *p = &sc.params[i];
    if (p->n < 1 || p->n > np) continue; /* PostgreSQL refused those when describing */
    dp_buf_append(&s->sql, sql + at, p->off - at);
    dp_buf_printf(&s->sql, "CAST(($1)[%d] AS %s)", p->n, PQgetvalue(t, p->n - 1, 0));
    at = p->off + p->len;
  }
  dp_buf_append(&s->sql, sql + at, sc.end - at);
  dp_buf_puts(&s->sql, "\n) q");

  /* $2 */
  dp_buf_putc(&s->params, '{');
  for (int i = 0; i < nvals; i++) {
    if (i) dp_buf_putc(&s->params, ',');
    array_elem(&s->params, vals[i]);
  }
  dp_buf_putc(&s->params, '}');

  /* FROM item and select list */
  dp_buf_puts(&s->from, SANDBOX_CALL " AS r(");
  for (int i = 0; i < nf; i++) {
    if (i) { dp_buf_puts(&s->from, ", "); dp_buf_puts(&s->columns, ", "); }
    if (names) {
      dp_pg_ident(&s->from, names[i]);
      dp_buf_puts(&s->columns, "r.");
      dp_pg_ident(&s->columns, names[i]);
    } else {
      dp_buf_printf(&s->from, "c%d", i + 1);
      dp_buf_printf(&s->columns, "r.c%d AS ", i + 1);
      dp_pg_ident(&s->columns, PQfname(d, i));
    }
    dp_buf_putc(&s->from, ' ');
    dp_buf_puts(&s->from, PQgetvalue(t, np + i, 0));
  }
  if (dp_buf_putc(&s->from, ')') != 0) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); goto cleanup; }
  s->ncols = nf;
cleanup:
  PQclear(r);
  PQclear(d);
  PQclear(t);
  dp_buf_free(&prefix);
  dp_buf_free(&wrapped);
  free(sc.params);
  return rc;
}

/* The result of an untrusted statement: *out (or cleared) when it worked, else the error as
 * untrusted_error words it (r is cleared). Takes r. */
static int sandbox_result(PGconn *c, PGresult *r, long timeout_ms, PGresult **out, dp_err *e) {
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    int rc = untrusted_error(e, c, r, timeout_ms, NULL, 0, 0);
    PQclear(r);
    return rc;
  }
  if (out) *out = r;
  else PQclear(r);
  return 0;
}

int dp_pg_sandbox_exec(PGconn *c, const dp_pg_sandbox *s, const char *stmt, int nextra,
                       const char *const *extra, long timeout_ms, PGresult **out, dp_err *e) {
  const char *vals[8];
  if (nextra < 0 || nextra > 6) return dp_err_set(e, DP_EINVAL, "dp_pg_sandbox_exec: too many parameters");
  vals[0] = s->sql.data;
  vals[1] = s->params.data;
  for (int i = 0; i < nextra; i++) vals[2 + i] = extra[i];
  return sandbox_result(c, PQexecParams(c, stmt, 2 + nextra, NULL, vals, NULL, NULL, 0), timeout_ms, out, e);
}

int dp_pg_sandbox_run(PGconn *c, const char *stmt, long timeout_ms, PGresult **out, dp_err *e) {
  return sandbox_result(c, PQexecParams(c, stmt, 0, NULL, NULL, NULL, NULL, 0), timeout_ms, out, e);
}

int dp_pg_set_statement_timeout(PGconn *c, long ms, dp_err *e) {
  char v[32];
  snprintf(v, sizeof v, "%ld", ms > 0 ? ms : 0);
  const char *p[] = {v};
  /* with the timeout, before every statement: the memory a sort or hash may take (a query could
   * have raised it for the session), and, where the engine may set it (a superuser), the temporary
   * disk a statement may fill, which dp_gold cannot raise again */
  return dp_pg_exec(c,
                    "SELECT pg_catalog.set_config('statement_timeout', $1, true),"
                    " pg_catalog.set_config('work_mem', '" DP_GOLD_WORK_MEM "', true),"
                    " pg_catalog.set_config('hash_mem_multiplier', '2', true),"
                    " CASE WHEN (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)"
                    "  THEN pg_catalog.set_config('temp_file_limit', '" DP_GOLD_TEMP_FILE_LIMIT "', true) END",
                    1, p, NULL, e);
}

int dp_pg_sandbox_verify(PGconn *c, dp_err *e) {
  PGresult *r = NULL;
  int rc = dp_pg_exec(c,
                      "SELECT (r.rolsuper OR r.rolbypassrls)::int AS privileged,"
                      " (SELECT count(*) FROM pg_catalog.pg_auth_members m WHERE m.member = r.oid) AS memberships,"
                      " coalesce((SELECT (p.prosecdef AND p.proowner = r.oid)::int FROM pg_catalog.pg_proc p"
                      "  WHERE p.oid = pg_catalog.to_regprocedure('gold_sandbox.query(text, text[])')), -1) AS fn"
                      " FROM pg_catalog.pg_roles r WHERE r.rolname = '" SANDBOX_ROLE "'",
                      0, NULL, &r, e);
  if (rc) return rc;
  if (PQntuples(r) == 0 || strcmp(PQgetvalue(r, 0, 2), "-1") == 0)
    rc = dp_err_set(e, DP_ECONFIG,
                    "the gold SQL sandbox is not installed in this database (role " SANDBOX_ROLE
                    ", function gold_sandbox.query): run dp-engine migrate");
  else if (strcmp(PQgetvalue(r, 0, 0), "0") != 0)
    rc = dp_err_set(e, DP_ECONFIG,
                    "the role " SANDBOX_ROLE " is a superuser or bypasses row security: gold SQL will not run "
                    "under it (ALTER ROLE " SANDBOX_ROLE " NOSUPERUSER NOBYPASSRLS)");
  else if (strcmp(PQgetvalue(r, 0, 1), "0") != 0)
    rc = dp_err_set(e, DP_ECONFIG,
                    "the role " SANDBOX_ROLE " is a member of other roles and would hold their privileges: "
                    "gold SQL will not run under it (REVOKE those roles FROM " SANDBOX_ROLE ")");
  else if (strcmp(PQgetvalue(r, 0, 2), "1") != 0)
    rc = dp_err_set(e, DP_ECONFIG,
                    "gold_sandbox.query is not a SECURITY DEFINER function owned by " SANDBOX_ROLE
                    ": gold SQL will not run through it (see docs/gold.md#the-sql-sandbox)");
  PQclear(r);
  return rc;
}

int dp_pg_sandbox_check_writes(PGconn *c, dp_err *e) {
  PGresult *r = NULL;
  int rc = dp_pg_exec(c,
                      "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata WHERE lomowner ="
                      " (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = '" SANDBOX_ROLE "')",
                      0, NULL, &r, e);
  if (rc) return rc;
  if (strcmp(PQgetvalue(r, 0, 0), "0") != 0)
    rc = dp_err_set(e, DP_EPG, "the query created large objects (lo_create, lo_from_bytea, ...), which a gold "
                               "query may not do; nothing of the build was kept");
  PQclear(r);
  return rc;
}
