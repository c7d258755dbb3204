/* luabridge.c - the C/Lua boundary (luabridge.h): engine Lua state, protected calls, every
 * call into lua/dp/engine.lua, metadata tables -> C structs. */
#include "config.h"
#include "luabridge.h"

#include <lauxlib.h>
#include "buf.h"
#include "gold.h"
#include "json.h"
#include "lineage.h"
#include "log.h"
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

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

/* ---------- Calls into the engine's Lua ---------- */

int dp_engine_call(lua_State *L, const char *fn, int nargs, int nres, dp_err *e) {
  lua_getglobal(L, "__dp_engine");
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_insert(L, -1 - nargs);
  return dp_lua_pcall(L, nargs, nres, e);
}

static char meta_key; /* registry[&meta_key]: the state's validated meta table */

/* The string at idx as a heap copy (caller frees), or NULL when it is not a string. */
static char *str_at(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TSTRING ? strdup(lua_tostring(L, idx)) : NULL;
}

static void push_meta(lua_State *L) {
  lua_pushlightuserdata(L, &meta_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
}

/* "intro:\n  item\n  item" from the list (or string) at the top of the stack, as DP_EMETA. */
static int list_error(lua_State *L, const char *intro, dp_err *e) {
  dp_buf b = DP_BUF_INIT;
  dp_buf_puts(&b, intro);
  if (lua_istable(L, -1)) {
    size_t n = lua_objlen(L, -1);
    for (size_t i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, (int)i);
      dp_buf_printf(&b, "\n  %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
      lua_pop(L, 1);
    }
  } else if (lua_isstring(L, -1)) {
    dp_buf_printf(&b, "\n  %s", lua_tostring(L, -1));
  }
  int rc = dp_err_set(e, DP_EMETA, "%s", b.data);
  dp_buf_free(&b);
  return rc;
}

int dp_meta_validate(lua_State *L, const dp_meta_texts *t, dp_err *e) {
  int top = lua_gettop(L), rc;
  if (t->nscripts) { /* the version's scripts: validation and the run read these, not the files */
    lua_createtable(L, 0, (int)t->nscripts);
    for (size_t i = 0; i < t->nscripts; i++) {
      lua_pushlstring(L, t->script_texts[i], t->script_lens[i]);
      lua_setfield(L, -2, t->script_paths[i]);
    }
    if ((rc = dp_engine_call(L, "set_script_texts", 1, 0, e)) != 0) return rc;
  }
  lua_createtable(L, 0, DP_META_NFILES);
  for (int i = 0; i < DP_META_NFILES; i++) {
    if (!t->texts[i]) continue;
    lua_pushlstring(L, t->texts[i], t->lens[i]);
    lua_setfield(L, -2, dp_metastore_file(i));
  }
  if ((rc = dp_engine_call(L, "load_metadata_texts", 1, 2, e)) != 0) return rc;
  if (lua_isnil(L, -2)) {
    char intro[1200];
    snprintf(intro, sizeof intro, "invalid metadata in %s:", t->source);
    rc = list_error(L, intro, e);
    goto done;
  }
  lua_pop(L, 1); /* meta */
  if (t->pushed_hash) {
    char *hash = dp_lua_strfield(L, -1, "hash");
    if (!hash || strcmp(hash, t->pushed_hash) != 0)
      rc = dp_err_set(e, DP_EMETA, "metadata in %s: the stored files hash to %.12s, not to the hash %.12s "
                      "recorded when they were pushed; push the metadata again", t->source, hash ? hash : "?",
                      t->pushed_hash);
    free(hash);
    if (rc) goto done;
  }
  lua_pushstring(L, t->source);
  lua_setfield(L, -2, "source");
  lua_pushlightuserdata(L, &meta_key);
  lua_insert(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
done:
  lua_settop(L, top);
  return rc;
}

void dp_meta_check_all_connectors(lua_State *L) {
  lua_getglobal(L, "__dp_engine");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "all_connectors");
  lua_pop(L, 1);
}

int dp_meta_check_gold_scripts(lua_State *L, const char *scripts_dir, dp_err *e) {
  int top = lua_gettop(L);
  push_meta(L);
  int rc = dp_engine_call(L, "check_gold_scripts", 1, 1, e);
  if (rc == 0 && lua_istable(L, -1)) {
    char intro[4200];
    snprintf(intro, sizeof intro, "gold scripts under %s:", scripts_dir);
    rc = list_error(L, intro, e);
  }
  lua_settop(L, top);
  return rc;
}

int dp_meta_show(lua_State *L, const char *name, int as_json, char **text, dp_err *e) {
  int top = lua_gettop(L);
  *text = NULL;
  push_meta(L);
  if (name) lua_pushstring(L, name);
  else lua_pushnil(L);
  lua_pushboolean(L, as_json);
  int rc = dp_engine_call(L, "show", 3, 2, e);
  if (rc == 0 && lua_isnil(L, -2)) /* an unknown NAME */
    rc = dp_err_set(e, DP_ENOTFOUND, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
  else if (rc == 0 && !(*text = str_at(L, -2)))
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
  lua_settop(L, top);
  return rc;
}

void dp_meta_push_set_free(dp_metastore_set *set) {
  for (int i = 0; i < DP_META_NFILES; i++) {
    free((char *)set->texts[i]);
    for (size_t k = 0; k < set->nitems[i]; k++) {
      free((char *)set->items[i][k].id);
      free((char *)set->items[i][k].json);
    }
    free((dp_metastore_item *)set->items[i]);
  }
  free((char *)set->hash);
  memset(set, 0, sizeof *set);
}

/* engine.push_documents(meta)[coll] (on top of the stack) into heap copies. */
static int read_items(lua_State *L, const char *coll, dp_metastore_set *set, int i) {
  lua_getfield(L, -1, coll);
  size_t n = lua_objlen(L, -1);
  dp_metastore_item *items = calloc(n ? n : 1, sizeof *items);
  set->items[i] = items;
  if (!items) return DP_ENOMEM;
  for (size_t k = 0; k < n; k++) {
    lua_rawgeti(L, -1, (int)k + 1);
    items[k].id = dp_lua_strfield(L, -1, "id");
    items[k].json = dp_lua_strfield(L, -1, "json");
    set->nitems[i] = k + 1;
    lua_pop(L, 1);
    if (!items[k].id || !items[k].json) return DP_ENOMEM;
  }
  lua_pop(L, 1);
  return 0;
}

int dp_meta_push_set(lua_State *L, dp_metastore_set *set, dp_err *e) {
  static const char *colls[DP_META_NFILES] = {"systems", "entities", "gold"};
  int top = lua_gettop(L), rc = 0;
  memset(set, 0, sizeof *set);
  push_meta(L);
  lua_getfield(L, -1, "texts");
  for (int i = 0; i < DP_META_NFILES; i++) {
    lua_getfield(L, -1, dp_metastore_file(i));
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *t = lua_tolstring(L, -1, &set->lens[i]);
      char *copy = malloc(set->lens[i] + 1);
      if (copy) memcpy(copy, t, set->lens[i] + 1);
      else rc = DP_ENOMEM;
      set->texts[i] = copy;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  set->hash = dp_lua_strfield(L, -1, "hash");
  if (rc == 0 && (rc = dp_engine_call(L, "push_documents", 1, 1, e)) != 0) goto done;
  for (int i = 0; i < DP_META_NFILES && rc == 0; i++) rc = read_items(L, colls[i], set, i);
  if (rc == 0 && !set->hash) rc = DP_ENOMEM;
  if (rc) dp_err_set(e, rc, "out of memory");
done:
  if (rc) dp_meta_push_set_free(set);
  lua_settop(L, top);
  return rc;
}

/* The triggers list at the top of the stack into t. */
static int read_triggers(lua_State *L, dp_snap_target *t) {
  size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
  t->triggers = calloc(n ? n : 1, sizeof *t->triggers);
  if (!t->triggers) return DP_ENOMEM;
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (int)i);
    dp_trigger *g = &t->triggers[t->ntriggers++];
    char *kind = dp_lua_strfield(L, -1, "type");
    g->kind = !kind ? -1
              : strcmp(kind, "schedule") == 0 ? DP_TRIG_SCHEDULE
              : strcmp(kind, "file") == 0     ? DP_TRIG_FILE
              : strcmp(kind, "after") == 0    ? DP_TRIG_AFTER
              : strcmp(kind, "callback") == 0 ? DP_TRIG_CALLBACK
                                              : -1;
    free(kind);
    g->cron = dp_lua_strfield(L, -1, "cron");
    g->timezone = dp_lua_strfield(L, -1, "timezone");
    g->path = dp_lua_strfield(L, -1, "path");
    g->pattern = dp_lua_strfield(L, -1, "pattern");
    g->upstream = dp_lua_strfield(L, -1, "upstream");
    g->name = dp_lua_strfield(L, -1, "name");
    lua_getfield(L, -1, "catch_up");
    g->catch_up = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  return 0;
}

/* t.enabled: true unless false. */
static int enabled_field(lua_State *L, int idx) {
  lua_getfield(L, idx, "enabled");
  int v = lua_isnil(L, -1) || lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* A gold model's table (top of the stack) as an entity of system "gold". */
static int read_gold_model(lua_State *L, dp_snap_target *t, dp_err *e) {
  t->materialization = dp_lua_strfield(L, -1, "materialization");
  lua_createtable(L, 0, 4);
  lua_pushstring(L, "gold");
  lua_setfield(L, -2, "system");
  static const char *keys[] = {"name", "columns", "primary_key"};
  for (int k = 0; k < 3; k++) {
    lua_getfield(L, -2, keys[k]);
    lua_setfield(L, -2, keys[k]);
  }
  int rc = dp_entity_from_lua(L, -1, &t->model, e);
  lua_pop(L, 1);
  return rc;
}

/* meta.systems or meta.gold (the list on top of the stack) into s->targets. */
static int read_targets(lua_State *L, dp_snapshot *s, int is_gold, dp_err *e) {
  size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (int)i);
    dp_snap_target *t = &s->targets[s->ntargets++];
    t->is_gold = is_gold;
    t->name = dp_lua_strfield(L, -1, "name");
    t->enabled = is_gold || enabled_field(L, -1);
    lua_getfield(L, -1, "triggers");
    int rc = read_triggers(L, t);
    lua_pop(L, 1);
    if (rc) return dp_err_set(e, rc, "out of memory");
    lua_getfield(L, -1, "depends_on");
    size_t nd = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    t->depends_on = calloc(nd ? nd : 1, sizeof *t->depends_on);
    if (!t->depends_on || !t->name) return dp_err_set(e, DP_ENOMEM, "out of memory");
    for (size_t k = 1; k <= nd; k++) {
      lua_rawgeti(L, -1, (int)k);
      const char *d = lua_tostring(L, -1);
      if (d) t->depends_on[t->ndepends++] = strdup(d);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (is_gold && (rc = read_gold_model(L, t, e)) != 0) return rc;
    lua_pop(L, 1);
  }
  return 0;
}

/* meta.entities (the list on top of the stack): every entity, and each system's names. */
static int read_entities(lua_State *L, dp_snapshot *s, dp_err *e) {
  size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
  s->entities = calloc(n ? n : 1, sizeof *s->entities);
  if (!s->entities) return dp_err_set(e, DP_ENOMEM, "out of memory");
  for (size_t k = 0; k < s->nsystems; k++) {
    s->targets[k].entities = calloc(n ? n : 1, sizeof(char *));
    if (!s->targets[k].entities) return dp_err_set(e, DP_ENOMEM, "out of memory");
  }
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (int)i);
    dp_entity *ent = &s->entities[s->nentities];
    int rc = dp_entity_from_lua(L, -1, ent, e);
    lua_pop(L, 1);
    if (rc) return rc;
    s->nentities++;
    dp_snap_target *t = (dp_snap_target *)dp_snapshot_find(s, ent->system, 0);
    if (t && !(t->entities[t->nentities++] = strdup(ent->name))) return dp_err_set(e, DP_ENOMEM, "out of memory");
  }
  return 0;
}

int dp_meta_snapshot(lua_State *L, dp_snapshot **out, dp_err *e) {
  int top = lua_gettop(L), rc;
  *out = NULL;
  dp_snapshot *s = calloc(1, sizeof *s);
  if (!s) return dp_err_set(e, DP_ENOMEM, "out of memory");
  s->refs = 1;
  push_meta(L);
  int meta = lua_gettop(L);
  s->hash = dp_lua_strfield(L, meta, "hash");
  s->source = dp_lua_strfield(L, meta, "source");
  lua_getfield(L, meta, "systems");
  lua_getfield(L, meta, "gold");
  size_t n = (lua_istable(L, -2) ? lua_objlen(L, -2) : 0) + (lua_istable(L, -1) ? lua_objlen(L, -1) : 0);
  s->targets = calloc(n ? n : 1, sizeof *s->targets);
  if (!s->targets) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto done;
  }
  lua_pushvalue(L, -2);
  rc = read_targets(L, s, 0, e);
  lua_pop(L, 1);
  s->nsystems = s->ntargets;
  if (rc == 0) rc = read_targets(L, s, 1, e);
  lua_getfield(L, meta, "entities");
  if (rc == 0) rc = read_entities(L, s, e);
done:
  lua_settop(L, top);
  if (rc) dp_snapshot_unref(s);
  else *out = s;
  return rc;
}

/* ---------- extract and the hooks after the commit ---------- */

/* emit(batch): batch is an array of JSON object texts, each handed to the run's emit function. */
static int l_emit(lua_State *L) {
  const dp_extract_call *c = lua_touserdata(L, lua_upvalueindex(1));
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)lua_objlen(L, 1);
  dp_err e;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (s == NULL || lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "emit: record %d is a %s, expected a JSON object string", i, luaL_typename(L, -1));
    if (c->emit(c->ud, i, s, len, &e) != 0) return luaL_error(L, "%s", e.msg);
    lua_pop(L, 1);
  }
  if (c->emitted) c->emitted(c->ud, n);
  return 0;
}

/* log(level, message) for connectors and gold scripts, prefixed with the upvalue when set. */
static int l_log(lua_State *L) {
  const char *prefix = lua_tostring(L, lua_upvalueindex(1));
  const char *lv = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  dp_log_level level = DP_LOG_INFO;
  dp_log_level_parse(lv, &level);
  if (prefix) dp_log(level, "%s: %s", prefix, msg);
  else dp_log(level, "%s", msg);
  return 0;
}

static void push_str_or_nil(lua_State *L, const char *s) {
  if (s) lua_pushstring(L, s);
  else lua_pushnil(L);
}

int dp_bridge_extract(lua_State *L, const dp_extract_call *c, char **cursor_after, dp_err *e) {
  int top = lua_gettop(L);
  *cursor_after = NULL;
  push_meta(L);
  lua_pushstring(L, c->system);
  lua_pushstring(L, c->entity);
  push_str_or_nil(L, c->cursor);
  lua_pushlightuserdata(L, (void *)c);
  lua_pushcclosure(L, l_emit, 1);
  lua_pushfstring(L, "%s.%s", c->system, c->entity);
  lua_pushcclosure(L, l_log, 1);
  push_str_or_nil(L, c->event);
  int rc = dp_engine_call(L, "extract", 7, 1, e);
  if (rc == 0 && (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER))
    *cursor_after = strdup(lua_tostring(L, -1));
  lua_settop(L, top);
  return rc;
}

void dp_bridge_commit_hook(lua_State *L, const char *system, const char *entity) {
  const char *fn = entity ? "after_commit" : "discard_pending";
  int top = lua_gettop(L);
  dp_err e;
  lua_pushstring(L, system);
  push_str_or_nil(L, entity);
  if (dp_engine_call(L, fn, 2, 1, &e)) {
    dp_log(DP_LOG_WARN, "%s.%s: %s: %s", system, entity ? entity : "*", fn, e.msg);
  } else if (lua_istable(L, -1)) {
    for (size_t i = 1; i <= lua_objlen(L, -1); i++) {
      lua_rawgeti(L, -1, (int)i);
      dp_log(DP_LOG_WARN, "%s.%s: after the commit: %s", system, entity, lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
}

/* ---------- Gold ---------- */

int dp_bridge_gold_plan(lua_State *L, const char *const *models, int n, const char *system, char ***plan,
                        size_t *nplan, dp_err *e) {
  int top = lua_gettop(L);
  *plan = NULL;
  *nplan = 0;
  push_meta(L);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, models[i]);
    lua_rawseti(L, -2, i + 1);
  }
  push_str_or_nil(L, system);
  int rc = dp_engine_call(L, "gold_plan", 3, 1, e);
  if (rc == 0) {
    size_t np = lua_objlen(L, -1);
    if (!(*plan = calloc(np ? np : 1, sizeof **plan))) rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < np; i++) {
      lua_rawgeti(L, -1, (int)i + 1);
      if (((*plan)[i] = str_at(L, -1)) == NULL) rc = dp_err_set(e, DP_ENOMEM, "out of memory");
      else *nplan = i + 1;
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
  return rc;
}

int dp_bridge_gold_build(lua_State *L, const char *name, struct dp_gold_builder *b, const char *run_id,
                         const char *run_ts, const char *pg_url, dp_err *e) {
  int top = lua_gettop(L);
  dp_gold_lua_push(L, b);
  int ud = lua_gettop(L);
  push_meta(L);
  lua_pushstring(L, name);
  lua_pushvalue(L, ud);
  lua_pushstring(L, run_id);
  lua_pushstring(L, run_ts);
  lua_pushstring(L, pg_url);
  lua_pushnil(L);
  lua_pushcclosure(L, l_log, 1);
  int rc = dp_engine_call(L, "gold_build", 7, 0, e);
  dp_gold_lua_detach(L, ud);
  lua_settop(L, top);
  return rc;
}

/* ---------- Commands ---------- */

/* t[key] (t at idx) as a heap copy of *len bytes, or NULL when it is not a string. */
static char *lstr_field(lua_State *L, int idx, const char *key, size_t *len) {
  lua_getfield(L, idx, key);
  char *c = NULL;
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *v = lua_tolstring(L, -1, len);
    if ((c = malloc(*len + 1)) != NULL) memcpy(c, v, *len + 1);
  }
  lua_pop(L, 1);
  return c;
}

/* facts[field] (facts on top): {system = ..., <key> = ...} items into *out. */
static int read_facts(lua_State *L, const char *field, const char *key, dp_doctor_fact **out, size_t *n) {
  lua_getfield(L, -1, field);
  size_t len = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
  int rc = (*out = calloc(len ? len : 1, sizeof **out)) ? 0 : DP_ENOMEM;
  for (size_t i = 1; rc == 0 && i <= len; i++) {
    lua_rawgeti(L, -1, (int)i);
    dp_doctor_fact *f = &(*out)[(*n)++];
    f->system = dp_lua_strfield(L, -1, "system");
    f->value = dp_lua_strfield(L, -1, key);
    if (!f->system || !f->value) rc = DP_ENOMEM;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return rc;
}

int dp_bridge_doctor_facts(lua_State *L, dp_doctor_facts *f, dp_err *e) {
  int top = lua_gettop(L);
  memset(f, 0, sizeof *f);
  push_meta(L);
  int rc = dp_engine_call(L, "doctor_facts", 1, 1, e);
  if (rc == 0) {
    lua_getfield(L, -1, "secrets");
    size_t ns = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    f->secrets = calloc(ns ? ns : 1, sizeof *f->secrets);
    if (!f->secrets) rc = DP_ENOMEM;
    for (size_t i = 0; i < ns && rc == 0; i++) {
      lua_rawgeti(L, -1, (int)i + 1);
      const char *name = lua_tostring(L, -1);
      if (name && !(f->secrets[f->nsecrets++] = strdup(name))) rc = DP_ENOMEM;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (rc == 0 && (rc = read_facts(L, "inboxes", "inbox", &f->inboxes, &f->ninboxes)) == 0)
      rc = read_facts(L, "rest", "base_url", &f->rest, &f->nrest);
    if (rc) {
      dp_doctor_facts_free(f);
      dp_err_set(e, rc, "out of memory");
    }
  }
  lua_settop(L, top);
  return rc;
}

static void free_facts(dp_doctor_fact *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(v[i].system);
    free(v[i].value);
  }
  free(v);
}

void dp_doctor_facts_free(dp_doctor_facts *f) {
  for (size_t i = 0; i < f->nsecrets; i++) free(f->secrets[i]);
  free(f->secrets);
  free_facts(f->inboxes, f->ninboxes);
  free_facts(f->rest, f->nrest);
  memset(f, 0, sizeof *f);
}

int dp_bridge_lineage(lua_State *L, const PGresult *statuses, const char *format, char **text, dp_err *e) {
  int top = lua_gettop(L);
  *text = NULL;
  push_meta(L);
  lua_newtable(L); /* node id -> {status, last_run, run_id} */
  for (int i = 0; i < PQntuples(statuses); i++) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, PQgetvalue(statuses, i, DP_LINEAGE_STATUS));
    lua_setfield(L, -2, "status");
    lua_pushstring(L, PQgetvalue(statuses, i, DP_LINEAGE_LAST_RUN));
    lua_setfield(L, -2, "last_run");
    lua_pushstring(L, PQgetvalue(statuses, i, DP_LINEAGE_RUN_ID));
    lua_setfield(L, -2, "run_id");
    lua_setfield(L, -2, PQgetvalue(statuses, i, DP_LINEAGE_ID));
  }
  lua_pushstring(L, format);
  int rc = dp_engine_call(L, "lineage", 3, 1, e);
  if (rc == 0 && !(*text = str_at(L, -1))) rc = dp_err_set(e, DP_ENOMEM, "out of memory");
  lua_settop(L, top);
  return rc;
}

int dp_bridge_connectors(lua_State *L, const char *type, const char *format, char **text, size_t *len, dp_err *e) {
  int top = lua_gettop(L), rc;
  *text = NULL;
  *len = 0;
  if (!type) {
    lua_pushboolean(L, strcmp(format, "json") == 0);
    rc = dp_engine_call(L, "connectors_list", 1, 2, e);
  } else {
    lua_pushstring(L, type);
    lua_pushstring(L, format);
    rc = dp_engine_call(L, "connectors_show", 2, 2, e);
  }
  if (rc == 0 && lua_isnil(L, -2)) {
    rc = dp_err_set(e, DP_ECONFIG, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
  } else if (rc == 0) {
    const char *t = lua_tolstring(L, -2, len);
    if (!t || !(*text = malloc(*len + 1))) rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    else memcpy(*text, t, *len + 1);
  }
  lua_settop(L, top);
  return rc;
}

static void set_str(lua_State *L, const char *key, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, key);
}

/* The result table on top of the stack into r. */
static int read_init_result(lua_State *L, dp_init_result *r) {
  int res = lua_gettop(L);
  r->report = dp_lua_strfield(L, res, "report");
  lua_getfield(L, res, "files");
  size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
  if (!(r->files = calloc(n ? n : 1, sizeof *r->files))) return DP_ENOMEM;
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (int)i);
    dp_init_file *f = &r->files[r->nfiles++];
    f->path = dp_lua_strfield(L, -1, "path");
    f->text = lstr_field(L, lua_gettop(L), "text", &f->len);
    lua_pop(L, 1);
    if (!f->path || !f->text) return DP_ENOMEM;
  }
  lua_pop(L, 1);
  lua_getfield(L, res, "written");
  n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
  if (!(r->written = calloc(n ? n : 1, sizeof *r->written))) return DP_ENOMEM;
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (int)i);
    char *w = str_at(L, -1);
    lua_pop(L, 1);
    if (!w) return DP_ENOMEM;
    r->written[r->nwritten++] = w;
  }
  lua_pop(L, 1);
  return 0;
}

int dp_bridge_init(lua_State *L, const dp_init_opts *o, dp_init_result *r, dp_err *e) {
  int top = lua_gettop(L);
  memset(r, 0, sizeof *r);
  lua_newtable(L); /* opts */
  lua_createtable(L, (int)o->nsamples, 0);
  for (size_t i = 0; i < o->nsamples; i++) {
    lua_newtable(L);
    set_str(L, "file", o->samples[i].file);
    set_str(L, "entity", o->samples[i].entity);
    lua_rawseti(L, -2, (int)i + 1);
  }
  lua_setfield(L, -2, "samples");
  set_str(L, "name", o->name);
  set_str(L, "type", o->type);
  set_str(L, "dir", o->dir);
  set_str(L, "base_url", o->base_url);
  set_str(L, "path", o->path);
  set_str(L, "nested", o->nested);
  int rc = dp_engine_call(L, o->is_system ? "init_system" : "init_connector", 1, 2, e);
  if (rc == 0 && lua_isnil(L, -2)) {
    if (!(r->error = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?")))
      rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    else
      rc = dp_err_set(e, DP_EINVAL, "%s", r->error);
  } else if (rc == 0) {
    lua_pop(L, 1);
    if ((rc = read_init_result(L, r)) != 0) {
      dp_init_result_free(r);
      dp_err_set(e, rc, "out of memory");
    }
  }
  lua_settop(L, top);
  return rc;
}

void dp_init_result_free(dp_init_result *r) {
  for (size_t i = 0; i < r->nfiles; i++) {
    free(r->files[i].path);
    free(r->files[i].text);
  }
  free(r->files);
  for (size_t i = 0; i < r->nwritten; i++) free(r->written[i]);
  free(r->written);
  free(r->report);
  free(r->error);
  memset(r, 0, sizeof *r);
}

/* ---------- Lua tables -> C ---------- */

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

/* dp_entity_from_lua's stages: each reads one part of the entity table at idx into ent. */

/* system, name, cursor, enabled, load type, delete detection, type errors. */
static int entity_scalars(lua_State *L, int idx, dp_entity *ent, dp_err *e) {
  ent->system = dp_lua_strfield(L, idx, "system");
  ent->name = dp_lua_strfield(L, idx, "name");
  ent->cursor = dp_lua_strfield(L, idx, "cursor");
  ent->enabled = boolfield(L, idx, "enabled", 1);
  ent->full_load = !streq_field(L, idx, "load_type", "delta");
  ent->delete_mode = streq_field(L, idx, "delete_detection", "tombstone") ? DP_DELETE_TOMBSTONE
                     : streq_field(L, idx, "delete_detection", "ignore") ? DP_DELETE_IGNORE
                                                                          : DP_DELETE_CLOSE;
  ent->fail_on_type_error = streq_field(L, idx, "on_type_error", "fail");
  if (!ent->system || !ent->name) return dp_err_set(e, DP_EMETA, "entity without system or name");
  return 0;
}

/* One column table (top of the stack) into c; nonzero when it has no valid name or type. */
static int column_from_lua(lua_State *L, dp_column *c) {
  int ci = lua_gettop(L);
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
  return bad;
}

static int entity_columns(lua_State *L, int idx, dp_entity *ent, dp_err *e) {
  lua_getfield(L, idx, "columns");
  size_t n = lua_objlen(L, -1);
  int rc = 0;
  ent->cols = calloc(n ? n : 1, sizeof *ent->cols);
  if (!ent->cols) rc = dp_err_set(e, DP_ENOMEM, "out of memory");
  for (size_t i = 0; i < n && rc == 0; i++) {
    lua_rawgeti(L, -1, (int)i + 1);
    ent->ncols = i + 1;
    if (column_from_lua(L, &ent->cols[i]))
      rc = dp_err_set(e, DP_EMETA, "entity %s: column %zu has no valid name or type", ent->name, i);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return rc;
}

/* The index of the column named by t[key] (t at idx), or -1. */
static int column_index(lua_State *L, int idx, const char *key, const dp_entity *ent) {
  char *name = dp_lua_strfield(L, idx, key);
  int found = -1;
  for (size_t i = 0; name && i < ent->ncols; i++)
    if (strcmp(ent->cols[i].name, name) == 0) found = (int)i;
  free(name);
  return found;
}

/* The value at the top of the stack as JSON text (boolean, number or string), or NULL. */
static char *json_scalar(lua_State *L) {
  char buf[64];
  if (lua_type(L, -1) == LUA_TBOOLEAN) return strdup(lua_toboolean(L, -1) ? "true" : "false");
  if (lua_type(L, -1) == LUA_TNUMBER) {
    snprintf(buf, sizeof buf, "%.17g", lua_tonumber(L, -1));
    return strdup(buf);
  }
  if (lua_type(L, -1) != LUA_TSTRING) return NULL;
  size_t n;
  const char *sv = lua_tolstring(L, -1, &n);
  dp_buf jb = DP_BUF_INIT;
  dp_json_put_string(&jb, sv, n);
  return dp_buf_steal(&jb);
}

/* valid_from and delete_marker {column, value}. */
static int entity_markers(lua_State *L, int idx, dp_entity *ent, dp_err *e) {
  ent->valid_from_col = column_index(L, idx, "valid_from", ent);
  ent->marker_col = -1;
  lua_getfield(L, idx, "delete_marker");
  int rc = 0;
  if (lua_istable(L, -1)) {
    ent->marker_col = column_index(L, lua_gettop(L), "column", ent);
    lua_getfield(L, -1, "value");
    ent->marker_json = json_scalar(L);
    lua_pop(L, 1);
    if (ent->marker_col < 0 || !ent->marker_json)
      rc = dp_err_set(e, DP_EMETA, "entity %s: delete_marker needs a column and a value", ent->name);
  }
  lua_pop(L, 1);
  return rc;
}

static int entity_primary_key(lua_State *L, int idx, dp_entity *ent, dp_err *e) {
  lua_getfield(L, idx, "primary_key");
  size_t npk = lua_type(L, -1) == LUA_TTABLE ? lua_objlen(L, -1) : 0;
  int rc = 0;
  ent->pk = calloc(npk ? npk : 1, sizeof *ent->pk);
  if (!ent->pk) rc = dp_err_set(e, DP_ENOMEM, "out of memory");
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
  return rc;
}

/* retention.* and raw.compression (docs/lifecycle.md). */
static int entity_lifecycle(lua_State *L, int idx, dp_entity *ent, dp_err *e) {
  (void)e;
  dp_lifecycle *lc = &ent->lifecycle;
  lua_getfield(L, idx, "retention");
  if (lua_istable(L, -1)) {
    int r = lua_gettop(L);
    lc->raw_days = intfield(L, r, "raw_days", 0);
    lc->raw_delete_days = intfield(L, r, "raw_delete_days", 0);
    lc->bronze_deleted_days = intfield(L, r, "bronze_deleted_days", 0);
    lc->silver_history_days = intfield(L, r, "silver_history_days", 0);
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "raw");
  if (lua_istable(L, -1)) lc->gzip = streq_field(L, lua_gettop(L), "compression", "gzip");
  lua_pop(L, 1);
  return 0;
}

int dp_entity_from_lua(lua_State *L, int idx, dp_entity *ent, dp_err *e) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  memset(ent, 0, sizeof *ent);
  int rc = entity_scalars(L, idx, ent, e);
  if (rc == 0) rc = entity_columns(L, idx, ent, e);
  if (rc == 0) rc = entity_markers(L, idx, ent, e);
  if (rc == 0) rc = entity_primary_key(L, idx, ent, e);
  if (rc == 0) rc = entity_lifecycle(L, idx, ent, e);
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
    dp_utf8_copy(g->config_err, sizeof g->config_err, e.msg);
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
