/* cmd_connectors.c - dp-engine connectors list|show: the options of each connector type, from
 * the schema DSL's field descriptions (rendered by lua/dp/connectors_doc.lua). */
#include "cli.h"
#include "luabridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *CONNECTORS_USAGE =
    "usage: dp-engine connectors list [--json]\n"
    "       dp-engine connectors show TYPE [--json | --markdown]\n"
    "\n"
    "list      the connector types in DP_SCRIPTS/connectors/ with their descriptions\n"
    "show      the system options and entity source options of one type: name, type, default\n"
    "          and meaning of each, from its schemas; --json as one document, --markdown as the\n"
    "          tables of docs/connectors.md (between their generated markers)\n"
    "\n"
    "Exit codes: 0 success, 2 unknown type, a connector that does not load, or usage.\n";

int dp_cmd_connectors(dp_engine *eng, int argc, char **argv) {
  if (argc == 0) { fputs(CONNECTORS_USAGE, stderr); return DP_EXIT_USAGE; }
  if (dp_cli_wants_help(argc, argv)) { fputs(CONNECTORS_USAGE, stdout); return DP_EXIT_OK; }
  const char *sub = argv[0];
  int is_list = strcmp(sub, "list") == 0, is_show = strcmp(sub, "show") == 0;
  if (!is_list && !is_show) return dp_cli_usage_error(CONNECTORS_USAGE, "unknown connectors command: %s", sub);
  const char *type = NULL, *format = "text";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) format = "json";
    else if (is_show && strcmp(argv[i], "--markdown") == 0) format = "markdown";
    else if (is_show && !type && argv[i][0] != '-') type = argv[i];
    else return dp_cli_usage_error(CONNECTORS_USAGE, "unexpected argument: %s", argv[i]);
  }
  if (is_show && !type) return dp_cli_usage_error(CONNECTORS_USAGE, "%s", "connectors show needs a TYPE");
  dp_err e;
  dp_err_clear(&e);
  const char *cmd = is_list ? "connectors list" : "connectors show";
  if (!eng->L && !(eng->L = dp_lua_new(&eng->cfg, &e))) return dp_cli_exit(cmd, &e);
  char *text;
  size_t len;
  if (dp_bridge_connectors(eng->L, is_list ? NULL : type, format, &text, &len, &e)) return dp_cli_exit(cmd, &e);
  fwrite(text, 1, len, stdout);
  free(text);
  return DP_EXIT_OK;
}
