/* config.c - the table of environment variables (config.h): lookup, --help and dp.core. */
#include "config.h"
#include "log.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *name, *def, *desc;
} config_var;

static const config_var vars[] = {
#define DP__CONFIG_ROW(name, def, desc) {name, def, desc},
    DP_CONFIG_MAP(DP__CONFIG_ROW)
#undef DP__CONFIG_ROW
};
enum { NVARS = sizeof vars / sizeof vars[0] };

static const config_var *find(const char *name) {
  for (size_t i = 0; i < NVARS; i++)
    if (strcmp(vars[i].name, name) == 0) return &vars[i];
  dp_log(DP_LOG_DEBUG, "config: %s is not in the table of config.h", name);
  return NULL;
}

const char *dp_config_env(const char *name) {
  if (!find(name)) return NULL;
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

const char *dp_config_get(const char *name) {
  const config_var *c = find(name);
  if (!c) return NULL;
  const char *v = getenv(name);
  if (v && *v) return v;
  return c->def && c->def[0] != '(' ? c->def : NULL; /* "(…)": computed by the caller */
}

void dp_config_print_help(FILE *out) {
  fputs("Environment (docs/index.md#configuration-environment):\n", out);
  for (size_t i = 0; i < NVARS; i++) {
    char def[64] = "";
    if (vars[i].def) snprintf(def, sizeof def, " [%s]", vars[i].def);
    fprintf(out, "  %-26s %s%s\n", vars[i].name, vars[i].desc, def);
  }
}

static int l_config_vars(lua_State *L) {
  lua_createtable(L, NVARS, 0);
  for (size_t i = 0; i < NVARS; i++) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, vars[i].name);
    lua_setfield(L, -2, "name");
    if (vars[i].def) {
      lua_pushstring(L, vars[i].def);
      lua_setfield(L, -2, "default");
    }
    lua_pushstring(L, vars[i].desc);
    lua_setfield(L, -2, "description");
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

void dp_config_lua_register(lua_State *L) {
  lua_pushcfunction(L, l_config_vars);
  lua_setfield(L, -2, "config_vars");
}
