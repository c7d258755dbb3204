/* silver.h - the silver layer: typed SCD2 history tables in PostgreSQL schema "silver".
 * The bronze documents a run touched are cast in C, staged with COPY into a temporary
 * table and merged with set-based SQL in one transaction (docs/data-layers.md#silver). */
#ifndef DP_SILVER_H
#define DP_SILVER_H

#include <libpq-fe.h>
#include <mongoc/mongoc.h>
#include "error.h"
#include "meta.h"
#include "runinfo.h"

/* Creates the silver table, its indexes and its __rejected table when missing; otherwise
 * makes the table follow metadata: adds new columns, widens types, drops NOT NULL where
 * metadata no longer asks for it, and refuses narrowing or incompatible type changes (naming
 * entity, column, old and new type) before changing anything. Each change (creation too) is
 * logged and written to audit.schema_change with the run's id and time. Runs on c as is: the
 * caller's transaction makes a change and its audit row commit or roll back together. */
int dp_silver_ensure_table(PGconn *c, const dp_entity *ent, const dp_runinfo *run, dp_err *e);

/* Merges what bronze changed since silver's last committed run of the entity into silver, in one
 * transaction on c: from the change files in bronze_dir (DP_DATA_DIR/bronze/<system>/<entity>)
 * when the audit shows every bronze load since then succeeded and left one, else from bronze
 * itself. Consumed change files are removed after the commit. For delta entities, cursor (may be
 * NULL: unchanged) is stored in dp.entity_cursor in the same transaction. Nothing is written
 * when it fails. */
int dp_silver_merge(PGconn *c, mongoc_client_t *cli, const char *bronze_db, const char *bronze_dir,
                    const dp_entity *ent, const dp_runinfo *run, const char *cursor, unsigned flags, dp_counts *out,
                    dp_err *e);
/* flags: read every bronze document, not only those written since the last commit (replay) */
#define DP_SILVER_FULL_READ 1u

/* Deletes the before-images `dp-engine rollback` keeps of the rows of one key (key_hash: the
 * _dp_key_hash as text) in dp.silver_undo, on c (the caller's transaction): forgetting a key
 * removes its values there too. *n (may be NULL) gets how many. */
int dp_silver_undo_forget_key(PGconn *c, const dp_entity *ent, const char *key_hash, long long *n, dp_err *e);

/* "<system>__<entity>" */
void dp_silver_table_name(const dp_entity *ent, char *buf, size_t cap);

#endif
