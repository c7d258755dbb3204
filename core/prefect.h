/* prefect.h - reporting runs to a Prefect 3 server through its REST API (docs/orchestration.md).
 *
 * Two parts:
 * - a small client (dp_prefect_client): base URL from PREFECT_API_URL, auth from
 *   PREFECT_API_AUTH_STRING (basic) or PREFECT_API_KEY (bearer), short timeouts, JSON bodies;
 *   used synchronously by `dp-engine prefect deploy` and by a reporter's first calls;
 * - a reporter (dp_prefect): one per run. dp_prefect_begin creates the flow run (or attaches to
 *   PREFECT__FLOW_RUN_ID) and hands its id back as the run id; everything after that (task runs,
 *   states, log batches) goes through a queue that a background thread sends, retrying with
 *   back-off, so a slow or stopped Prefect never holds the data run up. dp_prefect_end waits a
 *   bounded time for the queue and says where reporting stopped, if it did.
 *
 * Every reporter function accepts NULL (Prefect not configured or not reachable) and then does
 * nothing, so the run driver calls them unconditionally. */
#ifndef DP_PREFECT_H
#define DP_PREFECT_H

#include <stddef.h>
#include "buf.h"
#include "error.h"
#include "runinfo.h"

/* ---- configuration ---- */
/* The PREFECT_* variables (config.h's table), read once: the first call reads them (main calls
 * it at start, before any thread); NULL = unset or empty. Static storage, never freed. */
typedef struct dp_prefect_settings {
  const char *api_url, *auth_string, *api_key; /* PREFECT_API_URL, PREFECT_API_AUTH_STRING, PREFECT_API_KEY */
  const char *ui_url;                          /* PREFECT_UI_URL */
  const char *flow_run_id;                     /* PREFECT__FLOW_RUN_ID */
} dp_prefect_settings;
const dp_prefect_settings *dp_prefect_env(void);

/* ---- client ---- */
typedef struct dp_prefect_client dp_prefect_client;

/* A client from the environment, or NULL (e untouched, code 0) when PREFECT_API_URL is unset.
 * NULL with e set on a bad configuration. The caller frees it with dp_prefect_client_free. */
dp_prefect_client *dp_prefect_client_from_env(long timeout_ms, dp_err *e);
void dp_prefect_client_free(dp_prefect_client *c);
/* The API base URL (no trailing slash), borrowed. */
const char *dp_prefect_client_url(const dp_prefect_client *c);
/* One call: method, path under the API ("/flows/"), JSON body or NULL. Returns 0 when a 2xx
 * arrived (*status and body set), DP_EIO otherwise with e->msg (network failure or the status
 * and the start of the body). body is the caller's (reset first). */
int dp_prefect_call(dp_prefect_client *c, const char *method, const char *path, const char *json,
                    long *status, dp_buf *body, dp_err *e);
/* dp_prefect_call, tried again twice (after 0.1 s, then 0.3 s) when the server answered 5xx or
 * 429 (a busy server); never after a timeout. Only for calls that are safe to repeat. */
int dp_prefect_call_retry(dp_prefect_client *c, const char *method, const char *path, const char *json,
                          long *status, dp_buf *body, dp_err *e);
/* POST /flows/ (create or find by name); writes the id. */
int dp_prefect_flow_id(dp_prefect_client *c, const char *flow_name, char id[37], dp_err *e);
/* The string at a dotted path of a JSON text, unquoted (simple strings only: no escapes);
 * 0, DP_ENOTFOUND, or DP_EJSON. */
int dp_prefect_json_str(const char *json, size_t len, const char *path, char *out, size_t cap, dp_err *e);

/* ---- attach mode: what a flow run started by Prefect asks for ---- */
typedef struct dp_prefect_params {
  char **entities;   /* owned, or NULL: every enabled entity */
  int nentities;
  unsigned layers;   /* DP_LAYER_* mask, 0: all */
  int full_refresh;
} dp_prefect_params;
/* With PREFECT__FLOW_RUN_ID set: reads GET /flow_runs/{id} and fills p from its parameters
 * ("entities": [...], "layers": [...], "full_refresh": bool). Returns 1 when attached (p filled;
 * free with dp_prefect_params_free), 0 when not in attach mode or Prefect could not be read
 * (logged), DP_EINVAL when a parameter is malformed (e set). */
int dp_prefect_attach_params(dp_prefect_params *p, dp_err *e);
void dp_prefect_params_free(dp_prefect_params *p);

/* ---- reporter ---- */
typedef struct dp_prefect dp_prefect;

typedef struct dp_prefect_flow {
  const char *flow_name;       /* "dp-engine.bank", "dp-engine.gold.spend" */
  const char *system;          /* tag "system:<name>" */
  const char *trigger;         /* tag "trigger:<kind>" */
  const char *parameters_json; /* the flow run's parameters (a JSON object), or NULL */
  int keep_run_id;             /* run->id was handed out already (serve): keep it */
  int may_attach;              /* a system run started by Prefect: use PREFECT__FLOW_RUN_ID */
  const char *flow_run_id;     /* serve: the flow run created when the run was queued (its id is
                                  the run id): attach to it; NULL otherwise */
} dp_prefect_flow;

/* serve, when it queues a run: creates its flow run (PENDING, the same flow, tags and parameters
 * dp_prefect_begin would use), so the run id serve answers with is the flow run's id. Returns 0
 * and id; DP_ENOTFOUND when PREFECT_API_URL is unset; another error (e) when Prefect cannot be
 * reached or refused: the run then keeps serve's own id and is reported as usual. Blocks for at
 * most the client's short timeouts: call it off the loop thread. */
int dp_prefect_create_pending(const dp_prefect_flow *f, char id[37], dp_err *e);
/* Best effort, blocking briefly: sets a flow run's state (e.g. CANCELLED for a queued run that
 * was merged into another one before it started). */
void dp_prefect_set_flow_state(const char *flow_run_id, const char *type, const char *message);

/* Starts reporting a run. Without PREFECT_API_URL returns NULL and *report is "". Else it
 * attaches to PREFECT__FLOW_RUN_ID or creates a flow run (short timeouts) and, unless
 * keep_run_id, replaces run's id with the flow run's; when Prefect cannot be reached it returns
 * NULL, keeps the run's own UUID v7 and writes why into report (for the audit row).
 * The caller ends the reporter with dp_prefect_end. */
dp_prefect *dp_prefect_begin(const dp_prefect_flow *f, dp_runinfo *run, char *report, size_t cap);
/* The flow run id (borrowed) or NULL. */
const char *dp_prefect_flow_run_id(const dp_prefect *p);
/* Flow runs of earlier runs the engine found left running (crash marking): set CRASHED. */
void dp_prefect_crashed(dp_prefect *p, const char *flow_run_id);
/* A task run for entity/layer, upstream of it the entity's previous task run in this run.
 * Returns a handle (>= 0) for dp_prefect_task_end, or -1. Log lines from this thread go to it
 * until it ends. */
int dp_prefect_task_begin(dp_prefect *p, const char *entity, const char *layer);
/* Ends a task run: COMPLETED, or FAILED with message. */
void dp_prefect_task_end(dp_prefect *p, int task, int ok, const char *message);
/* Ends the run: sets the flow run's final state from the audit status (succeeded -> COMPLETED,
 * failed/partial -> FAILED with message), waits at most a short bounded time for what is still
 * queued, stops the thread and frees p. report gets "" when everything was reported, else where
 * reporting stopped. */
void dp_prefect_end(dp_prefect *p, const char *status, const char *message, char *report, size_t cap);

#endif
