/* lifecycle.c - reading an entity's lifecycle settings (see lifecycle.h). */
#include "lifecycle.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

static int int_field(lua_State *L, int idx, const char *key) {
  lua_getfield(L, idx, key);
  int v = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
  lua_pop(L, 1);
  return v;
}

void dp_lifecycle_read(lua_State *L, int idx, dp_lifecycle *out) {
  memset(out, 0, sizeof *out);
  idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
  lua_getfield(L, idx, "retention");
  if (lua_istable(L, -1)) {
    int r = lua_gettop(L);
    out->raw_days = int_field(L, r, "raw_days");
    out->raw_delete_days = int_field(L, r, "raw_delete_days");
    out->bronze_deleted_days = int_field(L, r, "bronze_deleted_days");
    out->silver_history_days = int_field(L, r, "silver_history_days");
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "raw");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "compression");
    out->gzip = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "gzip") == 0;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static int str_is(lua_State *L, int idx, const char *key, const char *want) {
  lua_getfield(L, idx, key);
  int same = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), want) == 0;
  lua_pop(L, 1);
  return same;
}

int dp_lifecycle_push_entity(lua_State *L, int meta_idx, const char *system, const char *entity) {
  lua_getfield(L, meta_idx, "entities");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  for (size_t i = 1; i <= lua_objlen(L, -1); i++) {
    lua_rawgeti(L, -1, (int)i);
    int t = lua_gettop(L);
    if (str_is(L, t, "system", system) && str_is(L, t, "name", entity)) {
      lua_remove(L, -2);
      return 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

void dp_lifecycle_of(lua_State *L, int meta_idx, const char *system, const char *entity, dp_lifecycle *out) {
  memset(out, 0, sizeof *out);
  if (!dp_lifecycle_push_entity(L, meta_idx, system, entity)) return;
  dp_lifecycle_read(L, -1, out);
  lua_pop(L, 1);
}
