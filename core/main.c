/* main.c - the dp-engine command line and the composition root: it reads the environment,
 * builds the engine context and hands it to the command. Exit codes: 0 success, 1 the run
 * failed or partly failed, 2 usage or configuration error. */
#include "engine.h"
#include "log.h"
#include "luabridge.h"
#include "migrate.h"
#include "run.h"

#include <lauxlib.h>
#include <mongoc/mongoc.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DP_VERSION
#define DP_VERSION "0.0.0"
#endif

enum { EXIT_OK = 0, EXIT_RUN_FAILED = 1, EXIT_USAGE = 2 };

static const char *USAGE =
    "usage: dp-engine COMMAND [ARGS]\n"
    "\n"
    "A metadata-driven data platform for personal data: raw -> bronze -> silver -> gold.\n"
    "\n"
    "Commands:\n"
    "  migrate                          apply migrations/ in order, once each, checksummed\n"
    "  metadata validate [--dir DIR]    check metadata (default ./metadata or DP_METADATA)\n"
    "  metadata push|show               (not built yet: issue #3)\n"
    "  run SYSTEM [--entity E]... [--layer raw|bronze|silver]... [--full-refresh]\n"
    "                                   run a system's enabled entities through the layers\n"
    "  replay SYSTEM --from raw|bronze  (not built yet: issue #5)\n"
    "  gold run MODEL                   (not built yet: issue #6)\n"
    "  runs [list|show RUN_ID]          (not built yet: issue #5)\n"
    "  serve                            (not built yet)\n"
    "  secrets set|get|list|rm NAME     (not built yet: issue #7)\n"
    "  retention [--dry-run]            (not built yet)\n"
    "\n"
    "Options: --version, --help (also after a command).\n"
    "Environment: DP_POSTGRES_URL, DP_MONGO_URL, DP_DATA_DIR (./data), DP_METADATA (./metadata),\n"
    "  DP_SCRIPTS, DP_HOME, DP_LOG_LEVEL (debug|info|warn|error), DP_LOG_FORMAT (text|json).\n"
    "Exit codes: 0 success, 1 the run failed or partly failed, 2 usage or configuration error.\n";

static const char *RUN_USAGE =
    "usage: dp-engine run SYSTEM [--entity E]... [--layer raw|bronze|silver]... [--full-refresh]\n"
    "\n"
    "Runs the system's enabled entities through raw, bronze and silver, audited in PostgreSQL.\n"
    "  --entity E     only this entity (repeatable; may name a disabled entity)\n"
    "  --layer L      only these layers; each layer reads what the one before wrote in this run,\n"
    "                 so the chosen layers must start at raw (raw | raw,bronze | all)\n"
    "  --full-refresh ignore the stored delta cursor and extract from the start\n"
    "Exit codes: 0 every entity succeeded, 1 an entity failed, 2 usage or configuration error.\n";

static const char *MIGRATE_USAGE =
    "usage: dp-engine migrate\n"
    "\n"
    "Applies DP_HOME/migrations/NNNN_name.sql in order, each once and in its own transaction,\n"
    "recording name and sha256 in dp.schema_migration. A migration edited after it was applied\n"
    "is refused. Needs DP_POSTGRES_URL.\n";

static const char *METADATA_USAGE =
    "usage: dp-engine metadata validate [--dir DIR]\n"
    "\n"
    "Validates systems.json, entities.json and gold.json in DIR (default DP_METADATA or\n"
    "./metadata) and prints every error with file, JSON path and rule. Exit 2 when invalid.\n"
    "metadata push and show come with issue #3.\n";

static int wants_help(int argc, char **argv) {
  for (int i = 0; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
  return 0;
}

static int usage_error(const char *usage, const char *fmt, const char *arg) {
  fprintf(stderr, "dp-engine: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n\n%s", usage);
  return EXIT_USAGE;
}

static int fail_config(const dp_err *e) {
  fprintf(stderr, "dp-engine: %s\n", e->msg);
  return EXIT_USAGE;
}

static int cmd_migrate(dp_engine *eng, int argc, char **argv) {
  if (wants_help(argc, argv)) { fputs(MIGRATE_USAGE, stdout); return EXIT_OK; }
  if (argc > 0) return usage_error(MIGRATE_USAGE, "migrate takes no argument: %s", argv[0]);
  dp_err e;
  dp_err_clear(&e);
  if (dp_engine_open_pg(eng, &e)) return fail_config(&e);
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/migrations", eng->cfg.home);
  int applied = 0;
  if (dp_migrate(eng->audit, dir, &applied, &e) != 0) {
    fprintf(stderr, "dp-engine migrate: %s\n", e.msg);
    return EXIT_RUN_FAILED;
  }
  printf("migrations: %d applied, database is up to date\n", applied);
  return EXIT_OK;
}

static int cmd_metadata(dp_engine *eng, int argc, char **argv) {
  if (argc == 0 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
    fputs(METADATA_USAGE, argc == 0 ? stderr : stdout);
    return argc == 0 ? EXIT_USAGE : EXIT_OK;
  }
  if (strcmp(argv[0], "push") == 0 || strcmp(argv[0], "show") == 0) {
    fprintf(stderr, "dp-engine metadata %s: not built yet (issue #3)\n", argv[0]);
    return EXIT_USAGE;
  }
  if (strcmp(argv[0], "validate") != 0)
    return usage_error(METADATA_USAGE, "unknown metadata command: %s", argv[0]);
  if (wants_help(argc, argv)) { fputs(METADATA_USAGE, stdout); return EXIT_OK; }
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      free(eng->cfg.metadata);
      eng->cfg.metadata = strdup(argv[++i]);
    } else {
      return usage_error(METADATA_USAGE, "unexpected argument: %s", argv[i]);
    }
  }
  dp_err e;
  dp_err_clear(&e);
  if (dp_load_metadata(eng, &e) != 0) {
    fprintf(stderr, "%s\n", e.msg);
    return EXIT_USAGE;
  }
  lua_State *L = eng->L;
  lua_getfield(L, -1, "systems");
  size_t ns = lua_objlen(L, -1);
  lua_getfield(L, -2, "entities");
  size_t ne = lua_objlen(L, -1);
  lua_getfield(L, -3, "gold");
  size_t ng = lua_objlen(L, -1);
  char *hash = dp_lua_strfield(L, -4, "hash");
  printf("metadata in %s is valid: %zu systems, %zu entities, %zu gold models (hash %.12s)\n",
         eng->cfg.metadata, ns, ne, ng, hash ? hash : "?");
  free(hash);
  return EXIT_OK;
}

static int cmd_run(dp_engine *eng, int argc, char **argv) {
  if (wants_help(argc, argv)) { fputs(RUN_USAGE, stdout); return EXIT_OK; }
  const char *system = NULL;
  const char **ents = calloc((size_t)argc + 1, sizeof *ents);
  dp_run_opts o = {ents, 0, 0, "manual", 0};
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--entity") == 0 && i + 1 < argc) {
      ents[o.nentities++] = argv[++i];
    } else if (strcmp(argv[i], "--layer") == 0 && i + 1 < argc) {
      const char *l = argv[++i];
      if (strcmp(l, "raw") == 0) o.layers |= DP_LAYER_RAW;
      else if (strcmp(l, "bronze") == 0) o.layers |= DP_LAYER_BRONZE;
      else if (strcmp(l, "silver") == 0) o.layers |= DP_LAYER_SILVER;
      else { free(ents); return usage_error(RUN_USAGE, "unknown layer: %s (raw, bronze or silver)", l); }
    } else if (strcmp(argv[i], "--full-refresh") == 0) {
      o.full_refresh = 1;
    } else if (argv[i][0] == '-') {
      free(ents);
      return usage_error(RUN_USAGE, "unknown option: %s", argv[i]);
    } else if (!system) {
      system = argv[i];
    } else {
      free(ents);
      return usage_error(RUN_USAGE, "unexpected argument: %s", argv[i]);
    }
  }
  if (!system) { free(ents); return usage_error(RUN_USAGE, "%s", "run needs a SYSTEM"); }
  if (o.layers == 0) o.layers = DP_LAYER_ALL;
  if (o.layers != DP_LAYER_RAW && o.layers != (DP_LAYER_RAW | DP_LAYER_BRONZE) && o.layers != DP_LAYER_ALL) {
    free(ents);
    return usage_error(RUN_USAGE, "%s",
                       "--layer must start at raw (raw, raw+bronze or all): each layer reads what the "
                       "layer before wrote in this run; rebuilding from stored data is `dp-engine replay` "
                       "(issue #5)");
  }
  dp_err e;
  dp_err_clear(&e);
  int failed = 0;
  int rc = dp_run_system(eng, system, &o, &failed, &e);
  free(ents);
  if (rc == 0) return EXIT_OK;
  fprintf(stderr, "dp-engine run: %s\n", e.msg);
  return failed ? EXIT_RUN_FAILED : EXIT_USAGE;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(USAGE, stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("dp-engine %s\n", DP_VERSION);
    return EXIT_OK;
  }
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    fputs(USAGE, stdout);
    return EXIT_OK;
  }
  static const char *later[][2] = {{"replay", "issue #5"}, {"gold", "issue #6"}, {"runs", "issue #5"},
                                   {"serve", "a later issue"}, {"secrets", "issue #7"},
                                   {"retention", "a later issue"}};
  for (size_t i = 0; i < sizeof later / sizeof later[0]; i++) {
    if (strcmp(cmd, later[i][0]) == 0) {
      fprintf(stderr, "dp-engine %s: not built yet (%s)\n", cmd, later[i][1]);
      return EXIT_USAGE;
    }
  }
  int (*fn)(dp_engine *, int, char **) = NULL;
  if (strcmp(cmd, "migrate") == 0) fn = cmd_migrate;
  else if (strcmp(cmd, "metadata") == 0) fn = cmd_metadata;
  else if (strcmp(cmd, "run") == 0) fn = cmd_run;
  if (!fn) {
    fprintf(stderr, "dp-engine: unknown command: %s\n\n%s", cmd, USAGE);
    return EXIT_USAGE;
  }

  /* The composition root: configuration and the engine context. */
  if (dp_log_configure(getenv("DP_LOG_LEVEL"), getenv("DP_LOG_FORMAT")) != 0) {
    fprintf(stderr, "dp-engine: DP_LOG_LEVEL must be debug|info|warn|error and DP_LOG_FORMAT text|json\n");
    return EXIT_USAGE;
  }
  if (sodium_init() < 0) {
    fprintf(stderr, "dp-engine: libsodium failed to initialise\n");
    return EXIT_USAGE;
  }
  mongoc_init();
  dp_mongo_log_init();
  dp_engine eng;
  memset(&eng, 0, sizeof eng);
  dp_err e;
  dp_err_clear(&e);
  int rc;
  if (dp_config_from_env(&eng.cfg, &e) != 0) {
    rc = fail_config(&e);
  } else {
    rc = fn(&eng, argc - 2, argv + 2);
  }
  dp_engine_close(&eng);
  mongoc_cleanup();
  return rc;
}
