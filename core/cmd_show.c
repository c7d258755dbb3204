/* cmd_show.c - dp-engine show SYSTEM.ENTITY|gold.MODEL: a preview of the rows of a layer
 * (docs/cli.md#show). Identifiers come from validated metadata and are quoted; the limit and the
 * --as-of time travel as query parameters. */
#include "cli.h"
#include "log.h"
#include "rawcompress.h"
#include "bronze.h"
#include "meta.h"
#include "pg.h"
#include "preflight.h"
#include "run.h"
#include "snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *SHOW_USAGE =
    "usage: dp-engine show SYSTEM.ENTITY [--layer silver|bronze|raw] [--current] [--as-of TS] [--limit N] [--json]\n"
    "       dp-engine show gold.MODEL [--limit N] [--json]\n"
    "\n"
    "Previews rows. silver (default): every version, by key and _dp_valid_from, with the columns\n"
    "of the metadata and _dp_valid_from, _dp_valid_to, _dp_is_current, _dp_is_deleted.\n"
    "  --current   only the current versions that are not deleted\n"
    "  --as-of TS  the versions valid at TS (_dp_valid_from <= TS < _dp_valid_to), not deleted:\n"
    "              what the entity looked like then; TS as PostgreSQL reads a timestamptz\n"
    "  --layer     bronze: the documents of the bronze collection; raw: the records of the\n"
    "              newest raw file\n"
    "  --limit N   at most N rows (default 20; 0 for all)\n"
    "  --json      one JSON array of row objects\n"
    "Exit codes: 0 shown, 1 a database could not be reached, 2 usage error or unknown name, or the\n"
    "  table does not exist yet (the message says which run creates it).\n";

typedef struct show_opts {
  const char *target, *layer, *as_of, *limit;
  int current, json;
} show_opts;

/* The entity (or gold model) named by o->target in the validated metadata, into ent (a copy);
 * *gold set for gold.MODEL. */
static int find_target(const dp_snapshot *meta, const show_opts *o, dp_entity *ent, int *gold, dp_err *e) {
  const char *dot = strchr(o->target, '.');
  if (!dot || dot == o->target || !dot[1])
    return dp_err_set(e, DP_EINVAL, "show takes SYSTEM.ENTITY or gold.MODEL, not %s", o->target);
  char sys[256];
  snprintf(sys, sizeof sys, "%.*s", (int)(dot - o->target), o->target);
  *gold = 0;
  const dp_entity *found = NULL;
  if (strcmp(sys, "gold") == 0) { /* a gold model, unless a system is named gold */
    const dp_snap_target *t = dp_snapshot_find(meta, dot + 1, 1);
    if (t) {
      found = &t->model;
      *gold = 1;
    }
  }
  if (!found) found = dp_snapshot_entity(meta, sys, dot + 1);
  if (found) {
    if (dp_entity_copy(ent, found) == 0) return 0;
    *gold = 0;
    return dp_err_set(e, DP_ENOMEM, "out of memory");
  }
  if (strcmp(sys, "gold") == 0) return dp_err_set(e, DP_ENOTFOUND, "no gold model named %s", dot + 1);
  return dp_err_set(e, DP_ENOTFOUND, "no entity %s in the metadata (names are SYSTEM.ENTITY or gold.MODEL)", o->target);
}

/* Every metadata column is in schema.name: a column added to the metadata since the last run is
 * not there until the next run adds it (tables follow metadata), which is said instead of an SQL
 * error. */
static int columns_exist(dp_engine *eng, const dp_entity *ent, int gold, const char *schema, const char *name,
                         dp_err *e) {
  const char *p[] = {schema, name};
  PGresult *r = NULL;
  int rc = dp_pg_exec(eng->audit,
                      "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND "
                      "table_name = $2",
                      2, p, &r, e);
  if (rc) return rc;
  for (size_t i = 0; i < ent->ncols && rc == 0; i++) {
    int found = 0;
    for (int k = 0; k < PQntuples(r) && !found; k++) found = strcmp(PQgetvalue(r, k, 0), ent->cols[i].name) == 0;
    if (!found)
      rc = dp_err_set(e, DP_ENOTFOUND, "%s.%s has no column %s yet (the metadata added it): run `dp-engine %s %s` first",
                      schema, name, ent->cols[i].name, gold ? "gold run" : "run", gold ? ent->name : ent->system);
  }
  PQclear(r);
  return rc;
}

/* silver or gold: SELECT <columns> FROM <table> WHERE ... ORDER BY <key> LIMIT $n. */
static int show_table(dp_engine *eng, const dp_entity *ent, int gold, const show_opts *o, dp_err *e) {
  char name[600];
  snprintf(name, sizeof name, gold ? "%s" : "%s__%s", gold ? ent->name : ent->system, ent->name);
  const char *schema = gold ? "gold" : "silver";
  int rc = dp_relation_exists(eng->audit, schema, name, e);
  if (rc < 0) return rc;
  if (rc == 0)
    return dp_err_set(e, DP_ENOTFOUND, "%s.%s does not exist yet: run `dp-engine %s %s` first", schema, name,
                      gold ? "gold run" : "run", gold ? ent->name : ent->system);
  if ((rc = columns_exist(eng, ent, gold, schema, name, e)) != 0) return rc;
  dp_buf q = DP_BUF_INIT;
  dp_buf_puts(&q, "SELECT ");
  for (size_t i = 0; i < ent->ncols; i++) {
    if (i) dp_buf_puts(&q, ", ");
    dp_pg_ident(&q, ent->cols[i].name);
  }
  if (!gold) dp_buf_puts(&q, ", _dp_valid_from, _dp_valid_to, _dp_is_current, _dp_is_deleted");
  dp_buf_puts(&q, " FROM ");
  dp_pg_qualified(&q, schema, name);
  const char *params[2] = {o->limit, o->as_of};
  int np = 1;
  if (o->current) dp_buf_puts(&q, " WHERE _dp_is_current AND NOT _dp_is_deleted");
  if (o->as_of) {
    dp_buf_puts(&q, " WHERE _dp_valid_from <= $2::timestamptz AND (_dp_valid_to IS NULL OR _dp_valid_to > $2::timestamptz)"
                    " AND NOT _dp_is_deleted");
    np = 2;
  }
  dp_buf_puts(&q, " ORDER BY ");
  for (size_t k = 0; k < ent->npk; k++) {
    dp_pg_ident(&q, ent->cols[ent->pk[k]].name);
    dp_buf_puts(&q, ", ");
  }
  dp_buf_puts(&q, gold ? "1" : "_dp_valid_from, _dp_id");
  dp_buf_puts(&q, " LIMIT nullif($1::bigint, 0)");
  rc = dp_cli_query_print(eng->audit, q.data, np, params, o->json, e);
  dp_buf_free(&q);
  return rc;
}

/* bronze: the documents of the entity's collection, in _id order, as relaxed extended JSON. */
static int show_bronze(dp_engine *eng, const dp_entity *ent, const show_opts *o, dp_err *e) {
  int rc = dp_engine_open_mongo(eng, e);
  if (rc) return rc;
  char coll[300];
  dp_bronze_collection_name(ent, coll, sizeof coll);
  mongoc_collection_t *c = mongoc_client_get_collection(eng->mongo, eng->cfg.bronze_db ? eng->cfg.bronze_db : "bronze", coll);
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
  long long limit = atoll(o->limit);
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
  BSON_APPEND_INT32(&sort, "_id", 1);
  bson_append_document_end(&opts, &sort);
  if (limit > 0) BSON_APPEND_INT64(&opts, "limit", limit);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &filter, &opts, NULL);
  const bson_t *doc;
  int n = 0;
  if (o->json) fputs("[", stdout);
  while (mongoc_cursor_next(cur, &doc)) {
    char *js = bson_as_relaxed_extended_json(doc, NULL);
    if (o->json) printf("%s%s", n ? "," : "", js);
    else printf("%s\n", js);
    bson_free(js);
    n++;
  }
  bson_error_t be;
  if (mongoc_cursor_error(cur, &be)) rc = dp_err_set(e, DP_EMONGO, "bronze %s: %s", coll, be.message);
  if (o->json) fputs("]\n", stdout);
  if (rc == 0 && n == 0 && !o->json)
    dp_log(DP_LOG_WARN, "bronze collection %s is empty or does not exist yet (`dp-engine run %s` fills it)", coll,
           ent->system);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  mongoc_collection_destroy(c);
  return rc;
}

/* raw: the records of the newest raw file whose raw layer succeeded, as the source sent them. */
static int show_raw(dp_engine *eng, const dp_entity *ent, const show_opts *o, dp_err *e) {
  const char *p[] = {ent->system, ent->name};
  PGresult *r = NULL;
  int rc = dp_pg_exec(eng->audit,
                      "SELECT details->>'file' FROM audit.entity_layer_run WHERE system = $1 AND entity = $2 "
                      "AND layer = 'raw' AND status = 'succeeded' AND details ? 'file' ORDER BY started_at DESC LIMIT 1",
                      2, p, &r, e);
  if (rc) return rc;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return dp_err_set(e, DP_ENOTFOUND, "%s.%s has no raw file yet: run `dp-engine run %s` first", ent->system, ent->name,
                      ent->system);
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", eng->cfg.data_dir, PQgetvalue(r, 0, 0));
  PQclear(r);
  FILE *f = dp_raw_fopen_read(path, NULL); /* X.jsonl or X.jsonl.gz (rawcompress.h) */
  if (!f) return dp_err_set(e, DP_ENOTFOUND, "raw file %s cannot be read: %m (removed by retention?)", path);
  dp_log(DP_LOG_INFO, "raw file %s", path);
  long long limit = atoll(o->limit), n = 0;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  if (o->json) fputs("[", stdout);
  while ((limit == 0 || n < limit) && (len = getline(&line, &cap, f)) > 0) {
    if (line[len - 1] == '\n') line[--len] = '\0';
    if (len == 0) continue; /* a record removed by `dp-engine forget` leaves its line empty */
    if (o->json) printf("%s%s", n ? "," : "", line);
    else printf("%s\n", line);
    n++;
  }
  if (o->json) fputs("]\n", stdout);
  free(line);
  fclose(f);
  return 0;
}

int dp_cmd_show(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(SHOW_USAGE, stdout); return DP_EXIT_OK; }
  show_opts o = {.layer = "silver", .limit = "20"};
  static const char *const valued[] = {"--layer", "--as-of", "--limit", NULL};
  for (int i = 0; i < argc; i++) {
    int mv = dp_cli_missing_value(argc, argv, i, valued, SHOW_USAGE);
    if (mv) return mv;
    if (strcmp(argv[i], "--layer") == 0) o.layer = argv[++i];
    else if (strcmp(argv[i], "--as-of") == 0) o.as_of = argv[++i];
    else if (strcmp(argv[i], "--limit") == 0) o.limit = argv[++i];
    else if (strcmp(argv[i], "--current") == 0) o.current = 1;
    else if (strcmp(argv[i], "--json") == 0) o.json = 1;
    else if (argv[i][0] == '-') return dp_cli_usage_error(SHOW_USAGE, "unknown option: %s", argv[i]);
    else if (!o.target) o.target = argv[i];
    else return dp_cli_usage_error(SHOW_USAGE, "unexpected argument: %s", argv[i]);
  }
  if (!o.target) return dp_cli_usage_error(SHOW_USAGE, "%s", "show needs SYSTEM.ENTITY or gold.MODEL");
  if (strcmp(o.layer, "silver") != 0 && strcmp(o.layer, "bronze") != 0 && strcmp(o.layer, "raw") != 0)
    return dp_cli_usage_error(SHOW_USAGE, "--layer takes silver, bronze or raw, not %s", o.layer);
  if (!*o.limit || strspn(o.limit, "0123456789") != strlen(o.limit) || strlen(o.limit) > 15)
    return dp_cli_usage_error(SHOW_USAGE, "--limit takes a whole number: %s", o.limit);
  if (o.current && o.as_of) return dp_cli_usage_error(SHOW_USAGE, "%s", "--current and --as-of exclude each other");
  if ((o.current || o.as_of) && strcmp(o.layer, "silver") != 0)
    return dp_cli_usage_error(SHOW_USAGE, "--current and --as-of read the silver history, not the %s layer", o.layer);

  dp_err e;
  dp_err_clear(&e);
  dp_entity ent;
  dp_snapshot *meta = NULL;
  int gold = 0, rc = dp_load_metadata(eng, &meta, &e);
  if (rc) return dp_cli_exit("show", &e);
  rc = find_target(meta, &o, &ent, &gold, &e);
  dp_snapshot_unref(meta);
  if (rc) return dp_cli_exit("show", &e);
  if (gold && (strcmp(o.layer, "silver") != 0 || o.current || o.as_of)) {
    dp_entity_free(&ent);
    return dp_cli_usage_error(SHOW_USAGE, "%s", "a gold model has one table: --layer, --current and --as-of do not apply");
  }
  if ((rc = dp_engine_open_migrated(eng, &e)) == 0 && o.as_of) { /* TS must read as a time: a usage error */
    const char *p[] = {o.as_of};
    if (dp_pg_exec(eng->audit, "SELECT $1::timestamptz", 1, p, NULL, &e) != 0) {
      dp_entity_free(&ent);
      return dp_cli_usage_error(SHOW_USAGE, "--as-of takes a time PostgreSQL reads as timestamptz, not %s", o.as_of);
    }
  }
  if (rc == 0) {
    if (strcmp(o.layer, "bronze") == 0) rc = show_bronze(eng, &ent, &o, &e);
    else if (strcmp(o.layer, "raw") == 0) rc = show_raw(eng, &ent, &o, &e);
    else rc = show_table(eng, &ent, gold, &o, &e);
  }
  dp_entity_free(&ent);
  fflush(stdout);
  return rc ? dp_cli_exit("show", &e) : DP_EXIT_OK;
}
