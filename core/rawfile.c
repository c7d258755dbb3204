/* rawfile.c - atomic JSON Lines writer and file helpers. */
#include "rawfile.h"
#include "rawcompress.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RAW_BUFSZ (256 * 1024)

int dp_bson_file_whole(const char *path, long long told) {
  struct stat st;
  return stat(path, &st) == 0 && (long long)st.st_size == told;
}

int dp_path_join(char *out, size_t cap, const char *a, const char *b, dp_err *e) {
  int n = snprintf(out, cap, "%s/%s", a, b);
  if (n < 0 || (size_t)n >= cap) return dp_err_set(e, DP_EINVAL, "path too long: %s/%s", a, b);
  return 0;
}

int dp_mkdirs(const char *path, dp_err *e) {
  char tmp[4096];
  size_t n = strlen(path);
  if (n >= sizeof tmp) return dp_err_set(e, DP_EINVAL, "path too long: %s", path);
  memcpy(tmp, path, n + 1);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
      return dp_err_set(e, DP_EIO, "cannot create folder %s: %s", tmp, strerror(errno));
    *p = '/';
  }
  if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
    return dp_err_set(e, DP_EIO, "cannot create folder %s: %s", tmp, strerror(errno));
  return 0;
}

int dp_fsync_dir_of(const char *path, dp_err *e) {
  char *copy = strdup(path);
  if (!copy) return dp_err_set(e, DP_ENOMEM, "out of memory");
  const char *dir = dirname(copy);
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  int rc = 0;
  if (fd < 0 || fsync(fd) != 0)
    rc = dp_err_set(e, DP_EIO, "cannot fsync folder %s: %s", dir, strerror(errno));
  if (fd >= 0) close(fd);
  free(copy);
  return rc;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static char *tmp_name(const char *path) {
  size_t n = strlen(path) + 32;
  char *t = malloc(n);
  if (t) snprintf(t, n, "%s.tmp-%ld", path, (long)getpid());
  return t;
}

static void writer_free(dp_raw_writer *w) {
  if (w->fd >= 0) close(w->fd);
  dp_gz_out_free(w->gz);
  w->gz = NULL;
  free(w->path);
  free(w->tmp_path);
  free(w->buf);
  w->fd = -1;
  w->path = w->tmp_path = w->buf = NULL;
}

int dp_raw_open(dp_raw_writer *w, const char *path, dp_err *e) {
  int rc;
  memset(w, 0, sizeof *w);
  w->fd = -1;
  char *dir = strdup(path);
  if (!dir) return dp_err_set(e, DP_ENOMEM, "out of memory");
  rc = dp_mkdirs(dirname(dir), e);
  free(dir);
  if (rc) return rc;
  w->path = strdup(path);
  w->tmp_path = tmp_name(path);
  w->buf = malloc(RAW_BUFSZ);
  if (dp_raw_is_gz(path)) w->gz = dp_gz_out_new();
  if (!w->path || !w->tmp_path || !w->buf || (dp_raw_is_gz(path) && !w->gz)) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w->fd < 0) {
    rc = dp_err_set(e, DP_EIO, "cannot create %s: %s", w->tmp_path, strerror(errno));
    goto cleanup;
  }
  crypto_hash_sha256_init(&w->sha);
  return 0;
cleanup:
  writer_free(w);
  return rc;
}

/* Writes p[0..n) to the file, through the deflate stream when there is one. */
static int out_write(dp_raw_writer *w, const char *p, size_t n, dp_err *e) {
  if (w->gz) return dp_gz_out_write(w->gz, w->fd, p, n, 0, e);
  if (write_all(w->fd, p, n) != 0) return dp_err_set(e, DP_EIO, "cannot write %s: %s", w->tmp_path, strerror(errno));
  return 0;
}

static int flush(dp_raw_writer *w, dp_err *e) {
  if (w->used == 0) return 0;
  int rc = out_write(w, w->buf, w->used, e);
  if (rc) return rc;
  w->used = 0;
  return 0;
}

int dp_raw_append(dp_raw_writer *w, const char *line, size_t len, dp_err *e) {
  if (w->fd < 0) return dp_err_set(e, DP_EINVAL, "raw writer is closed");
  if (memchr(line, '\n', len))
    return dp_err_set(e, DP_EINVAL, "a raw record must be one line");
  crypto_hash_sha256_update(&w->sha, (const unsigned char *)line, len);
  crypto_hash_sha256_update(&w->sha, (const unsigned char *)"\n", 1);
  if (w->used + len + 1 > RAW_BUFSZ) {
    int rc = flush(w, e);
    if (rc) return rc;
  }
  if (len + 1 > RAW_BUFSZ) {
    int rc = out_write(w, line, len, e);
    if (rc == 0) rc = out_write(w, "\n", 1, e);
    if (rc) return rc;
  } else {
    memcpy(w->buf + w->used, line, len);
    w->buf[w->used + len] = '\n';
    w->used += len + 1;
  }
  w->records++;
  w->bytes += len + 1;
  return 0;
}

int dp_raw_commit(dp_raw_writer *w, dp_err *e) {
  int rc = flush(w, e);
  if (rc == 0 && w->gz) rc = dp_gz_out_write(w->gz, w->fd, NULL, 0, 1, e);
  if (rc) goto fail;
  w->stored = w->gz ? dp_gz_out_bytes(w->gz) : w->bytes;
  if (fsync(w->fd) != 0) {
    rc = dp_err_set(e, DP_EIO, "cannot fsync %s: %s", w->tmp_path, strerror(errno));
    goto fail;
  }
  close(w->fd);
  w->fd = -1;
  if (rename(w->tmp_path, w->path) != 0) {
    rc = dp_err_set(e, DP_EIO, "cannot rename %s to %s: %s", w->tmp_path, w->path, strerror(errno));
    goto fail;
  }
  rc = dp_fsync_dir_of(w->path, e);
  if (rc) goto fail;
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&w->sha, digest);
  sodium_bin2hex(w->sha256_hex, sizeof w->sha256_hex, digest, sizeof digest);
  writer_free(w);
  return 0;
fail:
  dp_raw_abort(w);
  return rc;
}

void dp_raw_abort(dp_raw_writer *w) {
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
  if (w->tmp_path) unlink(w->tmp_path);
  writer_free(w);
}

int dp_write_file_atomic(const char *path, const char *data, size_t len, dp_err *e) {
  return dp_write_file_atomic_mode(path, data, len, 0644, e);
}

int dp_write_file_atomic_mode(const char *path, const char *data, size_t len, unsigned mode, dp_err *e) {
  char *tmp = tmp_name(path);
  int fd = -1, rc = 0;
  if (!tmp) return dp_err_set(e, DP_ENOMEM, "out of memory");
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) {
    rc = dp_err_set(e, DP_EIO, "cannot create %s: %s", tmp, strerror(errno));
    goto cleanup;
  }
  if (fchmod(fd, (mode_t)mode) != 0) { /* a leftover temporary file keeps its old mode */
    rc = dp_err_set(e, DP_EIO, "cannot set the mode of %s: %s", tmp, strerror(errno));
    goto cleanup;
  }
  if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
    rc = dp_err_set(e, DP_EIO, "cannot write %s: %s", tmp, strerror(errno));
    goto cleanup;
  }
  close(fd);
  fd = -1;
  if (rename(tmp, path) != 0) {
    rc = dp_err_set(e, DP_EIO, "cannot rename %s: %s", tmp, strerror(errno));
    goto cleanup;
  }
  rc = dp_fsync_dir_of(path, e);
cleanup:
  if (fd >= 0) close(fd);
  if (rc) unlink(tmp);
  free(tmp);
  return rc;
}

int dp_read_file(const char *path, char **out, size_t *len, dp_err *e) {
  FILE *f = fopen(path, "rb");
  if (!f) return dp_err_set(e, DP_EIO, "cannot open %s: %s", path, strerror(errno));
  char *data = NULL;
  size_t cap = 0, n = 0;
  int rc = 0;
  for (;;) {
    if (n + 65536 + 1 > cap) {
      cap = cap ? cap * 2 : 131072;
      char *p = realloc(data, cap);
      if (!p) { rc = dp_err_set(e, DP_ENOMEM, "out of memory reading %s", path); goto cleanup; }
      data = p;
    }
    size_t k = fread(data + n, 1, 65536, f);
    n += k;
    if (k < 65536) break;
  }
  if (ferror(f)) { rc = dp_err_set(e, DP_EIO, "cannot read %s", path); goto cleanup; }
  data[n] = '\0';
  *out = data;
  *len = n;
  data = NULL;
cleanup:
  free(data);
  fclose(f);
  return rc;
}

void dp_sha256_hex(const void *p, size_t n, char out[65]) {
  unsigned char d[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(d, (const unsigned char *)p, n);
  sodium_bin2hex(out, 65, d, sizeof d);
}
