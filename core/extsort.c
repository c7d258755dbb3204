/* extsort.c - external sort of fixed-size records (see extsort.h). At most MAX_RUNS runs are kept
 * (more are merged into one first: open files stay few whatever the input size), so the merge
 * picks the least head by a linear scan. */
#include "extsort.h"
#include "rawfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_RUNS 64

int dp_extsort_init(dp_extsort *s, size_t recsize, dp_extsort_cmp cmp, size_t mem_bytes, const char *dir,
                    dp_err *e) {
  memset(s, 0, sizeof *s);
  s->recsize = recsize;
  s->cmp = cmp;
  s->cap = mem_bytes / recsize;
  if (s->cap < 16) s->cap = 16;
  s->buf = malloc(s->cap * recsize);
  s->dir = strdup(dir);
  if (!s->buf || !s->dir) {
    dp_extsort_free(s);
    return dp_err_set(e, DP_ENOMEM, "out of memory for sorting");
  }
  return 0;
}

/* A new temporary file in the sorter's folder, already unlinked (a crash leaves nothing). */
static int temp_file(dp_extsort *s, FILE **out, dp_err *e) {
  int rc = dp_mkdirs(s->dir, e);
  if (rc) return rc;
  size_t len = strlen(s->dir) + 32;
  char *path = malloc(len);
  if (!path) return dp_err_set(e, DP_ENOMEM, "out of memory");
  snprintf(path, len, "%s/sort.XXXXXX", s->dir);
  int fd = mkstemp(path);
  if (fd < 0) {
    rc = dp_err_set(e, DP_EIO, "cannot create a temporary file in %s: %s", s->dir, strerror(errno));
    free(path);
    return rc;
  }
  unlink(path);
  free(path);
  *out = fdopen(fd, "w+b");
  if (!*out) {
    close(fd);
    return dp_err_set(e, DP_EIO, "cannot open a temporary file: %s", strerror(errno));
  }
  setvbuf(*out, NULL, _IOFBF, 1 << 16);
  return 0;
}

static int read_head(dp_extsort *s, size_t r, dp_err *e);
static int start_merge(dp_extsort *s, dp_err *e);
static int merge_next(dp_extsort *s, void *out, dp_err *e);

/* Merges all runs into one (when there are MAX_RUNS of them). */
static int compact(dp_extsort *s, dp_err *e) {
  FILE *f = NULL;
  int rc = temp_file(s, &f, e);
  if (rc) return rc;
  char *rec = malloc(s->recsize);
  if (!rec) rc = dp_err_set(e, DP_ENOMEM, "out of memory");
  if (rc == 0) rc = start_merge(s, e);
  int got;
  while (rc == 0 && (got = merge_next(s, rec, e)) != 0) {
    if (got < 0) rc = got;
    else if (fwrite(rec, s->recsize, 1, f) != 1)
      rc = dp_err_set(e, DP_EIO, "cannot write a temporary file in %s: %s", s->dir, strerror(errno));
  }
  if (rc == 0 && fflush(f) != 0) rc = dp_err_set(e, DP_EIO, "cannot write a temporary file in %s", s->dir);
  free(rec);
  for (size_t r = 0; r < s->nruns; r++) fclose(s->runs[r]);
  free(s->heads);
  free(s->live);
  s->heads = NULL;
  s->live = NULL;
  s->runs[0] = f;
  s->nruns = 1;
  return rc;
}

/* Sorts the buffer and writes it to a new run. */
static int spill(dp_extsort *s, dp_err *e) {
  qsort(s->buf, s->n, s->recsize, s->cmp);
  FILE *f = NULL;
  int rc = temp_file(s, &f, e);
  if (rc) return rc;
  FILE **runs = realloc(s->runs, (s->nruns + 1) * sizeof *runs);
  if (!runs) {
    fclose(f);
    return dp_err_set(e, DP_ENOMEM, "out of memory");
  }
  s->runs = runs;
  s->runs[s->nruns++] = f;
  if (fwrite(s->buf, s->recsize, s->n, f) != s->n || fflush(f) != 0)
    return dp_err_set(e, DP_EIO, "cannot write a temporary file in %s: %s", s->dir, strerror(errno));
  s->n = 0;
  return s->nruns == MAX_RUNS ? compact(s, e) : 0;
}

int dp_extsort_add(dp_extsort *s, const void *rec, dp_err *e) {
  if (s->n == s->cap) {
    int rc = spill(s, e);
    if (rc) return rc;
  }
  memcpy(s->buf + s->n * s->recsize, rec, s->recsize);
  s->n++;
  return 0;
}

static int read_head(dp_extsort *s, size_t r, dp_err *e) {
  size_t got = fread(s->heads + r * s->recsize, s->recsize, 1, s->runs[r]);
  if (got == 1) {
    s->live[r] = 1;
    return 0;
  }
  s->live[r] = 0;
  if (ferror(s->runs[r])) return dp_err_set(e, DP_EIO, "cannot read a temporary file in %s", s->dir);
  return 0;
}

/* Rewinds every run and reads its first record. */
static int start_merge(dp_extsort *s, dp_err *e) {
  s->heads = malloc(s->nruns * s->recsize);
  s->live = calloc(s->nruns, 1);
  if (!s->heads || !s->live) return dp_err_set(e, DP_ENOMEM, "out of memory");
  for (size_t r = 0; r < s->nruns; r++) {
    if (fseek(s->runs[r], 0, SEEK_SET) != 0) return dp_err_set(e, DP_EIO, "cannot read a temporary file");
    int rc = read_head(s, r, e);
    if (rc) return rc;
  }
  return 0;
}

int dp_extsort_finish(dp_extsort *s, dp_err *e) {
  s->pos = 0;
  if (s->nruns == 0) { /* everything fits: sort in memory */
    qsort(s->buf, s->n, s->recsize, s->cmp);
    return 0;
  }
  int rc = s->n ? spill(s, e) : 0;
  if (rc) return rc;
  /* the buffer is not needed any more: give its memory back before the merge */
  free(s->buf);
  s->buf = NULL;
  return start_merge(s, e);
}

int dp_extsort_next(dp_extsort *s, void *out, dp_err *e) {
  if (s->nruns == 0) {
    if (s->pos >= s->n) return 0;
    memcpy(out, s->buf + s->pos++ * s->recsize, s->recsize);
    return 1;
  }
  return merge_next(s, out, e);
}

/* The least head of the runs (1), or 0 when all are done. */
static int merge_next(dp_extsort *s, void *out, dp_err *e) {
  size_t best = s->nruns;
  for (size_t r = 0; r < s->nruns; r++) {
    if (!s->live[r]) continue;
    if (best == s->nruns || s->cmp(s->heads + r * s->recsize, s->heads + best * s->recsize) < 0) best = r;
  }
  if (best == s->nruns) return 0;
  memcpy(out, s->heads + best * s->recsize, s->recsize);
  int rc = read_head(s, best, e);
  return rc ? rc : 1;
}

void dp_extsort_free(dp_extsort *s) {
  for (size_t r = 0; r < s->nruns; r++) fclose(s->runs[r]);
  free(s->runs);
  free(s->buf);
  free(s->dir);
  free(s->heads);
  free(s->live);
  memset(s, 0, sizeof *s);
}
