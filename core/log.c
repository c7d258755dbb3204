/* log.c - leveled logging to stderr, as text or JSON lines. */
#include "log.h"
#include "progress.h"
#include "buf.h"
#include "json.h"
#include "tz.h"
#include "error.h"
#include "redact.h"
#include "runinfo.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* Logging configuration is process-wide by nature (one stderr); set once in main. */
static dp_log_level g_level = DP_LOG_INFO;
static int g_json = 0;

/* The run's reporter on this thread (see log.h); a run is one thread. */
static __thread dp_log_sink_fn t_sink;
static __thread void *t_sink_ud;

void dp_log_set_sink(dp_log_sink_fn fn, void *ud) {
  t_sink = fn;
  t_sink_ud = fn ? ud : NULL;
}

/* What this thread's lines are about (log.h): a run is one thread. */
static __thread char t_run_id[40], t_system[256], t_entity[256], t_layer[16];

static void set_field(char *dst, size_t cap, const char *v) { snprintf(dst, cap, "%s", v ? v : ""); }

void dp_log_scope_run(const char *run_id, const char *system) {
  set_field(t_run_id, sizeof t_run_id, run_id);
  set_field(t_system, sizeof t_system, system);
  if (!run_id) dp_log_scope_step(NULL, NULL);
}

void dp_log_scope_step(const char *layer, const char *entity) {
  set_field(t_layer, sizeof t_layer, layer);
  set_field(t_entity, sizeof t_entity, entity);
}

/* ,"key":"escaped value" or ,"key":null when v is empty. */
static int json_field(dp_buf *b, const char *key, const char *v) {
  int rc = dp_buf_printf(b, ",\"%s\":", key);
  if (rc) return rc;
  if (!*v) return dp_buf_puts(b, "null");
  if ((rc = dp_buf_putc(b, '"')) != 0 || (rc = dp_log_escape(b, v, strlen(v), 1)) != 0) return rc;
  return dp_buf_putc(b, '"');
}

static const char *level_names[] = {"debug", "info", "warn", "error"};

int dp_log_is_json(void) { return g_json; }

int dp_log_level_parse(const char *s, dp_log_level *out) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, level_names[i]) == 0) { *out = (dp_log_level)i; return 0; }
  return DP_EINVAL;
}

int dp_log_configure(const char *level, const char *format) {
  if (level && *level && dp_log_level_parse(level, &g_level) != 0) return DP_EINVAL;
  if (format && *format) {
    if (strcmp(format, "json") == 0) g_json = 1;
    else if (strcmp(format, "text") == 0) g_json = 0;
    else return DP_EINVAL;
  }
  return 0;
}

int dp_log_escape(dp_buf *b, const char *s, size_t len, int json) {
  return dp_json_escape(b, s, len, json ? DP_JSON_ESC_SAFE : DP_JSON_ESC_TEXT);
}

const char *dp_log_shown(const char *s, char *dst, size_t cap) {
  if (cap == 0) return dst;
  size_t len = s ? strlen(s) : 0, at = 0;
  dst[0] = '\0';
  /* each unit is written whole or not at all, so an escape is never cut in half */
  for (size_t i = 0; i < len;) {
    char u[DP_JSON_UNIT_MAX];
    size_t un;
    i += dp_json_escape_unit(s + i, len - i, DP_JSON_ESC_TEXT, u, &un);
    if (at + un >= cap) break;
    memcpy(dst + at, u, un);
    at += un;
    dst[at] = '\0';
  }
  return dst;
}

/* The one writer of log lines: dp_log and dp_log_event. */
static void vlog(dp_log_level level, const char *event, const dp_counts *counts, const char *fmt, va_list ap) {
  int to_sink = t_sink != NULL && level >= DP_LOG_INFO;
  if (level < g_level && !to_sink) return;
  char msg[4096];
  if (dp_redact_count() == 0) {
    vsnprintf(msg, sizeof msg, fmt, ap);
  } else {
    /* formatted whole, redacted, then cut: no half value survives (see redact.h) */
    char *full = NULL;
    int n = vasprintf(&full, fmt, ap);
    if (n < 0) snprintf(msg, sizeof msg, "(log line withheld: out of memory while redacting it)");
    else dp_redact_copy(full, (size_t)n, msg, sizeof msg);
    if (n >= 0) { sodium_memzero(full, (size_t)n); free(full); }
  }
  if (to_sink) {
    dp_log_sink_fn fn = t_sink;
    t_sink = NULL; /* a line logged by the sink itself does not come back to it */
    fn(t_sink_ud, level, msg);
    t_sink = fn;
  }
  if (level < g_level) return;

  struct timeval tv;
  gettimeofday(&tv, NULL);
  char ts[DP_ISO_UTC_MAX];
  dp_iso_utc(ts, (int64_t)tv.tv_sec * 1000000 + tv.tv_usec, 3);
  /* every field is escaped: a file name or a record value with a line break (or a terminal
   * control sequence) in it cannot forge a log line (see log.h) */
  dp_buf b = DP_BUF_INIT;
  int rc;
  if (g_json) {
    /* one schema: every key on every line (docs/cli.md#logs) */
    rc = dp_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, level_names[level]);
    if (!rc) rc = json_field(&b, "event", event ? event : "log");
    if (!rc) rc = dp_buf_puts(&b, ",\"msg\":\"");
    if (!rc) rc = dp_log_escape(&b, msg, strlen(msg), 1);
    if (!rc) rc = dp_buf_putc(&b, '"');
    if (!rc) rc = json_field(&b, "run_id", t_run_id);
    if (!rc) rc = json_field(&b, "system", t_system);
    if (!rc) rc = json_field(&b, "entity", t_entity);
    if (!rc) rc = json_field(&b, "layer", t_layer);
    if (!rc && counts)
      rc = dp_buf_printf(&b, ",\"counts\":{\"in\":%lld,\"inserted\":%lld,\"updated\":%lld,\"deleted\":%lld,"
                             "\"unchanged\":%lld,\"rejected\":%lld}}\n",
                         (long long)counts->in, (long long)counts->inserted, (long long)counts->updated,
                         (long long)counts->deleted, (long long)counts->unchanged, (long long)counts->rejected);
    else if (!rc) rc = dp_buf_puts(&b, ",\"counts\":null}\n");
  } else {
    rc = dp_buf_printf(&b, "%s %-5s ", ts, level_names[level]);
    if (!rc) rc = dp_log_escape(&b, msg, strlen(msg), 0);
    if (!rc) rc = dp_buf_putc(&b, '\n');
  }
  dp_progress_clear_line();
  if (rc == 0) fputs(b.data, stderr);
  else fprintf(stderr, "%s %-5s (log line withheld: out of memory while escaping it)\n", ts, level_names[level]);
  dp_buf_free(&b);
}

void dp_log(dp_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, NULL, NULL, fmt, ap);
  va_end(ap);
}

void dp_log_event(dp_log_level level, const char *event, const dp_counts *counts, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, event, counts, fmt, ap);
  va_end(ap);
}

double dp_monotonic(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}
