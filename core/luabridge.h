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
/* ---------- Script limits (docs/connectors.md, "What the sandbox promises") ----------
 * Every call into an untrusted script (a connector or gold script's top-level code, extract,
 * the callbacks a script hands the engine) runs under a guard: a CPU-time deadline checked by a
 * count hook, and a cap on how much the Lua heap may grow during the call (checked by the hook,
 * and enforced for large allocations by the state's allocator). The limits live here, so that
 * the run driver, gold and `serve`'s workers share them. Guards nest: an inner call gets the
 * smaller of its own limit and what is left of the outer one. */
typedef struct dp_script_limits {
  double seconds;      /* CPU seconds per call: DP_SCRIPT_TIMEOUT, default 300 */
  double load_seconds; /* CPU seconds to load a script: DP_SCRIPT_LOAD_TIMEOUT, default 10 */
  double memory_mb;    /* heap growth per call, MiB: DP_SCRIPT_MEMORY, default 1024 */
  double wall_seconds; /* wall-clock seconds per call, waiting included: DP_SCRIPT_WALL_TIMEOUT,
                        * default 21600 (the backstop for a script that mostly waits) */
} dp_script_limits;

typedef enum { DP_SCRIPT_CALL = 0, DP_SCRIPT_LOAD = 1 } dp_script_kind;

/* Reads the limits from the environment (defaults above). DP_ECONFIG for a value that is not
 * a positive number. */
int dp_script_limits_from_env(dp_script_limits *l, dp_err *e);
/* Calls the function below its nargs arguments under the state's limits. what names the
 * script and where it runs ("connectors/x.lua: extract (system bank, entity tx)"); it starts
 * every error message. On failure sets e (DP_ELUA; for a limit, the message names the limit
 * and its variable), pops function and arguments, and returns DP_ELUA. Error values that are
 * not strings become "(error object is a T value)" without calling their metamethods. */
int dp_script_pcall(lua_State *L, const char *what, dp_script_kind kind, int nargs, int nresults, dp_err *e);
/* For C functions scripts call that may run long (the pattern matcher): inside a guarded call,
 * raises the limit's error when the time or memory limit is passed; outside one, nothing. */
void dp_script_check_limits(lua_State *L);
/* dp.core registrar: script_call(what, kind, fn, ...), script_limits([t]), script_memory_left(). */
void dp_script_lua_register(lua_State *L);

/* Reads the validated entity table at idx into ent (ent owns copies of all strings). */
int dp_entity_from_lua(lua_State *L, int idx, dp_entity *ent, dp_err *e);
/* Pushes the rows of r as an array of tables (column name -> text; SQL NULL absent). */
void dp_lua_push_pg_rows(lua_State *L, const PGresult *r);
/* Returns t[key] as a heap string copy (caller frees), or NULL when absent/not a string. */
char *dp_lua_strfield(lua_State *L, int idx, const char *key);

#endif
