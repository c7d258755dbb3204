/* silver_merge.c - the set-based merge of the settled stage into the silver table: classify
 * against the current versions, scd1 in place on every version, close and insert scd2 versions,
 * deletions of a full load or a delete marker (docs/data-layers.md#silver-typed-history). */
#include "silver.h"
#include "silver_int.h"
#include "pg.h"

#include <stdlib.h>
#include <string.h>

/* Appends "c1", "c2", ... (with prefix before each name, e.g. "s.") */
static void col_list(dp_buf *b, const dp_entity *ent, const char *prefix) {
  for (size_t i = 0; i < ent->ncols; i++) {
    if (i) dp_buf_puts(b, ", ");
    dp_buf_puts(b, prefix);
    dp_pg_ident(b, ent->cols[i].name);
  }
}

/* Appends "INSERT INTO <table> (...) SELECT ... FROM <from> s": new current versions (or
 * tombstones when deleted) from the rows of from, stamped with the run ($1 id, $2 ts). */
static void insert_versions(dp_buf *q, const dp_entity *ent, const char *from, int deleted) {
  /* a new version starts at its event time when the entity names a valid_from column */
  dp_buf vf = DP_BUF_INIT;
  if (!deleted && ent->valid_from_col >= 0) {
    dp_buf_puts(&vf, "coalesce(s.");
    dp_pg_ident(&vf, ent->cols[ent->valid_from_col].name);
    dp_buf_puts(&vf, "::timestamptz, $2::timestamptz)");
  } else {
    dp_buf_puts(&vf, "$2::timestamptz");
  }
  dp_buf_puts(q, "INSERT INTO ");
  dp__silver_tbl(q, ent, "");
  dp_buf_puts(q, " (");
  col_list(q, ent, "");
  dp_buf_puts(q, ", _dp_key_hash, _dp_scd1_hash, _dp_scd2_hash, _dp_valid_from, _dp_valid_to, "
                 "_dp_is_current, _dp_is_deleted, _dp_run_id, _dp_run_ts, _dp_created_at, _dp_updated_at) "
                 "SELECT ");
  col_list(q, ent, "s.");
  dp_buf_printf(q, ", s._dp_key_hash, s._dp_scd1_hash, s._dp_scd2_hash, %s, NULL, true, %s, "
                   "$1::uuid, $2::timestamptz, $2::timestamptz, $2::timestamptz FROM %s s",
                vf.data, deleted ? "true" : "false", from);
  dp_buf_free(&vf);
}

/* Keeps the before-image of the silver rows t that rows_sql selects ("JOIN ... WHERE ...", after
 * "FROM <table> t") in dp.silver_undo, before the merge changes them in place, so that
 * `dp-engine rollback` can give them back (docs/lifecycle.md#undoing-a-run). A row changed twice
 * in one run keeps its first image. */
static int save_before(PGconn *c, const dp_entity *ent, const dp_runinfo *run, const char *rows_sql, dp_err *e) {
  dp_buf q = DP_BUF_INIT;
  dp_buf_puts(&q, "INSERT INTO dp.silver_undo (run_id, system, entity, what, row_id, before) "
                  "SELECT $1::uuid, $2, $3, 'row', t._dp_id, to_jsonb(t) FROM ");
  dp__silver_tbl(&q, ent, "");
  dp_buf_printf(&q, " t %s ON CONFLICT DO NOTHING", rows_sql);
  const char *p[] = {run->id_str, ent->system, ent->name};
  int rc = dp_pg_exec(c, q.data, 3, p, NULL, e);
  dp_buf_free(&q);
  if (rc) dp_err_prefix(e, "cannot keep the rows' earlier values in dp.silver_undo (was `dp-engine migrate` run?): ");
  return rc;
}

int dp_silver_undo_forget_key(PGconn *c, const dp_entity *ent, const char *key_hash, long long *n, dp_err *e) {
  const char *p[] = {ent->system, ent->name, key_hash};
  PGresult *r = NULL;
  int rc = dp_pg_exec(c,
                      "WITH d AS (DELETE FROM dp.silver_undo WHERE system = $1 AND entity = $2 AND what = 'row' "
                      "AND before->>'_dp_key_hash' = $3 RETURNING 1) SELECT count(*) FROM d",
                      3, p, &r, e);
  if (rc == 0 && n) *n = (long long)dp__silver_count(r, 0);
  PQclear(r);
  return rc;
}

int dp__silver_merge_stage(PGconn *c, const dp_entity *ent, const dp_runinfo *run, dp_counts *out, dp_err *e) {
  dp_buf q = DP_BUF_INIT;
  const char *p2[] = {run->id_str, run->ts_str};
  const char *p1[] = {run->ts_str};
  PGresult *r = NULL;
  int rc;
  int has_scd1 = 0;
  for (size_t i = 0; i < ent->ncols; i++) has_scd1 |= ent->cols[i].scd1 && !ent->cols[i].key;

  /* 1. classify staged rows against the current versions */
  dp_buf_puts(&q, "CREATE TEMP TABLE _dp_cls ON COMMIT DROP AS SELECT s.*, c._dp_id AS _cur_id, "
                  "c._dp_scd1_hash AS _cur1, c._dp_scd2_hash AS _cur2, c._dp_is_deleted AS _cur_del "
                  "FROM _dp_stage s LEFT JOIN ");
  dp__silver_tbl(&q, ent, "");
  dp_buf_puts(&q, " c ON c._dp_key_hash = s._dp_key_hash AND c._dp_is_current WHERE s._dp_op = 'u'");
  rc = dp_pg_exec(c, q.data, 0, NULL, NULL, e);
  if (rc) goto cleanup;
  rc = dp_pg_exec(c,
                  "SELECT count(*) FILTER (WHERE _cur_id IS NULL OR _cur_del),"
                  " count(*) FILTER (WHERE _cur_id IS NOT NULL AND NOT _cur_del AND"
                  "   (_cur2 <> _dp_scd2_hash OR _cur1 <> _dp_scd1_hash)),"
                  " count(*) FILTER (WHERE _cur_id IS NOT NULL AND NOT _cur_del AND"
                  "   _cur2 = _dp_scd2_hash AND _cur1 = _dp_scd1_hash) FROM _dp_cls",
                  0, NULL, &r, e);
  if (rc) goto cleanup;
  out->inserted = dp__silver_count(r, 0);
  out->updated = dp__silver_count(r, 1);
  out->unchanged = dp__silver_count(r, 2);
  PQclear(r);
  r = NULL;

  /* 2. scd1: overwrite in place on every version of the key */
  if (has_scd1) {
    rc = save_before(c, ent, run, "JOIN _dp_cls s ON t._dp_key_hash = s._dp_key_hash "
                                  "WHERE s._cur_id IS NOT NULL AND s._cur1 <> s._dp_scd1_hash", e);
    if (rc) goto cleanup;
    dp_buf_reset(&q);
    dp_buf_puts(&q, "UPDATE ");
    dp__silver_tbl(&q, ent, "");
    dp_buf_puts(&q, " t SET ");
    for (size_t i = 0; i < ent->ncols; i++) {
      if (!ent->cols[i].scd1 || ent->cols[i].key) continue;
      dp_pg_ident(&q, ent->cols[i].name);
      dp_buf_puts(&q, " = s.");
      dp_pg_ident(&q, ent->cols[i].name);
      dp_buf_puts(&q, ", ");
    }
    dp_buf_puts(&q, "_dp_scd1_hash = s._dp_scd1_hash, _dp_updated_at = $1 FROM _dp_cls s "
                    "WHERE t._dp_key_hash = s._dp_key_hash AND s._cur_id IS NOT NULL "
                    "AND s._cur1 <> s._dp_scd1_hash");
    rc = dp_pg_exec(c, q.data, 1, p1, NULL, e);
    if (rc) goto cleanup;
  }

  /* 3. scd2 change (or a deleted key returning): close the current version */
  rc = save_before(c, ent, run, "JOIN _dp_cls s ON t._dp_id = s._cur_id WHERE s._cur2 <> s._dp_scd2_hash OR s._cur_del",
                   e);
  if (rc) goto cleanup;
  dp_buf_reset(&q);
  dp_buf_puts(&q, "UPDATE ");
  dp__silver_tbl(&q, ent, "");
  if (ent->valid_from_col >= 0) {
    /* the version ends where its successor's event time starts (never before its own start) */
    dp_buf_puts(&q, " t SET _dp_valid_to = greatest(t._dp_valid_from, coalesce(s.");
    dp_pg_ident(&q, ent->cols[ent->valid_from_col].name);
    dp_buf_puts(&q, "::timestamptz, $1::timestamptz)), ");
  } else {
    dp_buf_puts(&q, " t SET _dp_valid_to = $1, ");
  }
  dp_buf_puts(&q, "_dp_is_current = false, _dp_updated_at = $1 "
                  "FROM _dp_cls s WHERE t._dp_id = s._cur_id AND (s._cur2 <> s._dp_scd2_hash OR s._cur_del)");
  rc = dp_pg_exec(c, q.data, 1, p1, NULL, e);
  if (rc) goto cleanup;

  /* 4. insert new current versions */
  dp_buf_reset(&q);
  insert_versions(&q, ent, "_dp_cls", 0);
  dp_buf_puts(&q, " WHERE s._cur_id IS NULL OR s._cur2 <> s._dp_scd2_hash OR s._cur_del "
                  "ORDER BY s._dp_key_hash");
  rc = dp_pg_exec(c, q.data, 2, p2, NULL, e);
  if (rc) goto cleanup;

  /* 5. full load: keys missing from the run are closed, or get a tombstone version */
  if ((ent->full_load || ent->marker_col >= 0) && ent->npk > 0 && ent->delete_mode != DP_DELETE_IGNORE) {
    rc = save_before(c, ent, run, "WHERE t._dp_is_current AND NOT t._dp_is_deleted AND t._dp_key_hash IN "
                                  "(SELECT _dp_key_hash FROM _dp_stage WHERE _dp_op = 'd')", e);
    if (rc) goto cleanup;
    dp_buf_reset(&q);
    /* tombstone needs $1 = run id and $2 = run ts; close needs only the ts */
    int tomb = ent->delete_mode == DP_DELETE_TOMBSTONE;
    const char *ts = tomb ? "$2" : "$1";
    dp_buf_puts(&q, "WITH gone AS (UPDATE ");
    dp__silver_tbl(&q, ent, "");
    dp_buf_printf(&q, " t SET _dp_valid_to = %s, _dp_is_current = false, _dp_updated_at = %s "
                      "WHERE t._dp_is_current AND NOT t._dp_is_deleted AND t._dp_key_hash IN "
                      "(SELECT _dp_key_hash FROM _dp_stage WHERE _dp_op = 'd') RETURNING t.*)",
                  ts, ts);
    if (tomb) {
      dp_buf_puts(&q, ", ins AS (");
      insert_versions(&q, ent, "gone", 1);
      dp_buf_puts(&q, " RETURNING 1) SELECT count(*) FROM ins");
    } else {
      dp_buf_puts(&q, " SELECT count(*) FROM gone");
    }
    rc = tomb ? dp_pg_exec(c, q.data, 2, p2, &r, e) : dp_pg_exec(c, q.data, 1, p1, &r, e);
    if (rc) goto cleanup;
    out->deleted = dp__silver_count(r, 0);
    PQclear(r);
    r = NULL;
  }
cleanup:
  if (r) PQclear(r);
  dp_buf_free(&q);
  return rc;
}
