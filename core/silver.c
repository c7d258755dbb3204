/* silver.c - the silver layer's algorithm: dp_silver_merge as a list of named stages over one
 * state struct. The stages' pieces live by concern (silver_int.h lists the files): the table
 * following metadata, the input, the COPY staging, the merge SQL. */
#include "silver.h"
#include "silver_int.h"
#include "hash.h"
#include "log.h"
#include "pg.h"
#include "testhook.h"
#include "uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dp_silver_table_name(const dp_entity *ent, char *buf, size_t cap) {
  snprintf(buf, cap, "%s__%s", ent->system, ent->name);
}

void dp__silver_tbl(dp_buf *b, const dp_entity *ent, const char *suffix) {
  char name[300];
  snprintf(name, sizeof name, "%s__%s%s", ent->system, ent->name, suffix);
  dp_pg_qualified(b, "silver", name);
}

void dp__silver_ident(dp_buf *b, const dp_entity *ent, const char *suffix) {
  char name[300];
  snprintf(name, sizeof name, "%s__%s%s", ent->system, ent->name, suffix);
  dp_pg_ident(b, name);
}

int64_t dp__silver_count(PGresult *r, int col) {
  return PQntuples(r) > 0 && !PQgetisnull(r, 0, col) ? strtoll(PQgetvalue(r, 0, col), NULL, 10) : 0;
}

/* A hash over everything of the entity that shapes its silver rows. */
static void definition_hash(const dp_entity *ent, char out[37]) {
  dp_buf b = DP_BUF_INIT;
  dp_buf_printf(&b, "%d/%d/", (int)ent->delete_mode, (int)ent->fail_on_type_error);
  for (size_t k = 0; k < ent->npk; k++) dp_buf_printf(&b, "pk:%s/", ent->cols[ent->pk[k]].name);
  for (size_t i = 0; i < ent->ncols; i++) {
    const dp_column *c = &ent->cols[i];
    dp_buf_printf(&b, "%s:%s:%d:%d:%d:%d:%d:%s/", c->name, dp_type_name(c->type), c->length, c->precision,
                  c->scale, (int)c->nullable, (int)c->scd1, c->path);
  }
  uint8_t h[16];
  dp_hash_bytes(b.data, b.len, h);
  dp_uuid_format(h, out);
  dp_buf_free(&b);
}

/* One merge: what the caller gave, and what the stages found out so far. */
typedef struct merge_run {
  PGconn *c;
  mongoc_client_t *cli; /* may be NULL (no bronze rejects then) */
  const char *bronze_db, *bronze_dir;
  const dp_entity *ent;
  const dp_runinfo *run;
  const char *cursor; /* may be NULL */
  dp_counts *out;
  /* where silver's last committed run left off: its start (run_ts) as text for the audit and in
   * ms for bronze; full: every document is read again */
  int full;
  char since[64], defhash[37];
  int64_t since_ms;
  int from_files; /* the input is the change files (else a bronze query) */
  dp__silver_source src;
  dp__silver_stager st;
  double t_read, t_merge; /* dp_monotonic() at the start of reading, of merging */
} merge_run;

/* Where silver's last committed run left off (its row locked until the transaction ends). A
 * changed definition (columns, types, paths, history, keys), a run whose audit row is gone or
 * DP_SILVER_FULL_READ means every document is read again. */
static int find_start(merge_run *m, dp_err *e) {
  const char *p[] = {m->ent->system, m->ent->name};
  PGresult *r = NULL;
  definition_hash(m->ent, m->defhash);
  int rc = dp_pg_exec(m->c, "SELECT s.silver_run_id, s.definition_hash, r.run_ts,"
                            " floor(extract(epoch FROM r.run_ts) * 1000)::bigint FROM dp.entity_state s"
                            " LEFT JOIN audit.system_run r ON r.run_id = s.silver_run_id"
                            " WHERE s.system = $1 AND s.entity = $2 FOR UPDATE OF s", 2, p, &r, e);
  if (rc) return rc;
  if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) {
    if (PQgetisnull(r, 0, 1) || strcmp(PQgetvalue(r, 0, 1), m->defhash) != 0 || PQgetisnull(r, 0, 2)) {
      m->full = 1;
    } else {
      snprintf(m->since, sizeof m->since, "%s", PQgetvalue(r, 0, 2));
      m->since_ms = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
    }
  }
  PQclear(r);
  if (m->full) {
    m->since[0] = '\0';
    m->since_ms = -1;
  }
  return 0;
}

/* The input: the change files when they are complete, else a bronze query. */
static int open_input(merge_run *m, dp_err *e) {
  if (!m->full && m->bronze_dir) {
    int rc = dp__silver_change_files(m->c, m->ent, m->bronze_dir, m->since, &m->src.files, e);
    if (rc < 0) return rc;
    m->from_files = rc;
  }
  if (!m->from_files) dp__silver_source_query(&m->src, m->cli, m->bronze_db, m->ent, m->since_ms);
  return 0;
}

/* How rows leave the input: straight into an empty table when each key comes once, else into
 * the stage (deduplicated when a key may come more than once). A change file holds each key once
 * (bronze resolves repeats), so a key repeats only across change files; bronze holds one
 * document per key. */
static int choose_mode(merge_run *m, dp_err *e) {
  size_t nfiles = 0;
  while (m->src.files && m->src.files[nfiles]) nfiles++;
  int may_repeat = m->from_files && nfiles > 1;
  dp_buf q = DP_BUF_INIT;
  dp_buf_puts(&q, "SELECT NOT EXISTS (SELECT 1 FROM ");
  dp__silver_tbl(&q, m->ent, "");
  dp_buf_puts(&q, ")");
  PGresult *r = NULL;
  int rc = dp_pg_exec(m->c, q.data, 0, NULL, &r, e);
  dp_buf_free(&q);
  if (rc) return rc;
  int empty = PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  m->st.mode = empty && !may_repeat ? DP__SILVER_TO_TABLE
               : may_repeat         ? DP__SILVER_TO_STAGE_DEDUPE
                                    : DP__SILVER_TO_STAGE;
  dp_log(DP_LOG_DEBUG, "silver %s.%s: input from %s%s, %s", m->ent->system, m->ent->name,
         m->from_files ? "change files" : "bronze", m->full ? " (everything)" : "",
         m->st.mode == DP__SILVER_TO_TABLE ? "straight into the empty table" : "staged and merged");
  return 0;
}

/* Read, cast and COPY every input document, then the rejected rows. */
static int stage_input(merge_run *m, dp_err *e) {
  int rc = dp__silver_copy_begin(&m->st, m->ent, e);
  if (rc) return rc;
  m->t_read = dp_monotonic();
  rc = dp__silver_stage_rows(&m->st, &m->src, m->ent, m->run, m->out, e);
  m->t_merge = dp_monotonic();
  if (rc) {
    dp_err tmp;
    dp_pg_copy_end(m->c, "aborted by dp-engine", &tmp);
    return rc;
  }
  rc = dp_pg_copy_end(m->c, NULL, e);
  if (rc == 0) rc = dp__silver_copy_rejects(&m->st, m->ent, e);
  return rc;
}

/* The stage into silver; a first load into the empty table only gets its key indexes back (the
 * unique one also proves each key came once). */
static int merge_stage(merge_run *m, dp_err *e) {
  dp_test_pause("silver"); /* crash tests: staged, not merged, transaction open */
  if (m->st.mode == DP__SILVER_TO_TABLE) {
    dp_buf q = DP_BUF_INIT;
    dp__silver_key_indexes(&q, m->ent, "CREATE");
    int rc = dp_pg_exec(m->c, q.data, 0, NULL, NULL, e);
    dp_buf_free(&q);
    return rc;
  }
  int rc = dp__silver_settle_stage(m->c, m->ent, m->run, m->st.mode, m->st.staged_rejects, m->out, e);
  if (rc == 0) rc = dp_pg_exec(m->c, "ANALYZE _dp_stage", 0, NULL, NULL, e);
  if (rc == 0) rc = dp__silver_merge_stage(m->c, m->ent, m->run, m->out, e);
  return rc;
}

/* The records bronze itself rejected since silver's last commit. */
static int add_bronze_rejects(merge_run *m, dp_err *e) {
  if (!m->cli) return 0;
  return dp__silver_bronze_rejects(m->c, m->cli, m->bronze_db, m->ent, m->run, m->since, m->since_ms, m->out, e);
}

/* Keeps the entity's row of dp.<table> (entity_state or entity_cursor) as it was before this run
 * (NULL: none) in dp.silver_undo, for `dp-engine rollback`. */
static int save_state_before(merge_run *m, const char *table, dp_err *e) {
  char sql[400];
  snprintf(sql, sizeof sql,
           "INSERT INTO dp.silver_undo (run_id, system, entity, what, row_id, before) SELECT $1::uuid, $2, $3, '%s', 0, "
           "(SELECT to_jsonb(s) FROM dp.%s s WHERE s.system = $2 AND s.entity = $3) ON CONFLICT DO NOTHING",
           table, table);
  const char *p[] = {m->run->id_str, m->ent->system, m->ent->name};
  int rc = dp_pg_exec(m->c, sql, 3, p, NULL, e);
  if (rc) dp_err_prefix(e, "cannot keep the entity's progress in dp.silver_undo (was `dp-engine migrate` run?): ");
  return rc;
}

/* Where this run leaves off: dp.entity_state (the next merge starts here) and, for delta
 * entities, the source cursor, both in the merge's transaction. */
static int save_progress(merge_run *m, dp_err *e) {
  /* where the time goes (docs/performance.md): reading the input vs the PostgreSQL merge */
  dp_log(DP_LOG_DEBUG, "silver %s.%s: read, cast and COPY %.3f s; merge %.3f s", m->ent->system, m->ent->name,
         m->t_merge - m->t_read, dp_monotonic() - m->t_merge);
  const char *ps[] = {m->ent->system, m->ent->name, m->run->id_str, m->defhash};
  int rc = save_state_before(m, "entity_state", e);
  if (rc == 0) rc = dp_pg_exec(m->c,
                      "INSERT INTO dp.entity_state (system, entity, silver_run_id, definition_hash, updated_at) "
                      "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (system, entity) DO UPDATE SET "
                      "silver_run_id = EXCLUDED.silver_run_id, definition_hash = EXCLUDED.definition_hash, "
                      "updated_at = now()",
                      4, ps, NULL, e);
  if (rc || m->ent->full_load || !m->cursor) return rc;
  const char *pc[] = {m->ent->system, m->ent->name, m->cursor, m->run->id_str};
  rc = save_state_before(m, "entity_cursor", e);
  return rc ? rc : dp_pg_exec(m->c,
                    "INSERT INTO dp.entity_cursor (system, entity, cursor, run_id, updated_at) "
                    "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (system, entity) DO UPDATE "
                    "SET cursor = EXCLUDED.cursor, run_id = EXCLUDED.run_id, updated_at = now()",
                    4, pc, NULL, e);
}

static int ensure_table(merge_run *m, dp_err *e) { return dp_silver_ensure_table(m->c, m->ent, m->run, e); }

/* The algorithm, in order; each stage runs in the merge's one transaction. */
static int (*const merge_stages[])(merge_run *, dp_err *) = {
    ensure_table,       /* the table follows metadata (silver_schema.c) */
    find_start,         /* where silver's last committed run left off */
    open_input,         /* change files, or a bronze query (silver_source.c) */
    choose_mode,        /* straight into an empty table, or staged */
    stage_input,        /* read, cast and COPY (silver_stage.c) */
    merge_stage,        /* settle the stage and merge it (silver_merge.c) */
    add_bronze_rejects, /* what bronze could not store */
    save_progress,      /* dp.entity_state and the cursor */
};

int dp_silver_merge(PGconn *c, mongoc_client_t *cli, const char *bronze_db, const char *bronze_dir,
                    const dp_entity *ent, const dp_runinfo *run, const char *cursor, unsigned flags, dp_counts *out,
                    dp_err *e) {
  merge_run m = {.c = c, .cli = cli, .bronze_db = bronze_db, .bronze_dir = bronze_dir, .ent = ent, .run = run,
                 .cursor = cursor, .out = out, .full = (flags & DP_SILVER_FULL_READ) != 0, .since_ms = -1,
                 .st = {.c = c, .mode = DP__SILVER_TO_STAGE}};
  memset(out, 0, sizeof *out);
  int rc = dp_pg_begin(c, e);
  if (rc) return rc;
  for (size_t i = 0; rc == 0 && i < sizeof merge_stages / sizeof merge_stages[0]; i++) rc = merge_stages[i](&m, e);
  if (rc == 0) rc = dp_pg_commit(c, e);
  if (rc == 0) {
    if (bronze_dir) dp__silver_remove_consumed(bronze_dir); /* after the commit: they were read */
  } else {
    dp_pg_rollback(c); /* nothing was written */
    memset(out, 0, sizeof *out);
  }
  dp__silver_source_close(&m.src);
  dp__silver_stager_free(&m.st);
  return rc;
}
