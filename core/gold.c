/* gold.c - gold model materialization (see gold.h and docs/gold.md). */
#include "gold.h"
#include "jsonbson.h"
#include "luabridge.h"
#include "pg.h"
#include "pgsandbox.h"

#include <bson/bson.h>
#include <inttypes.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define BUILD_SUFFIX "__build"
#define STAGE "_dp_gold_stage"
#define GOLD_MT "dp.core.gold_builder"
#define PG_MT "dp.core.pg"
#define READER_MT "dp.core.gold_reader"

/* Appends gold."<model><suffix>". */
static void gold_table(dp_buf *b, const dp_entity *m, const char *suffix) {
  char name[128];
  snprintf(name, sizeof name, "%s%s", m->name, suffix);
  dp_pg_qualified(b, "gold", name);
}

static void column_list(dp_buf *b, const dp_entity *m, const char *prefix) {
  for (size_t i = 0; i < m->ncols; i++) {
    if (i) dp_buf_puts(b, ", ");
    dp_buf_puts(b, prefix);
    dp_pg_ident(b, m->cols[i].name);
  }
}

static void column_defs(dp_buf *b, const dp_entity *m) {
  for (size_t i = 0; i < m->ncols; i++) {
    dp_pg_ident(b, m->cols[i].name);
    dp_buf_putc(b, ' ');
    dp_column_sql_type(&m->cols[i], b);
    if (!m->cols[i].nullable) dp_buf_puts(b, " NOT NULL");
    dp_buf_puts(b, ", ");
  }
}

static void pk_list(dp_buf *b, const dp_entity *m) {
  for (size_t k = 0; k < m->npk; k++) {
    if (k) dp_buf_puts(b, ", ");
    dp_pg_ident(b, m->cols[m->pk[k]].name);
  }
}

/* CREATE TABLE <target> (columns, system columns, primary key). */
static void create_table(dp_buf *b, const dp_entity *m, const char *suffix, int if_not_exists) {
  dp_buf_puts(b, if_not_exists ? "CREATE TABLE IF NOT EXISTS " : "CREATE TABLE ");
  gold_table(b, m, suffix);
  dp_buf_puts(b, " (");
  column_defs(b, m);
  dp_buf_puts(b, "_dp_run_id uuid NOT NULL, _dp_run_ts timestamptz NOT NULL,"
                 " _dp_created_at timestamptz NOT NULL DEFAULT now(),"
                 " _dp_updated_at timestamptz NOT NULL DEFAULT now()");
  if (m->npk) {
    dp_buf_puts(b, ", PRIMARY KEY (");
    pk_list(b, m);
    dp_buf_putc(b, ')');
  }
  dp_buf_puts(b, ")");
}

static int exec(PGconn *c, const dp_buf *sql, dp_err *e) { return dp_pg_exec(c, sql->data, 0, NULL, NULL, e); }

int dp_gold_begin(dp_gold_builder *b, PGconn *c, const dp_entity *model, const char *materialization,
                  const char *run_id, const char *run_ts, long timeout_ms, dp_err *e) {
  int rc = 0;
  dp_buf sql = DP_BUF_INIT;
  PGresult *r = NULL;
  memset(b, 0, sizeof *b);
  b->c = c;
  b->timeout_ms = timeout_ms;
  b->model = model;
  b->incremental = strcmp(materialization, "incremental") == 0;
  snprintf(b->run_id, sizeof b->run_id, "%s", run_id);
  snprintf(b->run_ts, sizeof b->run_ts, "%s", run_ts);
  if (strlen(model->name) + strlen(BUILD_SUFFIX) > 63) {
    rc = dp_err_set(e, DP_EINVAL, "gold model %s: the name is too long for its build table %s%s (63 bytes)",
                    model->name, model->name, BUILD_SUFFIX);
    goto cleanup;
  }
  if (b->incremental && model->npk == 0) {
    rc = dp_err_set(e, DP_EMETA, "gold model %s: an incremental model needs a primary key", model->name);
    goto cleanup;
  }
  if ((rc = dp_row_init(&b->row, model->ncols)) != 0) {
    rc = dp_err_set(e, rc, "out of memory");
    goto cleanup;
  }
  if ((rc = dp_pg_begin(c, e)) != 0) goto cleanup;
  b->in_txn = 1;
  if ((rc = dp_pg_sandbox_verify(c, e)) != 0) goto cleanup;
  if ((rc = dp_pg_exec(c, "SELECT pg_catalog.current_setting('statement_timeout')", 0, NULL, &r, e)) != 0)
    goto cleanup;
  snprintf(b->prev_timeout, sizeof b->prev_timeout, "%s", PQgetvalue(r, 0, 0));
  dp_buf_puts(&sql, "CREATE SCHEMA IF NOT EXISTS gold");
  if ((rc = exec(c, &sql, e)) != 0) goto cleanup;
  dp_buf_reset(&sql);
  if (!b->incremental) {
    /* Created inside this transaction: no other session ever sees the build table. */
    dp_buf_puts(&sql, "DROP TABLE IF EXISTS ");
    gold_table(&sql, model, BUILD_SUFFIX);
    if ((rc = exec(c, &sql, e)) != 0) goto cleanup;
    dp_buf_reset(&sql);
    create_table(&sql, model, BUILD_SUFFIX, 0);
    if ((rc = exec(c, &sql, e)) != 0) goto cleanup;
  } else {
    create_table(&sql, model, "", 1);
    if ((rc = exec(c, &sql, e)) != 0) goto cleanup;
    for (size_t i = 0; i < model->ncols; i++) { /* columns added to gold.json since */
      dp_buf_reset(&sql);
      dp_buf_puts(&sql, "ALTER TABLE ");
      gold_table(&sql, model, "");
      dp_buf_puts(&sql, " ADD COLUMN IF NOT EXISTS ");
      dp_pg_ident(&sql, model->cols[i].name);
      dp_buf_putc(&sql, ' ');
      dp_column_sql_type(&model->cols[i], &sql);
      if ((rc = exec(c, &sql, e)) != 0) goto cleanup;
    }
    dp_buf_reset(&sql);
    dp_buf_puts(&sql, "CREATE TEMP TABLE " STAGE " (");
    column_defs(&sql, model);
    sql.len -= 2; /* the last ", " */
    sql.data[sql.len] = '\0';
    dp_buf_puts(&sql, ") ON COMMIT DROP");
    if ((rc = exec(c, &sql, e)) != 0) goto cleanup;
  }
cleanup:
  PQclear(r);
  dp_buf_free(&sql);
  if (rc) {
    dp_err_prefix(e, "gold model %s: ", model->name);
    dp_gold_abort(b);
  }
  return rc;
}

static int end_copy(dp_gold_builder *b, dp_err *e) {
  if (!b->in_copy) return 0;
  b->in_copy = 0;
  return dp_pg_copy_end(b->c, NULL, e);
}

int dp_gold_insert_select(dp_gold_builder *b, const char *select_sql, int64_t *n, dp_err *e) {
  if (!b->in_txn) return dp_err_set(e, DP_EINVAL, "gold builder is not building");
  int rc = end_copy(b, e);
  if (rc) return rc;
  const dp_entity *m = b->model;
  dp_buf sql = DP_BUF_INIT;
  dp_pg_sandbox sb;
  PGresult *r = NULL;
  const char **names = calloc(m->ncols ? m->ncols : 1, sizeof *names);
  if (!names) return dp_err_set(e, DP_ENOMEM, "out of memory");
  for (size_t i = 0; i < m->ncols; i++) names[i] = m->cols[i].name;
  /* the timeout holds for the prepare too (parse analysis runs input functions) */
  rc = dp_pg_set_statement_timeout(b->c, b->timeout_ms, e);
  if (rc == 0) rc = dp_pg_sandbox_prepare(&sb, b->c, select_sql, names, (int)m->ncols, 0, NULL, e);
  free(names);
  if (rc) goto cleanup;
  /* the INSERT is the engine's; the query inside gold_sandbox.query runs as dp_gold */
  dp_buf_puts(&sql, "INSERT INTO ");
  if (b->incremental) dp_buf_puts(&sql, STAGE);
  else gold_table(&sql, m, BUILD_SUFFIX);
  dp_buf_puts(&sql, " (");
  column_list(&sql, m, "");
  if (!b->incremental) dp_buf_puts(&sql, ", _dp_run_id, _dp_run_ts");
  dp_buf_puts(&sql, ") SELECT ");
  dp_buf_puts(&sql, sb.columns.data);
  if (!b->incremental) dp_buf_puts(&sql, ", $3::uuid, $4::timestamptz");
  dp_buf_puts(&sql, " FROM ");
  dp_buf_puts(&sql, sb.from.data);
  const char *p[] = {b->run_id, b->run_ts};
  if ((rc = dp_pg_set_statement_timeout(b->c, b->timeout_ms, e)) != 0) goto cleanup;
  if ((rc = dp_pg_sandbox_exec(b->c, &sb, sql.data, b->incremental ? 0 : 2, p, b->timeout_ms, &r, e)) != 0)
    goto cleanup;
  int64_t k = strtoll(PQcmdTuples(r), NULL, 10);
  b->rows += k;
  if (n) *n = k;
  const char *prev[] = {b->prev_timeout};
  rc = dp_pg_exec(b->c, "SELECT pg_catalog.set_config('statement_timeout', $1, true)", 1, prev, NULL, e);
cleanup:
  PQclear(r);
  dp_pg_sandbox_free(&sb);
  dp_buf_free(&sql);
  return rc;
}

int dp_gold_emit_json(dp_gold_builder *b, const char *json, size_t n, dp_err *e) {
  if (!b->in_txn) return dp_err_set(e, DP_EINVAL, "gold builder is not building");
  int rc = 0;
  const dp_entity *m = b->model;
  bson_t rec;
  dp_err je;
  if (dp_json_to_bson(json, n, &rec, &je) != 0) {
    bson_destroy(&rec);
    return dp_err_set(e, DP_EJSON, "row %" PRId64 ": %s", b->rows + 1, je.msg);
  }
  if ((rc = dp_row_cast(&b->row, m, &rec, 0, e)) != 0) {
    dp_err_prefix(e, "row %" PRId64 ": ", b->rows + 1);
    goto cleanup;
  }
  if (!b->in_copy) {
    dp_buf sql = DP_BUF_INIT;
    dp_buf_puts(&sql, "COPY ");
    if (b->incremental) dp_buf_puts(&sql, STAGE);
    else gold_table(&sql, m, BUILD_SUFFIX);
    dp_buf_puts(&sql, " (");
    column_list(&sql, m, "");
    if (!b->incremental) dp_buf_puts(&sql, ", _dp_run_id, _dp_run_ts");
    dp_buf_puts(&sql, ") FROM STDIN");
    rc = dp_pg_copy_begin(b->c, sql.data, e);
    dp_buf_free(&sql);
    if (rc) goto cleanup;
    b->in_copy = 1;
  }
  dp_buf_reset(&b->line);
  for (size_t i = 0; i < m->ncols; i++) {
    if (i) dp_buf_putc(&b->line, '\t');
    if (b->row.null[i]) dp_buf_puts(&b->line, "\\N");
    else dp_pg_copy_escape(&b->line, b->row.text.data + b->row.off[i], b->row.len[i]);
  }
  if (!b->incremental) dp_buf_printf(&b->line, "\t%s\t%s", b->run_id, b->run_ts);
  dp_buf_putc(&b->line, '\n');
  if ((rc = dp_pg_copy_put(b->c, b->line.data, b->line.len, e)) != 0) goto cleanup;
  b->rows++;
cleanup:
  bson_destroy(&rec);
  return rc;
}

static int64_t count_of(PGresult *r, int col) { return strtoll(PQgetvalue(r, 0, col), NULL, 10); }

/* table: DROP the old table and RENAME the build table (and its key index) in its place. */
static int swap(dp_gold_builder *b, dp_counts *n, dp_err *e) {
  const dp_entity *m = b->model;
  dp_buf sql = DP_BUF_INIT;
  PGresult *r = NULL;
  int rc;
  char idx[160];
  /* The old row count first: it takes only a share lock, like any reader. */
  dp_buf_puts(&sql, "SELECT to_regclass($1) IS NOT NULL");
  char regname[160];
  snprintf(regname, sizeof regname, "gold.\"%s\"", m->name);
  const char *p[] = {regname};
  if ((rc = dp_pg_exec(b->c, sql.data, 1, p, &r, e)) != 0) goto cleanup;
  int exists = PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  r = NULL;
  if (exists) {
    dp_buf_reset(&sql);
    dp_buf_puts(&sql, "SELECT count(*) FROM ");
    gold_table(&sql, m, "");
    if ((rc = dp_pg_exec(b->c, sql.data, 0, NULL, &r, e)) != 0) goto cleanup;
    n->deleted = count_of(r, 0);
    PQclear(r);
    r = NULL;
  }
  /* The swap: readers of the old table hold a share lock; DROP waits for their transactions. */
  dp_buf_reset(&sql);
  dp_buf_puts(&sql, "DROP TABLE IF EXISTS ");
  gold_table(&sql, m, "");
  dp_buf_puts(&sql, ";\nALTER TABLE ");
  gold_table(&sql, m, BUILD_SUFFIX);
  dp_buf_puts(&sql, " RENAME TO ");
  dp_pg_ident(&sql, m->name);
  if (m->npk) {
    snprintf(idx, sizeof idx, "%s%s_pkey", m->name, BUILD_SUFFIX);
    dp_buf_puts(&sql, ";\nALTER INDEX ");
    dp_pg_qualified(&sql, "gold", idx);
    snprintf(idx, sizeof idx, "%s_pkey", m->name);
    dp_buf_puts(&sql, " RENAME TO ");
    dp_pg_ident(&sql, idx);
  }
  rc = exec(b->c, &sql, e);
  n->in = n->inserted = b->rows;
cleanup:
  PQclear(r);
  dp_buf_free(&sql);
  return rc;
}

/* incremental: INSERT ... ON CONFLICT (key) DO UPDATE where a column changed. */
static int merge(dp_gold_builder *b, dp_counts *n, dp_err *e) {
  const dp_entity *m = b->model;
  dp_buf sql = DP_BUF_INIT;
  PGresult *r = NULL;
  int rc;
  dp_buf_puts(&sql, "WITH m AS (INSERT INTO ");
  gold_table(&sql, m, "");
  dp_buf_puts(&sql, " AS t (");
  column_list(&sql, m, "");
  dp_buf_puts(&sql, ", _dp_run_id, _dp_run_ts) SELECT ");
  column_list(&sql, m, "s.");
  dp_buf_puts(&sql, ", $1::uuid, $2::timestamptz FROM " STAGE " s ON CONFLICT (");
  pk_list(&sql, m);
  dp_buf_puts(&sql, ") DO ");
  int nonkey = 0;
  for (size_t i = 0; i < m->ncols; i++) nonkey += !m->cols[i].key;
  if (nonkey == 0) {
    dp_buf_puts(&sql, "NOTHING");
  } else {
    dp_buf_puts(&sql, "UPDATE SET ");
    for (size_t i = 0; i < m->ncols; i++) {
      if (m->cols[i].key) continue;
      dp_pg_ident(&sql, m->cols[i].name);
      dp_buf_puts(&sql, " = EXCLUDED.");
      dp_pg_ident(&sql, m->cols[i].name);
      dp_buf_puts(&sql, ", ");
    }
    dp_buf_puts(&sql, "_dp_run_id = EXCLUDED._dp_run_id, _dp_run_ts = EXCLUDED._dp_run_ts,"
                      " _dp_updated_at = now() WHERE (");
    int k = 0;
    for (size_t i = 0; i < m->ncols; i++) {
      if (m->cols[i].key) continue;
      if (k++) dp_buf_puts(&sql, ", ");
      dp_buf_puts(&sql, "t.");
      dp_pg_ident(&sql, m->cols[i].name);
    }
    dp_buf_puts(&sql, ", NULL) IS DISTINCT FROM (");
    k = 0;
    for (size_t i = 0; i < m->ncols; i++) {
      if (m->cols[i].key) continue;
      if (k++) dp_buf_puts(&sql, ", ");
      dp_buf_puts(&sql, "EXCLUDED.");
      dp_pg_ident(&sql, m->cols[i].name);
    }
    dp_buf_puts(&sql, ", NULL)");
  }
  dp_buf_puts(&sql, " RETURNING (xmax = 0) AS ins)"
                    " SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM m");
  const char *p[] = {b->run_id, b->run_ts};
  if ((rc = dp_pg_exec(b->c, sql.data, 2, p, &r, e)) != 0) goto cleanup;
  n->in = b->rows;
  n->inserted = count_of(r, 0);
  n->updated = count_of(r, 1);
  n->unchanged = n->in - n->inserted - n->updated;
  if (b->full_refresh) { /* the table becomes exactly what this build produced */
    PQclear(r);
    r = NULL;
    dp_buf_reset(&sql);
    dp_buf_puts(&sql, "WITH d AS (DELETE FROM ");
    gold_table(&sql, m, "");
    dp_buf_puts(&sql, " t WHERE NOT EXISTS (SELECT 1 FROM " STAGE " s WHERE ");
    for (size_t k = 0; k < m->npk; k++) {
      if (k) dp_buf_puts(&sql, " AND ");
      dp_buf_puts(&sql, "s.");
      dp_pg_ident(&sql, m->cols[m->pk[k]].name);
      dp_buf_puts(&sql, " = t.");
      dp_pg_ident(&sql, m->cols[m->pk[k]].name);
    }
    dp_buf_puts(&sql, ") RETURNING 1) SELECT count(*) FROM d");
    if ((rc = dp_pg_exec(b->c, sql.data, 0, NULL, &r, e)) != 0) goto cleanup;
    n->deleted = count_of(r, 0);
  }
cleanup:
  PQclear(r);
  dp_buf_free(&sql);
  return rc;
}

static void free_scratch(dp_gold_builder *b) {
  dp_row_free(&b->row);
  dp_buf_free(&b->line);
  memset(&b->row, 0, sizeof b->row);
}

int dp_gold_finish(dp_gold_builder *b, dp_counts *counts, dp_err *e) {
  if (!b->in_txn) return dp_err_set(e, DP_EINVAL, "gold builder is not building");
  memset(counts, 0, sizeof *counts);
  int rc = end_copy(b, e);
  if (rc == 0) rc = dp_pg_sandbox_check_writes(b->c, e);
  if (rc == 0) rc = b->incremental ? merge(b, counts, e) : swap(b, counts, e);
  if (rc == 0) rc = dp_pg_commit(b->c, e);
  if (rc) {
    dp_err_prefix(e, "gold model %s: ", b->model->name);
    dp_gold_abort(b);
    return rc;
  }
  b->in_txn = 0;
  free_scratch(b);
  return 0;
}

void dp_gold_abort(dp_gold_builder *b) {
  if (b->in_copy) {
    dp_err ignore;
    dp_pg_copy_end(b->c, "gold build aborted", &ignore);
    b->in_copy = 0;
  }
  if (b->in_txn) dp_pg_rollback(b->c);
  b->in_txn = 0;
  free_scratch(b);
}

/* ---------- Lua binding ---------- */

typedef struct lgold {
  dp_gold_builder *b; /* the builder (owned when own is set) or NULL once detached */
  int own;            /* created by dp.core gold_begin: owns b, its model and its connection ref */
  dp_entity model;    /* owned copy when own */
} lgold;

static dp_gold_builder *check_builder(lua_State *L) {
  lgold *g = luaL_checkudata(L, 1, GOLD_MT);
  if (!g->b || !g->b->in_txn) luaL_error(L, "the gold builder is finished or aborted");
  return g->b;
}

/* b:emit(json_text) -> true | nil, err */
static int l_emit(lua_State *L) {
  dp_gold_builder *b = check_builder(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  dp_err e;
  if (dp_gold_emit_json(b, s, n, &e) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, e.msg);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* b:insert_select(sql) -> rows | nil, err */
static int l_insert_select(lua_State *L) {
  dp_gold_builder *b = check_builder(L);
  const char *sql = luaL_checkstring(L, 2);
  dp_err e;
  int64_t n = 0;
  if (dp_gold_insert_select(b, sql, &n, &e) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, e.msg);
    return 2;
  }
  lua_pushnumber(L, (lua_Number)n);
  return 1;
}

/* b:statement_timeout() -> milliseconds (0: none), for the reader of ctx:query */
static int l_statement_timeout(lua_State *L) {
  dp_gold_builder *b = check_builder(L);
  lua_pushnumber(L, (lua_Number)b->timeout_ms);
  return 1;
}

static void release(lgold *g) {
  if (g->own && g->b) {
    dp_gold_abort(g->b);
    free(g->b);
    dp_entity_free(&g->model);
  }
  g->b = NULL;
}

/* b:finish() -> { in, inserted, updated, deleted, unchanged } | nil, err (specs only) */
static int l_finish(lua_State *L) {
  lgold *g = luaL_checkudata(L, 1, GOLD_MT);
  dp_gold_builder *b = check_builder(L);
  if (!g->own) return luaL_error(L, "finish: the engine finishes this build itself");
  dp_counts n;
  dp_err e;
  int rc = dp_gold_finish(b, &n, &e);
  release(g);
  if (rc) {
    lua_pushnil(L);
    lua_pushstring(L, e.msg);
    return 2;
  }
  lua_newtable(L);
  const char *names[] = {"in", "inserted", "updated", "deleted", "unchanged"};
  const int64_t vals[] = {n.in, n.inserted, n.updated, n.deleted, n.unchanged};
  for (int i = 0; i < 5; i++) {
    lua_pushnumber(L, (lua_Number)vals[i]);
    lua_setfield(L, -2, names[i]);
  }
  return 1;
}

static int l_abort(lua_State *L) {
  lgold *g = luaL_checkudata(L, 1, GOLD_MT);
  if (g->own) release(g);
  return 0;
}

static void push_obj(lua_State *L, dp_gold_builder *b, int own) {
  lgold *g = lua_newuserdata(L, sizeof *g);
  memset(g, 0, sizeof *g);
  g->b = b;
  g->own = own;
  luaL_getmetatable(L, GOLD_MT);
  lua_setmetatable(L, -2);
}

void dp_gold_lua_push(lua_State *L, dp_gold_builder *b) { push_obj(L, b, 0); }

void dp_gold_lua_detach(lua_State *L, int idx) {
  lgold *g = luaL_checkudata(L, idx, GOLD_MT);
  if (!g->own) g->b = NULL;
}

/* gold_begin(pg, model, materialization, run_id, run_ts) -> builder | nil, err. The pg object is
 * dp.core's connection (its struct starts with the PGconn pointer); the builder keeps a
 * reference to it in its uservalue so the connection outlives the builder. */
static int l_gold_begin(lua_State *L) {
  PGconn **pc = luaL_checkudata(L, 1, PG_MT);
  if (!*pc) return luaL_error(L, "connection is closed");
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *mat = luaL_checkstring(L, 3);
  const char *run_id = luaL_checkstring(L, 4);
  const char *run_ts = luaL_checkstring(L, 5);
  long timeout_ms = (long)luaL_optnumber(L, 6, 0);
  dp_gold_builder *b = calloc(1, sizeof *b);
  if (!b) return luaL_error(L, "out of memory");
  push_obj(L, b, 1);
  lgold *g = lua_touserdata(L, -1);
  lua_newtable(L);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "pg");
  lua_setfenv(L, -2);
  /* a copy of the model as an entity of system "gold" */
  lua_newtable(L);
  lua_pushstring(L, "gold");
  lua_setfield(L, -2, "system");
  lua_getfield(L, 2, "name");
  lua_setfield(L, -2, "name");
  lua_getfield(L, 2, "columns");
  lua_setfield(L, -2, "columns");
  lua_getfield(L, 2, "primary_key");
  lua_setfield(L, -2, "primary_key");
  dp_err e;
  int rc = dp_entity_from_lua(L, -1, &g->model, &e);
  lua_pop(L, 1);
  if (rc) { free(b); g->b = NULL; g->own = 0; return luaL_error(L, "gold_begin: %s", e.msg); }
  if (dp_gold_begin(b, *pc, &g->model, mat, run_id, run_ts, timeout_ms, &e) != 0) {
    release(g);
    lua_pushnil(L);
    lua_pushstring(L, e.msg);
    return 2;
  }
  return 1;
}


/* ---------- the reader of ctx:query ---------- */

typedef struct lreader {
  PGconn **pc;     /* the dp.core pg object's connection slot (the object is kept in the
                    * uservalue; its close sets the slot to NULL) */
  PGconn *c;       /* *pc while reading; NULL once finished */
  long timeout_ms;
} lreader;

static lreader *check_reader(lua_State *L) {
  lreader *r = luaL_checkudata(L, 1, READER_MT);
  if (!r->c || *r->pc != r->c) luaL_error(L, "the gold reader is finished");
  return r;
}

static int push_fail(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* gold_reader(pg, timeout_ms) -> reader | nil, err: a REPEATABLE READ READ ONLY transaction on
 * pg (a dp.core connection of its own) in which every statement has the timeout. */
static int l_gold_reader(lua_State *L) {
  PGconn **pc = luaL_checkudata(L, 1, PG_MT);
  if (!*pc) return luaL_error(L, "connection is closed");
  long timeout_ms = (long)luaL_optnumber(L, 2, 0);
  dp_err e;
  if (dp_pg_exec(*pc, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL, &e) != 0 ||
      dp_pg_sandbox_verify(*pc, &e) != 0 || dp_pg_set_statement_timeout(*pc, timeout_ms, &e) != 0) {
    dp_pg_rollback(*pc);
    return push_fail(L, e.msg);
  }
  lreader *r = lua_newuserdata(L, sizeof *r);
  r->pc = pc;
  r->c = *pc;
  r->timeout_ms = timeout_ms;
  luaL_getmetatable(L, READER_MT);
  lua_setmetatable(L, -2);
  lua_newtable(L);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "pg");
  lua_setfenv(L, -2);
  return 1;
}

/* reader:declare(cursor, sql, values...) -> true | nil, err: a cursor over the script's query,
 * run in the SQL sandbox; values bind $1, $2, ... (nil is NULL). */
static int l_reader_declare(lua_State *L) {
  lreader *rd = check_reader(L);
  const char *cursor = luaL_checkstring(L, 2);
  const char *sql = luaL_checkstring(L, 3);
  int n = lua_gettop(L) - 3;
  const char **vals = calloc(n > 0 ? (size_t)n : 1, sizeof *vals);
  if (!vals) return luaL_error(L, "out of memory");
  for (int i = 0; i < n; i++) vals[i] = lua_isnil(L, 4 + i) ? NULL : lua_tostring(L, 4 + i);
  dp_err e;
  dp_pg_sandbox sb;
  dp_buf stmt = DP_BUF_INIT;
  /* again before every statement: a query may have changed it (set_config) for the transaction */
  int rc = dp_pg_set_statement_timeout(rd->c, rd->timeout_ms, &e);
  if (rc == 0) rc = dp_pg_sandbox_prepare(&sb, rd->c, sql, NULL, 0, n, vals, &e);
  else memset(&sb, 0, sizeof sb);
  free(vals);
  if (rc == 0) {
    dp_buf_puts(&stmt, "DECLARE ");
    dp_pg_ident(&stmt, cursor);
    dp_buf_puts(&stmt, " NO SCROLL CURSOR FOR SELECT ");
    dp_buf_puts(&stmt, sb.columns.data);
    dp_buf_puts(&stmt, " FROM ");
    dp_buf_puts(&stmt, sb.from.data);
    rc = dp_pg_sandbox_exec(rd->c, &sb, stmt.data, 0, NULL, rd->timeout_ms, NULL, &e);
  }
  dp_pg_sandbox_free(&sb);
  dp_buf_free(&stmt);
  if (rc) return push_fail(L, e.msg);
  lua_pushboolean(L, 1);
  return 1;
}

/* reader:fetch(cursor, n) -> rows (array of {column = text}; NULL is absent) | nil, err */
static int l_reader_fetch(lua_State *L) {
  lreader *rd = check_reader(L);
  const char *cursor = luaL_checkstring(L, 2);
  int count = (int)luaL_checkinteger(L, 3);
  dp_buf stmt = DP_BUF_INIT;
  dp_buf_printf(&stmt, "FETCH %d FROM ", count > 0 ? count : 1);
  dp_pg_ident(&stmt, cursor);
  PGresult *r = NULL;
  dp_err e;
  int rc = dp_pg_set_statement_timeout(rd->c, rd->timeout_ms, &e);
  if (rc == 0) rc = dp_pg_sandbox_run(rd->c, stmt.data, rd->timeout_ms, &r, &e);
  dp_buf_free(&stmt);
  if (rc) return push_fail(L, e.msg);
  dp_lua_push_pg_rows(L, r);
  PQclear(r);
  return 1;
}

static int l_reader_close_cursor(lua_State *L) {
  lreader *rd = check_reader(L);
  dp_buf stmt = DP_BUF_INIT;
  dp_buf_puts(&stmt, "CLOSE ");
  dp_pg_ident(&stmt, luaL_checkstring(L, 2));
  dp_err e;
  int rc = dp_pg_exec(rd->c, stmt.data, 0, NULL, NULL, &e);
  dp_buf_free(&stmt);
  if (rc) return push_fail(L, e.msg);
  lua_pushboolean(L, 1);
  return 1;
}

/* reader:finish(): rolls the read-only transaction back (the caller closes the connection). */
static int l_reader_finish(lua_State *L) {
  lreader *rd = luaL_checkudata(L, 1, READER_MT);
  if (rd->c && *rd->pc == rd->c) dp_pg_rollback(rd->c);
  rd->c = NULL;
  return 0;
}

/* gold_sql_check(sql) -> true | nil, reason (one query? see pgsandbox.h) */
static int l_gold_sql_check(lua_State *L) {
  dp_err e;
  if (dp_pg_sandbox_check(luaL_checkstring(L, 1), &e) != 0) return push_fail(L, e.msg);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_gc(lua_State *L) {
  lgold *g = luaL_checkudata(L, 1, GOLD_MT);
  release(g);
  return 0;
}

void dp_gold_lua_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"emit", l_emit}, {"insert_select", l_insert_select},
                                     {"statement_timeout", l_statement_timeout}, {"finish", l_finish}, {"abort", l_abort}, {NULL, NULL}};
  if (luaL_newmetatable(L, GOLD_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  static const luaL_Reg rmethods[] = {{"declare", l_reader_declare}, {"fetch", l_reader_fetch},
                                      {"close_cursor", l_reader_close_cursor}, {"finish", l_reader_finish},
                                      {NULL, NULL}};
  if (luaL_newmetatable(L, READER_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, rmethods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_reader_finish);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_gold_begin);
  lua_setfield(L, -2, "gold_begin");
  lua_pushcfunction(L, l_gold_reader);
  lua_setfield(L, -2, "gold_reader");
  lua_pushcfunction(L, l_gold_sql_check);
  lua_setfield(L, -2, "gold_sql_check");
}
