/* log.h - the engine's logger: text or JSON lines on stderr, filtered by level.
 * Configured once by the composition root (dp_log_configure); safe to call before. */
#ifndef DP_LOG_H
#define DP_LOG_H

typedef enum { DP_LOG_DEBUG = 0, DP_LOG_INFO, DP_LOG_WARN, DP_LOG_ERROR } dp_log_level;

/* level: "debug"|"info"|"warn"|"error" (NULL keeps info); format: "text"|"json". */
int dp_log_configure(const char *level, const char *format);
int dp_log_level_parse(const char *s, dp_log_level *out);
void dp_log(dp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Seconds of a monotonic clock, for durations (what logs, audit and progress report). */
double dp_monotonic(void);

#endif
