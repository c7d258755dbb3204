/* cmd_gold.c - dp-engine gold run MODEL... */
#include "cli.h"
#include "goldrun.h"

#include <stdio.h>
#include <string.h>

static const char *GOLD_USAGE =
    "usage: dp-engine gold run MODEL [MODEL]...\n"
    "\n"
    "Builds gold models (metadata/gold.json, scripts in gold/): first every gold model they depend\n"
    "on, directly or not, upstream first, then the models named. Each model is its own audited\n"
    "run (dp-engine runs --system MODEL). A `table` model is rebuilt and swapped in atomically; an\n"
    "`incremental` model is merged by primary key. A script's SQL runs as the role dp_gold (read\n"
    "silver and gold only), one query at a time, stopped after DP_GOLD_STATEMENT_TIMEOUT seconds\n"
    "(default 300). See docs/gold.md.\n"
    "Exit codes: 0 every model succeeded, 1 a model failed, 2 usage or configuration error.\n";

int dp_cmd_gold(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(GOLD_USAGE, stdout); return DP_EXIT_OK; }
  if (argc < 1 || strcmp(argv[0], "run") != 0)
    return dp_cli_usage_error(GOLD_USAGE, "%s", argc < 1 ? "gold needs a subcommand: run" : "unknown gold subcommand");
  if (argc < 2) return dp_cli_usage_error(GOLD_USAGE, "%s", "gold run needs a MODEL");
  for (int i = 1; i < argc; i++)
    if (argv[i][0] == '-') return dp_cli_usage_error(GOLD_USAGE, "unknown option: %s", argv[i]);
  dp_err e;
  dp_err_clear(&e);
  int failed = 0;
  int rc = dp_gold_run(eng, (const char *const *)argv + 1, argc - 1, NULL, NULL, &failed, &e);
  if (rc == 0) return DP_EXIT_OK;
  int code = dp_cli_exit("gold run", &e);
  return failed ? DP_EXIT_RUN_FAILED : code;
}
