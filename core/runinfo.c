/* runinfo.c - run identity. */
#include "runinfo.h"
#include "uuid.h"
#include "error.h"
#include "tz.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

void dp_runinfo_set_ts(dp_runinfo *r, int64_t us) {
  r->ts_us = us;
  _Static_assert(sizeof r->ts_str >= DP_ISO_UTC_MAX, "ts_str holds an ISO time");
  dp_iso_utc(r->ts_str, us, 6);
}

static void stamp_now(dp_runinfo *r) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  dp_runinfo_set_ts(r, (int64_t)tv.tv_sec * 1000000 + tv.tv_usec);
}

void dp_runinfo_new(dp_runinfo *r) {
  dp_uuid_v7(r->id);
  dp_uuid_format(r->id, r->id_str);
  stamp_now(r);
}

int dp_runinfo_from_id(dp_runinfo *r, const char *id, dp_err *e) {
  if (dp_uuid_parse(id, r->id) != 0) return dp_err_set(e, DP_EINVAL, "%s is not a run id (a UUID)", id);
  dp_uuid_format(r->id, r->id_str);
  stamp_now(r);
  return 0;
}
