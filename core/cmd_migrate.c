/* cmd_migrate.c - dp-engine migrate. */
#include "bronze_convert.h"
#include "cli.h"
#include "migrate.h"
#include "rawfile.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

static const char *MIGRATE_USAGE =
    "usage: dp-engine migrate [--bronze-ids]\n"
    "\n"
    "Applies DP_HOME/migrations/NNNN_name.sql in order, each once and in its own transaction,\n"
    "recording name and sha256 in dp.schema_migration. A migration edited after it was applied\n"
    "is refused. Needs DP_POSTGRES_URL. With DP_MONGO_URL it also looks for bronze collections\n"
    "whose _ids have the binary form of dp-engine before 0.2, and names them.\n"
    "\n"
    "  --bronze-ids  convert those collections to the text _id (32 hex digits), copying every\n"
    "                document before removing the old one; safe to run again after a failure;\n"
    "                audited in audit.bronze_id_conversion (docs/storage.md)\n";

/* Bronze collections with binary _ids: named (convert = 0), or converted. Returns an exit code. */
static int bronze_ids(dp_engine *eng, int convert) {
  dp_err e;
  dp_err_clear(&e);
  if (!eng->cfg.mongo_url && !convert) return DP_EXIT_OK;
  if (dp_engine_open_mongo(eng, &e)) {
    if (convert) return dp_cli_fail_config(&e);
    fprintf(stderr, "dp-engine migrate: bronze not checked for binary _ids: %s\n", e.msg);
    return DP_EXIT_OK;
  }
  const char *db = eng->cfg.bronze_db;
  dp_strlist old;
  if (dp_bronze_legacy_collections(eng->mongo, db, &old, &e) != 0) return dp_cli_exit("migrate", &e);
  int rc = DP_EXIT_OK;
  if (!convert && old.n) {
    fprintf(stderr, "dp-engine migrate: %zu bronze collection%s of %s %s _ids of the binary form written before "
                    "dp-engine 0.2:", old.n, old.n == 1 ? "" : "s", db, old.n == 1 ? "has" : "have");
    for (size_t i = 0; i < old.n; i++) fprintf(stderr, "%s %s", i ? "," : "", old.v[i]);
    fprintf(stderr, "\nrun 'dp-engine migrate --bronze-ids' once to convert them (runs refuse them until then), "
                    "or drop each and rebuild it with 'dp-engine replay SYSTEM --from raw' (docs/storage.md)\n");
  }
  for (size_t i = 0; convert && i < old.n; i++) {
    dp_bronze_conversion cv;
    if (dp_bronze_convert_ids(eng->mongo, db, eng->audit, old.v[i], &cv, &e) != 0) {
      rc = dp_cli_exit("migrate", &e);
      break;
    }
    printf("bronze %s: %lld documents, %lld converted (%lld copied now, %lld by an earlier attempt), %lld after\n",
           old.v[i], (long long)cv.documents_before, (long long)cv.removed, (long long)cv.copied,
           (long long)cv.already_copied, (long long)cv.documents_after);
  }
  if (convert && rc == DP_EXIT_OK) printf("bronze ids: %zu collection%s converted\n", old.n, old.n == 1 ? "" : "s");
  dp_strlist_free(&old);
  return rc;
}

int dp_cmd_migrate(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(MIGRATE_USAGE, stdout); return DP_EXIT_OK; }
  int convert = argc == 1 && strcmp(argv[0], "--bronze-ids") == 0;
  if (argc > 0 && !convert) return dp_cli_usage_error(MIGRATE_USAGE, "unknown argument: %s", argv[0]);
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
  return bronze_ids(eng, convert);
}
