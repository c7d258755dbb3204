/* run.c - the run driver. */
#include "run.h"
#include "version.h"
#include "audit.h"
#include "bronze.h"
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
#include "lifecycle.h"
#include "forget.h"
#include "silver.h"

#include <inttypes.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


typedef struct ent_state {
  dp_entity ent;
  int failed;            /* failed in some layer: later layers skip it */
  char *error;           /* first error (owned) */
  char raw_path[4096];
  char raw_ref[1024];    /* relative to DP_DATA_DIR */
  char *cursor_before;   /* owned */
  char *cursor_after;    /* owned */
} ent_state;

typedef struct emit_ctx {
  dp_raw_writer *w;
  dp_buf scratch;
  dp_forget_filter *forget; /* the entity's forgotten keys, or NULL (forget.h) */
} emit_ctx;

/* emit(batch): batch is an array of JSON object texts; each is validated, compacted and
 * appended to the raw file. Raises a Lua error naming the record on bad input. */
static int l_emit(lua_State *L) {
  emit_ctx *ctx = (emit_ctx *)lua_touserdata(L, lua_upvalueindex(1));
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t n = lua_objlen(L, 1);
  dp_err e;
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, (int)i);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (s == NULL || lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "emit: record %d is a %s, expected a JSON object string", (int)i,
                        luaL_typename(L, -1));
    dp_buf_reset(&ctx->scratch);
    if (dp_json_compact(s, len, &ctx->scratch, &e) != 0)
      return luaL_error(L, "emit: record %d: %s", (int)i, e.msg);
    if (ctx->scratch.len == 0 || ctx->scratch.data[0] != '{')
      return luaL_error(L, "emit: record %d is not a JSON object", (int)i);
    if (ctx->forget && dp_forget_filter_drops(ctx->forget, ctx->scratch.data, ctx->scratch.len)) {
      lua_pop(L, 1);
      continue;
    }
    if (dp_raw_append(ctx->w, ctx->scratch.data, ctx->scratch.len, &e) != 0)
      return luaL_error(L, "emit: %s", e.msg);
    lua_pop(L, 1);
  }
  dp_progress_add((int64_t)n, "records");
  return 0;
}

/* log(level, message) for connectors, prefixed with system.entity. */
static int l_log(lua_State *L) {
  const char *prefix = lua_tostring(L, lua_upvalueindex(1));
  const char *lv = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  dp_log_level level = DP_LOG_INFO;
  dp_log_level_parse(lv, &level);
  dp_log(level, "%s: %s", prefix, msg);
  return 0;
}

static void set_error(ent_state *s, const char *msg) {
  s->failed = 1;
  if (!s->error) s->error = strdup(msg);
}

static int read_cursor(PGconn *c, ent_state *s, dp_err *e) {
  const char *p[] = {s->ent.system, s->ent.name};
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

/* raw layer for one entity: extract through the connector into an atomic JSONL file. */
static int raw_step(dp_engine *eng, const dp_runinfo *run, const dp_run_opts *o, int meta_idx,
                    ent_state *s, dp_counts *n, dp_buf *details, dp_err *e) {
  lua_State *L = eng->L;
  struct tm tm;
  time_t secs = (time_t)(run->ts_us / 1000000);
  gmtime_r(&secs, &tm);
  dp_lifecycle lc; /* raw.compression: gzip from the start (docs/lifecycle.md) */
  dp_lifecycle_of(L, meta_idx, s->ent.system, s->ent.name, &lc);
  snprintf(s->raw_ref, sizeof s->raw_ref, "raw/%s/%s/%04d/%02d/%02d/%s.jsonl%s", s->ent.system,
           s->ent.name, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, run->id_str, lc.gzip ? ".gz" : "");
  snprintf(s->raw_path, sizeof s->raw_path, "%s/%s", eng->cfg.data_dir, s->raw_ref);
  int rc = o->full_refresh ? 0 : read_cursor(eng->audit, s, e);
  if (rc) return rc;

  dp_raw_writer w;
  rc = dp_raw_open(&w, s->raw_path, e);
  if (rc) return rc;
  emit_ctx ctx = {&w, DP_BUF_INIT, NULL};
  if ((rc = dp_forget_filter_load(eng->audit, &s->ent, &ctx.forget, e)) != 0) {
    dp_raw_abort(&w);
    return rc;
  }
  int top = lua_gettop(L);
  lua_getglobal(L, "__dp_engine");
  lua_getfield(L, -1, "extract");
  lua_remove(L, -2);
  lua_pushvalue(L, meta_idx);
  lua_pushstring(L, s->ent.system);
  lua_pushstring(L, s->ent.name);
  if (s->cursor_before) lua_pushstring(L, s->cursor_before);
  else lua_pushnil(L);
  lua_pushlightuserdata(L, &ctx);
  lua_pushcclosure(L, l_emit, 1);
  lua_pushfstring(L, "%s.%s", s->ent.system, s->ent.name);
  lua_pushcclosure(L, l_log, 1);
  if (o->event) lua_pushstring(L, o->event);
  else lua_pushnil(L);
  rc = dp_lua_pcall(L, 7, 1, e);
  dp_buf_free(&ctx.scratch);
  long long forgotten = dp_forget_filter_dropped(ctx.forget);
  dp_forget_filter_free(ctx.forget);
  if (rc) {
    dp_raw_abort(&w);
    lua_settop(L, top);
    return rc;
  }
  if (lua_type(L, -1) == LUA_TSTRING) s->cursor_after = strdup(lua_tostring(L, -1));
  else if (lua_type(L, -1) == LUA_TNUMBER) s->cursor_after = strdup(lua_tostring(L, -1));
  lua_settop(L, top);
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
  put_json_str_or_null(&man, s->ent.system);
  dp_buf_puts(&man, ",\"entity\":");
  put_json_str_or_null(&man, s->ent.name);
  dp_buf_printf(&man, ",\"details\":%s}\n", details->data);
  char mpath[4200];
  dp_raw_manifest_path(s->raw_path, mpath, sizeof mpath);
  rc = dp_write_file_atomic(mpath, man.data, man.len, e);
  dp_buf_free(&man);
  return rc;
}

/* The bronze state folder of an entity: DP_DATA_DIR/bronze/<system>/<entity>. */
static void bronze_dir(dp_engine *eng, const dp_entity *ent, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/bronze/%s/%s", eng->cfg.data_dir, ent->system, ent->name);
}

/* The bronze step: the key file may stand in for reading the collection only when the entity's
 * last bronze load (before this run; skipped ones wrote nothing) succeeded, since a failed or
 * crashed load may have written part of its batches; --full-refresh reads the collection too. */
static int bronze_step(dp_engine *eng, const dp_runinfo *run, const dp_run_opts *o, ent_state *s, dp_counts *n,
                       dp_buf *details, dp_err *e) {
  char dir[4096], trusted[40] = "";
  bronze_dir(eng, &s->ent, dir, sizeof dir);
  const char *p[] = {s->ent.system, s->ent.name, run->id_str};
  PGresult *r = NULL;
  int rc = dp_pg_exec(eng->audit,
                      "SELECT run_id::text, status FROM audit.entity_layer_run WHERE system = $1 AND entity = $2 "
                      "AND layer = 'bronze' AND status <> 'skipped' AND run_id <> $3::uuid "
                      "ORDER BY started_at DESC LIMIT 1",
                      3, p, &r, e);
  if (rc) return rc;
  if (!o->full_refresh && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 1), "succeeded") == 0)
    snprintf(trusted, sizeof trusted, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  dp_bronze_io io = {dir, trusted, 0, 0};
  rc = dp_bronze_load(eng->mongo, eng->cfg.bronze_db, &s->ent, run, s->raw_path, s->raw_ref, &io, n, e);
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
    dp_bronze_rejects_collection_name(&s->ent, rn, sizeof rn);
    dp_buf_puts(details, ",\"rejects\":");
    dp_json_put_string(details, rn, strlen(rn));
  }
  dp_buf_putc(details, '}');
  return 0;
}

/* Calls engine.<fn>(system, entity) (the ctx.on_commit hooks of issue #4): after_commit runs the
 * entity's registered functions once its silver merge committed; discard_pending (entity NULL)
 * drops what is left at the end of a run. Their failures are warnings: the data is committed. */
static void commit_hook(lua_State *L, const char *fn, const char *system, const char *entity) {
  int top = lua_gettop(L);
  dp_err e;
  lua_getglobal(L, "__dp_engine");
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_pushstring(L, system);
  if (entity) lua_pushstring(L, entity);
  else lua_pushnil(L);
  if (dp_lua_pcall(L, 2, 1, &e)) {
    dp_log(DP_LOG_WARN, "%s.%s: %s: %s", system, entity ? entity : "*", fn, e.msg);
  } else if (lua_istable(L, -1)) {
    for (size_t i = 1; i <= lua_objlen(L, -1); i++) {
      lua_rawgeti(L, -1, (int)i);
      dp_log(DP_LOG_WARN, "%s.%s: after the commit: %s", system, entity, lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
}

/* Replay from raw: the raw file of the entity written by o->replay_run, or by its latest run
 * whose raw layer succeeded (from the audit rows). */
static int find_raw_file(dp_engine *eng, const dp_run_opts *o, ent_state *s, dp_buf *details, dp_err *e) {
  const char *p[] = {s->ent.system, s->ent.name, o->replay_run};
  PGresult *r = NULL;
  int rc = dp_pg_exec(eng->audit,
                      "SELECT details->>'file', run_id FROM audit.entity_layer_run WHERE system = $1 AND entity = $2 "
                      "AND layer = 'raw' AND status = 'succeeded' AND details ? 'file' "
                      "AND ($3::text IS NULL OR run_id::text = $3) ORDER BY started_at DESC LIMIT 1",
                      3, p, &r, e);
  if (rc) return rc;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return dp_err_set(e, DP_ENOTFOUND, "replay: no raw file of %s.%s%s%s in the audit", s->ent.system, s->ent.name,
                      o->replay_run ? " from run " : "", o->replay_run ? o->replay_run : "");
  }
  snprintf(s->raw_ref, sizeof s->raw_ref, "%s", PQgetvalue(r, 0, 0));
  snprintf(s->raw_path, sizeof s->raw_path, "%s/%s", eng->cfg.data_dir, s->raw_ref);
  dp_buf_reset(details);
  dp_buf_puts(details, "{\"replay_of\":\"");
  dp_buf_puts(details, PQgetvalue(r, 0, 1));
  dp_buf_puts(details, "\",\"file\":");
  dp_json_put_string(details, s->raw_ref, strlen(s->raw_ref));
  dp_buf_puts(details, "}");
  PQclear(r);
  char stored[sizeof s->raw_path];
  if (dp_raw_locate(s->raw_path, stored, sizeof stored) != 0) /* X.jsonl or X.jsonl.gz */
    return dp_err_set(e, DP_ENOTFOUND, "replay: raw file %s is gone (retention?)", s->raw_path);
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
             st[i].ent.name, layers[l], statuses[i][l], c->in, c->inserted, c->updated, c->deleted,
             c->unchanged, c->rejected);
    }
    if (st[i].error) printf("  %s: %s\n", st[i].ent.name, st[i].error);
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
    dp_json_put_string(&params, st[i].ent.name, strlen(st[i].ent.name));
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
    char both[2200];
    snprintf(both, sizeof both, "%s%s%s", note, report[0] ? "; " : "", report);
    snprintf(report, cap, "%s", both);
  }
  dp_err e;
  if (dp_audit_set_prefect(eng->audit, run, id, report[0] ? report : NULL, &e) != 0)
    dp_log(DP_LOG_WARN, "prefect: cannot record the reporting state in the audit: %s", e.msg);
}

int dp_run_system(dp_engine *eng, const char *system, const dp_run_opts *o, int *run_failed, dp_err *e) {
  int rc;
  *run_failed = 0;
  rc = dp_load_metadata(eng, e);
  if (rc) return rc;
  lua_State *L = eng->L;
  int meta_idx = lua_gettop(L);
  ent_state *st = NULL;
  dp_counts (*counts)[3] = NULL;
  const char *(*statuses)[3] = NULL;
  size_t nent = 0;
  int skipped_disabled = 0, locked = 0, started = 0;
  char *meta_hash = dp_lua_strfield(L, meta_idx, "hash");
  dp_runinfo run;
  dp_buf details = DP_BUF_INIT;
  dp_prefect *pf = NULL;          /* the run's Prefect reporter (docs/orchestration.md), or NULL */
  char pf_report[1024] = "", pf_note[300] = "";
  char **crashed_runs = NULL;     /* flow runs of runs the crash marking ends */
  int ncrashed_runs = 0;

  /* the system */
  int found = 0, enabled = 0;
  lua_getfield(L, meta_idx, "systems");
  for (size_t i = 1; i <= lua_objlen(L, -1); i++) {
    lua_rawgeti(L, -1, (int)i);
    lua_getfield(L, -1, "name");
    if (lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), system) == 0) {
      found = 1;
      lua_getfield(L, -2, "enabled");
      enabled = lua_isnil(L, -1) || lua_toboolean(L, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  if (!found) {
    rc = dp_err_set(e, DP_EINVAL, "no system named %s in %s", system, eng->cfg.metadata);
    goto cleanup;
  }
  if (!enabled) {
    rc = dp_err_set(e, DP_EINVAL, "system %s is disabled in metadata (\"enabled\": false)", system);
    goto cleanup;
  }

  /* its entities */
  lua_getfield(L, meta_idx, "entities");
  size_t total = lua_objlen(L, -1);
  st = calloc(total ? total : 1, sizeof *st);
  if (!st) { lua_pop(L, 1); rc = dp_err_set(e, DP_ENOMEM, "out of memory"); goto cleanup; }
  for (size_t i = 1; i <= total; i++) {
    lua_rawgeti(L, -1, (int)i);
    lua_getfield(L, -1, "system");
    int mine = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), system) == 0;
    lua_pop(L, 1);
    if (!mine) { lua_pop(L, 1); continue; }
    lua_getfield(L, -1, "name");
    const char *nm = lua_tostring(L, -1);
    int wanted = o->nentities == 0;
    for (int k = 0; k < o->nentities; k++) wanted |= nm && strcmp(o->entities[k], nm) == 0;
    lua_pop(L, 1);
    lua_getfield(L, -1, "enabled");
    int en = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (wanted && !en && o->nentities == 0) skipped_disabled++;
    if (wanted && (en || o->nentities > 0)) {
      rc = dp_entity_from_lua(L, -1, &st[nent].ent, e);
      if (rc) { lua_pop(L, 2); goto cleanup; }
      nent++;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  for (int k = 0; k < o->nentities; k++) {
    int ok = 0;
    for (size_t i = 0; i < nent; i++) ok |= strcmp(st[i].ent.name, o->entities[k]) == 0;
    if (!ok) {
      rc = dp_err_set(e, DP_EINVAL, "system %s has no entity named %s", system, o->entities[k]);
      goto cleanup;
    }
  }
  counts = calloc(nent ? nent : 1, sizeof *counts);
  statuses = calloc(nent ? nent : 1, sizeof *statuses);
  if (!counts || !statuses) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); goto cleanup; }

  /* connections, lock, audit */
  rc = dp_engine_open_migrated(eng, e);
  if (rc == 0 && (o->layers & (DP_LAYER_BRONZE | DP_LAYER_SILVER))) rc = dp_engine_open_mongo(eng, e);
  if (rc) goto cleanup;
  rc = dp_audit_lock_system(eng->audit, system, e);
  if (rc) { *run_failed = 1; goto cleanup; }
  locked = 1;
  int crashed = 0;
  rc = dp_audit_running_flow_runs(eng->audit, system, &crashed_runs, &ncrashed_runs, e);
  if (rc == 0) rc = dp_audit_mark_crashed(eng->audit, system, &crashed, e);
  if (rc) goto cleanup;
  if (crashed) dp_log(DP_LOG_WARN, "%s: marked %d earlier run(s) left running as crashed", system, crashed);
  if (o->run_id) rc = dp_runinfo_from_id(&run, o->run_id, e);
  else dp_runinfo_new(&run);
  if (rc) goto cleanup;
  pf = prefect_begin(system, o, st, nent, &run, pf_report, sizeof pf_report);
  if (pf && !o->run_id && (rc = prefect_new_attempt(eng, &run, pf_note, sizeof pf_note, e)) != 0) goto cleanup;
  if (pf_note[0]) snprintf(pf_report, sizeof pf_report, "%s", pf_note);
  rc = dp_audit_stamp_run(eng->audit, system, &run, e);
  if (rc) goto cleanup;
  rc = dp_audit_system_start(eng->audit, &run, system, o->trigger ? o->trigger : "manual", o->trigger_detail,
                             meta_hash, DP_VERSION, e);
  if (rc) goto cleanup;
  started = 1;
  if (o->run_id_out) snprintf(o->run_id_out, 37, "%s", run.id_str); /* the audit has the run from here on */
  if (pf || pf_report[0])
    rc = dp_audit_set_prefect(eng->audit, &run, dp_prefect_flow_run_id(pf), pf_report[0] ? pf_report : NULL, e);
  if (rc) goto cleanup;
  for (int k = 0; k < ncrashed_runs; k++) dp_prefect_crashed(pf, crashed_runs[k]);
  dp_log_scope_run(run.id_str, system);
  dp_log_event(DP_LOG_INFO, "run_started", NULL, "run %s of %s started (%zu entities)", run.id_str, system, nent);

  static const char *layer_names[] = {"raw", "bronze", "silver"};
  for (int l = 0; l < 3; l++) {
    if (!(o->layers & (1u << l))) continue;
    rc = dp_audit_layer_start(eng->audit, &run, system, layer_names[l], e);
    if (rc) goto cleanup;
    int ok = 0, failed = 0, skipped = 0;
    for (size_t i = 0; i < nent; i++) {
      ent_state *s = &st[i];
      dp_counts *n = &counts[i][l];
      if (s->failed) {
        rc = dp_audit_entity_start(eng->audit, &run, system, s->ent.name, layer_names[l], "skipped",
                                   "an earlier layer failed", e);
        if (rc) goto cleanup;
        statuses[i][l] = "skipped";
        skipped++;
        continue;
      }
      rc = dp_audit_entity_start(eng->audit, &run, system, s->ent.name, layer_names[l], "running", NULL, e);
      if (rc) goto cleanup;
      int ptask = dp_prefect_task_begin(pf, s->ent.name, layer_names[l]);
      dp_err le;
      dp_err_clear(&le);
      double t0 = dp_monotonic();
      int lrc;
      dp_buf_puts(&details, "{}");
      dp_progress_begin(layer_names[l], system, s->ent.name);
      dp_log_scope_step(layer_names[l], s->ent.name);
      if (l == 0) {
        lrc = raw_step(eng, &run, o, meta_idx, s, n, &details, &le);
      } else if (l == 1) {
        lrc = o->replay == DP_REPLAY_RAW ? find_raw_file(eng, o, s, &details, &le) : 0;
        if (lrc == 0) lrc = bronze_step(eng, &run, o, s, n, &details, &le);
      } else {
        char dir[4096];
        bronze_dir(eng, &s->ent, dir, sizeof dir);
        lrc = dp_silver_merge(eng->data, eng->mongo, eng->cfg.bronze_db, dir, &s->ent, &run, s->cursor_after,
                              o->replay == DP_REPLAY_BRONZE ? DP_SILVER_FULL_READ : 0, n, &le);
      }
      dp_progress_end();
      double dt = dp_monotonic() - t0;
      if (lrc) {
        /* The audit row and the summary get the message; the Lua traceback goes to the debug log. */
        char *tb = strstr(le.msg, "\nstack traceback:");
        if (tb) {
          dp_log(DP_LOG_DEBUG, "%s %s.%s: %s", layer_names[l], system, s->ent.name, le.msg);
          *tb = '\0';
        }
        set_error(s, le.msg);
        failed++;
        statuses[i][l] = "failed";
        dp_log_event(DP_LOG_ERROR, "layer_failed", n, "%s %s.%s failed: %s", layer_names[l], system, s->ent.name, le.msg);
      } else {
        ok++;
        statuses[i][l] = "succeeded";
        if (l == 2) commit_hook(L, "after_commit", system, s->ent.name);
        dp_log_event(DP_LOG_INFO, "layer_succeeded", n,
               "%s %s.%s: %" PRId64 " in, %" PRId64 " inserted, %" PRId64 " updated, %" PRId64
               " deleted, %" PRId64 " unchanged, %" PRId64 " rejected in %.2f s (%.0f records/s)",
               layer_names[l], system, s->ent.name, n->in, n->inserted, n->updated, n->deleted,
               n->unchanged, n->rejected, dt, dt > 0 ? (double)n->in / dt : 0.0);
      }
      dp_prefect_task_end(pf, ptask, lrc == 0, le.msg);
      rc = dp_audit_entity_end(eng->audit, &run, s->ent.name, layer_names[l], statuses[i][l], n,
                               lrc ? le.msg : NULL, details.data, e);
      dp_buf_reset(&details);
      dp_log_scope_step(NULL, NULL);
      if (rc) goto cleanup;
    }
    rc = dp_audit_layer_end(eng->audit, &run, layer_names[l], layer_status(ok, failed), ok, failed,
                            skipped, e);
    if (rc) goto cleanup;
  }

  {
    int ok = 0, failed = 0;
    for (size_t i = 0; i < nent; i++) st[i].failed ? failed++ : ok++;
    const char *status = layer_status(ok, failed);
    char err[512] = "";
    if (failed) snprintf(err, sizeof err, "%d of %zu entities failed", failed, nent);
    rc = dp_audit_system_end(eng->audit, &run, status, ok, failed, skipped_disabled, failed ? err : NULL, e);
    started = 0;
    if (rc) goto cleanup;
    prefect_end(eng, &pf, &run, status, failed ? err : NULL, pf_note, pf_report, sizeof pf_report);
    dp_log_event(DP_LOG_INFO, "run_finished", NULL, "run %s of %s %s", run.id_str, system, status);
    if (!o->quiet) print_summary(&run, system, status, st, nent, counts, statuses);
    if (failed) {
      *run_failed = 1;
      rc = dp_err_set(e, DP_EIO, "run %s of %s %s: %s", run.id_str, system, status, err);
    }
  }

cleanup:
  dp_log_scope_run(NULL, NULL);
  if (started) {
    /* An infrastructure error (audit or connection) ended the run early. */
    dp_err tmp;
    *run_failed = 1;
    dp_audit_system_end(eng->audit, &run, "failed", 0, (int)nent, 0, e->msg, &tmp);
  }
  if (pf) prefect_end(eng, &pf, &run, "failed", e->msg, pf_note, pf_report, sizeof pf_report);
  for (int k = 0; k < ncrashed_runs; k++) free(crashed_runs[k]);
  free(crashed_runs);
  if (started || locked) commit_hook(L, "discard_pending", system, NULL);
  if (locked) dp_audit_unlock_system(eng->audit, system);
  for (size_t i = 0; i < nent; i++) {
    dp_entity_free(&st[i].ent);
    free(st[i].error);
    free(st[i].cursor_before);
    free(st[i].cursor_after);
  }
  free(st);
  free(counts);
  free(statuses);
  free(meta_hash);
  dp_buf_free(&details);
  lua_settop(L, meta_idx - 1);
  return rc;
}
