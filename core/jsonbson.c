/* jsonbson.c - exact JSON -> BSON for source records (see jsonbson.h for the rules). */
#include "jsonbson.h"
#include "cast.h"
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A member key of the object being read, for the duplicate check. */
typedef struct keyent {
  uint64_t h;
  size_t off; /* into jb.keys */
  size_t len;
} keyent;

typedef struct jb {
  const char *p, *start, *end;
  const char *what; /* set on failure; at: where */
  const char *at;
  char whatbuf[160];
  int depth;
  dp_buf s;         /* a decoded string (scratch) */
  dp_buf keys;      /* decoded keys of the open objects, NUL-terminated, back to back */
  keyent *ke;       /* their entries (owned) */
  size_t nke, cap;
  dp_buf num;       /* scratch for numbers */
} jb;

static int fail_at(jb *j, const char *at, const char *what) {
  if (!j->what) {
    j->what = what;
    j->at = at;
  }
  return -1;
}
static int fail(jb *j, const char *what) { return fail_at(j, j->p, what); }

static void skip_ws(jb *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}



/* Reads the string at j->p (an opening quote) decoded into j->s; *has_nul when it holds U+0000. */
static int read_string(jb *j, int *has_nul) {
  const char *open = j->p++;
  dp_buf_reset(&j->s);
  *has_nul = 0;
  for (;;) {
    const char *run = j->p;
    while (j->p < j->end && *j->p != '"' && *j->p != '\\' && (unsigned char)*j->p >= 0x20 &&
           (unsigned char)*j->p < 0x80)
      j->p++;
    if (j->p > run && dp_buf_append(&j->s, run, (size_t)(j->p - run))) return fail(j, "out of memory");
    if (j->p >= j->end) return fail_at(j, open, "unterminated string");
    unsigned char c = (unsigned char)*j->p;
    if (c == '"') {
      j->p++;
      return 0;
    }
    if (c == '\\') {
      if (j->end - j->p < 2) return fail_at(j, open, "unterminated string");
      char x = j->p[1];
      if (x == 'u') {
        int cp = j->end - j->p >= 6 ? dp_json_hex4(j->p + 2) : -1;
        if (cp < 0) return fail(j, "bad \\u escape in string");
        const char *esc = j->p;
        j->p += 6;
        if (cp >= 0xd800 && cp <= 0xdbff) {
          int lo = j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' ? dp_json_hex4(j->p + 2) : -1;
          if (lo < 0xdc00 || lo > 0xdfff)
            return fail_at(j, esc, "a lone surrogate (\\ud800-\\udbff without its pair) is not a character");
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          j->p += 6;
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
          return fail_at(j, esc, "a lone surrogate (\\udc00-\\udfff without its pair) is not a character");
        }
        if (cp == 0) *has_nul = 1;
        dp_json_put_utf8(&j->s, (unsigned)cp);
        continue;
      }
      const char *m = x ? strchr("\"\\/bfnrt", x) : NULL;
      if (!m) return fail(j, "bad escape in string");
      static const char dec[] = "\"\\/\b\f\n\r\t";
      dp_buf_putc(&j->s, dec[m - "\"\\/bfnrt"]);
      j->p += 2;
      continue;
    }
    if (c < 0x20) return fail(j, c == 0 ? "a NUL byte in a string (write it as \\u0000)" : "control character in string (escape it)");
    int n = dp_utf8_len((const unsigned char *)j->p, (const unsigned char *)j->end);
    if (n == 0) return fail(j, "invalid UTF-8 in string");
    dp_buf_append(&j->s, j->p, (size_t)n);
    j->p += n;
  }
}

static int digits(jb *j) {
  const char *d = j->p;
  while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
  return j->p > d;
}

int dp_num_normalize(const char *t, size_t n, dp_num *num, dp_buf *out) {
  size_t i = 0, start = out->len;
  num->neg = 0;
  num->point = 0;
  if (i < n && (t[i] == '-' || t[i] == '+')) num->neg = t[i++] == '-';
  long point = 0;
  int seen_point = 0, lead = 1;
  for (; i < n; i++) {
    char c = t[i];
    if (c >= '0' && c <= '9') {
      if (lead && c == '0') {
        if (seen_point) point--;
        continue;
      }
      lead = 0;
      if (dp_buf_putc(out, c)) return DP_ENOMEM;
      if (!seen_point) point++;
    } else if (c == '.' && !seen_point) {
      seen_point = 1;
    } else {
      break;
    }
  }
  if (i < n && (t[i] == 'e' || t[i] == 'E')) {
    i++;
    int eneg = 0;
    if (i < n && (t[i] == '+' || t[i] == '-')) eneg = t[i++] == '-';
    long ex = 0;
    for (; i < n && t[i] >= '0' && t[i] <= '9'; i++)
      if (ex < 1000000000L) ex = ex * 10 + (t[i] - '0');
    point += eneg ? -ex : ex;
  }
  while (out->len > start && out->data[out->len - 1] == '0') out->data[--out->len] = '\0';
  if (out->len == start) point = 0; /* zero */
  num->point = point;
  return i == n ? 0 : DP_EINVAL;
}

/* Is the decimal value of text t[0..n) exactly the value of the shortest text of d? */
static int same_value(jb *j, const char *t, size_t n, double d) {
  char b[40];
  dp_format_double(d, b);
  dp_num x, y;
  dp_buf_reset(&j->num);
  if (dp_num_normalize(t, n, &x, &j->num)) return 0;
  size_t xl = j->num.len;
  if (dp_num_normalize(b, strlen(b), &y, &j->num)) return 0;
  size_t yl = j->num.len - xl;
  return x.neg == y.neg && x.point == y.point && xl == yl && memcmp(j->num.data, j->num.data + xl, xl) == 0;
}

/* Does the number text t[0..n) (valid JSON, not an integer) have at most 15 significant digits
 * and a magnitude well inside that of normal doubles? Such a decimal reads back from its nearest
 * double unchanged (DBL_DIG is 15), so same_value would find it so: the check is skipped. */
static int short_decimal(const char *t, size_t n) {
  size_t i = 0;
  int sig = 0, lead = 1;
  if (n > 40) return 0;
  if (t[i] == '-') i++;
  for (; i < n && t[i] != 'e' && t[i] != 'E'; i++) {
    if (t[i] == '.') continue;
    if (lead && t[i] == '0') continue;
    lead = 0;
    if (++sig > 15) return 0;
  }
  if (i < n) { /* the exponent: at most 3 digits, at most 250 */
    i++;
    if (t[i] == '+' || t[i] == '-') i++;
    if (n - i > 3) return 0;
    int ex = 0;
    for (; i < n; i++) ex = ex * 10 + (t[i] - '0');
    if (ex > 250) return 0;
  }
  return 1;
}

static int put_number(jb *j, bson_t *b, const char *k, size_t kl) {
  const char *from = j->p;
  int integral = 1;
  if (*j->p == '-') j->p++;
  if (j->p >= j->end) return fail(j, "bad number");
  if (*j->p == '0') j->p++;
  else if (!digits(j)) return fail(j, "bad number");
  if (j->p < j->end && *j->p == '.') {
    j->p++;
    integral = 0;
    if (!digits(j)) return fail(j, "bad number: digits expected after '.'");
  }
  if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
    j->p++;
    integral = 0;
    if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
    if (!digits(j)) return fail(j, "bad number: digits expected in exponent");
  }
  size_t n = (size_t)(j->p - from);
  bool ok;
  if (integral && n <= 20) {
    char tmp[24];
    memcpy(tmp, from, n);
    tmp[n] = '\0';
    errno = 0;
    long long v = strtoll(tmp, NULL, 10);
    if (errno != ERANGE) {
      if (v >= INT32_MIN && v <= INT32_MAX) ok = bson_append_int32(b, k, (int)kl, (int32_t)v);
      else ok = bson_append_int64(b, k, (int)kl, (int64_t)v);
      return ok ? 0 : fail_at(j, from, "the record is too large");
    }
  } else if (!integral && n < 1100) {
    dp_buf_reset(&j->num);
    dp_buf_append(&j->num, from, n);
    double d = strtod(j->num.data, NULL);
    if (isfinite(d) && (short_decimal(from, n) || same_value(j, from, n, d)))
      return bson_append_double(b, k, (int)kl, d) ? 0 : fail_at(j, from, "the record is too large");
  }
  ok = bson_append_binary(b, k, (int)kl, DP_BSON_NUMBER_TEXT, (const uint8_t *)from, (uint32_t)n);
  return ok ? 0 : fail_at(j, from, "the record is too large");
}

static int put_value(jb *j, bson_t *b, const char *k, size_t kl, int in_array);

static uint64_t fnv(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return h;
}

/* qsort_r comparison of one object's keys; keys: the arena (runs may parse in several threads) */
static int cmp_key(const void *a, const void *b, void *keys) {
  const keyent *x = a, *y = b;
  if (x->h != y->h) return x->h < y->h ? -1 : 1;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  return memcmp((const char *)keys + x->off, (const char *)keys + y->off, x->len);
}

static int same_key(const jb *j, const keyent *x, const keyent *y) {
  return x->h == y->h && x->len == y->len && memcmp(j->keys.data + x->off, j->keys.data + y->off, x->len) == 0;
}

/* The duplicate check of the object whose keys are entries [first, nke). */
static int check_duplicates(jb *j, size_t first, const char *obj) {
  size_t n = j->nke - first;
  const keyent *dup = NULL;
  keyent *v = j->ke + first;
  if (n < 2) return 0;
  if (n <= 8) {
    for (size_t a = 1; a < n && !dup; a++)
      for (size_t c = 0; c < a && !dup; c++)
        if (same_key(j, &v[a], &v[c])) dup = &v[a];
  } else if (n <= 64) { /* an open-addressing table of the entries, by hash */
    uint8_t slot[128];
    memset(slot, 0xff, sizeof slot);
    for (size_t a = 0; a < n && !dup; a++) {
      size_t at = (size_t)v[a].h & 127;
      while (slot[at] != 0xff && !dup) {
        if (same_key(j, &v[a], &v[slot[at]])) dup = &v[a];
        at = (at + 1) & 127;
      }
      slot[at] = (uint8_t)a;
    }
  } else {
    qsort_r(v, n, sizeof *v, cmp_key, j->keys.data);
    for (size_t a = 1; a < n && !dup; a++)
      if (same_key(j, &v[a - 1], &v[a])) dup = &v[a];
  }
  if (!dup) return 0;
  size_t shown = dp_utf8_prefix(j->keys.data + dup->off, dup->len, 60); /* never half a character */
  snprintf(j->whatbuf, sizeof j->whatbuf, "duplicate member \"%.*s%s\" (a key may come once per object)",
           (int)shown, j->keys.data + dup->off, dup->len > shown ? "..." : "");
  return fail_at(j, obj, j->whatbuf);
}

static int read_object(jb *j, bson_t *b) {
  const char *obj = j->p;
  j->p++;
  size_t first = j->nke, arena = j->keys.len;
  int rc = 0;
  skip_ws(j);
  if (j->p < j->end && *j->p == '}') {
    j->p++;
    return 0;
  }
  for (;;) {
    skip_ws(j);
    if (j->p >= j->end || *j->p != '"') { rc = fail(j, "expected a string key"); break; }
    int has_nul;
    if ((rc = read_string(j, &has_nul)) != 0) break;
    if (j->nke == j->cap) {
      size_t nc = j->cap ? j->cap * 2 : 64;
      keyent *nk = realloc(j->ke, nc * sizeof *nk);
      if (!nk) { rc = fail(j, "out of memory"); break; }
      j->ke = nk;
      j->cap = nc;
    }
    keyent *ke = &j->ke[j->nke++];
    ke->off = j->keys.len;
    /* stored encoded where a MongoDB server needs it (one-to-one, so duplicates stay duplicates) */
    if (dp_key_encode(j->s.data ? j->s.data : "", j->s.len, &j->keys) || dp_buf_putc(&j->keys, '\0')) {
      rc = fail(j, "out of memory");
      break;
    }
    ke->len = j->keys.len - 1 - ke->off;
    ke->h = fnv(j->keys.data + ke->off, ke->len);
    skip_ws(j);
    if (j->p >= j->end || *j->p != ':') { rc = fail(j, "expected ':'"); break; }
    j->p++;
    skip_ws(j);
    if ((rc = put_value(j, b, j->keys.data + ke->off, ke->len, 0)) != 0) break;
    skip_ws(j);
    if (j->p < j->end && *j->p == ',') { j->p++; continue; }
    if (j->p < j->end && *j->p == '}') { j->p++; break; }
    rc = fail(j, "expected ',' or '}'");
    break;
  }
  if (rc == 0) rc = check_duplicates(j, first, obj);
  j->nke = first;
  j->keys.len = arena;
  return rc;
}

static int read_array(jb *j, bson_t *b) {
  j->p++;
  skip_ws(j);
  if (j->p < j->end && *j->p == ']') {
    j->p++;
    return 0;
  }
  for (uint32_t i = 0;; i++) {
    char ix[16];
    const char *k;
    size_t kl = bson_uint32_to_string(i, &k, ix, sizeof ix);
    if (put_value(j, b, k, kl, 1)) return -1;
    skip_ws(j);
    if (j->p < j->end && *j->p == ',') { j->p++; skip_ws(j); continue; }
    if (j->p < j->end && *j->p == ']') { j->p++; return 0; }
    return fail(j, "expected ',' or ']'");
  }
}

static int literal(jb *j, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return fail(j, "unexpected character");
  j->p += n;
  return 0;
}

static int put_value(jb *j, bson_t *b, const char *k, size_t kl, int in_array) {
  skip_ws(j);
  if (j->p >= j->end) return fail(j, "unexpected end of input");
  const char *at = j->p;
  bool ok = true;
  switch (*j->p) {
    case '{':
    case '[': {
      if (++j->depth > DP_JSONBSON_MAX_DEPTH) {
        snprintf(j->whatbuf, sizeof j->whatbuf, "nested deeper than %d levels (the most bronze can store)",
                 DP_JSONBSON_MAX_DEPTH);
        return fail(j, j->whatbuf);
      }
      bson_t child, wrap;
      int arr = *j->p == '[';
      /* an array in an array goes in a {"%5B%5D": [...]} document: FerretDB v1 cannot store
       * nested arrays, and no source key is stored as "%5B%5D" ('%' is always encoded) */
      int wrapped = arr && in_array;
      if (wrapped) {
        ok = bson_append_document_begin(b, k, (int)kl, &wrap) &&
             bson_append_array_begin(&wrap, DP_BSON_ARRAY_KEY, -1, &child);
      } else {
        ok = arr ? bson_append_array_begin(b, k, (int)kl, &child) : bson_append_document_begin(b, k, (int)kl, &child);
      }
      if (!ok) return fail_at(j, at, "the record is too large");
      int rc = arr ? read_array(j, &child) : read_object(j, &child);
      if (wrapped) ok = bson_append_array_end(&wrap, &child) && bson_append_document_end(b, &wrap);
      else ok = arr ? bson_append_array_end(b, &child) : bson_append_document_end(b, &child);
      j->depth--;
      if (rc) return rc;
      break;
    }
    case '"': {
      int has_nul;
      if (read_string(j, &has_nul)) return -1;
      const char *s = j->s.data ? j->s.data : "";
      if (has_nul) ok = bson_append_binary(b, k, (int)kl, DP_BSON_NUL_STRING, (const uint8_t *)s, (uint32_t)j->s.len);
      else ok = bson_append_utf8(b, k, (int)kl, s, (int)j->s.len);
      break;
    }
    case 't':
      if (literal(j, "true")) return -1;
      ok = bson_append_bool(b, k, (int)kl, true);
      break;
    case 'f':
      if (literal(j, "false")) return -1;
      ok = bson_append_bool(b, k, (int)kl, false);
      break;
    case 'n':
      if (literal(j, "null")) return -1;
      ok = bson_append_null(b, k, (int)kl);
      break;
    default:
      if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) return put_number(j, b, k, kl);
      return fail(j, "unexpected character");
  }
  return ok ? 0 : fail_at(j, at, "the record is too large");
}

static int needs_escape(const char *k, size_t i) {
  char c = k[i];
  return c == '%' || c == '.' || c == '\0' || (c == '$' && i == 0);
}

int dp_key_encode(const char *k, size_t n, dp_buf *out) {
  static const char hex[] = "0123456789ABCDEF";
  size_t from = 0;
  for (size_t i = 0; i < n; i++) {
    if (!needs_escape(k, i)) continue;
    char esc[3] = {'%', hex[(unsigned char)k[i] >> 4], hex[(unsigned char)k[i] & 15]};
    if (dp_buf_append(out, k + from, i - from) || dp_buf_append(out, esc, 3)) return DP_ENOMEM;
    from = i + 1;
  }
  return dp_buf_append(out, k + from, n - from);
}

static int unhex(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int dp_key_decode(const char *k, size_t n, dp_buf *out) {
  size_t from = 0;
  for (size_t i = 0; i + 2 < n; i++) {
    int hi, lo;
    if (k[i] != '%' || (hi = unhex(k[i + 1])) < 0 || (lo = unhex(k[i + 2])) < 0) continue;
    if (dp_buf_append(out, k + from, i - from) || dp_buf_putc(out, (char)(hi << 4 | lo))) return DP_ENOMEM;
    from = i + 3;
    i += 2;
  }
  return dp_buf_append(out, k + from, n - from);
}

int dp_json_to_bson(const char *text, size_t len, bson_t *out, dp_err *e) {
  jb j;
  memset(&j, 0, sizeof j);
  j.p = j.start = text;
  j.end = text + len;
  bson_init(out);
  int rc = 0;
  skip_ws(&j);
  if (j.p >= j.end || *j.p != '{') {
    fail(&j, "expected a JSON object");
    rc = -1;
  } else {
    j.depth = 1;
    rc = read_object(&j, out);
    if (rc == 0) {
      skip_ws(&j);
      if (j.p != j.end) rc = fail(&j, "unexpected data after the JSON value");
    }
  }
  if (rc == 0 && out->len > DP_JSONBSON_MAX_SIZE)
    rc = fail_at(&j, text, "the record is larger than bronze can store (16 MiB as BSON)");
  if (rc)
    rc = dp_err_set(e, DP_EJSON, "%s at byte %zu", j.what ? j.what : "invalid JSON",
                    (size_t)((j.at ? j.at : j.p) - text) + 1);
  dp_buf_free(&j.s);
  dp_buf_free(&j.keys);
  dp_buf_free(&j.num);
  free(j.ke);
  return rc;
}
