/* lineage.h - the last run of every node of the lineage graph, from the audit: what
 * `dp-engine lineage` and the status page's lineage graph (webui.c) show. */
#ifndef DP_LINEAGE_H
#define DP_LINEAGE_H

#include <libpq-fe.h>
#include "error.h"

/* One row per node that ever ran: id ("system:bank", "entity:bank.transactions",
 * "gold:monthly_overview"), status, last_run (UTC, "YYYY-MM-DD HH:MM:SSZ"), run_id. A system's
 * and a gold model's status is its last run's; an entity's is that of its last run over its
 * layers: failed when a layer failed, skipped when every layer was. The caller PQclear()s *out. */
enum { DP_LINEAGE_ID = 0, DP_LINEAGE_STATUS, DP_LINEAGE_LAST_RUN, DP_LINEAGE_RUN_ID };
int dp_lineage_statuses(PGconn *c, PGresult **out, dp_err *e);
/* The status of node id in a result of dp_lineage_statuses, or NULL when it never ran. */
const char *dp_lineage_status_of(const PGresult *r, const char *id);

#endif
