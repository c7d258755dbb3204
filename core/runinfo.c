/* runinfo.c - run identity. */
#include "runinfo.h"
#include "uuid.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

void dp_runinfo_new(dp_runinfo *r) {
  struct timeval tv;
  dp_uuid_v7(r->id);
  dp_uuid_format(r->id, r->id_str);
  gettimeofday(&tv, NULL);
  r->ts_us = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  snprintf(r->ts_str, sizeof r->ts_str, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)tv.tv_usec);
}
