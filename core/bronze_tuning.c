/* bronze_tuning.c - the FerretDB tuning bronze needs, checked (docker/ferretdb-tuning.sql).
 * The tuning lives in FerretDB's PostgreSQL database, which the MongoDB wire protocol does not
 * show: FerretDB reports neither its settings nor indexes it did not make. So the check asks
 * that database itself, through DP_FERRETDB_PG_URL. */
#include "bronze_tuning.h"
#include "bronze.h"
#include "buf.h"
#include "config.h"
#include "doctor.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#define FIX "apply docker/ferretdb-tuning.sql to FerretDB's PostgreSQL database and restart FerretDB (docs/deployment.md#bronze-on-ferretdb)"

/* The FerretDB version in buildInfo's "ferretdbVersion" (or any "ferretdb…" field), else "". */
static int ferretdb_version(mongoc_client_t *cli, char *ver, size_t cap, char *msg, size_t mcap) {
  bson_t cmd = BSON_INITIALIZER, reply;
  bson_error_t be;
  BSON_APPEND_INT32(&cmd, "buildInfo", 1);
  bool ok = mongoc_client_command_simple(cli, "admin", &cmd, NULL, &reply, &be);
  bson_destroy(&cmd);
  ver[0] = '\0';
  if (!ok) {
    snprintf(msg, mcap, "cannot ask the bronze server for its build: %s", DP_BRONZE_SERVER_MSG(be));
    bson_destroy(&reply);
    return -1;
  }
  bson_iter_t it;
  if (bson_iter_init(&it, &reply))
    while (bson_iter_next(&it))
      if (strncmp(bson_iter_key(&it), "ferretdb", 8) == 0) {
        snprintf(ver, cap, "%s", BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : "(unknown version)");
        if (strcmp(bson_iter_key(&it), "ferretdbVersion") == 0) break;
      }
  bson_destroy(&reply);
  return 0;
}

static const char *one_value(PGconn *c, const char *sql, char *buf, size_t cap) {
  PGresult *r = PQexec(c, sql);
  const char *v = NULL;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
    snprintf(buf, cap, "%s", PQgetvalue(r, 0, 0));
    v = buf;
  }
  PQclear(r);
  return v;
}

int dp_bronze_tuning_check(mongoc_client_t *cli, const char *pg_url, char *msg, size_t cap, char *fix, size_t fixcap) {
  char ver[64];
  fix[0] = '\0';
  if (ferretdb_version(cli, ver, sizeof ver, msg, cap) != 0) return DP_TUNING_ERROR;
  if (!ver[0]) {
    snprintf(msg, cap, "bronze is MongoDB: its _id index serves bronze's writes, nothing to tune");
    return DP_TUNING_OK;
  }
  if (!pg_url || !*pg_url) {
    snprintf(msg, cap, "bronze is FerretDB %s: its tuning is not checked (DP_FERRETDB_PG_URL is not set)", ver);
    snprintf(fix, fixcap, "set DP_FERRETDB_PG_URL to FerretDB's PostgreSQL database so that doctor can check it; "
                          "without the tuning, " FIX);
    return DP_TUNING_WARN;
  }
  PGconn *c = PQconnectdb(pg_url);
  if (PQstatus(c) != CONNECTION_OK) {
    char why[256];
    snprintf(why, sizeof why, "%s", PQerrorMessage(c));
    why[strcspn(why, "\n")] = '\0';
    PQfinish(c);
    snprintf(msg, cap, "bronze is FerretDB %s: cannot connect to DP_FERRETDB_PG_URL: %s", ver, why);
    snprintf(fix, fixcap, "set DP_FERRETDB_PG_URL to FerretDB's PostgreSQL database (libpq URI)");
    return DP_TUNING_ERROR;
  }
  char mode[64] = "", trig[8] = "", missing[24] = "", pending[24] = "";
  /* a new session has the database's setting */
  if (!one_value(c, "SHOW plan_cache_mode", mode, sizeof mode)) snprintf(mode, sizeof mode, "(unknown)");
  one_value(c, "SELECT count(*) FROM pg_event_trigger WHERE evtname = 'dp_ferretdb_id_gin' AND evtenabled <> 'D'",
            trig, sizeof trig);
  /* collection tables without the index (made before the trigger, or while it was off), and
   * those whose index still has GIN's pending list (made by an earlier docker/ferretdb-tuning.sql) */
#define COLLECTION_TABLES                                                                                 \
  "FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace "                                        \
  "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = '_jsonb' AND NOT a.attisdropped "            \
  "WHERE t.relkind = 'r' AND n.nspname NOT IN ('public', 'pg_catalog', 'information_schema') "            \
  "AND n.nspname NOT LIKE 'pg\\_%' AND t.relname <> '_ferretdb_database_metadata' "
#define ID_INDEX "SELECT 1 FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid WHERE i.indrelid = t.oid " \
                 "AND x.relname LIKE '%\\_dp\\_id\\_gin'"
  one_value(c, "SELECT count(*) " COLLECTION_TABLES "AND NOT EXISTS (" ID_INDEX ")", missing, sizeof missing);
  one_value(c,
            "SELECT count(*) " COLLECTION_TABLES "AND EXISTS (" ID_INDEX ") AND NOT EXISTS (" ID_INDEX
            " AND x.reloptions && ARRAY['fastupdate=off', 'fastupdate=false'])",
            pending, sizeof pending);
#undef ID_INDEX
#undef COLLECTION_TABLES
  PQfinish(c);
  int mode_ok = strcmp(mode, "force_custom_plan") == 0, trig_ok = strcmp(trig, "1") == 0,
      missing_ok = strcmp(missing, "0") == 0, pending_ok = strcmp(pending, "0") == 0;
  if (mode_ok && trig_ok && missing_ok && pending_ok) {
    snprintf(msg, cap, "bronze is FerretDB %s: tuned (plan_cache_mode force_custom_plan, the _id index on every collection)",
             ver);
    return DP_TUNING_OK;
  }
  snprintf(fix, fixcap, "%s", FIX);
  dp_buf what = DP_BUF_INIT;
  if (!mode_ok) dp_buf_printf(&what, "plan_cache_mode is %s", mode);
  if (!trig_ok) dp_buf_printf(&what, "%sno event trigger dp_ferretdb_id_gin", what.len ? ", " : "");
  if (!missing_ok) dp_buf_printf(&what, "%s%s collection tables without the _id index", what.len ? ", " : "", missing);
  if (!pending_ok)
    dp_buf_printf(&what, "%s%s _id indexes with GIN's pending list on (fastupdate)", what.len ? ", " : "", pending);
  snprintf(msg, cap, "bronze is FerretDB %s without the tuning bronze needs (%s): %s", ver, what.data,
           mode_ok && trig_ok && missing_ok ? "each lookup by _id also reads the index's whole pending list"
                                            : "each write by _id scans its whole collection table");
  dp_buf_free(&what);
  return DP_TUNING_WARN;
}

void dp_bronze_tuning_doctor(dp_doctor *d) {
  dp_engine *eng = dp_doctor_engine(d);
  char msg[1024], fix[512];
  int st = dp_bronze_tuning_check(eng->mongo, dp_config_env("DP_FERRETDB_PG_URL"), msg, sizeof msg, fix, sizeof fix);
  dp_doctor_report(d, st == DP_TUNING_OK ? DP_DOCTOR_OK : st == DP_TUNING_WARN ? DP_DOCTOR_WARN : DP_DOCTOR_FAIL,
                   "bronze tuning", fix[0] ? fix : NULL, "%s", msg);
}
