/* log.c - leveled logging to stderr, as text or JSON lines. */
#include "log.h"
#include "buf.h"
#include "error.h"
#include "redact.h"

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

static const char *level_names[] = {"debug", "info", "warn", "error"};

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

static void json_escape(dp_buf *b, const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') { dp_buf_putc(b, '\\'); dp_buf_putc(b, (char)c); }
    else if (c == '\n') dp_buf_puts(b, "\\n");
    else if (c == '\t') dp_buf_puts(b, "\\t");
    else if (c < 0x20) dp_buf_printf(b, "\\u%04x", c);
    else dp_buf_putc(b, (char)c);
  }
}

void dp_log(dp_log_level level, const char *fmt, ...) {
  if (level < g_level) return;
  char msg[4096];
  va_list ap;
  va_start(ap, fmt);
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
  va_end(ap);

  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40];
  snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (long)(tv.tv_usec / 1000));
  if (g_json) {
    dp_buf b = DP_BUF_INIT;
    dp_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts, level_names[level]);
    json_escape(&b, msg);
    dp_buf_puts(&b, "\"}\n");
    fputs(b.data, stderr);
    dp_buf_free(&b);
  } else {
    fprintf(stderr, "%s %-5s %s\n", ts, level_names[level], msg);
  }
}

double dp_monotonic(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}
