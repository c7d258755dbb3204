/* goldrun.c - the gold run driver (see goldrun.h). */
#include "goldrun.h"
#include "preflight.h"
#include "version.h"
#include "audit.h"
#include "gold.h"
#include "log.h"
#include "luabridge.h"
#include "pg.h"
#include "prefect.h"
#include "run.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The statement timeout of gold scripts' queries when DP_GOLD_STATEMENT_TIMEOUT is not set. */
#define GOLD_TIMEOUT_DEFAULT_MS 300000L

/* DP_GOLD_STATEMENT_TIMEOUT: seconds (a decimal number, e.g. 300 or 0.5; 0 turns the timeout
 * off). Returns 0 with *ms set, or DP_ECONFIG naming the variable. */
static int gold_timeout(const dp_config *cfg, long *ms, dp_err *e) {
  const char *v = cfg->gold_statement_timeout;
  *ms = GOLD_TIMEOUT_DEFAULT_MS;
  if (!v || !*v) return 0;
  char *end = NULL;
  double s = strtod(v, &end);
  if (end == v || *end != '\0' || !(s >= 0) || s > 86400.0 * 24)
    return dp_err_set(e, DP_ECONFIG,
                      "DP_GOLD_STATEMENT_TIMEOUT: expected a number of seconds between 0 (no timeout) and "
                      "2073600, got \"%.40s\"", v);
  *ms = (long)(s * 1000.0 + 0.5);
  if (s > 0 && *ms == 0) *ms = 1;
  return 0;
}


/* Cuts a Lua traceback off a message (it goes to the debug log). */
static void strip_traceback(dp_err *e, const char *model) {
  char *tb = strstr(e->msg, "\nstack traceback:");
  if (tb) {
    dp_log(DP_LOG_DEBUG, "gold %s: %s", model, e->msg);
    *tb = '\0';
  }
}

/* A gold run: what dp_gold_run's stages share. */
typedef struct gold_state {
  dp_engine *eng;
  const char *const *models;    /* the models named (system NULL) */
  int nmodels;
  const char *system;           /* the models after this system's entities, or NULL */
  const dp_gold_opts *o;
  long timeout_ms;              /* DP_GOLD_STATEMENT_TIMEOUT */
  dp_snapshot *meta;            /* the validated metadata (a reference) */
  char **plan;                  /* the models to run, upstream first */
  size_t nplan;
  const char **failed;          /* models that failed or were skipped (borrowed from plan) */
  size_t nfailed;
} gold_state;

/* One model's audited run. */
typedef struct model_run {
  const char *name, *trigger;
  int named;                    /* named on the command line (or by serve) */
  const char *up;               /* the failed upstream model it skips for, or NULL */
  dp_runinfo run;
  dp_counts n;
  dp_prefect *pf;               /* the model run's Prefect reporter (docs/orchestration.md), or NULL */
  char pf_report[1024], pf_id[37];
  dp_err le;                    /* the build's error (or why it was skipped) */
  int lrc;
} model_run;

/* Builds one model inside its audited run. Returns 0 or the build error in le (not audit errors). */
static int build_model(gold_state *g, const char *name, const dp_runinfo *run, dp_counts *n, dp_err *le) {
  dp_engine *eng = g->eng;
  dp_gold_builder b;
  int rc;
  PGconn *gc = NULL; /* owned: the build's own connection, so that nothing a script's query
                      * changes in its session outlives the build */
  memset(&b, 0, sizeof b);
  const dp_snap_target *t = dp_snapshot_find(g->meta, name, 1);
  if (!t) return dp_err_set(le, DP_EINVAL, "no gold model named \"%s\"", name);
  if (!(gc = dp_pg_connect(eng->cfg.postgres_url, le))) return le->code;
  const char *mat = t->materialization ? t->materialization : "table";
  rc = dp_gold_inputs_exist(eng->audit, t->depends_on, t->ndepends, name, le);
  if (rc == 0) rc = dp_gold_begin(&b, gc, &t->model, mat, run->id_str, run->ts_str, g->timeout_ms, le);
  if (rc == 0) {
    b.full_refresh = g->o && g->o->full_refresh;
    rc = dp_bridge_gold_build(eng->L, name, &b, run->id_str, run->ts_str, eng->cfg.postgres_url, le);
  }
  if (rc == 0) rc = dp_gold_finish(&b, n, le);
  if (rc) dp_gold_abort(&b); /* the previous gold table stays */
  PQfinish(gc);
  return rc;
}

/* The failed model the model depends on, or NULL. */
static const char *upstream_failed(const gold_state *g, const char *name) {
  const dp_snap_target *t = dp_snapshot_find(g->meta, name, 1);
  for (size_t k = 0; t && k < t->ndepends; k++)
    for (size_t f = 0; f < g->nfailed; f++)
      if (strcmp(g->failed[f], t->depends_on[k]) == 0) return g->failed[f];
  return NULL;
}

static const char *ok_status(int skip, int lrc) { return !skip && !lrc ? "succeeded" : "failed"; }

/* The plan: which models run, upstream first. An unknown model is a usage error. */
static int plan_models(gold_state *g, dp_err *e) {
  int rc = dp_bridge_gold_plan(g->eng->L, g->models, g->nmodels, g->system, &g->plan, &g->nplan, e);
  if (rc == DP_ELUA) {
    strip_traceback(e, "plan");
    e->code = rc = DP_EINVAL;
  }
  if (rc) return rc;
  g->failed = calloc(g->nplan ? g->nplan : 1, sizeof *g->failed);
  return g->failed ? 0 : dp_err_set(e, DP_ENOMEM, "out of memory");
}

/* The model run's start: runs left running marked crashed, its id, Prefect, its audit rows. */
static int begin_model_run(gold_state *g, model_run *m, dp_err *e) {
  dp_engine *eng = g->eng;
  const dp_gold_opts *o = g->o;
  int crashed = 0, rc;
  if ((rc = dp_audit_mark_crashed(eng->audit, m->name, &crashed, e)) != 0) return rc;
  if (m->named && o && o->run_id) {
    if ((rc = dp_runinfo_from_id(&m->run, o->run_id, e)) != 0) return rc;
  } else {
    dp_runinfo_new(&m->run);
  }
  char flow[300];
  snprintf(flow, sizeof flow, "dp-engine.gold.%s", m->name);
  dp_prefect_flow pfl = {flow, m->name, m->trigger, NULL, m->named && o && o->run_id, 0,
                         m->named && o ? o->prefect_flow_run_id : NULL};
  m->pf = dp_prefect_begin(&pfl, &m->run, m->pf_report, sizeof m->pf_report);
  if (m->pf) snprintf(m->pf_id, sizeof m->pf_id, "%s", dp_prefect_flow_run_id(m->pf));
  const char *detail = (m->named || g->system) && o ? o->trigger_detail : NULL;
  if ((rc = dp_audit_system_start(eng->audit, &m->run, m->name, m->trigger, detail, g->meta->hash, DP_VERSION, e)) != 0)
    return rc;
  if ((m->pf || m->pf_report[0]) &&
      (rc = dp_audit_set_prefect(eng->audit, &m->run, m->pf ? m->pf_id : NULL,
                                 m->pf_report[0] ? m->pf_report : NULL, e)) != 0)
    return rc;
  dp_log_scope_run(m->run.id_str, m->name);
  dp_log_event(DP_LOG_INFO, "run_started", NULL, "gold run %s of %s started (%s)", m->run.id_str, m->name, m->trigger);
  dp_log_scope_step("gold", m->name);
  if (o && o->ran && *o->nran < o->ran_cap) snprintf(o->ran[(*o->nran)++], 37, "%s", m->run.id_str);
  return dp_audit_layer_start(eng->audit, &m->run, m->name, "gold", e);
}

/* The build (or the skip) between the model's entity audit rows. */
static int build_stage(gold_state *g, model_run *m, dp_err *e) {
  dp_engine *eng = g->eng;
  if (m->up) {
    dp_err_set(&m->le, DP_EINVAL, "skipped: upstream gold model %s failed", m->up);
    return dp_audit_entity_start(eng->audit, &m->run, m->name, m->name, "gold", "skipped", m->le.msg, e);
  }
  int rc = dp_audit_entity_start(eng->audit, &m->run, m->name, m->name, "gold", "running", NULL, e);
  if (rc) return rc;
  int ptask = dp_prefect_task_begin(m->pf, m->name, "gold");
  m->lrc = build_model(g, m->name, &m->run, &m->n, &m->le);
  if (m->lrc) strip_traceback(&m->le, m->name);
  dp_prefect_task_end(m->pf, ptask, m->lrc == 0, m->le.msg);
  return dp_audit_entity_end(eng->audit, &m->run, m->name, "gold", m->lrc ? "failed" : "succeeded", &m->n,
                             m->lrc ? m->le.msg : NULL, "{}", e);
}

/* The model run's end: its audit rows, the log and the summary line. */
static int end_model_run(gold_state *g, model_run *m, dp_err *e) {
  dp_engine *eng = g->eng;
  int skip = m->up != NULL, ok = !skip && !m->lrc;
  const char *status = skip ? "skipped" : m->lrc ? "failed" : "succeeded";
  const char *sys_status = ok ? "succeeded" : "failed";
  int rc = dp_audit_layer_end(eng->audit, &m->run, "gold", sys_status, ok, !skip && m->lrc, skip, e);
  if (rc) return rc;
  rc = dp_audit_system_end(eng->audit, &m->run, sys_status, ok, !skip && m->lrc, skip, ok ? NULL : m->le.msg, e);
  if (ok) {
    dp_log_event(DP_LOG_INFO, "layer_succeeded", &m->n, "gold %s: %" PRId64 " in, %" PRId64 " inserted, %" PRId64 " updated, %" PRId64
           " deleted, %" PRId64 " unchanged", m->name, m->n.in, m->n.inserted, m->n.updated, m->n.deleted,
           m->n.unchanged);
  } else {
    g->failed[g->nfailed++] = m->name;
    dp_log_event(DP_LOG_ERROR, "layer_failed", &m->n, "gold %s %s: %s", m->name, status, m->le.msg);
  }
  dp_log_event(ok ? DP_LOG_INFO : DP_LOG_ERROR, "run_finished", NULL, "gold run %s of %s %s", m->run.id_str, m->name,
               sys_status);
  int quiet = g->o && g->o->quiet;
  if (!quiet)
    printf("gold run %s of %s (%s): %s  in %" PRId64 " inserted %" PRId64 " updated %" PRId64 " deleted %" PRId64
         " unchanged %" PRId64 "\n", m->run.id_str, m->name, m->trigger, status, m->n.in, m->n.inserted,
         m->n.updated, m->n.deleted, m->n.unchanged);
  if (!ok && !quiet) printf("  %s: %s\n", m->name, m->le.msg);
  fflush(stdout);
  return rc;
}

/* Plan entry i: locked, begun, built, ended, reported to Prefect, unlocked. Returns 0 or an
 * error that ends the whole gold run (audit, or the lock serve must retry). */
static int run_model(gold_state *g, size_t i, int *run_failed, dp_err *e) {
  dp_engine *eng = g->eng;
  const dp_gold_opts *o = g->o;
  model_run m;
  memset(&m, 0, sizeof m);
  m.name = g->plan[i];
  m.trigger = g->system ? "after" : "dependency";
  for (int k = 0; k < g->nmodels && !g->system; k++)
    if (strcmp(g->models[k], m.name) == 0) m.named = 1;
  if (m.named) m.trigger = o && o->trigger ? o->trigger : "manual";
  if (o && o->only_named && !m.named) return 0;
  dp_err_clear(&m.le);
  if (dp_audit_lock_system(eng->audit, m.name, &m.le) != 0) {
    if (o && o->only_named && m.le.code == DP_EBUSY) {
      *run_failed = 1;
      return dp_err_set(e, DP_EBUSY, "%s", m.le.msg);
    }
    dp_log(DP_LOG_ERROR, "gold %s: %s", m.name, m.le.msg);
    printf("gold %s: failed: %s\n", m.name, m.le.msg);
    g->failed[g->nfailed++] = m.name;
    return 0;
  }
  m.up = upstream_failed(g, m.name);
  int rc = begin_model_run(g, &m, e);
  if (rc == 0) rc = build_stage(g, &m, e);
  if (rc == 0) rc = end_model_run(g, &m, e);
  if (m.pf) {
    dp_err pe;
    dp_prefect_end(m.pf, rc ? "failed" : ok_status(m.up != NULL, m.lrc), rc ? e->msg : m.le.msg, m.pf_report,
                   sizeof m.pf_report);
    if (dp_audit_set_prefect(eng->audit, &m.run, m.pf_id, m.pf_report[0] ? m.pf_report : NULL, &pe) != 0)
      dp_log(DP_LOG_WARN, "prefect: cannot record the reporting state in the audit: %s", pe.msg);
  }
  dp_audit_unlock_system(eng->audit, m.name);
  dp_log_scope_run(NULL, NULL);
  return rc;
}

int dp_gold_run(dp_engine *eng, const char *const *models, int nmodels, const char *system, const dp_gold_opts *o,
                int *run_failed, dp_err *e) {
  gold_state g = {.eng = eng, .models = models, .nmodels = nmodels, .system = system, .o = o};
  *run_failed = 0;
  int rc = gold_timeout(&eng->cfg, &g.timeout_ms, e);
  if (rc == 0) rc = dp_load_metadata(eng, &g.meta, e);
  if (rc == 0) rc = plan_models(&g, e);
  if (rc == 0 && g.nplan == 0) dp_log(DP_LOG_INFO, "no gold model depends on system %s", system ? system : "?");
  if (rc == 0 && g.nplan > 0) rc = dp_engine_open_migrated(eng, e);
  for (size_t i = 0; i < g.nplan && rc == 0; i++) rc = run_model(&g, i, run_failed, e);
  if (rc == 0 && g.nfailed) {
    *run_failed = 1;
    rc = dp_err_set(e, DP_EIO, "%zu of %zu gold models failed or were skipped", g.nfailed, g.nplan);
  }
  for (size_t i = 0; i < g.nplan; i++) free(g.plan[i]);
  free(g.plan);
  free(g.failed);
  dp_snapshot_unref(g.meta);
  return rc;
}
