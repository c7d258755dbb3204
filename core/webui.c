/* webui.c - see webui.h. */
#include "webui.h"
#include "lineage.h"
#include "cron.h"
#include "json.h"
#include "pg.h"
#include "webassets.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A late run: the previous slot of a schedule is more than this old and no successful run
 * started since. Less old: "due" (the run may be starting or running now). */
#define DP_LATE_AFTER_S (30 * 60)

int dp_webui_asset(const char *name, const char **type, const unsigned char **data, size_t *len) {
  for (const dp_web_asset *a = dp_web_assets; a->name; a++) {
    if (strcmp(a->name, name) != 0) continue;
    const char *dot = strrchr(name, '.');
    *type = !dot                       ? "application/octet-stream"
            : strcmp(dot, ".js") == 0  ? "text/javascript; charset=utf-8"
            : strcmp(dot, ".css") == 0 ? "text/css; charset=utf-8"
            : strcmp(dot, ".svg") == 0 ? "image/svg+xml"
                                       : "text/plain; charset=utf-8";
    *data = a->data;
    *len = a->len;
    return 0;
  }
  return -1;
}

static void html_escape(dp_buf *b, const char *s) {
  for (; s && *s; s++) {
    switch (*s) {
      case '<': dp_buf_puts(b, "&lt;"); break;
      case '>': dp_buf_puts(b, "&gt;"); break;
      case '&': dp_buf_puts(b, "&amp;"); break;
      case '"': dp_buf_puts(b, "&quot;"); break;
      case '\'': dp_buf_puts(b, "&#39;"); break;
      default: dp_buf_putc(b, *s);
    }
  }
}

static void json_str(dp_buf *b, const char *s) {
  if (s) dp_json_put_string(b, s, strlen(s));
  else dp_buf_puts(b, "null");
}

/* The freshness of a target against its schedules at `now`: "ok", "due", "late", or "none" (no
 * schedule). expected: the latest slot at or before now, 0 when none. */
static const char *freshness(const dp_snap_target *t, double now, double last_success, int64_t *expected) {
  *expected = 0;
  for (size_t k = 0; k < t->ntriggers; k++) {
    const dp_trigger *g = &t->triggers[k];
    if (g->kind != DP_TRIG_SCHEDULE) continue;
    dp_cron c;
    dp_tz *tz = NULL;
    dp_err e;
    int64_t prev;
    if (dp_cron_parse(g->cron, &c, &e) == 0 && dp_tz_load(g->timezone ? g->timezone : "UTC", &tz, &e) == 0 &&
        dp_cron_prev(&c, tz, (int64_t)now, &prev) == 0 && prev > *expected)
      *expected = prev;
    dp_tz_free(tz);
  }
  if (!*expected) return "none";
  if (last_success >= (double)*expected) return "ok";
  return now - (double)*expected > DP_LATE_AFTER_S ? "late" : "due";
}

typedef struct last_run {
  char *name, *run_id, *status, *trigger, *started, *error;
  double started_epoch, seconds, last_success;
  int have_seconds;
} last_run;

static const char *val(PGresult *r, int i, int k) { return PQgetisnull(r, i, k) ? NULL : PQgetvalue(r, i, k); }

static void ago(double secs, char *out, size_t cap) {
  if (secs < 90) snprintf(out, cap, "%.0f s ago", secs < 0 ? 0 : secs);
  else if (secs < 5400) snprintf(out, cap, "%.0f min ago", secs / 60);
  else if (secs < 172800) snprintf(out, cap, "%.0f h ago", secs / 3600);
  else snprintf(out, cap, "%.0f days ago", secs / 86400);
}

int dp_webui_overview(PGconn *c, const dp_snapshot *snap, double now, dp_buf *json, dp_buf *html) {
  PGresult *r = NULL;
  dp_err e;
  if (dp_pg_exec(c,
                 "SELECT l.system, l.run_id::text, l.status, l.trigger_kind, "
                 " to_char(l.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
                 " extract(epoch FROM l.started_at), extract(epoch FROM l.ended_at - l.started_at), l.error,"
                 " (SELECT extract(epoch FROM max(started_at)) FROM audit.system_run s"
                 "   WHERE s.system = l.system AND s.status = 'succeeded')"
                 " FROM (SELECT DISTINCT ON (system) * FROM audit.system_run ORDER BY system, started_at DESC) l",
                 0, NULL, &r, &e) != 0)
    return -1;
  if (json) dp_buf_puts(json, "{\"targets\":[");
  if (html) {
    dp_buf_puts(html, "<section aria-labelledby=\"h-overview\"><h1 id=\"h-overview\">Overview</h1>"
                      "<div class=\"scroll\"><table class=\"overview\"><caption>Every system and gold model: its last "
                      "run and whether its data is fresh against its schedule</caption><thead><tr>"
                      "<th scope=\"col\">name</th><th scope=\"col\">kind</th><th scope=\"col\">last run</th>"
                      "<th scope=\"col\">when</th><th scope=\"col\">trigger</th><th scope=\"col\">duration</th>"
                      "<th scope=\"col\">freshness</th></tr></thead><tbody>");
  }
  for (size_t i = 0; i < snap->ntargets; i++) {
    const dp_snap_target *t = &snap->targets[i];
    int row = -1;
    for (int k = 0; k < PQntuples(r) && row < 0; k++)
      if (strcmp(PQgetvalue(r, k, 0), t->name) == 0) row = k;
    const char *run_id = row >= 0 ? val(r, row, 1) : NULL, *status = row >= 0 ? val(r, row, 2) : NULL;
    const char *trigger = row >= 0 ? val(r, row, 3) : NULL, *started = row >= 0 ? val(r, row, 4) : NULL;
    const char *error = row >= 0 ? val(r, row, 7) : NULL;
    double started_epoch = row >= 0 && val(r, row, 5) ? atof(val(r, row, 5)) : 0;
    int have_secs = row >= 0 && val(r, row, 6);
    double secs = have_secs ? atof(val(r, row, 6)) : 0;
    double last_ok = row >= 0 && val(r, row, 8) ? atof(val(r, row, 8)) : 0;
    int64_t expected;
    const char *fresh = freshness(t, now, last_ok, &expected);
    const char *kind = t->is_gold ? "gold" : "system";
    if (json) {
      if (i) dp_buf_putc(json, ',');
      dp_buf_puts(json, "{\"name\":");
      json_str(json, t->name);
      dp_buf_printf(json, ",\"kind\":\"%s\",\"enabled\":%s,\"freshness\":\"%s\"", kind, t->enabled ? "true" : "false",
                    fresh);
      if (expected) dp_buf_printf(json, ",\"expected_since\":%lld", (long long)expected);
      dp_buf_puts(json, ",\"last_run\":");
      if (!run_id) {
        dp_buf_puts(json, "null");
      } else {
        dp_buf_puts(json, "{\"run_id\":");
        json_str(json, run_id);
        dp_buf_puts(json, ",\"status\":");
        json_str(json, status);
        dp_buf_puts(json, ",\"trigger_kind\":");
        json_str(json, trigger);
        dp_buf_puts(json, ",\"started_at\":");
        json_str(json, started);
        if (have_secs) dp_buf_printf(json, ",\"seconds\":%.3f", secs);
        dp_buf_puts(json, ",\"error\":");
        json_str(json, error);
        dp_buf_puts(json, "}");
      }
      if (last_ok > 0) dp_buf_printf(json, ",\"last_success_epoch\":%.3f", last_ok);
      dp_buf_puts(json, "}");
    }
    if (html) {
      char when[40] = "", dur[32] = "";
      if (run_id) ago(now - started_epoch, when, sizeof when);
      if (have_secs) snprintf(dur, sizeof dur, "%.1f s", secs);
      dp_buf_puts(html, "<tr><th scope=\"row\">");
      html_escape(html, t->name);
      dp_buf_printf(html, "%s</th><td>%s</td><td>", t->enabled ? "" : " <small>(disabled)</small>", kind);
      if (status) {
        dp_buf_puts(html, "<span class=\"status s-");
        html_escape(html, status);
        dp_buf_puts(html, "\">");
        html_escape(html, status);
        dp_buf_puts(html, "</span>");
        if (error && strcmp(status, "succeeded") != 0) {
          dp_buf_puts(html, "<div class=\"error\">");
          html_escape(html, error);
          dp_buf_puts(html, "</div>");
        }
      } else {
        dp_buf_puts(html, "<span class=\"status s-never\">never ran</span>");
      }
      dp_buf_puts(html, "</td><td>");
      if (started) {
        dp_buf_puts(html, "<time datetime=\"");
        html_escape(html, started);
        dp_buf_puts(html, "\">");
        html_escape(html, when);
        dp_buf_puts(html, "</time>");
      }
      dp_buf_puts(html, "</td><td>");
      html_escape(html, trigger ? trigger : "");
      dp_buf_printf(html, "</td><td>%s</td><td><span class=\"fresh f-%s\">%s</span></td></tr>", dur, fresh,
                    strcmp(fresh, "none") == 0 ? "no schedule" : fresh);
    }
  }
  PQclear(r);
  if (json) dp_buf_printf(json, "],\"generated_at\":%.3f}", now);
  if (html) dp_buf_puts(html, "</tbody></table></div></section>");
  return 0;
}

int dp_webui_system_json(PGconn *c, const dp_snap_target *sys, const char *prefect_ui_url, dp_buf *out) {
  dp_err e;
  PGresult *r = NULL;
  dp_buf_puts(out, "{\"name\":");
  json_str(out, sys->name);
  dp_buf_puts(out, ",\"prefect_ui_url\":");
  json_str(out, prefect_ui_url && *prefect_ui_url ? prefect_ui_url : NULL);
  dp_buf_printf(out, ",\"enabled\":%s,\"entities\":[", sys->enabled ? "true" : "false");
  for (size_t i = 0; i < sys->nentities; i++) {
    /* silver."<system>__<entity>" and its __rejected table, when they exist */
    dp_buf table = DP_BUF_INIT, rej = DP_BUF_INIT, q = DP_BUF_INIT;
    dp_buf_printf(&table, "%s__%s", sys->name, sys->entities[i]);
    dp_buf_printf(&rej, "%s__%s__rejected", sys->name, sys->entities[i]);
    const char *p[] = {table.data, rej.data};
    int have = 0, have_rej = 0;
    if (dp_pg_exec(c, "SELECT to_regclass(format('silver.%I', $1::text)) IS NOT NULL,"
                      " to_regclass(format('silver.%I', $2::text)) IS NOT NULL", 2, p, &r, &e) == 0) {
      have = PQgetvalue(r, 0, 0)[0] == 't';
      have_rej = PQgetvalue(r, 0, 1)[0] == 't';
      PQclear(r);
    }
    long long current = 0, versions = 0, rejected = 0;
    if (have) {
      dp_buf_puts(&q, "SELECT count(*) FILTER (WHERE _dp_is_current AND NOT _dp_is_deleted), count(*)");
      if (have_rej) {
        dp_buf_puts(&q, ", (SELECT count(*) FROM ");
        dp_pg_qualified(&q, "silver", rej.data);
        dp_buf_puts(&q, ")");
      } else {
        dp_buf_puts(&q, ", 0");
      }
      dp_buf_puts(&q, " FROM ");
      dp_pg_qualified(&q, "silver", table.data);
      if (dp_pg_exec(c, q.data, 0, NULL, &r, &e) == 0) {
        current = atoll(PQgetvalue(r, 0, 0));
        versions = atoll(PQgetvalue(r, 0, 1));
        rejected = atoll(PQgetvalue(r, 0, 2));
        PQclear(r);
      }
    }
    if (i) dp_buf_putc(out, ',');
    dp_buf_puts(out, "{\"name\":");
    json_str(out, sys->entities[i]);
    dp_buf_printf(out, ",\"loaded\":%s,\"current\":%lld,\"versions\":%lld,\"rejected\":%lld}", have ? "true" : "false",
                  current, versions, rejected);
    dp_buf_free(&table);
    dp_buf_free(&rej);
    dp_buf_free(&q);
  }
  dp_buf_puts(out, "],\"runs\":");
  const char *p[] = {sys->name};
  if (dp_pg_exec(c,
                 "SELECT coalesce(json_agg(t ORDER BY t.started_at), '[]') FROM (SELECT s.run_id, s.status, s.trigger_kind,"
                 " s.trigger_detail, s.started_at, round(extract(epoch FROM s.ended_at - s.started_at)::numeric, 3) AS seconds,"
                 " s.error, s.prefect_flow_run_id,"
                 " (SELECT coalesce(json_object_agg(x.layer, json_build_object('in', x.n_in, 'inserted', x.n_ins,"
                 "   'updated', x.n_upd, 'deleted', x.n_del, 'unchanged', x.n_unch, 'rejected', x.n_rej)), '{}')"
                 "   FROM (SELECT layer, sum(records_in) AS n_in, sum(records_inserted) AS n_ins, sum(records_updated) AS n_upd,"
                 "   sum(records_deleted) AS n_del, sum(records_unchanged) AS n_unch, sum(records_rejected) AS n_rej"
                 "   FROM audit.entity_layer_run en WHERE en.run_id = s.run_id GROUP BY layer) x) AS layers"
                 " FROM audit.system_run s WHERE s.system = $1 ORDER BY s.started_at DESC LIMIT 30) t",
                 1, p, &r, &e) != 0)
    return -1;
  dp_buf_puts(out, PQgetvalue(r, 0, 0));
  PQclear(r);
  dp_buf_puts(out, "}");
  return 0;
}

int dp_webui_lineage_json(PGconn *c, const dp_snapshot *snap, dp_buf *out) {
  dp_err e;
  PGresult *r = NULL;
  if (dp_lineage_statuses(c, &r, &e) != 0) return -1;
  dp_buf_puts(out, "{\"nodes\":[");
  int first = 1;
  for (size_t i = 0; i < snap->ntargets; i++) {
    const dp_snap_target *t = &snap->targets[i];
    char id[600];
    snprintf(id, sizeof id, "%s:%s", t->is_gold ? "gold" : "system", t->name);
    const char *status = dp_lineage_status_of(r, id);
    if (!first) dp_buf_putc(out, ',');
    first = 0;
    dp_buf_puts(out, "{\"id\":");
    json_str(out, t->name);
    dp_buf_printf(out, ",\"kind\":\"%s\",\"name\":", t->is_gold ? "gold" : "system");
    json_str(out, t->name);
    dp_buf_puts(out, ",\"status\":");
    json_str(out, status);
    dp_buf_printf(out, ",\"enabled\":%s}", t->enabled ? "true" : "false");
    for (size_t k = 0; k < t->nentities; k++) {
      dp_buf b = DP_BUF_INIT;
      dp_buf_printf(&b, "%s.%s", t->name, t->entities[k]);
      dp_buf_puts(out, ",{\"id\":");
      json_str(out, b.data);
      dp_buf_puts(out, ",\"kind\":\"entity\",\"name\":");
      json_str(out, t->entities[k]);
      dp_buf_puts(out, ",\"status\":");
      snprintf(id, sizeof id, "entity:%s", b.data);
      json_str(out, dp_lineage_status_of(r, id));
      dp_buf_puts(out, "}");
      dp_buf_free(&b);
    }
  }
  PQclear(r);
  dp_buf_puts(out, "],\"edges\":[");
  first = 1;
  for (size_t i = 0; i < snap->ntargets; i++) {
    const dp_snap_target *t = &snap->targets[i];
    for (size_t k = 0; k < t->nentities; k++) {
      dp_buf b = DP_BUF_INIT;
      dp_buf_printf(&b, "%s.%s", t->name, t->entities[k]);
      dp_buf_puts(out, first ? "[" : ",[");
      first = 0;
      json_str(out, t->name);
      dp_buf_putc(out, ',');
      json_str(out, b.data);
      dp_buf_puts(out, "]");
      dp_buf_free(&b);
    }
    for (size_t k = 0; k < t->ndepends; k++) {
      dp_buf_puts(out, first ? "[" : ",[");
      first = 0;
      json_str(out, t->depends_on[k]);
      dp_buf_putc(out, ',');
      json_str(out, t->name);
      dp_buf_puts(out, "]");
    }
    for (size_t k = 0; k < t->ntriggers; k++) {
      if (t->triggers[k].kind != DP_TRIG_AFTER || !t->triggers[k].upstream) continue;
      dp_buf_puts(out, first ? "[" : ",[");
      first = 0;
      json_str(out, t->triggers[k].upstream);
      dp_buf_putc(out, ',');
      json_str(out, t->name);
      dp_buf_puts(out, "]");
    }
  }
  dp_buf_puts(out, "]}");
  return 0;
}

void dp_webui_page(dp_buf *out, const char *main_html) {
  dp_buf_puts(out,
              "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
              "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
              "<meta name=\"color-scheme\" content=\"light dark\">"
              "<title>dp-engine status</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body>"
              "<header><a class=\"brand\" href=\"/#/\">dp-engine</a><nav aria-label=\"pages\"><a href=\"/#/\">Overview</a>"
              "<a href=\"/#/lineage\">Lineage</a><a href=\"/logout\" id=\"logout\">Sign out</a></nav></header>"
              "<main id=\"main\">");
  if (main_html) {
    dp_buf_puts(out, main_html);
  } else {
    dp_buf_puts(out,
                "<section aria-labelledby=\"h-login\" class=\"login\"><h1 id=\"h-login\">Sign in</h1>"
                "<p>The status page needs the API token of this dp-engine (<code>DP_API_TOKEN</code>).</p>"
                "<form method=\"post\" action=\"/login\" id=\"login\"><label for=\"token\">API token</label>"
                "<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>"
                "<button type=\"submit\">Sign in</button></form></section>");
  }
  dp_buf_puts(out, "</main><script src=\"/ui/app.js\"></script></body></html>\n");
}
