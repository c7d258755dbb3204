/* rollback_silver.c - silver back to the state before a run, from the run's own rows
 * (_dp_run_id) and the before-images its merge kept in dp.silver_undo
 * (docs/lifecycle.md#undoing-a-run). */
#include "rollback_int.h"
#include "buf.h"
#include "log.h"
#include "pg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t first_int(PGresult *r) {
  return PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
}

/* Runs sql with params and returns the bigint it selects in *n. */
static int query_count(PGconn *c, const char *sql, int np, const char *const *p, int64_t *n, dp_err *e) {
  PGresult *r = NULL;
  int rc = dp_pg_exec(c, sql, np, p, &r, e);
  if (rc == 0) *n = first_int(r);
  PQclear(r);
  return rc;
}


/* silver."S__E<suffix>" when it exists (1), else 0. */
static int table_exists(PGconn *c, const dp_entity *ent, const char *suffix, dp_err *e) {
  char name[300];
  dp_buf q = DP_BUF_INIT;
  snprintf(name, sizeof name, "%s__%s%s", ent->system, ent->name, suffix);
  dp_pg_qualified(&q, "silver", name);
  const char *p[] = {q.data};
  PGresult *r = NULL;
  int rc = dp_pg_exec(c, "SELECT to_regclass($1) IS NOT NULL", 1, p, &r, e);
  if (rc == 0) rc = PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  dp_buf_free(&q);
  return rc;
}

/* Appends silver."S__E<suffix>". */
static void silver_table(dp_buf *b, const dp_entity *ent, const char *suffix) {
  char name[300];
  snprintf(name, sizeof name, "%s__%s%s", ent->system, ent->name, suffix);
  dp_pg_qualified(b, "silver", name);
}

/* What undoing the run does to silver: counts into it (the dry run stops there). Refuses a run
 * whose merge committed before rollback was possible (no before-image of its progress). */
int dp__rollback_silver_plan(PGconn *a, PGconn *c, const dp_entity *ent, const char *run, dp__rb_item *it, dp_err *e) {
  const char *p[] = {run, ent->system, ent->name};
  int64_t merged = 0, undo = 0;
  PGresult *d = NULL;
  int rc = dp_pg_exec(c, "SELECT rows_removed, rows_restored, rejects_removed, cursor_restored FROM dp.rollback_done "
                         "WHERE run_id = $1::uuid AND system = $2 AND entity = $3 AND layer = 'silver'", 3, p, &d, e);
  if (rc) return rc;
  if ((it->silver_done = PQntuples(d) > 0)) { /* an earlier attempt of this rollback undid silver */
    it->silver_removed = strtoll(PQgetvalue(d, 0, 0), NULL, 10);
    it->silver_restored = strtoll(PQgetvalue(d, 0, 1), NULL, 10);
    it->rejects_removed = strtoll(PQgetvalue(d, 0, 2), NULL, 10);
    it->cursor_restored = PQgetvalue(d, 0, 3)[0] == 't';
  }
  PQclear(d);
  if (it->silver_done) return 0;
  rc = query_count(a, "SELECT count(*) FROM audit.entity_layer_run WHERE run_id = $1::uuid AND system = $2 "
                          "AND entity = $3 AND layer = 'silver' AND status = 'succeeded'", 3, p, &merged, e);
  if (rc == 0)
    rc = query_count(c, "SELECT count(*) FROM dp.silver_undo WHERE run_id = $1::uuid AND system = $2 AND entity = $3 "
                        "AND what = 'entity_state'", 3, p, &undo, e);
  if (rc) return rc;
  if (merged && !undo)
    return dp_err_set(e, DP_EINVAL, "run %s merged %s.%s into silver before rollback was possible (migration 0012): "
                      "it cannot be undone", run, ent->system, ent->name);
  if (rc == 0)
    rc = query_count(c, "SELECT count(*) FROM dp.silver_undo WHERE run_id = $1::uuid AND system = $2 AND entity = $3 "
                        "AND what = 'row'", 3, p, &it->silver_restored, e);
  if (rc == 0)
    rc = query_count(c, "SELECT count(*) FROM dp.silver_undo WHERE run_id = $1::uuid AND system = $2 AND entity = $3 "
                        "AND what = 'entity_cursor'", 3, p, &undo, e);
  it->cursor_restored = undo > 0;
  int have = rc == 0 ? table_exists(c, ent, "", e) : rc;
  if (have < 0) return have;
  if (have) {
    dp_buf q = DP_BUF_INIT;
    dp_buf_puts(&q, "SELECT count(*) FROM ");
    silver_table(&q, ent, "");
    dp_buf_puts(&q, " WHERE _dp_run_id = $1::uuid");
    rc = query_count(c, q.data, 1, p, &it->silver_removed, e);
    dp_buf_reset(&q);
    dp_buf_puts(&q, "SELECT count(*) FROM ");
    silver_table(&q, ent, "__rejected");
    dp_buf_puts(&q, " WHERE _dp_run_id = $1::uuid");
    if (rc == 0 && (rc = table_exists(c, ent, "__rejected", e)) == 1)
      rc = query_count(c, q.data, 1, p, &it->rejects_removed, e);
    dp_buf_free(&q);
  }
  return rc < 0 ? rc : 0;
}

/* Puts a dp.<table> row (entity_state or entity_cursor) of the entity back from its
 * before-image: deleted when there was none. Nothing when the run did not change it. */
static int restore_state_row(PGconn *c, const char *table, const char *const *p, dp_err *e) {
  char sql[600];
  snprintf(sql, sizeof sql,
           "DELETE FROM dp.%s s WHERE s.system = $2 AND s.entity = $3 AND EXISTS (SELECT 1 FROM dp.silver_undo "
           "WHERE run_id = $1::uuid AND system = $2 AND entity = $3 AND what = '%s')",
           table, table);
  int rc = dp_pg_exec(c, sql, 3, p, NULL, e);
  if (rc) return rc;
  snprintf(sql, sizeof sql,
           "INSERT INTO dp.%s SELECT r.* FROM dp.silver_undo u, jsonb_populate_record(NULL::dp.%s, u.before) r "
           "WHERE u.run_id = $1::uuid AND u.system = $2 AND u.entity = $3 AND u.what = '%s' AND u.before IS NOT NULL",
           table, table, table);
  return dp_pg_exec(c, sql, 3, p, NULL, e);
}

/* Silver back to the state before the run, in one transaction: its versions deleted, the rows
 * it changed in place back from their before-images, its rejects deleted, entity_state and the
 * cursor back, the before-images dropped. */
int dp__rollback_silver(PGconn *c, const dp_entity *ent, const char *run, const char *rb, dp__rb_item *it, dp_err *e) {
  if (it->silver_done) return 0;
  const char *p[] = {run, ent->system, ent->name};
  dp_buf q = DP_BUF_INIT;
  PGresult *r = NULL;
  int rc = dp_pg_begin(c, e);
  if (rc) return rc;
  int have = table_exists(c, ent, "", e), have_rej = have == 1 ? table_exists(c, ent, "__rejected", e) : 0;
  if (have < 0 || have_rej < 0) { rc = have < 0 ? have : have_rej; goto done; }
  if (have) {
    /* every column but the identity, as the table has them now */
    dp_buf_puts(&q, "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum), "
                    "string_agg('r.' || quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
                    "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attname <> '_dp_id'");
    dp_buf tname = DP_BUF_INIT;
    silver_table(&tname, ent, "");
    const char *pt[] = {tname.data};
    rc = dp_pg_exec(c, q.data, 1, pt, &r, e);
    if (rc) { dp_buf_free(&tname); goto done; }
    dp_buf_reset(&q);
    dp_buf_printf(&q, "WITH d AS (DELETE FROM %s WHERE _dp_run_id = $1::uuid RETURNING 1) SELECT count(*) FROM d",
                  tname.data);
    rc = query_count(c, q.data, 1, p, &it->silver_removed, e);
    dp_buf_reset(&q);
    dp_buf_printf(&q,
                  "WITH u AS (UPDATE %s t SET (%s) = (SELECT %s FROM jsonb_populate_record(NULL::%s, b.before) r) "
                  "FROM dp.silver_undo b WHERE b.run_id = $1::uuid AND b.system = $2 AND b.entity = $3 "
                  "AND b.what = 'row' AND t._dp_id = b.row_id RETURNING 1) SELECT count(*) FROM u",
                  tname.data, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), tname.data);
    if (rc == 0) rc = query_count(c, q.data, 3, p, &it->silver_restored, e);
    /* a row the run changed that is gone since (retention dropped the version the run closed):
     * back from its before-image too, under its own _dp_id */
    int64_t want = 0, inserted = 0;
    dp_buf_reset(&q);
    dp_buf_printf(&q,
                  "WITH i AS (INSERT INTO %s (_dp_id, %s) OVERRIDING SYSTEM VALUE SELECT b.row_id, %s "
                  "FROM dp.silver_undo b, jsonb_populate_record(NULL::%s, b.before) r WHERE b.run_id = $1::uuid "
                  "AND b.system = $2 AND b.entity = $3 AND b.what = 'row' AND NOT EXISTS (SELECT 1 FROM %s x "
                  "WHERE x._dp_id = b.row_id) RETURNING 1) SELECT count(*) FROM i",
                  tname.data, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), tname.data, tname.data);
    PQclear(r);
    r = NULL;
    if (rc == 0) rc = query_count(c, q.data, 3, p, &inserted, e);
    if (rc == 0)
      rc = query_count(c, "SELECT count(*) FROM dp.silver_undo WHERE run_id = $1::uuid AND system = $2 "
                          "AND entity = $3 AND what = 'row'", 3, p, &want, e);
    it->silver_restored += inserted;
    if (rc == 0 && it->silver_restored != want)
      rc = dp_err_set(e, DP_EIO, "%" PRId64 " rows restored, but the run changed %" PRId64 " rows in place: "
                      "silver was not changed", it->silver_restored, want);
    if (rc == 0 && inserted > 0)
      dp_log(DP_LOG_INFO, "rollback %s.%s of run %s: %" PRId64 " of the rows restored were gone (retention) and "
             "were inserted again from their before-images", ent->system, ent->name, run, inserted);
    if (rc == 0 && have_rej) {
      dp_buf_reset(&q);
      dp_buf_puts(&q, "WITH d AS (DELETE FROM ");
      silver_table(&q, ent, "__rejected");
      dp_buf_puts(&q, " WHERE _dp_run_id = $1::uuid RETURNING 1) SELECT count(*) FROM d");
      rc = query_count(c, q.data, 1, p, &it->rejects_removed, e);
    }
    dp_buf_free(&tname);
    if (rc) goto done;
  }
  if ((rc = restore_state_row(c, "entity_state", p, e)) != 0) goto done;
  if ((rc = restore_state_row(c, "entity_cursor", p, e)) != 0) goto done;
  rc = dp_pg_exec(c, "DELETE FROM dp.silver_undo WHERE run_id = $1::uuid AND system = $2 AND entity = $3", 3, p, NULL,
                  e);
  if (rc == 0) { /* done, in the same transaction: a retry after a later step failed skips silver */
    char n[3][32];
    snprintf(n[0], sizeof n[0], "%" PRId64, it->silver_removed);
    snprintf(n[1], sizeof n[1], "%" PRId64, it->silver_restored);
    snprintf(n[2], sizeof n[2], "%" PRId64, it->rejects_removed);
    const char *pd[] = {run, ent->system, ent->name, rb, n[0], n[1], n[2], it->cursor_restored ? "true" : "false"};
    rc = dp_pg_exec(c, "INSERT INTO dp.rollback_done (run_id, system, entity, layer, rollback_run_id, rows_removed, "
                       "rows_restored, rejects_removed, cursor_restored) VALUES ($1::uuid, $2, $3, 'silver', $4::uuid, "
                       "$5::bigint, $6::bigint, $7::bigint, $8::boolean)", 8, pd, NULL, e);
  }
  if (rc == 0) rc = dp_pg_commit(c, e);
done:
  if (rc) {
    dp_pg_rollback(c);
    dp_err_prefix(e, "silver %s.%s: ", ent->system, ent->name);
  }
  dp_buf_free(&q);
  return rc;
}

