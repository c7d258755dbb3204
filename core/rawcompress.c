/* rawcompress.c - gzip raw files: the writer's deflate stream, the reader of both forms, and
 * compressing an old plain file (docs/lifecycle.md#compressed-raw-files). */
#include "rawcompress.h"
#include "rawmanifest.h"
#include "rawfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define CHUNK (256 * 1024)

struct dp_gz_out {
  z_stream zs;
  unsigned char out[CHUNK];
  uint64_t written;
};

dp_gz_out *dp_gz_out_new(void) {
  dp_gz_out *z = calloc(1, sizeof *z);
  if (!z) return NULL;
  /* windowBits 15 + 16: a gzip header and trailer, which zcat and gzopen read */
  if (deflateInit2(&z->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    free(z);
    return NULL;
  }
  return z;
}

static int write_all(int fd, const unsigned char *p, size_t n) {
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

int dp_gz_out_write(dp_gz_out *z, int fd, const char *p, size_t n, int finish, dp_err *e) {
  z->zs.next_in = (unsigned char *)(uintptr_t)p;
  z->zs.avail_in = (uInt)n;
  int flush = finish ? Z_FINISH : Z_NO_FLUSH;
  for (;;) {
    z->zs.next_out = z->out;
    z->zs.avail_out = CHUNK;
    int zr = deflate(&z->zs, flush);
    if (zr == Z_STREAM_ERROR) return dp_err_set(e, DP_EIO, "gzip: deflate failed");
    size_t have = CHUNK - z->zs.avail_out;
    if (have && write_all(fd, z->out, have) != 0)
      return dp_err_set(e, DP_EIO, "cannot write a compressed raw file: %s", strerror(errno));
    z->written += have;
    if (finish ? zr == Z_STREAM_END : (z->zs.avail_in == 0 && z->zs.avail_out != 0)) break;
  }
  return 0;
}

uint64_t dp_gz_out_bytes(const dp_gz_out *z) { return z->written; }

void dp_gz_out_free(dp_gz_out *z) {
  if (!z) return;
  deflateEnd(&z->zs);
  free(z);
}

int dp_raw_is_gz(const char *path) {
  size_t n = strlen(path);
  return n > 3 && strcmp(path + n - 3, ".gz") == 0;
}

int dp_raw_locate(const char *path, char *out, size_t cap) {
  size_t n = strlen(path);
  if (n + 4 > cap) return -1;
  if (access(path, F_OK) == 0) {
    memcpy(out, path, n + 1);
    return 0;
  }
  if (dp_raw_is_gz(path)) {
    memcpy(out, path, n - 3);
    out[n - 3] = '\0';
  } else {
    snprintf(out, cap, "%s.gz", path);
  }
  return access(out, F_OK) == 0 ? 0 : -1;
}

void dp_raw_manifest_path(const char *raw_path, char *out, size_t cap) {
  size_t n = strlen(raw_path);
  if (dp_raw_is_gz(raw_path)) n -= 3;
  if (n >= 6 && memcmp(raw_path + n - 6, ".jsonl", 6) == 0) n -= 6;
  snprintf(out, cap, "%.*s.manifest.json", (int)n, raw_path);
}

/* Decompresses gz into fd; 0, or -1 with errno (EIO for data that is not gzip). */
static int gunzip_to(gzFile gz, int fd) {
  unsigned char *buf = malloc(CHUNK);
  if (!buf) {
    errno = ENOMEM;
    return -1;
  }
  int rc = 0;
  for (;;) {
    int k = gzread(gz, buf, CHUNK);
    if (k < 0) {
      errno = EIO;
      rc = -1;
      break;
    }
    if (k == 0) break;
    if (write_all(fd, buf, (size_t)k) != 0) {
      rc = -1;
      break;
    }
  }
  free(buf);
  return rc;
}

FILE *dp_raw_fopen_read(const char *path, const char *tmpdir) {
  char found[4200];
  if (dp_raw_locate(path, found, sizeof found) != 0) {
    errno = ENOENT;
    return NULL;
  }
  if (!dp_raw_is_gz(found)) return fopen(found, "r");
  gzFile gz = gzopen(found, "rb");
  if (!gz) return NULL;
  char tmpl[4200];
  const char *dir = tmpdir ? tmpdir : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  dp_err ignored;
  dp_mkdirs(dir, &ignored); /* mkstemp says why when this did not work */
  snprintf(tmpl, sizeof tmpl, "%s/.raw-XXXXXX", dir);
  int fd = mkstemp(tmpl);
  FILE *f = NULL;
  if (fd >= 0) {
    unlink(tmpl); /* gone with the stream */
    int bad = gunzip_to(gz, fd) != 0;
    int saved = errno;
    if (!bad && lseek(fd, 0, SEEK_SET) == 0) f = fdopen(fd, "r");
    if (!f) {
      close(fd);
      errno = bad ? saved : errno;
    }
  }
  int saved = errno;
  gzclose(gz);
  errno = saved;
  return f;
}

int dp_raw_compress_file(const char *path, uint64_t *before, uint64_t *after, dp_err *e) {
  char gzpath[4200], tmp[4300];
  struct stat st;
  int in = -1, out = -1, rc = 0;
  char *buf = NULL;
  dp_gz_out *z = NULL;
  snprintf(gzpath, sizeof gzpath, "%s.gz", path);
  snprintf(tmp, sizeof tmp, "%s.tmp-%ld", gzpath, (long)getpid());
  if (stat(path, &st) != 0) return dp_err_set(e, DP_EIO, "cannot read %s: %s", path, strerror(errno));
  *before = (uint64_t)st.st_size;
  in = open(path, O_RDONLY | O_CLOEXEC);
  out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  buf = malloc(CHUNK);
  z = dp_gz_out_new();
  if (in < 0 || out < 0) {
    rc = dp_err_set(e, DP_EIO, "cannot compress %s: %s", path, strerror(errno));
    goto cleanup;
  }
  if (!buf || !z) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  for (;;) {
    ssize_t k = read(in, buf, CHUNK);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      rc = dp_err_set(e, DP_EIO, "cannot read %s: %s", path, strerror(errno));
      goto cleanup;
    }
    if ((rc = dp_gz_out_write(z, out, buf, (size_t)k, k == 0, e)) != 0) goto cleanup;
    if (k == 0) break;
  }
  if (fsync(out) != 0) {
    rc = dp_err_set(e, DP_EIO, "cannot fsync %s: %s", tmp, strerror(errno));
    goto cleanup;
  }
  *after = dp_gz_out_bytes(z);
  close(out);
  out = -1;
  if (rename(tmp, gzpath) != 0) {
    rc = dp_err_set(e, DP_EIO, "cannot rename %s: %s", tmp, strerror(errno));
    goto cleanup;
  }
  /* the manifest names the new file before the plain one goes: a crash in between leaves both
   * forms, and readers take the plain one first (dp_raw_locate) */
  {
    const char *base = strrchr(gzpath, '/');
    base = base ? base + 1 : gzpath;
    dp_manifest_set sets[] = {
        {"compression", DP_MSET_STR, "gzip", 0},
        {"stored_bytes", DP_MSET_INT, NULL, (int64_t)*after},
    };
    rc = dp_raw_manifest_update(path, base, sets, sizeof sets / sizeof sets[0], e);
  }
  if (rc == 0 && unlink(path) != 0) rc = dp_err_set(e, DP_EIO, "cannot remove %s: %s", path, strerror(errno));
  if (rc == 0) rc = dp_fsync_dir_of(gzpath, e);
cleanup:
  if (in >= 0) close(in);
  if (out >= 0) {
    close(out);
    unlink(tmp);
  }
  free(buf);
  dp_gz_out_free(z);
  return rc;
}
