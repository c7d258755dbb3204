/* log.h - the engine's logger: text or JSON lines on stderr, filtered by level.
 * Configured once by the composition root (dp_log_configure); safe to call before. */
#ifndef DP_LOG_H
#define DP_LOG_H

#include <stddef.h>

typedef enum { DP_LOG_DEBUG = 0, DP_LOG_INFO, DP_LOG_WARN, DP_LOG_ERROR } dp_log_level;

/* level: "debug"|"info"|"warn"|"error" (NULL keeps info); format: "text"|"json". */
int dp_log_configure(const char *level, const char *format);
int dp_log_level_parse(const char *s, dp_log_level *out);
/* Writes one line: the message is formatted, secret values are redacted (redact.h), then every
 * byte that could end the line or fool a terminal is escaped (dp_log_escape), so a file name or
 * a record value cannot forge a log line. */
void dp_log(dp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A second destination for this thread's lines of level info and above (whatever DP_LOG_LEVEL
 * says): the Prefect reporter of the run on this thread ships them. msg is redacted, not
 * escaped, and only valid during the call. fn NULL removes it. */
typedef void (*dp_log_sink_fn)(void *ud, dp_log_level level, const char *msg);
void dp_log_set_sink(dp_log_sink_fn fn, void *ud);

/* What this thread's lines are about: JSON lines carry run_id, system, entity and layer as fields
 * (docs/cli.md#logs). The values are copied; NULL clears. A run sets its id and system once
 * (dp_log_scope_run) and the layer and entity of each step (dp_log_scope_step). */
void dp_log_scope_run(const char *run_id, const char *system);
void dp_log_scope_step(const char *layer, const char *entity);

typedef struct dp_counts dp_counts;
/* dp_log with an event name ("run_started", "layer_succeeded", "progress", ...) and the step's
 * counts (NULL: none), which JSON lines carry as the fields event and counts. */
void dp_log_event(dp_log_level level, const char *event, const dp_counts *counts, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* 1 when lines are JSON (DP_LOG_FORMAT=json). */
int dp_log_is_json(void);

typedef struct dp_buf dp_buf;
/* Appends s (len bytes, any bytes) to b with these escaped: line feed, carriage return and tab
 * as \n \r \t; other C0 controls and DEL as \xNN (json: \u00NN); C1 controls, U+2028/U+2029
 * and the bidirectional overrides as \uNNNN; bytes that are not well-formed UTF-8 as \xNN
 * (json: \\xNN, so the decoded text reads \xNN). json: also " and \ escaped, so b gets a
 * valid JSON string body. Other text is kept as it is (a backslash stays one backslash in text
 * form). Returns 0 or DP_ENOMEM. */
int dp_log_escape(dp_buf *b, const char *s, size_t len, int json);
/* s (NUL-terminated; NULL as "") escaped as dp_log_escape's text form into dst, cut to cap - 1
 * bytes at a unit boundary; always NUL-terminated (cap > 0). Returns dst. For names that go into
 * error messages (which reach audit rows and the run summary) as well as logs. */
const char *dp_log_shown(const char *s, char *dst, size_t cap);

/* Seconds of a monotonic clock, for durations (what logs, audit and progress report). */
double dp_monotonic(void);

#endif
