/* retention.c - dp-engine retention (docs/lifecycle.md): for each entity with retention
 * settings, under its system's run lock, four named steps: compress raw, delete raw, purge
 * bronze, drop silver history; one audit.retention_run row per step. */
#include "retention.h"
#include "audit.h"
#include "json.h"
#include "lifecycle.h"
#include "log.h"
#include "snapshot.h"
#include "pg.h"
#include "rawcompress.h"
#include "run.h"
#include "runinfo.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTED 1000 /* file names in one audit row's details */

/* What one step did to one entity. */
typedef struct step {
  const char *action;
  int64_t items, kept, before, after;
  int failed;
  dp_err err;
  dp_buf files;   /* JSON array items: the files acted on (relative to DP_DATA_DIR) */
  size_t listed;
  const char *note; /* said after the step's line (--json: "note") */
} step;

/* One entity's retention: its settings and what its raw files are still needed for. */
typedef struct ent_ctx {
  dp_engine *eng;
  const dp_retention_opts *o;
  const dp_runinfo *run;
  const char *system, *entity;
  dp_lifecycle lc;
  long long now;
  char latest_run[40];  /* newest run whose raw layer succeeded ("" none) */
  char silver_run[40];  /* last committed silver run ("" none: silver has read no file yet) */
  char replay_of[40];   /* run of a replay that did not finish ("" none) */
} ent_ctx;

static void step_init(step *s, const char *action) {
  memset(s, 0, sizeof *s);
  s->action = action;
}

static void step_list(step *s, const ent_ctx *c, const char *path) {
  if (s->listed >= MAX_LISTED) return;
  size_t skip = strlen(c->eng->cfg.data_dir);
  const char *rel = strncmp(path, c->eng->cfg.data_dir, skip) == 0 && path[skip] == '/' ? path + skip + 1 : path;
  if (s->listed++) dp_buf_putc(&s->files, ',');
  dp_json_put_string(&s->files, rel, strlen(rel));
}

/* The run id of a raw file: its name up to the first dot. */
static void run_of(const char *path, char out[40]) {
  const char *b = strrchr(path, '/');
  b = b ? b + 1 : path;
  size_t n = strcspn(b, ".");
  snprintf(out, 40, "%.*s", (int)(n < 39 ? n : 39), b);
}

static int one_value(PGconn *pg, const char *sql, int n, const char *const *p, char *out, size_t cap, dp_err *e) {
  PGresult *r = NULL;
  int rc = dp_pg_exec(pg, sql, n, p, &r, e);
  out[0] = '\0';
  if (rc == 0 && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  return rc;
}

/* What the entity's raw files are still needed for (docs/lifecycle.md#dp-engine-retention). */
static int load_needs(ent_ctx *c, dp_err *e) {
  const char *p[] = {c->system, c->entity};
  PGconn *pg = c->eng->audit;
  int rc = one_value(pg,
                     "SELECT run_id::text FROM audit.entity_layer_run WHERE system = $1 AND entity = $2 "
                     "AND layer = 'raw' AND status = 'succeeded' AND details ? 'file' ORDER BY started_at DESC LIMIT 1",
                     2, p, c->latest_run, sizeof c->latest_run, e);
  if (rc == 0)
    rc = one_value(pg, "SELECT silver_run_id::text FROM dp.entity_state WHERE system = $1 AND entity = $2", 2, p,
                   c->silver_run, sizeof c->silver_run, e);
  if (rc == 0)
    rc = one_value(pg,
                   "SELECT CASE WHEN status = 'succeeded' THEN NULL ELSE details->>'replay_of' END "
                   "FROM audit.entity_layer_run WHERE system = $1 AND entity = $2 AND layer = 'bronze' "
                   "AND details ? 'replay_of' ORDER BY started_at DESC LIMIT 1",
                   2, p, c->replay_of, sizeof c->replay_of, e);
  return rc;
}

/* 1 when a cursor, silver or an unfinished replay still needs the raw file of run id. */
static int needed(const ent_ctx *c, const char *id) {
  if (strcmp(id, c->latest_run) == 0 || strcmp(id, c->replay_of) == 0) return 1;
  /* UUID v7 texts sort by time: a run after silver's last committed one is not merged yet */
  return c->silver_run[0] == '\0' || strcmp(id, c->silver_run) > 0;
}

static int older_than(const ent_ctx *c, const struct stat *st, int days) {
  return days > 0 && (long long)st->st_mtime < c->now - (long long)days * 86400;
}

/* Step 1: plain raw files older than raw_days become .jsonl.gz (not those step 2 deletes). */
static void compress_raw(ent_ctx *c, char **files, size_t n, step *s) {
  for (size_t i = 0; i < n && !s->failed; i++) {
    struct stat st;
    char id[40];
    if (dp_raw_is_gz(files[i]) || stat(files[i], &st) != 0 || !older_than(c, &st, c->lc.raw_days)) continue;
    run_of(files[i], id);
    if (older_than(c, &st, c->lc.raw_delete_days) && !needed(c, id)) continue;
    uint64_t before = (uint64_t)st.st_size, after = 0;
    if (!c->o->dry_run && dp_raw_compress_file(files[i], &before, &after, &s->err) != 0) {
      s->failed = 1;
      break;
    }
    s->items++;
    s->before += (int64_t)before;
    s->after += (int64_t)after;
    step_list(s, c, files[i]);
  }
}

/* Step 2: raw files older than raw_delete_days go with their manifest, unless still needed. */
static void delete_raw(ent_ctx *c, char **files, size_t n, step *s) {
  for (size_t i = 0; i < n && !s->failed; i++) {
    struct stat st;
    char id[40], man[4200];
    if (stat(files[i], &st) != 0 || !older_than(c, &st, c->lc.raw_delete_days)) continue;
    run_of(files[i], id);
    if (needed(c, id)) {
      s->kept++;
      continue;
    }
    if (!c->o->dry_run) {
      dp_raw_manifest_path(files[i], man, sizeof man);
      if (unlink(files[i]) != 0) {
        dp_err_set(&s->err, DP_EIO, "cannot delete %s: %s", files[i], strerror(errno));
        s->failed = 1;
        break;
      }
      unlink(man); /* a file written before manifests existed has none */
    }
    s->items++;
    s->before += (int64_t)st.st_size;
    step_list(s, c, files[i]);
    /* rollback rebuilds bronze from every earlier load's raw file (docs/lifecycle.md#limits) */
    s->note = "no run of the entity after these files' runs can be rolled back any more, later runs included "
              "(rollback rebuilds bronze from every earlier raw file)";
  }
}

/* Step 3: bronze documents deleted more than bronze_deleted_days ago. The key file goes too, so
 * the next load reads the collection once instead of a key list that names purged documents. */
static void purge_bronze(ent_ctx *c, step *s) {
  char cname[300];
  snprintf(cname, sizeof cname, "%s__%s", c->system, c->entity);
  mongoc_collection_t *coll = mongoc_client_get_collection(c->eng->mongo, c->eng->cfg.bronze_db, cname);
  bson_t sel = BSON_INITIALIZER, lt;
  BSON_APPEND_BOOL(&sel, "_dp.deleted", true);
  BSON_APPEND_DOCUMENT_BEGIN(&sel, "_dp.deleted_at", &lt);
  BSON_APPEND_DATE_TIME(&lt, "$lt", (c->now - (long long)c->lc.bronze_deleted_days * 86400) * 1000);
  bson_append_document_end(&sel, &lt);
  bson_error_t be;
  if (c->o->dry_run) {
    int64_t k = mongoc_collection_count_documents(coll, &sel, NULL, NULL, NULL, &be);
    if (k < 0) dp_err_set(&s->err, DP_EMONGO, "bronze %s: cannot count deleted documents: %s", cname, be.message);
    else s->items = k;
    s->failed = k < 0;
  } else {
    bson_t reply;
    if (!mongoc_collection_delete_many(coll, &sel, NULL, &reply, &be)) {
      dp_err_set(&s->err, DP_EMONGO, "bronze %s: cannot purge deleted documents: %s", cname, be.message);
      s->failed = 1;
    } else {
      bson_iter_t it;
      if (bson_iter_init_find(&it, &reply, "deletedCount")) s->items = bson_iter_as_int64(&it);
      if (s->items > 0) {
        char dir[4096], keys[4200];
        dp_lifecycle_bronze_dir(c->eng->cfg.data_dir, c->system, c->entity, dir, sizeof dir);
        snprintf(keys, sizeof keys, "%s/keys.idx", dir);
        unlink(keys);
      }
    }
    bson_destroy(&reply);
  }
  bson_destroy(&sel);
  mongoc_collection_destroy(coll);
}

/* Step 4: closed silver versions whose validity ended more than silver_history_days ago. The
 * current version of a key (_dp_is_current, tombstones too) is never among them. */
static void drop_silver_history(ent_ctx *c, step *s) {
  dp_buf q = DP_BUF_INIT, t = DP_BUF_INIT;
  dp_lifecycle_silver_table(&t, c->system, c->entity, "");
  char cutoff[40], exists[8];
  snprintf(cutoff, sizeof cutoff, "%lld", c->now - (long long)c->lc.silver_history_days * 86400);
  const char *pt[] = {t.data};
  if (one_value(c->eng->data, "SELECT to_regclass($1) IS NOT NULL", 1, pt, exists, sizeof exists, &s->err) != 0) {
    s->failed = 1;
  } else if (exists[0] == 't') {
    dp_buf_printf(&q, "WITH d AS (%s FROM %s WHERE NOT _dp_is_current AND _dp_valid_to IS NOT NULL "
                      "AND _dp_valid_to < to_timestamp($1::double precision)%s) SELECT count(*) FROM d",
                  c->o->dry_run ? "SELECT 1" : "DELETE", t.data, c->o->dry_run ? "" : " RETURNING 1");
    const char *p[] = {cutoff};
    char count[32];
    if (one_value(c->eng->data, q.data, 1, p, count, sizeof count, &s->err) != 0) s->failed = 1;
    else s->items = strtoll(count, NULL, 10);
  }
  dp_buf_free(&q);
  dp_buf_free(&t);
}

static int audit_step(ent_ctx *c, step *s, dp_err *e) {
  dp_buf d = DP_BUF_INIT;
  char cut[64] = "";
  int days = strcmp(s->action, "compress_raw") == 0    ? c->lc.raw_days
             : strcmp(s->action, "delete_raw") == 0     ? c->lc.raw_delete_days
             : strcmp(s->action, "purge_bronze") == 0   ? c->lc.bronze_deleted_days
                                                        : c->lc.silver_history_days;
  time_t t = (time_t)(c->now - (long long)days * 86400);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(cut, sizeof cut, "%Y-%m-%dT%H:%M:%SZ", &tm);
  dp_buf_printf(&d, "{\"days\":%d,\"cutoff\":\"%s\"", days, cut);
  if (s->listed) dp_buf_printf(&d, ",\"files\":[%s]%s", s->files.data, s->listed >= MAX_LISTED ? ",\"more\":true" : "");
  dp_buf_putc(&d, '}');
  char items[32], kept[32], before[32], after[32];
  snprintf(items, sizeof items, "%" PRId64, s->items);
  snprintf(kept, sizeof kept, "%" PRId64, s->kept);
  snprintf(before, sizeof before, "%" PRId64, s->before);
  snprintf(after, sizeof after, "%" PRId64, s->after);
  const char *p[] = {c->run->id_str, c->run->ts_str, c->system, c->entity, s->action,
                     c->o->dry_run ? "true" : "false", s->failed ? "failed" : "succeeded", items, kept, before,
                     after, s->failed ? s->err.msg : NULL, d.data};
  int rc = dp_pg_exec(c->eng->audit,
                      "INSERT INTO audit.retention_run (run_id, run_ts, system, entity, action, dry_run, status, items,"
                      " kept, bytes_before, bytes_after, error, details) VALUES ($1::uuid, $2::timestamptz, $3, $4, $5,"
                      " $6::boolean, $7, $8::bigint, $9::bigint, $10::bigint, $11::bigint, $12, $13::jsonb)",
                      13, p, NULL, e);
  dp_buf_free(&d);
  return rc;
}

static void report_step(const ent_ctx *c, const step *s, dp_buf *out, int *first) {
  if (c->o->json) {
    dp_buf_puts(out, *first ? "" : ",");
    *first = 0;
    dp_buf_puts(out, "{\"system\":");
    dp_json_put_string(out, c->system, strlen(c->system));
    dp_buf_puts(out, ",\"entity\":");
    dp_json_put_string(out, c->entity, strlen(c->entity));
    dp_buf_printf(out,
                  ",\"action\":\"%s\",\"status\":\"%s\",\"items\":%" PRId64 ",\"kept\":%" PRId64
                  ",\"bytes_before\":%" PRId64 ",\"bytes_after\":%" PRId64,
                  s->action, s->failed ? "failed" : "succeeded", s->items, s->kept, s->before, s->after);
    if (s->failed) {
      dp_buf_puts(out, ",\"error\":");
      dp_json_put_string(out, s->err.msg, strlen(s->err.msg));
    }
    if (s->note) {
      dp_buf_puts(out, ",\"note\":");
      dp_json_put_string(out, s->note, strlen(s->note));
    }
    dp_buf_putc(out, '}');
    return;
  }
  dp_buf_printf(out, "  %s.%s %-20s %s %8" PRId64 " items %6" PRId64 " kept %12" PRId64 " -> %12" PRId64 " bytes%s%s\n",
                c->system, c->entity, s->action, s->failed ? "failed   " : "succeeded", s->items, s->kept,
                s->before, s->after, s->failed ? ": " : "", s->failed ? s->err.msg : "");
  if (s->note) dp_buf_printf(out, "    note: %s.%s: %s\n", c->system, c->entity, s->note);
}

/* A step's end: its audit row and report line. Returns the audit's error only. */
static int end_step(ent_ctx *c, step *s, dp_buf *out, int *first, int *failed, dp_err *e) {
  *failed |= s->failed;
  int rc = audit_step(c, s, e);
  report_step(c, s, out, first);
  dp_buf_free(&s->files);
  return rc;
}

/* The raw files of the entity for a raw step (s->failed when they cannot be listed). */
static void list_raw(ent_ctx *c, step *s, char ***files, size_t *n) {
  char dir[4096];
  dp_lifecycle_free_list(*files, *n);
  *files = NULL;
  *n = 0;
  dp_lifecycle_raw_dir(c->eng->cfg.data_dir, c->system, c->entity, dir, sizeof dir);
  if (dp_lifecycle_raw_files(dir, files, n, &s->err) != 0) s->failed = 1;
}

/* The four steps on one entity, those its settings name; *failed set when one failed. Returns
 * an audit or database error that stops retention. */
static int entity_retention(ent_ctx *c, dp_buf *out, int *first, int *failed, dp_err *e) {
  char **files = NULL;
  size_t n = 0;
  step s;
  int rc = 0;
  if ((c->lc.raw_days || c->lc.raw_delete_days) && (rc = load_needs(c, e)) != 0) return rc;
  if (c->lc.raw_days) {
    step_init(&s, "compress_raw");
    list_raw(c, &s, &files, &n);
    if (!s.failed) compress_raw(c, files, n, &s);
    rc = end_step(c, &s, out, first, failed, e);
  }
  if (rc == 0 && c->lc.raw_delete_days) {
    step_init(&s, "delete_raw");
    list_raw(c, &s, &files, &n); /* again: compression renamed files */
    if (!s.failed) delete_raw(c, files, n, &s);
    rc = end_step(c, &s, out, first, failed, e);
  }
  if (rc == 0 && c->lc.bronze_deleted_days) {
    step_init(&s, "purge_bronze");
    purge_bronze(c, &s);
    rc = end_step(c, &s, out, first, failed, e);
  }
  if (rc == 0 && c->lc.silver_history_days) {
    step_init(&s, "drop_silver_history");
    drop_silver_history(c, &s);
    rc = end_step(c, &s, out, first, failed, e);
  }
  dp_lifecycle_free_list(files, n);
  return rc;
}

/* The entities with retention settings, as (system, entity) pairs from the validated metadata. */
typedef struct target {
  char *system, *entity;
  dp_lifecycle lc;
  size_t order; /* place in entities.json */
} target;

static int cmp_target(const void *a, const void *b) {
  const target *x = a, *y = b;
  int c = strcmp(x->system, y->system);
  return c ? c : (x->order > y->order) - (x->order < y->order);
}

static int collect(const dp_snapshot *meta, const char *only, target **out, size_t *n, int *system_found) {
  *system_found = only && dp_snapshot_find(meta, only, 0) != NULL;
  target *t = calloc(meta->nentities ? meta->nentities : 1, sizeof *t);
  if (!t) return DP_ENOMEM;
  *n = 0;
  int rc = 0;
  for (size_t i = 0; i < meta->nentities; i++) {
    const dp_entity *ent = &meta->entities[i];
    const dp_lifecycle *lc = &ent->lifecycle;
    int any = lc->raw_days || lc->raw_delete_days || lc->bronze_deleted_days || lc->silver_history_days;
    if (!any || (only && strcmp(only, ent->system) != 0)) continue;
    t[*n].system = strdup(ent->system);
    t[*n].entity = strdup(ent->name);
    t[*n].lc = *lc;
    t[*n].order = i + 1;
    (*n)++;
    if (!t[*n - 1].system || !t[*n - 1].entity) rc = DP_ENOMEM;
  }
  *out = t;
  return rc;
}

int dp_retention_run(dp_engine *eng, const dp_retention_opts *o, dp_buf *out, int *failed, dp_err *e) {
  *failed = 0;
  dp_snapshot *meta = NULL;
  int rc = dp_load_metadata(eng, &meta, e);
  if (rc) return rc;
  target *t = NULL;
  size_t n = 0;
  int system_found = 0, first = 1;
  dp_buf skipped = DP_BUF_INIT; /* --json: the systems whose lock was held */
  if ((rc = collect(meta, o->system, &t, &n, &system_found)) != 0) {
    rc = dp_err_set(e, rc, "out of memory");
    goto cleanup;
  }
  if (o->system && !system_found) {
    rc = dp_err_set(e, DP_EINVAL, "no system named %s in %s", o->system, eng->cfg.metadata);
    goto cleanup;
  }
  if ((rc = dp_engine_open_migrated(eng, e)) != 0) goto cleanup;
  for (size_t i = 0; i < n; i++)
    if (t[i].lc.bronze_deleted_days && (rc = dp_engine_open_mongo(eng, e)) != 0) goto cleanup;
  dp_runinfo run;
  dp_runinfo_new(&run);
  dp_runinfo_set_ts(&run, dp_lifecycle_now() * 1000000LL);
  if (o->json)
    dp_buf_printf(out, "{\"run_id\":\"%s\",\"run_ts\":\"%s\",\"dry_run\":%s,\"actions\":[", run.id_str, run.ts_str,
                  o->dry_run ? "true" : "false");
  else
    dp_buf_printf(out, "retention %s%s: %zu %s with retention settings\n", run.id_str, o->dry_run ? " (dry run)" : "",
                  n, n == 1 ? "entity" : "entities");
  qsort(t, n, sizeof *t, cmp_target); /* a system's entities together, in metadata order */
  for (size_t i = 0, j; i < n; i = j) {
    for (j = i; j < n && strcmp(t[j].system, t[i].system) == 0; j++) {}
    dp_err le;
    if (dp_audit_lock_system(eng->audit, t[i].system, &le) != 0) { /* a run or replay is on */
      dp_log(DP_LOG_WARN, "retention: %s skipped: %s", t[i].system, le.msg);
      if (!o->json) {
        dp_buf_printf(out, "  %s: skipped: %s\n", t[i].system, le.msg);
      } else { /* after the actions: {"system": ..., "error": ...} */
        dp_buf_puts(&skipped, skipped.len ? ",{\"system\":" : "{\"system\":");
        dp_json_put_string(&skipped, t[i].system, strlen(t[i].system));
        dp_buf_puts(&skipped, ",\"error\":");
        dp_json_put_string(&skipped, le.msg, strlen(le.msg));
        dp_buf_putc(&skipped, '}');
      }
      *failed = 1;
      continue;
    }
    for (size_t k = i; k < j && rc == 0; k++) {
      ent_ctx c = {eng, o, &run, t[k].system, t[k].entity, t[k].lc, dp_lifecycle_now(), "", "", ""};
      rc = entity_retention(&c, out, &first, failed, e);
    }
    dp_audit_unlock_system(eng->audit, t[i].system);
    if (rc) goto cleanup;
  }
  if (o->json) dp_buf_printf(out, "],\"skipped\":[%s]}\n", skipped.data ? skipped.data : "");
cleanup:
  for (size_t i = 0; i < n; i++) {
    free(t[i].system);
    free(t[i].entity);
  }
  free(t);
  dp_buf_free(&skipped);
  dp_snapshot_unref(meta);
  return rc;
}
