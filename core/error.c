/* error.c - error names, messages and the detail struct. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *dp_err_name(int code) {
  switch (code) {
#define DP__ERR_NAME(name, c, msg) case c: return "DP_" #name;
    DP_ERRNO_MAP(DP__ERR_NAME)
#undef DP__ERR_NAME
  }
  return "DP_EUNKNOWN";
}

const char *dp_strerror(int code) {
  switch (code) {
#define DP__ERR_MSG(name, c, msg) case c: return msg;
    DP_ERRNO_MAP(DP__ERR_MSG)
#undef DP__ERR_MSG
  }
  return "unknown error";
}

int dp_err_set(dp_err *e, int code, const char *fmt, ...) {
  if (e == NULL) return code;
  e->code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return code;
}

void dp_err_prefix(dp_err *e, const char *fmt, ...) {
  if (e == NULL) return;
  char prefix[512], old[sizeof e->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, e->msg, sizeof old);
  snprintf(e->msg, sizeof e->msg, "%s%s", prefix, old);
}

void dp_err_clear(dp_err *e) {
  if (e == NULL) return;
  e->code = 0;
  e->msg[0] = '\0';
}
