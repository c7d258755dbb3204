/* lifecycle.c - the helpers retention, forget and rollback share (see lifecycle.h). */
#include "lifecycle.h"
#include "buf.h"
#include "pg.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>

long long dp_lifecycle_now(void) {
  const char *t = getenv("DP_TEST_NOW");
  if (t && *t) {
    char *end;
    long long v = strtoll(t, &end, 10);
    if (*end == '\0' && v > 0) return v;
  }
  return (long long)time(NULL);
}

void dp_lifecycle_silver_table(dp_buf *b, const char *system, const char *entity, const char *suffix) {
  char name[300];
  snprintf(name, sizeof name, "%s__%s%s", system, entity, suffix);
  dp_pg_qualified(b, "silver", name);
}

void dp_lifecycle_bronze_dir(const char *data_dir, const char *system, const char *entity, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/bronze/%s/%s", data_dir, system, entity);
}

void dp_lifecycle_raw_dir(const char *data_dir, const char *system, const char *entity, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/raw/%s/%s", data_dir, system, entity);
}

typedef struct file_list {
  char **v;
  size_t n, cap;
} file_list;

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int walk(const char *dir, file_list *l, dp_err *e) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? 0 : dp_err_set(e, DP_EIO, "cannot read folder %s: %s", dir, strerror(errno));
  int rc = 0;
  struct dirent *de;
  while (rc == 0 && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    size_t need = strlen(dir) + strlen(de->d_name) + 2;
    char *p = malloc(need);
    if (!p) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); break; }
    snprintf(p, need, "%s/%s", dir, de->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
      rc = walk(p, l, e);
      free(p);
    } else if (S_ISREG(st.st_mode) && (ends_with(p, ".jsonl") || ends_with(p, ".jsonl.gz"))) {
      if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) { free(p); rc = dp_err_set(e, DP_ENOMEM, "out of memory"); break; }
        l->v = v;
        l->cap = cap;
      }
      l->v[l->n++] = p;
    } else {
      free(p);
    }
  }
  closedir(d);
  return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int dp_lifecycle_raw_files(const char *dir, char ***out, size_t *n, dp_err *e) {
  file_list l = {NULL, 0, 0};
  int rc = walk(dir, &l, e);
  if (rc) {
    dp_lifecycle_free_list(l.v, l.n);
    return rc;
  }
  if (l.n) qsort(l.v, l.n, sizeof *l.v, cmp_str);
  *out = l.v;
  *n = l.n;
  return 0;
}

void dp_lifecycle_free_list(char **list, size_t n) {
  for (size_t i = 0; i < n; i++) free(list[i]);
  free(list);
}
