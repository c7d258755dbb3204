/* rawfile.h - the raw layer's file writer: JSON Lines written to a temporary name beside
 * the final one, fsynced, then renamed and the folder fsynced, so a reader never sees a
 * partial file under the final name. Also atomic whole-file writes (manifests). */
#ifndef DP_RAWFILE_H
#define DP_RAWFILE_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include "error.h"

typedef struct dp_raw_writer {
  char *path;      /* final name (owned) */
  char *tmp_path;  /* temporary name (owned) */
  int fd;
  char *buf;       /* write buffer (owned) */
  size_t used;
  uint64_t records;
  uint64_t bytes;
  crypto_hash_sha256_state sha;
  char sha256_hex[65]; /* set by commit */
  struct dp_gz_out *gz; /* the deflate stream when path ends in .gz (owned), else NULL */
  uint64_t stored;      /* set by commit: bytes on disk (bytes, or the compressed size) */
} dp_raw_writer;

/* Creates the folders and opens PATH.tmp-<pid> for writing; a PATH ending in .gz is written
 * gzip-compressed (rawcompress.h), records, bytes and sha256 still count the plain lines. The
 * writer owns its memory until dp_raw_commit or dp_raw_abort. */
int dp_raw_open(dp_raw_writer *w, const char *path, dp_err *e);
/* Appends one record (a compact JSON object, no newline inside) and a newline. */
int dp_raw_append(dp_raw_writer *w, const char *line, size_t len, dp_err *e);
/* Flushes, fsyncs, renames to the final name, fsyncs the folder; frees the writer. */
int dp_raw_commit(dp_raw_writer *w, dp_err *e);
/* Closes and removes the temporary file; frees the writer. Safe after a failed commit. */
void dp_raw_abort(dp_raw_writer *w);

/* Writes data to path atomically (temporary file, fsync, rename, folder fsync), mode 0644. */
/* out = a "/" b (cap bytes). DP_EINVAL "path too long: a/b" when it does not fit. */
int dp_path_join(char *out, size_t cap, const char *a, const char *b, dp_err *e);
int dp_write_file_atomic(const char *path, const char *data, size_t len, dp_err *e);
/* The same with the file mode given (the temporary file has it from the start: 0600 keeps a
 * private file private at every moment). */
int dp_write_file_atomic_mode(const char *path, const char *data, size_t len, unsigned mode, dp_err *e);
/* mkdir -p */
int dp_mkdirs(const char *path, dp_err *e);

/* fsync of the folder holding path (after a rename into it) */
int dp_fsync_dir_of(const char *path, dp_err *e);

/* 1 when a bson_reader that reached the end of the file at path read all of it (libbson's file
 * reader reports the end also when a torn document is left over), 0 when bytes are left. */
int dp_bson_file_whole(const char *path, long long told);
/* Reads a whole file into a heap buffer (caller frees); *len set. */
int dp_read_file(const char *path, char **out, size_t *len, dp_err *e);
/* sha256 hex (65 bytes with NUL) of a byte string. */
void dp_sha256_hex(const void *p, size_t n, char out[65]);

#endif
