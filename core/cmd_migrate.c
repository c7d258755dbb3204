/* cmd_migrate.c - dp-engine migrate. */
#include "cli.h"
#include "migrate.h"
#include "rawfile.h"

#include <limits.h>
#include <stdio.h>

static const char *MIGRATE_USAGE =
    "usage: dp-engine migrate\n"
    "\n"
    "Applies DP_HOME/migrations/NNNN_name.sql in order, each once and in its own transaction,\n"
    "recording name and sha256 in dp.schema_migration. A migration edited after it was applied\n"
    "is refused. Needs DP_POSTGRES_URL.\n";

int dp_cmd_migrate(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(MIGRATE_USAGE, stdout); return DP_EXIT_OK; }
  if (argc > 0) return dp_cli_usage_error(MIGRATE_USAGE, "migrate takes no argument: %s", argv[0]);
  dp_err e;
  dp_err_clear(&e);
  if (dp_engine_open_pg(eng, &e)) return dp_cli_fail_config(&e);
  char dir[PATH_MAX];
  int applied = 0;
  if (dp_path_join(dir, sizeof dir, eng->cfg.home, "migrations", &e) != 0 ||
      dp_migrate(eng->audit, dir, &applied, &e) != 0) {
    return dp_cli_exit("migrate", &e);
  }
  printf("migrations: %d applied, database is up to date\n", applied);
  return DP_EXIT_OK;
}
