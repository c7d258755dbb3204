/* metaload.c - see metaload.h. */
#include "metaload.h"
#include "buf.h"
#include "luabridge.h"
#include "rawfile.h"
#include "run.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

void dp_meta_texts_free(dp_meta_texts *t) {
  for (int i = 0; i < DP_META_NFILES; i++) free(t->texts[i]);
  for (size_t i = 0; i < t->nscripts; i++) {
    free(t->script_paths[i]);
    free(t->script_texts[i]);
  }
  free(t->script_paths);
  free(t->script_texts);
  free(t->script_lens);
  free(t->source);
  free(t->pushed_hash);
  memset(t, 0, sizeof *t);
}

int dp_meta_texts_read(dp_engine *eng, dp_meta_texts *out, dp_err *e) {
  memset(out, 0, sizeof *out);
  char source[1024];
  if (strcmp(eng->cfg.metadata, "mongo") == 0) {
    dp_metastore_current cur;
    memset(&cur, 0, sizeof cur);
    int rc = dp_engine_open_mongo(eng, e);
    if (rc == 0) rc = dp_metastore_read(eng->mongo, eng->cfg.metadata_db, &cur, e);
    if (rc) return rc;
    snprintf(source, sizeof source, "MongoDB database %s, push %s", eng->cfg.metadata_db, cur.push_id);
    for (int i = 0; i < DP_META_NFILES; i++) {
      out->texts[i] = cur.texts[i]; /* taken over */
      out->lens[i] = cur.lens[i];
      cur.texts[i] = NULL;
    }
    out->pushed_hash = strdup(cur.hash);
    dp_metastore_current_free(&cur);
  } else {
    snprintf(source, sizeof source, "%s", eng->cfg.metadata);
    dp_buf missing = DP_BUF_INIT;
    for (int i = 0; i < DP_META_NFILES; i++) {
      char path[PATH_MAX];
      dp_err re;
      if (dp_path_join(path, sizeof path, eng->cfg.metadata, dp_metastore_file(i), &re) != 0 ||
          dp_read_file(path, &out->texts[i], &out->lens[i], &re) != 0) {
        out->texts[i] = NULL;
        if (i != DP_META_GOLD) dp_buf_printf(&missing, "\n  %s: cannot read %s", dp_metastore_file(i), path);
      }
    }
    if (missing.len) {
      int rc = dp_err_set(e, DP_EMETA, "invalid metadata in %s:%s", source, missing.data);
      dp_buf_free(&missing);
      dp_meta_texts_free(out);
      return rc;
    }
  }
  out->source = strdup(source);
  return 0;
}

/* Adds the *.lua files of dir (and its sub-folders, to depth 8) to t. A missing dir is fine. */
static int read_scripts(const char *dir, int depth, dp_meta_texts *t, dp_err *e) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *de;
  int rc = 0;
  while (rc == 0 && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    char path[PATH_MAX];
    if ((rc = dp_path_join(path, sizeof path, dir, de->d_name, e)) != 0) break;
    struct stat st;
    if (stat(path, &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      if (depth < 8) rc = read_scripts(path, depth + 1, t, e);
      continue;
    }
    size_t n = strlen(de->d_name);
    if (!S_ISREG(st.st_mode) || n < 5 || strcmp(de->d_name + n - 4, ".lua") != 0) continue;
    char **p = realloc(t->script_paths, (t->nscripts + 1) * sizeof *p);
    if (p) t->script_paths = p;
    char **x = p ? realloc(t->script_texts, (t->nscripts + 1) * sizeof *x) : NULL;
    if (x) t->script_texts = x;
    size_t *l = x ? realloc(t->script_lens, (t->nscripts + 1) * sizeof *l) : NULL;
    if (!l) {
      rc = dp_err_set(e, DP_ENOMEM, "out of memory reading the scripts");
      break;
    }
    t->script_lens = l;
    char *text = NULL;
    size_t len = 0;
    if ((rc = dp_read_file(path, &text, &len, e)) != 0) break;
    t->script_paths[t->nscripts] = strdup(path);
    t->script_texts[t->nscripts] = text;
    t->script_lens[t->nscripts++] = len;
  }
  closedir(d);
  return rc;
}

int dp_meta_scripts_read(const dp_config *cfg, dp_meta_texts *t, dp_err *e) {
  char dir[PATH_MAX];
  int rc = dp_path_join(dir, sizeof dir, cfg->scripts, "connectors", e);
  if (rc == 0) rc = read_scripts(dir, 0, t, e);
  if (rc == 0) rc = dp_path_join(dir, sizeof dir, cfg->scripts, "gold", e);
  if (rc == 0) rc = read_scripts(dir, 0, t, e);
  return rc;
}

/* Metadata comes from eng->meta (a serve snapshot's texts) when set, else from the folder
 * DP_METADATA or, when DP_METADATA is "mongo", from the set pushed to MongoDB (metastore.c); all go
 * through the same Lua validation, and the meta table gets a "source" field saying where it came
 * from. */
int dp_load_metadata(dp_engine *eng, dp_snapshot **out, dp_err *e) {
  *out = NULL;
  if (!eng->L && !(eng->L = dp_lua_new(&eng->cfg, e))) return e->code;
  int rc;
  if (eng->meta) {
    rc = dp_meta_validate(eng->L, eng->meta, e);
  } else {
    dp_meta_texts t;
    if ((rc = dp_meta_texts_read(eng, &t, e)) != 0) return rc;
    rc = dp_meta_validate(eng->L, &t, e);
    dp_meta_texts_free(&t);
  }
  return rc ? rc : dp_meta_snapshot(eng->L, out, e);
}
