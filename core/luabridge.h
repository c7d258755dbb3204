/* luabridge.h - the boundary between the C core and the engine's Lua: the state's creation,
 * the one protected-call helper, every call into lua/dp/engine.lua (dp_engine_call and the
 * typed calls below, which take and return C values only), and the conversion of validated
 * metadata into C structs (dp_snapshot). Outside this file, only the dp.core module's own
 * functions (luamod.c and the *_lua_register parts of other files) touch the Lua stack.
 * One lua_State per run worker. */
#ifndef DP_LUABRIDGE_H
#define DP_LUABRIDGE_H

#include <lua.h>
#include "engine.h"
#include "meta.h"
#include "metaload.h"
#include "metastore.h"
#include "snapshot.h"

struct dp_gold_builder;

/* The dp.core module's opener (luamod.c): preloaded in the engine's states, and what
 * `require "dp.core"` finds in build/dp/core.so. */
int luaopen_dp_core(lua_State *L);
/* Creates the trusted engine state: standard libraries, package.path on DP_HOME/lua,
 * dp.core preloaded, dp.engine required and configured. Returns NULL with e set. */
lua_State *dp_lua_new(const dp_config *cfg, dp_err *e);
/* lua_pcall with a traceback handler; on error sets e (DP_ELUA, message + traceback) and pops it. */
int dp_lua_pcall(lua_State *L, int nargs, int nresults, dp_err *e);
/* Calls engine.<fn> (lua/dp/engine.lua) with the nargs values on top of the stack, through
 * dp_lua_pcall; leaves nres results. The one way into the engine's Lua (the calls below use it). */
int dp_engine_call(lua_State *L, const char *fn, int nargs, int nres, dp_err *e);

/* ---------- Metadata: validated in Lua, read by C as structs ----------
 * dp_meta_validate validates t in L and keeps the validated meta table in L's registry (the
 * state's current metadata, which the calls below hand to the engine's Lua), with meta.source set.
 * Errors: DP_EMETA with every validation error in e->msg. */
int dp_meta_validate(lua_State *L, const dp_meta_texts *t, dp_err *e);
/* The state's current metadata as a new snapshot (one reference; dp_snapshot_unref frees it):
 * systems, gold models (with their columns), triggers, entities. Its meta texts stay empty. */
int dp_meta_snapshot(lua_State *L, dp_snapshot **out, dp_err *e);
/* validate, push and show load every system's connector, a disabled system's too. */
void dp_meta_check_all_connectors(lua_State *L);
/* Every gold model's script of the current metadata compiles and has the right shape; else
 * DP_EMETA listing them under scripts_dir. */
int dp_meta_check_gold_scripts(lua_State *L, const char *scripts_dir, dp_err *e);
/* engine.show(meta, name, as_json): *text (caller frees) or DP_ENOTFOUND for an unknown name. */
int dp_meta_show(lua_State *L, const char *name, int as_json, char **text, dp_err *e);
/* What metadata push stores: the texts, hash and per-file items of the current metadata, as
 * heap copies in set (free with dp_meta_push_set_free; set->source and engine_version are left
 * to the caller). */
int dp_meta_push_set(lua_State *L, dp_metastore_set *set, dp_err *e);
void dp_meta_push_set_free(dp_metastore_set *set);

/* ---------- A system's connector: extract and the work after the commit ---------- */
/* Called for every record a connector emits (i counts from 1 within the batch); returns 0, or
 * an error whose message e carries in full (it becomes the Lua error the connector sees). */
typedef int (*dp_emit_fn)(void *ud, int i, const char *json, size_t len, dp_err *e);
typedef struct dp_extract_call {
  const char *system, *entity;
  const char *cursor;    /* the stored delta cursor, or NULL */
  const char *event;     /* a callback's JSON body (ctx.event), or NULL */
  dp_emit_fn emit;
  void (*emitted)(void *ud, int n); /* after each batch of n records, or NULL */
  void *ud;
} dp_extract_call;
/* engine.extract(meta, system, entity, cursor, emit, log, event) with the current metadata.
 * *cursor_after: the connector's new cursor (caller frees), or NULL. */
int dp_bridge_extract(lua_State *L, const dp_extract_call *c, char **cursor_after, dp_err *e);
/* engine.after_commit(system, entity), or with entity NULL engine.discard_pending(): failures
 * and what the hooks report are logged as warnings (the data is committed). */
void dp_bridge_commit_hook(lua_State *L, const char *system, const char *entity);

/* ---------- Gold ---------- */
/* engine.gold_plan: the models to run, upstream first (*plan: nplan heap strings in a heap
 * array, caller frees). models[0..n) named, or system set: the models after its entities. */
int dp_bridge_gold_plan(lua_State *L, const char *const *models, int n, const char *system, char ***plan,
                        size_t *nplan, dp_err *e);
/* engine.gold_build: runs model name's script into b (borrowed; unusable from Lua after). */
int dp_bridge_gold_build(lua_State *L, const char *name, struct dp_gold_builder *b, const char *run_id,
                         const char *run_ts, const char *pg_url, dp_err *e);
/* ---------- Commands: what they need from the engine's Lua, as C values ---------- */
/* What `doctor` checks in the current metadata (engine.doctor_facts). */
typedef struct dp_doctor_fact {
  char *system, *value;
} dp_doctor_fact;
typedef struct dp_doctor_facts {
  dp_doctor_fact *inboxes; /* every enabled file system: its inbox */
  size_t ninboxes;
  dp_doctor_fact *rest;    /* every enabled rest system: its base_url */
  size_t nrest;
  char **secrets;          /* the name of every secret reference in the metadata */
  size_t nsecrets;
} dp_doctor_facts;
int dp_bridge_doctor_facts(lua_State *L, dp_doctor_facts *f, dp_err *e);
void dp_doctor_facts_free(dp_doctor_facts *f);

/* engine.lineage(meta, statuses, format) with the current metadata: *text (caller frees).
 * statuses: a result of dp_lineage_statuses (lineage.h). */
int dp_bridge_lineage(lua_State *L, const PGresult *statuses, const char *format, char **text, dp_err *e);

/* engine.connectors_list(format == "json") when type is NULL, else engine.connectors_show(type,
 * format): *text (caller frees, *len bytes). A type that does not exist or load: DP_ECONFIG. */
int dp_bridge_connectors(lua_State *L, const char *type, const char *format, char **text, size_t *len, dp_err *e);

/* engine.init_system / init_connector (docs/init.md). */
typedef struct dp_init_sample {
  const char *file, *entity; /* entity NULL: named after the file */
} dp_init_sample;
typedef struct dp_init_opts {
  int is_system;
  const char *name, *type, *dir, *base_url, *path, *nested; /* NULL: not given */
  const dp_init_sample *samples;
  size_t nsamples;
} dp_init_opts;
typedef struct dp_init_file {
  char *path, *text;
  size_t len;
} dp_init_file;
typedef struct dp_init_result {
  char *report;         /* or NULL */
  dp_init_file *files;  /* what to write */
  size_t nfiles;
  char **written;       /* the names to report as written */
  size_t nwritten;
  char *error;          /* the refusal (an existing name, a bad sample...), in full */
} dp_init_result;
/* 0 and *r; or DP_EINVAL with r->error when init refuses; or DP_ELUA/DP_ENOMEM with e. */
int dp_bridge_init(lua_State *L, const dp_init_opts *o, dp_init_result *r, dp_err *e);
void dp_init_result_free(dp_init_result *r);

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

/* Reads the validated entity table at idx into ent (ent owns copies of all strings); dp.core's
 * cast and row_hashes read their argument with it too. */
int dp_entity_from_lua(lua_State *L, int idx, dp_entity *ent, dp_err *e);
/* Pushes the rows of r as an array of tables (column name -> text; SQL NULL absent). */
void dp_lua_push_pg_rows(lua_State *L, const PGresult *r);
/* Returns t[key] as a heap string copy (caller frees), or NULL when absent/not a string. */
char *dp_lua_strfield(lua_State *L, int idx, const char *key);

#endif
