/* cmd_serve.c - dp-engine serve. */
#include "cli.h"
#include "serve.h"

#include <stdio.h>

static const char *SERVE_USAGE =
    "usage: dp-engine serve\n"
    "\n"
    "Runs the platform as a service: schedule, file, after and callback triggers, and the HTTP API\n"
    "(GET /health, GET /metrics, POST /api/v1/systems/{name}/runs, POST /api/v1/gold/{model}/runs,\n"
    "GET /api/v1/runs, GET /api/v1/runs/{id}, POST /api/v1/hooks/{system}/{name}). docs/triggers.md.\n"
    "Environment: DP_LISTEN (127.0.0.1:8080), DP_API_TOKEN | DP_API_TOKEN_FILE (required unless\n"
    "  DP_API_INSECURE=1 on loopback), DP_WORKERS (2), DP_SHUTDOWN_GRACE (30 s), DP_FILE_SETTLE_MS\n"
    "  (3000), DP_API_MAX_BODY (1048576), and those of every command.\n"
    "Stops on SIGTERM/SIGINT (runs in flight get DP_SHUTDOWN_GRACE to finish); SIGHUP reloads.\n"
    "Exit codes: 0 after a clean shutdown, 2 when it cannot start.\n";

int dp_cmd_serve(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) {
    fputs(SERVE_USAGE, stdout);
    return DP_EXIT_OK;
  }
  if (argc > 0) return dp_cli_usage_error(SERVE_USAGE, "unexpected argument: %s", argv[0]);
  /* A database that answers but is not migrated: say so now, not in every run's error. (One that
   * does not answer yet is serve's to wait for: runs retry, /health reports it.) */
  dp_err e;
  dp_err_clear(&e);
  if (dp_engine_open_migrated(eng, &e) != 0 && e.code == DP_ECONFIG) return dp_cli_exit("serve", &e);
  if (eng->audit) { PQfinish(eng->audit); eng->audit = NULL; }
  if (eng->data) { PQfinish(eng->data); eng->data = NULL; }
  return dp_serve_main(eng);
}
