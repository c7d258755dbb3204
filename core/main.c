/* main.c - the dp-engine command line and the composition root: it reads the environment,
 * builds the engine context and hands it to the command. Exit codes: 0 success, 1 the run
 * failed or partly failed, 2 usage or configuration error. */
#include "bronze.h"
#include "cli.h"
#include "version.h"
#include "config.h"
#include "engine.h"
#include "log.h"
#include "prefect.h"
#include "progress.h"

#include <mongoc/mongoc.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const char *USAGE =
    "usage: dp-engine COMMAND [ARGS]\n"
    "\n"
    "A metadata-driven data platform for personal data: raw -> bronze -> silver -> gold.\n"
    "\n"
    "Commands:\n"
    "  migrate                          apply migrations/ in order, once each, checksummed\n"
    "  metadata validate [--dir DIR] [--json]\n"
    "                                   check metadata (default ./metadata or DP_METADATA)\n"
    "  metadata push [--dir DIR]        store a validated folder in MongoDB, atomically\n"
    "  metadata show [NAME] [--json]    print the validated metadata (all or one item)\n"
    "  run SYSTEM [--entity E]... [--layer raw,bronze|all] [--full-refresh] [--with-gold] [--json]\n"
    "                                   run a system's enabled entities through the layers\n"
    "  replay SYSTEM --from raw|bronze [--run RUN_ID] [--entity E]... [--json]\n"
    "                                   rebuild bronze and silver, or silver, from stored data\n"
    "  gold run MODEL [MODEL]... [--full-refresh] [--json]\n"
    "                                   build gold models, their upstream gold models first\n"
    "  runs [list|show RUN_ID] [--system S] [--limit N] [--json]\n"
    "                                   the audited runs, newest first, or one run in detail\n"
    "  serve                            the service: triggers, HTTP API (docs/triggers.md)\n"
    "  secrets set|get|list|rm NAME     the encrypted secret store (values from stdin, never argv);\n"
    "  secrets rotate-key|gen-key       also: re-encrypt under a new key, make a key\n"
    "  prefect deploy [SYSTEM]... [--with-schedules]\n"
    "                                   a Prefect process work pool and a deployment per system\n"
    "  rollback RUN_ID [--dry-run] [--cascade] [--json]\n"
    "                                   undo a run: silver, bronze, cursor, raw (quarantined), gold\n"
    "  doctor [--network] [--json]      check the setup; each problem with its fix\n"
    "  show SYSTEM.ENTITY|gold.MODEL [--layer L] [--current] [--as-of TS] [--limit N] [--json]\n"
    "                                   preview rows; --as-of from the SCD2 history\n"
    "  lineage [--format text|dot|mermaid] [--json]\n"
    "                                   systems -> entities -> gold models, last run status\n"
    "  retention [--dry-run] [--system S] [--json]\n"
    "                                   compress and delete old data per entity (docs/lifecycle.md)\n"
    "  forget SYSTEM.ENTITY --key K=V[,K=V] [--dry-run] [--allow-return]\n"
    "                                   remove one key from raw, bronze, silver and gold\n"
    "  connectors list|show TYPE [--json|--markdown]\n"
    "                                   connector types and their options (from their schemas)\n"
    "  init system NAME --type file|rest [--from SAMPLE] [--entity E]\n"
    "  init connector NAME              scaffold metadata (columns inferred from a sample) or a connector\n"
    "\n"
    "Options: --version, --help (also after a command; help CMD is CMD --help).\n"
    "Exit codes: 0 success, 1 the run failed or partly failed, 2 usage or configuration error.\n";

/* The usage and the Environment section, generated from config.h's table. */
static void usage(FILE *out) {
  fputs(USAGE, out);
  fputc('\n', out);
  dp_config_print_help(out);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return DP_EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("dp-engine %s\n", DP_VERSION);
    return DP_EXIT_OK;
  }
  static char help_arg[] = "--help";
  if (strcmp(cmd, "help") == 0 && argc >= 3 && strcmp(argv[2], "help") != 0) { /* `help CMD` is `CMD --help` */
    static char *fake[4]; /* argv lives as long as main */
    fake[0] = argv[0];
    fake[1] = argv[2];
    fake[2] = help_arg;
    argv = fake;
    argc = 3;
    cmd = argv[1];
  } else if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    usage(stdout);
    return DP_EXIT_OK;
  }
  /* Each subcommand has its file (cmd_<name>.c). */
  static const struct { const char *name; dp_cmd_fn fn; } commands[] = {
      {"migrate", dp_cmd_migrate},
      {"metadata", dp_cmd_metadata},
      {"run", dp_cmd_run},
      {"replay", dp_cmd_replay},
      {"gold", dp_cmd_gold},
      {"runs", dp_cmd_runs},
      {"serve", dp_cmd_serve},
      {"secrets", dp_cmd_secrets},
      {"prefect", dp_cmd_prefect},
      {"rollback", dp_cmd_rollback},
      {"doctor", dp_cmd_doctor},
      {"show", dp_cmd_show},
      {"lineage", dp_cmd_lineage},
      {"retention", dp_cmd_retention},
      {"forget", dp_cmd_forget},
      {"connectors", dp_cmd_connectors},
      {"init", dp_cmd_init},
  };
  dp_cmd_fn fn = NULL;
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (strcmp(cmd, commands[i].name) == 0) fn = commands[i].fn;
  }
  if (!fn) {
    fprintf(stderr, "dp-engine: unknown command: %s\n\n%s", cmd, USAGE);
    return DP_EXIT_USAGE;
  }

  /* The composition root: configuration and the engine context. */
  if (dp_log_configure(dp_config_env("DP_LOG_LEVEL"), dp_config_env("DP_LOG_FORMAT")) != 0) {
    fprintf(stderr, "dp-engine: DP_LOG_LEVEL must be debug|info|warn|error and DP_LOG_FORMAT text|json\n");
    return DP_EXIT_USAGE;
  }
  dp_progress_init(); /* the variables of progress and Prefect reporting, read once, now */
  dp_prefect_env();
  if (sodium_init() < 0) {
    fprintf(stderr, "dp-engine: libsodium failed to initialise\n");
    return DP_EXIT_USAGE;
  }
  dp_mongo_log_init();
  mongoc_init();
  dp_engine eng;
  memset(&eng, 0, sizeof eng);
  dp_err e;
  dp_err_clear(&e);
  int rc;
  /* DP_SORT_MEM, DP_BRONZE_WRITERS: doctor reports a bad value as a check, help needs neither */
  if (fn != dp_cmd_doctor && !dp_cli_wants_help(argc - 2, argv + 2) && dp_bronze_settings_init(&e) != 0) {
    rc = dp_cli_fail_config(&e);
  } else if (dp_config_from_env(&eng.cfg, &e) != 0) { /* only the engine home can be wrong here */
    rc = fn == dp_cmd_doctor ? dp_cmd_doctor_without_home(&e, argc - 2, argv + 2) : dp_cli_fail_config(&e);
  } else {
    rc = fn(&eng, argc - 2, argv + 2);
  }
  dp_engine_close(&eng);
  mongoc_cleanup();
  return rc;
}
