/* silver_schema.c - the silver table follows metadata: created when missing, evolved (new
 * columns, widened types, dropped NOT NULL) and refused (narrowing, incompatible types) before
 * anything changes; every change audited in audit.schema_change (docs/metadata.md). */
#include "silver.h"
#include "silver_int.h"
#include "log.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- tables follow metadata (docs/metadata.md#tables-follow-metadata) ---------- */

/* A column type in our DDL spelling: "varchar(20)", "numeric(12,2)", "bigint", ... */
typedef struct sqltype {
  char base[64];
  int a, b; /* varchar: a = length (0 = none); numeric: a = precision, b = scale */
} sqltype;

static void parse_type(const char *s, sqltype *t) {
  memset(t, 0, sizeof *t);
  size_t n = strcspn(s, "(");
  snprintf(t->base, sizeof t->base, "%.*s", (int)n, s);
  if (s[n] == '(') sscanf(s + n, "(%d,%d)", &t->a, &t->b);
}

/* format_type() spelling -> ours ("character varying(20)" -> "varchar(20)"). */
static void from_pg_type(const char *have, char *out, size_t cap) {
  static const struct { const char *pg, *ours; } map[] = {
      {"character varying", "varchar"}, {"timestamp with time zone", "timestamptz"}};
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
    size_t n = strlen(map[i].pg);
    if (strncmp(have, map[i].pg, n) == 0 && (have[n] == '\0' || have[n] == '(')) {
      snprintf(out, cap, "%s%s", map[i].ours, have + n);
      return;
    }
  }
  snprintf(out, cap, "%s", have);
}

enum { TYPE_SAME, TYPE_WIDEN, TYPE_NARROW, TYPE_SCALE, TYPE_INCOMPATIBLE };

static int is_string(const sqltype *t) { return strcmp(t->base, "varchar") == 0 || strcmp(t->base, "text") == 0; }

/* How changing a column from have to want (both our spelling) is classified. Widening keeps
 * every value and its hash: integer/bigint share a hash family, so do varchar/text, and a
 * decimal's canonical text depends on its scale only. */
static int compare_types(const char *have, const char *want) {
  if (strcmp(have, want) == 0) return TYPE_SAME;
  sqltype h, w;
  parse_type(have, &h);
  parse_type(want, &w);
  if (is_string(&h) && is_string(&w)) {
    int h_unlimited = strcmp(h.base, "text") == 0 || h.a == 0;
    int w_unlimited = strcmp(w.base, "text") == 0 || w.a == 0;
    if (w_unlimited) return TYPE_WIDEN;
    if (h_unlimited || w.a < h.a) return TYPE_NARROW;
    return TYPE_WIDEN;
  }
  if (strcmp(h.base, "integer") == 0 && strcmp(w.base, "bigint") == 0) return TYPE_WIDEN;
  if (strcmp(h.base, "bigint") == 0 && strcmp(w.base, "integer") == 0) return TYPE_NARROW;
  if (strcmp(h.base, "numeric") == 0 && strcmp(w.base, "numeric") == 0) {
    if (h.b != w.b) return TYPE_SCALE;
    return w.a > h.a ? TYPE_WIDEN : TYPE_NARROW;
  }
  return TYPE_INCOMPATIBLE;
}

static const char *refusal_reason(int kind) {
  switch (kind) {
    case TYPE_NARROW: return "narrowing could lose data";
    case TYPE_SCALE: return "a new scale would change every stored value and its hash";
    default: return "the types are not compatible";
  }
}

/* One row of audit.schema_change, on c, in the caller's transaction. */
static int audit_change(PGconn *c, const dp_entity *ent, const dp_runinfo *run, const char *table,
                        const char *column, const char *change, const char *old_type, const char *new_type,
                        dp_err *e) {
  const char *p[] = {run->id_str, run->ts_str, ent->system, ent->name, table, column, change, old_type, new_type};
  int rc = dp_pg_exec(c,
                      "INSERT INTO audit.schema_change (run_id, run_ts, system, entity, table_name, column_name, "
                      "change, old_type, new_type) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                      9, p, NULL, e);
  if (rc) dp_err_prefix(e, "cannot record the schema change in audit.schema_change (was `dp-engine migrate` run?): ");
  return rc;
}

/* Runs "ALTER TABLE silver.<t> <what>", logs it and audits it. */
static int apply_change(PGconn *c, const dp_entity *ent, const dp_runinfo *run, const char *table,
                        const char *column, const char *change, const char *old_type, const char *new_type,
                        const char *what, dp_err *e) {
  dp_buf sql = DP_BUF_INIT;
  /* the _current view pins its columns' types: it goes first and is rebuilt after evolution */
  dp_buf_puts(&sql, "DROP VIEW IF EXISTS ");
  dp__silver_tbl(&sql, ent, "_current");
  dp_buf_puts(&sql, ";\nALTER TABLE ");
  dp__silver_tbl(&sql, ent, "");
  dp_buf_printf(&sql, " %s", what);
  int rc = dp_pg_exec(c, sql.data, 0, NULL, NULL, e);
  dp_buf_free(&sql);
  if (rc == 0) rc = audit_change(c, ent, run, table, column, change, old_type, new_type, e);
  if (rc == 0)
    dp_log(DP_LOG_INFO, "silver.%s: %s %s%s%s%s%s", table, change, column, old_type ? " from " : "",
           old_type ? old_type : "", new_type ? " to " : "", new_type ? new_type : "");
  return rc;
}

typedef struct tcol {
  const char *name; /* borrowed from the PGresult */
  char type[128];   /* our spelling */
  int notnull;
  int in_meta;
} tcol;

/* Appends "ALTER COLUMN "<name>" " to b. */
static void alter_column(dp_buf *b, const char *name) {
  dp_buf_reset(b);
  dp_buf_puts(b, "ALTER COLUMN ");
  dp_pg_ident(b, name);
}

/* Compares the existing table (rows of pg_attribute in r: name, type, not null) with the
 * metadata. Every check runs before the first change, so a refused change leaves the table as
 * it was. */
static int evolve(PGconn *c, const dp_entity *ent, const dp_runinfo *run, PGresult *r, dp_err *e) {
  char table[300];
  dp_silver_table_name(ent, table, sizeof table);
  int nt = PQntuples(r), rc = 0;
  size_t nc = ent->ncols ? ent->ncols : 1;
  tcol *tc = calloc(nt ? (size_t)nt : 1, sizeof *tc);
  int *kind = calloc(nc, sizeof *kind), *at = calloc(nc, sizeof *at);
  dp_buf want = DP_BUF_INIT, refused = DP_BUF_INIT, what = DP_BUF_INIT;
  if (!tc || !kind || !at) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  for (int k = 0; k < nt; k++) {
    tc[k].name = PQgetvalue(r, k, 0);
    from_pg_type(PQgetvalue(r, k, 1), tc[k].type, sizeof tc[k].type);
    tc[k].notnull = strcmp(PQgetvalue(r, k, 2), "t") == 0;
  }

  /* 1. check everything */
  int nrefused = 0;
  for (size_t i = 0; i < ent->ncols; i++) {
    const dp_column *col = &ent->cols[i];
    at[i] = -1;
    for (int k = 0; k < nt; k++)
      if (strcmp(tc[k].name, col->name) == 0) at[i] = k;
    if (at[i] < 0) continue;
    tc[at[i]].in_meta = 1;
    dp_buf_reset(&want);
    dp_column_sql_type(col, &want);
    kind[i] = compare_types(tc[at[i]].type, want.data);
    if (kind[i] == TYPE_SAME || kind[i] == TYPE_WIDEN) continue;
    dp_buf_printf(&refused, "%scolumn %s from %s to %s (%s)", nrefused++ ? "; " : "cannot change ", col->name,
                  tc[at[i]].type, want.data, refusal_reason(kind[i]));
  }
  if (nrefused) {
    rc = dp_err_set(e, DP_EMETA,
                    "entity %s.%s: %s; nothing was changed: put the old type back in metadata, or change "
                    "silver.%s by hand",
                    ent->system, ent->name, refused.data, table);
    goto cleanup;
  }

  /* 2. new columns, widened types, NOT NULL that metadata no longer asks for */
  for (size_t i = 0; i < ent->ncols && rc == 0; i++) {
    const dp_column *col = &ent->cols[i];
    dp_buf_reset(&want);
    dp_column_sql_type(col, &want);
    if (at[i] < 0) {
      dp_buf_reset(&what);
      dp_buf_puts(&what, "ADD COLUMN ");
      dp_pg_ident(&what, col->name);
      dp_buf_printf(&what, " %s", want.data);
      rc = apply_change(c, ent, run, table, col->name, "add_column", NULL, want.data, what.data, e);
      continue;
    }
    tcol *t = &tc[at[i]];
    if (kind[i] == TYPE_WIDEN) {
      alter_column(&what, col->name);
      dp_buf_printf(&what, " TYPE %s", want.data);
      rc = apply_change(c, ent, run, table, col->name, "widen", t->type, want.data, what.data, e);
    }
    if (rc == 0 && t->notnull && !col->key && col->nullable) {
      alter_column(&what, col->name);
      dp_buf_puts(&what, " DROP NOT NULL");
      rc = apply_change(c, ent, run, table, col->name, "drop_not_null", NULL, NULL, what.data, e);
    }
  }

  /* 3. columns no longer in metadata stay (their values are history) but must accept NULL */
  for (int k = 0; k < nt && rc == 0; k++) {
    if (tc[k].in_meta || strncmp(tc[k].name, "_dp_", 4) == 0 || !tc[k].notnull) continue;
    alter_column(&what, tc[k].name);
    dp_buf_puts(&what, " DROP NOT NULL");
    rc = apply_change(c, ent, run, table, tc[k].name, "drop_not_null", NULL, NULL, what.data, e);
  }

cleanup:
  free(tc);
  free(kind);
  free(at);
  dp_buf_free(&want);
  dp_buf_free(&refused);
  dp_buf_free(&what);
  return rc;
}

/* The two indexes on the key hash: unique over the current versions ("__cur": one current
 * version per key), and over all versions ("_key": scd1 updates every version of a key). what:
 * "CREATE" (if missing) or "DROP". Each statement ends with ";\n". */
void dp__silver_key_indexes(dp_buf *sql, const dp_entity *ent, const char *what) {
  if (strcmp(what, "DROP") == 0) {
    dp_buf_puts(sql, "DROP INDEX IF EXISTS silver.");
    dp__silver_ident(sql, ent, "__cur");
    dp_buf_puts(sql, ", silver.");
    dp__silver_ident(sql, ent, "_key");
    dp_buf_puts(sql, ";\n");
    return;
  }
  dp_buf_puts(sql, "CREATE UNIQUE INDEX IF NOT EXISTS ");
  dp__silver_ident(sql, ent, "__cur");
  dp_buf_puts(sql, " ON ");
  dp__silver_tbl(sql, ent, "");
  dp_buf_puts(sql, " (_dp_key_hash) WHERE _dp_is_current;\nCREATE INDEX IF NOT EXISTS ");
  dp__silver_ident(sql, ent, "_key");
  dp_buf_puts(sql, " ON ");
  dp__silver_tbl(sql, ent, "");
  dp_buf_puts(sql, " (_dp_key_hash);\n");
}

int dp_silver_ensure_table(PGconn *c, const dp_entity *ent, const dp_runinfo *run, dp_err *e) {
  char name[300];
  dp_silver_table_name(ent, name, sizeof name);
  const char *p[] = {name};
  PGresult *cols = NULL;
  dp_buf sql = DP_BUF_INIT;
  int rc = dp_pg_exec(c,
                      "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a "
                      "JOIN pg_class t ON t.oid = a.attrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
                      "WHERE n.nspname = 'silver' AND t.relname = $1 AND t.relkind = 'r' AND a.attnum > 0 "
                      "AND NOT a.attisdropped ORDER BY a.attnum",
                      1, p, &cols, e);
  if (rc) return rc;
  int exists = PQntuples(cols) > 0;
  /* The _current view is made with the table and rebuilt when evolution dropped it (a view pins
   * its columns' types); otherwise it is left alone, so readers of the view are not blocked by
   * the merge. All of this runs inside the merge transaction, so readers never see it missing.
   * Tables made by the first version of the engine had an index under that name: it is
   * replaced by "__cur". */
  int have_view = 0;
  {
    char cur[320];
    snprintf(cur, sizeof cur, "%s_current", name);
    const char *pc[] = {cur};
    PGresult *k = NULL;
    rc = dp_pg_exec(c, "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = 'silver' AND c.relname = $1", 1, pc, &k, e);
    if (rc) { PQclear(cols); return rc; }
    const char *kind = PQntuples(k) == 1 ? PQgetvalue(k, 0, 0) : "";
    if (kind[0] == 'i') {
      dp_buf_puts(&sql, "DROP INDEX ");
      dp__silver_tbl(&sql, ent, "_current");
      dp_buf_puts(&sql, ";\n");
    }
    have_view = kind[0] == 'v';
    PQclear(k);
  }
  dp_buf_puts(&sql, "CREATE SCHEMA IF NOT EXISTS silver;\nCREATE TABLE IF NOT EXISTS ");
  dp__silver_tbl(&sql, ent, "");
  dp_buf_puts(&sql, " (\n  _dp_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY");
  for (size_t i = 0; i < ent->ncols; i++) {
    const dp_column *col = &ent->cols[i];
    dp_buf_puts(&sql, ",\n  ");
    dp_pg_ident(&sql, col->name);
    dp_buf_putc(&sql, ' ');
    dp_column_sql_type(col, &sql);
    if (col->key || !col->nullable) dp_buf_puts(&sql, " NOT NULL");
  }
  dp_buf_puts(&sql,
              ",\n  _dp_key_hash uuid NOT NULL, _dp_scd1_hash uuid NOT NULL, _dp_scd2_hash uuid NOT NULL"
              ",\n  _dp_valid_from timestamptz NOT NULL, _dp_valid_to timestamptz"
              ",\n  _dp_is_current boolean NOT NULL, _dp_is_deleted boolean NOT NULL DEFAULT false"
              ",\n  _dp_run_id uuid NOT NULL, _dp_run_ts timestamptz NOT NULL"
              ",\n  _dp_created_at timestamptz NOT NULL, _dp_updated_at timestamptz NOT NULL);\n");
  dp__silver_key_indexes(&sql, ent, "CREATE");
  dp_buf_puts(&sql, "CREATE TABLE IF NOT EXISTS ");
  dp__silver_tbl(&sql, ent, "__rejected");
  dp_buf_puts(&sql,
              " (\n  _dp_run_id uuid NOT NULL, _dp_run_ts timestamptz NOT NULL, _dp_key_hash uuid,"
              "\n  column_name text, value text, reason text NOT NULL, raw_file text, raw_line bigint,"
              "\n  record jsonb, _dp_created_at timestamptz NOT NULL DEFAULT now())");
  rc = dp_pg_exec(c, sql.data, 0, NULL, NULL, e);
  if (rc == 0 && !exists) {
    rc = audit_change(c, ent, run, name, NULL, "create_table", NULL, NULL, e);
    if (rc == 0) dp_log(DP_LOG_INFO, "silver.%s: created with %zu columns", name, ent->ncols);
  }
  if (rc == 0 && exists) rc = evolve(c, ent, run, cols, e);
  if (rc == 0 && have_view) { /* still there, unless evolution dropped it */
    char cur[320];
    snprintf(cur, sizeof cur, "silver.\"%s_current\"", name);
    const char *pc[] = {cur};
    PGresult *k = NULL;
    rc = dp_pg_exec(c, "SELECT to_regclass($1) IS NOT NULL", 1, pc, &k, e);
    if (rc == 0) have_view = PQgetvalue(k, 0, 0)[0] == 't';
    PQclear(k);
  }
  if (rc == 0 && !have_view) {
    dp_buf_reset(&sql);
    dp_buf_puts(&sql, "CREATE VIEW ");
    dp__silver_tbl(&sql, ent, "_current");
    dp_buf_puts(&sql, " AS SELECT * FROM ");
    dp__silver_tbl(&sql, ent, "");
    dp_buf_puts(&sql, " WHERE _dp_is_current AND NOT _dp_is_deleted");
    rc = dp_pg_exec(c, sql.data, 0, NULL, NULL, e);
  }
  PQclear(cols);
  dp_buf_free(&sql);
  return rc;
}
