/* silver_stage.c - read the input's documents, cast them in C and COPY them into the stage
 * table (or, on a first load, straight into the empty silver table); rejected records with their
 * reason; settling the stage (repeated keys, rejections) before the merge. */
#include "silver.h"
#include "silver_int.h"
#include "bronze.h"
#include "cast.h"
#include "jsonbson.h"
#include "pg.h"
#include "progress.h"
#include "record.h"
#include "uuid.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COPY_CHUNK (1 << 20)
#define REJECTS_MEM (4 << 20) /* bytes of rejected rows kept in memory on a first load */

static void put_uuid(dp_buf *b, const uint8_t h[16]) {
  char s[37];
  dp_uuid_format(h, s);
  dp_buf_append(b, s, 36);
}

/* Why a record was rejected, and where it came from. */
typedef struct reject {
  const char *column, *value, *reason, *raw_file;
  int64_t line;
  const bson_t *data;
} reject;

/* column, value, reason, raw file, raw line, record: COPY text fields, tab-separated */
static void put_reject(dp__silver_stager *st, dp_buf *b, const reject *rj) {
  dp_pg_copy_escape(b, rj->column, strlen(rj->column));
  dp_buf_putc(b, '\t');
  dp_pg_copy_escape(b, rj->value, strlen(rj->value));
  dp_buf_putc(b, '\t');
  dp_pg_copy_escape(b, rj->reason, strlen(rj->reason));
  dp_buf_putc(b, '\t');
  if (rj->raw_file) dp_pg_copy_escape(b, rj->raw_file, strlen(rj->raw_file));
  else dp_buf_puts(b, "\\N");
  dp_buf_printf(b, "\t%" PRId64 "\t", rj->line);
  dp_buf_reset(&st->scratch);
  dp_bson_to_json(rj->data, &st->scratch);
  /* jsonb refuses U+0000: such a record is left NULL here (raw_file and raw_line point to it) */
  if (st->scratch.data && memmem(st->scratch.data, st->scratch.len, "\\u0000", 6)) dp_buf_puts(b, "\\N");
  else dp_pg_copy_escape(b, st->scratch.data, st->scratch.len);
}

/* A row of the __rejected table, for DP__SILVER_TO_TABLE (staged modes stage their rejections). */
static int add_reject(dp__silver_stager *st, const dp_runinfo *run, const uint8_t *key, const reject *rj, dp_err *e) {
  dp_buf *b = &st->rejects;
  dp_buf_printf(b, "%s\t%s\t", run->id_str, run->ts_str);
  if (key) put_uuid(b, key);
  else dp_buf_puts(b, "\\N");
  dp_buf_putc(b, '\t');
  put_reject(st, b, rj);
  dp_buf_putc(b, '\n');
  if (b->len < REJECTS_MEM) return 0;
  /* memory stays flat: the rest waits in a temporary file (gone with the process) */
  if (!st->spill && !(st->spill = tmpfile()))
    return dp_err_set(e, DP_EIO, "silver: cannot create a temporary file for rejected rows: %s", strerror(errno));
  if (fwrite(b->data, 1, b->len, st->spill) != b->len)
    return dp_err_set(e, DP_EIO, "silver: cannot write rejected rows to a temporary file: %s", strerror(errno));
  dp_buf_reset(b);
  return 0;
}

/* COPYs the rejected rows (temporary file, then memory) into the __rejected table. */
int dp__silver_copy_rejects(dp__silver_stager *st, const dp_entity *ent, dp_err *e) {
  if (!st->spill && st->rejects.len == 0) return 0;
  dp_buf q = DP_BUF_INIT;
  dp_buf_puts(&q, "COPY ");
  dp__silver_tbl(&q, ent, "__rejected");
  dp_buf_puts(&q, " (_dp_run_id, _dp_run_ts, _dp_key_hash, column_name, value, reason, raw_file, "
                  "raw_line, record) FROM STDIN");
  int rc = dp_pg_copy_begin(st->c, q.data, e);
  dp_buf_free(&q);
  if (rc) return rc;
  if (st->spill) {
    char chunk[1 << 16];
    size_t n;
    rewind(st->spill);
    while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, st->spill)) > 0) rc = dp_pg_copy_put(st->c, chunk, n, e);
    if (rc == 0 && ferror(st->spill)) rc = dp_err_set(e, DP_EIO, "silver: cannot read rejected rows back");
  }
  if (rc == 0) rc = dp_pg_copy_put(st->c, st->rejects.data, st->rejects.len, e);
  if (rc == 0) return dp_pg_copy_end(st->c, NULL, e);
  dp_err tmp;
  dp_pg_copy_end(st->c, "aborted", &tmp);
  return rc;
}

static void put_values(dp_buf *b, const dp_entity *ent, const dp_row *row) {
  for (size_t i = 0; i < ent->ncols; i++) {
    if (i) dp_buf_putc(b, '\t');
    if (!row || row->null[i]) dp_buf_puts(b, "\\N");
    else dp_pg_copy_escape(b, row->text.data + row->off[i], row->len[i]);
  }
}

/* Appends one stage row: key, scd1 and scd2 hashes, op ('u' upsert, 'd' deletion, 'r' rejected),
 * order, the rejection (for 'r'), then the typed values (all NULL unless 'u'). */
static void stage_row(dp__silver_stager *st, const dp_entity *ent, const uint8_t key[16], const uint8_t *h1,
                      const uint8_t *h2, char op, const dp_row *row, const reject *rj) {
  dp_buf *b = &st->copy;
  put_uuid(b, key);
  if (op == 'u') {
    dp_buf_putc(b, '\t');
    put_uuid(b, h1);
    dp_buf_putc(b, '\t');
    put_uuid(b, h2);
  } else {
    dp_buf_puts(b, "\t\\N\t\\N");
  }
  dp_buf_printf(b, "\t%c\t%" PRId64 "\t", op, st->seq++);
  if (op == 'r') st->staged_rejects++;
  if (rj) put_reject(st, b, rj);
  else dp_buf_puts(b, "\\N\t\\N\t\\N\t\\N\t\\N\t\\N");
  dp_buf_putc(b, '\t');
  put_values(b, ent, op == 'u' ? row : NULL);
  dp_buf_putc(b, '\n');
}

/* The columns DP__SILVER_TO_TABLE rows fill, in their order. */
static void table_copy_columns(dp_buf *q, const dp_entity *ent) {
  dp_buf_puts(q, "COPY ");
  dp__silver_tbl(q, ent, "");
  dp_buf_puts(q, " (");
  for (size_t i = 0; i < ent->ncols; i++) {
    dp_pg_ident(q, ent->cols[i].name);
    dp_buf_puts(q, ", ");
  }
  dp_buf_puts(q, "_dp_key_hash, _dp_scd1_hash, _dp_scd2_hash, _dp_valid_from, _dp_valid_to, _dp_is_current, "
                 "_dp_is_deleted, _dp_run_id, _dp_run_ts, _dp_created_at, _dp_updated_at) FROM STDIN");
}

/* Appends one new current version (the row insert_versions would make from a stage row). */
static void table_row(dp__silver_stager *st, const dp_entity *ent, const dp_runinfo *run, const uint8_t key[16],
                      const uint8_t h1[16], const uint8_t h2[16], const dp_row *row) {
  dp_buf *b = &st->copy;
  put_values(b, ent, row);
  dp_buf_putc(b, '\t');
  put_uuid(b, key);
  dp_buf_putc(b, '\t');
  put_uuid(b, h1);
  dp_buf_putc(b, '\t');
  put_uuid(b, h2);
  dp_buf_putc(b, '\t');
  int vf = ent->valid_from_col;
  if (vf >= 0 && !row->null[vf]) dp_pg_copy_escape(b, row->text.data + row->off[vf], row->len[vf]);
  else dp_buf_puts(b, run->ts_str);
  dp_buf_printf(b, "\t\\N\tt\tf\t%s\t%s\t%s\t%s\n", run->id_str, run->ts_str, run->ts_str, run->ts_str);
}

/* The delete marker's value cast with its column's type, so it compares with cast cells. */
static int marker_text(const dp_entity *ent, dp_buf *out, dp_err *e) {
  dp_buf doc = DP_BUF_INIT;
  bson_t b;
  dp_err je;
  int rc = 0, is_null = 0;
  dp_buf_printf(&doc, "{\"v\":%s}", ent->marker_json);
  if (dp_json_to_bson(doc.data, doc.len, &b, &je) != 0) {
    bson_destroy(&b);
    dp_buf_free(&doc);
    return dp_err_set(e, DP_EMETA, "delete_marker.value: %s", je.msg);
  }
  bson_iter_t it;
  if (bson_iter_init_find(&it, &b, "v")) rc = dp_cast_bson(&ent->cols[ent->marker_col], &it, out, &is_null, e);
  if (rc == 0 && (is_null || !out->data)) dp_buf_putc(out, '\0'), out->len = 0;
  if (rc) dp_err_prefix(e, "delete_marker.value: ");
  bson_destroy(&b);
  dp_buf_free(&doc);
  return rc;
}

/* Reads the source's documents and COPYs them (COPY already begun on st->c): changed and new
 * records typed, deleted keys as deletion rows (DP__SILVER_TO_TABLE: new keys only). */
int dp__silver_stage_rows(dp__silver_stager *st, dp__silver_source *src, const dp_entity *ent, const dp_runinfo *run, dp_counts *out,
                      dp_err *e) {
  dp_row row;
  int rc = dp_row_init(&row, ent->ncols);
  if (rc) return dp_err_set(e, DP_ENOMEM, "out of memory");
  const bson_t *doc;
  uint8_t key[16], h1[16], h2[16];
  dp_buf marker = DP_BUF_INIT; /* the delete marker's value as canonical text of its column */
  if (ent->marker_col >= 0 && (rc = marker_text(ent, &marker, e)) != 0) goto cleanup;
  int more;
  while (rc == 0 && (more = dp__silver_source_next(src, &doc, e)) == 1) {
    if (st->copy.len >= COPY_CHUNK) { /* whatever the rows before were (deletions and rejections too) */
      if ((rc = dp_pg_copy_put(st->c, st->copy.data, st->copy.len, e)) != 0) break;
      dp_buf_reset(&st->copy);
    }
    bson_iter_t it;
    const uint8_t *dbuf;
    uint32_t dlen;
    bson_t data;
    out->in++;
    dp_progress_add(1, "records");
    /* the bronze _id is the key hash (or, without a primary key, the row's own id) */
    uint8_t idb[16];
    const uint8_t *id = idb;
    if (!bson_iter_init_find(&it, doc, "_id") || !dp_bronze_iter_id(&it, idb)) continue;
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.deleted", &it) && BSON_ITER_HOLDS_BOOL(&it) &&
        bson_iter_bool(&it)) {
      if (st->mode != DP__SILVER_TO_TABLE) stage_row(st, ent, id, NULL, NULL, 'd', NULL, NULL);
      continue;
    }
    if (!bson_iter_init_find(&it, doc, "data") || !BSON_ITER_HOLDS_DOCUMENT(&it)) continue;
    bson_iter_document(&it, &dlen, &dbuf);
    if (!bson_init_static(&data, dbuf, dlen)) continue;
    const char *raw_file = NULL;
    int64_t raw_line = 0;
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.raw.file", &it) &&
        BSON_ITER_HOLDS_UTF8(&it))
      raw_file = bson_iter_utf8(&it, NULL);
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.raw.line", &it))
      raw_line = bson_iter_as_int64(&it);
    dp_err ce;
    dp_err_clear(&ce);
    if (dp_row_cast(&row, ent, &data, 0, &ce) != 0) {
      char failmsg[sizeof ce.msg + 1200];
      snprintf(failmsg, sizeof failmsg, "%s (value %s; raw file %s line %" PRId64 ")", ce.msg,
               row.bad_value[0] ? row.bad_value : "missing", raw_file ? raw_file : "?", raw_line);
      reject rj = {ent->cols[row.bad_col].name, row.bad_value, ent->fail_on_type_error ? failmsg : ce.msg,
                   raw_file, raw_line, &data};
      if (st->mode == DP__SILVER_TO_STAGE_DEDUPE) {
        /* a later record of the key may replace this one: decided after the stage is complete */
        stage_row(st, ent, id, NULL, NULL, 'r', NULL, &rj);
        continue;
      }
      if (ent->fail_on_type_error) {
        rc = dp_err_set(e, DP_ECAST, "%s", failmsg);
        break;
      }
      /* Rejected: recorded with its reason; the key keeps its current version. */
      if (st->mode == DP__SILVER_TO_TABLE) {
        out->rejected++;
        if ((rc = add_reject(st, run, ent->npk > 0 ? id : NULL, &rj, e)) != 0) break;
      } else {
        stage_row(st, ent, id, NULL, NULL, 'r', NULL, &rj);
      }
      continue;
    }
    memcpy(key, id, 16);
    if (ent->npk > 0) dp_row_hash(&row, ent, DP_HASH_KEY, key);
    if (marker.data && !row.null[ent->marker_col] && row.len[ent->marker_col] == marker.len &&
        memcmp(row.text.data + row.off[ent->marker_col], marker.data, marker.len) == 0) {
      if (st->mode != DP__SILVER_TO_TABLE) stage_row(st, ent, key, NULL, NULL, 'd', NULL, NULL); /* the source says: deleted */
      continue;
    }
    dp_row_hash(&row, ent, DP_HASH_SCD1, h1);
    dp_row_hash(&row, ent, DP_HASH_SCD2, h2);
    if (st->mode == DP__SILVER_TO_TABLE) {
      table_row(st, ent, run, key, h1, h2, &row);
      out->inserted++;
    } else {
      stage_row(st, ent, key, h1, h2, 'u', &row, NULL);
    }
  }
  if (rc == 0 && more < 0) rc = more;
  if (rc == 0) rc = dp_pg_copy_put(st->c, st->copy.data, st->copy.len, e);
cleanup:
  dp_buf_free(&marker);
  dp_row_free(&row);
  return rc;
}

/* After the stage COPY: with repeated keys, keeps the last row of each key (and counts what is
 * left as the input); then the rejected rows left, if any were staged, either fail the entity
 * (on_type_error: fail) or go to the __rejected table. */
int dp__silver_settle_stage(PGconn *c, const dp_entity *ent, const dp_runinfo *run, int mode,
                        int64_t staged_rejects, dp_counts *out, dp_err *e) {
  PGresult *r = NULL;
  int rc = 0;
  if (mode == DP__SILVER_TO_STAGE_DEDUPE) {
    rc = dp_pg_exec(c, "WITH d AS (DELETE FROM _dp_stage a USING _dp_stage b WHERE a._dp_key_hash = b._dp_key_hash "
                       "AND a._dp_seq < b._dp_seq RETURNING 1) SELECT count(*) FROM d", 0, NULL, &r, e);
    if (rc) return rc;
    out->in -= dp__silver_count(r, 0);
    PQclear(r);
    r = NULL;
  }
  if (staged_rejects == 0) return 0;
  if (ent->fail_on_type_error) {
    rc = dp_pg_exec(c, "SELECT _dp_rej_reason FROM _dp_stage WHERE _dp_op = 'r' ORDER BY _dp_seq LIMIT 1", 0,
                    NULL, &r, e);
    if (rc == 0 && PQntuples(r) == 1) rc = dp_err_set(e, DP_ECAST, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
  }
  dp_buf q = DP_BUF_INIT;
  dp_buf_puts(&q, "WITH i AS (INSERT INTO ");
  dp__silver_tbl(&q, ent, "__rejected");
  dp_buf_printf(&q, " (_dp_run_id, _dp_run_ts, _dp_key_hash, column_name, value, reason, raw_file, raw_line, record) "
                    "SELECT $1::uuid, $2::timestamptz, %s, _dp_rej_column, _dp_rej_value, _dp_rej_reason, "
                    "_dp_rej_file, _dp_rej_line, _dp_rej_record FROM _dp_stage WHERE _dp_op = 'r' ORDER BY _dp_seq "
                    "RETURNING 1) SELECT count(*) FROM i",
                ent->npk > 0 ? "_dp_key_hash" : "NULL::uuid");
  const char *p[] = {run->id_str, run->ts_str};
  rc = dp_pg_exec(c, q.data, 2, p, &r, e);
  dp_buf_free(&q);
  if (rc) return rc;
  out->rejected = dp__silver_count(r, 0);
  PQclear(r);
  return 0;
}

int dp__silver_copy_begin(dp__silver_stager *st, const dp_entity *ent, dp_err *e) {
  dp_buf q = DP_BUF_INIT;
  int rc = 0;
  if (st->mode == DP__SILVER_TO_TABLE) {
    /* an index built once after the load is much cheaper than one kept up row by row (random
     * key hashes); the table is empty, and the lock this takes ends with the transaction */
    dp__silver_key_indexes(&q, ent, "DROP");
    rc = dp_pg_exec(st->c, q.data, 0, NULL, NULL, e);
    dp_buf_reset(&q);
    table_copy_columns(&q, ent);
  } else {
    dp_buf_puts(&q, "CREATE TEMP TABLE _dp_stage (_dp_key_hash uuid, _dp_scd1_hash uuid, "
                    "_dp_scd2_hash uuid, _dp_op \"char\", _dp_seq bigint, _dp_rej_column text, "
                    "_dp_rej_value text, _dp_rej_reason text, _dp_rej_file text, _dp_rej_line bigint, "
                    "_dp_rej_record jsonb");
    for (size_t i = 0; i < ent->ncols; i++) {
      dp_buf_puts(&q, ", ");
      dp_pg_ident(&q, ent->cols[i].name);
      dp_buf_putc(&q, ' ');
      dp_column_sql_type(&ent->cols[i], &q);
    }
    dp_buf_puts(&q, ") ON COMMIT DROP");
    rc = dp_pg_exec(st->c, q.data, 0, NULL, NULL, e);
    dp_buf_reset(&q);
    dp_buf_puts(&q, "COPY _dp_stage FROM STDIN");
  }
  if (rc == 0) rc = dp_pg_copy_begin(st->c, q.data, e);
  dp_buf_free(&q);
  return rc;
}

void dp__silver_stager_free(dp__silver_stager *st) {
  dp_buf_free(&st->copy);
  dp_buf_free(&st->rejects);
  if (st->spill) fclose(st->spill);
  st->spill = NULL;
  dp_buf_free(&st->scratch);
}
