/* silver.c - cast, stage with COPY, merge set-based (SCD1/SCD2, delete detection). */
#include "silver.h"
#include "jsonbson.h"
#include "bronze.h"
#include "buf.h"
#include "cast.h"
#include "hash.h"
#include "log.h"
#include "pg.h"
#include "progress.h"
#include "rawfile.h"
#include "record.h"
#include "testhook.h"
#include "uuid.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COPY_CHUNK (1 << 20)
#define REJECTS_MEM (4 << 20) /* bytes of rejected rows kept in memory on a first load */

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

/* The two indexes on the key hash: unique over the current versions ("__cur": one current
 * version per key), and over all versions ("_key": scd1 updates every version of a key). what:
 * "CREATE" (if missing) or "DROP". Each statement ends with ";\n". */
static void key_indexes(dp_buf *sql, const dp_entity *ent, const char *what) {
  if (strcmp(what, "DROP") == 0) {
    dp_buf_puts(sql, "DROP INDEX IF EXISTS silver.");
    ident_suffixed(sql, ent, "__cur");
    dp_buf_puts(sql, ", silver.");
    ident_suffixed(sql, ent, "_key");
    dp_buf_puts(sql, ";\n");
    return;
  }
  dp_buf_puts(sql, "CREATE UNIQUE INDEX IF NOT EXISTS ");
  ident_suffixed(sql, ent, "__cur");
  dp_buf_puts(sql, " ON ");
  tbl(sql, ent, "");
  dp_buf_puts(sql, " (_dp_key_hash) WHERE _dp_is_current;\nCREATE INDEX IF NOT EXISTS ");
  ident_suffixed(sql, ent, "_key");
  dp_buf_puts(sql, " ON ");
  tbl(sql, ent, "");
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
  key_indexes(&sql, ent, "CREATE");
  dp_buf_puts(&sql, "CREATE TABLE IF NOT EXISTS ");
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

/* Where silver's input comes from: a bronze query, or the change files of the bronze loads
 * since silver's last commit (in load order). */
typedef struct doc_source {
  mongoc_collection_t *coll;
  mongoc_cursor_t *cur;
  char **files;            /* owned, NULL-terminated */
  size_t fi;
  bson_reader_t *reader;
  char cname[256];
} doc_source;

static int source_next(doc_source *src, const bson_t **doc, dp_err *e) {
  if (src->cur) {
    if (mongoc_cursor_next(src->cur, doc)) return 1;
    bson_error_t be;
    if (mongoc_cursor_error(src->cur, &be))
      return dp_err_set(e, DP_EMONGO, "silver: cannot read bronze %s: %s", src->cname, be.message);
    return 0;
  }
  for (;;) {
    if (!src->reader) {
      if (!src->files || !src->files[src->fi]) return 0;
      bson_error_t be;
      src->reader = bson_reader_new_from_file(src->files[src->fi], &be);
      if (!src->reader) return dp_err_set(e, DP_EIO, "silver: cannot open %s: %s", src->files[src->fi], be.message);
    }
    bool eof = false;
    *doc = bson_reader_read(src->reader, &eof);
    if (*doc) return 1;
    if (!eof || !dp_bson_file_whole(src->files[src->fi], (long long)bson_reader_tell(src->reader)))
      return dp_err_set(e, DP_EIO,
                        "silver: change file %s is damaged near byte %lld; remove it and run again "
                        "(silver then reads bronze itself)",
                        src->files[src->fi], (long long)bson_reader_tell(src->reader));
    bson_reader_destroy(src->reader);
    src->reader = NULL;
    src->fi++;
  }
}

static void source_close(doc_source *src) {
  if (src->cur) mongoc_cursor_destroy(src->cur);
  if (src->coll) mongoc_collection_destroy(src->coll);
  if (src->reader) bson_reader_destroy(src->reader);
  for (size_t i = 0; src->files && src->files[i]; i++) free(src->files[i]);
  free(src->files);
  memset(src, 0, sizeof *src);
}

/* The bronze documents written by loads that started after since_ms (the start of silver's last
 * committed run, in ms; < 0 for all). Loads are ordered by their run's start time, not by run id:
 * runs of one system never overlap, so start times increase, while run ids need not (serve hands
 * them out when it queues a run, Prefect's are random). */
static void source_query(doc_source *src, mongoc_client_t *cli, const char *db, const dp_entity *ent,
                         int64_t since_ms) {
  dp_bronze_collection_name(ent, src->cname, sizeof src->cname);
  src->coll = mongoc_client_get_collection(cli, db, src->cname);
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
  if (since_ms >= 0) {
    bson_t or, a, b, ga, gb;
    BSON_APPEND_ARRAY_BEGIN(&filter, "$or", &or);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &a);
    BSON_APPEND_DOCUMENT_BEGIN(&a, "_dp.run_ts", &ga);
    BSON_APPEND_DATE_TIME(&ga, "$gt", since_ms);
    bson_append_document_end(&a, &ga);
    bson_append_document_end(&or, &a);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &b);
    BSON_APPEND_DOCUMENT_BEGIN(&b, "_dp.deleted_at", &gb);
    BSON_APPEND_DATE_TIME(&gb, "$gt", since_ms);
    bson_append_document_end(&b, &gb);
    bson_append_document_end(&or, &b);
    bson_append_array_end(&filter, &or);
  }
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "data", 1);
  BSON_APPEND_INT32(&proj, "_dp.raw", 1);
  BSON_APPEND_INT32(&proj, "_dp.deleted", 1);
  bson_append_document_end(&opts, &proj);
  src->cur = mongoc_collection_find_with_opts(src->coll, &filter, &opts, NULL);
  bson_destroy(&filter);
  bson_destroy(&opts);
}

/* How rows leave stage_rows. */
enum { TO_STAGE, TO_STAGE_DEDUPE, TO_TABLE };

typedef struct stager {
  PGconn *c;
  int mode;        /* TO_STAGE: one row per key; TO_STAGE_DEDUPE: the same key may come again
                    * (several change files), rows carry their order and rejections stay as rows;
                    * TO_TABLE: new current versions straight into the (empty) silver table */
  int64_t seq;
  int64_t staged_rejects; /* 'r' rows staged (nothing to settle when none) */
  dp_buf copy;     /* COPY text for the stage or silver table */
  dp_buf rejects;  /* COPY text for the __rejected table (sent after the stage COPY) ... */
  FILE *spill;     /* ... beyond REJECTS_MEM, kept in this temporary file (owned) */
  dp_buf scratch;
} stager;

static void put_uuid(dp_buf *b, const uint8_t h[16]) {
  char s[37];
  dp_uuid_format(h, s);
  dp_buf_append(b, s, 36);
}

/* Why a record was rejected, and where it came from. */
typedef struct reject {
  const char *column, *value, *reason, *raw_file;
  int64_t line;
  const bson_t *data;
} reject;

/* column, value, reason, raw file, raw line, record: COPY text fields, tab-separated */
static void put_reject(stager *st, dp_buf *b, const reject *rj) {
  dp_pg_copy_escape(b, rj->column, strlen(rj->column));
  dp_buf_putc(b, '\t');
  dp_pg_copy_escape(b, rj->value, strlen(rj->value));
  dp_buf_putc(b, '\t');
  dp_pg_copy_escape(b, rj->reason, strlen(rj->reason));
  dp_buf_putc(b, '\t');
  if (rj->raw_file) dp_pg_copy_escape(b, rj->raw_file, strlen(rj->raw_file));
  else dp_buf_puts(b, "\\N");
  dp_buf_printf(b, "\t%" PRId64 "\t", rj->line);
  dp_buf_reset(&st->scratch);
  dp_bson_to_json(rj->data, &st->scratch);
  /* jsonb refuses U+0000: such a record is left NULL here (raw_file and raw_line point to it) */
  if (st->scratch.data && memmem(st->scratch.data, st->scratch.len, "\\u0000", 6)) dp_buf_puts(b, "\\N");
  else dp_pg_copy_escape(b, st->scratch.data, st->scratch.len);
}

/* A row of the __rejected table, for TO_TABLE (staged modes stage their rejections). */
static int add_reject(stager *st, const dp_runinfo *run, const uint8_t *key, const reject *rj, dp_err *e) {
  dp_buf *b = &st->rejects;
  dp_buf_printf(b, "%s\t%s\t", run->id_str, run->ts_str);
  if (key) put_uuid(b, key);
  else dp_buf_puts(b, "\\N");
  dp_buf_putc(b, '\t');
  put_reject(st, b, rj);
  dp_buf_putc(b, '\n');
  if (b->len < REJECTS_MEM) return 0;
  /* memory stays flat: the rest waits in a temporary file (gone with the process) */
  if (!st->spill && !(st->spill = tmpfile()))
    return dp_err_set(e, DP_EIO, "silver: cannot create a temporary file for rejected rows: %s", strerror(errno));
  if (fwrite(b->data, 1, b->len, st->spill) != b->len)
    return dp_err_set(e, DP_EIO, "silver: cannot write rejected rows to a temporary file: %s", strerror(errno));
  dp_buf_reset(b);
  return 0;
}

/* COPYs the rejected rows (temporary file, then memory) into the __rejected table. */
static int copy_rejects(stager *st, const dp_entity *ent, dp_err *e) {
  if (!st->spill && st->rejects.len == 0) return 0;
  dp_buf q = DP_BUF_INIT;
  dp_buf_puts(&q, "COPY ");
  tbl(&q, ent, "__rejected");
  dp_buf_puts(&q, " (_dp_run_id, _dp_run_ts, _dp_key_hash, column_name, value, reason, raw_file, "
                  "raw_line, record) FROM STDIN");
  int rc = dp_pg_copy_begin(st->c, q.data, e);
  dp_buf_free(&q);
  if (rc) return rc;
  if (st->spill) {
    char chunk[1 << 16];
    size_t n;
    rewind(st->spill);
    while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, st->spill)) > 0) rc = dp_pg_copy_put(st->c, chunk, n, e);
    if (rc == 0 && ferror(st->spill)) rc = dp_err_set(e, DP_EIO, "silver: cannot read rejected rows back");
  }
  if (rc == 0) rc = dp_pg_copy_put(st->c, st->rejects.data, st->rejects.len, e);
  if (rc == 0) return dp_pg_copy_end(st->c, NULL, e);
  dp_err tmp;
  dp_pg_copy_end(st->c, "aborted", &tmp);
  return rc;
}

static void put_values(dp_buf *b, const dp_entity *ent, const dp_row *row) {
  for (size_t i = 0; i < ent->ncols; i++) {
    if (i) dp_buf_putc(b, '\t');
    if (!row || row->null[i]) dp_buf_puts(b, "\\N");
    else dp_pg_copy_escape(b, row->text.data + row->off[i], row->len[i]);
  }
}

/* Appends one stage row: key, scd1 and scd2 hashes, op ('u' upsert, 'd' deletion, 'r' rejected),
 * order, the rejection (for 'r'), then the typed values (all NULL unless 'u'). */
static void stage_row(stager *st, const dp_entity *ent, const uint8_t key[16], const uint8_t *h1,
                      const uint8_t *h2, char op, const dp_row *row, const reject *rj) {
  dp_buf *b = &st->copy;
  put_uuid(b, key);
  if (op == 'u') {
    dp_buf_putc(b, '\t');
    put_uuid(b, h1);
    dp_buf_putc(b, '\t');
    put_uuid(b, h2);
  } else {
    dp_buf_puts(b, "\t\\N\t\\N");
  }
  dp_buf_printf(b, "\t%c\t%" PRId64 "\t", op, st->seq++);
  if (op == 'r') st->staged_rejects++;
  if (rj) put_reject(st, b, rj);
  else dp_buf_puts(b, "\\N\t\\N\t\\N\t\\N\t\\N\t\\N");
  dp_buf_putc(b, '\t');
  put_values(b, ent, op == 'u' ? row : NULL);
  dp_buf_putc(b, '\n');
}

/* The columns TO_TABLE rows fill, in their order. */
static void table_copy_columns(dp_buf *q, const dp_entity *ent) {
  dp_buf_puts(q, "COPY ");
  tbl(q, ent, "");
  dp_buf_puts(q, " (");
  for (size_t i = 0; i < ent->ncols; i++) {
    dp_pg_ident(q, ent->cols[i].name);
    dp_buf_puts(q, ", ");
  }
  dp_buf_puts(q, "_dp_key_hash, _dp_scd1_hash, _dp_scd2_hash, _dp_valid_from, _dp_valid_to, _dp_is_current, "
                 "_dp_is_deleted, _dp_run_id, _dp_run_ts, _dp_created_at, _dp_updated_at) FROM STDIN");
}

/* Appends one new current version (the row insert_versions would make from a stage row). */
static void table_row(stager *st, const dp_entity *ent, const dp_runinfo *run, const uint8_t key[16],
                      const uint8_t h1[16], const uint8_t h2[16], const dp_row *row) {
  dp_buf *b = &st->copy;
  put_values(b, ent, row);
  dp_buf_putc(b, '\t');
  put_uuid(b, key);
  dp_buf_putc(b, '\t');
  put_uuid(b, h1);
  dp_buf_putc(b, '\t');
  put_uuid(b, h2);
  dp_buf_putc(b, '\t');
  int vf = ent->valid_from_col;
  if (vf >= 0 && !row->null[vf]) dp_pg_copy_escape(b, row->text.data + row->off[vf], row->len[vf]);
  else dp_buf_puts(b, run->ts_str);
  dp_buf_printf(b, "\t\\N\tt\tf\t%s\t%s\t%s\t%s\n", run->id_str, run->ts_str, run->ts_str, run->ts_str);
}

/* The delete marker's value cast with its column's type, so it compares with cast cells. */
static int marker_text(const dp_entity *ent, dp_buf *out, dp_err *e) {
  dp_buf doc = DP_BUF_INIT;
  bson_t b;
  dp_err je;
  int rc = 0, is_null = 0;
  dp_buf_printf(&doc, "{\"v\":%s}", ent->marker_json);
  if (dp_json_to_bson(doc.data, doc.len, &b, &je) != 0) {
    bson_destroy(&b);
    dp_buf_free(&doc);
    return dp_err_set(e, DP_EMETA, "delete_marker.value: %s", je.msg);
  }
  bson_iter_t it;
  if (bson_iter_init_find(&it, &b, "v")) rc = dp_cast_bson(&ent->cols[ent->marker_col], &it, out, &is_null, e);
  if (rc == 0 && (is_null || !out->data)) dp_buf_putc(out, '\0'), out->len = 0;
  if (rc) dp_err_prefix(e, "delete_marker.value: ");
  bson_destroy(&b);
  dp_buf_free(&doc);
  return rc;
}

/* Reads the source's documents and COPYs them (COPY already begun on st->c): changed and new
 * records typed, deleted keys as deletion rows (TO_TABLE: new keys only). */
static int stage_rows(stager *st, doc_source *src, const dp_entity *ent, const dp_runinfo *run, dp_counts *out,
                      dp_err *e) {
  dp_row row;
  int rc = dp_row_init(&row, ent->ncols);
  if (rc) return dp_err_set(e, DP_ENOMEM, "out of memory");
  const bson_t *doc;
  uint8_t key[16], h1[16], h2[16];
  dp_buf marker = DP_BUF_INIT; /* the delete marker's value as canonical text of its column */
  if (ent->marker_col >= 0 && (rc = marker_text(ent, &marker, e)) != 0) goto cleanup;
  int more;
  while (rc == 0 && (more = source_next(src, &doc, e)) == 1) {
    if (st->copy.len >= COPY_CHUNK) { /* whatever the rows before were (deletions and rejections too) */
      if ((rc = dp_pg_copy_put(st->c, st->copy.data, st->copy.len, e)) != 0) break;
      dp_buf_reset(&st->copy);
    }
    bson_iter_t it;
    const uint8_t *dbuf;
    uint32_t dlen;
    bson_t data;
    out->in++;
    dp_progress_add(1, "records");
    /* the bronze _id is the key hash (or, without a primary key, the row's own id) */
    uint8_t idb[16];
    const uint8_t *id = idb;
    if (!bson_iter_init_find(&it, doc, "_id") || !dp_bronze_iter_id(&it, idb)) continue;
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.deleted", &it) && BSON_ITER_HOLDS_BOOL(&it) &&
        bson_iter_bool(&it)) {
      if (st->mode != TO_TABLE) stage_row(st, ent, id, NULL, NULL, 'd', NULL, NULL);
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
      char failmsg[sizeof ce.msg + 1200];
      snprintf(failmsg, sizeof failmsg, "%s (value %s; raw file %s line %" PRId64 ")", ce.msg,
               row.bad_value[0] ? row.bad_value : "missing", raw_file ? raw_file : "?", raw_line);
      reject rj = {ent->cols[row.bad_col].name, row.bad_value, ent->fail_on_type_error ? failmsg : ce.msg,
                   raw_file, raw_line, &data};
      if (st->mode == TO_STAGE_DEDUPE) {
        /* a later record of the key may replace this one: decided after the stage is complete */
        stage_row(st, ent, id, NULL, NULL, 'r', NULL, &rj);
        continue;
      }
      if (ent->fail_on_type_error) {
        rc = dp_err_set(e, DP_ECAST, "%s", failmsg);
        break;
      }
      /* Rejected: recorded with its reason; the key keeps its current version. */
      if (st->mode == TO_TABLE) {
        out->rejected++;
        if ((rc = add_reject(st, run, ent->npk > 0 ? id : NULL, &rj, e)) != 0) break;
      } else {
        stage_row(st, ent, id, NULL, NULL, 'r', NULL, &rj);
      }
      continue;
    }
    memcpy(key, id, 16);
    if (ent->npk > 0) dp_row_hash(&row, ent, DP_HASH_KEY, key);
    if (marker.data && !row.null[ent->marker_col] && row.len[ent->marker_col] == marker.len &&
        memcmp(row.text.data + row.off[ent->marker_col], marker.data, marker.len) == 0) {
      if (st->mode != TO_TABLE) stage_row(st, ent, key, NULL, NULL, 'd', NULL, NULL); /* the source says: deleted */
      continue;
    }
    dp_row_hash(&row, ent, DP_HASH_SCD1, h1);
    dp_row_hash(&row, ent, DP_HASH_SCD2, h2);
    if (st->mode == TO_TABLE) {
      table_row(st, ent, run, key, h1, h2, &row);
      out->inserted++;
    } else {
      stage_row(st, ent, key, h1, h2, 'u', &row, NULL);
    }
  }
  if (rc == 0 && more < 0) rc = more;
  if (rc == 0) rc = dp_pg_copy_put(st->c, st->copy.data, st->copy.len, e);
cleanup:
  dp_buf_free(&marker);
  dp_row_free(&row);
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
  dp_buf_puts(&q, " c ON c._dp_key_hash = s._dp_key_hash AND c._dp_is_current WHERE s._dp_op = 'u'");
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
                      "(SELECT _dp_key_hash FROM _dp_stage WHERE _dp_op = 'd') RETURNING t.*)",
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

/* After the stage COPY: with repeated keys, keeps the last row of each key (and counts what is
 * left as the input); then the rejected rows left, if any were staged, either fail the entity
 * (on_type_error: fail) or go to the __rejected table. */
static int settle_stage(PGconn *c, const dp_entity *ent, const dp_runinfo *run, int mode,
                        int64_t staged_rejects, dp_counts *out, dp_err *e) {
  PGresult *r = NULL;
  int rc = 0;
  if (mode == TO_STAGE_DEDUPE) {
    rc = dp_pg_exec(c, "WITH d AS (DELETE FROM _dp_stage a USING _dp_stage b WHERE a._dp_key_hash = b._dp_key_hash "
                       "AND a._dp_seq < b._dp_seq RETURNING 1) SELECT count(*) FROM d", 0, NULL, &r, e);
    if (rc) return rc;
    out->in -= count_of(r, 0);
    PQclear(r);
    r = NULL;
  }
  if (staged_rejects == 0) return 0;
  if (ent->fail_on_type_error) {
    rc = dp_pg_exec(c, "SELECT _dp_rej_reason FROM _dp_stage WHERE _dp_op = 'r' ORDER BY _dp_seq LIMIT 1", 0,
                    NULL, &r, e);
    if (rc == 0 && PQntuples(r) == 1) rc = dp_err_set(e, DP_ECAST, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
  }
  dp_buf q = DP_BUF_INIT;
  dp_buf_puts(&q, "WITH i AS (INSERT INTO ");
  tbl(&q, ent, "__rejected");
  dp_buf_printf(&q, " (_dp_run_id, _dp_run_ts, _dp_key_hash, column_name, value, reason, raw_file, raw_line, record) "
                    "SELECT $1::uuid, $2::timestamptz, %s, _dp_rej_column, _dp_rej_value, _dp_rej_reason, "
                    "_dp_rej_file, _dp_rej_line, _dp_rej_record FROM _dp_stage WHERE _dp_op = 'r' ORDER BY _dp_seq "
                    "RETURNING 1) SELECT count(*) FROM i",
                ent->npk > 0 ? "_dp_key_hash" : "NULL::uuid");
  const char *p[] = {run->id_str, run->ts_str};
  rc = dp_pg_exec(c, q.data, 2, p, &r, e);
  dp_buf_free(&q);
  if (rc) return rc;
  out->rejected = count_of(r, 0);
  PQclear(r);
  return 0;
}

/* The change files of the bronze loads of the entity that started after `since` (silver's last
 * committed run's run_ts as text; "": all), in load order,
 * when every such load succeeded and its file is there: 1 (files and *dups filled), 0 when silver
 * must ask bronze instead. */
static int change_files(PGconn *c, const dp_entity *ent, const char *dir, const char *since, char ***files,
                        dp_err *e) {
  const char *p[] = {ent->system, ent->name, since};
  PGresult *r = NULL;
  *files = NULL;
  int rc = dp_pg_exec(c,
                      "SELECT run_id::text, status FROM audit.entity_layer_run WHERE system = $1 AND entity = $2 AND layer = 'bronze' "
                      "AND status <> 'skipped' AND ($3 = '' OR run_ts > $3::timestamptz) ORDER BY run_ts",
                      3, p, &r, e);
  if (rc) return rc;
  int n = PQntuples(r), ok = 1;
  char **v = calloc((size_t)n + 1, sizeof *v);
  if (!v) { PQclear(r); return dp_err_set(e, DP_ENOMEM, "out of memory"); }
  for (int i = 0; i < n && ok; i++) {
    char path[4200];
    dp_bronze_change_file(dir, PQgetvalue(r, i, 0), path, sizeof path);
    ok = strcmp(PQgetvalue(r, i, 1), "succeeded") == 0 && access(path, R_OK) == 0;
    if (ok) {
      if (!(v[i] = strdup(path))) ok = 0;
    } else {
      dp_log(DP_LOG_INFO, "silver %s.%s: bronze load %s %s; reading bronze itself", ent->system, ent->name,
             PQgetvalue(r, i, 0), strcmp(PQgetvalue(r, i, 1), "succeeded") ? PQgetvalue(r, i, 1) : "left no change file");
    }
  }
  PQclear(r);
  if (!ok) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
    return 0;
  }
  *files = v;
  return 1;
}

/* After a commit every change file in the folder is consumed: it was read, or the bronze query
 * covered its load (runs of a system never overlap, so no later load exists yet); .part files are
 * loads that never finished. A failed removal is harmless: later runs only read files of loads
 * after their own last commit. */
static void remove_consumed(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    size_t len = strlen(de->d_name);
    int full = len == 41 && strcmp(de->d_name + 36, ".bson") == 0;
    int part = len == 46 && strcmp(de->d_name + 36, ".bson.part") == 0;
    if (full || part) {
      char path[4400];
      snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
      unlink(path);
    }
  }
  closedir(d);
}

/* The records bronze could not store or key (jsonbson.h), since silver's last commit: each a row
 * of the __rejected table with bronze's reason and the raw reference, counted as read and
 * rejected. The record itself stays in the raw file at that line. */
static int bronze_rejects(PGconn *c, mongoc_client_t *cli, const char *db, const dp_entity *ent, const dp_runinfo *run,
                          const char *since, int64_t since_ms, dp_counts *out, dp_err *e) {
  char cname[300];
  /* only the rejects of bronze loads that succeeded: a crashed or failed load may have left some,
   * and its rerun rejects those lines again */
  const char *pa[] = {ent->system, ent->name, since};
  PGresult *ok_runs = NULL;
  int rc = dp_pg_exec(c,
                      "SELECT run_id::text FROM audit.entity_layer_run WHERE system = $1 AND entity = $2 "
                      "AND layer = 'bronze' AND status = 'succeeded' AND ($3 = '' OR run_ts > $3::timestamptz)",
                      3, pa, &ok_runs, e);
  if (rc) return rc;
  if (PQntuples(ok_runs) == 0) {
    PQclear(ok_runs);
    return 0;
  }
  dp_bronze_rejects_collection_name(ent, cname, sizeof cname);
  mongoc_collection_t *coll = mongoc_client_get_collection(cli, db, cname);
  bson_t filter = BSON_INITIALIZER, gt;
  if (since_ms >= 0) {
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "_dp.run_ts", &gt);
    BSON_APPEND_DATE_TIME(&gt, "$gt", since_ms);
    bson_append_document_end(&filter, &gt);
  }
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, NULL, NULL);
  dp_buf q = DP_BUF_INIT;
  dp_buf_puts(&q, "INSERT INTO ");
  tbl(&q, ent, "__rejected");
  dp_buf_puts(&q, " (_dp_run_id, _dp_run_ts, reason, raw_file, raw_line) VALUES ($1, $2, $3, $4, $5)");
  const bson_t *doc;
  while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    const char *reason = "bronze could not store the record", *file = NULL, *rid = NULL;
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.run_id", &it) && BSON_ITER_HOLDS_UTF8(&it))
      rid = bson_iter_utf8(&it, NULL);
    int counted = 0;
    for (int i = 0; rid && i < PQntuples(ok_runs) && !counted; i++) counted = strcmp(PQgetvalue(ok_runs, i, 0), rid) == 0;
    if (!counted) continue;
    char line[24] = "";
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.reason", &it) && BSON_ITER_HOLDS_UTF8(&it))
      reason = bson_iter_utf8(&it, NULL);
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.raw.file", &it) && BSON_ITER_HOLDS_UTF8(&it))
      file = bson_iter_utf8(&it, NULL);
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.raw.line", &it))
      snprintf(line, sizeof line, "%" PRId64, bson_iter_as_int64(&it));
    const char *p[] = {run->id_str, run->ts_str, reason, file, line[0] ? line : NULL};
    rc = dp_pg_exec(c, q.data, 5, p, NULL, e);
    if (rc == 0) {
      out->in++;
      out->rejected++;
    }
  }
  bson_error_t be;
  if (rc == 0 && mongoc_cursor_error(cur, &be))
    rc = dp_err_set(e, DP_EMONGO, "silver: cannot read bronze %s: %s", cname, be.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  mongoc_collection_destroy(coll);
  dp_buf_free(&q);
  PQclear(ok_runs);
  return rc;
}

int dp_silver_merge(PGconn *c, mongoc_client_t *cli, const char *bronze_db, const char *bronze_dir,
                    const dp_entity *ent, const dp_runinfo *run, const char *cursor, unsigned flags, dp_counts *out,
                    dp_err *e) {
  stager st = {c, TO_STAGE, 0, 0, DP_BUF_INIT, DP_BUF_INIT, NULL, DP_BUF_INIT};
  doc_source src;
  memset(&src, 0, sizeof src);
  dp_buf q = DP_BUF_INIT;
  int rc;
  memset(out, 0, sizeof *out);
  rc = dp_pg_begin(c, e);
  if (rc) return rc;
  rc = dp_silver_ensure_table(c, ent, run, e);
  if (rc) goto fail;
  /* where silver's last committed run left off (locked until this transaction ends); a changed
   * definition (columns, types, paths, history, keys) means every document is read again */
  /* since: that run's start (run_ts), as text for the audit and in ms for bronze; a run whose
   * audit row is gone means every document is read again */
  char since[64] = "", defhash[37];
  int64_t since_ms = -1;
  int full = (flags & DP_SILVER_FULL_READ) != 0;
  definition_hash(ent, defhash);
  {
    const char *p[] = {ent->system, ent->name};
    PGresult *r = NULL;
    rc = dp_pg_exec(c, "SELECT s.silver_run_id, s.definition_hash, r.run_ts,"
                       " floor(extract(epoch FROM r.run_ts) * 1000)::bigint FROM dp.entity_state s"
                       " LEFT JOIN audit.system_run r ON r.run_id = s.silver_run_id"
                       " WHERE s.system = $1 AND s.entity = $2 FOR UPDATE OF s", 2, p, &r, e);
    if (rc) goto fail;
    if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) {
      if (PQgetisnull(r, 0, 1) || strcmp(PQgetvalue(r, 0, 1), defhash) != 0 || PQgetisnull(r, 0, 2)) {
        full = 1;
      } else {
        snprintf(since, sizeof since, "%s", PQgetvalue(r, 0, 2));
        since_ms = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
      }
    }
    PQclear(r);
  }
  if (full) {
    since[0] = '\0';
    since_ms = -1;
  }

  /* the input: the change files when they are complete, else a bronze query */
  int from_files = 0;
  if (!full && bronze_dir) {
    rc = change_files(c, ent, bronze_dir, since, &src.files, e);
    if (rc < 0) goto fail;
    from_files = rc;
    rc = 0;
  }
  size_t nfiles = 0;
  while (src.files && src.files[nfiles]) nfiles++;
  if (!from_files) source_query(&src, cli, bronze_db, ent, since_ms);
  /* a change file holds each key once (bronze resolves repeats), so a key comes more than once
   * only across change files; bronze itself holds one document per key */
  int may_repeat = from_files && nfiles > 1;
  {
    /* an empty table and each key once: new versions go straight in */
    dp_buf_puts(&q, "SELECT NOT EXISTS (SELECT 1 FROM ");
    tbl(&q, ent, "");
    dp_buf_puts(&q, ")");
    PGresult *r = NULL;
    rc = dp_pg_exec(c, q.data, 0, NULL, &r, e);
    if (rc) goto fail;
    int empty = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    st.mode = empty && !may_repeat ? TO_TABLE : may_repeat ? TO_STAGE_DEDUPE : TO_STAGE;
  }
  dp_log(DP_LOG_DEBUG, "silver %s.%s: input from %s%s, %s", ent->system, ent->name,
         from_files ? "change files" : "bronze", full ? " (everything)" : "",
         st.mode == TO_TABLE ? "straight into the empty table" : "staged and merged");

  dp_buf_reset(&q);
  if (st.mode == TO_TABLE) {
    /* an index built once after the load is much cheaper than one kept up row by row (random
     * key hashes); the table is empty, and the lock this takes ends with the transaction */
    key_indexes(&q, ent, "DROP");
    rc = dp_pg_exec(c, q.data, 0, NULL, NULL, e);
    if (rc) goto fail;
    dp_buf_reset(&q);
    table_copy_columns(&q, ent);
  } else {
    dp_buf_puts(&q, "CREATE TEMP TABLE _dp_stage (_dp_key_hash uuid, _dp_scd1_hash uuid, "
                    "_dp_scd2_hash uuid, _dp_op \"char\", _dp_seq bigint, _dp_rej_column text, "
                    "_dp_rej_value text, _dp_rej_reason text, _dp_rej_file text, _dp_rej_line bigint, "
                    "_dp_rej_record jsonb");
    for (size_t i = 0; i < ent->ncols; i++) {
      dp_buf_puts(&q, ", ");
      dp_pg_ident(&q, ent->cols[i].name);
      dp_buf_putc(&q, ' ');
      dp_column_sql_type(&ent->cols[i], &q);
    }
    dp_buf_puts(&q, ") ON COMMIT DROP");
    rc = dp_pg_exec(c, q.data, 0, NULL, NULL, e);
    if (rc) goto fail;
    dp_buf_reset(&q);
    dp_buf_puts(&q, "COPY _dp_stage FROM STDIN");
  }
  rc = dp_pg_copy_begin(c, q.data, e);
  if (rc) goto fail;
  double t0 = dp_monotonic();
  rc = stage_rows(&st, &src, ent, run, out, e);
  double t1 = dp_monotonic();
  if (rc) {
    dp_err tmp;
    dp_pg_copy_end(c, "aborted by dp-engine", &tmp);
    goto fail;
  }
  rc = dp_pg_copy_end(c, NULL, e);
  if (rc) goto fail;
  rc = copy_rejects(&st, ent, e);
  if (rc) goto fail;
  dp_test_pause("silver"); /* crash tests: staged, not merged, transaction open */
  if (st.mode != TO_TABLE) {
    rc = settle_stage(c, ent, run, st.mode, st.staged_rejects, out, e);
  } else {
    /* the key indexes again; the unique one also proves each key came once */
    dp_buf_reset(&q);
    key_indexes(&q, ent, "CREATE");
    rc = dp_pg_exec(c, q.data, 0, NULL, NULL, e);
  }
  if (rc == 0 && st.mode != TO_TABLE) {
    rc = dp_pg_exec(c, "ANALYZE _dp_stage", 0, NULL, NULL, e);
    if (rc == 0) rc = merge(c, ent, run, out, e);
  }
  if (rc == 0 && cli) rc = bronze_rejects(c, cli, bronze_db, ent, run, since, since_ms, out, e);
  if (rc) goto fail;
  double t2 = dp_monotonic();
  /* where the time goes (docs/performance.md): reading the input vs the PostgreSQL merge */
  dp_log(DP_LOG_DEBUG, "silver %s.%s: read, cast and COPY %.3f s; merge %.3f s", ent->system, ent->name,
         t1 - t0, t2 - t1);
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
  if (bronze_dir) remove_consumed(bronze_dir);
  goto cleanup;
fail:
  dp_pg_rollback(c);
  memset(out, 0, sizeof *out);
cleanup:
  source_close(&src);
  dp_buf_free(&st.copy);
  dp_buf_free(&st.rejects);
  if (st.spill) fclose(st.spill);
  dp_buf_free(&st.scratch);
  dp_buf_free(&q);
  return rc;
}
