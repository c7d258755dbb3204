/* cmd_forget.c - dp-engine forget (docs/lifecycle.md#forgetting-a-key). */
#include "cli.h"
#include "forget.h"

#include <stdio.h>
#include <string.h>

static const char *FORGET_USAGE =
    "usage: dp-engine forget SYSTEM.ENTITY --key K=V[,K=V] [--dry-run] [--allow-return]\n"
    "\n"
    "Removes one key of an entity from every store: its records in the raw files (rewritten\n"
    "atomically, manifests updated), its bronze document, every silver version and rejected row,\n"
    "and the gold models that read the entity are rebuilt. The key hash (never the values) is\n"
    "recorded in dp.forgotten_key, and later runs leave the key's records out.\n"
    "  --key K=V[,K=V]  every primary-key column once, value as text (cast with the column's type)\n"
    "  --dry-run        count what would be removed; change nothing\n"
    "  --allow-return   remove it now, but let later loads bring the key back\n"
    "Exit codes: 0 done, 1 a store failed (run it again: every step is idempotent) or the system\n"
    "  is running, 2 usage, unknown entity or column, or a value that does not cast.\n";

int dp_cmd_forget(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(FORGET_USAGE, stdout); return DP_EXIT_OK; }
  dp_forget_opts o = {NULL, NULL, 0, 0};
  static const char *const valued[] = {"--key", NULL};
  for (int i = 0; i < argc; i++) {
    int rc = dp_cli_missing_value(argc, argv, i, valued, FORGET_USAGE);
    if (rc) return rc;
    if (strcmp(argv[i], "--dry-run") == 0) o.dry_run = 1;
    else if (strcmp(argv[i], "--allow-return") == 0) o.allow_return = 1;
    else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) o.key = argv[++i];
    else if (argv[i][0] == '-') return dp_cli_usage_error(FORGET_USAGE, "unknown option: %s", argv[i]);
    else if (!o.target) o.target = argv[i];
    else return dp_cli_usage_error(FORGET_USAGE, "unexpected argument: %s", argv[i]);
  }
  if (!o.target) return dp_cli_usage_error(FORGET_USAGE, "%s", "forget needs SYSTEM.ENTITY");
  if (!o.key) return dp_cli_usage_error(FORGET_USAGE, "%s", "forget needs --key K=V[,K=V]");
  dp_buf out = DP_BUF_INIT;
  dp_err e;
  dp_err_clear(&e);
  int failed = 0;
  int rc = dp_forget(eng, &o, &out, &failed, &e);
  if (out.len) fwrite(out.data, 1, out.len, stdout);
  dp_buf_free(&out);
  if (rc) return dp_cli_exit("forget", &e);
  return failed ? DP_EXIT_RUN_FAILED : DP_EXIT_OK;
}
