/* cmd_retention.c - dp-engine retention (docs/lifecycle.md). */
#include "cli.h"
#include "retention.h"

#include <stdio.h>
#include <string.h>

static const char *RETENTION_USAGE =
    "usage: dp-engine retention [--dry-run] [--system S] [--json]\n"
    "\n"
    "Applies each entity's retention settings (docs/lifecycle.md): compresses raw files older than\n"
    "retention.raw_days, deletes those older than retention.raw_delete_days (not the files a cursor,\n"
    "silver or an unfinished replay still needs), purges bronze documents deleted more than\n"
    "retention.bronze_deleted_days ago, drops closed silver versions that ended more than\n"
    "retention.silver_history_days ago. Every action is audited in audit.retention_run.\n"
    "  --dry-run   count what would be done; change nothing (still audited, dry_run = true)\n"
    "  --system S  only the entities of system S\n"
    "  --json      the result as one JSON object\n"
    "Exit codes: 0 every action succeeded, 1 an action failed, a system was busy or a database\n"
    "  could not be reached, 2 usage, metadata or configuration error.\n";

int dp_cmd_retention(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(RETENTION_USAGE, stdout); return DP_EXIT_OK; }
  dp_retention_opts o = {NULL, 0, 0};
  static const char *const valued[] = {"--system", NULL};
  for (int i = 0; i < argc; i++) {
    int rc = dp_cli_missing_value(argc, argv, i, valued, RETENTION_USAGE);
    if (rc) return rc;
    if (strcmp(argv[i], "--dry-run") == 0) o.dry_run = 1;
    else if (strcmp(argv[i], "--json") == 0) o.json = 1;
    else if (strcmp(argv[i], "--system") == 0 && i + 1 < argc) o.system = argv[++i];
    else if (argv[i][0] == '-') return dp_cli_usage_error(RETENTION_USAGE, "unknown option: %s", argv[i]);
    else return dp_cli_usage_error(RETENTION_USAGE, "unexpected argument: %s", argv[i]);
  }
  dp_buf out = DP_BUF_INIT;
  dp_err e;
  dp_err_clear(&e);
  int failed = 0;
  int rc = dp_retention_run(eng, &o, &out, &failed, &e);
  /* --json: one whole document or nothing (an error stopped it half way: the message says why,
   * the actions done so far are in audit.retention_run) */
  if (out.len && !(rc && o.json)) fwrite(out.data, 1, out.len, stdout);
  dp_buf_free(&out);
  if (rc) return dp_cli_exit("retention", &e);
  return failed ? DP_EXIT_RUN_FAILED : DP_EXIT_OK;
}
