/* bronze.h - the bronze layer: one MongoDB document per key in database "bronze",
 * collection "<system>__<entity>", upserted from the run's raw file with unordered bulk writes. */
#ifndef DP_BRONZE_H
#define DP_BRONZE_H

#include <mongoc/mongoc.h>
#include "error.h"
#include "meta.h"
#include "runinfo.h"

/* The entity's bronze state folder and what a load tells about itself. */
typedef struct dp_bronze_io {
  /* in: DP_DATA_DIR/bronze/<system>/<entity>, holding the key file keys.idx and the change files
   * <run_id>.bson (NULL: neither is read nor written) */
  const char *dir;
  /* in: the entity's last bronze load when it succeeded (per the audit), else NULL or "": the
   * key file is used only when it was written by that load; otherwise the collection is read */
  const char *trusted_run;
  int64_t duplicates;  /* out: records that repeated a key of this run */
  int used_key_file;   /* out: 1 when the key file stood in for reading the collection */
} dp_bronze_io;

/* Loads raw_path (JSON Lines) into bronze (database db, normally "bronze"). raw_ref is the file name recorded in
 * _dp.raw.file. Counts: in = records read, inserted / updated / unchanged per key,
 * deleted = keys not seen in a full load (marked _dp.deleted). With io->dir, every document
 * written (and a {_id, _dp.deleted} document per deletion) goes, in order, to the change file
 * <dir>/<run_id>.bson, which gets that name only when the load succeeded; then the key file is
 * rewritten. */
int dp_bronze_load(mongoc_client_t *cli, const char *db, const dp_entity *ent, const dp_runinfo *run,
                   const char *raw_path, const char *raw_ref, dp_bronze_io *io, dp_counts *out, dp_err *e);

/* "<dir>/<run_id>.bson" (cap >= strlen(dir) + 43) */
void dp_bronze_change_file(const char *dir, const char *run_id, char *buf, size_t cap);
/* The collection of the records bronze could not store or key: "<system>__<entity>__rejected",
 * one {_id, _dp: {run_id, run_ts, rejected_at, reason, raw: {file, line}}} per record. */
void dp_bronze_rejects_collection_name(const dp_entity *ent, char *buf, size_t cap);

/* The bronze _id of a key hash: every reader and writer of bronze documents goes through these two,
 * so the _id's form is decided here alone. The form is the key hash as text, 32 lowercase hex
 * digits: FerretDB pushes an equality on a string _id down to PostgreSQL (on a binary one it reads
 * the whole collection), and a real MongoDB serves either from its _id index (docs/storage.md).
 * dp_bronze_append_id appends field = the id of key; dp_bronze_iter_id reads one (it points at
 * the field) into key and returns DP_BRONZE_ID_TEXT, or DP_BRONZE_ID_BINARY for the binary UUID
 * of bronze collections written before (read, never written: `dp-engine migrate --bronze-ids`
 * converts them), or 0 when the value is not a bronze id. */
#define DP_BRONZE_ID_LEN 32
enum { DP_BRONZE_ID_TEXT = 1, DP_BRONZE_ID_BINARY = 2 };
void dp_bronze_append_id(bson_t *doc, const char *field, const uint8_t key[16]);
int dp_bronze_iter_id(const bson_iter_t *it, uint8_t key[16]);

/* A server's error message without its internals (FerretDB's Go call sites, PostgreSQL's
 * SQLSTATE), written into out (cap bytes); returns out. DP_BRONZE_SERVER_MSG(be) uses a
 * temporary buffer. */
const char *dp_bronze_server_msg(const bson_error_t *be, char *out, size_t cap);
#define DP_BRONZE_SERVER_MSG(be) dp_bronze_server_msg(&(be), (char[sizeof (be).message]){0}, sizeof (be).message)

/* Appends the collection name "<system>__<entity>" to buf (max 255 bytes). */
void dp_bronze_collection_name(const dp_entity *ent, char *buf, size_t cap);

/* Reads DP_SORT_MEM and DP_BRONZE_WRITERS (once per process): 0, or DP_ECONFIG naming the variable
 * whose value is bad (the default is used for it). main.c calls it at start (doctor reports it
 * as its "bronze settings" check instead). */
int dp_bronze_settings_init(dp_err *e);
/* The values in use (a bad one replaced by its default). */
void dp_bronze_settings(size_t *sort_mem_bytes, int *writers);

#endif
