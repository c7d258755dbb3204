/* rollback.c - dp-engine rollback RUN_ID: undo a run, layer by layer, as a run of its own
 * (docs/lifecycle.md#undoing-a-run).
 *
 * The algorithm: find the run and, with --cascade, the later runs of its entities (a fixpoint:
 * their entities' later runs too); plan what each (run, entity) undoes; then, newest run first,
 * per entity: bronze (rebuilt from the raw files of earlier loads in a scratch collection, then
 * the touched documents put back), silver (one transaction: the run's versions deleted, the
 * before-images of dp.silver_undo put back, entity_state and cursor back), raw (quarantined),
 * the audit rows of the undone run marked; at the end gold is rebuilt. */
#include "rollback.h"
#include "version.h"
#include "audit.h"
#include "bronze.h"
#include "buf.h"
#include "goldrun.h"
#include "json.h"
#include "log.h"
#include "luabridge.h"
#include "metaload.h"
#include "pg.h"
#include "rawfile.h"
#include "run.h"
#include "silver.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <lauxlib.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ID_BATCH 1000 /* bronze ids per find / bulk write */

/* One (run, entity) to undo and what undoing it does (dry run: would do). */
typedef struct rb_item {
  size_t run, ent; /* indexes into plan.runs and plan.ents */
  int64_t silver_removed, silver_restored, rejects_removed;
  int64_t bronze_touched, bronze_rebuilt, bronze_removed, bronze_rejects_removed;
  int64_t raw_files;
  int cursor_restored;
} rb_item;

typedef struct rb_run {
  char id[37];
  char **ents; /* owned: the entities it touched */
  size_t nents;
} rb_run;

typedef struct rb_plan {
  char system[256];
  rb_run *runs; /* newest first; the run asked for is the last */
  size_t nruns;
  dp_entity *ents; /* owned: every entity of the plan, from metadata */
  size_t nents;
  rb_item *items;
  size_t nitems;
  dp_runinfo rb; /* the rollback's own run */
} rb_plan;

static void plan_free(rb_plan *p) {
  for (size_t i = 0; i < p->nruns; i++) {
    for (size_t k = 0; k < p->runs[i].nents; k++) free(p->runs[i].ents[k]);
    free(p->runs[i].ents);
  }
  free(p->runs);
  for (size_t i = 0; i < p->nents; i++) dp_entity_free(&p->ents[i]);
  free(p->ents);
  free(p->items);
}

static int64_t first_int(PGresult *r) {
  return PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
}

/* Runs sql with params and returns the bigint it selects in *n. */
static int query_count(PGconn *c, const char *sql, int np, const char *const *p, int64_t *n, dp_err *e) {
  PGresult *r = NULL;
  int rc = dp_pg_exec(c, sql, np, p, &r, e);
  if (rc == 0) *n = first_int(r);
  PQclear(r);
  return rc;
}

/* ---------- the plan ---------- */

/* Adds the run (its id and the entities it touched, not skipped) to the plan. */
static int add_run(PGconn *a, rb_plan *p, const char *id, dp_err *e) {
  const char *pr[] = {id};
  PGresult *r = NULL;
  int rc = dp_pg_exec(a,
                      "SELECT DISTINCT entity FROM audit.entity_layer_run WHERE run_id = $1::uuid AND layer <> 'gold' "
                      "AND status NOT IN ('skipped', 'rolled_back') ORDER BY entity",
                      1, pr, &r, e);
  if (rc) return rc;
  rb_run *grown = realloc(p->runs, (p->nruns + 1) * sizeof *grown);
  if (!grown) { PQclear(r); return dp_err_set(e, DP_ENOMEM, "out of memory"); }
  p->runs = grown;
  rb_run *run = &p->runs[p->nruns++];
  memset(run, 0, sizeof *run);
  snprintf(run->id, sizeof run->id, "%s", id);
  int n = PQntuples(r);
  run->ents = calloc((size_t)n + 1, sizeof *run->ents);
  if (!run->ents) { PQclear(r); return dp_err_set(e, DP_ENOMEM, "out of memory"); }
  for (int i = 0; i < n; i++) {
    if (!(run->ents[i] = strdup(PQgetvalue(r, i, 0)))) { PQclear(r); return dp_err_set(e, DP_ENOMEM, "out of memory"); }
    run->nents++;
  }
  PQclear(r);
  return 0;
}

/* The entities of every run in the plan as a PostgreSQL array literal ({"a","b"}). */
static void entity_array(const rb_plan *p, dp_buf *b) {
  dp_buf_putc(b, '{');
  int first = 1;
  for (size_t i = 0; i < p->nruns; i++)
    for (size_t k = 0; k < p->runs[i].nents; k++) {
      dp_buf_printf(b, "%s\"%s\"", first ? "" : ",", p->runs[i].ents[k]); /* names: ^[a-z][a-z0-9_]*$ */
      first = 0;
    }
  dp_buf_putc(b, '}');
}

/* The later runs of the plan's entities (not rollbacks, not rolled back), newest first, into
 * *later (a PGresult the caller clears). */
static int later_runs(PGconn *a, const rb_plan *p, const char *target, PGresult **later, dp_err *e) {
  dp_buf arr = DP_BUF_INIT;
  entity_array(p, &arr);
  const char *pl[] = {p->system, target, arr.data};
  int rc = dp_pg_exec(a,
                      "SELECT r.run_id::text, string_agg(DISTINCT e.entity, ', ') FROM audit.system_run r "
                      "JOIN audit.entity_layer_run e ON e.run_id = r.run_id "
                      "WHERE r.system = $1 AND r.run_ts > (SELECT run_ts FROM audit.system_run WHERE run_id = $2::uuid) "
                      "AND r.trigger_kind <> 'rollback' AND r.rolled_back_by IS NULL "
                      "AND e.status NOT IN ('skipped', 'rolled_back') AND e.entity = ANY($3::text[]) "
                      "GROUP BY r.run_id, r.run_ts ORDER BY r.run_ts DESC",
                      3, pl, later, e);
  dp_buf_free(&arr);
  return rc;
}

/* The run asked for, checked, and (with --cascade) the later runs of its entities, newest first:
 * until no later run touches an entity of the plan that is not in it yet. */
static int find_runs(PGconn *a, const dp_rollback_opts *o, rb_plan *p, dp_err *e) {
  const char *pt[] = {o->run_id};
  PGresult *r = NULL;
  int rc = dp_pg_exec(a,
                      "SELECT system, trigger_kind, rolled_back_by::text, status FROM audit.system_run "
                      "WHERE run_id::text = lower($1)",
                      1, pt, &r, e);
  if (rc) return rc;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return dp_err_set(e, DP_ENOTFOUND, "no run %s in audit.system_run (`dp-engine runs` lists them)", o->run_id);
  }
  snprintf(p->system, sizeof p->system, "%s", PQgetvalue(r, 0, 0));
  if (strcmp(PQgetvalue(r, 0, 1), "rollback") == 0)
    rc = dp_err_set(e, DP_EINVAL, "run %s is a rollback; a rollback cannot be undone (run the export again)", o->run_id);
  else if (!PQgetisnull(r, 0, 2))
    rc = dp_err_set(e, DP_EINVAL, "run %s was rolled back already (by run %s)", o->run_id, PQgetvalue(r, 0, 2));
  PQclear(r);
  if (rc) return rc;
  if ((rc = add_run(a, p, o->run_id, e)) != 0) return rc;
  if (p->runs[0].nents == 0)
    return dp_err_set(e, DP_EINVAL, "run %s changed no entity of a system (a gold build is undone by building the "
                      "model again): nothing to undo", o->run_id);
  for (;;) {
    PGresult *later = NULL;
    if ((rc = later_runs(a, p, o->run_id, &later, e)) != 0) return rc;
    int n = PQntuples(later);
    if (n > 0 && !o->cascade) {
      dp_buf list = DP_BUF_INIT;
      for (int i = 0; i < n; i++)
        dp_buf_printf(&list, "%s%s (%s)", i ? ", " : "", PQgetvalue(later, i, 0), PQgetvalue(later, i, 1));
      rc = dp_err_set(e, DP_EINVAL,
                      "run %s is not the latest run of its entities: later runs %s; --cascade undoes them too "
                      "(newest first)",
                      o->run_id, list.data);
      dp_buf_free(&list);
      PQclear(later);
      return rc;
    }
    /* the plan is the target plus every later run found; rebuilt newest first when it grew */
    size_t before = p->nruns;
    for (int i = 0; i < n && rc == 0; i++) {
      int known = 0;
      for (size_t k = 0; k < p->nruns; k++) known |= strcmp(p->runs[k].id, PQgetvalue(later, i, 0)) == 0;
      if (!known) rc = add_run(a, p, PQgetvalue(later, i, 0), e);
    }
    PQclear(later);
    if (rc) return rc;
    if (p->nruns == before) break;
  }
  if (p->nruns > 1) { /* newest first: order by run_ts */
    dp_buf ids = DP_BUF_INIT;
    dp_buf_putc(&ids, '{');
    for (size_t i = 0; i < p->nruns; i++) dp_buf_printf(&ids, "%s%s", i ? "," : "", p->runs[i].id);
    dp_buf_putc(&ids, '}');
    const char *pi[] = {ids.data};
    rc = dp_pg_exec(a, "SELECT run_id::text FROM audit.system_run WHERE run_id = ANY($1::uuid[]) ORDER BY run_ts DESC",
                    1, pi, &r, e);
    dp_buf_free(&ids);
    if (rc) return rc;
    rb_run *sorted = calloc(p->nruns, sizeof *sorted);
    if (!sorted) { PQclear(r); return dp_err_set(e, DP_ENOMEM, "out of memory"); }
    for (int i = 0; i < PQntuples(r); i++)
      for (size_t k = 0; k < p->nruns; k++)
        if (strcmp(p->runs[k].id, PQgetvalue(r, i, 0)) == 0) sorted[i] = p->runs[k];
    PQclear(r);
    free(p->runs);
    p->runs = sorted;
  }
  return 0;
}

/* The metadata of every entity of the plan (bronze is rebuilt with it). */
static int load_entities(dp_engine *eng, rb_plan *p, dp_err *e) {
  int rc = dp_load_metadata(eng, e);
  if (rc) return rc;
  lua_State *L = eng->L;
  int meta_idx = lua_gettop(L);
  size_t cap = 0;
  for (size_t i = 0; i < p->nruns; i++) cap += p->runs[i].nents;
  p->ents = calloc(cap ? cap : 1, sizeof *p->ents);
  p->items = calloc(cap ? cap : 1, sizeof *p->items);
  if (!p->ents || !p->items) { lua_settop(L, meta_idx - 1); return dp_err_set(e, DP_ENOMEM, "out of memory"); }
  lua_getfield(L, meta_idx, "entities");
  for (size_t i = 0; i < p->nruns && rc == 0; i++) {
    for (size_t k = 0; k < p->runs[i].nents && rc == 0; k++) {
      const char *name = p->runs[i].ents[k];
      size_t at = p->nents;
      for (size_t j = 0; j < p->nents; j++)
        if (strcmp(p->ents[j].name, name) == 0) at = j;
      if (at == p->nents) {
        for (size_t j = 1; j <= lua_objlen(L, -1) && at == p->nents && rc == 0; j++) {
          lua_rawgeti(L, -1, (int)j);
          char *sys = dp_lua_strfield(L, -1, "system"), *nm = dp_lua_strfield(L, -1, "name");
          if (sys && nm && strcmp(sys, p->system) == 0 && strcmp(nm, name) == 0) {
            rc = dp_entity_from_lua(L, -1, &p->ents[p->nents], e);
            if (rc == 0) p->nents++;
          }
          free(sys);
          free(nm);
          lua_pop(L, 1);
        }
        if (rc == 0 && at == p->nents)
          rc = dp_err_set(e, DP_EMETA, "entity %s.%s of run %s is not in metadata any more: bronze cannot be rebuilt",
                          p->system, name, p->runs[i].id);
      }
      if (rc == 0) p->items[p->nitems++] = (rb_item){.run = i, .ent = at};
    }
  }
  lua_settop(L, meta_idx - 1);
  return rc;
}

/* ---------- silver ---------- */

/* silver."S__E<suffix>" when it exists (1), else 0. */
static int table_exists(PGconn *c, const dp_entity *ent, const char *suffix, dp_err *e) {
  char name[300];
  dp_buf q = DP_BUF_INIT;
  snprintf(name, sizeof name, "%s__%s%s", ent->system, ent->name, suffix);
  dp_pg_qualified(&q, "silver", name);
  const char *p[] = {q.data};
  PGresult *r = NULL;
  int rc = dp_pg_exec(c, "SELECT to_regclass($1) IS NOT NULL", 1, p, &r, e);
  if (rc == 0) rc = PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  dp_buf_free(&q);
  return rc;
}

/* Appends silver."S__E<suffix>". */
static void silver_table(dp_buf *b, const dp_entity *ent, const char *suffix) {
  char name[300];
  snprintf(name, sizeof name, "%s__%s%s", ent->system, ent->name, suffix);
  dp_pg_qualified(b, "silver", name);
}

/* What undoing the run does to silver: counts into it (the dry run stops there). Refuses a run
 * whose merge committed before rollback was possible (no before-image of its progress). */
static int silver_plan(PGconn *a, PGconn *c, const dp_entity *ent, const char *run, rb_item *it, dp_err *e) {
  const char *p[] = {run, ent->system, ent->name};
  int64_t merged = 0, undo = 0;
  int rc = query_count(a, "SELECT count(*) FROM audit.entity_layer_run WHERE run_id = $1::uuid AND system = $2 "
                          "AND entity = $3 AND layer = 'silver' AND status = 'succeeded'", 3, p, &merged, e);
  if (rc == 0)
    rc = query_count(c, "SELECT count(*) FROM dp.silver_undo WHERE run_id = $1::uuid AND system = $2 AND entity = $3 "
                        "AND what = 'entity_state'", 3, p, &undo, e);
  if (rc) return rc;
  if (merged && !undo)
    return dp_err_set(e, DP_EINVAL, "run %s merged %s.%s into silver before rollback was possible (migration 0012): "
                      "it cannot be undone", run, ent->system, ent->name);
  if (rc == 0)
    rc = query_count(c, "SELECT count(*) FROM dp.silver_undo WHERE run_id = $1::uuid AND system = $2 AND entity = $3 "
                        "AND what = 'row'", 3, p, &it->silver_restored, e);
  if (rc == 0)
    rc = query_count(c, "SELECT count(*) FROM dp.silver_undo WHERE run_id = $1::uuid AND system = $2 AND entity = $3 "
                        "AND what = 'entity_cursor'", 3, p, &undo, e);
  it->cursor_restored = undo > 0;
  int have = rc == 0 ? table_exists(c, ent, "", e) : rc;
  if (have < 0) return have;
  if (have) {
    dp_buf q = DP_BUF_INIT;
    dp_buf_puts(&q, "SELECT count(*) FROM ");
    silver_table(&q, ent, "");
    dp_buf_puts(&q, " WHERE _dp_run_id = $1::uuid");
    rc = query_count(c, q.data, 1, p, &it->silver_removed, e);
    dp_buf_reset(&q);
    dp_buf_puts(&q, "SELECT count(*) FROM ");
    silver_table(&q, ent, "__rejected");
    dp_buf_puts(&q, " WHERE _dp_run_id = $1::uuid");
    if (rc == 0 && (rc = table_exists(c, ent, "__rejected", e)) == 1)
      rc = query_count(c, q.data, 1, p, &it->rejects_removed, e);
    dp_buf_free(&q);
  }
  return rc < 0 ? rc : 0;
}

/* Puts a dp.<table> row (entity_state or entity_cursor) of the entity back from its
 * before-image: deleted when there was none. Nothing when the run did not change it. */
static int restore_state_row(PGconn *c, const char *table, const char *const *p, dp_err *e) {
  char sql[600];
  snprintf(sql, sizeof sql,
           "DELETE FROM dp.%s s WHERE s.system = $2 AND s.entity = $3 AND EXISTS (SELECT 1 FROM dp.silver_undo "
           "WHERE run_id = $1::uuid AND system = $2 AND entity = $3 AND what = '%s')",
           table, table);
  int rc = dp_pg_exec(c, sql, 3, p, NULL, e);
  if (rc) return rc;
  snprintf(sql, sizeof sql,
           "INSERT INTO dp.%s SELECT r.* FROM dp.silver_undo u, jsonb_populate_record(NULL::dp.%s, u.before) r "
           "WHERE u.run_id = $1::uuid AND u.system = $2 AND u.entity = $3 AND u.what = '%s' AND u.before IS NOT NULL",
           table, table, table);
  return dp_pg_exec(c, sql, 3, p, NULL, e);
}

/* Silver back to the state before the run, in one transaction: its versions deleted, the rows
 * it changed in place back from their before-images, its rejects deleted, entity_state and the
 * cursor back, the before-images dropped. */
static int silver_undo(PGconn *c, const dp_entity *ent, const char *run, rb_item *it, dp_err *e) {
  const char *p[] = {run, ent->system, ent->name};
  dp_buf q = DP_BUF_INIT;
  PGresult *r = NULL;
  int rc = dp_pg_begin(c, e);
  if (rc) return rc;
  int have = table_exists(c, ent, "", e), have_rej = have == 1 ? table_exists(c, ent, "__rejected", e) : 0;
  if (have < 0 || have_rej < 0) { rc = have < 0 ? have : have_rej; goto done; }
  if (have) {
    /* every column but the identity, as the table has them now */
    dp_buf_puts(&q, "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum), "
                    "string_agg('r.' || quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
                    "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attname <> '_dp_id'");
    dp_buf tname = DP_BUF_INIT;
    silver_table(&tname, ent, "");
    const char *pt[] = {tname.data};
    rc = dp_pg_exec(c, q.data, 1, pt, &r, e);
    if (rc) { dp_buf_free(&tname); goto done; }
    dp_buf_reset(&q);
    dp_buf_printf(&q, "WITH d AS (DELETE FROM %s WHERE _dp_run_id = $1::uuid RETURNING 1) SELECT count(*) FROM d",
                  tname.data);
    rc = query_count(c, q.data, 1, p, &it->silver_removed, e);
    dp_buf_reset(&q);
    dp_buf_printf(&q,
                  "WITH u AS (UPDATE %s t SET (%s) = (SELECT %s FROM jsonb_populate_record(NULL::%s, b.before) r) "
                  "FROM dp.silver_undo b WHERE b.run_id = $1::uuid AND b.system = $2 AND b.entity = $3 "
                  "AND b.what = 'row' AND t._dp_id = b.row_id RETURNING 1) SELECT count(*) FROM u",
                  tname.data, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), tname.data);
    PQclear(r);
    r = NULL;
    if (rc == 0) rc = query_count(c, q.data, 3, p, &it->silver_restored, e);
    if (rc == 0 && have_rej) {
      dp_buf_reset(&q);
      dp_buf_puts(&q, "WITH d AS (DELETE FROM ");
      silver_table(&q, ent, "__rejected");
      dp_buf_puts(&q, " WHERE _dp_run_id = $1::uuid RETURNING 1) SELECT count(*) FROM d");
      rc = query_count(c, q.data, 1, p, &it->rejects_removed, e);
    }
    dp_buf_free(&tname);
    if (rc) goto done;
  }
  if ((rc = restore_state_row(c, "entity_state", p, e)) != 0) goto done;
  if ((rc = restore_state_row(c, "entity_cursor", p, e)) != 0) goto done;
  rc = dp_pg_exec(c, "DELETE FROM dp.silver_undo WHERE run_id = $1::uuid AND system = $2 AND entity = $3", 3, p, NULL,
                  e);
  if (rc == 0) rc = dp_pg_commit(c, e);
done:
  if (rc) {
    dp_pg_rollback(c);
    dp_err_prefix(e, "silver %s.%s: ", ent->system, ent->name);
  }
  dp_buf_free(&q);
  return rc;
}

/* ---------- bronze ---------- */

/* {$or: [{_dp.run_id: run}, {_dp.deleted_run_id: run}]}: the documents the run wrote or marked. */
static void touched_filter(bson_t *f, const char *run) {
  bson_t or, a, b;
  BSON_APPEND_ARRAY_BEGIN(f, "$or", &or);
  BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &a);
  BSON_APPEND_UTF8(&a, "_dp.run_id", run);
  bson_append_document_end(&or, &a);
  BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &b);
  BSON_APPEND_UTF8(&b, "_dp.deleted_run_id", run);
  bson_append_document_end(&or, &b);
  bson_append_array_end(f, &or);
}

/* The ids of the documents the run touched: *ids (owned by the caller) and *n. */
static int touched_ids(mongoc_collection_t *coll, const char *run, uint8_t (**ids)[16], size_t *n, dp_err *e) {
  bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
  touched_filter(&f, run);
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "_id", 1);
  bson_append_document_end(&opts, &proj);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &f, &opts, NULL);
  const bson_t *doc;
  size_t cap = 0;
  int rc = 0;
  *ids = NULL;
  *n = 0;
  while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    uint8_t key[16];
    if (!bson_iter_init_find(&it, doc, "_id") || !dp_bronze_iter_id(&it, key)) continue;
    if (*n == cap) {
      cap = cap ? cap * 2 : 256;
      uint8_t(*g)[16] = realloc(*ids, cap * sizeof *g);
      if (!g) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); break; }
      *ids = g;
    }
    memcpy((*ids)[(*n)++], key, 16);
  }
  bson_error_t be;
  if (rc == 0 && mongoc_cursor_error(cur, &be))
    rc = dp_err_set(e, DP_EMONGO, "bronze %s: %s", mongoc_collection_get_name(coll), be.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(&f);
  bson_destroy(&opts);
  return rc;
}

/* Drops a collection; one that is not there is fine. */
static int drop_collection(mongoc_client_t *cli, const char *db, const char *name, dp_err *e) {
  mongoc_collection_t *c = mongoc_client_get_collection(cli, db, name);
  bson_error_t be;
  int rc = 0;
  if (!mongoc_collection_drop(c, &be) && !strstr(be.message, "ns not found") && be.code != 26)
    rc = dp_err_set(e, DP_EMONGO, "cannot drop %s: %s", name, be.message);
  mongoc_collection_destroy(c);
  return rc;
}

/* The scratch entity: the same columns, collection "S__E__rollback". name: its storage. */
static dp_entity scratch_entity(const dp_entity *ent, char *name, size_t cap) {
  dp_entity s = *ent;
  snprintf(name, cap, "%s__rollback", ent->name);
  s.name = name;
  return s;
}

/* Loads the entity's earlier bronze loads (succeeded, in run order, each with its own run id and
 * start) from their raw files into the scratch collection: bronze as it was before the run. */
static int build_scratch(dp_engine *eng, const dp_entity *ent, const char *run, dp_err *e) {
  char sname[300], cname[300];
  dp_entity s = scratch_entity(ent, sname, sizeof sname);
  dp_bronze_collection_name(&s, cname, sizeof cname);
  int rc = drop_collection(eng->mongo, eng->cfg.bronze_db, cname, e);
  if (rc) return rc;
  const char *p[] = {ent->system, ent->name, run};
  PGresult *r = NULL;
  rc = dp_pg_exec(eng->audit,
                  "SELECT run_id::text, floor(extract(epoch FROM run_ts) * 1000000)::bigint, details->>'file' "
                  "FROM audit.entity_layer_run WHERE system = $1 AND entity = $2 AND layer = 'bronze' "
                  "AND status = 'succeeded' AND details ? 'file' "
                  "AND run_ts < (SELECT run_ts FROM audit.system_run WHERE run_id = $3::uuid) ORDER BY run_ts",
                  3, p, &r, e);
  if (rc) return rc;
  for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
    dp_runinfo ri;
    const char *file = PQgetvalue(r, i, 2);
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", eng->cfg.data_dir, file);
    if ((rc = dp_runinfo_from_id(&ri, PQgetvalue(r, i, 0), e)) != 0) break;
    dp_runinfo_set_ts(&ri, strtoll(PQgetvalue(r, i, 1), NULL, 10));
    dp_bronze_io io = {NULL, NULL, 0, 0};
    dp_counts n;
    rc = dp_bronze_load(eng->mongo, eng->cfg.bronze_db, &s, &ri, path, file, &io, &n, e);
    if (rc)
      dp_err_prefix(e, "bronze %s.%s: cannot rebuild the state before run %s from the raw file %s of run %s: ",
                    ent->system, ent->name, run, file, PQgetvalue(r, i, 0));
  }
  PQclear(r);
  return rc;
}

/* Puts the touched documents back as the scratch collection has them (removed when it has none),
 * in batches; counts into it. */
static int put_back(mongoc_collection_t *real, mongoc_collection_t *scratch, uint8_t (*ids)[16], size_t n,
                    rb_item *it, dp_err *e) {
  int rc = 0;
  for (size_t at = 0; at < n && rc == 0; at += ID_BATCH) {
    size_t m = n - at < ID_BATCH ? n - at : ID_BATCH;
    char *found = calloc(m, 1);
    if (!found) return dp_err_set(e, DP_ENOMEM, "out of memory");
    bson_t f = BSON_INITIALIZER, in, idf;
    BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &idf);
    BSON_APPEND_ARRAY_BEGIN(&idf, "$in", &in);
    for (size_t i = 0; i < m; i++) {
      char ix[16];
      const char *k;
      bson_uint32_to_string((uint32_t)i, &k, ix, sizeof ix);
      dp_bronze_append_id(&in, k, ids[at + i]);
    }
    bson_append_array_end(&idf, &in);
    bson_append_document_end(&f, &idf);
    bson_t bopts = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&bopts, "ordered", false);
    mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(real, &bopts);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(scratch, &f, NULL, NULL);
    const bson_t *doc;
    bson_error_t be;
    while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
      bson_iter_t iter;
      uint8_t key[16];
      if (!bson_iter_init_find(&iter, doc, "_id") || !dp_bronze_iter_id(&iter, key)) continue;
      for (size_t i = 0; i < m; i++)
        if (memcmp(ids[at + i], key, 16) == 0) found[i] = 1;
      bson_t sel = BSON_INITIALIZER, ro = BSON_INITIALIZER;
      dp_bronze_append_id(&sel, "_id", key);
      BSON_APPEND_BOOL(&ro, "upsert", true);
      if (!mongoc_bulk_operation_replace_one_with_opts(bulk, &sel, doc, &ro, &be))
        rc = dp_err_set(e, DP_EMONGO, "bronze: %s", be.message);
      bson_destroy(&sel);
      bson_destroy(&ro);
      it->bronze_rebuilt++;
    }
    if (rc == 0 && mongoc_cursor_error(cur, &be)) rc = dp_err_set(e, DP_EMONGO, "bronze scratch: %s", be.message);
    for (size_t i = 0; i < m && rc == 0; i++) {
      if (found[i]) continue;
      bson_t sel = BSON_INITIALIZER;
      dp_bronze_append_id(&sel, "_id", ids[at + i]);
      if (!mongoc_bulk_operation_remove_one_with_opts(bulk, &sel, NULL, &be))
        rc = dp_err_set(e, DP_EMONGO, "bronze: %s", be.message);
      bson_destroy(&sel);
      it->bronze_removed++;
    }
    bson_t reply;
    if (rc == 0 && !mongoc_bulk_operation_execute(bulk, &reply, &be))
      rc = dp_err_set(e, DP_EMONGO, "bronze: cannot put documents back: %s", be.message);
    if (rc == 0) bson_destroy(&reply);
    mongoc_cursor_destroy(cur);
    mongoc_bulk_operation_destroy(bulk);
    bson_destroy(&f);
    bson_destroy(&bopts);
    free(found);
  }
  return rc;
}

/* Removes the entity's key file (written by the undone load or a later one) and the run's change
 * file: the next load reads the collection once. */
static void remove_bronze_files(dp_engine *eng, const dp_entity *ent, const char *run) {
  char dir[4200], path[4400];
  snprintf(dir, sizeof dir, "%s/bronze/%s/%s", eng->cfg.data_dir, ent->system, ent->name);
  snprintf(path, sizeof path, "%s/keys.idx", dir);
  unlink(path);
  dp_bronze_change_file(dir, run, path, sizeof path);
  unlink(path);
  strncat(path, ".part", sizeof path - strlen(path) - 1);
  unlink(path);
}

/* Bronze back to the state before the run (plan only: counts the touched documents). */
static int bronze_undo(dp_engine *eng, const dp_entity *ent, const char *run, int dry_run, rb_item *it, dp_err *e) {
  char cname[300], rname[300], sname[300], scname[300];
  dp_bronze_collection_name(ent, cname, sizeof cname);
  dp_bronze_rejects_collection_name(ent, rname, sizeof rname);
  dp_entity s = scratch_entity(ent, sname, sizeof sname);
  dp_bronze_collection_name(&s, scname, sizeof scname);
  mongoc_collection_t *real = mongoc_client_get_collection(eng->mongo, eng->cfg.bronze_db, cname);
  mongoc_collection_t *rej = mongoc_client_get_collection(eng->mongo, eng->cfg.bronze_db, rname);
  uint8_t(*ids)[16] = NULL;
  size_t n = 0;
  bson_error_t be;
  bson_t rf = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&rf, "_dp.run_id", run);
  int rc = touched_ids(real, run, &ids, &n, e);
  if (rc) goto cleanup;
  it->bronze_touched = (int64_t)n;
  if (dry_run) {
    int64_t k = mongoc_collection_count_documents(rej, &rf, NULL, NULL, NULL, &be);
    it->bronze_rejects_removed = k > 0 ? k : 0;
    goto cleanup;
  }
  if (n > 0) {
    if ((rc = build_scratch(eng, ent, run, e)) != 0) goto cleanup;
    mongoc_collection_t *scratch = mongoc_client_get_collection(eng->mongo, eng->cfg.bronze_db, scname);
    rc = put_back(real, scratch, ids, n, it, e);
    mongoc_collection_destroy(scratch);
    if (rc) goto cleanup;
  }
  bson_t reply;
  if (!mongoc_collection_delete_many(rej, &rf, NULL, &reply, &be)) {
    rc = dp_err_set(e, DP_EMONGO, "bronze %s: cannot delete the run's rejects: %s", rname, be.message);
    goto cleanup;
  }
  bson_iter_t ri;
  if (bson_iter_init_find(&ri, &reply, "deletedCount")) it->bronze_rejects_removed = bson_iter_as_int64(&ri);
  bson_destroy(&reply);
  remove_bronze_files(eng, ent, run);
cleanup:
  if (!dry_run && n > 0) { /* the scratch collections, whatever happened */
    dp_err tmp;
    char srname[300];
    dp_bronze_rejects_collection_name(&s, srname, sizeof srname);
    drop_collection(eng->mongo, eng->cfg.bronze_db, scname, &tmp);
    drop_collection(eng->mongo, eng->cfg.bronze_db, srname, &tmp);
  }
  free(ids);
  bson_destroy(&rf);
  mongoc_collection_destroy(real);
  mongoc_collection_destroy(rej);
  return rc;
}

/* ---------- raw ---------- */

/* Moves the run's raw files of the entity (RUN_ID.* beside the file the audit names: the data,
 * compressed or not, and the manifest) to DP_DATA_DIR/quarantine/RUN_ID/<same path>. */
static int raw_undo(dp_engine *eng, const dp_entity *ent, const char *run, int dry_run, rb_item *it, dp_err *e) {
  const char *p[] = {run, ent->system, ent->name};
  PGresult *r = NULL;
  int rc = dp_pg_exec(eng->audit,
                      "SELECT details->>'file' FROM audit.entity_layer_run WHERE run_id = $1::uuid AND system = $2 "
                      "AND entity = $3 AND layer = 'raw' AND details ? 'file'",
                      3, p, &r, e);
  if (rc) return rc;
  if (PQntuples(r) == 0) { PQclear(r); return 0; }
  char rel[4096], from[4400], to[4800], qdir[4800];
  snprintf(rel, sizeof rel, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  char *slash = strrchr(rel, '/');
  if (!slash) return 0;
  *slash = '\0';
  snprintf(from, sizeof from, "%s/%s", eng->cfg.data_dir, rel);
  snprintf(qdir, sizeof qdir, "%s/quarantine/%s/%s", eng->cfg.data_dir, run, rel);
  DIR *d = opendir(from);
  if (!d) return 0; /* gone already (retention, an earlier attempt) */
  size_t idlen = strlen(run);
  struct dirent *de;
  while (rc == 0 && (de = readdir(d)) != NULL) {
    if (strncmp(de->d_name, run, idlen) != 0 || de->d_name[idlen] != '.') continue;
    it->raw_files++;
    if (dry_run) continue;
    char src[8800];
    snprintf(src, sizeof src, "%s/%s", from, de->d_name);
    snprintf(to, sizeof to, "%s/%s", qdir, de->d_name);
    if ((rc = dp_mkdirs(qdir, e)) != 0) break;
    if (rename(src, to) != 0) rc = dp_err_set(e, DP_EIO, "raw: cannot move %s to %s: %s", src, to, strerror(errno));
  }
  closedir(d);
  return rc;
}

/* ---------- audit ---------- */

/* Marks the undone run's rows of the entity rolled back (their status kept in details). */
static int mark_rolled_back(PGconn *a, const char *run, const char *entity, const dp_runinfo *rb, dp_err *e) {
  const char *p[] = {run, entity, rb->id_str};
  return dp_pg_exec(a,
                    "UPDATE audit.entity_layer_run SET status = 'rolled_back', details = details || "
                    "jsonb_build_object('status_before_rollback', status, 'rolled_back_by', $3::text) "
                    "WHERE run_id = $1::uuid AND entity = $2 AND status NOT IN ('skipped', 'rolled_back')",
                    3, p, NULL, e);
}

static const char *LAYERS[] = {"raw", "bronze", "silver"};

/* The counts of entity k in layer l, summed over the plan's runs; *touched when any. */
static dp_counts layer_counts(const rb_plan *p, size_t k, int l, int *touched) {
  dp_counts n;
  memset(&n, 0, sizeof n);
  *touched = 0;
  for (size_t i = 0; i < p->nitems; i++) {
    const rb_item *it = &p->items[i];
    if (it->ent != k) continue;
    *touched = 1;
    if (l == 0) n.deleted += it->raw_files;
    if (l == 1) n.updated += it->bronze_rebuilt, n.deleted += it->bronze_removed + it->bronze_rejects_removed;
    if (l == 2) n.updated += it->silver_restored, n.deleted += it->silver_removed + it->rejects_removed;
  }
  n.in = n.updated + n.deleted;
  return n;
}

/* "rollback of A" or "rollback of A (cascade, newest first: C, B, A)". */
static void detail_text(const rb_plan *p, dp_buf *b) {
  dp_buf_printf(b, "rollback of %s", p->runs[p->nruns - 1].id);
  if (p->nruns < 2) return;
  dp_buf_puts(b, " (cascade, newest first: ");
  for (size_t i = 0; i < p->nruns; i++) dp_buf_printf(b, "%s%s", i ? ", " : "", p->runs[i].id);
  dp_buf_putc(b, ')');
}

/* {"rolled_back":["A",...]} */
static void details_json(const rb_plan *p, dp_buf *b) {
  dp_buf_puts(b, "{\"rolled_back\":[");
  for (size_t i = 0; i < p->nruns; i++) dp_buf_printf(b, "%s\"%s\"", i ? "," : "", p->runs[i].id);
  dp_buf_puts(b, "]}");
}

/* ---------- the report ---------- */

static void report(const rb_plan *p, const dp_rollback_opts *o, const char *status, const char *gold, int json) {
  if (json) {
    dp_buf b = DP_BUF_INIT;
    dp_buf_puts(&b, "{\"rollback_run_id\":");
    if (o->dry_run) dp_buf_puts(&b, "null");
    else dp_buf_printf(&b, "\"%s\"", p->rb.id_str);
    dp_buf_printf(&b, ",\"dry_run\":%s,\"status\":\"%s\",\"system\":", o->dry_run ? "true" : "false", status);
    dp_json_put_string(&b, p->system, strlen(p->system));
    dp_buf_puts(&b, ",\"runs\":[");
    for (size_t i = 0; i < p->nruns; i++) {
      dp_buf_printf(&b, "%s{\"run_id\":\"%s\",\"entities\":[", i ? "," : "", p->runs[i].id);
      int first = 1;
      for (size_t k = 0; k < p->nitems; k++) {
        const rb_item *it = &p->items[k];
        if (it->run != i) continue;
        dp_buf_printf(&b, "%s{\"entity\":", first ? "" : ",");
        first = 0;
        dp_json_put_string(&b, p->ents[it->ent].name, strlen(p->ents[it->ent].name));
        dp_buf_printf(&b,
                      ",\"silver_versions_removed\":%" PRId64 ",\"silver_rows_restored\":%" PRId64
                      ",\"silver_rejects_removed\":%" PRId64 ",\"bronze_documents\":%" PRId64
                      ",\"bronze_rebuilt\":%" PRId64 ",\"bronze_removed\":%" PRId64
                      ",\"bronze_rejects_removed\":%" PRId64 ",\"raw_files_quarantined\":%" PRId64
                      ",\"cursor_restored\":%s}",
                      it->silver_removed, it->silver_restored, it->rejects_removed, it->bronze_touched,
                      it->bronze_rebuilt, it->bronze_removed, it->bronze_rejects_removed, it->raw_files,
                      it->cursor_restored ? "true" : "false");
      }
      dp_buf_puts(&b, "]}");
    }
    dp_buf_puts(&b, "],\"gold\":");
    dp_json_put_string(&b, gold, strlen(gold));
    dp_buf_puts(&b, "}\n");
    fwrite(b.data, 1, b.len, stdout);
    dp_buf_free(&b);
  } else {
    if (o->dry_run) printf("rollback of %s (dry run, nothing changed): system %s\n", o->run_id, p->system);
    else printf("rollback %s of %s: %s (system %s)\n", p->rb.id_str, o->run_id, status, p->system);
    for (size_t i = 0; i < p->nruns; i++) {
      printf("  run %s\n", p->runs[i].id);
      for (size_t k = 0; k < p->nitems; k++) {
        const rb_item *it = &p->items[k];
        if (it->run != i) continue;
        printf("    %-24s silver: %" PRId64 " versions removed, %" PRId64 " rows restored, %" PRId64
               " rejects removed%s\n",
               p->ents[it->ent].name, it->silver_removed, it->silver_restored, it->rejects_removed,
               it->cursor_restored ? ", cursor restored" : "");
        if (o->dry_run)
          printf("    %-24s bronze: %" PRId64 " documents to rebuild, %" PRId64 " rejects removed; raw: %" PRId64
                 " files to quarantine\n",
                 "", it->bronze_touched, it->bronze_rejects_removed, it->raw_files);
        else
          printf("    %-24s bronze: %" PRId64 " documents rebuilt, %" PRId64 " removed, %" PRId64
                 " rejects removed; raw: %" PRId64 " files quarantined\n",
                 "", it->bronze_rebuilt, it->bronze_removed, it->bronze_rejects_removed, it->raw_files);
      }
    }
    printf("  gold: %s\n", gold);
  }
  fflush(stdout);
}

/* ---------- the rollback ---------- */

/* Undoes every (run, entity) of the plan, newest run first; each undone run is marked. */
static int undo_all(dp_engine *eng, rb_plan *p, dp_err *e) {
  int rc = 0;
  for (size_t i = 0; i < p->nruns && rc == 0; i++) {
    const char *run = p->runs[i].id;
    for (size_t k = 0; k < p->nitems && rc == 0; k++) {
      rb_item *it = &p->items[k];
      if (it->run != i) continue;
      const dp_entity *ent = &p->ents[it->ent];
      memset(&it->silver_removed, 0, sizeof *it - offsetof(rb_item, silver_removed));
      if ((rc = silver_plan(eng->audit, eng->data, ent, run, it, e)) != 0) break; /* refusals first */
      if ((rc = bronze_undo(eng, ent, run, 0, it, e)) != 0) break;
      if ((rc = silver_undo(eng->data, ent, run, it, e)) != 0) break;
      if ((rc = raw_undo(eng, ent, run, 0, it, e)) != 0) break;
      rc = mark_rolled_back(eng->audit, run, ent->name, &p->rb, e);
      if (rc == 0)
        dp_log(DP_LOG_INFO, "rollback %s.%s of run %s: silver %" PRId64 " removed, %" PRId64 " restored; bronze %" PRId64
               " rebuilt, %" PRId64 " removed; raw %" PRId64 " quarantined", ent->system, ent->name, run,
               it->silver_removed, it->silver_restored, it->bronze_rebuilt, it->bronze_removed, it->raw_files);
    }
    if (rc == 0) {
      const char *pr[] = {run, p->rb.id_str};
      rc = dp_pg_exec(eng->audit, "UPDATE audit.system_run SET rolled_back_by = $2::uuid WHERE run_id = $1::uuid", 2,
                      pr, NULL, e);
    }
    if (rc) dp_err_prefix(e, "undoing run %s: ", run);
  }
  return rc;
}

/* The rollback's audit rows: the system run, a layer row per layer and an entity row per entity
 * and layer. start: "running" rows; else their end with the counts. */
static int audit_rows(PGconn *a, const rb_plan *p, int start, const char *status, const char *error, dp_err *e) {
  dp_buf details = DP_BUF_INIT;
  details_json(p, &details);
  int rc = 0;
  for (int l = 0; l < 3 && rc == 0; l++) {
    int ok = 0;
    for (size_t k = 0; k < p->nents && rc == 0; k++) {
      int touched;
      dp_counts n = layer_counts(p, k, l, &touched);
      if (!touched) continue;
      ok++;
      rc = start ? dp_audit_entity_start(a, &p->rb, p->system, p->ents[k].name, LAYERS[l], "running", NULL, e)
                 : dp_audit_entity_end(a, &p->rb, p->ents[k].name, LAYERS[l], status, &n, error, details.data, e);
    }
    if (rc == 0)
      rc = start ? dp_audit_layer_start(a, &p->rb, p->system, LAYERS[l], e)
                 : dp_audit_layer_end(a, &p->rb, LAYERS[l], strcmp(status, "succeeded") ? "failed" : "succeeded",
                                      error ? 0 : ok, error ? ok : 0, 0, e);
  }
  dp_buf_free(&details);
  return rc;
}

int dp_rollback(dp_engine *eng, const dp_rollback_opts *o, int *failed, dp_err *e) {
  rb_plan p;
  memset(&p, 0, sizeof p);
  int rc, locked = 0, started = 0;
  *failed = 0;
  const char *gold = o->dry_run ? "would rebuild the models that depend on the system" : "not rebuilt";
  dp_buf detail = DP_BUF_INIT;
  if ((rc = dp_engine_open_pg(eng, e)) != 0 || (rc = dp_engine_open_mongo(eng, e)) != 0) goto cleanup;
  {
    /* the system of the run, for its lock */
    const char *pt[] = {o->run_id};
    PGresult *r = NULL;
    if ((rc = dp_pg_exec(eng->audit, "SELECT system FROM audit.system_run WHERE run_id::text = lower($1)", 1, pt, &r,
                         e)) != 0)
      goto cleanup;
    if (PQntuples(r) == 1) {
      snprintf(p.system, sizeof p.system, "%s", PQgetvalue(r, 0, 0));
      rc = dp_audit_lock_system(eng->audit, p.system, e);
      locked = rc == 0;
    }
    PQclear(r);
    if (rc) goto cleanup;
    int crashed = 0;
    if (locked && (rc = dp_audit_mark_crashed(eng->audit, p.system, &crashed, e)) != 0) goto cleanup;
  }
  if ((rc = find_runs(eng->audit, o, &p, e)) != 0) goto cleanup;
  if ((rc = load_entities(eng, &p, e)) != 0) goto cleanup;
  for (size_t k = 0; k < p.nitems; k++) {
    rb_item *it = &p.items[k];
    const char *run = p.runs[it->run].id;
    if ((rc = silver_plan(eng->audit, eng->data, &p.ents[it->ent], run, it, e)) != 0) goto cleanup;
    if ((rc = bronze_undo(eng, &p.ents[it->ent], run, 1, it, e)) != 0) goto cleanup;
    if ((rc = raw_undo(eng, &p.ents[it->ent], run, 1, it, e)) != 0) goto cleanup;
  }
  if (o->dry_run) {
    report(&p, o, "dry run", gold, o->json);
    goto cleanup;
  }

  /* the rollback's own run */
  detail_text(&p, &detail);
  dp_runinfo_new(&p.rb);
  if ((rc = dp_audit_stamp_run(eng->audit, p.system, &p.rb, e)) != 0) goto cleanup;
  if ((rc = dp_audit_system_start(eng->audit, &p.rb, p.system, "rollback", detail.data, NULL, DP_VERSION, e)) != 0)
    goto cleanup;
  started = 1;
  if ((rc = audit_rows(eng->audit, &p, 1, NULL, NULL, e)) != 0) goto cleanup;
  dp_log(DP_LOG_INFO, "run %s of %s started: %s", p.rb.id_str, p.system, detail.data);
  rc = undo_all(eng, &p, e);
  {
    dp_err ae;
    const char *status = rc ? "failed" : "succeeded";
    int arc = audit_rows(eng->audit, &p, 0, status, rc ? e->msg : NULL, &ae);
    if (arc == 0)
      arc = dp_audit_system_end(eng->audit, &p.rb, status, rc ? 0 : (int)p.nents, rc ? (int)p.nents : 0, 0,
                                rc ? e->msg : NULL, &ae);
    started = 0;
    if (rc == 0 && arc) { rc = arc; *e = ae; }
  }
  if (rc) {
    *failed = 1;
    report(&p, o, "failed", gold, o->json);
    goto cleanup;
  }
  dp_audit_unlock_system(eng->audit, p.system);
  locked = 0;
  /* gold reads silver: the models that depend on the system, each its own audited run */
  {
    int gfailed = 0;
    dp_err ge;
    dp_err_clear(&ge);
    dp_gold_opts go = {.trigger = "rollback", .trigger_detail = detail.data};
    /* with --json stdout holds the one report: the gold runs' own lines go to stderr */
    int saved = -1;
    fflush(stdout);
    if (o->json && (saved = dup(STDOUT_FILENO)) >= 0) dup2(STDERR_FILENO, STDOUT_FILENO);
    int grc = dp_gold_run(eng, NULL, 0, p.system, &go, &gfailed, &ge);
    fflush(stdout);
    if (saved >= 0) {
      dup2(saved, STDOUT_FILENO);
      close(saved);
    }
    if (grc == 0) {
      gold = "rebuilt the models that depend on the system";
    } else {
      gold = "failed (see the gold runs)";
      *failed = 1;
      rc = dp_err_set(e, ge.code ? ge.code : DP_EIO, "the data was rolled back, but rebuilding gold failed: %s", ge.msg);
    }
  }
  report(&p, o, "succeeded", gold, o->json);

cleanup:
  if (started) {
    dp_err tmp;
    *failed = 1;
    dp_audit_system_end(eng->audit, &p.rb, "failed", 0, (int)p.nents, 0, e->msg, &tmp);
  }
  if (locked) dp_audit_unlock_system(eng->audit, p.system);
  dp_buf_free(&detail);
  plan_free(&p);
  return rc;
}
