/* rawcompress.c - gzip raw files: the writer's deflate stream, the reader of both forms, and
 * compressing an old plain file (docs/lifecycle.md#compressed-raw-files). */
#include "rawcompress.h"
#include "rawmanifest.h"
#include "rawfile.h"
#include "jsonbson.h"
#include "log.h"

#include <bson/bson.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sodium.h>
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

/* Decompresses gz (the file found) into fd, to the gzip trailer (its CRC and length checked),
 * hashing what it writes. 0, or an error naming found: a truncated or damaged stream is never
 * taken for a shorter complete one (gzread ends with 0 there; gzerror tells). */
static int gunzip_to(gzFile gz, int fd, const char *found, dp_raw_facts *rf, dp_err *e) {
  unsigned char *buf = malloc(CHUNK);
  if (!buf) return dp_err_set(e, DP_ENOMEM, "out of memory");
  crypto_hash_sha256_state sha;
  crypto_hash_sha256_init(&sha);
  rf->bytes = 0;
  int rc = 0;
  for (;;) {
    int k = gzread(gz, buf, CHUNK);
    if (k == 0) break;
    if (k < 0) break; /* gzerror below */
    crypto_hash_sha256_update(&sha, buf, (unsigned long long)k);
    rf->bytes += (uint64_t)k;
    if (write_all(fd, buf, (size_t)k) != 0) {
      rc = dp_err_set(e, DP_EIO, "cannot decompress raw file %s into a temporary file: %s", found, strerror(errno));
      break;
    }
  }
  int zerr = Z_OK;
  const char *zmsg = rc ? NULL : gzerror(gz, &zerr);
  if (rc == 0 && zerr != Z_OK && zerr != Z_STREAM_END)
    rc = dp_err_set(e, DP_EIO, "raw file %s is truncated or damaged (%s)", found, zmsg ? zmsg : "gzip error");
  else if (rc == 0 && gzdirect(gz)) /* not gzip at all (also an empty file): zlib would copy it as it is */
    rc = dp_err_set(e, DP_EIO, "raw file %s is truncated or damaged (not a gzip stream)", found);
  unsigned char d[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&sha, d);
  sodium_bin2hex(rf->sha256, sizeof rf->sha256, d, sizeof d);
  free(buf);
  return rc;
}

int dp_raw_manifest_facts(const char *raw_path, dp_raw_facts *mf, dp_err *e) {
  char mpath[4200];
  memset(mf, 0, sizeof *mf);
  dp_raw_manifest_path(raw_path, mpath, sizeof mpath);
  if (access(mpath, F_OK) != 0) return 0; /* written before manifests existed */
  char *text = NULL;
  size_t len = 0;
  int rc = dp_read_file(mpath, &text, &len, e);
  if (rc) return rc;
  bson_t doc;
  rc = dp_json_to_bson(text, len, &doc, e);
  free(text);
  if (rc) {
    dp_err_prefix(e, "manifest %s: ", mpath);
    return rc;
  }
  static const char *const INTS[] = {"details.records", "details.bytes", "details.forgotten_lines"};
  uint64_t *dst[] = {&mf->records, &mf->bytes, &mf->forgotten_lines};
  bson_iter_t it;
  for (int i = 0; i < 3; i++)
    if (bson_iter_init(&it, &doc) && bson_iter_find_descendant(&it, INTS[i], &it)) *dst[i] = (uint64_t)bson_iter_as_int64(&it);
  if (bson_iter_init(&it, &doc) && bson_iter_find_descendant(&it, "details.sha256", &it) && BSON_ITER_HOLDS_UTF8(&it))
    snprintf(mf->sha256, sizeof mf->sha256, "%s", bson_iter_utf8(&it, NULL));
  bson_destroy(&doc);
  return 0;
}

/* What was read (got; sha256 "" when not hashed) against the manifest beside found. */
int dp_raw_check_manifest(const char *found, const dp_raw_facts *got, dp_err *e) {
  dp_raw_facts mf;
  int rc = dp_raw_manifest_facts(found, &mf, e);
  if (rc) return rc;
  if (mf.sha256[0] == '\0') return 0; /* no manifest, or one without the facts */
  if (got->bytes != mf.bytes)
    return dp_err_set(e, DP_EIO,
                      "raw file %s is truncated or damaged: %llu bytes of lines, its manifest says %llu (a forget "
                      "that stopped half way is completed by running it again)",
                      found, (unsigned long long)got->bytes, (unsigned long long)mf.bytes);
  if (got->sha256[0] && strcmp(got->sha256, mf.sha256) != 0)
    return dp_err_set(e, DP_EIO,
                      "raw file %s is damaged: the sha256 of its lines is %s, its manifest says %s (a forget that "
                      "stopped half way is completed by running it again)",
                      found, got->sha256, mf.sha256);
  return 0;
}

FILE *dp_raw_open_read(const char *path, const char *tmpdir, int verify, dp_err *e) {
  char found[4200];
  if (dp_raw_locate(path, found, sizeof found) != 0) {
    dp_err_set(e, DP_ENOTFOUND, "raw file %s: %s", path, strerror(ENOENT));
    errno = ENOENT;
    return NULL;
  }
  dp_raw_facts got = {0, 0, 0, ""};
  if (!dp_raw_is_gz(found)) {
    struct stat st;
    FILE *f = fopen(found, "r");
    if (!f) {
      int saved = errno;
      dp_err_set(e, DP_EIO, "cannot read raw file %s: %s", found, strerror(saved));
      errno = saved;
      return NULL;
    }
    got.bytes = fstat(fileno(f), &st) == 0 ? (uint64_t)st.st_size : 0;
    if (verify && dp_raw_check_manifest(found, &got, e) != 0) { /* the size only: a plain file is not read twice */
      fclose(f);
      errno = EIO;
      return NULL;
    }
    return f;
  }
  gzFile gz = gzopen(found, "rb");
  if (!gz) {
    int saved = errno ? errno : ENOMEM;
    dp_err_set(e, DP_EIO, "cannot read raw file %s: %s", found, strerror(saved));
    errno = saved;
    return NULL;
  }
  char tmpl[4200];
  const char *dir = tmpdir ? tmpdir : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  dp_err ignored;
  dp_mkdirs(dir, &ignored); /* mkstemp says why when this did not work */
  snprintf(tmpl, sizeof tmpl, "%s/.raw-XXXXXX", dir);
  int fd = mkstemp(tmpl);
  FILE *f = NULL;
  if (fd < 0) {
    dp_err_set(e, DP_EIO, "cannot create a temporary file in %s for raw file %s: %s", dir, found, strerror(errno));
  } else {
    unlink(tmpl); /* gone with the stream */
    int bad = gunzip_to(gz, fd, found, &got, e) != 0 || (verify && dp_raw_check_manifest(found, &got, e) != 0);
    if (!bad && lseek(fd, 0, SEEK_SET) == 0) f = fdopen(fd, "r");
    if (!f) {
      if (!bad) dp_err_set(e, DP_EIO, "cannot read raw file %s: %s", found, strerror(errno));
      close(fd);
    }
  }
  gzclose(gz);
  if (!f) errno = EIO;
  return f;
}

FILE *dp_raw_fopen_read(const char *path, const char *tmpdir) {
  dp_err e;
  dp_err_clear(&e);
  FILE *f = dp_raw_open_read(path, tmpdir, 1, &e);
  if (!f) {
    int saved = errno;
    dp_log(DP_LOG_ERROR, "%s", e.msg); /* the caller only has errno to say why */
    errno = saved;
  }
  return f;
}

int dp_raw_verify(const char *path, dp_err *e) {
  char found[4200];
  if (dp_raw_locate(path, found, sizeof found) != 0) return dp_err_set(e, DP_ENOTFOUND, "raw file %s is gone", path);
  if (dp_raw_is_gz(found)) {
    FILE *f = dp_raw_open_read(found, NULL, 1, e);
    if (!f) return e->code ? e->code : DP_EIO;
    fclose(f);
    return 0;
  }
  int fd = open(found, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return dp_err_set(e, DP_EIO, "cannot read raw file %s: %s", found, strerror(errno));
  unsigned char *buf = malloc(CHUNK);
  if (!buf) {
    close(fd);
    return dp_err_set(e, DP_ENOMEM, "out of memory");
  }
  crypto_hash_sha256_state sha;
  crypto_hash_sha256_init(&sha);
  dp_raw_facts got = {0, 0, 0, ""};
  int rc = 0;
  for (;;) {
    ssize_t k = read(fd, buf, CHUNK);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) rc = dp_err_set(e, DP_EIO, "cannot read raw file %s: %s", found, strerror(errno));
    if (k <= 0) break;
    crypto_hash_sha256_update(&sha, buf, (unsigned long long)k);
    got.bytes += (uint64_t)k;
  }
  close(fd);
  free(buf);
  unsigned char d[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&sha, d);
  sodium_bin2hex(got.sha256, sizeof got.sha256, d, sizeof d);
  return rc ? rc : dp_raw_check_manifest(found, &got, e);
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
  /* the file keeps its times: raw_delete_days counts from the export, not from the compression */
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (futimens(out, times) != 0) {
    rc = dp_err_set(e, DP_EIO, "cannot set the times of %s: %s", tmp, strerror(errno));
    goto cleanup;
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
