/* bronze.h - the bronze layer: one MongoDB document per key in database "bronze",
 * collection "<system>__<entity>", upserted from the run's raw file with unordered bulk writes. */
#ifndef DP_BRONZE_H
#define DP_BRONZE_H

#include <mongoc/mongoc.h>
#include "error.h"
#include "meta.h"
#include "runinfo.h"

/* Loads raw_path (JSON Lines) into bronze (database db, normally "bronze"). raw_ref is the file name recorded in
 * _dp.raw.file. Counts: in = records read, inserted / updated / unchanged per key,
 * deleted = keys not seen in a full load (marked _dp.deleted). */
int dp_bronze_load(mongoc_client_t *cli, const char *db, const dp_entity *ent, const dp_runinfo *run,
                   const char *raw_path, const char *raw_ref, dp_counts *out, dp_err *e);

/* Appends the collection name "<system>__<entity>" to buf (max 255 bytes). */
void dp_bronze_collection_name(const dp_entity *ent, char *buf, size_t cap);

#endif
