/* cmd_lineage.c - dp-engine lineage: systems -> entities -> gold models with the status of their
 * last run (docs/cli.md#lineage). The graph comes from the metadata, the statuses from the audit;
 * lua/dp/lineage.lua draws it. */
#include "cli.h"
#include "lineage.h"
#include "luabridge.h"
#include "pg.h"
#include "run.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

static const char *LINEAGE_USAGE =
    "usage: dp-engine lineage [--format text|dot|mermaid] [--json]\n"
    "\n"
    "Prints the graph of the systems, their entities and the gold models that read them, each\n"
    "with the status and time of its last run from the audit (or \"never run\"). --format dot is\n"
    "Graphviz input (dot -Tsvg), mermaid a Mermaid flowchart; --json the nodes and edges.\n";

/* The last run of every node (lineage.h) into the table on top of L: id -> {status, last_run,
 * run_id}. */
static int read_statuses(PGconn *c, lua_State *L, dp_err *e) {
  PGresult *r = NULL;
  int rc = dp_lineage_statuses(c, &r, e);
  if (rc) return rc;
  for (int i = 0; i < PQntuples(r); i++) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, PQgetvalue(r, i, DP_LINEAGE_STATUS));
    lua_setfield(L, -2, "status");
    lua_pushstring(L, PQgetvalue(r, i, DP_LINEAGE_LAST_RUN));
    lua_setfield(L, -2, "last_run");
    lua_pushstring(L, PQgetvalue(r, i, DP_LINEAGE_RUN_ID));
    lua_setfield(L, -2, "run_id");
    lua_setfield(L, -2, PQgetvalue(r, i, DP_LINEAGE_ID));
  }
  PQclear(r);
  return 0;
}

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
  if (dp_load_metadata(eng, &e)) return dp_cli_exit("lineage", &e);
  lua_State *L = eng->L;
  int meta_idx = lua_gettop(L);
  if (dp_engine_open_migrated(eng, &e)) return dp_cli_exit("lineage", &e);
  lua_getglobal(L, "require");
  lua_pushstring(L, "dp.lineage");
  if (dp_lua_pcall(L, 1, 1, &e)) return dp_cli_exit("lineage", &e);
  lua_getfield(L, -1, "render");
  lua_pushvalue(L, meta_idx);
  lua_newtable(L);
  if (read_statuses(eng->audit, L, &e)) return dp_cli_exit("lineage", &e);
  lua_pushstring(L, format);
  if (dp_lua_pcall(L, 3, 1, &e)) return dp_cli_exit("lineage", &e);
  size_t len;
  const char *out = lua_tolstring(L, -1, &len);
  fwrite(out, 1, len, stdout);
  lua_settop(L, meta_idx - 1);
  return DP_EXIT_OK;
}
