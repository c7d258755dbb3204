/* testhook.c - pause points for crash tests (see testhook.h). */
#include "testhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void dp_test_pause(const char *point) {
  const char *want = getenv("DP_TEST_PAUSE");
  if (!want || strcmp(want, point) != 0) return;
  const char *marker = getenv("DP_TEST_PAUSE_FILE");
  if (marker) {
    FILE *f = fopen(marker, "w");
    if (f) {
      fprintf(f, "%ld\n", (long)getpid());
      fclose(f);
    }
  }
  /* the spec kills us long before; DP_TEST_PAUSE_SECONDS makes it a pause the run survives */
  const char *secs = getenv("DP_TEST_PAUSE_SECONDS");
  double d = secs && *secs ? strtod(secs, NULL) : 120.0;
  if (d > 0) usleep((useconds_t)(d * 1e6));
}
