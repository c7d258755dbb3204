/* luapattern.h - string.find, match, gmatch and gsub with a step budget (see luapattern.c). */
#ifndef DP_LUAPATTERN_H
#define DP_LUAPATTERN_H

typedef struct lua_State lua_State;

/* Registrar for dp.core (see luamod.c): str_find, str_match, str_gmatch, str_gsub. */
void dp_pattern_lua_register(lua_State *L);

#endif
