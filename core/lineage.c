/* lineage.c - see lineage.h. */
#include "lineage.h"
#include "pg.h"

#include <string.h>

int dp_lineage_statuses(PGconn *c, PGresult **out, dp_err *e) {
  static const char *sql =
      "SELECT DISTINCT ON (id) id, status, to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || 'Z', run_id "
      "FROM (SELECT CASE WHEN EXISTS (SELECT 1 FROM audit.system_layer_run l WHERE l.run_id = s.run_id AND l.layer = 'gold') "
      "THEN 'gold:' ELSE 'system:' END || s.system AS id, s.status, s.started_at, s.run_id::text AS run_id "
      "FROM audit.system_run s "
      /* an entity's run: failed when a layer failed, skipped when every layer was */
      "UNION ALL SELECT 'entity:' || system || '.' || entity, CASE WHEN bool_or(status = 'failed') THEN 'failed' "
      "WHEN bool_or(status = 'crashed') THEN 'crashed' WHEN bool_or(status = 'running') THEN 'running' "
      "WHEN bool_and(status = 'skipped') THEN 'skipped' ELSE 'succeeded' END, min(started_at), run_id::text "
      "FROM audit.entity_layer_run WHERE layer <> 'gold' GROUP BY system, entity, run_id) x "
      "ORDER BY id, started_at DESC";
  return dp_pg_exec(c, sql, 0, NULL, out, e);
}

const char *dp_lineage_status_of(const PGresult *r, const char *id) {
  for (int i = 0; i < PQntuples(r); i++)
    if (strcmp(PQgetvalue(r, i, DP_LINEAGE_ID), id) == 0) return PQgetvalue(r, i, DP_LINEAGE_STATUS);
  return NULL;
}
