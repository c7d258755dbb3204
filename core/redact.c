/* redact.c - the redaction registry and the replacement of registered values in text. */
#include "redact.h"
#include "json.h"
#include "error.h"

#include <pthread.h>
#include <sodium.h>
#include <stdint.h>
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
  return dp_json_escape(b, (const char *)v, len, DP_JSON_ESC_BF | (slash_escaped ? DP_JSON_ESC_SLASH : 0));
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

/* --- Looking through escapes -----------------------------------------------------------------
 * A value can reach a text in any JSON encoding: "T\u00f6ken", "\u0054oken", "tok\/en", mixed
 * with raw bytes, in a key or a value, and escaped again when JSON travels inside a JSON string
 * ("{\"t\":\"tok\\/en\"}"); URL-encoded with upper or lower hex digits, or only in part.
 * Registering every encoding is impossible, so a text that holds a backslash or a percent sign
 * is decoded instead: level 1 is the text with every valid JSON escape (\" \\ \/ \b \f \n \r
 * \t \uXXXX) and percent escape (%XX) decoded, level 2 is level 1 decoded again, and so on
 * (DEPTH levels at most). Every decoded byte remembers the range of the original text it came
 * from, so a value found at any level replaces exactly the original bytes (whole escapes) that
 * encode it. A text with neither character has one encoding only and takes the plain scan
 * (replace_all): the fast path. */
#define DEPTH 4

typedef struct span {
  uint32_t lo, hi; /* original bytes [lo, hi) */
  size_t pat;      /* index in g_items: the longest pattern wins a merge */
} span;

typedef struct spans {
  span *v;
  size_t n, cap;
} spans;

static int spans_add(spans *s, uint32_t lo, uint32_t hi, size_t pat) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 16;
    span *v = realloc(s->v, cap * sizeof *v);
    if (!v) return DP_ENOMEM;
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n++] = (span){lo, hi, pat};
  return 0;
}

static int span_cmp(const void *a, const void *b) {
  const span *x = a, *y = b;
  if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
  return x->hi > y->hi ? -1 : x->hi < y->hi;
}

/* A decoded level: text and, per byte, the original range it came from (lo/hi NULL: the
 * original text itself). */
typedef struct level {
  dp_buf text;
  uint32_t *lo, *hi;
} level;

static void level_free(level *l) {
  wipe_buf(&l->text); /* decoded text: it may hold a value in clear */
  free(l->lo);
  free(l->hi);
  l->lo = l->hi = NULL;
}

static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* The 4 hex digits at t (n >= 4), or -1. */
static long hex4(const unsigned char *t) {
  long v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval(t[i]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

/* Appends the bytes p[0..k) of one decoded unit, all coming from [i, j) of the level below. */
static int emit_unit(level *out, const level *in, size_t i, size_t j, const unsigned char *p, size_t k) {
  if (dp_buf_append(&out->text, p, k) != 0) return DP_ENOMEM;
  uint32_t lo = in->lo ? in->lo[i] : (uint32_t)i, hi = in->hi ? in->hi[j - 1] : (uint32_t)j;
  size_t at = out->text.len - k;
  for (size_t m = 0; m < k; m++) {
    out->lo[at + m] = lo;
    out->hi[at + m] = hi;
  }
  return 0;
}

/* Decodes the JSON and percent escapes of in into out (initialised here). Invalid escapes stay as they are;
 * \uD800-\uDFFF pairs become one 4-byte character, a lone surrogate its 3 bytes (WTF-8). Sets
 * *changed when anything was decoded. */
static int decode_level(const level *in, level *out, int *changed) {
  const unsigned char *t = (const unsigned char *)in->text.data;
  size_t n = in->text.len;
  memset(out, 0, sizeof *out);
  *changed = 0;
  if (dp_buf_reserve(&out->text, n) != 0) return DP_ENOMEM;
  out->lo = malloc((n + 1) * sizeof *out->lo);
  out->hi = malloc((n + 1) * sizeof *out->hi);
  if (!out->lo || !out->hi) return DP_ENOMEM;
  for (size_t i = 0; i < n;) {
    unsigned char u[4];
    size_t k = 1, j = i + 1;
    if (t[i] != '\\' && t[i] != '%') { /* a run of plain bytes, copied in bulk */
      while (j < n && t[j] != '\\' && t[j] != '%') j++;
      size_t at = out->text.len, len = j - i;
      if (dp_buf_append(&out->text, t + i, len) != 0) return DP_ENOMEM;
      if (in->lo) {
        memcpy(out->lo + at, in->lo + i, len * sizeof *out->lo);
        memcpy(out->hi + at, in->hi + i, len * sizeof *out->hi);
      } else {
        for (size_t m = 0; m < len; m++) {
          out->lo[at + m] = (uint32_t)(i + m);
          out->hi[at + m] = (uint32_t)(i + m + 1);
        }
      }
      i = j;
      continue;
    }
    u[0] = t[i];
    if (t[i] == '\\' && i + 1 < n) {
      unsigned char e = t[i + 1];
      const char *simple = strchr("\"\\/bfnrt", e);
      if (e != '\0' && simple) {
        static const unsigned char dec[] = {'"', '\\', '/', '\b', '\f', '\n', '\r', '\t'};
        u[0] = dec[simple - "\"\\/bfnrt"];
        j = i + 2;
      } else if (e == 'u' && i + 6 <= n && hex4(t + i + 2) >= 0) {
        unsigned long cp = (unsigned long)hex4(t + i + 2);
        j = i + 6;
        if (cp >= 0xD800 && cp <= 0xDBFF && j + 6 <= n && t[j] == '\\' && t[j + 1] == 'u') {
          long lo = hex4(t + j + 2);
          if (lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
            j += 6;
          }
        }
        if (cp < 0x80) { u[0] = (unsigned char)cp; k = 1; }
        else if (cp < 0x800) { u[0] = (unsigned char)(0xC0 | (cp >> 6)); u[1] = (unsigned char)(0x80 | (cp & 0x3F)); k = 2; }
        else if (cp < 0x10000) {
          u[0] = (unsigned char)(0xE0 | (cp >> 12)); u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
          u[2] = (unsigned char)(0x80 | (cp & 0x3F)); k = 3;
        } else {
          u[0] = (unsigned char)(0xF0 | (cp >> 18)); u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
          u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (unsigned char)(0x80 | (cp & 0x3F)); k = 4;
        }
      }
      if (j > i + 1) *changed = 1;
    } else if (t[i] == '%' && i + 2 < n && hexval(t[i + 1]) >= 0 && hexval(t[i + 2]) >= 0) {
      u[0] = (unsigned char)(hexval(t[i + 1]) * 16 + hexval(t[i + 2]));
      j = i + 3;
      *changed = 1;
    }
    if (emit_unit(out, in, i, j, u, k) != 0) return DP_ENOMEM;
    i = j;
  }
  return 0;
}

/* Adds a span for every hit of every pattern in l. Caller holds g_mu. */
static int find_all(const level *l, spans *found) {
  const char *t = l->text.data;
  size_t n = l->text.len;
  for (size_t p = 0; p < g_n; p++) {
    const pattern *pt = &g_items[p];
    if (n < pt->len) continue;
    const char *s = t, *end = t + n, *hit;
    while ((size_t)(end - s) >= pt->len && (hit = memmem(s, (size_t)(end - s), pt->bytes, pt->len)) != NULL) {
      size_t a = (size_t)(hit - t), z = a + pt->len;
      uint32_t lo = l->lo ? l->lo[a] : (uint32_t)a, hi = l->hi ? l->hi[z - 1] : (uint32_t)z;
      if (spans_add(found, lo, hi, p) != 0) return DP_ENOMEM;
      s = hit + pt->len;
    }
  }
  return 0;
}

static int has_escape(const char *t, size_t n) { return memchr(t, '\\', n) || memchr(t, '%', n); }

/* The slow path: b holds a backslash or a percent sign. Caller holds g_mu. Returns replacements or DP_ENOMEM
 * (b unchanged). */
static int redact_escaped(dp_buf *b) {
  spans found = {NULL, 0, 0};
  level cur = {*b, NULL, NULL}, next;
  int rc = find_all(&cur, &found), owned = 0, n = 0;
  for (int depth = 0; rc == 0 && depth < DEPTH && has_escape(cur.text.data, cur.text.len); depth++) {
    int changed = 0;
    rc = decode_level(&cur, &next, &changed);
    if (owned) level_free(&cur);
    cur = next;
    owned = 1;
    if (rc == 0 && !changed) break;
    if (rc == 0) rc = find_all(&cur, &found);
  }
  if (owned) level_free(&cur);
  if (rc == 0 && found.n > 0) {
    qsort(found.v, found.n, sizeof *found.v, span_cmp);
    dp_buf out = DP_BUF_INIT;
    uint32_t at = 0;
    for (size_t i = 0; i < found.n && rc == 0;) {
      span m = found.v[i++];
      while (i < found.n && found.v[i].lo < m.hi) { /* overlapping: one replacement */
        if (found.v[i].hi > m.hi) m.hi = found.v[i].hi;
        if (found.v[i].pat < m.pat) m.pat = found.v[i].pat;
        i++;
      }
      rc = dp_buf_append(&out, b->data + at, m.lo - at);
      if (rc == 0) rc = dp_buf_append(&out, g_items[m.pat].repl, g_items[m.pat].repl_len);
      at = m.hi;
      n++;
    }
    if (rc == 0) rc = dp_buf_append(&out, b->data + at, b->len - at);
    if (rc) {
      wipe_buf(&out);
    } else {
      wipe_buf(b); /* the old text held the value */
      *b = out;
    }
  }
  free(found.v);
  return rc ? DP_ENOMEM : n;
}

int dp_redact_buf(dp_buf *b) {
  int total = 0;
  pthread_mutex_lock(&g_mu);
  if (g_n > 0 && b->data && b->len <= UINT32_MAX - 1 && has_escape(b->data, b->len)) {
    total = redact_escaped(b);
  } else {
    for (size_t i = 0; i < g_n; i++) {
      int n = replace_all(b, &g_items[i]);
      if (n < 0) { total = n; break; }
      total += n;
    }
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
