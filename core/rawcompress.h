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
/* The same with the reason in e: a gzip stream must reach its end (CRC and length checked: a
 * truncated or damaged file is an error naming it, never a shorter file); with verify, what is
 * read must match the manifest beside the file (a plain file: its size; a gzip file: bytes and
 * sha256 of the lines). dp_raw_fopen_read verifies and logs the reason (its callers only have
 * errno, EIO). */
FILE *dp_raw_open_read(const char *path, const char *tmpdir, int verify, dp_err *e);
/* Reads the raw file whole (either form) and checks it against its manifest: bytes and sha256.
 * 0 when it matches or has no manifest (written before manifests), else an error naming it. */
int dp_raw_verify(const char *path, dp_err *e);
/* What a raw file holds: of its manifest (details), or of what was read (sha256 "" when not
 * hashed). */
typedef struct dp_raw_facts {
  uint64_t records, bytes, forgotten_lines;
  char sha256[65]; /* "" when the manifest has none (or there is no manifest) */
} dp_raw_facts;
/* The facts of the manifest beside raw_path (all 0 / "" when it has none). */
int dp_raw_manifest_facts(const char *raw_path, dp_raw_facts *out, dp_err *e);
/* got (bytes; sha256 unless "") against the manifest beside found: 0, or an error naming the
 * file ("truncated or damaged"). A file without a manifest (or its sha256) passes. */
int dp_raw_check_manifest(const char *found, const dp_raw_facts *got, dp_err *e);
/* The manifest beside a raw file: X.manifest.json for X.jsonl and X.jsonl.gz. */
void dp_raw_manifest_path(const char *raw_path, char *out, size_t cap);

/* Compresses the plain raw file path (X.jsonl) into X.jsonl.gz (temporary name, fsync, rename),
 * rewrites its manifest (file, compression, stored_bytes; records, bytes and sha256 unchanged)
 * and removes the plain file; the new file keeps the access and modification times of the plain
 * one. *before / *after: bytes on disk. */
int dp_raw_compress_file(const char *path, uint64_t *before, uint64_t *after, dp_err *e);

#endif
