/* rawcompress.h - gzip raw files (docs/lifecycle.md#compressed-raw-files): the deflate stream
 * behind a raw writer that writes compressed from the start, the reader every raw reader goes
 * through (X.jsonl and X.jsonl.gz alike), and compressing an old plain file in place. */
#ifndef DP_RAWCOMPRESS_H
#define DP_RAWCOMPRESS_H

#include <stdint.h>
#include <stdio.h>
#include "error.h"

/* A gzip deflate stream written to a file descriptor. */
typedef struct dp_gz_out dp_gz_out;

/* A new stream (caller frees with dp_gz_out_free); NULL when out of memory. */
dp_gz_out *dp_gz_out_new(void);
/* Compresses n bytes to fd; with finish, ends the gzip member (n may be 0). */
int dp_gz_out_write(dp_gz_out *z, int fd, const char *p, size_t n, int finish, dp_err *e);
/* Bytes written to fd so far. */
uint64_t dp_gz_out_bytes(const dp_gz_out *z);
void dp_gz_out_free(dp_gz_out *z);

/* 1 when path ends in ".gz". */
int dp_raw_is_gz(const char *path);
/* The raw file stored for path: path itself, or X.jsonl.gz for X.jsonl (compressed by retention),
 * or X.jsonl for X.jsonl.gz; copied to out. 0, or -1 when neither exists. */
int dp_raw_locate(const char *path, char *out, size_t cap);
/* Opens a raw file for reading as plain JSON Lines (seekable): a plain file as it is, a gzip file
 * decompressed into an unlinked temporary file in tmpdir (created when missing; NULL: TMPDIR or
 * /tmp). path may name either form (dp_raw_locate). Returns the stream (caller fcloses) or NULL
 * with errno set (EIO: not valid gzip). */
FILE *dp_raw_fopen_read(const char *path, const char *tmpdir);
/* The manifest beside a raw file: X.manifest.json for X.jsonl and X.jsonl.gz. */
void dp_raw_manifest_path(const char *raw_path, char *out, size_t cap);

/* Compresses the plain raw file path (X.jsonl) into X.jsonl.gz (temporary name, fsync, rename),
 * rewrites its manifest (file, compression, stored_bytes; records, bytes and sha256 unchanged)
 * and removes the plain file. *before / *after: bytes on disk. */
int dp_raw_compress_file(const char *path, uint64_t *before, uint64_t *after, dp_err *e);

#endif
