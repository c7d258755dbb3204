/* silver.c - cast, stage with COPY, merge set-based (SCD1/SCD2, delete detection). */
#include "silver.h"
#include "bronze.h"
#include "buf.h"
#include "cast.h"
#include "hash.h"
#include "log.h"
#include "pg.h"
#include "record.h"
#include "testhook.h"
#include "uuid.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COPY_CHUNK (1 << 20)

void dp_silver_table_name(const dp_entity *ent, char *buf, size_t cap) {
  snprintf(buf, cap, "%s__%s", ent->system, ent->name);
}

/* Appends "<table><suffix>" quoted, in schema silver. */
static void tbl(dp_buf *b, const dp_entity *ent, const char *suffix) {
  char name[300];
  snprintf(name, sizeof name, "%s__%s%s", ent->system, ent->name, suffix);
  dp_pg_qualified(b, "silver", name);
}

static void ident_suffixed(dp_buf *b, const dp_entity *ent, const char *suffix) {
  char name[300];
  snprintf(name, sizeof name, "%s__%s%s", ent->system, ent->name, suffix);
  dp_pg_ident(b, name);
}

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
  tbl(&sql, ent, "_current");
  dp_buf_puts(&sql, ";\nALTER TABLE ");
  tbl(&sql, ent, "");
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
      tbl(&sql, ent, "_current");
      dp_buf_puts(&sql, ";\n");
    }
    have_view = kind[0] == 'v';
    PQclear(k);
  }
  dp_buf_puts(&sql, "CREATE SCHEMA IF NOT EXISTS silver;\nCREATE TABLE IF NOT EXISTS ");
  tbl(&sql, ent, "");
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
  dp_buf_puts(&sql, "CREATE UNIQUE INDEX IF NOT EXISTS ");
  ident_suffixed(&sql, ent, "__cur");
  dp_buf_puts(&sql, " ON ");
  tbl(&sql, ent, "");
  dp_buf_puts(&sql, " (_dp_key_hash) WHERE _dp_is_current;\nCREATE INDEX IF NOT EXISTS ");
  ident_suffixed(&sql, ent, "_key");
  dp_buf_puts(&sql, " ON ");
  tbl(&sql, ent, "");
  dp_buf_puts(&sql, " (_dp_key_hash);\nCREATE TABLE IF NOT EXISTS ");
  tbl(&sql, ent, "__rejected");
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
    tbl(&sql, ent, "_current");
    dp_buf_puts(&sql, " AS SELECT * FROM ");
    tbl(&sql, ent, "");
    dp_buf_puts(&sql, " WHERE _dp_is_current AND NOT _dp_is_deleted");
    rc = dp_pg_exec(c, sql.data, 0, NULL, NULL, e);
  }
  PQclear(cols);
  dp_buf_free(&sql);
  return rc;
}

typedef struct stager {
  PGconn *c;
  dp_buf copy;     /* COPY text for the stage table */
  dp_buf rejects;  /* COPY text for the __rejected table (sent after the stage COPY) */
  dp_buf scratch;
} stager;

static void put_uuid(dp_buf *b, const uint8_t h[16]) {
  char s[37];
  dp_uuid_format(h, s);
  dp_buf_append(b, s, 36);
}

static void add_reject(stager *st, const dp_entity *ent, const dp_runinfo *run, const uint8_t *key,
                       const dp_row *row, const char *reason, const char *raw_file, int64_t line,
                       const bson_t *data) {
  dp_buf *b = &st->rejects;
  dp_buf_printf(b, "%s\t%s\t", run->id_str, run->ts_str);
  if (key) put_uuid(b, key);
  else dp_buf_puts(b, "\\N");
  dp_buf_putc(b, '\t');
  const char *col = ent->cols[row->bad_col].name;
  dp_pg_copy_escape(b, col, strlen(col));
  dp_buf_putc(b, '\t');
  dp_pg_copy_escape(b, row->bad_value, strlen(row->bad_value));
  dp_buf_putc(b, '\t');
  dp_pg_copy_escape(b, reason, strlen(reason));
  dp_buf_putc(b, '\t');
  if (raw_file) dp_pg_copy_escape(b, raw_file, strlen(raw_file));
  else dp_buf_puts(b, "\\N");
  dp_buf_printf(b, "\t%" PRId64 "\t", line);
  dp_buf_reset(&st->scratch);
  dp_bson_to_json(data, &st->scratch);
  dp_pg_copy_escape(b, st->scratch.data, st->scratch.len);
  dp_buf_putc(b, '\n');
}

/* Appends one stage row: key, scd1 and scd2 hashes, deleted flag, then the typed values
 * (all NULL for a deletion). */
static void stage_row(stager *st, const dp_entity *ent, const uint8_t key[16], const uint8_t *h1,
                      const uint8_t *h2, const dp_row *row) {
  dp_buf *b = &st->copy;
  put_uuid(b, key);
  if (row) {
    dp_buf_putc(b, '\t');
    put_uuid(b, h1);
    dp_buf_putc(b, '\t');
    put_uuid(b, h2);
    dp_buf_puts(b, "\tf");
  } else {
    dp_buf_puts(b, "\t\\N\t\\N\tt");
  }
  for (size_t i = 0; i < ent->ncols; i++) {
    dp_buf_putc(b, '\t');
    if (!row || row->null[i]) dp_buf_puts(b, "\\N");
    else dp_pg_copy_escape(b, row->text.data + row->off[i], row->len[i]);
  }
  dp_buf_putc(b, '\n');
}

/* The delete marker's value cast with its column's type, so it compares with cast cells. */
static int marker_text(const dp_entity *ent, dp_buf *out, dp_err *e) {
  dp_buf doc = DP_BUF_INIT;
  bson_t b;
  bson_error_t be;
  int rc = 0, is_null = 0;
  dp_buf_printf(&doc, "{\"v\":%s}", ent->marker_json);
  if (!bson_init_from_json(&b, doc.data, (ssize_t)doc.len, &be)) {
    dp_buf_free(&doc);
    return dp_err_set(e, DP_EMETA, "delete_marker.value: %s", be.message);
  }
  bson_iter_t it;
  if (bson_iter_init_find(&it, &b, "v")) rc = dp_cast_bson(&ent->cols[ent->marker_col], &it, out, &is_null, e);
  if (rc == 0 && (is_null || !out->data)) dp_buf_putc(out, '\0'), out->len = 0;
  if (rc) dp_err_prefix(e, "delete_marker.value: ");
  bson_destroy(&b);
  dp_buf_free(&doc);
  return rc;
}

/* Reads the bronze documents written since silver's last committed run of the entity (since:
 * a run id, or "" for everything; UUID v7 run ids sort by time) and COPYs them into _dp_stage:
 * changed and new records typed, deleted keys as deletion rows. */
static int stage_rows(stager *st, mongoc_client_t *cli, const char *db, const dp_entity *ent,
                      const dp_runinfo *run, const char *since, dp_counts *out, dp_err *e) {
  char cname[256];
  dp_bronze_collection_name(ent, cname, sizeof cname);
  mongoc_collection_t *coll = mongoc_client_get_collection(cli, db, cname);
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
  if (since[0]) {
    bson_t or, a, b, ga, gb;
    BSON_APPEND_ARRAY_BEGIN(&filter, "$or", &or);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &a);
    BSON_APPEND_DOCUMENT_BEGIN(&a, "_dp.run_id", &ga);
    BSON_APPEND_UTF8(&ga, "$gt", since);
    bson_append_document_end(&a, &ga);
    bson_append_document_end(&or, &a);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &b);
    BSON_APPEND_DOCUMENT_BEGIN(&b, "_dp.deleted_run_id", &gb);
    BSON_APPEND_UTF8(&gb, "$gt", since);
    bson_append_document_end(&b, &gb);
    bson_append_document_end(&or, &b);
    bson_append_array_end(&filter, &or);
  }
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "data", 1);
  BSON_APPEND_INT32(&proj, "_dp.raw", 1);
  BSON_APPEND_INT32(&proj, "_dp.deleted", 1);
  bson_append_document_end(&opts, &proj);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
  dp_row row;
  int rc = dp_row_init(&row, ent->ncols);
  if (rc) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  const bson_t *doc;
  uint8_t key[16], h1[16], h2[16];
  dp_buf marker = DP_BUF_INIT; /* the delete marker's value as canonical text of its column */
  if (ent->marker_col >= 0 && (rc = marker_text(ent, &marker, e)) != 0) goto cleanup_row;
  while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    const uint8_t *dbuf;
    uint32_t dlen;
    bson_t data;
    out->in++;
    /* the bronze _id is the key hash (or, without a primary key, the row's own id) */
    const uint8_t *id = NULL;
    uint32_t idlen = 0;
    bson_subtype_t stp;
    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_BINARY(&it)) bson_iter_binary(&it, &stp, &idlen, &id);
    if (!id || idlen != 16) continue;
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.deleted", &it) && BSON_ITER_HOLDS_BOOL(&it) &&
        bson_iter_bool(&it)) {
      stage_row(st, ent, id, NULL, NULL, NULL);
      continue;
    }
    if (!bson_iter_init_find(&it, doc, "data") || !BSON_ITER_HOLDS_DOCUMENT(&it)) continue;
    bson_iter_document(&it, &dlen, &dbuf);
    if (!bson_init_static(&data, dbuf, dlen)) continue;
    const char *raw_file = NULL;
    int64_t raw_line = 0;
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.raw.file", &it) &&
        BSON_ITER_HOLDS_UTF8(&it))
      raw_file = bson_iter_utf8(&it, NULL);
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.raw.line", &it))
      raw_line = bson_iter_as_int64(&it);
    dp_err ce;
    dp_err_clear(&ce);
    if (dp_row_cast(&row, ent, &data, 0, &ce) != 0) {
      if (ent->fail_on_type_error) {
        rc = dp_err_set(e, DP_ECAST, "%s (value %s; raw file %s line %" PRId64 ")", ce.msg,
                        row.bad_value[0] ? row.bad_value : "missing", raw_file ? raw_file : "?", raw_line);
        break;
      }
      /* Rejected: recorded with its reason; the key keeps its current version. */
      out->rejected++;
      add_reject(st, ent, run, ent->npk > 0 ? id : NULL, &row, ce.msg, raw_file, raw_line, &data);
      continue;
    }
    memcpy(key, id, 16);
    if (ent->npk > 0) dp_row_hash(&row, ent, DP_HASH_KEY, key);
    if (marker.data && !row.null[ent->marker_col] && row.len[ent->marker_col] == marker.len &&
        memcmp(row.text.data + row.off[ent->marker_col], marker.data, marker.len) == 0) {
      stage_row(st, ent, key, NULL, NULL, NULL); /* the source says: deleted */
      continue;
    }
    dp_row_hash(&row, ent, DP_HASH_SCD1, h1);
    dp_row_hash(&row, ent, DP_HASH_SCD2, h2);
    stage_row(st, ent, key, h1, h2, &row);
    if (st->copy.len >= COPY_CHUNK) {
      rc = dp_pg_copy_put(st->c, st->copy.data, st->copy.len, e);
      dp_buf_reset(&st->copy);
    }
  }
  bson_error_t be;
  if (rc == 0 && mongoc_cursor_error(cur, &be))
    rc = dp_err_set(e, DP_EMONGO, "silver: cannot read bronze %s: %s", cname, be.message);
  if (rc == 0) rc = dp_pg_copy_put(st->c, st->copy.data, st->copy.len, e);
cleanup_row:
  dp_buf_free(&marker);
  dp_row_free(&row);
cleanup:
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(coll);
  bson_destroy(&filter);
  bson_destroy(&opts);
  return rc;
}

static int64_t count_of(PGresult *r, int col) {
  return PQntuples(r) > 0 && !PQgetisnull(r, 0, col) ? strtoll(PQgetvalue(r, 0, col), NULL, 10) : 0;
}

/* Appends "c1", "c2", ... (with prefix before each name, e.g. "s.") */
static void col_list(dp_buf *b, const dp_entity *ent, const char *prefix) {
  for (size_t i = 0; i < ent->ncols; i++) {
    if (i) dp_buf_puts(b, ", ");
    dp_buf_puts(b, prefix);
    dp_pg_ident(b, ent->cols[i].name);
  }
}

/* Appends "INSERT INTO <table> (...) SELECT ... FROM <from> s": new current versions (or
 * tombstones when deleted) from the rows of from, stamped with the run ($1 id, $2 ts). */
static void insert_versions(dp_buf *q, const dp_entity *ent, const char *from, int deleted) {
  /* a new version starts at its event time when the entity names a valid_from column */
  dp_buf vf = DP_BUF_INIT;
  if (!deleted && ent->valid_from_col >= 0) {
    dp_buf_puts(&vf, "coalesce(s.");
    dp_pg_ident(&vf, ent->cols[ent->valid_from_col].name);
    dp_buf_puts(&vf, "::timestamptz, $2::timestamptz)");
  } else {
    dp_buf_puts(&vf, "$2::timestamptz");
  }
  dp_buf_puts(q, "INSERT INTO ");
  tbl(q, ent, "");
  dp_buf_puts(q, " (");
  col_list(q, ent, "");
  dp_buf_puts(q, ", _dp_key_hash, _dp_scd1_hash, _dp_scd2_hash, _dp_valid_from, _dp_valid_to, "
                 "_dp_is_current, _dp_is_deleted, _dp_run_id, _dp_run_ts, _dp_created_at, _dp_updated_at) "
                 "SELECT ");
  col_list(q, ent, "s.");
  dp_buf_printf(q, ", s._dp_key_hash, s._dp_scd1_hash, s._dp_scd2_hash, %s, NULL, true, %s, "
                   "$1::uuid, $2::timestamptz, $2::timestamptz, $2::timestamptz FROM %s s",
                vf.data, deleted ? "true" : "false", from);
  dp_buf_free(&vf);
}

static int merge(PGconn *c, const dp_entity *ent, const dp_runinfo *run, dp_counts *out, dp_err *e) {
  dp_buf q = DP_BUF_INIT;
  const char *p2[] = {run->id_str, run->ts_str};
  const char *p1[] = {run->ts_str};
  PGresult *r = NULL;
  int rc;
  int has_scd1 = 0;
  for (size_t i = 0; i < ent->ncols; i++) has_scd1 |= ent->cols[i].scd1 && !ent->cols[i].key;

  /* 1. classify staged rows against the current versions */
  dp_buf_puts(&q, "CREATE TEMP TABLE _dp_cls ON COMMIT DROP AS SELECT s.*, c._dp_id AS _cur_id, "
                  "c._dp_scd1_hash AS _cur1, c._dp_scd2_hash AS _cur2, c._dp_is_deleted AS _cur_del "
                  "FROM _dp_stage s LEFT JOIN ");
  tbl(&q, ent, "");
  dp_buf_puts(&q, " c ON c._dp_key_hash = s._dp_key_hash AND c._dp_is_current WHERE NOT s._dp_deleted");
  rc = dp_pg_exec(c, q.data, 0, NULL, NULL, e);
  if (rc) goto cleanup;
  rc = dp_pg_exec(c,
                  "SELECT count(*) FILTER (WHERE _cur_id IS NULL OR _cur_del),"
                  " count(*) FILTER (WHERE _cur_id IS NOT NULL AND NOT _cur_del AND"
                  "   (_cur2 <> _dp_scd2_hash OR _cur1 <> _dp_scd1_hash)),"
                  " count(*) FILTER (WHERE _cur_id IS NOT NULL AND NOT _cur_del AND"
                  "   _cur2 = _dp_scd2_hash AND _cur1 = _dp_scd1_hash) FROM _dp_cls",
                  0, NULL, &r, e);
  if (rc) goto cleanup;
  out->inserted = count_of(r, 0);
  out->updated = count_of(r, 1);
  out->unchanged = count_of(r, 2);
  PQclear(r);
  r = NULL;

  /* 2. scd1: overwrite in place on every version of the key */
  if (has_scd1) {
    dp_buf_reset(&q);
    dp_buf_puts(&q, "UPDATE ");
    tbl(&q, ent, "");
    dp_buf_puts(&q, " t SET ");
    for (size_t i = 0; i < ent->ncols; i++) {
      if (!ent->cols[i].scd1 || ent->cols[i].key) continue;
      dp_pg_ident(&q, ent->cols[i].name);
      dp_buf_puts(&q, " = s.");
      dp_pg_ident(&q, ent->cols[i].name);
      dp_buf_puts(&q, ", ");
    }
    dp_buf_puts(&q, "_dp_scd1_hash = s._dp_scd1_hash, _dp_updated_at = $1 FROM _dp_cls s "
                    "WHERE t._dp_key_hash = s._dp_key_hash AND s._cur_id IS NOT NULL "
                    "AND s._cur1 <> s._dp_scd1_hash");
    rc = dp_pg_exec(c, q.data, 1, p1, NULL, e);
    if (rc) goto cleanup;
  }

  /* 3. scd2 change (or a deleted key returning): close the current version */
  dp_buf_reset(&q);
  dp_buf_puts(&q, "UPDATE ");
  tbl(&q, ent, "");
  if (ent->valid_from_col >= 0) {
    /* the version ends where its successor's event time starts (never before its own start) */
    dp_buf_puts(&q, " t SET _dp_valid_to = greatest(t._dp_valid_from, coalesce(s.");
    dp_pg_ident(&q, ent->cols[ent->valid_from_col].name);
    dp_buf_puts(&q, "::timestamptz, $1::timestamptz)), ");
  } else {
    dp_buf_puts(&q, " t SET _dp_valid_to = $1, ");
  }
  dp_buf_puts(&q, "_dp_is_current = false, _dp_updated_at = $1 "
                  "FROM _dp_cls s WHERE t._dp_id = s._cur_id AND (s._cur2 <> s._dp_scd2_hash OR s._cur_del)");
  rc = dp_pg_exec(c, q.data, 1, p1, NULL, e);
  if (rc) goto cleanup;

  /* 4. insert new current versions */
  dp_buf_reset(&q);
  insert_versions(&q, ent, "_dp_cls", 0);
  dp_buf_puts(&q, " WHERE s._cur_id IS NULL OR s._cur2 <> s._dp_scd2_hash OR s._cur_del "
                  "ORDER BY s._dp_key_hash");
  rc = dp_pg_exec(c, q.data, 2, p2, NULL, e);
  if (rc) goto cleanup;

  /* 5. full load: keys missing from the run are closed, or get a tombstone version */
  if ((ent->full_load || ent->marker_col >= 0) && ent->npk > 0 && ent->delete_mode != DP_DELETE_IGNORE) {
    dp_buf_reset(&q);
    /* tombstone needs $1 = run id and $2 = run ts; close needs only the ts */
    int tomb = ent->delete_mode == DP_DELETE_TOMBSTONE;
    const char *ts = tomb ? "$2" : "$1";
    dp_buf_puts(&q, "WITH gone AS (UPDATE ");
    tbl(&q, ent, "");
    dp_buf_printf(&q, " t SET _dp_valid_to = %s, _dp_is_current = false, _dp_updated_at = %s "
                      "WHERE t._dp_is_current AND NOT t._dp_is_deleted AND t._dp_key_hash IN "
                      "(SELECT _dp_key_hash FROM _dp_stage WHERE _dp_deleted) RETURNING t.*)",
                  ts, ts);
    if (tomb) {
      dp_buf_puts(&q, ", ins AS (");
      insert_versions(&q, ent, "gone", 1);
      dp_buf_puts(&q, " RETURNING 1) SELECT count(*) FROM ins");
    } else {
      dp_buf_puts(&q, " SELECT count(*) FROM gone");
    }
    rc = tomb ? dp_pg_exec(c, q.data, 2, p2, &r, e) : dp_pg_exec(c, q.data, 1, p1, &r, e);
    if (rc) goto cleanup;
    out->deleted = count_of(r, 0);
    PQclear(r);
    r = NULL;
  }
cleanup:
  if (r) PQclear(r);
  dp_buf_free(&q);
  return rc;
}

/* A hash over everything of the entity that shapes its silver rows. */
static void definition_hash(const dp_entity *ent, char out[37]) {
  dp_buf b = DP_BUF_INIT;
  dp_buf_printf(&b, "%d/%d/", (int)ent->delete_mode, (int)ent->fail_on_type_error);
  for (size_t k = 0; k < ent->npk; k++) dp_buf_printf(&b, "pk:%s/", ent->cols[ent->pk[k]].name);
  for (size_t i = 0; i < ent->ncols; i++) {
    const dp_column *c = &ent->cols[i];
    dp_buf_printf(&b, "%s:%s:%d:%d:%d:%d:%d:%s/", c->name, dp_type_name(c->type), c->length, c->precision,
                  c->scale, (int)c->nullable, (int)c->scd1, c->path);
  }
  uint8_t h[16];
  dp_hash_bytes(b.data, b.len, h);
  dp_uuid_format(h, out);
  dp_buf_free(&b);
}

int dp_silver_merge(PGconn *c, mongoc_client_t *cli, const char *bronze_db, const dp_entity *ent, const dp_runinfo *run,
                    const char *cursor, unsigned flags, dp_counts *out, dp_err *e) {
  stager st = {c, DP_BUF_INIT, DP_BUF_INIT, DP_BUF_INIT};
  dp_buf q = DP_BUF_INIT;
  int rc;
  memset(out, 0, sizeof *out);
  rc = dp_pg_begin(c, e);
  if (rc) return rc;
  rc = dp_silver_ensure_table(c, ent, run, e);
  if (rc) goto fail;
  /* where silver's last committed run left off (locked until this transaction ends); a changed
   * definition (columns, types, paths, history, keys) means every document is read again */
  char since[40] = "", defhash[37];
  definition_hash(ent, defhash);
  {
    const char *p[] = {ent->system, ent->name};
    PGresult *r = NULL;
    rc = dp_pg_exec(c, "SELECT silver_run_id, definition_hash FROM dp.entity_state "
                       "WHERE system = $1 AND entity = $2 FOR UPDATE", 2, p, &r, e);
    if (rc) goto fail;
    if (!(flags & DP_SILVER_FULL_READ) && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) && !PQgetisnull(r, 0, 1) &&
        strcmp(PQgetvalue(r, 0, 1), defhash) == 0)
      snprintf(since, sizeof since, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
  }

  dp_buf_puts(&q, "CREATE TEMP TABLE _dp_stage (_dp_key_hash uuid, _dp_scd1_hash uuid, "
                  "_dp_scd2_hash uuid, _dp_deleted boolean");
  for (size_t i = 0; i < ent->ncols; i++) {
    dp_buf_puts(&q, ", ");
    dp_pg_ident(&q, ent->cols[i].name);
    dp_buf_putc(&q, ' ');
    dp_column_sql_type(&ent->cols[i], &q);
  }
  dp_buf_puts(&q, ") ON COMMIT DROP");
  rc = dp_pg_exec(c, q.data, 0, NULL, NULL, e);
  if (rc) goto fail;
  rc = dp_pg_copy_begin(c, "COPY _dp_stage FROM STDIN", e);
  if (rc) goto fail;
  struct timespec t0, t1, t2;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  rc = stage_rows(&st, cli, bronze_db, ent, run, since, out, e);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (rc) {
    dp_err tmp;
    dp_pg_copy_end(c, "aborted by dp-engine", &tmp);
    goto fail;
  }
  rc = dp_pg_copy_end(c, NULL, e);
  if (rc) goto fail;
  if (st.rejects.len > 0) {
    dp_buf_reset(&q);
    dp_buf_puts(&q, "COPY ");
    tbl(&q, ent, "__rejected");
    dp_buf_puts(&q, " (_dp_run_id, _dp_run_ts, _dp_key_hash, column_name, value, reason, raw_file, "
                    "raw_line, record) FROM STDIN");
    rc = dp_pg_copy_begin(c, q.data, e);
    if (rc == 0) rc = dp_pg_copy_put(c, st.rejects.data, st.rejects.len, e);
    if (rc == 0) rc = dp_pg_copy_end(c, NULL, e);
    else { dp_err tmp; dp_pg_copy_end(c, "aborted", &tmp); }
    if (rc) goto fail;
  }
  dp_test_pause("silver"); /* crash tests: staged, not merged, transaction open */
  rc = dp_pg_exec(c, "ANALYZE _dp_stage", 0, NULL, NULL, e);
  if (rc == 0) rc = merge(c, ent, run, out, e);
  if (rc) goto fail;
  clock_gettime(CLOCK_MONOTONIC, &t2);
  /* where the time goes (docs/performance.md): reading bronze vs the PostgreSQL merge */
  dp_log(DP_LOG_DEBUG, "silver %s.%s: read, cast and COPY %.3f s; merge %.3f s", ent->system, ent->name,
         (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
         (double)(t2.tv_sec - t1.tv_sec) + (t2.tv_nsec - t1.tv_nsec) / 1e9);
  {
    const char *p[] = {ent->system, ent->name, run->id_str, defhash};
    rc = dp_pg_exec(c,
                    "INSERT INTO dp.entity_state (system, entity, silver_run_id, definition_hash, updated_at) "
                    "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (system, entity) DO UPDATE SET "
                    "silver_run_id = EXCLUDED.silver_run_id, definition_hash = EXCLUDED.definition_hash, updated_at = now()",
                    4, p, NULL, e);
    if (rc) goto fail;
  }
  if (!ent->full_load && cursor) {
    const char *p[] = {ent->system, ent->name, cursor, run->id_str};
    rc = dp_pg_exec(c,
                    "INSERT INTO dp.entity_cursor (system, entity, cursor, run_id, updated_at) "
                    "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (system, entity) DO UPDATE "
                    "SET cursor = EXCLUDED.cursor, run_id = EXCLUDED.run_id, updated_at = now()",
                    4, p, NULL, e);
    if (rc) goto fail;
  }
  rc = dp_pg_commit(c, e);
  if (rc) goto fail;
  goto cleanup;
fail:
  dp_pg_rollback(c);
  memset(out, 0, sizeof *out);
cleanup:
  dp_buf_free(&st.copy);
  dp_buf_free(&st.rejects);
  dp_buf_free(&st.scratch);
  dp_buf_free(&q);
  return rc;
}
