/* retention_job.c - serve's daily retention job (see retention_job.h). */
#include "retention_job.h"
#include "engine.h"
#include "json.h"
#include "log.h"
#include "retention.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dp_retention_job {
  uv_timer_t timer;
  uv_work_t work;
  int minute_of_day;  /* 0..1439, UTC */
  int64_t clock_offset;
  int running, stopped;
  int rc, failed;
  dp_buf report;
  char error[512];
};

static int64_t now_s(const dp_retention_job *j) { return (int64_t)time(NULL) + j->clock_offset; }

/* Milliseconds until the next HH:MM UTC after now (a full day when it is now). */
static uint64_t until_next(const dp_retention_job *j) {
  int64_t now = now_s(j), day = now - now % 86400, at = day + (int64_t)j->minute_of_day * 60;
  if (at <= now) at += 86400;
  return (uint64_t)(at - now) * 1000;
}

static void work_run(uv_work_t *w) {
  dp_retention_job *j = w->data;
  dp_engine eng;
  memset(&eng, 0, sizeof eng);
  dp_err e;
  dp_err_clear(&e);
  j->failed = 0;
  dp_buf_reset(&j->report);
  j->rc = dp_config_from_env(&eng.cfg, &e);
  if (j->rc == 0) {
    dp_retention_opts o = {NULL, 0, 0};
    j->rc = dp_retention_run(&eng, &o, &j->report, &j->failed, &e);
  }
  dp_utf8_copy(j->error, sizeof j->error, j->rc ? e.msg : "");
  dp_engine_close(&eng);
}

static void on_timer(uv_timer_t *t);

static void on_closed(uv_handle_t *h) { free(h->data); }

static void work_done(uv_work_t *w, int status) {
  dp_retention_job *j = w->data;
  j->running = 0;
  if (status == 0 && j->rc)
    dp_log(DP_LOG_ERROR, "serve: retention failed: %s", j->error);
  else if (status == 0) { /* one log line per line of the report */
    dp_log(j->failed ? DP_LOG_WARN : DP_LOG_INFO, "serve: retention %s", j->failed ? "partly failed" : "done");
    for (char *line = j->report.data, *nl; line && *line; line = nl ? nl + 1 : NULL) {
      nl = strchr(line, '\n');
      if (nl) *nl = '\0';
      if (*line) dp_log(j->failed ? DP_LOG_WARN : DP_LOG_INFO, "serve: retention: %s", line);
    }
  }
  dp_buf_free(&j->report);
  if (j->stopped) { /* serve's final walk may have closed the timer already (then j stays) */
    if (!uv_is_closing((uv_handle_t *)&j->timer)) uv_close((uv_handle_t *)&j->timer, on_closed);
    return;
  }
  uv_timer_start(&j->timer, on_timer, until_next(j), 0);
}

static void on_timer(uv_timer_t *t) {
  dp_retention_job *j = t->data;
  if (j->running || j->stopped) return;
  j->running = 1;
  dp_log(DP_LOG_INFO, "serve: daily retention starts");
  if (uv_queue_work(t->loop, &j->work, work_run, work_done) != 0) {
    j->running = 0;
    uv_timer_start(&j->timer, on_timer, until_next(j), 0);
  }
}

int dp_retention_job_start(uv_loop_t *loop, const char *at, int64_t clock_offset, dp_retention_job **out, dp_err *e) {
  *out = NULL;
  if (!at || !*at) at = "03:00";
  if (strcmp(at, "off") == 0) return 0;
  int hh, mm;
  char tail;
  if (sscanf(at, "%2d:%2d%c", &hh, &mm, &tail) != 2 || hh < 0 || hh > 23 || mm < 0 || mm > 59 || strlen(at) != 5)
    return dp_err_set(e, DP_ECONFIG, "DP_RETENTION_AT must be HH:MM (UTC) or off, not %s", at);
  dp_retention_job *j = calloc(1, sizeof *j);
  if (!j) return dp_err_set(e, DP_ENOMEM, "out of memory");
  j->minute_of_day = hh * 60 + mm;
  j->clock_offset = clock_offset;
  j->work.data = j;
  uv_timer_init(loop, &j->timer);
  j->timer.data = j;
  uv_timer_start(&j->timer, on_timer, until_next(j), 0);
  *out = j;
  return 0;
}

void dp_retention_job_stop(dp_retention_job *j) {
  if (!j || j->stopped) return;
  j->stopped = 1;
  uv_timer_stop(&j->timer);
  if (!j->running) uv_close((uv_handle_t *)&j->timer, on_closed);
}
