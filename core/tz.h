/* tz.h - IANA time zones from the system tz database (TZif files), without touching the
 * process's TZ variable: each zone is a value, so threads and several zones can coexist.
 *
 * A zone is read from $TZDIR/NAME (default /usr/share/zoneinfo/NAME): the 64-bit transition
 * table of a TZif v2+ file, and its footer (a POSIX TZ rule such as "CET-1CEST,M3.5.0,M10.5.0/3")
 * for instants after the last transition. */
#ifndef DP_TZ_H
#define DP_TZ_H

#include <stdint.h>
#include "error.h"

typedef struct dp_tz dp_tz;

/* Loads the zone NAME ("UTC", "Europe/Amsterdam"). The name must be a relative path of
 * letters, digits, '_', '+', '-' segments (no "..", no leading "/"). Returns 0 and *out (owned by
 * the caller: free with dp_tz_free), DP_ENOTFOUND when no zoneinfo file has that name, DP_EINVAL
 * for a malformed name, DP_EIO/DP_EJSON for an unreadable or damaged file; e names the zone. */
int dp_tz_load(const char *name, dp_tz **out, dp_err *e);
void dp_tz_free(dp_tz *tz);

/* The zone's name, as given to dp_tz_load. Owned by tz. */
const char *dp_tz_name(const dp_tz *tz);

/* The offset from UTC (seconds east, e.g. 3600 for CET) in force at instant t (Unix seconds). */
int32_t dp_tz_offset(const dp_tz *tz, int64_t t);

/* Wall-clock time to instant. wall is a local date and time counted like Unix seconds (as if the
 * zone were UTC: days since 1970-01-01 * 86400 + seconds of the day).
 * - exists once: that instant;
 * - repeated (a fall-back hour): the first (earlier) instant; *fold is set to 1;
 * - skipped (a spring-forward gap): the instant the gap ends (the first valid time after it);
 *   *gap is set to 1.
 * fold and gap may be NULL. */
int64_t dp_tz_from_wall(const dp_tz *tz, int64_t wall, int *fold, int *gap);

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1-12), and back. */
/* The UTC time unix_us (microseconds since 1970) as ISO 8601 with digits (0..6) fraction
 * digits: "2026-12-07T12:48:46.123Z". out holds at least DP_ISO_UTC_MAX bytes. */
#define DP_ISO_UTC_MAX 40
void dp_iso_utc(char *out, int64_t unix_us, int digits);
int64_t dp_days_from_civil(int64_t y, unsigned m, unsigned d);
void dp_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);

#endif
