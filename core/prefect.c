/* prefect.c - the Prefect 3 REST client and the per-run reporter (see prefect.h). */
#include "config.h"
#include "prefect.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "tz.h"
#include "run.h"
#include "uuid.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Timeouts: a reporting call is given little time, so that a Prefect that hangs costs the run
 * at most a few seconds in all (docs/orchestration.md). */
#define CONNECT_MS 500L
#define CALL_MS 1500L
#define END_WAIT_S 2.0       /* at the end of a run: how long the queue may still be sent */
#define BACKOFF_FIRST_S 0.2
#define BACKOFF_MAX_S 2.0
#define LOG_BATCH 200        /* log lines per POST /logs/ */
#define LOG_QUEUE_MAX 20000  /* log lines waiting; more are dropped (and counted) */

/* ------------------------------------------------------------------------------------------ */
/* configuration */

static dp_prefect_settings settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static const char *setting(const char *name) {
  const char *v = dp_config_env(name);
  return v ? strdup(v) : NULL;
}

static void read_settings(void) {
  settings.api_url = setting("PREFECT_API_URL");
  settings.auth_string = setting("PREFECT_API_AUTH_STRING");
  settings.api_key = setting("PREFECT_API_KEY");
  settings.ui_url = setting("PREFECT_UI_URL");
  settings.flow_run_id = setting("PREFECT__FLOW_RUN_ID");
}

const dp_prefect_settings *dp_prefect_env(void) {
  pthread_once(&settings_once, read_settings);
  return &settings;
}

/* ------------------------------------------------------------------------------------------ */
/* client */

struct dp_prefect_client {
  dp_http *h;
  char url[1024];
  char auth[1200];      /* "Authorization: ..." or "" */
  long timeout_ms;
};

/* Returns a client (caller frees with dp_prefect_client_free), NULL when not configured. */
dp_prefect_client *dp_prefect_client_from_env(long timeout_ms, dp_err *e) {
  const char *url = dp_prefect_env()->api_url;
  if (!url) return NULL;
  if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
    dp_err_set(e, DP_ECONFIG, "PREFECT_API_URL must start with http:// or https://");
    return NULL;
  }
  if (strlen(url) >= 1000) {
    dp_err_set(e, DP_ECONFIG, "PREFECT_API_URL is too long");
    return NULL;
  }
  dp_prefect_client *c = calloc(1, sizeof *c);
  if (!c) { dp_err_set(e, DP_ENOMEM, "out of memory"); return NULL; }
  snprintf(c->url, sizeof c->url, "%s", url);
  size_t n = strlen(c->url);
  while (n > 0 && c->url[n - 1] == '/') c->url[--n] = '\0';
  c->timeout_ms = timeout_ms > 0 ? timeout_ms : CALL_MS;
  const char *basic = dp_prefect_env()->auth_string;
  const char *key = dp_prefect_env()->api_key;
  if (basic && *basic) {
    size_t bl = strlen(basic);
    if (bl > 600) { free(c); dp_err_set(e, DP_ECONFIG, "PREFECT_API_AUTH_STRING is too long"); return NULL; }
    char b64[900];
    sodium_bin2base64(b64, sizeof b64, (const unsigned char *)basic, bl, sodium_base64_VARIANT_ORIGINAL);
    snprintf(c->auth, sizeof c->auth, "Authorization: Basic %s", b64);
    sodium_memzero(b64, sizeof b64);
  } else if (key && *key) {
    if (strlen(key) > 1000) { free(c); dp_err_set(e, DP_ECONFIG, "PREFECT_API_KEY is too long"); return NULL; }
    snprintf(c->auth, sizeof c->auth, "Authorization: Bearer %s", key);
  }
  c->h = dp_http_new(e);
  if (!c->h) { free(c); return NULL; }
  return c;
}

/* Frees the client (its auth header is wiped). */
void dp_prefect_client_free(dp_prefect_client *c) {
  if (!c) return;
  dp_http_free(c->h);
  sodium_memzero(c->auth, sizeof c->auth);
  free(c);
}

const char *dp_prefect_client_url(const dp_prefect_client *c) { return c->url; }

int dp_prefect_call(dp_prefect_client *c, const char *method, const char *path, const char *json,
                    long *status, dp_buf *body, dp_err *e) {
  char url[2048];
  snprintf(url, sizeof url, "%s%s", c->url, path);
  const char *hdr[3] = {"Content-Type: application/json", "Accept: application/json", c->auth};
  dp_http_req req = {.method = method, .url = url, .headers = hdr, .nheaders = c->auth[0] ? 3 : 2,
                     .body = json, .body_len = json ? strlen(json) : 0, .connect_timeout_ms = CONNECT_MS,
                     .timeout_ms = c->timeout_ms, .max_bytes = 8u << 20};
  dp_http_resp resp;
  memset(&resp, 0, sizeof resp);
  *status = 0;
  dp_buf_reset(body);
  int rc = dp_http_perform(c->h, &req, &resp, e);
  if (rc == 0) {
    *status = resp.status;
    dp_buf_append(body, resp.body.data ? resp.body.data : "", resp.body.len);
    if (resp.status < 200 || resp.status > 299) {
      char shown[300];
      char part[240];
      snprintf(part, sizeof part, "%.*s", (int)(resp.body.len < 200 ? resp.body.len : 200),
               resp.body.data ? resp.body.data : "");
      rc = dp_err_set(e, DP_EIO, "%s %s: HTTP %ld: %s", method, path, resp.status,
                      dp_log_shown(part, shown, sizeof shown));
    }
  } else {
    dp_err_prefix(e, "%s %s%s: ", method, c->url, path);
  }
  dp_http_resp_free(&resp);
  return rc;
}

int dp_prefect_json_str(const char *json, size_t len, const char *path, char *out, size_t cap, dp_err *e) {
  const char *v;
  size_t vl;
  int rc = dp_json_select(json, len, path, strlen(path), &v, &vl, e);
  if (rc) return rc;
  if (vl < 2 || v[0] != '"' || memchr(v + 1, '\\', vl - 2) || vl - 2 >= cap)
    return dp_err_set(e, DP_ENOTFOUND, "%s is not a simple string", path);
  memcpy(out, v + 1, vl - 2);
  out[vl - 2] = '\0';
  return 0;
}

/* dp_prefect_call, tried again twice (after 0.1 s, then 0.3 s) when the server answered 5xx or
 * 429: a busy server (its SQLite locked) says 503 now and then. A network failure or a timeout
 * is not tried again here: the caller must not wait. For idempotent requests only. */
int dp_prefect_call_retry(dp_prefect_client *c, const char *method, const char *path, const char *json,
                          long *status, dp_buf *body, dp_err *e) {
  int rc = 0;
  for (int attempt = 0; attempt < 3; attempt++) {
    if (attempt) usleep(attempt == 1 ? 100000 : 300000);
    rc = dp_prefect_call(c, method, path, json, status, body, e);
    if (rc == 0 || !(*status >= 500 || *status == 429)) break;
  }
  return rc;
}

int dp_prefect_flow_id(dp_prefect_client *c, const char *flow_name, char id[37], dp_err *e) {
  dp_buf req = DP_BUF_INIT, body = DP_BUF_INIT;
  long st;
  dp_buf_puts(&req, "{\"name\":");
  dp_json_put_string(&req, flow_name, strlen(flow_name));
  dp_buf_puts(&req, ",\"tags\":[\"dp-engine\"]}");
  int rc = dp_prefect_call_retry(c, "POST", "/flows/", req.data, &st, &body, e);
  if (rc == 0) rc = dp_prefect_json_str(body.data, body.len, "id", id, 37, e);
  dp_buf_free(&req);
  dp_buf_free(&body);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* attach mode */

void dp_prefect_params_free(dp_prefect_params *p) {
  for (int i = 0; i < p->nentities; i++) free(p->entities[i]);
  free(p->entities);
  memset(p, 0, sizeof *p);
}

typedef struct strs {
  char **v;
  int n;
  int bad;
} strs;

static int collect_str(void *ud, const char *elem, size_t len) {
  strs *s = ud;
  if (len < 2 || elem[0] != '"' || memchr(elem + 1, '\\', len - 2)) { s->bad = 1; return DP_EINVAL; }
  char **nv = realloc(s->v, (size_t)(s->n + 1) * sizeof *nv);
  if (!nv) return DP_ENOMEM;
  s->v = nv;
  s->v[s->n] = strndup(elem + 1, len - 2);
  if (!s->v[s->n]) return DP_ENOMEM;
  s->n++;
  return 0;
}

/* Fills p from the flow run's parameters (see prefect.h). */
int dp_prefect_attach_params(dp_prefect_params *p, dp_err *e) {
  memset(p, 0, sizeof *p);
  const char *id = dp_prefect_env()->flow_run_id;
  if (!id) return 0;
  uint8_t raw[16];
  if (dp_uuid_parse(id, raw) != 0) return dp_err_set(e, DP_EINVAL, "PREFECT__FLOW_RUN_ID is not a UUID");
  dp_err ce;
  dp_err_clear(&ce);
  dp_prefect_client *c = dp_prefect_client_from_env(CALL_MS, &ce);
  if (!c) {
    if (ce.code) dp_log(DP_LOG_WARN, "prefect: %s", ce.msg);
    else dp_log(DP_LOG_WARN, "prefect: PREFECT__FLOW_RUN_ID is set but PREFECT_API_URL is not: not attached");
    return 0;
  }
  char path[80];
  snprintf(path, sizeof path, "/flow_runs/%s", id);
  dp_buf body = DP_BUF_INIT;
  long st;
  int rc = dp_prefect_call(c, "GET", path, NULL, &st, &body, &ce);
  dp_prefect_client_free(c);
  if (rc) {
    dp_log(DP_LOG_WARN, "prefect: cannot read flow run %s (%s): running with the command line's options", id, ce.msg);
    dp_buf_free(&body);
    return 0;
  }
  const char *v;
  size_t vl;
  strs s = {0};
  rc = 0;
  if (dp_json_select(body.data, body.len, "parameters.entities", 19, &v, &vl, &ce) == 0 && !(vl == 4 && !memcmp(v, "null", 4))) {
    if (v[0] != '[' || dp_json_array_each(v, vl, collect_str, &s, &ce) != 0) {
      rc = dp_err_set(e, DP_EINVAL, "flow run %s: parameter entities must be a list of entity names", id);
      goto done;
    }
    p->entities = s.v;
    p->nentities = s.n;
    s.v = NULL;
    s.n = 0;
  }
  if (dp_json_select(body.data, body.len, "parameters.layers", 17, &v, &vl, &ce) == 0 && !(vl == 4 && !memcmp(v, "null", 4))) {
    if (v[0] != '[' || dp_json_array_each(v, vl, collect_str, &s, &ce) != 0) {
      rc = dp_err_set(e, DP_EINVAL, "flow run %s: parameter layers must be a list of raw, bronze, silver", id);
      goto done;
    }
    for (int i = 0; i < s.n; i++) {
      if (strcmp(s.v[i], "raw") == 0) p->layers |= DP_LAYER_RAW;
      else if (strcmp(s.v[i], "bronze") == 0) p->layers |= DP_LAYER_BRONZE;
      else if (strcmp(s.v[i], "silver") == 0) p->layers |= DP_LAYER_SILVER;
      else { rc = dp_err_set(e, DP_EINVAL, "flow run %s: unknown layer %.40s", id, s.v[i]); goto done; }
    }
  }
  if (dp_json_select(body.data, body.len, "parameters.full_refresh", 23, &v, &vl, &ce) == 0)
    p->full_refresh = vl == 4 && memcmp(v, "true", 4) == 0;
  rc = 1;
done:
  for (int i = 0; i < s.n; i++) free(s.v[i]);
  free(s.v);
  if (rc != 1) dp_prefect_params_free(p);
  dp_buf_free(&body);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* reporter */

typedef struct task {
  char entity[256];
  char layer[16];
  char id[37];          /* the task run's id, once created (written by the worker only) */
  int create_failed;
  struct task *upstream;
  struct task *next;
} task;

enum { OP_TASK_CREATE, OP_TASK_STATE, OP_FLOW_STATE, OP_LOG };

typedef struct op {
  int kind;
  task *t;              /* OP_TASK_*, and the task of a log line (may be NULL) */
  char type[16];        /* state type: RUNNING, COMPLETED, FAILED, CRASHED */
  char target[37];      /* OP_FLOW_STATE: the flow run ("" = this run's) */
  char *msg;            /* state message or log line (owned) */
  int level;            /* log: Python level (20, 30, 40) */
  char ts[40];
  struct op *next;
} op;

struct dp_prefect {
  dp_prefect_client *c;
  char flow_run_id[37];
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  op *head, *tail;
  int nlogs_queued, logs_dropped;
  int closing;
  double deadline;
  task *tasks, *last_task;
  task *current;        /* the task log lines belong to (run thread only) */
  int ntasks;
  /* what the worker found */
  int warned;
  int stopped;
  int ops_unsent;       /* task runs and states not sent */
  int logs_unsent;      /* log lines not sent (beyond those dropped) */
  char problem[1000];   /* the first call that was given up, or where reporting stopped */
  char last_error[256]; /* of the last call that is to be retried */
};

/* Now as ISO 8601 (out: DP_ISO_UTC_MAX bytes). */
static void now_iso(char *out) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  dp_iso_utc(out, (int64_t)tv.tv_sec * 1000000 + tv.tv_usec, 6);
}

/* p->problem = prefix what: msg, cut at a character boundary when it does not fit. */
static void set_problem(dp_prefect *p, const char *prefix, const char *what, const char *msg) {
  dp_buf b = DP_BUF_INIT;
  dp_buf_printf(&b, "%s%s: %s", prefix, what, msg);
  dp_utf8_copy(p->problem, sizeof p->problem, b.data ? b.data : "");
  dp_buf_free(&b);
}

static void op_free(op *o) {
  if (!o) return;
  free(o->msg);
  free(o);
}

/* Queues o (taken; NULL, from an op_new out of memory, is ignored). */
static void enqueue(dp_prefect *p, op *o) {
  if (!o) return;
  pthread_mutex_lock(&p->mu);
  if (o->kind == OP_LOG) {
    if (p->nlogs_queued >= LOG_QUEUE_MAX) {
      p->logs_dropped++;
      pthread_mutex_unlock(&p->mu);
      op_free(o);
      return;
    }
    p->nlogs_queued++;
  }
  if (p->tail) p->tail->next = o;
  else p->head = o;
  p->tail = o;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

static op *op_new(int kind, task *t, const char *type, const char *msg) {
  op *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  o->kind = kind;
  o->t = t;
  if (type) snprintf(o->type, sizeof o->type, "%s", type);
  if (msg) o->msg = strdup(msg);
  now_iso(o->ts);
  return o;
}

/* The log sink (log.h): lines of the run's thread, info and above, already redacted. */
static void log_sink(void *ud, dp_log_level level, const char *msg) {
  dp_prefect *p = ud;
  op *o = op_new(OP_LOG, p->current, NULL, msg);
  if (!o) return;
  o->level = level == DP_LOG_ERROR ? 40 : level == DP_LOG_WARN ? 30 : 20;
  enqueue(p, o);
}

static const char *state_name(const char *type) {
  if (strcmp(type, "RUNNING") == 0) return "Running";
  if (strcmp(type, "COMPLETED") == 0) return "Completed";
  if (strcmp(type, "FAILED") == 0) return "Failed";
  if (strcmp(type, "CRASHED") == 0) return "Crashed";
  if (strcmp(type, "PENDING") == 0) return "Pending";
  return type;
}

static void describe(const dp_prefect *p, const op *o, int nlogs, char *out, size_t cap) {
  switch (o->kind) {
    case OP_TASK_CREATE: snprintf(out, cap, "creating task run %s/%s", o->t->entity, o->t->layer); break;
    case OP_TASK_STATE: snprintf(out, cap, "task run %s/%s -> %s", o->t->entity, o->t->layer, o->type); break;
    case OP_FLOW_STATE:
      snprintf(out, cap, "flow run %s -> %s", o->target[0] ? o->target : p->flow_run_id, o->type);
      break;
    default: snprintf(out, cap, "sending %d log line(s)", nlogs); break;
  }
}

/* Result of one call. */
enum { SENT, RETRY, GIVE_UP, STOP };

/* Sends a state; checks the orchestration result's status. */
/* The body of a set_state call: the state (type, its name, the message) without force. */
static void state_body(dp_buf *req, const char *type, const char *msg) {
  dp_buf_printf(req, "{\"state\":{\"type\":\"%s\",\"name\":\"%s\"", type, state_name(type));
  if (msg) {
    dp_buf_puts(req, ",\"message\":\"");
    dp_log_escape(req, msg, strlen(msg), 1);
    dp_buf_puts(req, "\"");
  }
  dp_buf_puts(req, "},\"force\":false}");
}

static int send_state(dp_prefect *p, const char *path, const char *type, const char *msg, double *wait_s,
                      dp_err *e) {
  dp_buf req = DP_BUF_INIT, body = DP_BUF_INIT;
  state_body(&req, type, msg);
  long st;
  int rc = dp_prefect_call(p->c, "POST", path, req.data, &st, &body, e);
  int res = SENT;
  if (rc) {
    res = (st == 0 || st >= 500 || st == 429 || st == 408) ? RETRY : GIVE_UP;
  } else {
    char status[16] = "";
    dp_err je;
    dp_prefect_json_str(body.data, body.len, "status", status, sizeof status, &je);
    if (strcmp(status, "ACCEPT") == 0) {
      res = SENT;
    } else if (strcmp(status, "WAIT") == 0) {
      const char *v;
      size_t vl;
      double d = 1.0;
      if (dp_json_select(body.data, body.len, "details.delay_seconds", 21, &v, &vl, &je) == 0) d = strtod(v, NULL);
      *wait_s = d < 0.1 ? 0.1 : d > BACKOFF_MAX_S ? BACKOFF_MAX_S : d;
      dp_err_set(e, DP_EIO, "%s: Prefect said WAIT", path);
      res = RETRY;
    } else {
      char reason[300] = "";
      dp_prefect_json_str(body.data, body.len, "details.reason", reason, sizeof reason, &je);
      dp_err_set(e, DP_EIO, "%s %s: Prefect said %s%s%s", path, type, status[0] ? status : "(no status)",
                 reason[0] ? ": " : "", reason);
      /* REJECT: this state will not be taken; it is not sent again (it would be stale). ABORT:
       * the run is gone or finished elsewhere: nothing more to report on it. */
      res = strcmp(status, "ABORT") == 0 && strncmp(path, "/flow_runs/", 11) == 0 ? STOP : GIVE_UP;
    }
  }
  dp_buf_free(&req);
  dp_buf_free(&body);
  return res;
}

/* Builds and sends one op (with the log lines after it when it is a log line). *taken: how
 * many ops of the queue it covers. Called without the lock; the ops it reads are not changed by
 * the run thread once queued. */
static int send_op(dp_prefect *p, op *o, int *taken, double *wait_s, dp_err *e) {
  char path[120];
  *taken = 1;
  if (o->kind == OP_TASK_CREATE) {
    task *t = o->t;
    dp_buf req = DP_BUF_INIT, body = DP_BUF_INIT;
    dp_buf_printf(&req, "{\"flow_run_id\":\"%s\",\"task_key\":", p->flow_run_id);
    char key[64];
    snprintf(key, sizeof key, "dp-engine.%s", t->layer);
    dp_json_put_string(&req, key, strlen(key));
    dp_buf_puts(&req, ",\"dynamic_key\":");
    dp_json_put_string(&req, t->entity, strlen(t->entity));
    char name[300];
    snprintf(name, sizeof name, "%s/%s", t->entity, t->layer);
    dp_buf_puts(&req, ",\"name\":");
    dp_json_put_string(&req, name, strlen(name));
    dp_buf_printf(&req, ",\"tags\":[\"dp-engine\",\"layer:%s\"]", t->layer);
    dp_buf_puts(&req, ",\"task_inputs\":{");
    if (t->upstream && t->upstream->id[0])
      dp_buf_printf(&req, "\"upstream\":[{\"input_type\":\"task_run\",\"id\":\"%s\"}]", t->upstream->id);
    dp_buf_puts(&req, "},\"state\":{\"type\":\"PENDING\",\"name\":\"Pending\"}}");
    long st;
    int rc = dp_prefect_call(p->c, "POST", "/task_runs/", req.data, &st, &body, e);
    int res = SENT;
    if (rc) res = (st == 0 || st >= 500 || st == 429 || st == 408) ? RETRY : GIVE_UP;
    else if (dp_prefect_json_str(body.data, body.len, "id", t->id, sizeof t->id, e) != 0) res = GIVE_UP;
    if (res == GIVE_UP) t->create_failed = 1;
    dp_buf_free(&req);
    dp_buf_free(&body);
    return res;
  }
  if (o->kind == OP_TASK_STATE) {
    if (!o->t->id[0]) {
      dp_err_set(e, DP_EIO, "task run %s/%s was not created", o->t->entity, o->t->layer);
      return GIVE_UP;
    }
    snprintf(path, sizeof path, "/task_runs/%s/set_state", o->t->id);
    return send_state(p, path, o->type, o->msg, wait_s, e);
  }
  if (o->kind == OP_FLOW_STATE) {
    snprintf(path, sizeof path, "/flow_runs/%s/set_state", o->target[0] ? o->target : p->flow_run_id);
    int res = send_state(p, path, o->type, o->msg, wait_s, e);
    if (res == STOP && o->target[0]) res = GIVE_UP; /* an old run's CRASHED: not this run's end */
    return res;
  }
  /* log lines: this one and those right after it, one batch */
  dp_buf req = DP_BUF_INIT, body = DP_BUF_INIT;
  dp_buf_putc(&req, '[');
  int n = 0;
  pthread_mutex_lock(&p->mu);
  for (op *x = o; x && x->kind == OP_LOG && n < LOG_BATCH; x = x->next, n++) {
    if (n) dp_buf_putc(&req, ',');
    dp_buf_printf(&req, "{\"name\":\"dp-engine\",\"level\":%d,\"timestamp\":\"%s\",\"flow_run_id\":\"%s\",\"task_run_id\":",
                  x->level, x->ts, p->flow_run_id);
    if (x->t && x->t->id[0]) dp_buf_printf(&req, "\"%s\"", x->t->id);
    else dp_buf_puts(&req, "null");
    dp_buf_puts(&req, ",\"message\":\"");
    dp_log_escape(&req, x->msg ? x->msg : "", x->msg ? strlen(x->msg) : 0, 1);
    dp_buf_puts(&req, "\"}");
  }
  pthread_mutex_unlock(&p->mu);
  dp_buf_putc(&req, ']');
  *taken = n;
  long st;
  int rc = dp_prefect_call(p->c, "POST", "/logs/", req.data, &st, &body, e);
  dp_buf_free(&req);
  dp_buf_free(&body);
  if (rc) return (st == 0 || st >= 500 || st == 429 || st == 408) ? RETRY : GIVE_UP;
  return SENT;
}

/* A state op with a later state op for the same run in the queue is stale: the later one wins
 * (so after a retry Prefect never gets RUNNING after COMPLETED). Lock held. */
static int superseded(const op *o) {
  if (o->kind != OP_TASK_STATE && o->kind != OP_FLOW_STATE) return 0;
  for (const op *x = o->next; x; x = x->next)
    if (x->kind == o->kind && x->t == o->t && strcmp(x->target, o->target) == 0) return 1;
  return 0;
}

/* Pops n ops. Lock held. */
static void pop(dp_prefect *p, int n) {
  while (n-- > 0 && p->head) {
    op *o = p->head;
    p->head = o->next;
    if (!p->head) p->tail = NULL;
    if (o->kind == OP_LOG) p->nlogs_queued--;
    op_free(o);
  }
}

static void deadline_in(struct timespec *ts, double s) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  long long ns = ts->tv_nsec + (long long)(s * 1e9);
  ts->tv_sec += (time_t)(ns / 1000000000LL);
  ts->tv_nsec = (long)(ns % 1000000000LL);
}

static void *worker(void *ud) {
  dp_prefect *p = ud;
  int attempt = 0;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->head && !p->closing) pthread_cond_wait(&p->cv, &p->mu);
    if (!p->head) break;
    if (p->stopped) {
      for (op *x = p->head; x; x = x->next) {
        if (x->kind == OP_LOG) p->logs_unsent++;
        else p->ops_unsent++;
      }
      pop(p, 1 << 30);
      continue;
    }
    op *o = p->head;
    if (superseded(o)) { pop(p, 1); continue; }
    if (p->closing) {
      /* the run has ended: no call may outlast the wait at its end */
      double left = p->deadline - dp_monotonic();
      if (left < 0.05) {
        char what[400];
        describe(p, o, 1, what, sizeof what);
        p->stopped = 1;
        if (!strstr(p->problem, "reporting stopped"))
          snprintf(p->problem, sizeof p->problem, "reporting stopped at %s: no time left at the end of the run%s%s%s",
                   what, p->last_error[0] ? " (last error: " : "", p->last_error, p->last_error[0] ? ")" : "");
        continue;
      }
      p->c->timeout_ms = left * 1000 < CALL_MS ? (long)(left * 1000) : CALL_MS;
    }
    pthread_mutex_unlock(&p->mu);
    dp_err e;
    dp_err_clear(&e);
    int taken = 1;
    double wait_s = 0;
    int res = send_op(p, o, &taken, &wait_s, &e);
    char what[400];
    describe(p, o, taken, what, sizeof what);
    pthread_mutex_lock(&p->mu);
    if (res == SENT) {
      pop(p, taken);
      attempt = 0;
      continue;
    }
    if (res == GIVE_UP || res == STOP) {
      if (!p->problem[0]) set_problem(p, "", what, e.msg);
      if (!p->warned) {
        p->warned = 1;
        dp_log(DP_LOG_WARN, "prefect: %s (this run logs only this first reporting problem)", p->problem);
      }
      if (o->kind == OP_LOG) p->logs_unsent += taken;
      else p->ops_unsent += taken;
      pop(p, taken);
      if (res == STOP) p->stopped = 1;
      attempt = 0;
      continue;
    }
    /* RETRY, with back-off, until the run has ended and the wait at its end is over */
    snprintf(p->last_error, sizeof p->last_error, "%.250s", e.msg);
    if (!p->warned) {
      p->warned = 1;
      dp_log(DP_LOG_WARN, "prefect: %s: %s; retrying in the background (this run logs only this first "
             "reporting problem)", what, e.msg);
    }
    double delay = wait_s > 0 ? wait_s : BACKOFF_FIRST_S * (double)(1 << (attempt < 5 ? attempt : 5));
    if (delay > BACKOFF_MAX_S) delay = BACKOFF_MAX_S;
    attempt++;
    if (p->closing && dp_monotonic() + delay > p->deadline) {
      p->stopped = 1;
      set_problem(p, "reporting stopped at ", what, e.msg);
      continue;
    }
    struct timespec ts;
    deadline_in(&ts, delay);
    int closing_before = p->closing;
    while (p->closing == closing_before) {
      if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT) break;
    }
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

const char *dp_prefect_flow_run_id(const dp_prefect *p) { return p ? p->flow_run_id : NULL; }

/* Creates the flow run: POST /flows/, then POST /flow_runs/ (PENDING). */
static int create_flow_run(dp_prefect_client *c, const dp_prefect_flow *f, const dp_runinfo *run, char id[37],
                           dp_err *e) {
  char flow_id[37];
  int rc = dp_prefect_flow_id(c, f->flow_name, flow_id, e);
  if (rc) return rc;
  uint8_t k[16];
  char key[37];
  dp_uuid_v7(k);
  dp_uuid_format(k, key);
  dp_buf req = DP_BUF_INIT, body = DP_BUF_INIT;
  dp_buf_printf(&req, "{\"flow_id\":\"%s\",\"idempotency_key\":\"dp-engine-%s\",\"state\":{\"type\":\"PENDING\","
                "\"name\":\"Pending\"},\"tags\":[\"dp-engine\",", flow_id, key);
  char tag[300];
  snprintf(tag, sizeof tag, "system:%s", f->system);
  dp_json_put_string(&req, tag, strlen(tag));
  snprintf(tag, sizeof tag, "trigger:%s", f->trigger ? f->trigger : "manual");
  dp_buf_putc(&req, ',');
  dp_json_put_string(&req, tag, strlen(tag));
  /* a run whose id was handed out before (serve): the tag finds its flow run */
  if (f->keep_run_id) dp_buf_printf(&req, ",\"dp-run:%s\"", run->id_str);
  dp_buf_printf(&req, "],\"parameters\":%s}", f->parameters_json ? f->parameters_json : "{}");
  long st;
  rc = dp_prefect_call_retry(c, "POST", "/flow_runs/", req.data, &st, &body, e); /* idempotency_key */
  if (rc == 0) rc = dp_prefect_json_str(body.data, body.len, "id", id, 37, e);
  dp_buf_free(&req);
  dp_buf_free(&body);
  return rc;
}

int dp_prefect_create_pending(const dp_prefect_flow *f, char id[37], dp_err *e) {
  dp_err_clear(e);
  dp_prefect_client *c = dp_prefect_client_from_env(CALL_MS, e);
  if (!c) return e->code ? e->code : DP_ENOTFOUND;
  dp_runinfo run;
  memset(&run, 0, sizeof run);
  dp_prefect_flow g = *f;
  g.keep_run_id = 0; /* no dp-run tag: the flow run's id becomes the run id */
  int rc = create_flow_run(c, &g, &run, id, e);
  dp_prefect_client_free(c);
  return rc;
}

void dp_prefect_set_flow_state(const char *flow_run_id, const char *type, const char *message) {
  dp_err e;
  dp_err_clear(&e);
  dp_prefect_client *c = dp_prefect_client_from_env(CALL_MS, &e);
  if (!c) return;
  dp_buf req = DP_BUF_INIT, body = DP_BUF_INIT;
  state_body(&req, type, message);
  char path[128];
  snprintf(path, sizeof path, "/flow_runs/%s/set_state", flow_run_id);
  long st;
  if (dp_prefect_call(c, "POST", path, req.data, &st, &body, &e) != 0)
    dp_log(DP_LOG_WARN, "prefect: cannot set flow run %s to %s: %s", flow_run_id, type, e.msg);
  dp_buf_free(&req);
  dp_buf_free(&body);
  dp_prefect_client_free(c);
}

/* Returns a reporter (freed by dp_prefect_end) or NULL; see prefect.h. */
dp_prefect *dp_prefect_begin(const dp_prefect_flow *f, dp_runinfo *run, char *report, size_t cap) {
  report[0] = '\0';
  dp_err e;
  dp_err_clear(&e);
  dp_prefect_client *c = dp_prefect_client_from_env(CALL_MS, &e);
  if (!c) {
    if (e.code) {
      snprintf(report, cap, "not reported: %s", e.msg);
      dp_log(DP_LOG_WARN, "prefect: %s: this run is not reported", e.msg);
    }
    return NULL;
  }
  char id[37] = "";
  const char *attach = f->flow_run_id ? f->flow_run_id : f->may_attach ? dp_prefect_env()->flow_run_id : NULL;
  uint8_t raw[16];
  if (attach && *attach && dp_uuid_parse(attach, raw) == 0) {
    dp_uuid_format(raw, id); /* the flow run exists (Prefect started us): no call needed */
  } else {
    double t0 = dp_monotonic();
    int rc = create_flow_run(c, f, run, id, &e);
    if (rc) {
      snprintf(report, cap, "not reported: no flow run (%s); the run id is the engine's own UUID v7", e.msg);
      dp_log(DP_LOG_WARN, "prefect: cannot create a flow run (%s, after %.1f s): the run goes on unreported", e.msg,
             dp_monotonic() - t0);
      dp_prefect_client_free(c);
      return NULL;
    }
  }
  dp_prefect *p = calloc(1, sizeof *p);
  if (!p) { dp_prefect_client_free(c); snprintf(report, cap, "not reported: out of memory"); return NULL; }
  p->c = c;
  snprintf(p->flow_run_id, sizeof p->flow_run_id, "%s", id);
  if (!f->keep_run_id) {
    dp_err ie;
    dp_runinfo_from_id(run, id, &ie);
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&p->th, NULL, worker, p) != 0) {
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    dp_prefect_client_free(c);
    free(p);
    snprintf(report, cap, "not reported: cannot start the reporting thread");
    return NULL;
  }
  enqueue(p, op_new(OP_FLOW_STATE, NULL, "RUNNING", NULL));
  dp_log_set_sink(log_sink, p);
  return p;
}

void dp_prefect_crashed(dp_prefect *p, const char *flow_run_id) {
  if (!p || !flow_run_id) return;
  op *o = op_new(OP_FLOW_STATE, NULL, "CRASHED", "the engine stopped before the run ended (marked at the next start)");
  if (!o) return;
  snprintf(o->target, sizeof o->target, "%s", flow_run_id);
  enqueue(p, o);
}

int dp_prefect_task_begin(dp_prefect *p, const char *entity, const char *layer) {
  if (!p) return -1;
  task *t = calloc(1, sizeof *t);
  if (!t) return -1;
  snprintf(t->entity, sizeof t->entity, "%s", entity);
  snprintf(t->layer, sizeof t->layer, "%s", layer);
  for (task *x = p->tasks; x; x = x->next)
    if (strcmp(x->entity, entity) == 0) t->upstream = x; /* the entity's latest task run */
  pthread_mutex_lock(&p->mu);
  t->next = NULL;
  if (p->last_task) p->last_task->next = t;
  else p->tasks = t;
  p->last_task = t;
  int idx = p->ntasks++;
  pthread_mutex_unlock(&p->mu);
  p->current = t;
  enqueue(p, op_new(OP_TASK_CREATE, t, NULL, NULL));
  enqueue(p, op_new(OP_TASK_STATE, t, "RUNNING", NULL));
  return idx;
}

void dp_prefect_task_end(dp_prefect *p, int idx, int ok, const char *message) {
  if (!p || idx < 0) return;
  task *t = p->tasks;
  for (int i = 0; t && i < idx; i++) t = t->next;
  if (!t) return;
  /* log lines of the step (its error too) are queued before its final state */
  enqueue(p, op_new(OP_TASK_STATE, t, ok ? "COMPLETED" : "FAILED", ok ? NULL : message));
  p->current = NULL;
}

void dp_prefect_end(dp_prefect *p, const char *status, const char *message, char *report, size_t cap) {
  if (report && cap) report[0] = '\0';
  if (!p) return;
  dp_log_set_sink(NULL, NULL);
  const char *type = strcmp(status, "succeeded") == 0 ? "COMPLETED" : strcmp(status, "crashed") == 0 ? "CRASHED" : "FAILED";
  int ok = type[0] == 'C' && type[1] == 'O';
  char msg[700];
  snprintf(msg, sizeof msg, "%s%s%s", status, message ? ": " : "", message ? message : "");
  enqueue(p, op_new(OP_FLOW_STATE, NULL, type, ok ? NULL : msg));
  pthread_mutex_lock(&p->mu);
  p->closing = 1;
  p->deadline = dp_monotonic() + END_WAIT_S;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  dp_log(DP_LOG_DEBUG, "prefect: waiting for the reporting thread");
  pthread_join(p->th, NULL);
  dp_log(DP_LOG_DEBUG, "prefect: reporting thread ended");
  if (report && cap) {
    if (p->problem[0] || p->logs_dropped)
      snprintf(report, cap, "incomplete: %s%s(%d task run or state call(s) and %d log line(s) not sent)",
               p->problem, p->problem[0] ? " " : "", p->ops_unsent, p->logs_unsent + p->logs_dropped);
  }
  while (p->tasks) {
    task *t = p->tasks;
    p->tasks = t->next;
    free(t);
  }
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  dp_prefect_client_free(p->c);
  free(p);
}
