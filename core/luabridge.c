/* luabridge.c - engine Lua state, protected calls, metadata tables -> C structs. */
#include "config.h"
#include "luabridge.h"

#include <lauxlib.h>
#include "json.h"
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

int luaopen_dp_core(lua_State *L);

/* Error values that are not strings are described, never converted with their __tostring: that
 * could be a script's function, and the handler runs on the engine's path, unguarded. */
static int traceback(lua_State *L) {
  const char *msg = lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER ? lua_tostring(L, 1) : NULL;
  if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int dp_lua_pcall(lua_State *L, int nargs, int nresults, dp_err *e) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  int st = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  if (st != 0) {
    const char *m = lua_tostring(L, -1);
    dp_err_set(e, DP_ELUA, "%s", m ? m : "unknown Lua error");
    lua_pop(L, 1);
    return DP_ELUA;
  }
  return 0;
}

lua_State *dp_lua_new(const dp_config *cfg, dp_err *e) {
  lua_State *L = luaL_newstate();
  if (!L) {
    dp_err_set(e, DP_ENOMEM, "cannot create a Lua state");
    return NULL;
  }
  luaL_openlibs(L);
  /* package.path: the engine's own library first. */
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua", cfg->home, cfg->home);
  lua_setfield(L, -2, "path");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_dp_core);
  lua_setfield(L, -2, "dp.core");
  lua_pop(L, 2);

  lua_getglobal(L, "require");
  lua_pushstring(L, "dp.engine");
  if (dp_lua_pcall(L, 1, 1, e)) goto fail;
  lua_getfield(L, -1, "configure");
  lua_newtable(L);
  lua_pushstring(L, cfg->scripts);
  lua_setfield(L, -2, "scripts_dir");
  lua_pushstring(L, cfg->data_dir);
  lua_setfield(L, -2, "data_dir");
  if (dp_lua_pcall(L, 1, 0, e)) goto fail;
  lua_setglobal(L, "__dp_engine"); /* the trusted state keeps the module at hand */
  return L;
fail:
  lua_close(L);
  return NULL;
}

char *dp_lua_strfield(lua_State *L, int idx, const char *key) {
  lua_getfield(L, idx, key);
  char *s = lua_type(L, -1) == LUA_TSTRING ? strdup(lua_tostring(L, -1)) : NULL;
  lua_pop(L, 1);
  return s;
}

static int intfield(lua_State *L, int idx, const char *key, int def) {
  lua_getfield(L, idx, key);
  int v = lua_type(L, -1) == LUA_TNUMBER ? (int)lua_tointeger(L, -1) : def;
  lua_pop(L, 1);
  return v;
}

static int boolfield(lua_State *L, int idx, const char *key, int def) {
  lua_getfield(L, idx, key);
  int v = lua_type(L, -1) == LUA_TBOOLEAN ? lua_toboolean(L, -1) : def;
  lua_pop(L, 1);
  return v;
}

static int streq_field(lua_State *L, int idx, const char *key, const char *val) {
  lua_getfield(L, idx, key);
  int r = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), val) == 0;
  lua_pop(L, 1);
  return r;
}

int dp_entity_from_lua(lua_State *L, int idx, dp_entity *ent, dp_err *e) {
  int rc = 0;
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  memset(ent, 0, sizeof *ent);
  ent->system = dp_lua_strfield(L, idx, "system");
  ent->name = dp_lua_strfield(L, idx, "name");
  ent->cursor = dp_lua_strfield(L, idx, "cursor");
  ent->full_load = !streq_field(L, idx, "load_type", "delta");
  ent->delete_mode = streq_field(L, idx, "delete_detection", "tombstone") ? DP_DELETE_TOMBSTONE
                     : streq_field(L, idx, "delete_detection", "ignore") ? DP_DELETE_IGNORE
                                                                          : DP_DELETE_CLOSE;
  ent->fail_on_type_error = streq_field(L, idx, "on_type_error", "fail");
  if (!ent->system || !ent->name) {
    rc = dp_err_set(e, DP_EMETA, "entity without system or name");
    goto cleanup;
  }
  lua_getfield(L, idx, "columns");
  size_t n = lua_objlen(L, -1);
  ent->cols = calloc(n ? n : 1, sizeof *ent->cols);
  if (!ent->cols) { lua_pop(L, 1); rc = dp_err_set(e, DP_ENOMEM, "out of memory"); goto cleanup; }
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, -1, (int)i + 1);
    int ci = lua_gettop(L);
    dp_column *c = &ent->cols[i];
    ent->ncols = i + 1;
    c->name = dp_lua_strfield(L, ci, "name");
    c->path = dp_lua_strfield(L, ci, "path");
    if (!c->path && c->name) c->path = strdup(c->name);
    char *type = dp_lua_strfield(L, ci, "type");
    int bad = !c->name || !type || dp_type_parse(type, &c->type) != 0;
    free(type);
    c->length = intfield(L, ci, "length", 0);
    c->precision = intfield(L, ci, "precision", 38);
    c->scale = intfield(L, ci, "scale", 0);
    c->nullable = boolfield(L, ci, "nullable", 1);
    c->scd1 = streq_field(L, ci, "history", "scd1");
    lua_pop(L, 1);
    if (bad) {
      lua_pop(L, 1);
      rc = dp_err_set(e, DP_EMETA, "entity %s: column %zu has no valid name or type", ent->name, i);
      goto cleanup;
    }
  }
  lua_pop(L, 1);
  ent->marker_col = ent->valid_from_col = -1;
  {
    char *vf = dp_lua_strfield(L, idx, "valid_from");
    for (size_t i = 0; vf && i < ent->ncols; i++)
      if (strcmp(ent->cols[i].name, vf) == 0) ent->valid_from_col = (int)i;
    free(vf);
    lua_getfield(L, idx, "delete_marker");
    if (lua_istable(L, -1)) {
      char *mc = dp_lua_strfield(L, lua_gettop(L), "column");
      for (size_t i = 0; mc && i < ent->ncols; i++)
        if (strcmp(ent->cols[i].name, mc) == 0) ent->marker_col = (int)i;
      free(mc);
      lua_getfield(L, -1, "value");
      char buf[64];
      if (lua_type(L, -1) == LUA_TBOOLEAN) ent->marker_json = strdup(lua_toboolean(L, -1) ? "true" : "false");
      else if (lua_type(L, -1) == LUA_TNUMBER) {
        snprintf(buf, sizeof buf, "%.17g", lua_tonumber(L, -1));
        ent->marker_json = strdup(buf);
      } else if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *sv = lua_tolstring(L, -1, &n);
        dp_buf jb = DP_BUF_INIT;
        dp_json_put_string(&jb, sv, n);
        ent->marker_json = dp_buf_steal(&jb);
      }
      lua_pop(L, 1);
      if (ent->marker_col < 0 || !ent->marker_json) {
        lua_pop(L, 1);
        rc = dp_err_set(e, DP_EMETA, "entity %s: delete_marker needs a column and a value", ent->name);
        goto cleanup;
      }
    }
    lua_pop(L, 1);
  }
  lua_getfield(L, idx, "primary_key");
  size_t npk = lua_type(L, -1) == LUA_TTABLE ? lua_objlen(L, -1) : 0;
  ent->pk = calloc(npk ? npk : 1, sizeof *ent->pk);
  for (size_t k = 0; k < npk && rc == 0; k++) {
    lua_rawgeti(L, -1, (int)k + 1);
    const char *pkname = lua_tostring(L, -1);
    size_t found = ent->ncols;
    for (size_t i = 0; pkname && i < ent->ncols; i++)
      if (strcmp(ent->cols[i].name, pkname) == 0) found = i;
    if (found == ent->ncols)
      rc = dp_err_set(e, DP_EMETA, "entity %s: primary key column %s is not a column", ent->name,
                      pkname ? pkname : "?");
    else {
      ent->pk[ent->npk++] = found;
      ent->cols[found].key = true;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
cleanup:
  if (rc) dp_entity_free(ent);
  return rc;
}

/* ---------- Script limits (luabridge.h) ---------- */

#include <math.h>
#include <stdint.h>
#include <time.h>

#define GUARD_HOOK_COUNT 1000 /* instructions between two checks of wall clock and heap */
#define GUARD_CPU_EVERY 10     /* hooks between two reads of the thread's CPU time (a syscall) */
#define GUARD_BIG_ALLOC (64 * 1024) /* growth the allocator refuses once over the cap */
#define GUARD_HEADROOM (8 * 1024 * 1024) /* small growth allowed past the cap (error paths) */

enum { HIT_NONE = 0, HIT_TIME, HIT_MEMORY, HIT_WALL };

/* One per Lua state, a userdata in the registry (created on first use). */
typedef struct guard {
  dp_script_limits lim;
  char config_err[300]; /* a bad DP_SCRIPT_* variable: every script call fails with it */
  int depth;            /* nested guarded calls under way */
  double deadline;      /* thread CPU seconds */
  double wall_deadline; /* CLOCK_MONOTONIC seconds */
  double limit_s;       /* the time limit in force, and its variable, for the message */
  const char *limit_var;
  int64_t mem_base, mem_cap; /* bytes, against allocated */
  int hit;
  unsigned hooks;
  int last_hit; /* what stopped the last guarded call that returned (for script_call's reason) */
  int64_t allocated; /* net bytes through the allocator since the guard was made */
  lua_Alloc orig;
  void *orig_ud;
  char what[512];
} guard;

static char guard_key;

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_limit(const char *var, double def, double *out, char *err, size_t cap) {
  const char *v = dp_config_env(var);
  *out = def;
  if (!v || !*v) return 0;
  char *end;
  double d = strtod(v, &end);
  if (end == v || *end != '\0' || !(d > 0) || !isfinite(d)) {
    snprintf(err, cap, "%s: \"%.40s\" is not a positive number", var, v);
    return -1;
  }
  *out = d;
  return 0;
}

int dp_script_limits_from_env(dp_script_limits *l, dp_err *e) {
  char err[200] = "";
  if (parse_limit("DP_SCRIPT_TIMEOUT", 300, &l->seconds, err, sizeof err) ||
      parse_limit("DP_SCRIPT_LOAD_TIMEOUT", 10, &l->load_seconds, err, sizeof err) ||
      parse_limit("DP_SCRIPT_MEMORY", 1024, &l->memory_mb, err, sizeof err) ||
      parse_limit("DP_SCRIPT_WALL_TIMEOUT", 21600, &l->wall_seconds, err, sizeof err))
    return dp_err_set(e, DP_ECONFIG, "%s", err);
  return 0;
}

/* Counts every allocation. During a guarded call it refuses a large growth that would pass the
 * cap, and any growth once the heap is GUARD_HEADROOM past it: a C function (cjson.decode
 * building millions of small tables) never meets the hook, so the allocator is where the cap
 * holds. LuaJIT then raises "not enough memory", which the guard reports as the limit; the
 * headroom leaves room for the error's own path. */
static void *guard_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  guard *g = ud;
  if (nsize > osize && g->depth > 0) {
    int64_t over = g->allocated + (int64_t)(nsize - osize) - g->mem_base - g->mem_cap;
    if (over > 0 && (nsize - osize >= GUARD_BIG_ALLOC || over > GUARD_HEADROOM)) {
      g->hit = HIT_MEMORY;
      return NULL;
    }
  }
  void *p = g->orig(g->orig_ud, ptr, osize, nsize);
  if (p || nsize == 0) g->allocated += (int64_t)nsize - (int64_t)osize;
  return p;
}

/* __gc of the guard (at lua_close): give the state its own allocator back before the guard's
 * memory goes. */
static int guard_gc(lua_State *L) {
  guard *g = lua_touserdata(L, 1);
  if (g->orig) lua_setallocf(L, g->orig, g->orig_ud);
  g->orig = NULL;
  return 0;
}

static guard *guard_get(lua_State *L, int create) {
  lua_pushlightuserdata(L, &guard_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  guard *g = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (g || !create) return g;
  g = lua_newuserdata(L, sizeof *g);
  memset(g, 0, sizeof *g);
  dp_err e;
  dp_err_clear(&e);
  if (dp_script_limits_from_env(&g->lim, &e)) {
    snprintf(g->config_err, sizeof g->config_err, "%s", e.msg);
    g->lim = (dp_script_limits){300, 10, 1024, 21600};
  }
  lua_newtable(L);
  lua_pushcfunction(L, guard_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushlightuserdata(L, &guard_key);
  lua_insert(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
  g->orig = lua_getallocf(L, &g->orig_ud);
  lua_setallocf(L, guard_alloc, g);
  return g;
}

static void guard_raise(lua_State *L, guard *g) {
  lua_pushstring(L, g->hit == HIT_TIME ? "script time limit reached" : "script memory limit reached");
  lua_error(L);
}

static void guard_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  guard *g = guard_get(L, 0);
  if (!g || g->depth == 0) return;
  if (!g->hit && ++g->hooks % GUARD_CPU_EVERY == 0 && cpu_now() > g->deadline) g->hit = HIT_TIME;
  if (!g->hit && wall_now() > g->wall_deadline) g->hit = HIT_WALL;
  if (!g->hit && g->allocated - g->mem_base > g->mem_cap) {
    lua_gc(L, LUA_GCCOLLECT, 0); /* garbage does not count */
    if (g->allocated - g->mem_base > g->mem_cap) g->hit = HIT_MEMORY;
  }
  if (g->hit) {
    /* from now on every instruction raises: a script that catches the error with pcall or
     * coroutine.resume cannot go on running */
    lua_sethook(L, guard_hook, LUA_MASKCOUNT, 1);
    guard_raise(L, g);
  }
}

void dp_script_check_limits(lua_State *L) {
  guard *g = guard_get(L, 0);
  if (!g || g->depth == 0) return;
  if (!g->hit && cpu_now() > g->deadline) g->hit = HIT_TIME;
  if (!g->hit && wall_now() > g->wall_deadline) g->hit = HIT_WALL;
  if (!g->hit && g->allocated - g->mem_base > g->mem_cap) g->hit = HIT_MEMORY;
  if (g->hit) {
    lua_sethook(L, guard_hook, LUA_MASKCOUNT, 1); /* as the hook does: no pcall gets past it */
    guard_raise(L, g);
  }
}

/* Error handler of guarded calls: strings pass; any other error value is described without
 * calling its metamethods (a script's __tostring never runs on the engine's path). */
static int guard_handler(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) return 1;
  lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  return 1;
}

int dp_script_pcall(lua_State *L, const char *what, dp_script_kind kind, int nargs, int nresults, dp_err *e) {
  guard *g = guard_get(L, 1);
  if (g->config_err[0]) {
    lua_pop(L, nargs + 1);
    return dp_err_set(e, DP_ECONFIG, "%s: %s", what, g->config_err);
  }
  guard saved = *g; /* the outer call's limits, restored after */
  double now = cpu_now();
  double secs = kind == DP_SCRIPT_LOAD ? g->lim.load_seconds : g->lim.seconds;
  int64_t cap = (int64_t)(g->lim.memory_mb * 1024.0 * 1024.0);
  if (g->depth == 0 || now + secs < g->deadline) {
    g->deadline = now + secs;
    g->limit_s = secs;
    g->limit_var = kind == DP_SCRIPT_LOAD ? "DP_SCRIPT_LOAD_TIMEOUT" : "DP_SCRIPT_TIMEOUT";
  }
  double wall = wall_now() + g->lim.wall_seconds;
  if (g->depth == 0 || wall < g->wall_deadline) g->wall_deadline = wall;
  if (g->depth == 0 || g->allocated + cap < g->mem_base + g->mem_cap) {
    g->mem_base = g->allocated;
    g->mem_cap = cap;
  }
  if (g->depth == 0) {
    g->hit = HIT_NONE;
    lua_sethook(L, guard_hook, LUA_MASKCOUNT, GUARD_HOOK_COUNT);
  }
  snprintf(g->what, sizeof g->what, "%s", what);
  g->depth++;

  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, guard_handler);
  lua_insert(L, base);
  int st = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  /* a call that did little Lua work between the engine calls it made may not have met the
   * hook: the limits are checked once more when it returns */
  if (!g->hit && cpu_now() > g->deadline) g->hit = HIT_TIME;
  if (!g->hit && wall_now() > g->wall_deadline) g->hit = HIT_WALL;
  if (!g->hit && g->allocated - g->mem_base > g->mem_cap) { /* what it built and kept counts too */
    lua_gc(L, LUA_GCCOLLECT, 0);
    if (g->allocated - g->mem_base > g->mem_cap) g->hit = HIT_MEMORY;
  }
  int hit = g->hit;
  g->last_hit = hit;
  g->depth--;
  if (g->depth == 0) lua_sethook(L, NULL, 0, 0);
  int rc = 0;
  if (hit == HIT_TIME) {
    rc = dp_err_set(e, DP_ELUA, "%s: stopped: the script ran past its time limit of %g s of CPU time (%s)", what,
                    g->limit_s, g->limit_var);
  } else if (hit == HIT_WALL) {
    rc = dp_err_set(e, DP_ELUA, "%s: stopped: the script ran past its wall-clock limit of %g s (DP_SCRIPT_WALL_TIMEOUT)",
                    what, g->lim.wall_seconds);
  } else if (hit == HIT_MEMORY) {
    rc = dp_err_set(e, DP_ELUA, "%s: stopped: the script went over its memory limit of %g MiB (DP_SCRIPT_MEMORY)",
                    what, g->lim.memory_mb);
  } else if (st != 0) {
    const char *m = lua_tostring(L, -1);
    rc = dp_err_set(e, DP_ELUA, "%s", m ? m : "unknown Lua error");
  }
  if (st != 0) lua_pop(L, 1);
  else if (rc && nresults != LUA_MULTRET) lua_pop(L, nresults);
  else if (rc) lua_settop(L, base - 1);
  /* back to the outer call's limits */
  g->deadline = saved.deadline;
  g->wall_deadline = saved.wall_deadline;
  g->limit_s = saved.limit_s;
  g->limit_var = saved.limit_var;
  g->mem_base = saved.mem_base;
  g->mem_cap = saved.mem_cap;
  memcpy(g->what, saved.what, sizeof g->what);
  if (g->depth > 0 && !saved.hit) g->hit = HIT_NONE;
  if (g->depth > 0 && g->hit == HIT_NONE) lua_sethook(L, guard_hook, LUA_MASKCOUNT, GUARD_HOOK_COUNT);
  return rc;
}

/* script_call(what, kind, fn, ...) -> true, results... | false, message, reason ("time",
 * "wall", "memory", "error" or "config"). kind: "call" or "load". */
static int l_script_call(lua_State *L) {
  const char *what = luaL_checkstring(L, 1);
  const char *k = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  dp_script_kind kind = strcmp(k, "load") == 0 ? DP_SCRIPT_LOAD : DP_SCRIPT_CALL;
  if (kind == DP_SCRIPT_CALL && strcmp(k, "call") != 0) return luaL_error(L, "script_call: kind must be call or load");
  int nargs = lua_gettop(L) - 3;
  lua_pushboolean(L, 1);
  lua_insert(L, 3); /* true, fn, args... */
  dp_err e;
  dp_err_clear(&e);
  guard *g = guard_get(L, 1);
  int rc = dp_script_pcall(L, what, kind, nargs, LUA_MULTRET, &e);
  if (rc == 0) return lua_gettop(L) - 2;
  int hit = g->last_hit;
  lua_settop(L, 0);
  lua_pushboolean(L, 0);
  lua_pushstring(L, e.msg);
  lua_pushstring(L, e.code == DP_ECONFIG ? "config"
                    : hit == HIT_WALL ? "wall" : hit == HIT_TIME ? "time" : hit == HIT_MEMORY ? "memory" : "error");
  return 3;
}

/* script_limits([t]) -> { seconds, load_seconds, memory_mb, wall_seconds } (t sets some of
 * them: serve and specs). */
static int l_script_limits(lua_State *L) {
  guard *g = guard_get(L, 1);
  if (lua_istable(L, 1)) {
    static const char *names[] = {"seconds", "load_seconds", "memory_mb", "wall_seconds"};
    double *vals[] = {&g->lim.seconds, &g->lim.load_seconds, &g->lim.memory_mb, &g->lim.wall_seconds};
    for (int i = 0; i < 4; i++) {
      lua_getfield(L, 1, names[i]);
      if (!lua_isnil(L, -1)) {
        double d = lua_tonumber(L, -1);
        if (!(d > 0) || !isfinite(d)) return luaL_error(L, "script_limits: %s must be a positive number", names[i]);
        *vals[i] = d;
      }
      lua_pop(L, 1);
    }
  }
  lua_createtable(L, 0, 4);
  lua_pushnumber(L, g->lim.wall_seconds);
  lua_setfield(L, -2, "wall_seconds");
  lua_pushnumber(L, g->lim.seconds);
  lua_setfield(L, -2, "seconds");
  lua_pushnumber(L, g->lim.load_seconds);
  lua_setfield(L, -2, "load_seconds");
  lua_pushnumber(L, g->lim.memory_mb);
  lua_setfield(L, -2, "memory_mb");
  return 1;
}

/* script_memory_left() -> bytes the running script may still grow the heap by, or nil outside
 * a guarded call (the engine's string.rep and table.concat check it before they allocate). */
static int l_script_memory_left(lua_State *L) {
  guard *g = guard_get(L, 0);
  if (!g || g->depth == 0) return 0;
  lua_pushnumber(L, (lua_Number)(g->mem_cap - (g->allocated - g->mem_base)));
  return 1;
}

void dp_script_lua_register(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"script_call", l_script_call},
      {"script_limits", l_script_limits},
      {"script_memory_left", l_script_memory_left},
      {NULL, NULL},
  };
  luaL_register(L, NULL, funcs);
}

void dp_lua_push_pg_rows(lua_State *L, const PGresult *r) {
  int rows = PQntuples(r), cols = PQnfields(r);
  lua_createtable(L, rows, 0);
  for (int i = 0; i < rows; i++) {
    lua_createtable(L, 0, cols);
    for (int k = 0; k < cols; k++) {
      if (PQgetisnull(r, i, k)) continue;
      lua_pushlstring(L, PQgetvalue(r, i, k), (size_t)PQgetlength(r, i, k));
      lua_setfield(L, -2, PQfname(r, k));
    }
    lua_rawseti(L, -2, i + 1);
  }
}
