/* luabridge.c - engine Lua state, protected calls, metadata tables -> C structs. */
#include "luabridge.h"

#include <lauxlib.h>
#include "json.h"
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

int luaopen_dp_core(lua_State *L);

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
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
