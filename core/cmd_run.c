/* cmd_run.c - dp-engine run. */
#include "cli.h"
#include "log.h"
#include "goldrun.h"
#include "prefect.h"
#include "run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *RUN_USAGE =
    "usage: dp-engine run SYSTEM [--entity E]... [--layer raw,bronze|all] [--full-refresh] [--with-gold] [--json]\n"
    "\n"
    "Runs the system's enabled entities through raw, bronze and silver, audited in PostgreSQL.\n"
    "  --entity E     only this entity (repeatable; may name a disabled entity)\n"
    "  --layer L      only these layers; each layer reads what the one before wrote in this run,\n"
    "                 so the chosen layers must be contiguous from raw (raw | raw,bronze | all)\n"
    "  --full-refresh ignore the stored delta cursor and extract from the start\n"
    "  --with-gold    after a succeeded run, build the gold models that depend on the system\n"
    "  --json         the run as the audit holds it, one JSON document on stdout (runs show --json's\n"
    "                 element; with --with-gold also \"gold\": the model runs), instead of the table\n"
    "Started by a Prefect worker (PREFECT__FLOW_RUN_ID set), the run is that flow run and its\n"
    "parameters entities, layers and full_refresh replace these options (docs/orchestration.md).\n"
    "Exit codes: 0 every entity succeeded, 1 an entity failed or a database could not be reached,\n"
    "  2 usage, metadata or configuration error.\n";

int dp_cmd_run(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(RUN_USAGE, stdout); return DP_EXIT_OK; }
  const char *system = NULL;
  const char **ents = calloc((size_t)argc + 1, sizeof *ents);
  dp_run_opts o = {.entities = ents, .trigger = "manual", .replay = DP_REPLAY_NONE};
  int with_gold = 0, json = 0;
  char run_id[37] = "";
  static const char *const valued[] = {"--entity", "--layer", NULL};
  for (int i = 0; i < argc; i++) {
    int mv = dp_cli_missing_value(argc, argv, i, valued, RUN_USAGE);
    if (mv) { free(ents); return mv; }
    if (strcmp(argv[i], "--entity") == 0) {
      ents[o.nentities++] = argv[++i];
    } else if (strcmp(argv[i], "--layer") == 0) {
      const char *l = argv[++i];
      if (dp_cli_layers(l, &o.layers) != 0) {
        free(ents);
        return dp_cli_usage_error(RUN_USAGE, "unknown layer in %s (raw, bronze, silver or all; a list with commas)", l);
      }
    } else if (strcmp(argv[i], "--with-gold") == 0) {
      with_gold = 1;
    } else if (strcmp(argv[i], "--json") == 0) {
      json = 1;
      o.quiet = 1;
      o.run_id_out = run_id;
    } else if (strcmp(argv[i], "--full-refresh") == 0) {
      o.full_refresh = 1;
    } else if (argv[i][0] == '-') {
      free(ents);
      return dp_cli_usage_error(RUN_USAGE, "unknown option: %s", argv[i]);
    } else if (!system) {
      system = argv[i];
    } else {
      free(ents);
      return dp_cli_usage_error(RUN_USAGE, "unexpected argument: %s", argv[i]);
    }
  }
  if (!system) { free(ents); return dp_cli_usage_error(RUN_USAGE, "%s", "run needs a SYSTEM"); }
  if (o.layers == 0) o.layers = DP_LAYER_ALL;
  if (o.layers != DP_LAYER_RAW && o.layers != (DP_LAYER_RAW | DP_LAYER_BRONZE) && o.layers != DP_LAYER_ALL) {
    free(ents);
    return dp_cli_usage_error(RUN_USAGE, "%s",
                       (o.layers & DP_LAYER_RAW)
                           ? "--layer raw,silver skips bronze: the layers must be contiguous from raw "
                             "(raw, raw,bronze or all), as each layer reads what the layer before wrote in this run"
                           : "--layer must start at raw and be contiguous (raw, raw,bronze or all): each layer "
                             "reads what the layer before wrote in this run; rebuilding from stored data is "
                             "`dp-engine replay SYSTEM --from raw|bronze`");
  }
  if (with_gold && o.layers != DP_LAYER_ALL) {
    free(ents);
    return dp_cli_usage_error(RUN_USAGE, "%s", "--with-gold needs the silver layer (gold reads silver)");
  }
  dp_err e;
  dp_err_clear(&e);
  /* Started by Prefect (PREFECT__FLOW_RUN_ID): the flow run's parameters, where given, replace
   * the command line's (docs/orchestration.md). */
  dp_prefect_params pp;
  int attached = dp_prefect_attach_params(&pp, &e);
  if (attached < 0) { free(ents); return dp_cli_fail_config(&e); }
  if (attached) {
    if (pp.nentities > 0) { o.entities = (const char **)pp.entities; o.nentities = pp.nentities; }
    if (pp.layers) o.layers = pp.layers;
    if (pp.full_refresh) o.full_refresh = 1;
    o.trigger = "prefect";
    if (o.layers != DP_LAYER_RAW && o.layers != (DP_LAYER_RAW | DP_LAYER_BRONZE) && o.layers != DP_LAYER_ALL) {
      dp_prefect_params_free(&pp);
      free(ents);
      return dp_cli_usage_error(RUN_USAGE, "%s", "the flow run's parameter layers must start at raw (raw, raw+bronze or all)");
    }
  }
  int failed = 0;
  int rc = dp_run_system(eng, system, &o, &failed, &e);
  free(ents);
  if (attached) dp_prefect_params_free(&pp);
  int code = DP_EXIT_OK;
  dp_cli_gold_ids gold = {0};
  if (with_gold && rc == 0) { /* gold only after a fully succeeded run (docs/gold.md) */
    dp_gold_opts go = {.quiet = json, .ran = gold.ids, .ran_cap = DP_CLI_GOLD_MAX, .nran = &gold.n};
    rc = dp_gold_run(eng, NULL, 0, system, &go, &failed, &e);
    if (rc) {
      code = dp_cli_exit("run --with-gold", &e);
      if (failed) code = DP_EXIT_RUN_FAILED;
    }
  } else {
    if (with_gold && failed) dp_log(DP_LOG_WARN, "gold models not run: the system run did not succeed");
    if (rc) {
      code = dp_cli_exit("run", &e); /* a run that failed part way is 1, else the error's class */
      if (failed) code = DP_EXIT_RUN_FAILED;
    }
  }
  if (json && run_id[0]) { /* the run is in the audit: its document, whatever its status */
    dp_err je;
    dp_err_clear(&je);
    dp_buf g = DP_BUF_INIT;
    int jrc = with_gold ? dp_cli_gold_json(eng->audit, &gold, &g, &je) : 0;
    if (jrc == 0) jrc = dp_cli_print_run_json(eng->audit, run_id, with_gold ? "gold" : NULL, g.data, &je);
    dp_buf_free(&g);
    if (jrc) return dp_cli_exit("run --json", &je);
  }
  return code;
}
