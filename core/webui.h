/* webui.h - the status page serve shows at / (docs/status-page.md): the embedded static files,
 * the server-rendered overview, and the JSON of the read routes the pages use. The JSON functions
 * block on PostgreSQL: serve calls them on libuv's thread pool. */
#ifndef DP_WEBUI_H
#define DP_WEBUI_H

#include <libpq-fe.h>
#include <stddef.h>
#include "buf.h"
#include "snapshot.h"

/* The embedded file under /ui/NAME (app.js, style.css, ...): 0 and its type, bytes and length, or
 * -1. The bytes are static. */
int dp_webui_asset(const char *name, const char **type, const unsigned char **data, size_t *len);

/* The overview: every system and gold model with its last run and its freshness, as the JSON of
 * GET /api/v1/overview (json_out) and/or as the HTML the page shows without JavaScript
 * (html_out); either may be NULL. Returns 0, or -1 when the audit could not be read. */
int dp_webui_overview(PGconn *c, const dp_snapshot *snap, double now, dp_buf *json_out, dp_buf *html_out);
/* GET /api/v1/systems/{name}: entities with current rows, versions and rejects; the last runs
 * with per-layer counts; prefect_ui_url (PREFECT_UI_URL, or NULL) for links to flow runs.
 * Returns 0, -1 (audit unreadable). */
int dp_webui_system_json(PGconn *c, const dp_snap_target *sys, const char *prefect_ui_url, dp_buf *out);
/* GET /api/v1/lineage: nodes (systems, entities, gold models, with the last status) and edges. */
int dp_webui_lineage_json(PGconn *c, const dp_snapshot *snap, dp_buf *out);

/* The page at /: main_html (the server-rendered overview) inside the page's frame, or the sign-in
 * form when main_html is NULL; the script takes over when JavaScript runs. */
void dp_webui_page(dp_buf *out, const char *main_html);

#endif
