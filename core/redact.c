/* redact.c - the redaction registry and the replacement of registered values in text. */
#include "redact.h"
#include "error.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pattern {
  char *bytes;                 /* locked heap copy (owned), wiped on release */
  size_t len;
  char repl[DP_REDACT_LABEL_MAX + 16]; /* "[redacted:LABEL]" */
  size_t repl_len;
} pattern;

/* Process-wide by nature (see redact.h); every access holds g_mu. Sorted longest first, so a
 * value that contains another registered value is replaced whole. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pattern *g_items;
static size_t g_n, g_cap, g_values;

static void pattern_release(pattern *p) {
  if (!p->bytes) return;
  sodium_munlock(p->bytes, p->len); /* wipes */
  sodium_memzero(p->bytes, p->len);
  free(p->bytes);
  p->bytes = NULL;
}

static int has_pattern(const char *v, size_t len) {
  for (size_t i = 0; i < g_n; i++)
    if (g_items[i].len == len && memcmp(g_items[i].bytes, v, len) == 0) return 1;
  return 0;
}

/* Adds one pattern (copied) unless present. Caller holds g_mu. */
static int add_pattern(const char *repl, const char *v, size_t len) {
  if (has_pattern(v, len)) return 0;
  if (g_n == g_cap) {
    size_t cap = g_cap ? g_cap * 2 : 16;
    pattern *p = realloc(g_items, cap * sizeof *p);
    if (!p) return DP_ENOMEM;
    g_items = p;
    g_cap = cap;
  }
  pattern np;
  memset(&np, 0, sizeof np);
  np.bytes = malloc(len);
  if (!np.bytes) return DP_ENOMEM;
  memcpy(np.bytes, v, len);
  (void)sodium_mlock(np.bytes, len); /* best effort: RLIMIT_MEMLOCK may refuse */
  np.len = len;
  snprintf(np.repl, sizeof np.repl, "%s", repl);
  np.repl_len = strlen(np.repl);
  size_t at = g_n;
  while (at > 0 && g_items[at - 1].len < len) at--;
  memmove(g_items + at + 1, g_items + at, (g_n - at) * sizeof *g_items);
  g_items[at] = np;
  g_n++;
  return 0;
}

/* The value as a JSON string body: lua-cjson's escapes (slash_escaped: "/" as "\/", as
 * lua-cjson writes it; otherwise as most other encoders do). */
static int json_escaped(dp_buf *b, const unsigned char *v, size_t len, int slash_escaped) {
  int rc = 0;
  for (size_t i = 0; i < len && rc == 0; i++) {
    unsigned char c = v[i];
    switch (c) {
      case '"': rc = dp_buf_puts(b, "\\\""); break;
      case '\\': rc = dp_buf_puts(b, "\\\\"); break;
      case '/': rc = slash_escaped ? dp_buf_puts(b, "\\/") : dp_buf_putc(b, '/'); break;
      case '\b': rc = dp_buf_puts(b, "\\b"); break;
      case '\f': rc = dp_buf_puts(b, "\\f"); break;
      case '\n': rc = dp_buf_puts(b, "\\n"); break;
      case '\r': rc = dp_buf_puts(b, "\\r"); break;
      case '\t': rc = dp_buf_puts(b, "\\t"); break;
      default:
        rc = (c < 0x20 || c == 0x7f) ? dp_buf_printf(b, "\\u%04x", c) : dp_buf_putc(b, (char)c);
    }
  }
  return rc;
}

/* The value URL-encoded (RFC 3986 unreserved characters kept, the rest %XX). */
static int url_encoded(dp_buf *b, const unsigned char *v, size_t len) {
  int rc = 0;
  for (size_t i = 0; i < len && rc == 0; i++) {
    unsigned char c = v[i];
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~')
      rc = dp_buf_putc(b, (char)c);
    else
      rc = dp_buf_printf(b, "%%%02X", c);
  }
  return rc;
}

static void wipe_buf(dp_buf *b) {
  if (b->data) sodium_memzero(b->data, b->cap);
  dp_buf_free(b);
}

int dp_redact_register(const char *label, const void *value, size_t len) {
  if (value == NULL || len < DP_REDACT_MIN_LEN) return DP_EINVAL;
  char repl[DP_REDACT_LABEL_MAX + 16];
  char clean[DP_REDACT_LABEL_MAX + 1];
  size_t k = 0;
  for (const char *s = label ? label : ""; *s && k < DP_REDACT_LABEL_MAX; s++) {
    char c = *s; /* labels are names; anything else would need escaping where the text goes */
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
        c == '.' || c == '-')
      clean[k++] = c;
  }
  clean[k] = '\0';
  if (k) snprintf(repl, sizeof repl, "[redacted:%s]", clean);
  else snprintf(repl, sizeof repl, "[redacted]");

  dp_buf j1 = DP_BUF_INIT, j2 = DP_BUF_INIT, u = DP_BUF_INIT;
  int rc = 0;
  if (json_escaped(&j1, value, len, 1) || json_escaped(&j2, value, len, 0) || url_encoded(&u, value, len)) {
    rc = DP_ENOMEM;
    goto cleanup;
  }
  pthread_mutex_lock(&g_mu);
  int known = has_pattern(value, len);
  rc = add_pattern(repl, value, len);
  if (rc == 0 && j1.len) rc = add_pattern(repl, j1.data, j1.len);
  if (rc == 0 && j2.len) rc = add_pattern(repl, j2.data, j2.len);
  if (rc == 0 && u.len) rc = add_pattern(repl, u.data, u.len);
  if (rc == 0 && !known) g_values++;
  pthread_mutex_unlock(&g_mu);
cleanup:
  wipe_buf(&j1);
  wipe_buf(&j2);
  wipe_buf(&u);
  return rc;
}

size_t dp_redact_count(void) {
  pthread_mutex_lock(&g_mu);
  size_t n = g_values;
  pthread_mutex_unlock(&g_mu);
  return n;
}

/* Replaces p in b. Caller holds g_mu. Returns replacements or DP_ENOMEM (b unchanged). */
static int replace_all(dp_buf *b, const pattern *p) {
  if (!b->data || b->len < p->len) return 0;
  const char *hit = memmem(b->data, b->len, p->bytes, p->len);
  if (!hit) return 0;
  dp_buf out = DP_BUF_INIT;
  const char *s = b->data, *end = b->data + b->len;
  int n = 0, rc = 0;
  while (hit && rc == 0) {
    rc = dp_buf_append(&out, s, (size_t)(hit - s));
    if (rc == 0) rc = dp_buf_append(&out, p->repl, p->repl_len);
    s = hit + p->len;
    n++;
    hit = (size_t)(end - s) >= p->len ? memmem(s, (size_t)(end - s), p->bytes, p->len) : NULL;
  }
  if (rc == 0) rc = dp_buf_append(&out, s, (size_t)(end - s));
  if (rc) {
    wipe_buf(&out);
    return DP_ENOMEM;
  }
  wipe_buf(b); /* the old text held the value */
  *b = out;
  return n;
}

int dp_redact_buf(dp_buf *b) {
  int total = 0;
  pthread_mutex_lock(&g_mu);
  for (size_t i = 0; i < g_n; i++) {
    int n = replace_all(b, &g_items[i]);
    if (n < 0) { total = n; break; }
    total += n;
  }
  pthread_mutex_unlock(&g_mu);
  return total;
}

int dp_redact_copy(const char *src, size_t len, char *dst, size_t cap) {
  if (cap == 0) return 0;
  dp_buf b = DP_BUF_INIT;
  int n;
  if (dp_buf_append(&b, src, len) != 0) {
    n = DP_ENOMEM;
  } else {
    n = dp_redact_buf(&b);
  }
  if (n < 0) {
    snprintf(dst, cap, "(message withheld: out of memory while redacting it)");
  } else {
    size_t k = b.len < cap - 1 ? b.len : cap - 1;
    memcpy(dst, b.data, k);
    dst[k] = '\0';
  }
  wipe_buf(&b);
  return n;
}

void dp_redact_reset(void) {
  pthread_mutex_lock(&g_mu);
  for (size_t i = 0; i < g_n; i++) pattern_release(&g_items[i]);
  free(g_items);
  g_items = NULL;
  g_n = g_cap = g_values = 0;
  pthread_mutex_unlock(&g_mu);
}
