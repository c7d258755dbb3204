/* buf.c - growable byte buffer. */
#include "buf.h"
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dp_buf_reserve(dp_buf *b, size_t n) {
  if (b->len + n + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + n + 1) cap *= 2;
  char *p = realloc(b->data, cap);
  if (p == NULL) return DP_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int dp_buf_append(dp_buf *b, const void *p, size_t n) {
  if (dp_buf_reserve(b, n) != 0) return DP_ENOMEM;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

int dp_buf_puts(dp_buf *b, const char *s) { return dp_buf_append(b, s, strlen(s)); }

int dp_buf_printf(dp_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return DP_EINVAL;
  if (dp_buf_reserve(b, (size_t)n) != 0) return DP_ENOMEM;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

void dp_buf_reset(dp_buf *b) {
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}

void dp_buf_free(dp_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

char *dp_buf_steal(dp_buf *b) {
  char *p = b->data;
  if (p == NULL) p = calloc(1, 1);
  b->data = NULL;
  b->len = b->cap = 0;
  return p;
}
