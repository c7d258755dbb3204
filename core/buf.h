/* buf.h - a growable byte buffer, always NUL-terminated. The caller owns the struct;
 * the buffer owns its heap memory until dp_buf_free (or dp_buf_steal). */
#ifndef DP_BUF_H
#define DP_BUF_H

#include <stddef.h>

typedef struct dp_buf {
  char *data;
  size_t len;
  size_t cap;
} dp_buf;

#define DP_BUF_INIT {NULL, 0, 0}

/* Ensures room for n more bytes (plus the NUL); returns 0 or DP_ENOMEM. */
int dp_buf_reserve(dp_buf *b, size_t n);
int dp_buf_append(dp_buf *b, const void *p, size_t n);
/* one byte; inline, since COPY text is built a byte at a time in places */
static inline int dp_buf_putc(dp_buf *b, char c) {
  int rc;
  if (b->len + 2 > b->cap && (rc = dp_buf_reserve(b, 1)) != 0) return rc;
  b->data[b->len++] = c;
  b->data[b->len] = '\0';
  return 0;
}
int dp_buf_puts(dp_buf *b, const char *s);
int dp_buf_printf(dp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dp_buf_reset(dp_buf *b);
/* Frees the heap memory; the struct can be reused. */
void dp_buf_free(dp_buf *b);
/* Returns the heap string (caller frees with free()) and empties the buffer. */
char *dp_buf_steal(dp_buf *b);

#endif
