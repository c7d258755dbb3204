/* cron.h - 5-field cron expressions (Vixie cron's syntax and day rule), evaluated in a time zone.
 *
 * Fields: minute (0-59) hour (0-23) day-of-month (1-31) month (1-12 or jan-dec) day-of-week (0-7
 * or sun-sat; 0 and 7 are Sunday). Each field is a comma list of `*`, `N`, `N-M`, each with an
 * optional `/STEP`. Macros: @yearly @annually @monthly @weekly @daily @midnight @hourly.
 * Day rule (Vixie): when day-of-month and day-of-week are both restricted (neither starts with
 * `*`), a day matches if EITHER matches; otherwise both must (so a `*` one matches every day).
 *
 * Daylight saving: the expression matches local wall-clock times. A local time skipped by a
 * spring-forward gap fires once, at the first valid instant after the gap; a local time repeated
 * by a fall-back fires once, at its first occurrence. */
#ifndef DP_CRON_H
#define DP_CRON_H

#include <stdint.h>
#include "error.h"
#include "tz.h"

typedef struct dp_cron {
  uint64_t minutes; /* bit i: minute i */
  uint32_t hours;   /* bit i: hour i */
  uint32_t mdays;   /* bit i: day i (1-31) */
  uint16_t months;  /* bit i: month i (1-12) */
  uint8_t wdays;    /* bit i: weekday i (0 = Sunday) */
  uint8_t mday_star, wday_star;
} dp_cron;

/* Parses expr into c. Returns 0, or DP_EINVAL with e saying which field and why. */
int dp_cron_parse(const char *expr, dp_cron *c, dp_err *e);

/* Whether the local wall time (see dp_tz_from_wall: days*86400 + seconds) matches c. */
int dp_cron_matches_wall(const dp_cron *c, int64_t wall);

/* The first instant strictly after `after` (Unix seconds) at which c fires in zone tz. Returns 0
 * and *next, or DP_ENOTFOUND when it never fires within 10 years (e.g. "0 0 30 2 *"). */
int dp_cron_next(const dp_cron *c, const dp_tz *tz, int64_t after, int64_t *next);

/* The latest instant at or before `at` at which c fires (the previous slot), for catch-up.
 * Returns 0 and *prev, or DP_ENOTFOUND when none within 10 years. */
int dp_cron_prev(const dp_cron *c, const dp_tz *tz, int64_t at, int64_t *prev);

typedef struct lua_State lua_State;
/* Registrar for dp.core (see luamod.c): cron_check(expr), cron_next(expr, tz, after),
 * cron_prev(expr, tz, at), tz_offset(tz, t), tz_check(name). */
void dp_cron_lua_register(lua_State *L);

#endif
