/* snapshot.c - see snapshot.h. The only place serve's view of the metadata is read from Lua. */
#include "snapshot.h"
#include "luabridge.h"
#include "buf.h"
#include "metaload.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

static void free_trigger(dp_trigger *t) {
  free(t->cron);
  free(t->timezone);
  free(t->path);
  free(t->pattern);
  free(t->upstream);
  free(t->name);
}

static void free_snapshot(dp_snapshot *s) {
  for (size_t i = 0; i < s->ntargets; i++) {
    dp_snap_target *t = &s->targets[i];
    free(t->name);
    for (size_t k = 0; k < t->ntriggers; k++) free_trigger(&t->triggers[k]);
    free(t->triggers);
    for (size_t k = 0; k < t->ndepends; k++) free(t->depends_on[k]);
    free(t->depends_on);
    for (size_t k = 0; k < t->nentities; k++) free(t->entities[k]);
    free(t->entities);
  }
  free(s->targets);
  dp_meta_texts_free(&s->meta);
  free(s->hash);
  free(s);
}

dp_snapshot *dp_snapshot_ref(dp_snapshot *s) {
  if (s) __atomic_add_fetch(&s->refs, 1, __ATOMIC_SEQ_CST);
  return s;
}

void dp_snapshot_unref(dp_snapshot *s) {
  if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_SEQ_CST) == 0) free_snapshot(s);
}

const dp_snap_target *dp_snapshot_find(const dp_snapshot *s, const char *name, int is_gold) {
  for (size_t i = 0; i < s->ntargets; i++)
    if (s->targets[i].is_gold == is_gold && strcmp(s->targets[i].name, name) == 0) return &s->targets[i];
  return NULL;
}

/* Reads the triggers list at the top of the stack. */
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

/* Reads meta.systems or meta.gold (the list on top of the stack) into s->targets. */
static int read_targets(lua_State *L, dp_snapshot *s, int is_gold) {
  size_t n = lua_objlen(L, -1);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (int)i);
    dp_snap_target *t = &s->targets[s->ntargets++];
    t->is_gold = is_gold;
    t->name = dp_lua_strfield(L, -1, "name");
    lua_getfield(L, -1, "enabled");
    t->enabled = is_gold || lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, -1, "triggers");
    int rc = read_triggers(L, t);
    lua_pop(L, 1);
    if (rc) return rc;
    lua_getfield(L, -1, "depends_on");
    size_t nd = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    t->depends_on = calloc(nd ? nd : 1, sizeof *t->depends_on);
    if (!t->depends_on || !t->name) return DP_ENOMEM;
    for (size_t k = 1; k <= nd; k++) {
      lua_rawgeti(L, -1, (int)k);
      const char *d = lua_tostring(L, -1);
      if (d) t->depends_on[t->ndepends++] = strdup(d);
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
  return 0;
}

/* meta.entities (meta on top of the stack): each system's entity names. */
static int read_entities(lua_State *L, dp_snapshot *s) {
  lua_getfield(L, -1, "entities");
  size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
  for (size_t k = 0; k < s->ntargets; k++) {
    if (s->targets[k].is_gold) continue;
    s->targets[k].entities = calloc(n ? n : 1, sizeof(char *));
    if (!s->targets[k].entities) { lua_pop(L, 1); return DP_ENOMEM; }
  }
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (int)i);
    char *sys = dp_lua_strfield(L, -1, "system"), *name = dp_lua_strfield(L, -1, "name");
    lua_pop(L, 1);
    dp_snap_target *t = sys ? (dp_snap_target *)dp_snapshot_find(s, sys, 0) : NULL;
    if (t && name) t->entities[t->nentities++] = name;
    else free(name);
    free(sys);
  }
  lua_pop(L, 1);
  return 0;
}

int dp_snapshot_load(const dp_config *cfg, dp_snapshot **out, dp_err *e) {
  *out = NULL;
  dp_engine eng;
  memset(&eng, 0, sizeof eng);
  eng.cfg = *cfg; /* borrowed: never freed here (see the end) */
  dp_meta_texts t;
  memset(&t, 0, sizeof t);
  dp_snapshot *s = NULL;
  int rc = dp_meta_texts_read(&eng, &t, e);
  if (rc == 0) rc = dp_meta_scripts_read(cfg, &t, e);
  if (rc) goto cleanup;
  if (!(eng.L = dp_lua_new(cfg, e))) {
    rc = e->code;
    goto cleanup;
  }
  rc = dp_meta_validate(eng.L, &t, e);
  if (rc) goto cleanup;
  lua_State *L = eng.L;
  /* the gold scripts too: a version is taken only when all of it loads */
  lua_getglobal(L, "__dp_engine");
  lua_getfield(L, -1, "check_gold_scripts");
  lua_remove(L, -2);
  lua_pushvalue(L, -2);
  if ((rc = dp_lua_pcall(L, 1, 1, e)) != 0) goto cleanup;
  if (lua_istable(L, -1)) {
    dp_buf b = DP_BUF_INIT;
    dp_buf_printf(&b, "gold scripts under %s:", cfg->scripts);
    for (size_t i = 1; i <= lua_objlen(L, -1); i++) {
      lua_rawgeti(L, -1, (int)i);
      dp_buf_printf(&b, "\n  %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
      lua_pop(L, 1);
    }
    rc = dp_err_set(e, DP_EMETA, "%s", b.data);
    dp_buf_free(&b);
    goto cleanup;
  }
  lua_pop(L, 1);
  s = calloc(1, sizeof *s);
  if (!s) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  s->refs = 1;
  s->hash = dp_lua_strfield(L, -1, "hash");
  s->meta = t; /* taken over */
  memset(&t, 0, sizeof t);
  lua_getfield(L, -1, "systems");
  lua_getfield(L, -2, "gold");
  size_t n = lua_objlen(L, -2) + (lua_istable(L, -1) ? lua_objlen(L, -1) : 0);
  s->targets = calloc(n ? n : 1, sizeof *s->targets);
  if (!s->targets) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  lua_pushvalue(L, -2);
  rc = read_targets(L, s, 0);
  lua_pop(L, 1);
  if (rc == 0 && lua_istable(L, -1)) rc = read_targets(L, s, 1);
  lua_pop(L, 2);
  if (rc == 0) rc = read_entities(L, s);
  lua_pop(L, 1);
  if (rc) {
    dp_err_set(e, rc, "out of memory reading the metadata snapshot");
    goto cleanup;
  }
  *out = s;
  s = NULL;
cleanup:
  if (s) free_snapshot(s);
  dp_meta_texts_free(&t);
  if (eng.L) lua_close(eng.L);
  if (eng.mongo) mongoc_client_destroy(eng.mongo);
  return rc;
}
