/* cmd_rollback.c - dp-engine rollback RUN_ID: undo a run (docs/lifecycle.md#undoing-a-run). */
#include "cli.h"
#include "rollback.h"

#include <stdio.h>
#include <string.h>

static const char *ROLLBACK_USAGE =
    "usage: dp-engine rollback RUN_ID [--dry-run] [--cascade] [--json]\n"
    "\n"
    "Undoes a run of a system: silver back to exactly the state before it (the versions it\n"
    "inserted removed, those it closed reopened, scd1 values it overwrote restored), the bronze\n"
    "documents it changed rebuilt from the raw files of earlier loads, the delta cursor back, its\n"
    "raw files moved to DP_DATA_DIR/quarantine/RUN_ID/, the gold models that depend on the system\n"
    "rebuilt. Audited as its own run (trigger \"rollback\").\n"
    "  --dry-run  print what would be undone; change nothing\n"
    "  --cascade  the run need not be the latest of its entities: the later runs are undone too,\n"
    "             newest first\n"
    "  --json     print the report as one JSON object\n"
    "Exit codes: 0 undone, 1 a step failed (run it again to finish), 2 usage, an unknown run, a run\n"
    "  that is not the latest without --cascade, a run rolled back already.\n";

int dp_cmd_rollback(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(ROLLBACK_USAGE, stdout); return DP_EXIT_OK; }
  dp_rollback_opts o = {0};
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--dry-run") == 0) o.dry_run = 1;
    else if (strcmp(argv[i], "--cascade") == 0) o.cascade = 1;
    else if (strcmp(argv[i], "--json") == 0) o.json = 1;
    else if (argv[i][0] == '-') return dp_cli_usage_error(ROLLBACK_USAGE, "unknown option: %s", argv[i]);
    else if (!o.run_id) o.run_id = argv[i];
    else return dp_cli_usage_error(ROLLBACK_USAGE, "unexpected argument: %s", argv[i]);
  }
  if (!o.run_id) return dp_cli_usage_error(ROLLBACK_USAGE, "%s", "rollback needs a RUN_ID");
  dp_err e;
  dp_err_clear(&e);
  int failed = 0;
  if (dp_rollback(eng, &o, &failed, &e) == 0) return DP_EXIT_OK;
  int code = dp_cli_exit("rollback", &e);
  return failed ? DP_EXIT_RUN_FAILED : code;
}
