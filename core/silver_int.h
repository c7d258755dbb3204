/* silver_int.h - private to the silver layer's files (silver*.c, rollback.c): the pieces
 * dp_silver_merge's stages are made of.
 *   silver.c         dp_silver_merge: the algorithm as a list of stages
 *   silver_schema.c  the table follows metadata (create, evolve, audit.schema_change)
 *   silver_source.c  the input: change files or a bronze query, bronze's rejects, consumed files
 *   silver_stage.c   read, cast and COPY into the stage (or straight into an empty table)
 *   silver_merge.c   the set-based merge SQL (scd1 in place, scd2 versions, deletions) */
#ifndef DP_SILVER_INT_H
#define DP_SILVER_INT_H

#include <stdio.h>
#include <libpq-fe.h>
#include <mongoc/mongoc.h>
#include "buf.h"
#include "error.h"
#include "meta.h"
#include "runinfo.h"

/* Appends "<system>__<entity><suffix>" quoted and in schema silver (tbl) or bare (ident). */
void dp__silver_tbl(dp_buf *b, const dp_entity *ent, const char *suffix);
void dp__silver_ident(dp_buf *b, const dp_entity *ent, const char *suffix);
/* The bigint in column col of the first row of r (0 when none or NULL). */
int64_t dp__silver_count(PGresult *r, int col);

/* ---- silver_schema.c ---- */
/* The two key-hash indexes: what = "CREATE" (if missing) or "DROP"; appends to sql. */
void dp__silver_key_indexes(dp_buf *sql, const dp_entity *ent, const char *what);

/* ---- silver_source.c ---- */
/* Where silver's input comes from: a bronze query, or the change files of the bronze loads
 * since silver's last commit (in load order). Zeroed means empty; closed by source_close. */
typedef struct dp__silver_source {
  mongoc_collection_t *coll;
  mongoc_cursor_t *cur;
  char **files; /* owned, NULL-terminated */
  size_t fi;
  bson_reader_t *reader;
  char cname[256];
} dp__silver_source;

/* 1 and *doc (borrowed until the next call) for the next document, 0 at the end, < 0 error. */
int dp__silver_source_next(dp__silver_source *src, const bson_t **doc, dp_err *e);
/* Frees everything src owns. */
void dp__silver_source_close(dp__silver_source *src);
void dp__silver_source_query(dp__silver_source *src, mongoc_client_t *cli, const char *db, const dp_entity *ent,
                             int64_t since_ms);
/* 1 with *files (owned by the caller, NULL-terminated) when every bronze load since `since` left
 * its change file, 0 when silver must read bronze, < 0 on error. */
int dp__silver_change_files(PGconn *c, const dp_entity *ent, const char *dir, const char *since, char ***files,
                            dp_err *e);
void dp__silver_remove_consumed(const char *dir);
int dp__silver_bronze_rejects(PGconn *c, mongoc_client_t *cli, const char *db, const dp_entity *ent,
                              const dp_runinfo *run, const char *since, int64_t since_ms, dp_counts *out, dp_err *e);

/* ---- silver_stage.c ---- */
/* How rows leave stage_rows. */
enum { DP__SILVER_TO_STAGE, DP__SILVER_TO_STAGE_DEDUPE, DP__SILVER_TO_TABLE };

typedef struct dp__silver_stager {
  PGconn *c;
  int mode;       /* TO_STAGE: one row per key; TO_STAGE_DEDUPE: the same key may come again
                   * (several change files), rows carry their order and rejections stay as rows;
                   * TO_TABLE: new current versions straight into the (empty) silver table */
  int64_t seq;
  int64_t staged_rejects; /* 'r' rows staged (nothing to settle when none) */
  dp_buf copy;    /* COPY text for the stage or silver table */
  dp_buf rejects; /* COPY text for the __rejected table (sent after the stage COPY) ... */
  FILE *spill;    /* ... beyond REJECTS_MEM, kept in this temporary file (owned) */
  dp_buf scratch;
} dp__silver_stager;

/* Frees what st owns. */
void dp__silver_stager_free(dp__silver_stager *st);
/* Creates the stage table (or drops the key indexes of the empty silver table, TO_TABLE) and
 * begins the COPY into it. */
int dp__silver_copy_begin(dp__silver_stager *st, const dp_entity *ent, dp_err *e);
int dp__silver_stage_rows(dp__silver_stager *st, dp__silver_source *src, const dp_entity *ent,
                          const dp_runinfo *run, dp_counts *out, dp_err *e);
int dp__silver_copy_rejects(dp__silver_stager *st, const dp_entity *ent, dp_err *e);
int dp__silver_settle_stage(PGconn *c, const dp_entity *ent, const dp_runinfo *run, int mode,
                            int64_t staged_rejects, dp_counts *out, dp_err *e);

/* ---- silver_merge.c ---- */
/* Merges the settled stage (_dp_stage) into the silver table. */
int dp__silver_merge_stage(PGconn *c, const dp_entity *ent, const dp_runinfo *run, dp_counts *out, dp_err *e);

#endif
