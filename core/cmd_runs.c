/* cmd_runs.c - dp-engine runs [list|show RUN_ID]: the audit tables, readably or as JSON. */
#include "cli.h"
#include "log.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *RUNS_USAGE =
    "usage: dp-engine runs [list] [--system S] [--limit N] [--json]\n"
    "       dp-engine runs show RUN_ID [--json]\n"
    "\n"
    "Lists system runs, newest first (default 20), or shows one run: its layers and every\n"
    "entity-layer row with records in / inserted / updated / deleted / unchanged / rejected and\n"
    "errors. Reads audit.* through DP_POSTGRES_URL. --json prints the same as JSON.\n";

int dp_cli_runs_json(PGconn *c, const char *const *ids, size_t n, dp_buf *out, dp_err *e) {
  dp_buf arr = DP_BUF_INIT; /* a PostgreSQL array literal of the ids (uuids: no quoting needed) */
  dp_buf_putc(&arr, '{');
  for (size_t i = 0; i < n; i++) dp_buf_printf(&arr, "%s\"%s\"", i ? "," : "", ids[i]);
  dp_buf_putc(&arr, '}');
  const char *p[] = {arr.data};
  PGresult *r = NULL;
  int rc = dp_pg_exec(c,
                      "SELECT coalesce(json_agg(t), '[]'::json) FROM (SELECT s.*, (SELECT coalesce(json_agg(l ORDER BY "
                      "l.started_at), '[]') FROM audit.system_layer_run l WHERE l.run_id = s.run_id) AS layers, (SELECT "
                      "coalesce(json_agg(x ORDER BY x.started_at), '[]') FROM audit.entity_layer_run x WHERE x.run_id = "
                      "s.run_id) AS entities FROM unnest($1::text[]) WITH ORDINALITY u(id, ord) JOIN audit.system_run s "
                      "ON s.run_id::text = u.id ORDER BY u.ord) t",
                      1, p, &r, e);
  dp_buf_free(&arr);
  if (rc == 0) rc = dp_buf_puts(out, PQgetvalue(r, 0, 0));
  PQclear(r);
  return rc;
}

int dp_cli_print_run_json(PGconn *c, const char *run_id, const char *key, const char *value, dp_err *e) {
  dp_buf out = DP_BUF_INIT;
  int rc = dp_cli_runs_json(c, &run_id, 1, &out, e);
  if (rc == 0 && (out.len < 4 || out.data[0] != '[' || out.data[out.len - 1] != ']'))
    rc = dp_err_set(e, DP_ENOTFOUND, "run %s is not in the audit", run_id);
  if (rc == 0) {
    out.data[out.len - 2] = '\0'; /* [{...}] -> {... */
    printf("%s", out.data + 1);
    if (key) printf(",\"%s\":%s", key, value);
    printf("}\n");
    fflush(stdout);
  }
  dp_buf_free(&out);
  return rc;
}

int dp_cmd_runs(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(RUNS_USAGE, stdout); return DP_EXIT_OK; }
  const char *system = NULL, *run_id = NULL, *limit = "20";
  int json = 0, i = 0;
  int is_show = argc > 0 && strcmp(argv[0], "show") == 0;
  if (argc > 0 && (is_show || strcmp(argv[0], "list") == 0)) i = 1;
  if (is_show) {
    if (i >= argc || argv[i][0] == '-') return dp_cli_usage_error(RUNS_USAGE, "%s", "runs show needs a RUN_ID");
    run_id = argv[i++];
  }
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) json = 1;
    else if (!is_show && strcmp(argv[i], "--system") == 0 && i + 1 < argc) system = argv[++i];
    else if (!is_show && strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
      limit = argv[++i];
      if (strspn(limit, "0123456789") != strlen(limit) || !*limit)
        return dp_cli_usage_error(RUNS_USAGE, "--limit takes a whole number: %s", limit);
    } else return dp_cli_usage_error(RUNS_USAGE, "unexpected argument: %s", argv[i]);
  }
  dp_err e;
  dp_err_clear(&e);
  if (dp_engine_open_migrated(eng, &e)) return dp_cli_exit("runs", &e);
  int rc;
  if (!is_show) {
    const char *p[] = {system, limit};
    rc = dp_cli_query_print(eng->audit,
              "SELECT run_id, system, trigger_kind AS trigger, status, "
              "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS started_utc, "
              "round(extract(epoch FROM ended_at - started_at)::numeric, 2) AS seconds, "
              "entities_succeeded AS ok, entities_failed AS failed, entities_skipped AS skipped, error "
              "FROM audit.system_run WHERE ($1::text IS NULL OR system = $1) "
              "ORDER BY started_at DESC LIMIT $2::int",
              2, p, json, &e);
  } else {
    const char *p[] = {run_id};
    PGresult *r = NULL;
    rc = dp_pg_exec(eng->audit, "SELECT 1 FROM audit.system_run WHERE run_id::text = $1", 1, p, &r, &e);
    if (rc == 0 && PQntuples(r) == 0) {
      PQclear(r);
      char shown[128];
      dp_err_set(&e, DP_ENOTFOUND, "no run %s (dp-engine runs lists them)", dp_log_shown(run_id, shown, sizeof shown));
      return dp_cli_exit("runs show", &e);
    }
    PQclear(r);
    if (rc == 0 && json) {
      dp_buf out = DP_BUF_INIT;
      rc = dp_cli_runs_json(eng->audit, p, 1, &out, &e);
      if (rc == 0) printf("%s\n", out.data);
      dp_buf_free(&out);
    } else if (rc == 0) {
      rc = dp_cli_query_print(eng->audit,
                "SELECT run_id, system, trigger_kind AS trigger, status, started_at, ended_at, entities_succeeded AS ok, "
                "entities_failed AS failed, entities_skipped AS skipped, metadata_hash, engine_version, error "
                "FROM audit.system_run WHERE run_id::text = $1", 1, p, 0, &e);
      if (rc == 0) {
        printf("\n");
        rc = dp_cli_query_print(eng->audit,
                  "SELECT layer, status, round(extract(epoch FROM ended_at - started_at)::numeric, 3) AS seconds, "
                  "entities_succeeded AS ok, entities_failed AS failed, entities_skipped AS skipped "
                  "FROM audit.system_layer_run WHERE run_id::text = $1 ORDER BY started_at", 1, p, 0, &e);
      }
      if (rc == 0) {
        printf("\n");
        rc = dp_cli_query_print(eng->audit,
                  "SELECT entity, layer, status, round(extract(epoch FROM ended_at - started_at)::numeric, 3) AS seconds, "
                  "records_in AS in, records_inserted AS inserted, records_updated AS updated, "
                  "records_deleted AS deleted, records_unchanged AS unchanged, records_rejected AS rejected, error "
                  "FROM audit.entity_layer_run WHERE run_id::text = $1 ORDER BY started_at", 1, p, 0, &e);
      }
    }
  }
  if (rc) {
    return dp_cli_exit("runs", &e);
  }
  return DP_EXIT_OK;
}
