/* progress.c - see progress.h. */
#include "config.h"
#include "progress.h"
#include "log.h"
#include "runinfo.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct progress {
  int active, tty, drawn;
  char label[300];
  const char *what;
  int64_t n;
  double t0, next, every;
} progress;

static _Thread_local progress cur;

/* DP_LOG_FORMAT and DP_PROGRESS_SECONDS, read once (dp_progress_init). */
static struct {
  int json;        /* JSON logs: never a terminal line */
  int has_every;
  double every;
} settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void read_settings(void) {
  const char *fmt = dp_config_env("DP_LOG_FORMAT");
  settings.json = fmt && strcmp(fmt, "json") == 0;
  const char *every = dp_config_env("DP_PROGRESS_SECONDS");
  settings.has_every = every && *every;
  settings.every = every ? atof(every) : 0;
}

void dp_progress_init(void) { pthread_once(&settings_once, read_settings); }

void dp_progress_begin(const char *layer, const char *system, const char *entity) {
  dp_progress_init();
  memset(&cur, 0, sizeof cur);
  cur.active = 1;
  /* drawn in place only on a terminal: stdout too, so that `run --json | jq` or a redirected
   * summary never has a progress line beside it (docs/cli.md#output) */
  cur.tty = isatty(2) && isatty(1) && !settings.json;
  cur.every = settings.has_every ? settings.every : cur.tty ? 0.5 : 30.0;
  snprintf(cur.label, sizeof cur.label, "%s %s.%s", layer, system, entity);
  cur.what = "records";
  cur.t0 = dp_monotonic();
  cur.next = cur.t0 + cur.every;
}

/* 1234567 -> "1,234,567" */
static void grouped(int64_t v, char *out, size_t cap) {
  char d[32];
  int n = snprintf(d, sizeof d, "%lld", (long long)(v < 0 ? -v : v));
  size_t k = 0;
  if (v < 0 && k + 1 < cap) out[k++] = '-';
  for (int i = 0; i < n && k + 2 < cap; i++) {
    out[k++] = d[i];
    if ((n - i - 1) % 3 == 0 && i + 1 < n) out[k++] = ',';
  }
  out[k] = '\0';
}

void dp_progress_add(int64_t n, const char *what) {
  if (!cur.active) return;
  if (what != cur.what) { /* a new phase counts from zero */
    cur.what = what;
    cur.n = 0;
    cur.t0 = dp_monotonic();
  }
  cur.n += n;
  double t = dp_monotonic();
  if (t < cur.next) return;
  cur.next = t + cur.every;
  char a[40], b[40];
  grouped(cur.n, a, sizeof a);
  grouped((int64_t)(cur.n / (t - cur.t0 > 1e-6 ? t - cur.t0 : 1e-6)), b, sizeof b);
  if (cur.tty) {
    fprintf(stderr, "\r\033[K%s: %s %s (%s/s)", cur.label, a, cur.what, b);
    fflush(stderr);
    cur.drawn = 1;
  } else {
    dp_counts c = {.in = cur.n};
    dp_log_event(DP_LOG_INFO, "progress", &c, "%s: %s %s so far (%s/s)", cur.label, a, cur.what, b);
  }
}

void dp_progress_clear_line(void) {
  if (cur.active && cur.drawn) {
    fputs("\r\033[K", stderr);
    cur.drawn = 0;
    cur.next = 0; /* redraw at the next update */
  }
}

void dp_progress_end(void) {
  if (cur.active && cur.drawn) {
    fputs("\r\033[K", stderr);
    fflush(stderr);
  }
  cur.active = 0;
}
