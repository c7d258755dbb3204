/* run.c - the run driver: one system run in stages (dp_run_system, at the end), layer by layer. */
#include "run.h"
#include "version.h"
#include "audit.h"
#include "bronze.h"
#include "cli.h"
#include "buf.h"
#include "json.h"
#include "log.h"
#include "luabridge.h"
#include "meta.h"
#include "metastore.h"
#include "pg.h"
#include "prefect.h"
#include "progress.h"
#include "rawfile.h"
#include "rawcompress.h"
#include "forget.h"
#include "silver.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


typedef struct ent_state {
  const dp_entity *ent;  /* borrowed from the run's metadata */
  int failed;            /* failed in some layer: later layers skip it */
  char *error;           /* first error (owned) */
  char *raw_path;        /* owned: DP_DATA_DIR/raw_ref */
  char *raw_ref;         /* owned: the raw file, relative to DP_DATA_DIR */
  char *cursor_before;   /* owned */
  char *cursor_after;    /* owned */
} ent_state;

/* One system run: what dp_run_system's stages share. */
typedef struct run_state {
  dp_engine *eng;
  const char *system;
  const dp_run_opts *o;
  dp_snapshot *meta;              /* the validated metadata (a reference) */
  ent_state *st;                  /* the entities that run, in metadata order */
  size_t nent;
  dp_counts (*counts)[3];         /* per entity and layer */
  const char *(*statuses)[3];
  int skipped_disabled;           /* enabled: false, not named */
  int locked, started;            /* the system's lock is held; its audit row is open */
  dp_runinfo run;
  dp_buf details;
  dp_prefect *pf;                 /* the run's Prefect reporter (docs/orchestration.md), or NULL */
  char pf_report[1024], pf_note[300];
  char **crashed_runs;            /* flow runs of runs the crash marking ends */
  int ncrashed_runs;
} run_state;

static const char *layer_names[] = {"raw", "bronze", "silver"};

/* emit: every record is validated, compacted and appended to the raw file. */
typedef struct emit_ctx {
  dp_raw_writer *w;
  dp_buf scratch;
  dp_forget_filter *forget; /* the entity's forgotten keys, or NULL (forget.h) */
} emit_ctx;

static int emit_record(void *ud, int i, const char *json, size_t len, dp_err *e) {
  emit_ctx *ctx = ud;
  dp_err ce;
  dp_buf_reset(&ctx->scratch);
  if (dp_json_compact(json, len, &ctx->scratch, &ce) != 0)
    return dp_err_set(e, DP_EINVAL, "emit: record %d: %s", i, ce.msg);
  if (ctx->scratch.len == 0 || ctx->scratch.data[0] != '{')
    return dp_err_set(e, DP_EINVAL, "emit: record %d is not a JSON object", i);
  if (ctx->forget && dp_forget_filter_drops(ctx->forget, ctx->scratch.data, ctx->scratch.len)) return 0;
  if (dp_raw_append(ctx->w, ctx->scratch.data, ctx->scratch.len, &ce) != 0)
    return dp_err_set(e, ce.code, "emit: %s", ce.msg);
  return 0;
}

static void emitted(void *ud, int n) {
  (void)ud;
  dp_progress_add((int64_t)n, "records");
}

static void set_error(ent_state *s, const char *msg) {
  s->failed = 1;
  if (!s->error) s->error = strdup(msg);
}

static int read_cursor(PGconn *c, ent_state *s, dp_err *e) {
  const char *p[] = {s->ent->system, s->ent->name};
  PGresult *r = NULL;
  int rc = dp_pg_exec(c, "SELECT cursor FROM dp.entity_cursor WHERE system = $1 AND entity = $2", 2, p, &r, e);
  if (rc) return rc;
  if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) s->cursor_before = strdup(PQgetvalue(r, 0, 0));
  PQclear(r);
  return 0;
}

static void put_json_str_or_null(dp_buf *b, const char *s) {
  if (s) dp_json_put_string(b, s, strlen(s));
  else dp_buf_puts(b, "null");
}

/* The latest audit row of an entity's layer (never a skipped one), or found = 0. */
typedef struct layer_run_query {
  const char *layer;
  const char *status;     /* only rows with this status, or NULL */
  const char *run_id;     /* only this run's row, or NULL */
  const char *not_run_id; /* not this run's row, or NULL */
  int with_file;          /* only rows whose details name a file */
} layer_run_query;

typedef struct layer_run {
  int found;
  char run_id[37], status[16];
  char *file; /* owned: details->>'file', or NULL */
} layer_run;

static int latest_layer_run(PGconn *c, const dp_entity *ent, const layer_run_query *q, layer_run *out, dp_err *e) {
  const char *p[] = {ent->system, ent->name, q->layer, q->status, q->run_id, q->not_run_id, q->with_file ? "t" : "f"};
  PGresult *r = NULL;
  memset(out, 0, sizeof *out);
  int rc = dp_pg_exec(c,
                      "SELECT run_id::text, status, details->>'file' FROM audit.entity_layer_run "
                      "WHERE system = $1 AND entity = $2 AND layer = $3 AND status <> 'skipped' "
                      "AND ($4::text IS NULL OR status = $4) AND ($5::text IS NULL OR run_id::text = $5) "
                      "AND ($6::uuid IS NULL OR run_id <> $6::uuid) AND (NOT $7::boolean OR details ? 'file') "
                      "ORDER BY started_at DESC LIMIT 1",
                      7, p, &r, e);
  if (rc) return rc;
  if (PQntuples(r) == 1) {
    out->found = 1;
    snprintf(out->run_id, sizeof out->run_id, "%s", PQgetvalue(r, 0, 0));
    snprintf(out->status, sizeof out->status, "%s", PQgetvalue(r, 0, 1));
    if (!PQgetisnull(r, 0, 2) && !(out->file = strdup(PQgetvalue(r, 0, 2))))
      rc = dp_err_set(e, DP_ENOMEM, "out of memory");
  }
  PQclear(r);
  return rc;
}

/* s->raw_ref = ref (taken over) and s->raw_path = DP_DATA_DIR/ref. */
static int set_raw_file(dp_engine *eng, ent_state *s, char *ref, dp_err *e) {
  free(s->raw_ref);
  free(s->raw_path);
  s->raw_ref = ref;
  s->raw_path = NULL;
  if (!ref || asprintf(&s->raw_path, "%s/%s", eng->cfg.data_dir, ref) < 0) {
    s->raw_path = NULL;
    return dp_err_set(e, DP_ENOMEM, "out of memory");
  }
  return 0;
}

/* raw layer for one entity: extract through the connector into an atomic JSONL file. */
static int raw_step(dp_engine *eng, const dp_runinfo *run, const dp_run_opts *o, ent_state *s, dp_counts *n,
                    dp_buf *details, dp_err *e) {
  struct tm tm;
  time_t secs = (time_t)(run->ts_us / 1000000);
  gmtime_r(&secs, &tm);
  char *ref = NULL;
  /* raw.compression gzip: compressed from the start (docs/lifecycle.md) */
  if (asprintf(&ref, "raw/%s/%s/%04d/%02d/%02d/%s.jsonl%s", s->ent->system, s->ent->name, tm.tm_year + 1900,
               tm.tm_mon + 1, tm.tm_mday, run->id_str, s->ent->lifecycle.gzip ? ".gz" : "") < 0)
    ref = NULL;
  int rc = set_raw_file(eng, s, ref, e);
  if (rc == 0 && !o->full_refresh) rc = read_cursor(eng->audit, s, e);
  if (rc) return rc;

  dp_raw_writer w;
  rc = dp_raw_open(&w, s->raw_path, e);
  if (rc) return rc;
  emit_ctx ctx = {&w, DP_BUF_INIT, NULL};
  if ((rc = dp_forget_filter_load(eng->audit, s->ent, &ctx.forget, e)) != 0) {
    dp_raw_abort(&w);
    return rc;
  }
  dp_extract_call call = {s->ent->system, s->ent->name, s->cursor_before, o->event, emit_record, emitted, &ctx};
  rc = dp_bridge_extract(eng->L, &call, &s->cursor_after, e);
  dp_buf_free(&ctx.scratch);
  long long forgotten = dp_forget_filter_dropped(ctx.forget);
  dp_forget_filter_free(ctx.forget);
  if (rc) {
    dp_raw_abort(&w);
    return rc;
  }
  uint64_t records = w.records, bytes = w.bytes;
  rc = dp_raw_commit(&w, e);
  if (rc) return rc;
  n->in = n->inserted = (int64_t)records;

  dp_buf_reset(details);
  dp_buf_puts(details, "{\"file\":");
  put_json_str_or_null(details, s->raw_ref);
  dp_buf_printf(details, ",\"records\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"sha256\":\"%s\"", records,
                bytes, w.sha256_hex);
  if (forgotten) dp_buf_printf(details, ",\"forgotten\":%lld", forgotten);
  dp_buf_puts(details, ",\"cursor_before\":");
  put_json_str_or_null(details, s->cursor_before);
  dp_buf_puts(details, ",\"cursor_after\":");
  put_json_str_or_null(details, s->cursor_after);
  dp_buf_puts(details, "}");

  /* The manifest beside the file: the same facts plus the run identity. */
  dp_buf man = DP_BUF_INIT;
  dp_buf_printf(&man, "{\"run_id\":\"%s\",\"run_ts\":\"%s\",\"system\":", run->id_str, run->ts_str);
  put_json_str_or_null(&man, s->ent->system);
  dp_buf_puts(&man, ",\"entity\":");
  put_json_str_or_null(&man, s->ent->name);
  dp_buf_printf(&man, ",\"details\":%s}\n", details->data);
  size_t mcap = strlen(s->raw_path) + sizeof ".manifest.json";
  char *mpath = malloc(mcap);
  if (mpath) dp_raw_manifest_path(s->raw_path, mpath, mcap);
  rc = mpath ? dp_write_file_atomic(mpath, man.data, man.len, e) : dp_err_set(e, DP_ENOMEM, "out of memory");
  dp_buf_free(&man);
  free(mpath);
  return rc;
}

/* The bronze state folder of an entity: DP_DATA_DIR/bronze/<system>/<entity> (caller frees). */
static char *bronze_dir(dp_engine *eng, const dp_entity *ent, dp_err *e) {
  char *dir = NULL;
  if (asprintf(&dir, "%s/bronze/%s/%s", eng->cfg.data_dir, ent->system, ent->name) < 0) {
    dp_err_set(e, DP_ENOMEM, "out of memory");
    return NULL;
  }
  return dir;
}

/* The bronze step: the key file may stand in for reading the collection only when the entity's
 * last bronze load (before this run; skipped ones wrote nothing) succeeded, since a failed or
 * crashed load may have written part of its batches; --full-refresh reads the collection too. */
static int bronze_step(dp_engine *eng, const dp_runinfo *run, const dp_run_opts *o, ent_state *s, dp_counts *n,
                       dp_buf *details, dp_err *e) {
  char trusted[40] = "";
  layer_run last;
  layer_run_query q = {"bronze", NULL, NULL, run->id_str, 0};
  int rc = latest_layer_run(eng->audit, s->ent, &q, &last, e);
  if (rc) return rc;
  free(last.file);
  if (!o->full_refresh && last.found && strcmp(last.status, "succeeded") == 0)
    snprintf(trusted, sizeof trusted, "%s", last.run_id);
  char *dir = bronze_dir(eng, s->ent, e);
  if (!dir) return e->code;
  dp_bronze_io io = {dir, trusted, 0, 0};
  rc = dp_bronze_load(eng->mongo, eng->cfg.bronze_db, s->ent, run, s->raw_path, s->raw_ref, &io, n, e);
  free(dir);
  if (rc) return rc;
  /* details: what a replay already put there, plus the file, repeated keys, the key source */
  if (details->len < 2 || strcmp(details->data, "{}") == 0) {
    dp_buf_reset(details);
    dp_buf_puts(details, "{\"file\":");
    put_json_str_or_null(details, s->raw_ref);
  } else {
    details->data[--details->len] = '\0'; /* reopen the object */
  }
  dp_buf_printf(details, ",\"duplicates\":%" PRId64 ",\"stored_keys_from\":\"%s\"", io.duplicates,
                io.used_key_file ? "key file" : "collection");
  if (n->rejected > 0) { /* where the records bronze could not store are (docs/data-layers.md) */
    char rn[300];
    dp_bronze_rejects_collection_name(s->ent, rn, sizeof rn);
    dp_buf_puts(details, ",\"rejects\":");
    dp_json_put_string(details, rn, strlen(rn));
  }
  dp_buf_putc(details, '}');
  return 0;
}

/* The silver step: the merge of what bronze wrote (all of bronze when replaying from it). */
static int silver_step(dp_engine *eng, const dp_runinfo *run, const dp_run_opts *o, ent_state *s, dp_counts *n,
                       dp_err *e) {
  char *dir = bronze_dir(eng, s->ent, e);
  if (!dir) return e->code;
  int rc = dp_silver_merge(eng->data, eng->mongo, eng->cfg.bronze_db, dir, s->ent, run, s->cursor_after,
                           o->replay == DP_REPLAY_BRONZE ? DP_SILVER_FULL_READ : 0, n, e);
  free(dir);
  return rc;
}

/* Replay from raw: the raw file of the entity written by o->replay_run, or by its latest run
 * whose raw layer succeeded (from the audit rows). */
static int find_raw_file(dp_engine *eng, const dp_run_opts *o, ent_state *s, dp_buf *details, dp_err *e) {
  layer_run last;
  layer_run_query q = {"raw", "succeeded", o->replay_run, NULL, 1};
  int rc = latest_layer_run(eng->audit, s->ent, &q, &last, e);
  if (rc) return rc;
  if (!last.found)
    return dp_err_set(e, DP_ENOTFOUND, "replay: no raw file of %s.%s%s%s in the audit", s->ent->system,
                      s->ent->name, o->replay_run ? " from run " : "", o->replay_run ? o->replay_run : "");
  if ((rc = set_raw_file(eng, s, last.file, e)) != 0) return rc;
  dp_buf_reset(details);
  dp_buf_puts(details, "{\"replay_of\":\"");
  dp_buf_puts(details, last.run_id);
  dp_buf_puts(details, "\",\"file\":");
  dp_json_put_string(details, s->raw_ref, strlen(s->raw_ref));
  dp_buf_puts(details, "}");
  size_t scap = strlen(s->raw_path) + sizeof ".gz";
  char *stored = malloc(scap);
  if (!stored) return dp_err_set(e, DP_ENOMEM, "out of memory");
  rc = dp_raw_locate(s->raw_path, stored, scap); /* X.jsonl or X.jsonl.gz */
  free(stored);
  if (rc != 0) return dp_err_set(e, DP_ENOTFOUND, "replay: raw file %s is gone (retention?)", s->raw_path);
  return 0;
}

static const char *layer_status(int ok, int failed) {
  if (failed == 0) return "succeeded";
  if (ok == 0) return "failed";
  return "partial";
}

static void print_summary(const dp_runinfo *run, const char *system, const char *status, ent_state *st,
                          size_t n, dp_counts (*counts)[3], const char *(*statuses)[3]) {
  static const char *layers[] = {"raw", "bronze", "silver"};
  printf("run %s of %s: %s\n", run->id_str, system, status);
  printf("  %-28s %-7s %-9s %9s %9s %9s %9s %9s %9s\n", "entity", "layer", "status", "in", "inserted",
         "updated", "deleted", "unchanged", "rejected");
  for (size_t i = 0; i < n; i++) {
    for (int l = 0; l < 3; l++) {
      if (!statuses[i][l]) continue;
      dp_counts *c = &counts[i][l];
      printf("  %-28s %-7s %-9s %9" PRId64 " %9" PRId64 " %9" PRId64 " %9" PRId64 " %9" PRId64 " %9" PRId64 "\n",
             st[i].ent->name, layers[l], statuses[i][l], c->in, c->inserted, c->updated, c->deleted,
             c->unchanged, c->rejected);
    }
    if (st[i].error) printf("  %s: %s\n", st[i].ent->name, st[i].error);
  }
  fflush(stdout);
}

/* Starts the run's Prefect reporting (NULL without PREFECT_API_URL or when Prefect is down; see
 * prefect.h): flow dp-engine.<system>, the run's entities and layers as parameters. */
static dp_prefect *prefect_begin(const char *system, const dp_run_opts *o, const ent_state *st, size_t nent,
                                 dp_runinfo *run, char *report, size_t cap) {
  static const char *names[] = {"raw", "bronze", "silver"};
  char flow[300];
  snprintf(flow, sizeof flow, "dp-engine.%s", system);
  dp_buf params = DP_BUF_INIT;
  dp_buf_puts(&params, "{\"entities\":[");
  for (size_t i = 0; i < nent; i++) {
    if (i) dp_buf_putc(&params, ',');
    dp_json_put_string(&params, st[i].ent->name, strlen(st[i].ent->name));
  }
  dp_buf_puts(&params, "],\"layers\":[");
  for (int l = 0, k = 0; l < 3; l++)
    if (o->layers & (1u << l)) dp_buf_printf(&params, "%s\"%s\"", k++ ? "," : "", names[l]);
  dp_buf_printf(&params, "],\"full_refresh\":%s}", o->full_refresh ? "true" : "false");
  /* only a run of `dp-engine run` attaches to PREFECT__FLOW_RUN_ID (not replays, not serve's) */
  dp_prefect_flow f = {flow, system, o->trigger ? o->trigger : "manual", params.data, o->run_id != NULL,
                       o->replay == DP_REPLAY_NONE && o->run_id == NULL, o->prefect_flow_run_id};
  dp_prefect *pf = dp_prefect_begin(&f, run, report, cap);
  dp_buf_free(&params);
  return pf;
}

/* A flow run that Prefect starts again (a retry, or the same PREFECT__FLOW_RUN_ID twice) has
 * its id in the audit already: this attempt gets a UUID v7 of its own, and *note says why.
 * Returns 0 or the audit's error. */
static int prefect_new_attempt(dp_engine *eng, dp_runinfo *run, char *note, size_t cap, dp_err *e) {
  const char *p[] = {run->id_str};
  PGresult *r = NULL;
  int rc = dp_pg_exec(eng->audit, "SELECT status FROM audit.system_run WHERE run_id = $1::uuid", 1, p, &r, e);
  if (rc) return rc;
  if (PQntuples(r) == 1) {
    snprintf(note, cap, "flow run %s ran before (as run %s, %s): this attempt's run id is a UUID v7", run->id_str,
             run->id_str, PQgetvalue(r, 0, 0));
    dp_runinfo_new(run);
  }
  PQclear(r);
  return 0;
}

/* Ends the run's Prefect reporting and writes how far it got (after note, if any) into the
 * audit row. */
static void prefect_end(dp_engine *eng, dp_prefect **pf, const dp_runinfo *run, const char *status,
                        const char *message, const char *note, char *report, size_t cap) {
  if (!*pf) return;
  char id[37];
  snprintf(id, sizeof id, "%s", dp_prefect_flow_run_id(*pf));
  dp_prefect_end(*pf, status, message, report, cap);
  *pf = NULL;
  if (note && *note) {
    dp_buf both = DP_BUF_INIT;
    dp_buf_printf(&both, "%s%s%s", note, report[0] ? "; " : "", report);
    dp_utf8_copy(report, cap, both.data ? both.data : "");
    dp_buf_free(&both);
  }
  dp_err e;
  if (dp_audit_set_prefect(eng->audit, run, id, report[0] ? report : NULL, &e) != 0)
    dp_log(DP_LOG_WARN, "prefect: cannot record the reporting state in the audit: %s", e.msg);
}

/* ---------- The stages of a run ---------- */

/* The system and its entities from the metadata: the enabled ones, or the ones named. */
static int select_entities(run_state *r, dp_err *e) {
  const dp_run_opts *o = r->o;
  const dp_snap_target *sys = dp_snapshot_find(r->meta, r->system, 0);
  if (!sys) return dp_err_set(e, DP_EINVAL, "no system named %s in %s", r->system, r->eng->cfg.metadata);
  if (!sys->enabled)
    return dp_err_set(e, DP_EINVAL, "system %s is disabled in metadata (\"enabled\": false)", r->system);
  r->st = calloc(r->meta->nentities ? r->meta->nentities : 1, sizeof *r->st);
  if (!r->st) return dp_err_set(e, DP_ENOMEM, "out of memory");
  for (size_t i = 0; i < r->meta->nentities; i++) {
    const dp_entity *ent = &r->meta->entities[i];
    if (strcmp(ent->system, r->system) != 0) continue;
    int wanted = o->nentities == 0;
    for (int k = 0; k < o->nentities; k++) wanted |= strcmp(o->entities[k], ent->name) == 0;
    if (wanted && !ent->enabled && o->nentities == 0) r->skipped_disabled++;
    if (wanted && (ent->enabled || o->nentities > 0)) r->st[r->nent++].ent = ent;
  }
  for (int k = 0; k < o->nentities; k++) {
    int ok = 0;
    for (size_t i = 0; i < r->nent; i++) ok |= strcmp(r->st[i].ent->name, o->entities[k]) == 0;
    if (!ok) return dp_err_set(e, DP_EINVAL, "system %s has no entity named %s", r->system, o->entities[k]);
  }
  r->counts = calloc(r->nent ? r->nent : 1, sizeof *r->counts);
  r->statuses = calloc(r->nent ? r->nent : 1, sizeof *r->statuses);
  if (!r->counts || !r->statuses) return dp_err_set(e, DP_ENOMEM, "out of memory");
  return 0;
}

/* Connections, the system's lock, runs left running marked crashed, the run id, Prefect, the
 * audit row. On success r->started is set (the audit row is open). */
static int start_run(run_state *r, int *run_failed, dp_err *e) {
  dp_engine *eng = r->eng;
  const dp_run_opts *o = r->o;
  int rc = dp_engine_open_migrated(eng, e);
  if (rc == 0 && (o->layers & (DP_LAYER_BRONZE | DP_LAYER_SILVER))) rc = dp_engine_open_mongo(eng, e);
  if (rc) return rc;
  if ((rc = dp_audit_lock_system(eng->audit, r->system, e)) != 0) {
    *run_failed = 1;
    return rc;
  }
  r->locked = 1;
  int crashed = 0;
  rc = dp_audit_running_flow_runs(eng->audit, r->system, &r->crashed_runs, &r->ncrashed_runs, e);
  if (rc == 0) rc = dp_audit_mark_crashed(eng->audit, r->system, &crashed, e);
  if (rc) return rc;
  if (crashed) dp_log(DP_LOG_WARN, "%s: marked %d earlier run(s) left running as crashed", r->system, crashed);
  if (o->run_id) rc = dp_runinfo_from_id(&r->run, o->run_id, e);
  else dp_runinfo_new(&r->run);
  if (rc) return rc;
  r->pf = prefect_begin(r->system, o, r->st, r->nent, &r->run, r->pf_report, sizeof r->pf_report);
  if (r->pf && !o->run_id && (rc = prefect_new_attempt(eng, &r->run, r->pf_note, sizeof r->pf_note, e)) != 0)
    return rc;
  if (r->pf_note[0]) snprintf(r->pf_report, sizeof r->pf_report, "%s", r->pf_note);
  if ((rc = dp_audit_stamp_run(eng->audit, r->system, &r->run, e)) != 0) return rc;
  rc = dp_audit_system_start(eng->audit, &r->run, r->system, o->trigger ? o->trigger : "manual", o->trigger_detail,
                             r->meta->hash, DP_VERSION, e);
  if (rc) return rc;
  r->started = 1;
  if (o->run_id_out) snprintf(o->run_id_out, 37, "%s", r->run.id_str); /* the audit has the run from here on */
  if (r->pf || r->pf_report[0])
    rc = dp_audit_set_prefect(eng->audit, &r->run, dp_prefect_flow_run_id(r->pf),
                              r->pf_report[0] ? r->pf_report : NULL, e);
  if (rc) return rc;
  for (int k = 0; k < r->ncrashed_runs; k++) dp_prefect_crashed(r->pf, r->crashed_runs[k]);
  dp_log_scope_run(r->run.id_str, r->system);
  char ents[48];
  dp_log_event(DP_LOG_INFO, "run_started", NULL, "run %s of %s started (%s)", r->run.id_str, r->system,
               dp_cli_count(ents, sizeof ents, r->nent, "entity", "entities"));
  return 0;
}

/* Layer l (0 raw, 1 bronze, 2 silver) of one entity; its error in le. */
static int layer_step(run_state *r, int l, ent_state *s, dp_counts *n, dp_err *le) {
  const dp_run_opts *o = r->o;
  if (l == 0) return raw_step(r->eng, &r->run, o, s, n, &r->details, le);
  if (l == 2) return silver_step(r->eng, &r->run, o, s, n, le);
  int rc = o->replay == DP_REPLAY_RAW ? find_raw_file(r->eng, o, s, &r->details, le) : 0;
  return rc ? rc : bronze_step(r->eng, &r->run, o, s, n, &r->details, le);
}

/* One entity's layer, audited: skipped after an earlier failure, else run and recorded. Adds to
 * *ok, *failed or *skipped. Returns 0, or an audit error (the layer's own error is recorded). */
static int run_entity_layer(run_state *r, int l, size_t i, int *ok, int *failed, int *skipped, dp_err *e) {
  dp_engine *eng = r->eng;
  ent_state *s = &r->st[i];
  dp_counts *n = &r->counts[i][l];
  const char *layer = layer_names[l];
  if (s->failed) {
    r->statuses[i][l] = "skipped";
    (*skipped)++;
    return dp_audit_entity_start(eng->audit, &r->run, r->system, s->ent->name, layer, "skipped",
                                 "an earlier layer failed", e);
  }
  int rc = dp_audit_entity_start(eng->audit, &r->run, r->system, s->ent->name, layer, "running", NULL, e);
  if (rc) return rc;
  int ptask = dp_prefect_task_begin(r->pf, s->ent->name, layer);
  dp_err le;
  dp_err_clear(&le);
  double t0 = dp_monotonic();
  dp_buf_puts(&r->details, "{}");
  dp_progress_begin(layer, r->system, s->ent->name);
  dp_log_scope_step(layer, s->ent->name);
  int lrc = layer_step(r, l, s, n, &le);
  dp_progress_end();
  double dt = dp_monotonic() - t0;
  if (lrc) {
    /* The audit row and the summary get the message; the Lua traceback goes to the debug log. */
    char *tb = strstr(le.msg, "\nstack traceback:");
    if (tb) {
      dp_log(DP_LOG_DEBUG, "%s %s.%s: %s", layer, r->system, s->ent->name, le.msg);
      *tb = '\0';
    }
    set_error(s, le.msg);
    (*failed)++;
    r->statuses[i][l] = "failed";
    dp_log_event(DP_LOG_ERROR, "layer_failed", n, "%s %s.%s failed: %s", layer, r->system, s->ent->name, le.msg);
  } else {
    (*ok)++;
    r->statuses[i][l] = "succeeded";
    if (l == 2) dp_bridge_commit_hook(eng->L, r->system, s->ent->name);
    dp_log_event(DP_LOG_INFO, "layer_succeeded", n,
           "%s %s.%s: %" PRId64 " in, %" PRId64 " inserted, %" PRId64 " updated, %" PRId64 " deleted, %" PRId64
           " unchanged, %" PRId64 " rejected in %.2f s (%.0f records/s)",
           layer, r->system, s->ent->name, n->in, n->inserted, n->updated, n->deleted, n->unchanged, n->rejected, dt,
           dt > 0 ? (double)n->in / dt : 0.0);
  }
  dp_prefect_task_end(r->pf, ptask, lrc == 0, le.msg);
  rc = dp_audit_entity_end(eng->audit, &r->run, s->ent->name, layer, r->statuses[i][l], n, lrc ? le.msg : NULL,
                           r->details.data, e);
  dp_buf_reset(&r->details);
  dp_log_scope_step(NULL, NULL);
  return rc;
}

/* Layer l of every entity, between its layer audit rows. */
static int run_layer(run_state *r, int l, dp_err *e) {
  int ok = 0, failed = 0, skipped = 0;
  int rc = dp_audit_layer_start(r->eng->audit, &r->run, r->system, layer_names[l], e);
  for (size_t i = 0; i < r->nent && rc == 0; i++) rc = run_entity_layer(r, l, i, &ok, &failed, &skipped, e);
  if (rc) return rc;
  return dp_audit_layer_end(r->eng->audit, &r->run, layer_names[l], layer_status(ok, failed), ok, failed, skipped,
                            e);
}

/* The system's audit row, Prefect and the summary; DP_EIO when an entity failed. */
static int finish_run(run_state *r, int *run_failed, dp_err *e) {
  int ok = 0, failed = 0;
  for (size_t i = 0; i < r->nent; i++) r->st[i].failed ? failed++ : ok++;
  const char *status = layer_status(ok, failed);
  char err[512] = "";
  if (failed) snprintf(err, sizeof err, "%d of %zu entities failed", failed, r->nent);
  int rc = dp_audit_system_end(r->eng->audit, &r->run, status, ok, failed, r->skipped_disabled, failed ? err : NULL, e);
  r->started = 0;
  if (rc) return rc;
  prefect_end(r->eng, &r->pf, &r->run, status, failed ? err : NULL, r->pf_note, r->pf_report, sizeof r->pf_report);
  dp_log_event(DP_LOG_INFO, "run_finished", NULL, "run %s of %s %s", r->run.id_str, r->system, status);
  if (!r->o->quiet) print_summary(&r->run, r->system, status, r->st, r->nent, r->counts, r->statuses);
  if (!failed) return 0;
  *run_failed = 1;
  return dp_err_set(e, DP_EIO, "run %s of %s %s: %s", r->run.id_str, r->system, status, err);
}

/* Ends what is still open (an infrastructure error ended the run early) and frees the run. */
static void end_run(run_state *r, int *run_failed, dp_err *e) {
  dp_log_scope_run(NULL, NULL);
  if (r->started) {
    dp_err tmp;
    *run_failed = 1;
    dp_audit_system_end(r->eng->audit, &r->run, "failed", 0, (int)r->nent, 0, e->msg, &tmp);
  }
  if (r->pf) prefect_end(r->eng, &r->pf, &r->run, "failed", e->msg, r->pf_note, r->pf_report, sizeof r->pf_report);
  for (int k = 0; k < r->ncrashed_runs; k++) free(r->crashed_runs[k]);
  free(r->crashed_runs);
  if (r->started || r->locked) dp_bridge_commit_hook(r->eng->L, r->system, NULL);
  if (r->locked) dp_audit_unlock_system(r->eng->audit, r->system);
  for (size_t i = 0; i < r->nent; i++) {
    free(r->st[i].error);
    free(r->st[i].raw_path);
    free(r->st[i].raw_ref);
    free(r->st[i].cursor_before);
    free(r->st[i].cursor_after);
  }
  free(r->st);
  free(r->counts);
  free(r->statuses);
  dp_buf_free(&r->details);
  dp_snapshot_unref(r->meta);
}

int dp_run_system(dp_engine *eng, const char *system, const dp_run_opts *o, int *run_failed, dp_err *e) {
  run_state r = {.eng = eng, .system = system, .o = o, .details = DP_BUF_INIT};
  *run_failed = 0;
  int rc = dp_load_metadata(eng, &r.meta, e);
  if (rc == 0) rc = select_entities(&r, e);
  if (rc == 0) rc = start_run(&r, run_failed, e);
  for (int l = 0; l < 3 && rc == 0; l++)
    if (o->layers & (1u << l)) rc = run_layer(&r, l, e);
  if (rc == 0) rc = finish_run(&r, run_failed, e);
  end_run(&r, run_failed, e);
  return rc;
}
