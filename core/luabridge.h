/* luabridge.h - the engine's Lua state: creation, the one protected-call helper, and the
 * conversion of validated metadata tables into C structs. One lua_State per run worker. */
#ifndef DP_LUABRIDGE_H
#define DP_LUABRIDGE_H

#include <lua.h>
#include "engine.h"
#include "meta.h"

/* Creates the trusted engine state: standard libraries, package.path on DP_HOME/lua,
 * dp.core preloaded, dp.engine required and configured. Returns NULL with e set. */
lua_State *dp_lua_new(const dp_config *cfg, dp_err *e);
/* lua_pcall with a traceback handler; on error sets e (DP_ELUA, message + traceback) and pops it. */
int dp_lua_pcall(lua_State *L, int nargs, int nresults, dp_err *e);
/* Reads the validated entity table at idx into ent (ent owns copies of all strings). */
int dp_entity_from_lua(lua_State *L, int idx, dp_entity *ent, dp_err *e);
/* Returns t[key] as a heap string copy (caller frees), or NULL when absent/not a string. */
char *dp_lua_strfield(lua_State *L, int idx, const char *key);

#endif
