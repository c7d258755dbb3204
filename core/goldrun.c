/* goldrun.c - the gold run driver (see goldrun.h). */
#include "config.h"
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
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The statement timeout of gold scripts' queries when DP_GOLD_STATEMENT_TIMEOUT is not set. */
#define GOLD_TIMEOUT_DEFAULT_MS 300000L

/* DP_GOLD_STATEMENT_TIMEOUT: seconds (a decimal number, e.g. 300 or 0.5; 0 turns the timeout
 * off). Returns 0 with *ms set, or DP_ECONFIG naming the variable. */
static int gold_timeout_from_env(long *ms, dp_err *e) {
  const char *v = dp_config_env("DP_GOLD_STATEMENT_TIMEOUT");
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


/* log(level, message) for gold scripts and the loader. */
static int l_log(lua_State *L) {
  const char *lv = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  dp_log_level level = DP_LOG_INFO;
  dp_log_level_parse(lv, &level);
  dp_log(level, "%s", msg);
  return 0;
}

/* Calls engine.<fn>(...) with the nargs values on the stack (function not pushed yet). */
static int call_engine(lua_State *L, const char *fn, int nargs, int nres, dp_err *e) {
  lua_getglobal(L, "__dp_engine");
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_insert(L, -1 - nargs);
  return dp_lua_pcall(L, nargs, nres, e);
}

/* Cuts a Lua traceback off a message (it goes to the debug log). */
static void strip_traceback(dp_err *e, const char *model) {
  char *tb = strstr(e->msg, "\nstack traceback:");
  if (tb) {
    dp_log(DP_LOG_DEBUG, "gold %s: %s", model, e->msg);
    *tb = '\0';
  }
}

/* Builds one model inside its audited run. Returns 0 or the build error in le (not audit errors). */
static int build_model(dp_engine *eng, int meta_idx, const char *name, const dp_runinfo *run, long timeout_ms,
                       dp_counts *n, dp_err *le) {
  lua_State *L = eng->L;
  int top = lua_gettop(L);
  dp_entity ent;
  dp_gold_builder b;
  int have_ent = 0, rc;
  char *mat = NULL;
  PGconn *gc = NULL; /* owned: the build's own connection, so that nothing a script's query
                      * changes in its session outlives the build */
  memset(&b, 0, sizeof b);
  lua_pushvalue(L, meta_idx);
  lua_pushstring(L, name);
  if ((rc = call_engine(L, "gold_model", 2, 1, le)) != 0) goto cleanup;
  mat = dp_lua_strfield(L, -1, "materialization");
  if ((rc = dp_gold_inputs_exist(eng->audit, L, lua_gettop(L), name, le)) != 0) goto cleanup;
  if ((rc = dp_entity_from_lua(L, -1, &ent, le)) != 0) goto cleanup;
  have_ent = 1;
  lua_pop(L, 1);
  if (!(gc = dp_pg_connect(eng->cfg.postgres_url, le))) { rc = le->code; goto cleanup; }
  if ((rc = dp_gold_begin(&b, gc, &ent, mat ? mat : "table", run->id_str, run->ts_str, timeout_ms, le)) != 0)
    goto cleanup;
  dp_gold_lua_push(L, &b);
  int ud = lua_gettop(L);
  lua_pushvalue(L, meta_idx);
  lua_pushstring(L, name);
  lua_pushvalue(L, ud);
  lua_pushstring(L, run->id_str);
  lua_pushstring(L, run->ts_str);
  lua_pushstring(L, eng->cfg.postgres_url);
  lua_pushcfunction(L, l_log);
  rc = call_engine(L, "gold_build", 7, 0, le);
  dp_gold_lua_detach(L, ud);
  if (rc) {
    dp_gold_abort(&b); /* the previous gold table stays */
    goto cleanup;
  }
  rc = dp_gold_finish(&b, n, le);
cleanup:
  if (rc) dp_gold_abort(&b);
  if (gc) PQfinish(gc);
  if (have_ent) dp_entity_free(&ent);
  free(mat);
  lua_settop(L, top);
  return rc;
}

/* True when the model depends on one of the failed models. */
static int upstream_failed(lua_State *L, int meta_idx, const char *name, char **failed, size_t nfailed,
                           const char **which) {
  int top = lua_gettop(L), hit = 0;
  lua_getfield(L, meta_idx, "gold");
  for (size_t i = 1; i <= lua_objlen(L, -1) && !hit; i++) {
    lua_rawgeti(L, -1, (int)i);
    lua_getfield(L, -1, "name");
    int me = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), name) == 0;
    lua_pop(L, 1);
    if (me) {
      lua_getfield(L, -1, "depends_on");
      for (size_t k = 1; k <= lua_objlen(L, -1) && !hit; k++) {
        lua_rawgeti(L, -1, (int)k);
        const char *d = lua_tostring(L, -1);
        for (size_t f = 0; d && f < nfailed && !hit; f++)
          if (strcmp(failed[f], d) == 0) { hit = 1; *which = failed[f]; }
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_settop(L, top);
  return hit;
}

static const char *ok_status(int skip, int lrc) { return !skip && !lrc ? "succeeded" : "failed"; }

int dp_gold_run(dp_engine *eng, const char *const *models, int nmodels, const char *system, const dp_gold_opts *o,
                int *run_failed, dp_err *e) {
  *run_failed = 0;
  long timeout_ms;
  int rc = gold_timeout_from_env(&timeout_ms, e);
  if (rc) return rc;
  if ((rc = dp_load_metadata(eng, e)) != 0) return rc;
  lua_State *L = eng->L;
  int meta_idx = lua_gettop(L);
  char **plan = NULL, **failed = NULL;
  size_t nplan = 0, nfailed = 0, nok = 0;
  char *meta_hash = dp_lua_strfield(L, meta_idx, "hash");

  /* the plan */
  lua_pushvalue(L, meta_idx);
  lua_createtable(L, nmodels, 0);
  for (int i = 0; i < nmodels; i++) {
    lua_pushstring(L, models[i]);
    lua_rawseti(L, -2, i + 1);
  }
  if (system) lua_pushstring(L, system);
  else lua_pushnil(L);
  if ((rc = call_engine(L, "gold_plan", 3, 1, e)) != 0) {
    strip_traceback(e, "plan");
    e->code = rc = DP_EINVAL; /* an unknown model: a usage error */
    goto cleanup;
  }
  nplan = lua_objlen(L, -1);
  plan = calloc(nplan ? nplan : 1, sizeof *plan);
  failed = calloc(nplan ? nplan : 1, sizeof *failed);
  if (!plan || !failed) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); goto cleanup; }
  for (size_t i = 0; i < nplan; i++) {
    lua_rawgeti(L, -1, (int)i + 1);
    plan[i] = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (nplan == 0) {
    dp_log(DP_LOG_INFO, "no gold model depends on system %s", system ? system : "?");
    goto cleanup;
  }
  if ((rc = dp_engine_open_migrated(eng, e)) != 0) goto cleanup;

  for (size_t i = 0; i < nplan; i++) {
    const char *name = plan[i];
    const char *trigger = system ? "after" : "dependency";
    int named = 0;
    for (int k = 0; k < nmodels && !system; k++)
      if (strcmp(models[k], name) == 0) named = 1;
    if (named) trigger = o && o->trigger ? o->trigger : "manual";
    if (o && o->only_named && !named) continue;
    dp_err le;
    dp_err_clear(&le);
    if (dp_audit_lock_system(eng->audit, name, &le) != 0) {
      if (o && o->only_named && le.code == DP_EBUSY) {
        rc = dp_err_set(e, DP_EBUSY, "%s", le.msg);
        *run_failed = 1;
        goto cleanup;
      }
      dp_log(DP_LOG_ERROR, "gold %s: %s", name, le.msg);
      printf("gold %s: failed: %s\n", name, le.msg);
      failed[nfailed++] = plan[i];
      continue;
    }
    int crashed = 0;
    dp_prefect *pf = NULL; /* the model run's Prefect reporter (docs/orchestration.md), or NULL */
    char pf_report[1024] = "", pf_id[37] = "";
    dp_runinfo run;
    dp_counts n;
    memset(&n, 0, sizeof n);
    const char *up = NULL;
    int skip = upstream_failed(L, meta_idx, name, failed, nfailed, &up);
    if ((rc = dp_audit_mark_crashed(eng->audit, name, &crashed, e)) != 0) goto unlock;
    if (named && o && o->run_id) {
      if ((rc = dp_runinfo_from_id(&run, o->run_id, e)) != 0) goto unlock;
    } else {
      dp_runinfo_new(&run);
    }
    {
      char flow[300];
      snprintf(flow, sizeof flow, "dp-engine.gold.%s", name);
      dp_prefect_flow pfl = {flow, name, trigger, NULL, named && o && o->run_id, 0,
                             named && o ? o->prefect_flow_run_id : NULL};
      pf = dp_prefect_begin(&pfl, &run, pf_report, sizeof pf_report);
      if (pf) snprintf(pf_id, sizeof pf_id, "%s", dp_prefect_flow_run_id(pf));
    }
    if ((rc = dp_audit_system_start(eng->audit, &run, name, trigger, named && o ? o->trigger_detail : NULL, meta_hash,
                                    DP_VERSION, e)) != 0)
      goto unlock;
    if ((pf || pf_report[0]) &&
        (rc = dp_audit_set_prefect(eng->audit, &run, pf ? pf_id : NULL, pf_report[0] ? pf_report : NULL, e)) != 0)
      goto unlock;
    dp_log_scope_run(run.id_str, name);
    dp_log_scope_step("gold", name);
    if (o && o->ran && *o->nran < o->ran_cap) snprintf(o->ran[(*o->nran)++], 37, "%s", run.id_str);
    if ((rc = dp_audit_layer_start(eng->audit, &run, name, "gold", e)) != 0) goto unlock;
    const char *status;
    int lrc = 0;
    if (skip) {
      dp_err_set(&le, DP_EINVAL, "skipped: upstream gold model %s failed", up);
      status = "skipped";
      rc = dp_audit_entity_start(eng->audit, &run, name, name, "gold", "skipped", le.msg, e);
    } else {
      if ((rc = dp_audit_entity_start(eng->audit, &run, name, name, "gold", "running", NULL, e)) != 0) goto unlock;
      int ptask = dp_prefect_task_begin(pf, name, "gold");
      lrc = build_model(eng, meta_idx, name, &run, timeout_ms, &n, &le);
      if (lrc) strip_traceback(&le, name);
      dp_prefect_task_end(pf, ptask, lrc == 0, le.msg);
      status = lrc ? "failed" : "succeeded";
      rc = dp_audit_entity_end(eng->audit, &run, name, "gold", status, &n, lrc ? le.msg : NULL, "{}", e);
    }
    if (rc) goto unlock;
    int ok = !skip && !lrc;
    const char *sys_status = ok ? "succeeded" : "failed";
    if ((rc = dp_audit_layer_end(eng->audit, &run, "gold", sys_status, ok, !skip && lrc, skip, e)) != 0) goto unlock;
    rc = dp_audit_system_end(eng->audit, &run, sys_status, ok, !skip && lrc, skip, ok ? NULL : le.msg, e);
    if (ok) {
      nok++;
      dp_log_event(DP_LOG_INFO, "layer_succeeded", &n, "gold %s: %" PRId64 " in, %" PRId64 " inserted, %" PRId64 " updated, %" PRId64
             " deleted, %" PRId64 " unchanged", name, n.in, n.inserted, n.updated, n.deleted, n.unchanged);
    } else {
      failed[nfailed++] = plan[i];
      dp_log_event(DP_LOG_ERROR, "layer_failed", &n, "gold %s %s: %s", name, status, le.msg);
    }
    if (!(o && o->quiet))
      printf("gold run %s of %s (%s): %s  in %" PRId64 " inserted %" PRId64 " updated %" PRId64 " deleted %" PRId64
           " unchanged %" PRId64 "\n", run.id_str, name, trigger, status, n.in, n.inserted, n.updated, n.deleted,
           n.unchanged);
    if (!ok && !(o && o->quiet)) printf("  %s: %s\n", name, le.msg);
    fflush(stdout);
  unlock:
    if (pf) {
      dp_err pe;
      dp_prefect_end(pf, rc ? "failed" : ok_status(skip, lrc), rc ? e->msg : le.msg, pf_report, sizeof pf_report);
      if (dp_audit_set_prefect(eng->audit, &run, pf_id, pf_report[0] ? pf_report : NULL, &pe) != 0)
        dp_log(DP_LOG_WARN, "prefect: cannot record the reporting state in the audit: %s", pe.msg);
    }
    dp_audit_unlock_system(eng->audit, name);
    dp_log_scope_run(NULL, NULL);
    if (rc) goto cleanup;
  }
  if (nfailed) {
    *run_failed = 1;
    rc = dp_err_set(e, DP_EIO, "%zu of %zu gold models failed or were skipped", nfailed, nplan);
  }

cleanup:
  for (size_t i = 0; i < nplan; i++) free(plan ? plan[i] : NULL);
  free(plan);
  free(failed);
  free(meta_hash);
  lua_settop(L, meta_idx - 1);
  (void)nok;
  return rc;
}
