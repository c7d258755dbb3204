/* cmd_gold.c - dp-engine gold run MODEL... */
#include "cli.h"
#include "goldrun.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dp_cli_gold_json(PGconn *c, const dp_cli_gold_ids *g, dp_buf *out, dp_err *e) {
  const char **ids = calloc(g->n ? g->n : 1, sizeof *ids);
  if (!ids) return dp_err_set(e, DP_ENOMEM, "out of memory");
  for (size_t i = 0; i < g->n; i++) ids[i] = g->ids[i];
  int rc = dp_cli_runs_json(c, ids, g->n, out, e);
  free(ids);
  return rc;
}

static const char *GOLD_USAGE =
    "usage: dp-engine gold run MODEL [MODEL]... [--full-refresh] [--json]\n"
    "\n"
    "Builds gold models (metadata/gold.json, scripts in gold/): first every gold model they depend\n"
    "on, directly or not, upstream first, then the models named. Each model is its own audited\n"
    "run (dp-engine runs --system MODEL). A `table` model is rebuilt and swapped in atomically; an\n"
    "`incremental` model is merged by primary key. A script's SQL runs as the role dp_gold (read\n"
    "silver and gold only), one query at a time, stopped after DP_GOLD_STATEMENT_TIMEOUT seconds\n"
    "(default 300). See docs/gold.md.\n"
    "  --full-refresh  an incremental model also loses the rows its build did not produce (its\n"
    "                  table becomes what the build made, as a table model's does)\n"
    "  --json  {\"status\", \"models\": [...]}: every model run as the audit holds it (runs show --json)\n"
    "Exit codes: 0 every model succeeded, 1 a model failed, 2 usage or configuration error.\n";

int dp_cmd_gold(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(GOLD_USAGE, stdout); return DP_EXIT_OK; }
  if (argc < 1 || strcmp(argv[0], "run") != 0)
    return dp_cli_usage_error(GOLD_USAGE, "%s", argc < 1 ? "gold needs a subcommand: run" : "unknown gold subcommand");
  if (argc < 2) return dp_cli_usage_error(GOLD_USAGE, "%s", "gold run needs a MODEL");
  const char **models = calloc((size_t)argc, sizeof *models);
  int n = 0, json = 0, full_refresh = 0;
  if (!models) return DP_EXIT_RUN_FAILED;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) json = 1;
    else if (strcmp(argv[i], "--full-refresh") == 0) full_refresh = 1;
    else if (argv[i][0] == '-') { free(models); return dp_cli_usage_error(GOLD_USAGE, "unknown option: %s", argv[i]); }
    else models[n++] = argv[i];
  }
  if (n == 0) { free(models); return dp_cli_usage_error(GOLD_USAGE, "%s", "gold run needs a MODEL"); }
  dp_err e;
  dp_err_clear(&e);
  int failed = 0;
  dp_cli_gold_ids *g = calloc(1, sizeof *g);
  if (!g) { free(models); return DP_EXIT_RUN_FAILED; }
  dp_gold_opts o = {.quiet = json, .full_refresh = full_refresh, .ran = g->ids, .ran_cap = DP_CLI_GOLD_MAX, .nran = &g->n};
  int rc = dp_gold_run(eng, models, n, NULL, &o, &failed, &e);
  free(models);
  int code = DP_EXIT_OK;
  if (rc) {
    code = dp_cli_exit("gold run", &e);
    if (failed) code = DP_EXIT_RUN_FAILED;
  }
  if (json && g->n > 0) {
    dp_err je;
    dp_err_clear(&je);
    dp_buf out = DP_BUF_INIT;
    if (dp_cli_gold_json(eng->audit, g, &out, &je) == 0)
      printf("{\"status\":\"%s\",\"models\":%s}\n", rc ? "failed" : "succeeded", out.data);
    else
      code = dp_cli_exit("gold run --json", &je);
    dp_buf_free(&out);
  }
  free(g);
  return code;
}
