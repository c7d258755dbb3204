/* snapshot.c - see snapshot.h. The structs are filled from Lua by the bridge (dp_meta_snapshot). */
#include "snapshot.h"
#include "luabridge.h"
#include "metaload.h"

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
    free(t->materialization);
    dp_entity_free(&t->model);
  }
  free(s->targets);
  for (size_t i = 0; i < s->nentities; i++) dp_entity_free(&s->entities[i]);
  free(s->entities);
  dp_meta_texts_free(&s->meta);
  free(s->hash);
  free(s->source);
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

const dp_entity *dp_snapshot_entity(const dp_snapshot *s, const char *system, const char *name) {
  for (size_t i = 0; i < s->nentities; i++)
    if (strcmp(s->entities[i].system, system) == 0 && strcmp(s->entities[i].name, name) == 0) return &s->entities[i];
  return NULL;
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
  /* the gold scripts too: a version is taken only when all of it loads */
  if ((rc = dp_meta_validate(eng.L, &t, e)) != 0 || (rc = dp_meta_check_gold_scripts(eng.L, cfg->scripts, e)) != 0 ||
      (rc = dp_meta_snapshot(eng.L, &s, e)) != 0)
    goto cleanup;
  s->meta = t; /* taken over */
  memset(&t, 0, sizeof t);
  *out = s;
cleanup:
  dp_meta_texts_free(&t);
  if (eng.L) lua_close(eng.L);
  if (eng.mongo) mongoc_client_destroy(eng.mongo);
  return rc;
}
