/* cmd_prefect.c - dp-engine prefect deploy: a process work pool and one deployment per system
 * (docs/orchestration.md). */
#include "config.h"
#include "cli.h"
#include "json.h"
#include "log.h"
#include "luabridge.h"
#include "prefect.h"
#include "run.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *PREFECT_USAGE =
    "usage: dp-engine prefect deploy [SYSTEM]... [--with-schedules] [--pool NAME]\n"
    "\n"
    "Creates, through PREFECT_API_URL, the Prefect work pool NAME (type process, default\n"
    "dp-engine; DP_PREFECT_WORK_POOL) when it is missing, and one deployment per system (every\n"
    "enabled system when none is named): deployment SYSTEM of flow dp-engine.SYSTEM, whose\n"
    "command is `<this binary> run SYSTEM`. Start a worker with\n"
    "  prefect worker start --pool dp-engine --type process\n"
    "in an environment that has the engine's DP_* variables; the engine then attaches to the\n"
    "flow run the worker hands it (PREFECT__FLOW_RUN_ID) and honours its parameters\n"
    "(entities, layers, full_refresh).\n"
    "  --with-schedules  also the system's schedule triggers as Prefect schedules (by default\n"
    "                    `dp-engine serve` owns schedules; do not use both for one system)\n"
    "Exit codes: 0 deployed, 1 Prefect refused or could not be reached, 2 usage or configuration.\n";

/* The parameters a deployment's run may carry (shown as a form in Prefect's UI). */
static const char *PARAM_SCHEMA =
    "{\"title\":\"Parameters\",\"type\":\"object\",\"properties\":{"
    "\"entities\":{\"title\":\"entities\",\"description\":\"only these entities (empty: every enabled one)\","
    "\"type\":\"array\",\"items\":{\"type\":\"string\"},\"position\":0},"
    "\"layers\":{\"title\":\"layers\",\"description\":\"raw | raw, bronze | raw, bronze, silver (empty: all)\","
    "\"type\":\"array\",\"items\":{\"type\":\"string\",\"enum\":[\"raw\",\"bronze\",\"silver\"]},\"position\":1},"
    "\"full_refresh\":{\"title\":\"full_refresh\",\"description\":\"ignore the stored delta cursor\","
    "\"type\":\"boolean\",\"default\":false,\"position\":2}},\"required\":[]}";

/* Appends the system's schedule triggers as Prefect schedules. */
static void put_schedules(const dp_snap_target *sys, dp_buf *b) {
  int n = 0;
  for (size_t i = 0; i < sys->ntriggers; i++) {
    const dp_trigger *t = &sys->triggers[i];
    if (t->kind != DP_TRIG_SCHEDULE || !t->cron) continue;
    const char *tz = t->timezone ? t->timezone : "UTC";
    dp_buf_puts(b, n++ ? "," : "");
    dp_buf_puts(b, "{\"active\":true,\"schedule\":{\"cron\":");
    dp_json_put_string(b, t->cron, strlen(t->cron));
    dp_buf_puts(b, ",\"timezone\":");
    dp_json_put_string(b, tz, strlen(tz));
    dp_buf_puts(b, "}}");
  }
}

static int ensure_pool(dp_prefect_client *c, const char *pool, dp_err *e) {
  char path[400];
  snprintf(path, sizeof path, "/work_pools/%s", pool);
  dp_buf body = DP_BUF_INIT, req = DP_BUF_INIT;
  long st;
  dp_err ge;
  int rc = dp_prefect_call(c, "GET", path, NULL, &st, &body, &ge);
  if (rc == 0) goto done;
  if (st != 404) { rc = dp_err_set(e, DP_EIO, "%s", ge.msg); goto done; }
  /* An empty base job template: the first process worker fills in its default one. */
  dp_buf_puts(&req, "{\"name\":");
  dp_json_put_string(&req, pool, strlen(pool));
  dp_buf_puts(&req, ",\"type\":\"process\",\"description\":\"dp-engine runs (dp-engine prefect deploy)\"}");
  rc = dp_prefect_call_retry(c, "POST", "/work_pools/", req.data, &st, &body, e);
  if (rc == 0) printf("work pool %s created (type process)\n", pool);
done:
  dp_buf_free(&body);
  dp_buf_free(&req);
  return rc;
}

static int deploy_system(dp_prefect_client *c, const dp_snap_target *sys, const char *pool, int with_schedules,
                         const char *exe, dp_err *e) {
  const char *system = sys->name;
  char flow[300], flow_id[37], id[37];
  snprintf(flow, sizeof flow, "dp-engine.%s", system);
  int rc = dp_prefect_flow_id(c, flow, flow_id, e);
  if (rc) return rc;
  dp_buf req = DP_BUF_INIT, body = DP_BUF_INIT, cmd = DP_BUF_INIT;
  dp_buf_printf(&cmd, "%s run %s", exe, system);
  dp_buf_puts(&req, "{\"name\":");
  dp_json_put_string(&req, system, strlen(system));
  dp_buf_printf(&req, ",\"flow_id\":\"%s\",\"work_pool_name\":", flow_id);
  dp_json_put_string(&req, pool, strlen(pool));
  dp_buf_puts(&req, ",\"job_variables\":{\"command\":");
  dp_json_put_string(&req, cmd.data, cmd.len);
  dp_buf_puts(&req, "},\"parameters\":{},\"enforce_parameter_schema\":false,\"parameter_openapi_schema\":");
  dp_buf_puts(&req, PARAM_SCHEMA);
  dp_buf_puts(&req, ",\"tags\":[\"dp-engine\"],\"description\":");
  char desc[400];
  snprintf(desc, sizeof desc, "dp-engine run %s (raw, bronze, silver)", system);
  dp_json_put_string(&req, desc, strlen(desc));
  dp_buf_puts(&req, ",\"schedules\":[");
  if (with_schedules) put_schedules(sys, &req);
  dp_buf_puts(&req, "]}");
  long st;
  rc = dp_prefect_call_retry(c, "POST", "/deployments/", req.data, &st, &body, e);
  if (rc == 0) rc = dp_prefect_json_str(body.data, body.len, "id", id, sizeof id, e);
  if (rc == 0) printf("deployment %s/%s: %s (pool %s, command: %s)\n", flow, system, id, pool, cmd.data);
  dp_buf_free(&req);
  dp_buf_free(&body);
  dp_buf_free(&cmd);
  return rc;
}

int dp_cmd_prefect(dp_engine *eng, int argc, char **argv) {
  if (argc == 0 || dp_cli_wants_help(argc, argv)) { fputs(PREFECT_USAGE, argc ? stdout : stderr); return argc ? DP_EXIT_OK : DP_EXIT_USAGE; }
  if (strcmp(argv[0], "deploy") != 0) return dp_cli_usage_error(PREFECT_USAGE, "unknown prefect command: %s", argv[0]);
  int with_schedules = 0;
  const char *pool = dp_config_get("DP_PREFECT_WORK_POOL");
  const char **names = calloc((size_t)argc, sizeof *names);
  int nnames = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--with-schedules") == 0) with_schedules = 1;
    else if (strcmp(argv[i], "--pool") == 0 && i + 1 < argc) pool = argv[++i];
    else if (argv[i][0] == '-') { free(names); return dp_cli_usage_error(PREFECT_USAGE, "unknown option: %s", argv[i]); }
    else names[nnames++] = argv[i];
  }
  dp_err e;
  dp_err_clear(&e);
  dp_prefect_client *c = dp_prefect_client_from_env(10000, &e);
  if (!c) {
    free(names);
    if (!e.code) dp_err_set(&e, DP_ECONFIG, "PREFECT_API_URL is not set");
    return dp_cli_fail_config(&e);
  }
  dp_snapshot *meta;
  int rc = dp_load_metadata(eng, &meta, &e);
  if (rc) { free(names); dp_prefect_client_free(c); return dp_cli_fail_config(&e); }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) snprintf(exe, sizeof exe, "dp-engine");
  else exe[n] = '\0';
  int exit_code = DP_EXIT_OK, deployed = 0;
  rc = ensure_pool(c, pool, &e);
  if (rc) {
    fprintf(stderr, "dp-engine prefect deploy: work pool %s: %s\n", pool, e.msg);
    exit_code = DP_EXIT_RUN_FAILED;
    goto done;
  }
  for (int k = 0; k < nnames; k++) { /* every named system must exist */
    if (!dp_snapshot_find(meta, names[k], 0)) {
      fprintf(stderr, "dp-engine prefect deploy: no system named %s\n", names[k]);
      exit_code = DP_EXIT_USAGE;
      goto done;
    }
  }
  for (size_t i = 0; i < meta->nsystems; i++) {
    const dp_snap_target *sys = &meta->targets[i];
    int wanted = nnames == 0 ? sys->enabled : 0;
    for (int k = 0; k < nnames; k++) wanted |= strcmp(names[k], sys->name) == 0;
    if (!wanted) continue;
    dp_err de;
    dp_err_clear(&de);
    if (deploy_system(c, sys, pool, with_schedules, exe, &de) != 0) {
      fprintf(stderr, "dp-engine prefect deploy: %s: %s\n", sys->name, de.msg);
      exit_code = DP_EXIT_RUN_FAILED;
    } else {
      deployed++;
    }
  }
  if (exit_code == DP_EXIT_OK)
    printf("%d deployment(s); start a worker: prefect worker start --pool %s --type process\n", deployed, pool);
done:
  dp_snapshot_unref(meta);
  free(names);
  dp_prefect_client_free(c);
  return exit_code;
}
