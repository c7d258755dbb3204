/* cmd_lineage.c - dp-engine lineage: systems -> entities -> gold models with the status of their
 * last run (docs/cli.md#lineage). The graph comes from the metadata, the statuses from the audit;
 * lua/dp/lineage.lua draws it. */
#include "cli.h"
#include "lineage.h"
#include "luabridge.h"
#include "pg.h"
#include "run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *LINEAGE_USAGE =
    "usage: dp-engine lineage [--format text|dot|mermaid] [--json]\n"
    "\n"
    "Prints the graph of the systems, their entities and the gold models that read them, each\n"
    "with the status and time of its last run from the audit (or \"never run\"). --format dot is\n"
    "Graphviz input (dot -Tsvg), mermaid a Mermaid flowchart; --json the nodes and edges.\n";

int dp_cmd_lineage(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(LINEAGE_USAGE, stdout); return DP_EXIT_OK; }
  const char *format = "text";
  static const char *const valued[] = {"--format", NULL};
  for (int i = 0; i < argc; i++) {
    int mv = dp_cli_missing_value(argc, argv, i, valued, LINEAGE_USAGE);
    if (mv) return mv;
    if (strcmp(argv[i], "--format") == 0) {
      format = argv[++i];
      if (strcmp(format, "text") != 0 && strcmp(format, "dot") != 0 && strcmp(format, "mermaid") != 0)
        return dp_cli_usage_error(LINEAGE_USAGE, "--format takes text, dot or mermaid, not %s", format);
    } else if (strcmp(argv[i], "--json") == 0) {
      format = "json";
    } else {
      return dp_cli_usage_error(LINEAGE_USAGE, "unexpected argument: %s", argv[i]);
    }
  }
  dp_err e;
  dp_err_clear(&e);
  dp_snapshot *meta = NULL;
  if (dp_load_metadata(eng, &meta, &e)) return dp_cli_exit("lineage", &e);
  dp_snapshot_unref(meta); /* the bridge hands the state's metadata to lineage.lua */
  PGresult *statuses = NULL;
  char *out = NULL;
  if (dp_engine_open_migrated(eng, &e) || dp_lineage_statuses(eng->audit, &statuses, &e) ||
      dp_bridge_lineage(eng->L, statuses, format, &out, &e)) {
    PQclear(statuses);
    return dp_cli_exit("lineage", &e);
  }
  PQclear(statuses);
  fputs(out, stdout);
  free(out);
  return DP_EXIT_OK;
}
