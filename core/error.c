/* error.c - error names, messages and the detail struct. */
#include "error.h"
#include "redact.h"

#include <stdarg.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *dp_err_name(int code) {
  switch (code) {
#define DP__ERR_NAME(name, c, exit, msg) case c: return "DP_" #name;
    DP_ERRNO_MAP(DP__ERR_NAME)
#undef DP__ERR_NAME
  }
  return "DP_EUNKNOWN";
}

int dp_err_exit_class(int code) {
  switch (code) {
#define DP__ERR_EXIT(name, c, exit, msg) case c: return exit;
    DP_ERRNO_MAP(DP__ERR_EXIT)
#undef DP__ERR_EXIT
  }
  return 1;
}

const char *dp_strerror(int code) {
  switch (code) {
#define DP__ERR_MSG(name, c, exit, msg) case c: return msg;
    DP_ERRNO_MAP(DP__ERR_MSG)
#undef DP__ERR_MSG
  }
  return "unknown error";
}

/* With secrets registered, the whole message is formatted first and redacted before it is cut
 * to the size of e->msg, so a value is never half copied (see redact.h). */
static void set_redacted(dp_err *e, const char *fmt, va_list ap) {
  char *full = NULL;
  int n = vasprintf(&full, fmt, ap);
  if (n < 0) {
    snprintf(e->msg, sizeof e->msg, "(message withheld: out of memory while redacting it)");
    return;
  }
  dp_redact_copy(full, (size_t)n, e->msg, sizeof e->msg);
  sodium_memzero(full, (size_t)n);
  free(full);
}

static void set_redacted_fmt(dp_err *e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_redacted(e, fmt, ap);
  va_end(ap);
}

int dp_err_set(dp_err *e, int code, const char *fmt, ...) {
  if (e == NULL) return code;
  e->code = code;
  va_list ap;
  va_start(ap, fmt);
  if (dp_redact_count() == 0) vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  else set_redacted(e, fmt, ap);
  va_end(ap);
  return code;
}

void dp_err_prefix(dp_err *e, const char *fmt, ...) {
  if (e == NULL) return;
  char old[sizeof e->msg];
  char *prefix = NULL;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&prefix, fmt, ap);
  va_end(ap);
  if (n < 0) prefix = NULL;
  memcpy(old, e->msg, sizeof old);
  if (dp_redact_count() == 0) snprintf(e->msg, sizeof e->msg, "%s%s", prefix ? prefix : "", old);
  else set_redacted_fmt(e, "%s%s", prefix ? prefix : "", old);
  if (prefix) {
    sodium_memzero(prefix, (size_t)n);
    free(prefix);
  }
  sodium_memzero(old, sizeof old);
}

void dp_err_clear(dp_err *e) {
  if (e == NULL) return;
  e->code = 0;
  e->msg[0] = '\0';
}
