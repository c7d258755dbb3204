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
#include "rollback_int.h"
#include "cli.h"
#include "version.h"
#include "audit.h"
#include "bronze.h"
#include "buf.h"
#include "goldrun.h"
#include "json.h"
#include "log.h"
#include "snapshot.h"
#include "metaload.h"
#include "pg.h"
#include "rawfile.h"
#include "run.h"
#include "silver.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


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
  dp__rb_item *items;
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
  dp_snapshot *meta = NULL;
  int rc = dp_load_metadata(eng, &meta, e);
  if (rc) return rc;
  size_t cap = 0;
  for (size_t i = 0; i < p->nruns; i++) cap += p->runs[i].nents;
  p->ents = calloc(cap ? cap : 1, sizeof *p->ents);
  p->items = calloc(cap ? cap : 1, sizeof *p->items);
  if (!p->ents || !p->items) rc = dp_err_set(e, DP_ENOMEM, "out of memory");
  for (size_t i = 0; i < p->nruns && rc == 0; i++) {
    for (size_t k = 0; k < p->runs[i].nents && rc == 0; k++) {
      const char *name = p->runs[i].ents[k];
      size_t at = p->nents;
      for (size_t j = 0; j < p->nents; j++)
        if (strcmp(p->ents[j].name, name) == 0) at = j;
      if (at == p->nents) {
        const dp_entity *ent = dp_snapshot_entity(meta, p->system, name);
        if (!ent)
          rc = dp_err_set(e, DP_EMETA, "entity %s.%s of run %s is not in metadata any more: bronze cannot be rebuilt",
                          p->system, name, p->runs[i].id);
        else if (dp_entity_copy(&p->ents[p->nents], ent) != 0)
          rc = dp_err_set(e, DP_ENOMEM, "out of memory");
        else
          p->nents++;
      }
      if (rc == 0) p->items[p->nitems++] = (dp__rb_item){.run = i, .ent = at};
    }
  }
  dp_snapshot_unref(meta);
  return rc;
}

/* ---------- raw ---------- */

/* Moves the run's raw files of the entity (RUN_ID.* beside the file the audit names: the data,
 * compressed or not, and the manifest) to DP_DATA_DIR/quarantine/RUN_ID/<same path>. */
static int raw_undo(dp_engine *eng, const dp_entity *ent, const char *run, int dry_run, dp__rb_item *it, dp_err *e) {
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
    int data = strstr(de->d_name, ".manifest.json") == NULL; /* counted: the data files, not manifests */
    if (dry_run) {
      it->raw_files += data;
      continue;
    }
    char src[8800];
    if ((rc = dp_path_join(src, sizeof src, from, de->d_name, e)) != 0 ||
        (rc = dp_path_join(to, sizeof to, qdir, de->d_name, e)) != 0 || (rc = dp_mkdirs(qdir, e)) != 0)
      break;
    if (rename(src, to) != 0) rc = dp_err_set(e, DP_EIO, "raw: cannot move %s to %s: %s", src, to, strerror(errno));
    else it->raw_files += data;
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
    const dp__rb_item *it = &p->items[i];
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
        const dp__rb_item *it = &p->items[k];
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
        const dp__rb_item *it = &p->items[k];
        if (it->run != i) continue;
        char c1[48], c2[48], c3[48], c4[48], c5[48];
#define RB_N(buf, v, one, many) dp_cli_count(buf, sizeof buf, (size_t)(v), one, many)
        printf("    %-24s silver: %s removed, %s restored, %s removed%s\n", p->ents[it->ent].name,
               RB_N(c1, it->silver_removed, "version", "versions"), RB_N(c2, it->silver_restored, "row", "rows"),
               RB_N(c3, it->rejects_removed, "reject", "rejects"), it->cursor_restored ? ", cursor restored" : "");
        if (o->dry_run)
          printf("    %-24s bronze: %s to rebuild, %s removed; raw: %s to quarantine\n", "",
                 RB_N(c1, it->bronze_touched, "document", "documents"),
                 RB_N(c2, it->bronze_rejects_removed, "reject", "rejects"), RB_N(c3, it->raw_files, "file", "files"));
        else
          printf("    %-24s bronze: %s rebuilt, %s removed, %s removed; raw: %s quarantined\n", "",
                 RB_N(c1, it->bronze_rebuilt, "document", "documents"), RB_N(c2, it->bronze_removed, "document", "documents"),
                 RB_N(c4, it->bronze_rejects_removed, "reject", "rejects"), RB_N(c5, it->raw_files, "file", "files"));
#undef RB_N
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
      dp__rb_item *it = &p->items[k];
      if (it->run != i) continue;
      const dp_entity *ent = &p->ents[it->ent];
      memset(&it->silver_removed, 0, sizeof *it - offsetof(dp__rb_item, silver_removed));
      if ((rc = dp__rollback_silver_plan(eng->audit, eng->data, ent, run, it, e)) != 0) break; /* refusals first */
      if ((rc = dp__rollback_bronze(eng, ent, run, 0, it, e)) != 0) break;
      if ((rc = dp__rollback_silver(eng->data, ent, run, p->rb.id_str, it, e)) != 0) break;
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

/* The rollback under way: the plan and where the stages got. */
typedef struct rollback {
  dp_engine *eng;
  const dp_rollback_opts *o;
  rb_plan p;
  int locked, started;
  dp_buf detail;    /* the audit's trigger_detail */
  const char *gold; /* what happened to gold, for the report */
} rollback;

/* The system of the run, locked (no run of it meanwhile); runs it left running marked crashed.
 * An unknown run is left to find_runs to report. */
static int lock_system(rollback *r, dp_err *e) {
  int rc = dp_engine_open_migrated(r->eng, e);
  if (rc == 0) rc = dp_engine_open_mongo(r->eng, e);
  if (rc) return rc;
  const char *pt[] = {r->o->run_id};
  PGresult *q = NULL;
  rc = dp_pg_exec(r->eng->audit, "SELECT system FROM audit.system_run WHERE run_id::text = lower($1)", 1, pt, &q, e);
  if (rc == 0 && PQntuples(q) == 1) {
    snprintf(r->p.system, sizeof r->p.system, "%s", PQgetvalue(q, 0, 0));
    rc = dp_audit_lock_system(r->eng->audit, r->p.system, e);
    r->locked = rc == 0;
  }
  PQclear(q);
  int crashed = 0;
  if (rc == 0 && r->locked && !r->o->dry_run) rc = dp_audit_mark_crashed(r->eng->audit, r->p.system, &crashed, e);
  return rc;
}

static int find_plan_runs(rollback *r, dp_err *e) { return find_runs(r->eng->audit, r->o, &r->p, e); }
static int find_plan_entities(rollback *r, dp_err *e) { return load_entities(r->eng, &r->p, e); }

/* What each (run, entity) would undo, and the refusals, before anything changes. */
static int plan_counts(rollback *r, dp_err *e) {
  int rc = 0;
  for (size_t k = 0; k < r->p.nitems && rc == 0; k++) {
    dp__rb_item *it = &r->p.items[k];
    const dp_entity *ent = &r->p.ents[it->ent];
    const char *run = r->p.runs[it->run].id;
    if ((rc = dp__rollback_silver_plan(r->eng->audit, r->eng->data, ent, run, it, e)) == 0 &&
        (rc = dp__rollback_bronze(r->eng, ent, run, 1, it, e)) == 0)
      rc = raw_undo(r->eng, ent, run, 1, it, e);
  }
  return rc;
}

/* The rollback's own run: audit.system_run (trigger rollback) and its layer and entity rows. */
static int start_audit(rollback *r, dp_err *e) {
  detail_text(&r->p, &r->detail);
  dp_runinfo_new(&r->p.rb);
  int rc = dp_audit_stamp_run(r->eng->audit, r->p.system, &r->p.rb, e);
  if (rc == 0)
    rc = dp_audit_system_start(r->eng->audit, &r->p.rb, r->p.system, "rollback", r->detail.data, NULL, DP_VERSION, e);
  if (rc) return rc;
  r->started = 1;
  dp_log(DP_LOG_INFO, "run %s of %s started: %s", r->p.rb.id_str, r->p.system, r->detail.data);
  return audit_rows(r->eng->audit, &r->p, 1, NULL, NULL, e);
}

static int undo_plan(rollback *r, dp_err *e) { return undo_all(r->eng, &r->p, e); }

/* Ends the rollback's run: succeeded when rc is 0, else failed with e's message. Returns rc, or
 * the audit's error. */
static int end_audit(rollback *r, int rc, dp_err *e) {
  dp_err ae;
  const char *status = rc ? "failed" : "succeeded";
  int n = (int)r->p.nents;
  int arc = audit_rows(r->eng->audit, &r->p, 0, status, rc ? e->msg : NULL, &ae);
  if (arc == 0) arc = dp_audit_system_end(r->eng->audit, &r->p.rb, status, rc ? 0 : n, rc ? n : 0, 0, rc ? e->msg : NULL, &ae);
  if (rc == 0 && arc) {
    *e = ae;
    return arc;
  }
  return rc;
}

/* Gold reads silver: the models that depend on the system, each its own audited run. With
 * --json stdout holds the one report: the gold runs' own lines go to stderr. */
static int rebuild_gold(rollback *r, dp_err *e) {
  int gfailed = 0, saved = -1;
  dp_err ge;
  dp_err_clear(&ge);
  /* trigger "after" (a run of the system's data, as after any run; trigger_kind "rollback" is the
   * rollback's own run), and the detail says which rollback */
  dp_buf why = DP_BUF_INIT;
  dp_buf_printf(&why, "rebuilt by rollback %s (%s)", r->p.rb.id_str, r->detail.data ? r->detail.data : "");
  dp_gold_opts go = {.trigger_detail = why.data, .full_refresh = 1}; /* no row of the undone run stays */
  fflush(stdout);
  if (r->o->json && (saved = dup(STDOUT_FILENO)) >= 0) dup2(STDERR_FILENO, STDOUT_FILENO);
  int rc = dp_gold_run(r->eng, NULL, 0, r->p.system, &go, &gfailed, &ge);
  dp_buf_free(&why);
  fflush(stdout);
  if (saved >= 0) {
    dup2(saved, STDOUT_FILENO);
    close(saved);
  }
  if (rc == 0) {
    r->gold = "rebuilt the models that depend on the system";
    return 0;
  }
  r->gold = "failed (see the gold runs)";
  return dp_err_set(e, ge.code ? ge.code : DP_EIO, "the data was rolled back, but rebuilding gold failed: %s", ge.msg);
}

/* The algorithm, in order; a dry run stops after the plan. */
static const struct {
  int (*fn)(rollback *, dp_err *);
  int dry_run; /* also in a dry run */
} STAGES[] = {
    {lock_system, 1},        /* the run's system, locked */
    {find_plan_runs, 1},     /* the run, refusals, --cascade's later runs newest first */
    {find_plan_entities, 1}, /* their entities' metadata */
    {plan_counts, 1},        /* what each (run, entity) undoes; refusals */
    {start_audit, 0},        /* the rollback's own run */
    {undo_plan, 0},          /* newest run first: bronze, silver, raw, marks */
};

int dp_rollback(dp_engine *eng, const dp_rollback_opts *o, int *failed, dp_err *e) {
  rollback r = {.eng = eng, .o = o, .detail = DP_BUF_INIT, .gold = "not rebuilt"};
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < sizeof STAGES / sizeof STAGES[0]; i++)
    if (STAGES[i].dry_run || !o->dry_run) rc = STAGES[i].fn(&r, e);
  if (r.started) rc = end_audit(&r, rc, e);
  if (r.locked) dp_audit_unlock_system(eng->audit, r.p.system);
  *failed = r.started && rc != 0;
  const char *status = o->dry_run ? "dry run" : rc ? "failed" : "succeeded";
  if (rc == 0 && !o->dry_run && (rc = rebuild_gold(&r, e)) != 0) *failed = 1;
  if (o->dry_run) r.gold = "would rebuild the models that depend on the system";
  if (r.started || (rc == 0 && o->dry_run)) report(&r.p, o, status, r.gold, o->json);
  dp_buf_free(&r.detail);
  plan_free(&r.p);
  return rc;
}
