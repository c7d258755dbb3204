/* serve.c - dp-engine serve (see serve.h and docs/triggers.md).
 *
 * Threads: the loop thread owns the snapshot, the timers, the watches, the HTTP server and the
 * metrics. Worker threads take jobs from the queue; the queue and the per-target state (running,
 * waiting job) are shared under `mu`. A finished job goes back to the loop through `done_async`.
 * API reads that need PostgreSQL run on libuv's thread pool with a connection each from a small
 * pool, so the loop never blocks on a database. */
#include "config.h"
#include "serve.h"
#include "retention_job.h"
#include "version.h"
#include "audit.h"
#include "buf.h"
#include "cron.h"
#include "goldrun.h"
#include "httpd.h"
#include "json.h"
#include "log.h"
#include "metastore.h"
#include "pg.h"
#include "prefect.h"
#include "run.h"
#include "runinfo.h"
#include "snapshot.h"
#include "uuid.h"
#include "webui.h"

#include <bson/bson.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <lua.h>


#define BUSY_RETRY_S 5

/* The status page: scripts and styles from this origin only; no framing, no referrer. */
#define PAGE_HEADERS                                                                                     \
  "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " \
  "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'\r\n"                \
  "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"


/* ---- jobs and per-target state ------------------------------------------------------------- */

typedef struct job {
  struct job *next;
  int is_gold;
  char *target;
  char run_id[37];
  char flow_run_id[37]; /* Prefect: the flow run created when it was queued (= run_id), or "" */
  const char *trigger;  /* static: "schedule", "file", "after", "callback", "api" */
  char *detail;         /* what fired it */
  char *event;          /* callback body (JSON), or NULL */
  char **entities;      /* NULL: all enabled */
  int nentities;
  unsigned layers;
  int full_refresh;
  double not_before;    /* monotonic seconds: a busy retry waits */
  dp_snapshot *snap;    /* the version it runs on (a reference), taken when it starts */
  /* results */
  int rc, failed, busy;
  char status[16];
  double started, seconds;
  char error[512];
  dp_counts layer_counts[4]; /* raw, bronze, silver, gold */
  struct serve *srv;         /* for the Prefect step of submit() */
  dp_httpd_conn *conn;       /* the API request waiting for the run id, or NULL */
  char **ok_entities;        /* "system.entity" of the silver loads that succeeded */
  int nok;
  double ok_at;              /* when (unix seconds) */
} job;

typedef struct tstate {
  char *key;    /* "s:NAME" or "g:NAME" */
  int running;
  char running_id[37]; /* the run id of the running job */
  job *waiting; /* queued, not started (at most one) */
} tstate;

typedef struct armed {
  struct serve *srv;
  const dp_snap_target *target;
  const dp_trigger *trig;
  uv_timer_t timer;     /* schedule: next slot; file: settle */
  dp_cron cron;
  dp_tz *tz;
  int64_t slot;         /* schedule: the slot the timer is armed for */
  int wd;               /* file: inotify watch */
  char last_file[256];
  int closing;
} armed;

typedef struct metrics_sys {
  char *system;
  uint64_t runs[4];     /* succeeded, partial, failed, busy */
  uint64_t hist[9];     /* cumulative buckets below */
  double sum;
  uint64_t count;
  double last_success;  /* unix seconds, 0 = none */
} metrics_sys;

static const double BUCKETS[8] = {1, 5, 15, 60, 300, 900, 3600, 14400};
static const char *LAYERS[4] = {"raw", "bronze", "silver", "gold"};

typedef struct serve {
  uv_loop_t loop;
  dp_config *cfg;
  dp_snapshot *snap;
  dp_httpd *http;
  char token_hash[crypto_generichash_BYTES];
  int have_token;
  char session[2 * crypto_generichash_BYTES + 1]; /* the status page's cookie: derived from the token */
  size_t max_body;
  double settle_ms, grace_s;
  int64_t clock_offset;    /* DP_TEST_NOW: seconds added to the wall clock */
  /* workers */
  int nworkers;
  uv_thread_t *threads;
  uv_mutex_t mu;
  uv_cond_t cv;
  job *queue;              /* FIFO */
  job *done;
  tstate *ts;
  size_t nts, capts;
  int stopping;            /* workers take no new job */
  int nrunning;
  uv_async_t done_async;
  /* triggers */
  armed **armed;
  size_t narmed;
  int ifd;                 /* inotify */
  uv_poll_t ipoll;
  int reload_wds[3];
  int prefect;             /* PREFECT_API_URL is set: queued runs get their flow run first */
  int reloading, reload_again; /* a reload is being loaded; another change came meanwhile */
  const char *listen;      /* DP_LISTEN */
  int inflight;            /* API requests on the thread pool (shutdown waits for them) */
  double health_at;        /* when the cached /health answer was made (monotonic), 0: none */
  int health_status;
  dp_buf health_body;
  uv_timer_t reload_timer, tick_timer, grace_timer, poll_timer;
  double poll_s;           /* DP_METADATA=mongo: seconds between looks at the pushed set's hash */
  int polling;             /* a look is under way */
  uv_signal_t sig_term, sig_int, sig_hup;
  char *reload_error;
  uint64_t reload_errors;
  int shutting_down;
  /* metrics (loop thread) */
  metrics_sys *ms;
  size_t nms;
  uint64_t records[4][6];
  char **ent_names;        /* "system\0entity" pairs flattened as "system.entity" */
  double *ent_success;
  size_t nent;
  dp_retention_job *retention; /* the daily retention (DP_RETENTION_AT), or NULL when off */
  /* connection pool for API reads (thread pool) */
  PGconn *pool[8];
  int npool;
} serve;

static double now_wall(const serve *s) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9 + (double)s->clock_offset;
}

static void iso_time(int64_t t, char out[32]) {
  time_t tt = (time_t)t;
  struct tm tm;
  gmtime_r(&tt, &tm);
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void job_free(job *j) {
  if (!j) return;
  free(j->target);
  free(j->detail);
  free(j->event);
  for (int i = 0; i < j->nentities; i++) free(j->entities[i]);
  free(j->entities);
  for (int i = 0; i < j->nok; i++) free(j->ok_entities[i]);
  free(j->ok_entities);
  dp_snapshot_unref(j->snap);
  free(j);
}

/* under mu */
static tstate *state_of(serve *s, int is_gold, const char *name) {
  char key[300];
  snprintf(key, sizeof key, "%c:%s", is_gold ? 'g' : 's', name);
  for (size_t i = 0; i < s->nts; i++)
    if (strcmp(s->ts[i].key, key) == 0) return &s->ts[i];
  if (s->nts == s->capts) {
    size_t cap = s->capts ? s->capts * 2 : 16;
    tstate *n = realloc(s->ts, cap * sizeof *n);
    if (!n) return NULL;
    s->ts = n;
    s->capts = cap;
  }
  tstate *t = &s->ts[s->nts++];
  memset(t, 0, sizeof *t);
  t->key = strdup(key);
  return t;
}

/* under mu */
static void queue_push(serve *s, job *j) {
  j->next = NULL;
  job **p = &s->queue;
  while (*p) p = &(*p)->next;
  *p = j;
}

/* Merges what a new trigger asks for into a waiting job: all entities when either asks for all,
 * every layer either asks for, a full refresh when either does. */
static void widen(job *w, const job *j) {
  if (w->nentities && !j->nentities) { /* one asks for all */
    for (int i = 0; i < w->nentities; i++) free(w->entities[i]);
    free(w->entities);
    w->entities = NULL;
    w->nentities = 0;
  } else if (w->nentities) { /* both name entities: every one either names */
    for (int k = 0; k < j->nentities; k++) {
      int have = 0;
      for (int i = 0; i < w->nentities && !have; i++) have = strcmp(w->entities[i], j->entities[k]) == 0;
      if (have) continue;
      char **n = realloc(w->entities, (size_t)(w->nentities + 1) * sizeof *n);
      char *name = n ? strdup(j->entities[k]) : NULL;
      if (n) w->entities = n;
      if (!name) continue;
      w->entities[w->nentities++] = name;
    }
  }
  w->layers |= j->layers;
  w->full_refresh |= j->full_refresh;
}

/* Queues j (taking it) unless its target already waits, in which case j is merged into the
 * waiting job and freed. A callback's job carries its own event (ctx.event): it is never merged
 * and never stands in for others; it waits in the queue and runs in turn. Writes the run id of the job that will run into run_id. Returns 1 when
 * queued anew, 0 when merged. */
static int enqueue(serve *s, job *j, char run_id[37]) {
  uv_mutex_lock(&s->mu);
  tstate *t = state_of(s, j->is_gold, j->target);
  int fresh = 1;
  if (t && t->waiting && !j->event) {
    widen(t->waiting, j);
    snprintf(run_id, 37, "%s", t->waiting->run_id);
    fresh = 0;
  } else {
    if (t && !j->event) t->waiting = j;
    queue_push(s, j);
    snprintf(run_id, 37, "%s", j->run_id);
    uv_cond_signal(&s->cv);
  }
  uv_mutex_unlock(&s->mu);
  if (fresh) {
    dp_log(DP_LOG_INFO, "serve: queued %s %s (%s%s%s), run %s", j->is_gold ? "gold model" : "system", j->target,
           j->trigger, j->detail ? ": " : "", j->detail ? j->detail : "", j->run_id);
  } else {
    dp_log(DP_LOG_INFO, "serve: %s %s already waits (run %s); %s trigger merged into it",
           j->is_gold ? "gold model" : "system", j->target, run_id, j->trigger);
    job_free(j);
  }
  return fresh;
}

static job *new_job(int is_gold, const char *target, const char *trigger, const char *detail) {
  job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->is_gold = is_gold;
  j->target = strdup(target);
  j->trigger = trigger;
  j->detail = detail ? strdup(detail) : NULL;
  j->layers = DP_LAYER_ALL;
  uint8_t id[16];
  dp_uuid_v7(id);
  dp_uuid_format(id, j->run_id);
  return j;
}

static void respond_queued(dp_httpd_conn *c, const char *run_id, int fresh);
static void maybe_finish_shutdown(serve *s);

/* ---- Prefect: a queued run's flow run is created first, so its id is the run id ------------- */

static void cancel_run(uv_work_t *w) {
  job *j = w->data;
  char msg[120];
  snprintf(msg, sizeof msg, "merged into the waiting run %s before it started", j->run_id);
  dp_prefect_set_flow_state(j->flow_run_id, "CANCELLED", msg);
}

static void cancel_done(uv_work_t *w, int status) {
  (void)status;
  job_free(w->data);
  free(w);
}

static void create_flow_run(uv_work_t *w) {
  job *j = w->data;
  char flow[300];
  snprintf(flow, sizeof flow, "dp-engine.%s%s", j->is_gold ? "gold." : "", j->target);
  dp_buf params = DP_BUF_INIT;
  if (!j->is_gold) {
    static const char *names[] = {"raw", "bronze", "silver"};
    dp_buf_puts(&params, "{\"entities\":[");
    for (int i = 0; i < j->nentities; i++) {
      if (i) dp_buf_putc(&params, ',');
      dp_json_put_string(&params, j->entities[i], strlen(j->entities[i]));
    }
    dp_buf_puts(&params, "],\"layers\":[");
    for (int l = 0, k = 0; l < 3; l++)
      if (j->layers & (1u << l)) dp_buf_printf(&params, "%s\"%s\"", k++ ? "," : "", names[l]);
    dp_buf_printf(&params, "],\"full_refresh\":%s}", j->full_refresh ? "true" : "false");
  }
  dp_prefect_flow f = {flow, j->target, j->trigger, params.data, 0, 0, NULL};
  char id[37];
  dp_err e;
  if (dp_prefect_create_pending(&f, id, &e) == 0) {
    snprintf(j->flow_run_id, sizeof j->flow_run_id, "%s", id);
    snprintf(j->run_id, sizeof j->run_id, "%s", id);
  } else if (e.code != DP_ENOTFOUND) {
    dp_log(DP_LOG_WARN, "prefect: no flow run for the queued run of %s (%s): it keeps its own id %s", j->target,
           e.msg, j->run_id);
  }
  dp_buf_free(&params);
}

static void flow_run_created(uv_work_t *w, int status) {
  job *j = w->data;
  serve *s = j->srv;
  dp_httpd_conn *c = j->conn;
  (void)status;
  free(w);
  j->conn = NULL;
  s->inflight--;
  if (s->shutting_down) {
    if (c) dp_httpd_error(c, 503, "shutting down");
    if (j->flow_run_id[0]) dp_prefect_set_flow_state(j->flow_run_id, "CANCELLED", "dp-engine serve shut down");
    job_free(j);
    maybe_finish_shutdown(s);
    return;
  }
  char flow_run[37];
  snprintf(flow_run, sizeof flow_run, "%s", j->flow_run_id);
  char id[37];
  uv_mutex_lock(&s->mu);
  tstate *t = state_of(s, j->is_gold, j->target);
  int merged = t && t->waiting;
  uv_mutex_unlock(&s->mu);
  if (merged && flow_run[0]) { /* another trigger queued it meanwhile: this flow run never runs */
    job *copy = calloc(1, sizeof *copy);
    uv_work_t *cw = calloc(1, sizeof *cw);
    if (copy && cw) {
      snprintf(copy->flow_run_id, sizeof copy->flow_run_id, "%s", flow_run);
      uv_mutex_lock(&s->mu);
      snprintf(copy->run_id, sizeof copy->run_id, "%s", t->waiting ? t->waiting->run_id : "");
      uv_mutex_unlock(&s->mu);
      cw->data = copy;
      uv_queue_work(&s->loop, cw, cancel_run, cancel_done);
    } else {
      free(copy);
      free(cw);
    }
  }
  int fresh = enqueue(s, j, id);
  if (c) respond_queued(c, id, fresh);
}

/* Queues j (see enqueue) and answers c (when not NULL) with the run id. With Prefect, a job that
 * does not merge into a waiting one gets its flow run created first, on the thread pool. */
static void submit(serve *s, job *j, dp_httpd_conn *c) {
  char id[37];
  if (s->prefect) {
    uv_mutex_lock(&s->mu);
    tstate *t = state_of(s, j->is_gold, j->target);
    int waiting = t && t->waiting;
    uv_mutex_unlock(&s->mu);
    uv_work_t *w = waiting ? NULL : calloc(1, sizeof *w);
    if (w) {
      j->srv = s;
      j->conn = c;
      w->data = j;
      s->inflight++;
      uv_queue_work(&s->loop, w, create_flow_run, flow_run_created);
      return;
    }
  }
  int fresh = enqueue(s, j, id);
  if (c) respond_queued(c, id, fresh);
}

static void fire(serve *s, int is_gold, const char *target, const char *trigger, const char *detail) {
  if (s->shutting_down) return;
  job *j = new_job(is_gold, target, trigger, detail);
  if (j) submit(s, j, NULL);
}

/* ---- workers -------------------------------------------------------------------------------- */

typedef struct worker {
  serve *srv;
  int index;
} worker;

/* under mu: the first job that may start now */
static job *take(serve *s) {
  double now = dp_monotonic();
  for (job **p = &s->queue; *p; p = &(*p)->next) {
    job *j = *p;
    tstate *t = state_of(s, j->is_gold, j->target);
    if ((t && t->running) || j->not_before > now) continue;
    *p = j->next;
    j->next = NULL;
    if (t) {
      if (t->waiting == j) t->waiting = NULL;
      t->running = 1;
      snprintf(t->running_id, sizeof t->running_id, "%s", j->run_id);
    }
    j->snap = dp_snapshot_ref(s->snap);
    s->nrunning++;
    return j;
  }
  return NULL;
}

/* Sums of the run's audit counts per layer, for the metrics. */
static void collect_counts(dp_engine *eng, job *j) {
  const char *p[] = {j->run_id};
  PGresult *r = NULL;
  dp_err e;
  if (!eng->audit) return;
  if (dp_pg_exec(eng->audit,
                 "SELECT layer, sum(records_in), sum(records_inserted), sum(records_updated), sum(records_deleted),"
                 " sum(records_unchanged), sum(records_rejected) FROM audit.entity_layer_run WHERE run_id::text = $1"
                 " GROUP BY layer",
                 1, p, &r, &e) != 0)
    return;
  for (int i = 0; i < PQntuples(r); i++) {
    for (int l = 0; l < 4; l++) {
      if (strcmp(PQgetvalue(r, i, 0), LAYERS[l]) != 0) continue;
      int64_t *c = &j->layer_counts[l].in;
      for (int k = 0; k < 6; k++) c[k] = strtoll(PQgetvalue(r, i, k + 1), NULL, 10);
    }
  }
  PQclear(r);
  if (dp_pg_exec(eng->audit,
                 "SELECT system || '.' || entity, extract(epoch FROM ended_at) FROM audit.entity_layer_run"
                 " WHERE run_id::text = $1 AND layer = 'silver' AND status = 'succeeded'",
                 1, p, &r, &e) != 0)
    return;
  int n = PQntuples(r);
  j->ok_entities = calloc((size_t)n + 1, sizeof *j->ok_entities);
  for (int i = 0; j->ok_entities && i < n; i++) {
    j->ok_entities[j->nok++] = strdup(PQgetvalue(r, i, 0));
    j->ok_at = atof(PQgetvalue(r, i, 1));
  }
  PQclear(r);
}

static void run_job(dp_engine *eng, job *j) {
  dp_err e;
  dp_err_clear(&e);
  eng->meta = &j->snap->meta;
  j->started = dp_monotonic();
  if (j->is_gold) {
    const char *models[1] = {j->target};
    dp_gold_opts go = {.trigger = j->trigger, .trigger_detail = j->detail, .run_id = j->run_id, .only_named = 1,
                       .prefect_flow_run_id = j->flow_run_id[0] ? j->flow_run_id : NULL,
                       .full_refresh = j->full_refresh};
    j->rc = dp_gold_run(eng, models, 1, NULL, &go, &j->failed, &e);
  } else {
    dp_run_opts o;
    memset(&o, 0, sizeof o);
    o.entities = (const char **)j->entities;
    o.nentities = j->nentities;
    o.layers = j->layers;
    o.trigger = j->trigger;
    o.trigger_detail = j->detail;
    o.event = j->event;
    o.run_id = j->run_id;
    o.prefect_flow_run_id = j->flow_run_id[0] ? j->flow_run_id : NULL;
    o.full_refresh = j->full_refresh;
    j->rc = dp_run_system(eng, j->target, &o, &j->failed, &e);
  }
  j->seconds = dp_monotonic() - j->started;
  j->busy = j->rc == DP_EBUSY;
  snprintf(j->status, sizeof j->status, "%s",
           j->busy ? "busy" : j->rc == 0 ? "succeeded" : strstr(e.msg, " partial:") ? "partial" : "failed");
  if (j->rc) dp_utf8_copy(j->error, sizeof j->error, e.msg);
  if (!j->busy) collect_counts(eng, j);
  eng->meta = NULL;
}

/* Between jobs: a fresh Lua state (nothing a script left behind carries over to the next run);
 * the connections stay open unless a run left one in a transaction or broken. */
static void reset_engine(dp_engine *eng) {
  if (eng->L) lua_close(eng->L);
  eng->L = NULL;
  PGconn **pgs[2] = {&eng->audit, &eng->data};
  for (int i = 0; i < 2; i++) {
    PGconn *c = *pgs[i];
    if (c && (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE)) {
      PQfinish(c);
      *pgs[i] = NULL;
    }
  }
}

static void worker_main(void *arg) {
  worker *w = arg;
  serve *s = w->srv;
  dp_engine eng;
  memset(&eng, 0, sizeof eng);
  dp_err e;
  if (dp_config_from_env(&eng.cfg, &e) != 0) {
    dp_log(DP_LOG_ERROR, "serve: worker %d: %s", w->index, e.msg);
    return;
  }
  for (;;) {
    uv_mutex_lock(&s->mu);
    job *j = NULL;
    while (!s->stopping && !(j = take(s))) uv_cond_wait(&s->cv, &s->mu);
    uv_mutex_unlock(&s->mu);
    if (!j) break;
    dp_log(DP_LOG_INFO, "serve: worker %d runs %s %s (run %s)", w->index, j->is_gold ? "gold model" : "system",
           j->target, j->run_id);
    run_job(&eng, j);
    reset_engine(&eng);
    uv_mutex_lock(&s->mu);
    tstate *t = state_of(s, j->is_gold, j->target);
    if (t) t->running = 0;
    s->nrunning--;
    j->next = s->done;
    s->done = j;
    uv_cond_broadcast(&s->cv);
    uv_mutex_unlock(&s->mu);
    uv_async_send(&s->done_async);
  }
  dp_engine_close(&eng);
}

/* ---- metrics -------------------------------------------------------------------------------- */

static metrics_sys *metrics_for(serve *s, const char *system) {
  for (size_t i = 0; i < s->nms; i++)
    if (strcmp(s->ms[i].system, system) == 0) return &s->ms[i];
  metrics_sys *n = realloc(s->ms, (s->nms + 1) * sizeof *n);
  if (!n) return NULL;
  s->ms = n;
  memset(&n[s->nms], 0, sizeof *n);
  n[s->nms].system = strdup(system);
  return &n[s->nms++];
}

static void entity_success(serve *s, const char *name, double t) {
  for (size_t i = 0; i < s->nent; i++) {
    if (strcmp(s->ent_names[i], name) == 0) {
      if (t > s->ent_success[i]) s->ent_success[i] = t;
      return;
    }
  }
  char **nn = realloc(s->ent_names, (s->nent + 1) * sizeof *nn);
  double *ns = nn ? realloc(s->ent_success, (s->nent + 1) * sizeof *ns) : NULL;
  if (nn) s->ent_names = nn;
  if (!ns) return;
  s->ent_success = ns;
  s->ent_names[s->nent] = strdup(name);
  s->ent_success[s->nent++] = t;
}

/* Last successes from the audit, at start (loop thread; a short blocking query). */
static void load_last_success(serve *s) {
  dp_err e;
  PGconn *c = dp_pg_connect(s->cfg->postgres_url, &e);
  if (!c) return;
  PGresult *r = NULL;
  if (dp_pg_exec(c,
                 "SELECT system, extract(epoch FROM max(started_at)) FROM audit.system_run WHERE status = 'succeeded'"
                 " GROUP BY system",
                 0, NULL, &r, &e) == 0) {
    for (int i = 0; i < PQntuples(r); i++) {
      metrics_sys *m = metrics_for(s, PQgetvalue(r, i, 0));
      if (m) m->last_success = atof(PQgetvalue(r, i, 1));
    }
    PQclear(r);
  }
  if (dp_pg_exec(c,
                 "SELECT system || '.' || entity, extract(epoch FROM max(ended_at)) FROM audit.entity_layer_run"
                 " WHERE layer = 'silver' AND status = 'succeeded' GROUP BY system, entity",
                 0, NULL, &r, &e) == 0) {
    for (int i = 0; i < PQntuples(r); i++) entity_success(s, PQgetvalue(r, i, 0), atof(PQgetvalue(r, i, 1)));
    PQclear(r);
  }
  PQfinish(c);
}

/* Prometheus label values: backslash, quote and newline escaped. */
static void put_label(dp_buf *b, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"') dp_buf_putc(b, '\\');
    if (*v == '\n') {
      dp_buf_puts(b, "\\n");
      continue;
    }
    dp_buf_putc(b, *v);
  }
}

static void render_metrics(serve *s, dp_buf *b) {
  static const char *STATUS[4] = {"succeeded", "partial", "failed", "busy"};
  static const char *KINDS[6] = {"in", "inserted", "updated", "deleted", "unchanged", "rejected"};
  dp_buf_puts(b, "# HELP dp_runs_total Runs finished since serve started, by system and status.\n"
                 "# TYPE dp_runs_total counter\n");
  for (size_t i = 0; i < s->nms; i++)
    for (int k = 0; k < 4; k++) {
      dp_buf_puts(b, "dp_runs_total{system=\"");
      put_label(b, s->ms[i].system);
      dp_buf_printf(b, "\",status=\"%s\"} %" PRIu64 "\n", STATUS[k], s->ms[i].runs[k]);
    }
  dp_buf_puts(b, "# HELP dp_records_total Records processed since serve started, by layer and kind.\n"
                 "# TYPE dp_records_total counter\n");
  for (int l = 0; l < 4; l++)
    for (int k = 0; k < 6; k++)
      dp_buf_printf(b, "dp_records_total{layer=\"%s\",kind=\"%s\"} %" PRIu64 "\n", LAYERS[l], KINDS[k],
                    s->records[l][k]);
  dp_buf_puts(b, "# HELP dp_last_success_timestamp_seconds When the last successful run of a system (or silver "
                 "load of an entity) started.\n# TYPE dp_last_success_timestamp_seconds gauge\n");
  for (size_t i = 0; i < s->nms; i++) {
    if (s->ms[i].last_success <= 0) continue;
    dp_buf_puts(b, "dp_last_success_timestamp_seconds{system=\"");
    put_label(b, s->ms[i].system);
    dp_buf_printf(b, "\"} %.3f\n", s->ms[i].last_success);
  }
  for (size_t i = 0; i < s->nent; i++) {
    const char *dot = strchr(s->ent_names[i], '.');
    if (!dot) continue;
    dp_buf_puts(b, "dp_last_success_timestamp_seconds{system=\"");
    dp_buf_append(b, s->ent_names[i], (size_t)(dot - s->ent_names[i]));
    dp_buf_puts(b, "\",entity=\"");
    put_label(b, dot + 1);
    dp_buf_printf(b, "\"} %.3f\n", s->ent_success[i]);
  }
  dp_buf_puts(b, "# HELP dp_run_duration_seconds Duration of finished runs.\n# TYPE dp_run_duration_seconds histogram\n");
  for (size_t i = 0; i < s->nms; i++) {
    metrics_sys *m = &s->ms[i];
    for (int k = 0; k <= 8; k++) {
      dp_buf_puts(b, "dp_run_duration_seconds_bucket{system=\"");
      put_label(b, m->system);
      if (k < 8) dp_buf_printf(b, "\",le=\"%g\"} %" PRIu64 "\n", BUCKETS[k], m->hist[k]);
      else dp_buf_printf(b, "\",le=\"+Inf\"} %" PRIu64 "\n", m->count);
    }
    dp_buf_puts(b, "dp_run_duration_seconds_sum{system=\"");
    put_label(b, m->system);
    dp_buf_printf(b, "\"} %.3f\n", m->sum);
    dp_buf_puts(b, "dp_run_duration_seconds_count{system=\"");
    put_label(b, m->system);
    dp_buf_printf(b, "\"} %" PRIu64 "\n", m->count);
  }
  uv_mutex_lock(&s->mu);
  int queued = 0, running = s->nrunning;
  for (job *j = s->queue; j; j = j->next) queued++;
  uv_mutex_unlock(&s->mu);
  dp_buf_printf(b, "# HELP dp_runs_queued Runs waiting for a worker.\n# TYPE dp_runs_queued gauge\ndp_runs_queued %d\n"
                   "# HELP dp_runs_running Runs executing now.\n# TYPE dp_runs_running gauge\ndp_runs_running %d\n"
                   "# HELP dp_reload_errors_total Reloads refused because something did not load.\n"
                   "# TYPE dp_reload_errors_total counter\ndp_reload_errors_total %" PRIu64 "\n",
                queued, running, s->reload_errors);
}

/* ---- after a job ---------------------------------------------------------------------------- */

/* Whether the gold model depends on what finished (a system: any of its entities; a model). */
static int depends_on(const dp_snap_target *g, const job *j) {
  size_t n = strlen(j->target);
  for (size_t k = 0; k < g->ndepends; k++) {
    const char *d = g->depends_on[k];
    if (j->is_gold ? strcmp(d, j->target) == 0 : (strncmp(d, j->target, n) == 0 && d[n] == '.')) return 1;
  }
  return 0;
}

static void fire_dependants(serve *s, const job *j) {
  char detail[400];
  snprintf(detail, sizeof detail, "%s run %s", j->target, j->run_id);
  for (size_t i = 0; i < s->snap->ntargets; i++) {
    const dp_snap_target *t = &s->snap->targets[i];
    if (!t->enabled) continue;
    int fires = t->is_gold && depends_on(t, j);
    for (size_t k = 0; k < t->ntriggers && !fires; k++)
      fires = t->triggers[k].kind == DP_TRIG_AFTER && t->triggers[k].upstream &&
              strcmp(t->triggers[k].upstream, j->target) == 0;
    if (fires) fire(s, t->is_gold, t->name, "after", detail);
  }
}


static void on_done(uv_async_t *a) {
  serve *s = a->data;
  uv_mutex_lock(&s->mu);
  job *list = s->done;
  s->done = NULL;
  uv_mutex_unlock(&s->mu);
  while (list) {
    job *j = list;
    list = j->next;
    if (j->busy && !s->shutting_down) {
      /* another process runs it: wait and retry, still queued once */
      dp_log(DP_LOG_INFO, "serve: %s is running elsewhere; retrying in %d s", j->target, BUSY_RETRY_S);
      metrics_sys *m = metrics_for(s, j->target);
      if (m) m->runs[3]++;
      dp_snapshot_unref(j->snap);
      j->snap = NULL;
      j->busy = 0;
      j->not_before = dp_monotonic() + BUSY_RETRY_S;
      /* its run id was answered already: it runs under that id. When a newer trigger waits
       * already, both run, in turn (neither id may vanish from the audit). */
      uv_mutex_lock(&s->mu);
      tstate *t = state_of(s, j->is_gold, j->target);
      if (t && !t->waiting && !j->event) t->waiting = j;
      queue_push(s, j);
      uv_mutex_unlock(&s->mu);
      continue;
    }
    dp_log(j->rc ? DP_LOG_WARN : DP_LOG_INFO, "serve: %s %s %s in %.2f s (run %s)%s%s",
           j->is_gold ? "gold model" : "system", j->target, j->status, j->seconds, j->run_id,
           j->rc ? ": " : "", j->rc ? j->error : "");
    metrics_sys *m = metrics_for(s, j->target);
    if (m && !j->busy) {
      int k = strcmp(j->status, "succeeded") == 0 ? 0 : strcmp(j->status, "partial") == 0 ? 1 : 2;
      m->runs[k]++;
      m->count++;
      m->sum += j->seconds;
      for (int b = 0; b < 8; b++)
        if (j->seconds <= BUCKETS[b]) m->hist[b]++;
      if (k == 0) m->last_success = now_wall(s) - j->seconds;
    }
    for (int l = 0; l < 4; l++) {
      int64_t *c = &j->layer_counts[l].in;
      for (int k = 0; k < 6; k++) s->records[l][k] += (uint64_t)c[k];
    }
    for (int k = 0; k < j->nok; k++) entity_success(s, j->ok_entities[k], j->ok_at);
    if (j->rc == 0 && !s->shutting_down) fire_dependants(s, j);
    job_free(j);
  }
  maybe_finish_shutdown(s);
}

/* ---- schedule and file triggers --------------------------------------------------------------- */

static void arm_schedule(armed *a, int64_t after);

static void on_schedule(uv_timer_t *t) {
  armed *a = t->data;
  serve *s = a->srv;
  int64_t now = (int64_t)now_wall(s);
  if (now + 1 < a->slot) { /* woke early (long waits are re-armed hourly): not yet */
    arm_schedule(a, now - 1);
    return;
  }
  char slot[32];
  iso_time(a->slot, slot);
  fire(s, a->target->is_gold, a->target->name, "schedule", slot);
  arm_schedule(a, a->slot);
}

/* Arms the timer for the first slot after `after`. */
static void arm_schedule(armed *a, int64_t after) {
  int64_t next;
  if (dp_cron_next(&a->cron, a->tz, after, &next) != 0) {
    dp_log(DP_LOG_WARN, "serve: %s: schedule \"%s\" never fires", a->target->name, a->trig->cron);
    return;
  }
  a->slot = next;
  double wait = (double)next - now_wall(a->srv);
  if (wait < 0) wait = 0;
  if (wait > 3600) wait = 3600; /* re-check hourly: the wall clock may have been set */
  uv_timer_start(&a->timer, on_schedule, (uint64_t)(wait * 1000) + 1, 0);
}

static void on_settled(uv_timer_t *t) {
  armed *a = t->data;
  fire(a->srv, a->target->is_gold, a->target->name, "file", a->last_file);
}

static void file_event(armed *a, const char *name) {
  if (fnmatch(a->trig->pattern ? a->trig->pattern : "*", name, FNM_PERIOD) != 0) return;
  if (name != a->last_file) snprintf(a->last_file, sizeof a->last_file, "%s", name);
  uv_timer_start(&a->timer, on_settled, (uint64_t)a->srv->settle_ms, 0);
}

static void schedule_reload(serve *s);

static void on_inotify(uv_poll_t *p, int status, int events) {
  serve *s = p->data;
  char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
  (void)status;
  (void)events;
  for (;;) {
    ssize_t n = read(s->ifd, buf, sizeof buf);
    if (n <= 0) break;
    for (char *q = buf; q < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)q;
      q += sizeof *ev + ev->len;
      int reload = 0;
      for (int k = 0; k < 3; k++) reload |= ev->wd == s->reload_wds[k];
      if (reload) {
        if (ev->len && ev->name[0] != '.') schedule_reload(s);
        continue;
      }
      if (!ev->len || !(ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO))) continue;
      for (size_t i = 0; i < s->narmed; i++)
        if (s->armed[i]->wd == ev->wd) file_event(s->armed[i], ev->name);
    }
  }
}

static void resolve_folder(const serve *s, const char *path, char *out, size_t cap) {
  if (path[0] == '/') snprintf(out, cap, "%s", path);
  else snprintf(out, cap, "%s/%s", s->cfg->data_dir, path);
}

static void mkdirs(const char *path) {
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    mkdir(tmp, 0755);
    *p = '/';
  }
  mkdir(tmp, 0755);
}

static void on_armed_closed(uv_handle_t *h) {
  armed *a = h->data;
  dp_tz_free(a->tz);
  free(a);
}

static void disarm_all(serve *s) {
  for (size_t i = 0; i < s->narmed; i++) {
    armed *a = s->armed[i];
    if (a->wd > 0) inotify_rm_watch(s->ifd, a->wd);
    uv_timer_stop(&a->timer);
    uv_close((uv_handle_t *)&a->timer, on_armed_closed);
  }
  free(s->armed);
  s->armed = NULL;
  s->narmed = 0;
}

/* Last successful start of a system (unix seconds), 0 when none; -1 on error. */
static double last_success_of(serve *s, PGconn *c, const char *name) {
  const char *p[] = {name};
  PGresult *r = NULL;
  dp_err e;
  if (!c || dp_pg_exec(c, "SELECT extract(epoch FROM max(started_at)) FROM audit.system_run WHERE system = $1"
                          " AND status = 'succeeded'", 1, p, &r, &e) != 0)
    return -1;
  double t = PQgetisnull(r, 0, 0) ? 0 : atof(PQgetvalue(r, 0, 0));
  PQclear(r);
  (void)s;
  return t;
}

/* Arms every trigger of the snapshot. at_start: catch-up and files already present fire. */
static void arm_all(serve *s, int at_start) {
  dp_snapshot *snap = s->snap;
  size_t n = 0;
  for (size_t i = 0; i < snap->ntargets; i++) n += snap->targets[i].ntriggers;
  s->armed = calloc(n ? n : 1, sizeof *s->armed);
  PGconn *c = NULL;
  dp_err e;
  if (at_start) c = dp_pg_connect(s->cfg->postgres_url, &e);
  for (size_t i = 0; i < snap->ntargets; i++) {
    const dp_snap_target *t = &snap->targets[i];
    if (!t->enabled) continue;
    int caught_up = 0;
    for (size_t k = 0; k < t->ntriggers; k++) {
      const dp_trigger *g = &t->triggers[k];
      if (g->kind != DP_TRIG_SCHEDULE && g->kind != DP_TRIG_FILE) continue;
      armed *a = calloc(1, sizeof *a);
      if (!a) continue;
      a->srv = s;
      a->target = t;
      a->trig = g;
      uv_timer_init(&s->loop, &a->timer);
      a->timer.data = a;
      s->armed[s->narmed++] = a;
      if (g->kind == DP_TRIG_SCHEDULE) {
        if (dp_cron_parse(g->cron, &a->cron, &e) != 0 || dp_tz_load(g->timezone ? g->timezone : "UTC", &a->tz, &e) != 0) {
          dp_log(DP_LOG_ERROR, "serve: %s: schedule trigger not armed: %s", t->name, e.msg);
          continue;
        }
        int64_t now = (int64_t)now_wall(s), prev;
        if (at_start && g->catch_up && !caught_up && dp_cron_prev(&a->cron, a->tz, now, &prev) == 0) {
          double last = last_success_of(s, c, t->name);
          if (last >= 0 && last < (double)prev) {
            char slot[32], detail[64];
            iso_time(prev, slot);
            snprintf(detail, sizeof detail, "catch-up %s", slot);
            fire(s, t->is_gold, t->name, "schedule", detail);
            caught_up = 1;
          }
        }
        arm_schedule(a, now);
      } else {
        char dir[PATH_MAX];
        resolve_folder(s, g->path, dir, sizeof dir);
        mkdirs(dir);
        a->wd = inotify_add_watch(s->ifd, dir, IN_CLOSE_WRITE | IN_MOVED_TO);
        if (a->wd < 0) {
          dp_log(DP_LOG_ERROR, "serve: %s: cannot watch %s: %s", t->name, dir, strerror(errno));
          continue;
        }
        if (at_start) {
          DIR *d = opendir(dir);
          struct dirent *de;
          while (d && (de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.' || fnmatch(g->pattern ? g->pattern : "*", de->d_name, FNM_PERIOD) != 0) continue;
            snprintf(a->last_file, sizeof a->last_file, "%s", de->d_name);
          }
          if (d) closedir(d);
          if (a->last_file[0]) file_event(a, a->last_file);
        }
      }
    }
  }
  if (c) PQfinish(c);
}

/* ---- reload --------------------------------------------------------------------------------- */

static void watch_reload_folders(serve *s) {
  const char *dirs[3];
  char a[PATH_MAX], b[PATH_MAX];
  snprintf(a, sizeof a, "%s/connectors", s->cfg->scripts);
  snprintf(b, sizeof b, "%s/gold", s->cfg->scripts);
  dirs[0] = a;
  dirs[1] = b;
  dirs[2] = strcmp(s->cfg->metadata, "mongo") == 0 ? NULL : s->cfg->metadata;
  for (int k = 0; k < 3; k++) {
    s->reload_wds[k] = -2;
    if (!dirs[k]) continue;
    s->reload_wds[k] =
        inotify_add_watch(s->ifd, dirs[k], IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_CREATE | IN_MOVED_FROM);
  }
}

/* A reload loads and checks the next version on the thread pool (it reads MongoDB or files and
 * compiles every script: the loop must not wait for that) and swaps it in on the loop. */
typedef struct reload_work {
  uv_work_t w;
  serve *srv;
  dp_snapshot *next;
  dp_err e;
} reload_work;

static void reload_run(uv_work_t *w) {
  reload_work *r = w->data;
  dp_err_clear(&r->e);
  if (dp_snapshot_load(r->srv->cfg, &r->next, &r->e) != 0) r->next = NULL;
}

static void reload_done(uv_work_t *w, int status) {
  reload_work *r = w->data;
  serve *s = r->srv;
  (void)status;
  s->reloading = 0;
  if (s->shutting_down) {
    dp_snapshot_unref(r->next);
    maybe_finish_shutdown(s);
  } else if (!r->next) {
    s->reload_errors++;
    free(s->reload_error);
    s->reload_error = strdup(r->e.msg);
    dp_log(DP_LOG_ERROR, "serve: reload refused, the previous version keeps running: %s", r->e.msg);
  } else {
    free(s->reload_error);
    s->reload_error = NULL;
    /* file triggers whose settle time was running fire on the new version too */
    char **pending = calloc(s->narmed ? s->narmed : 1, sizeof *pending);
    size_t npending = 0;
    for (size_t i = 0; pending && i < s->narmed; i++) {
      armed *a = s->armed[i];
      if (a->trig->kind == DP_TRIG_FILE && uv_is_active((uv_handle_t *)&a->timer) && a->last_file[0]) {
        size_t n = strlen(a->target->name);
        pending[npending] = malloc(n + 2 + strlen(a->last_file));
        if (pending[npending]) sprintf(pending[npending++], "%s/%s", a->target->name, a->last_file);
      }
    }
    disarm_all(s);
    uv_mutex_lock(&s->mu); /* workers take their reference under mu */
    dp_snapshot *old = s->snap;
    s->snap = r->next;
    uv_mutex_unlock(&s->mu);
    arm_all(s, 0);
    for (size_t k = 0; k < npending; k++) {
      char *slash = strchr(pending[k], '/');
      *slash = 0;
      for (size_t i = 0; i < s->narmed; i++) {
        armed *a = s->armed[i];
        if (a->trig->kind == DP_TRIG_FILE && strcmp(a->target->name, pending[k]) == 0) file_event(a, slash + 1);
      }
      free(pending[k]);
    }
    free(pending);
    dp_snapshot_unref(old);
    dp_log(DP_LOG_INFO, "serve: reloaded metadata %.12s from %s and %zu scripts", s->snap->hash ? s->snap->hash : "?",
           s->snap->meta.source, s->snap->meta.nscripts);
    if (s->reload_again) schedule_reload(s);
  }
  s->reload_again = 0;
  free(r);
}

static void on_reload_timer(uv_timer_t *t) {
  serve *s = t->data;
  if (s->shutting_down) return;
  if (s->reloading) { /* one at a time: the change that came meanwhile is read after it */
    s->reload_again = 1;
    return;
  }
  reload_work *r = calloc(1, sizeof *r);
  if (!r) return;
  r->srv = s;
  r->w.data = r;
  s->reloading = 1;
  uv_queue_work(&s->loop, &r->w, reload_run, reload_done);
}

static void schedule_reload(serve *s) {
  uv_timer_start(&s->reload_timer, on_reload_timer, 300, 0);
}

/* DP_METADATA=mongo: a push is seen by polling the current set's hash (on the thread pool). */
typedef struct poll_work {
  uv_work_t w;
  serve *srv;
  char hash[65];
} poll_work;

static void poll_run(uv_work_t *w) {
  poll_work *p = w->data;
  dp_engine eng;
  memset(&eng, 0, sizeof eng);
  eng.cfg = *p->srv->cfg; /* borrowed */
  dp_metastore_current cur;
  memset(&cur, 0, sizeof cur);
  dp_err e;
  if (dp_engine_open_mongo(&eng, &e) == 0 && dp_metastore_read(eng.mongo, eng.cfg.metadata_db, &cur, &e) == 0)
    snprintf(p->hash, sizeof p->hash, "%s", cur.hash);
  dp_metastore_current_free(&cur);
  if (eng.mongo) mongoc_client_destroy(eng.mongo);
}

static void poll_done(uv_work_t *w, int status) {
  poll_work *p = w->data;
  serve *s = p->srv;
  (void)status;
  s->polling = 0;
  const char *have = s->snap->meta.pushed_hash;
  if (p->hash[0] && (!have || strcmp(have, p->hash) != 0) && !s->shutting_down) {
    dp_log(DP_LOG_INFO, "serve: a new metadata push (%.12s) is current in MongoDB", p->hash);
    schedule_reload(s);
  }
  free(p);
}

static void on_poll_timer(uv_timer_t *t) {
  serve *s = t->data;
  if (s->polling || s->shutting_down) return;
  poll_work *p = calloc(1, sizeof *p);
  if (!p) return;
  p->srv = s;
  p->w.data = p;
  s->polling = 1;
  uv_queue_work(&s->loop, &p->w, poll_run, poll_done);
}

static void on_sighup(uv_signal_t *h, int sig) {
  (void)sig;
  schedule_reload(h->data);
}

/* ---- shutdown ------------------------------------------------------------------------------- */

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void maybe_finish_shutdown(serve *s) {
  if (!s->shutting_down) return;
  uv_mutex_lock(&s->mu);
  int running = s->nrunning;
  uv_mutex_unlock(&s->mu);
  if (running == 0 && s->inflight == 0 && !s->reloading) uv_stop(&s->loop);
}

/* Grace is over: the runs still in flight are failed in the audit with reason shutdown, and the
 * process exits (their transactions roll back when the connections drop; raw files without their
 * final name are never read; cursors only move with a silver commit). */
static void on_grace(uv_timer_t *t) {
  serve *s = t->data;
  dp_err e;
  PGconn *c = dp_pg_connect(s->cfg->postgres_url, &e);
  if (c) {
    /* the runs still in flight, by their run ids (a target a reload removed included) */
    uv_mutex_lock(&s->mu);
    size_t n = 0;
    char (*ids)[37] = calloc(s->nts ? s->nts : 1, sizeof *ids);
    char **names = calloc(s->nts ? s->nts : 1, sizeof *names);
    for (size_t i = 0; ids && names && i < s->nts; i++) {
      if (!s->ts[i].running) continue;
      snprintf(ids[n], 37, "%s", s->ts[i].running_id);
      names[n++] = s->ts[i].key + 2;
    }
    uv_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++) {
      const char *p[] = {ids[i]};
      dp_pg_exec(c,
                 "WITH r AS (UPDATE audit.system_run SET status = 'failed', ended_at = now(), error = 'shutdown'"
                 "  WHERE run_id::text = $1 AND status = 'running' RETURNING run_id),"
                 " l AS (UPDATE audit.system_layer_run SET status = 'failed', ended_at = now()"
                 "  WHERE run_id IN (SELECT run_id FROM r) AND status = 'running')"
                 " UPDATE audit.entity_layer_run SET status = 'failed', ended_at = now(), error = 'shutdown'"
                 "  WHERE run_id IN (SELECT run_id FROM r) AND status = 'running'",
                 1, p, NULL, &e);
      dp_log(DP_LOG_WARN, "serve: %s (run %s) did not finish within DP_SHUTDOWN_GRACE; marked failed (shutdown)",
             names[i], ids[i]);
    }
    free(ids);
    free(names);
    PQfinish(c);
  }
  dp_log(DP_LOG_INFO, "serve: stopped");
  fflush(NULL);
  _exit(0);
}

static void begin_shutdown(serve *s, const char *why) {
  if (s->shutting_down) return;
  s->shutting_down = 1;
  dp_log(DP_LOG_INFO, "serve: %s: no new runs; waiting up to %.0f s for the runs in flight", why, s->grace_s);
  dp_httpd_close(s->http);
  s->http = NULL;
  disarm_all(s);
  uv_timer_stop(&s->reload_timer);
  uv_timer_stop(&s->tick_timer);
  uv_timer_stop(&s->poll_timer);
  dp_retention_job_stop(s->retention);
  s->retention = NULL;
  uv_mutex_lock(&s->mu);
  s->stopping = 1;
  /* queued jobs are dropped: they never started, so nothing records them (a flow run created
   * for one is cancelled, below) */
  job *dropped = NULL;
  while (s->queue) {
    job *j = s->queue;
    s->queue = j->next;
    tstate *t = state_of(s, j->is_gold, j->target);
    if (t && t->waiting == j) t->waiting = NULL;
    j->next = dropped;
    dropped = j;
  }
  uv_cond_broadcast(&s->cv);
  uv_mutex_unlock(&s->mu);
  while (dropped) {
    job *j = dropped;
    dropped = j->next;
    if (j->flow_run_id[0]) dp_prefect_set_flow_state(j->flow_run_id, "CANCELLED", "dp-engine serve shut down");
    job_free(j);
  }
  uv_timer_start(&s->grace_timer, on_grace, (uint64_t)(s->grace_s * 1000), 0);
  maybe_finish_shutdown(s);
}

static void on_signal(uv_signal_t *h, int sig) {
  begin_shutdown(h->data, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_tick(uv_timer_t *t) { /* wakes workers for busy retries whose wait is over */
  serve *s = t->data;
  uv_mutex_lock(&s->mu);
  if (s->queue) uv_cond_broadcast(&s->cv);
  uv_mutex_unlock(&s->mu);
}

/* ---- HTTP API ------------------------------------------------------------------------------- */

enum { W_HEALTH, W_RUNS, W_RUN, W_OVERVIEW, W_SYSTEM, W_LINEAGE, W_PAGE };

typedef struct api_work {
  uv_work_t w;
  serve *srv;
  dp_httpd_conn *conn;
  int kind;       /* see enum below */
  char *system, *run_id;
  dp_snapshot *snap; /* a reference, for the status page's reads */
  int limit;
  int status;
  dp_buf body;
} api_work;

static PGconn *pool_get(serve *s, dp_err *e) {
  uv_mutex_lock(&s->mu);
  PGconn *c = s->npool ? s->pool[--s->npool] : NULL;
  uv_mutex_unlock(&s->mu);
  if (c && PQstatus(c) != CONNECTION_OK) {
    PQfinish(c);
    c = NULL;
  }
  return c ? c : dp_pg_connect(s->cfg->postgres_url, e);
}

static void pool_put(serve *s, PGconn *c) {
  uv_mutex_lock(&s->mu);
  if (s->npool < (int)(sizeof s->pool / sizeof s->pool[0])) {
    s->pool[s->npool++] = c;
    c = NULL;
  }
  uv_mutex_unlock(&s->mu);
  if (c) PQfinish(c);
}

static void json_error(dp_buf *b, const char *msg) {
  dp_buf_reset(b);
  dp_buf_puts(b, "{\"error\":");
  dp_json_put_string(b, msg, strlen(msg));
  dp_buf_puts(b, "}");
}

static void health_check(api_work *a) {
  serve *s = a->srv;
  dp_err e;
  dp_err_clear(&e);
  char pg_err[600] = "", mongo_err[600] = "";
  PGconn *c = pool_get(s, &e);
  if (c) {
    PGresult *r = NULL;
    if (dp_pg_exec(c, "SELECT 1", 0, NULL, &r, &e) == 0) {
      PQclear(r);
      pool_put(s, c);
    } else {
      dp_utf8_copy(pg_err, sizeof pg_err, e.msg);
      PQfinish(c);
    }
  } else {
    dp_utf8_copy(pg_err, sizeof pg_err, e.msg);
  }
  mongoc_uri_t *uri = mongoc_uri_new_with_error(s->cfg->mongo_url, NULL);
  if (uri) {
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 2000);
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 2000);
  }
  mongoc_client_t *m = uri ? mongoc_client_new_from_uri(uri) : NULL;
  bson_error_t be;
  bson_t *ping = BCON_NEW("ping", BCON_INT32(1));
  if (!m || !mongoc_client_command_simple(m, "admin", ping, NULL, NULL, &be))
    snprintf(mongo_err, sizeof mongo_err, "%s", m ? be.message : "bad DP_MONGO_URL");
  bson_destroy(ping);
  if (m) mongoc_client_destroy(m);
  if (uri) mongoc_uri_destroy(uri);
  int ok = !pg_err[0] && !mongo_err[0];
  a->status = ok ? 200 : 503;
  dp_buf_printf(&a->body, "{\"status\":\"%s\",\"version\":\"%s\",\"postgres\":", ok ? "ok" : "unavailable",
                DP_VERSION);
  if (pg_err[0]) {
    dp_buf_puts(&a->body, "{\"ok\":false,\"error\":");
    dp_json_put_string(&a->body, pg_err, strlen(pg_err));
    dp_buf_puts(&a->body, "}");
  } else {
    dp_buf_puts(&a->body, "{\"ok\":true}");
  }
  dp_buf_puts(&a->body, ",\"mongodb\":");
  if (mongo_err[0]) {
    dp_buf_puts(&a->body, "{\"ok\":false,\"error\":");
    dp_json_put_string(&a->body, mongo_err, strlen(mongo_err));
    dp_buf_puts(&a->body, "}");
  } else {
    dp_buf_puts(&a->body, "{\"ok\":true}");
  }
}

static void api_query(api_work *a) {
  serve *s = a->srv;
  dp_err e;
  PGconn *c = pool_get(s, &e);
  if (!c) {
    a->status = 503;
    json_error(&a->body, "PostgreSQL is unavailable");
    return;
  }
  PGresult *r = NULL;
  int rc;
  if (a->kind == 1) {
    char lim[16];
    snprintf(lim, sizeof lim, "%d", a->limit);
    const char *p[] = {a->system, lim};
    rc = dp_pg_exec(c,
                    "SELECT coalesce(json_agg(t), '[]'::json) FROM (SELECT run_id, system, trigger_kind, trigger_detail,"
                    " status, started_at, ended_at, round(extract(epoch FROM ended_at - started_at)::numeric, 3) AS seconds,"
                    " entities_succeeded, entities_failed, entities_skipped, error FROM audit.system_run"
                    " WHERE ($1::text IS NULL OR system = $1) ORDER BY started_at DESC LIMIT $2::int) t",
                    2, p, &r, &e);
  } else {
    const char *p[] = {a->run_id};
    rc = dp_pg_exec(c,
                    "SELECT row_to_json(x) FROM (SELECT s.*, (SELECT coalesce(json_agg(l ORDER BY l.started_at), '[]')"
                    " FROM audit.system_layer_run l WHERE l.run_id = s.run_id) AS layers,"
                    " (SELECT coalesce(json_agg(en ORDER BY en.started_at), '[]') FROM audit.entity_layer_run en"
                    " WHERE en.run_id = s.run_id) AS entities FROM audit.system_run s WHERE s.run_id::text = $1) x",
                    1, p, &r, &e);
  }
  if (rc) {
    a->status = 503;
    json_error(&a->body, "the audit could not be read");
    dp_log(DP_LOG_WARN, "serve: API read failed: %s", e.msg);
    PQfinish(c);
    return;
  }
  if (PQntuples(r) == 0) {
    a->status = 404;
    json_error(&a->body, "no such run");
  } else {
    a->status = 200;
    dp_buf_puts(&a->body, PQgetvalue(r, 0, 0));
  }
  PQclear(r);
  pool_put(s, c);
}

/* The status page's reads (webui.c), on the thread pool. */
static void ui_query(api_work *a) {
  serve *s = a->srv;
  dp_err e;
  PGconn *c = pool_get(s, &e);
  int rc = -1;
  if (c) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec + ts.tv_nsec / 1e9 + (double)s->clock_offset;
    if (a->kind == W_OVERVIEW) {
      rc = dp_webui_overview(c, a->snap, now, &a->body, NULL);
    } else if (a->kind == W_SYSTEM) {
      const dp_snap_target *t = dp_snapshot_find(a->snap, a->system, 0);
      rc = t ? dp_webui_system_json(c, t, dp_prefect_env()->ui_url, &a->body) : -2;
    } else if (a->kind == W_LINEAGE) {
      rc = dp_webui_lineage_json(c, a->snap, &a->body);
    } else {
      dp_buf html = DP_BUF_INIT;
      rc = dp_webui_overview(c, a->snap, now, NULL, &html);
      if (rc == 0) dp_webui_page(&a->body, html.data);
      dp_buf_free(&html);
    }
    if (rc == -1) { PQfinish(c); } else { pool_put(s, c); }
  }
  if (rc == 0) {
    a->status = 200;
  } else {
    a->status = rc == -2 ? 404 : 503;
    json_error(&a->body, rc == -2 ? "no such system" : "the audit could not be read");
  }
}

static void api_work_run(uv_work_t *w) {
  api_work *a = w->data;
  if (a->kind == W_HEALTH) health_check(a);
  else if (a->kind == W_RUNS || a->kind == W_RUN) api_query(a);
  else ui_query(a);
}

/* /health's dependency check is cached for a second: it costs a MongoDB client and a query, on
 * the thread pool that API reads share, and it needs no token. */
static void respond_health(serve *s, dp_httpd_conn *c) {
  dp_buf b = DP_BUF_INIT;
  dp_buf_append(&b, s->health_body.data, s->health_body.len);
  if (s->health_status == 200 && s->reload_error) { /* works, on the previous version */
    dp_buf_puts(&b, ",\"reload\":{\"ok\":false,\"error\":");
    dp_json_put_string(&b, s->reload_error, strlen(s->reload_error));
    dp_buf_puts(&b, "}");
  }
  dp_buf_puts(&b, "}");
  dp_httpd_respond(c, s->health_status, "application/json", NULL, b.data, b.len);
  dp_buf_free(&b);
}

static void api_work_done(uv_work_t *w, int status) {
  api_work *a = w->data;
  (void)status;
  serve *s = a->srv;
  s->inflight--;
  if (a->kind == W_HEALTH) {
    dp_buf_reset(&s->health_body);
    dp_buf_append(&s->health_body, a->body.data, a->body.len);
    s->health_status = a->status;
    s->health_at = dp_monotonic();
    respond_health(s, a->conn);
    dp_buf_free(&a->body);
    free(a);
    maybe_finish_shutdown(s);
    return;
  }
  if (a->kind == W_PAGE && a->status == 200)
    dp_httpd_respond(a->conn, 200, "text/html; charset=utf-8", PAGE_HEADERS, a->body.data, a->body.len);
  else
    dp_httpd_respond(a->conn, a->status, "application/json", NULL, a->body.data, a->body.len);
  dp_buf_free(&a->body);
  dp_snapshot_unref(a->snap);
  free(a->system);
  free(a->run_id);
  free(a);
  maybe_finish_shutdown(s);
}

static void start_work(serve *s, dp_httpd_conn *c, int kind, const char *system, const char *run_id, int limit) {
  api_work *a = calloc(1, sizeof *a);
  if (!a) {
    dp_httpd_error(c, 500, "out of memory");
    return;
  }
  a->srv = s;
  a->conn = c;
  a->kind = kind;
  a->system = system ? strdup(system) : NULL;
  a->run_id = run_id ? strdup(run_id) : NULL;
  a->limit = limit;
  if (kind >= W_OVERVIEW) a->snap = dp_snapshot_ref(s->snap);
  a->w.data = a;
  s->inflight++;
  uv_queue_work(&s->loop, &a->w, api_work_run, api_work_done);
}

static int query_param(const char *q, const char *name, char *out, size_t cap);

/* Whether the request carries the status page's session cookie (set by POST /login). */
static int has_session(serve *s, const dp_http_req *r) {
  if (!s->have_token) return 1;
  if (!r->cookie) return 0;
  const char *p = strstr(r->cookie, "dp_session=");
  if (!p || (p != r->cookie && p[-1] != ' ' && p[-1] != ';')) return 0;
  p += strlen("dp_session=");
  size_t n = strcspn(p, "; ");
  return n == strlen(s->session) && sodium_memcmp(p, s->session, n) == 0;
}

/* application/x-www-form-urlencoded: the value of name, decoded, into out. 1 when found. */
static int form_value(const char *body, const char *name, char *out, size_t cap) {
  char raw[2048];
  if (query_param(body, name, raw, sizeof raw) != 1) return 0;
  size_t k = 0;
  for (const char *p = raw; *p && k + 1 < cap; p++) {
    if (*p == '+') out[k++] = ' ';
    else if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
      char h[3] = {p[1], p[2], 0};
      out[k++] = (char)strtol(h, NULL, 16);
      p += 2;
    } else out[k++] = *p;
  }
  out[k] = 0;
  return 1;
}

static int token_ok(serve *s, const char *tok) {
  unsigned char h[crypto_generichash_BYTES];
  crypto_generichash(h, sizeof h, (const unsigned char *)tok, strlen(tok), NULL, 0);
  return sodium_memcmp(h, s->token_hash, sizeof h) == 0;
}

/* GET /, /ui/..., POST /login, GET /logout. Returns 1 when it answered. */
static int handle_page(serve *s, dp_httpd_conn *c, const dp_http_req *r, int get, int post) {
  if (strcmp(r->path, "/") == 0 || strcmp(r->path, "/index.html") == 0) {
    if (!get) { dp_httpd_error(c, 405, "use GET"); return 1; }
    if (has_session(s, r)) {
      start_work(s, c, W_PAGE, NULL, NULL, 0);
    } else {
      dp_buf b = DP_BUF_INIT;
      dp_webui_page(&b, NULL);
      dp_httpd_respond(c, 200, "text/html; charset=utf-8", PAGE_HEADERS, b.data, b.len);
      dp_buf_free(&b);
    }
    return 1;
  }
  if (strncmp(r->path, "/ui/", 4) == 0) {
    const char *type;
    const unsigned char *data;
    size_t len;
    if (!get) { dp_httpd_error(c, 405, "use GET"); return 1; }
    if (dp_webui_asset(r->path + 4, &type, &data, &len) != 0) { dp_httpd_error(c, 404, "no such file"); return 1; }
    dp_httpd_respond(c, 200, type, "X-Content-Type-Options: nosniff\r\n", (const char *)data, len);
    return 1;
  }
  if (strcmp(r->path, "/login") == 0) {
    char tok[1024];
    if (!post) { dp_httpd_error(c, 405, "use POST"); return 1; }
    if (!s->have_token || (form_value(r->body, "token", tok, sizeof tok) && token_ok(s, tok))) {
      char hdr[300];
      snprintf(hdr, sizeof hdr, "Location: /\r\nSet-Cookie: dp_session=%s; Path=/; HttpOnly; SameSite=Strict\r\n",
               s->session);
      dp_httpd_respond(c, 303, "text/plain; charset=utf-8", hdr, "", 0);
    } else {
      dp_buf b = DP_BUF_INIT;
      dp_webui_page(&b, "<section class=\"login\"><h1>Sign in</h1><p class=\"error\" role=\"alert\">That token was "
                        "refused.</p><form method=\"post\" action=\"/login\" id=\"login\"><label for=\"token\">API "
                        "token</label><input id=\"token\" name=\"token\" type=\"password\" required><button "
                        "type=\"submit\">Sign in</button></form></section>");
      dp_httpd_respond(c, 401, "text/html; charset=utf-8", PAGE_HEADERS, b.data, b.len);
      dp_buf_free(&b);
    }
    return 1;
  }
  if (strcmp(r->path, "/logout") == 0) {
    dp_httpd_respond(c, 303, "text/plain; charset=utf-8",
                     "Location: /\r\nSet-Cookie: dp_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0\r\n", "", 0);
    return 1;
  }
  return 0;
}

/* Which requests may send a body, before any of it is read: a sign-in form (small), and requests
 * with the right bearer token (or every request when serve runs without a token). */
static size_t body_ok(const char *method, const char *url, const char *auth, void *ud) {
  serve *s = ud;
  if (strcmp(method, "POST") != 0) return 0;
  if (strncmp(url, "/login", 6) == 0 && (url[6] == 0 || url[6] == '?')) return 4096;
  if (!s->have_token) return s->max_body;
  if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) return 0;
  return token_ok(s, auth + 7) ? s->max_body : 0;
}

/* Without a token (DP_API_INSECURE on loopback) a web page could reach serve through DNS
 * rebinding: its requests carry the attacker's host name. Only loopback names are answered. */
static int host_ok(serve *s, const dp_http_req *r) {
  if (s->have_token) return 1;
  if (!r->host) return 0;
  size_t n = strcspn(r->host, ":");
  if (r->host[0] == '[') n = strcspn(r->host, "]") + 1;
  return (n == 9 && strncmp(r->host, "localhost", 9) == 0) || (n == 9 && strncmp(r->host, "127.0.0.1", 9) == 0) ||
         (n == 5 && strncmp(r->host, "[::1]", 5) == 0);
}

static int authorized(serve *s, const dp_http_req *r) {
  if (!s->have_token) return 1; /* DP_API_INSECURE on loopback */
  if (!r->auth || strncasecmp(r->auth, "Bearer ", 7) != 0) return 0;
  const char *tok = r->auth + 7;
  unsigned char h[crypto_generichash_BYTES];
  crypto_generichash(h, sizeof h, (const unsigned char *)tok, strlen(tok), NULL, 0);
  return sodium_memcmp(h, s->token_hash, sizeof h) == 0; /* constant time, also in the length */
}

/* A query parameter's value (raw, not decoded; names and values here are plain). */
static int query_param(const char *q, const char *name, char *out, size_t cap) {
  size_t n = strlen(name);
  for (const char *p = q; p && *p;) {
    const char *amp = strchr(p, '&');
    size_t len = amp ? (size_t)(amp - p) : strlen(p);
    if (len > n && strncmp(p, name, n) == 0 && p[n] == '=') {
      size_t vl = len - n - 1;
      if (vl >= cap) return -1;
      memcpy(out, p + n + 1, vl);
      out[vl] = 0;
      return 1;
    }
    p = amp ? amp + 1 : NULL;
  }
  return 0;
}

static int valid_name(const char *s) {
  if (!*s || strlen(s) > 200) return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
      return 0;
  return 1;
}

static int uuid_text(const char *s) {
  uint8_t b[16];
  return strlen(s) == 36 && dp_uuid_parse(s, b) == 0;
}

/* Reads {"entities": [..], "layers": [..], "full_refresh": bool} into j (a gold run: only
 * full_refresh). 0, or -1 with msg. */
static int parse_run_body(const dp_http_req *r, job *j, int is_gold, char *msg, size_t cap) {
  if (r->body_len == 0 || strspn(r->body, " \t\r\n") == r->body_len) return 0;
  bson_t b;
  bson_error_t be;
  if (!bson_init_from_json(&b, r->body, (ssize_t)r->body_len, &be)) {
    snprintf(msg, cap, "the body is not a JSON object");
    return -1;
  }
  bson_iter_t it;
  int rc = 0;
  bson_iter_init(&it, &b);
  while (rc == 0 && bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    if (strcmp(k, "full_refresh") == 0) {
      if (!BSON_ITER_HOLDS_BOOL(&it)) rc = snprintf(msg, cap, "full_refresh must be true or false") ? -1 : -1;
      else j->full_refresh = bson_iter_bool(&it);
    } else if (is_gold && (strcmp(k, "entities") == 0 || strcmp(k, "layers") == 0)) {
      snprintf(msg, cap, "a gold run takes only full_refresh (entities and layers are for a system's run)");
      rc = -1;
    } else if (strcmp(k, "entities") == 0 || strcmp(k, "layers") == 0) {
      int ents = k[0] == 'e';
      bson_iter_t a;
      if (!BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &a)) {
        snprintf(msg, cap, "%s must be a list of names", k);
        rc = -1;
        break;
      }
      unsigned layers = 0;
      while (bson_iter_next(&a)) {
        if (!BSON_ITER_HOLDS_UTF8(&a)) {
          snprintf(msg, cap, "%s must be a list of names", k);
          rc = -1;
          break;
        }
        const char *v = bson_iter_utf8(&a, NULL);
        if (ents) {
          char **n = realloc(j->entities, (size_t)(j->nentities + 1) * sizeof *n);
          if (!n) { rc = -1; break; }
          j->entities = n;
          j->entities[j->nentities++] = strdup(v);
        } else if (strcmp(v, "raw") == 0) layers |= DP_LAYER_RAW;
        else if (strcmp(v, "bronze") == 0) layers |= DP_LAYER_BRONZE;
        else if (strcmp(v, "silver") == 0) layers |= DP_LAYER_SILVER;
        else {
          snprintf(msg, cap, "unknown layer \"%.40s\" (raw, bronze or silver)", v);
          rc = -1;
          break;
        }
      }
      if (!ents && rc == 0 && layers) {
        if (layers != DP_LAYER_RAW && layers != (DP_LAYER_RAW | DP_LAYER_BRONZE) && layers != DP_LAYER_ALL) {
          snprintf(msg, cap, "layers must start at raw (raw, raw+bronze or all)");
          rc = -1;
        }
        j->layers = layers;
      }
    } else {
      snprintf(msg, cap, "unknown field \"%.40s\" (%s)", k, is_gold ? "full_refresh" : "entities, layers, full_refresh");
      rc = -1;
    }
  }
  bson_destroy(&b);
  return rc;
}

static void respond_queued(dp_httpd_conn *c, const char *run_id, int fresh) {
  char body[160];
  int n = snprintf(body, sizeof body, "{\"run_id\":\"%s\",\"status\":\"queued\"%s}", run_id,
                   fresh ? "" : ",\"merged\":true");
  dp_httpd_respond(c, 202, "application/json", NULL, body, (size_t)n);
}

static void handle(dp_httpd_conn *c, const dp_http_req *r, void *ud) {
  serve *s = ud;
  int get = strcmp(r->method, "GET") == 0, post = strcmp(r->method, "POST") == 0;
  char seg[4][256];
  int nseg = 0;
  for (const char *p = r->path; *p && nseg < 4;) {
    if (*p == '/') { p++; continue; }
    size_t len = strcspn(p, "/");
    if (len >= sizeof seg[0]) { dp_httpd_error(c, 404, "no such route"); return; }
    memcpy(seg[nseg], p, len);
    seg[nseg++][len] = 0;
    p += len;
  }
  if (!host_ok(s, r)) { dp_httpd_error(c, 403, "without a token, serve answers loopback host names only"); return; }
  if (strcmp(r->path, "/health") == 0) {
    if (!get) { dp_httpd_error(c, 405, "use GET"); return; }
    if (s->health_at > 0 && dp_monotonic() - s->health_at < 1.0) respond_health(s, c);
    else start_work(s, c, W_HEALTH, NULL, NULL, 0);
    return;
  }
  if (handle_page(s, c, r, get, post)) return;
  if (!authorized(s, r)) { dp_httpd_error(c, 401, "missing or wrong bearer token"); return; }
  if (s->shutting_down) { dp_httpd_error(c, 503, "shutting down"); return; }
  if (strcmp(r->path, "/metrics") == 0) {
    if (!get) { dp_httpd_error(c, 405, "use GET"); return; }
    dp_buf b = DP_BUF_INIT;
    render_metrics(s, &b);
    dp_httpd_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.data, b.len);
    dp_buf_free(&b);
    return;
  }
  if (nseg < 3 || strcmp(seg[0], "api") != 0 || strcmp(seg[1], "v1") != 0) {
    dp_httpd_error(c, 404, "no such route");
    return;
  }
  const char *what = seg[2];
  if (strcmp(what, "overview") == 0 || strcmp(what, "lineage") == 0) {
    if (!get) { dp_httpd_error(c, 405, "use GET"); return; }
    if (nseg != 3) { dp_httpd_error(c, 404, "no such route"); return; }
    start_work(s, c, what[0] == 'o' ? W_OVERVIEW : W_LINEAGE, NULL, NULL, 0);
    return;
  }
  if (strcmp(what, "systems") == 0 && nseg == 4 && get) {
    int count = 0;
    for (const char *p = r->path; *p; p++)
      if (*p == '/' && p[1] && p[1] != '/') count++;
    if (count == 4) {
      if (!valid_name(seg[3]) || !dp_snapshot_find(s->snap, seg[3], 0)) { dp_httpd_error(c, 404, "no such system"); return; }
      start_work(s, c, W_SYSTEM, seg[3], NULL, 0);
      return;
    }
  }
  if (strcmp(what, "runs") == 0 && nseg == 3) {
    if (!get) { dp_httpd_error(c, 405, "use GET"); return; }
    char sys[256], lim[16];
    int hs = query_param(r->query, "system", sys, sizeof sys), hl = query_param(r->query, "limit", lim, sizeof lim);
    if (hs < 0 || (hs && !valid_name(sys))) { dp_httpd_error(c, 400, "system must be a name"); return; }
    int limit = 20;
    if (hl) {
      char *end;
      long v = strtol(lim, &end, 10);
      if (hl < 0 || *end || v < 1 || v > 1000) { dp_httpd_error(c, 400, "limit must be a number from 1 to 1000"); return; }
      limit = (int)v;
    }
    start_work(s, c, 1, hs ? sys : NULL, NULL, limit);
    return;
  }
  if (strcmp(what, "runs") == 0 && nseg == 4) {
    if (!get) { dp_httpd_error(c, 405, "use GET"); return; }
    if (!uuid_text(seg[3])) { dp_httpd_error(c, 404, "no such run"); return; }
    start_work(s, c, 2, NULL, seg[3], 0);
    return;
  }
  /* POST /api/v1/systems/{name}/runs, /api/v1/gold/{model}/runs, /api/v1/hooks/{system}/{name} */
  int is_sys = strcmp(what, "systems") == 0, is_gold = strcmp(what, "gold") == 0,
      is_hook = strcmp(what, "hooks") == 0;
  if (!(is_sys || is_gold || is_hook) || nseg != 4 || r->path[strlen(r->path) - 1] == '/') {
    /* count the segments again: more than four means no route */
    dp_httpd_error(c, 404, "no such route");
    return;
  }
  {
    /* exactly 5 segments for these routes */
    int count = 0;
    for (const char *p = r->path; *p; p++)
      if (*p == '/' && p[1] && p[1] != '/') count++;
    if (count != 5 || (!is_hook && strcmp(strrchr(r->path, '/') + 1, "runs") != 0)) {
      dp_httpd_error(c, 404, "no such route");
      return;
    }
  }
  if (!post) { dp_httpd_error(c, 405, "use POST"); return; }
  const char *name = seg[3];
  const dp_snap_target *t = valid_name(name) ? dp_snapshot_find(s->snap, name, is_gold) : NULL;
  if (!t) {
    char msg[300];
    snprintf(msg, sizeof msg, "no %s named %s", is_gold ? "gold model" : "system", valid_name(name) ? name : "(invalid)");
    dp_httpd_error(c, 404, msg);
    return;
  }
  if (!t->enabled) {
    char msg[300];
    snprintf(msg, sizeof msg, "system %s is disabled in metadata", name);
    dp_httpd_error(c, 409, msg);
    return;
  }
  job *j;
  char msg[200];
  if (is_hook) {
    const char *hook = strrchr(r->path, '/') + 1;
    int known = 0;
    for (size_t k = 0; k < t->ntriggers; k++)
      known |= t->triggers[k].kind == DP_TRIG_CALLBACK && (!t->triggers[k].name || strcmp(t->triggers[k].name, hook) == 0);
    if (!known) {
      char m[400];
      snprintf(m, sizeof m, "system %s has no callback trigger named %.100s", name, hook);
      dp_httpd_error(c, 404, m);
      return;
    }
    dp_buf ev = DP_BUF_INIT;
    dp_err e;
    if (r->body_len && dp_json_compact(r->body, r->body_len, &ev, &e) != 0) {
      dp_buf_free(&ev);
      dp_httpd_error(c, 400, "the body is not valid JSON");
      return;
    }
    j = new_job(0, name, "callback", hook);
    if (j) j->event = ev.len ? dp_buf_steal(&ev) : NULL;
    dp_buf_free(&ev);
  } else {
    j = new_job(is_gold, name, "api", "POST");
    if (j && parse_run_body(r, j, is_gold, msg, sizeof msg) != 0) {
      job_free(j);
      dp_httpd_error(c, 400, msg);
      return;
    }
  }
  if (!j) { dp_httpd_error(c, 500, "out of memory"); return; }
  submit(s, j, c);
}

/* ---- main ----------------------------------------------------------------------------------- */

static int read_token(serve *s, const char *listen, dp_err *e) {
  const char *tok = dp_config_env("DP_API_TOKEN");
  char *file_tok = NULL;
  const char *file = dp_config_env("DP_API_TOKEN_FILE");
  if ((!tok || !*tok) && file && *file) {
    FILE *f = fopen(file, "r");
    if (!f) return dp_err_set(e, DP_ECONFIG, "DP_API_TOKEN_FILE=%s: %s", file, strerror(errno));
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    buf[strcspn(buf, "\r\n")] = 0;
    file_tok = strdup(buf);
    tok = file_tok;
  }
  if (tok && *tok) {
    if (strlen(tok) < 16) {
      free(file_tok);
      return dp_err_set(e, DP_ECONFIG, "the API token is shorter than 16 characters; make a long random one "
                                       "(e.g. `openssl rand -hex 32`)");
    }
    crypto_generichash((unsigned char *)s->token_hash, sizeof s->token_hash, (const unsigned char *)tok, strlen(tok),
                       NULL, 0);
    s->have_token = 1;
    /* the status page's session cookie: a keyed hash of a fixed text under the token's hash, so the
     * cookie never holds the token, and a new token ends every session */
    unsigned char sess[crypto_generichash_BYTES];
    static const char what[] = "dp-engine status page session";
    crypto_generichash(sess, sizeof sess, (const unsigned char *)what, sizeof what - 1,
                       (const unsigned char *)s->token_hash, sizeof s->token_hash);
    sodium_bin2hex(s->session, sizeof s->session, sess, sizeof sess);
    sodium_memzero(file_tok ? file_tok : (char *)"", file_tok ? strlen(file_tok) : 0);
    free(file_tok);
    return 0;
  }
  const char *insecure = dp_config_env("DP_API_INSECURE");
  if (insecure && strcmp(insecure, "1") == 0 && dp_listen_is_loopback(listen)) {
    dp_log(DP_LOG_WARN, "serve: no API token: DP_API_INSECURE=1 on loopback %s, every route is open", listen);
    return 0;
  }
  return dp_err_set(e, DP_ECONFIG, "serve needs an API token: set DP_API_TOKEN or DP_API_TOKEN_FILE (or, on a "
                                   "loopback DP_LISTEN only, DP_API_INSECURE=1)");
}

/* A number from the variable name (a row of config.h, or a DP_TEST_* hook), read once at start. */
static double env_num(const char *name, double def, double lo, double hi, dp_err *e, int *bad) {
  const char *v = strncmp(name, "DP_TEST_", 8) == 0 ? getenv(name) : dp_config_env(name);
  if (!v || !*v) return def;
  char *end;
  double d = strtod(v, &end);
  if (*end || d < lo || d > hi) {
    *bad = 1;
    dp_err_set(e, DP_ECONFIG, "%s=%s: expected a number from %g to %g", name, v, lo, hi);
  }
  return d;
}

int dp_serve_main(dp_engine *eng) {
  serve *s = calloc(1, sizeof *s);
  dp_err e;
  dp_err_clear(&e);
  if (!s) return 2;
  s->cfg = &eng->cfg;
  int bad = 0;
  const char *listen = dp_config_get("DP_LISTEN");
  s->nworkers = (int)env_num("DP_WORKERS", 2, 1, 64, &e, &bad);
  s->grace_s = env_num("DP_SHUTDOWN_GRACE", 30, 0, 86400, &e, &bad);
  s->settle_ms = env_num("DP_FILE_SETTLE_MS", 3000, 0, 3600000, &e, &bad);
  s->max_body = (size_t)env_num("DP_API_MAX_BODY", 1048576, 0, 1073741824, &e, &bad);
  s->poll_s = env_num("DP_RELOAD_POLL", 10, 0.1, 86400, &e, &bad);
  double request_s = env_num("DP_API_REQUEST_TIMEOUT", 10, 0.1, 3600, &e, &bad);
  double test_now = env_num("DP_TEST_NOW", 0, 0, 1e11, &e, &bad);
  if (bad || read_token(s, listen, &e) != 0) {
    fprintf(stderr, "dp-engine serve: %s\n", e.msg);
    free(s);
    return 2;
  }
  if (test_now > 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->clock_offset = (int64_t)test_now - ts.tv_sec;
  }
  if (dp_snapshot_load(s->cfg, &s->snap, &e) != 0) {
    fprintf(stderr, "dp-engine serve: %s\n", e.msg);
    free(s);
    return 2;
  }
  uv_loop_init(&s->loop);
  uv_mutex_init(&s->mu);
  uv_cond_init(&s->cv);
  s->listen = listen;
  if (dp_httpd_start(&s->loop, listen, s->max_body, (uint64_t)(request_s * 1000), handle, body_ok, s, &s->http, &e) !=
      0) {
    fprintf(stderr, "dp-engine serve: %s\n", e.msg);
    return 2;
  }
  s->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (s->ifd >= 0) {
    uv_poll_init(&s->loop, &s->ipoll, s->ifd);
    s->ipoll.data = s;
    uv_poll_start(&s->ipoll, UV_READABLE, on_inotify);
    watch_reload_folders(s);
  } else {
    dp_log(DP_LOG_WARN, "serve: inotify unavailable (%s): no file triggers, no reload on change", strerror(errno));
  }
  uv_async_init(&s->loop, &s->done_async, on_done);
  s->done_async.data = s;
  uv_timer_init(&s->loop, &s->reload_timer);
  s->reload_timer.data = s;
  uv_timer_init(&s->loop, &s->grace_timer);
  s->grace_timer.data = s;
  uv_timer_init(&s->loop, &s->tick_timer);
  s->tick_timer.data = s;
  uv_timer_start(&s->tick_timer, on_tick, 1000, 1000);
  uv_timer_init(&s->loop, &s->poll_timer);
  s->poll_timer.data = s;
  if (strcmp(s->cfg->metadata, "mongo") == 0)
    uv_timer_start(&s->poll_timer, on_poll_timer, (uint64_t)(s->poll_s * 1000), (uint64_t)(s->poll_s * 1000));
  uv_signal_init(&s->loop, &s->sig_term);
  uv_signal_init(&s->loop, &s->sig_int);
  uv_signal_init(&s->loop, &s->sig_hup);
  s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
  uv_signal_start(&s->sig_term, on_signal, SIGTERM);
  uv_signal_start(&s->sig_int, on_signal, SIGINT);
  uv_signal_start(&s->sig_hup, on_sighup, SIGHUP);
  load_last_success(s);
  s->prefect = dp_prefect_env()->api_url != NULL;
  worker *ws = calloc((size_t)s->nworkers, sizeof *ws);
  s->threads = calloc((size_t)s->nworkers, sizeof *s->threads);
  for (int i = 0; i < s->nworkers; i++) {
    ws[i].srv = s;
    ws[i].index = i + 1;
    uv_thread_create(&s->threads[i], worker_main, &ws[i]);
  }
  arm_all(s, 1);
  if (dp_retention_job_start(&s->loop, dp_config_get("DP_RETENTION_AT"), s->clock_offset, &s->retention, &e) != 0)
    dp_log(DP_LOG_ERROR, "serve: %s: no daily retention", e.msg);
  dp_log(DP_LOG_INFO, "serve: listening on %s (port %d), %d workers, metadata %.12s from %s",
         listen, dp_httpd_port(s->http), s->nworkers, s->snap->hash ? s->snap->hash : "?", s->snap->meta.source);
  printf("serve: listening on port %d\n", dp_httpd_port(s->http));
  fflush(stdout);
  uv_run(&s->loop, UV_RUN_DEFAULT);
  /* every run finished: join the workers and close what is left */
  for (int i = 0; i < s->nworkers; i++) uv_thread_join(&s->threads[i]);
  uv_walk(&s->loop, close_walk, NULL);
  uv_run(&s->loop, UV_RUN_DEFAULT);
  dp_log(DP_LOG_INFO, "serve: stopped");
  return 0;
}
