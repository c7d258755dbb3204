/* cmd_replay.c - dp-engine replay: rebuild the layers after raw or bronze from stored data. */
#include "cli.h"
#include "run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *REPLAY_USAGE =
    "usage: dp-engine replay SYSTEM --from raw|bronze [--run RUN_ID] [--entity E]... [--json]\n"
    "\n"
    "Rebuilds the layers after the one named, from what is stored, without calling the source.\n"
    "Audited as its own run (trigger \"replay\"); delta cursors do not move.\n"
    "  --from raw     bronze and silver from the raw file of each entity: that of --run RUN_ID,\n"
    "                 or the latest one whose raw layer succeeded\n"
    "  --from bronze  silver from every bronze document (not only those written since its last\n"
    "                 committed run)\n"
    "  --entity E     only this entity (repeatable)\n"
    "  --json         the run as the audit holds it, one JSON document on stdout (as run --json)\n"
    "Exit codes: 0 every entity succeeded, 1 an entity failed or a database could not be reached,\n"
    "  2 usage, metadata or configuration error.\n";

int dp_cmd_replay(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(REPLAY_USAGE, stdout); return DP_EXIT_OK; }
  const char *system = NULL;
  const char **ents = calloc((size_t)argc + 1, sizeof *ents);
  dp_run_opts o = {.entities = ents, .trigger = "replay", .replay = DP_REPLAY_NONE};
  int rc = DP_EXIT_USAGE, json = 0;
  char run_id[37] = "";
  static const char *const valued[] = {"--from", "--run", "--entity", NULL};
  for (int i = 0; i < argc; i++) {
    if ((rc = dp_cli_missing_value(argc, argv, i, valued, REPLAY_USAGE)) != 0) goto done;
    rc = DP_EXIT_USAGE;
    if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) {
      const char *f = argv[++i];
      if (strcmp(f, "raw") == 0) o.replay = DP_REPLAY_RAW;
      else if (strcmp(f, "bronze") == 0) o.replay = DP_REPLAY_BRONZE;
      else { rc = dp_cli_usage_error(REPLAY_USAGE, "--from takes raw or bronze, not %s", f); goto done; }
    } else if (strcmp(argv[i], "--run") == 0 && i + 1 < argc) {
      o.replay_run = argv[++i];
    } else if (strcmp(argv[i], "--json") == 0) {
      json = 1;
      o.quiet = 1;
      o.run_id_out = run_id;
    } else if (strcmp(argv[i], "--entity") == 0 && i + 1 < argc) {
      ents[o.nentities++] = argv[++i];
    } else if (argv[i][0] == '-') {
      rc = dp_cli_usage_error(REPLAY_USAGE, "unknown option: %s", argv[i]);
      goto done;
    } else if (!system) {
      system = argv[i];
    } else {
      rc = dp_cli_usage_error(REPLAY_USAGE, "unexpected argument: %s", argv[i]);
      goto done;
    }
  }
  if (!system) { rc = dp_cli_usage_error(REPLAY_USAGE, "%s", "replay needs a SYSTEM"); goto done; }
  if (o.replay == DP_REPLAY_NONE) { rc = dp_cli_usage_error(REPLAY_USAGE, "%s", "replay needs --from raw|bronze"); goto done; }
  if (o.replay_run && o.replay != DP_REPLAY_RAW) {
    rc = dp_cli_usage_error(REPLAY_USAGE, "%s", "--run goes with --from raw (bronze keeps one document per key)");
    goto done;
  }
  o.layers = o.replay == DP_REPLAY_RAW ? (DP_LAYER_BRONZE | DP_LAYER_SILVER) : DP_LAYER_SILVER;
  dp_err e;
  dp_err_clear(&e);
  int failed = 0;
  if (dp_run_system(eng, system, &o, &failed, &e) == 0) {
    rc = DP_EXIT_OK;
  } else {
    int code = dp_cli_exit("replay", &e);
    rc = failed ? DP_EXIT_RUN_FAILED : code;
  }
  if (json && run_id[0] && dp_cli_print_run_json(eng->audit, run_id, NULL, NULL, &e) != 0) rc = dp_cli_exit("replay --json", &e);
done:
  free(ents);
  return rc;
}
