/* json.c - validating, compacting JSON scanner (recursive descent, depth-limited). */
#include "json.h"

#include <string.h>

#define DP_JSON_MAX_DEPTH 512

typedef struct scan {
  const char *p, *start, *end;
  dp_buf *out;
  const char *what; /* set on failure */
  int depth;
  /* copying to out: the text from pend up to p is still to be copied (what is copied is the text
   * scanned, less the whitespace between tokens, which skip_ws leaves out), or NULL */
  const char *pend;
  int oom; /* out could not grow */
} scan;

static int fail(scan *s, const char *what) {
  s->what = what;
  return -1;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Copies the text scanned since pend to out. */
static void flush_out(scan *s) {
  if (s->pend && s->p > s->pend && dp_buf_append(s->out, s->pend, (size_t)(s->p - s->pend)) != 0) s->oom = 1;
  if (s->pend) s->pend = s->p;
}

static void skip_ws(scan *s) {
  if (s->p >= s->end || !is_ws(*s->p)) return;
  flush_out(s);
  while (s->p < s->end && is_ws(*s->p)) s->p++;
  if (s->pend) s->pend = s->p;
}

int dp_json_hex4(const char *p) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else return -1;
  }
  return v;
}

int dp_utf8_decode(const unsigned char *p, const unsigned char *end, unsigned *cp_out) {
  unsigned char c = p[0];
  int n;
  unsigned min;
  unsigned cp;
  if (c < 0x80) {
    if (cp_out) *cp_out = c;
    return 1;
  }
  if ((c & 0xe0) == 0xc0) { n = 2; cp = c & 0x1f; min = 0x80; }
  else if ((c & 0xf0) == 0xe0) { n = 3; cp = c & 0x0f; min = 0x800; }
  else if ((c & 0xf8) == 0xf0) { n = 4; cp = c & 0x07; min = 0x10000; }
  else return 0;
  if (end - p < n) return 0;
  for (int i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  if (cp_out) *cp_out = cp;
  return n;
}

int dp_utf8_len(const unsigned char *p, const unsigned char *end) { return dp_utf8_decode(p, end, NULL); }

/* A byte a string holds as it is: printable ASCII but the quote and the backslash. */
static int plain_byte(unsigned char c) { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\'; }

static int scan_string(scan *s) {
  s->p++; /* opening quote */
  while (s->p < s->end) {
    while (s->p < s->end && plain_byte((unsigned char)*s->p)) s->p++;
    if (s->p >= s->end) break;
    unsigned char c = (unsigned char)*s->p;
    if (c == '"') {
      s->p++;
      return 0;
    }
    if (c == '\\') {
      if (s->end - s->p < 2) return fail(s, "unterminated string");
      char x = s->p[1];
      if (x == 'u') {
        if (s->end - s->p < 6 || dp_json_hex4(s->p + 2) < 0) return fail(s, "bad \\u escape in string");
        s->p += 6;
      } else if (strchr("\"\\/bfnrt", x) && x) {
        s->p += 2;
      } else {
        return fail(s, "bad escape in string");
      }
      continue;
    }
    if (c < 0x20) return fail(s, "control character in string (escape it)");
    int n = dp_utf8_len((const unsigned char *)s->p, (const unsigned char *)s->end);
    if (n == 0) return fail(s, "invalid UTF-8 in string");
    s->p += n;
  }
  return fail(s, "unterminated string");
}

static int digits(scan *s) {
  const char *d = s->p;
  while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
  return s->p > d;
}

static int scan_number(scan *s) {
  if (*s->p == '-') s->p++;
  if (s->p >= s->end) return fail(s, "bad number");
  if (*s->p == '0') {
    s->p++;
  } else if (!digits(s)) {
    return fail(s, "bad number");
  }
  if (s->p < s->end && *s->p == '.') {
    s->p++;
    if (!digits(s)) return fail(s, "bad number: digits expected after '.'");
  }
  if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
    s->p++;
    if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
    if (!digits(s)) return fail(s, "bad number: digits expected in exponent");
  }
  return 0;
}

static int scan_literal(scan *s, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
    return fail(s, "unexpected character");
  s->p += n;
  return 0;
}

static int scan_value(scan *s);

static int scan_container(scan *s, char open, char close) {
  if (++s->depth > DP_JSON_MAX_DEPTH) return fail(s, "nesting too deep");
  s->p++;
  skip_ws(s);
  if (s->p < s->end && *s->p == close) {
    s->p++;
    s->depth--;
    return 0;
  }
  for (;;) {
    skip_ws(s);
    if (open == '{') {
      if (s->p >= s->end || *s->p != '"') return fail(s, "expected a string key");
      if (scan_string(s)) return -1;
      skip_ws(s);
      if (s->p >= s->end || *s->p != ':') return fail(s, "expected ':'");
      s->p++;
      skip_ws(s);
    }
    if (scan_value(s)) return -1;
    skip_ws(s);
    if (s->p >= s->end) return fail(s, open == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
    if (*s->p == ',') {
      s->p++;
      continue;
    }
    if (*s->p == close) {
      s->p++;
      s->depth--;
      return 0;
    }
    return fail(s, open == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

static int scan_value(scan *s) {
  skip_ws(s);
  if (s->p >= s->end) return fail(s, "unexpected end of input");
  switch (*s->p) {
    case '{': return scan_container(s, '{', '}');
    case '[': return scan_container(s, '[', ']');
    case '"': return scan_string(s);
    case 't': return scan_literal(s, "true");
    case 'f': return scan_literal(s, "false");
    case 'n': return scan_literal(s, "null");
    default:
      if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) return scan_number(s);
      return fail(s, "unexpected character");
  }
}

static int report(scan *s, dp_err *e) {
  return dp_err_set(e, DP_EJSON, "invalid JSON at byte %zu: %s", (size_t)(s->p - s->start) + 1,
                    s->what ? s->what : "syntax error");
}

int dp_json_compact(const char *text, size_t len, dp_buf *out, dp_err *e) {
  scan s = {text, text, text + len, out, NULL, 0, out ? text : NULL, 0};
  if (scan_value(&s)) return report(&s, e);
  flush_out(&s);
  s.pend = NULL;
  if (s.oom) return dp_err_set(e, DP_ENOMEM, "out of memory");
  skip_ws(&s);
  if (s.p != s.end) {
    s.what = "unexpected data after the JSON value";
    return report(&s, e);
  }
  return 0;
}

int dp_json_array_each(const char *text, size_t len, dp_json_each_fn each, void *ud, dp_err *e) {
  dp_buf elem = DP_BUF_INIT;
  scan s = {text, text, text + len, &elem, NULL, 1, NULL, 0};
  int rc = 0;
  skip_ws(&s);
  if (s.p >= s.end || *s.p != '[') {
    s.what = "expected a top-level array";
    rc = report(&s, e);
    goto cleanup;
  }
  s.p++;
  skip_ws(&s);
  if (s.p < s.end && *s.p == ']') {
    s.p++;
  } else {
    for (;;) {
      dp_buf_reset(&elem);
      s.pend = s.p;
      if (scan_value(&s)) { rc = report(&s, e); goto cleanup; }
      flush_out(&s);
      s.pend = NULL;
      if (s.oom) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); goto cleanup; }
      rc = each(ud, elem.data, elem.len);
      if (rc != 0) goto cleanup;
      skip_ws(&s);
      if (s.p < s.end && *s.p == ',') { s.p++; continue; }
      if (s.p < s.end && *s.p == ']') { s.p++; break; }
      s.what = "expected ',' or ']'";
      rc = report(&s, e);
      goto cleanup;
    }
  }
  skip_ws(&s);
  if (s.p != s.end) {
    s.what = "unexpected data after the JSON value";
    rc = report(&s, e);
  }
cleanup:
  dp_buf_free(&elem);
  return rc;
}

char *dp_utf8_copy(char *dst, size_t cap, const char *src) {
  size_t n = dp_utf8_prefix(src, strlen(src), cap - 1);
  memmove(dst, src, n);
  dst[n] = '\0';
  return dst;
}

size_t dp_utf8_prefix(const char *s, size_t n, size_t max) {
  if (n <= max) return n;
  size_t k = max;
  /* back over continuation bytes to the start of the sequence the cut falls in */
  while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80) k--;
  return k;
}

void dp_json_put_utf8(dp_buf *b, unsigned cp) {
  char u[4];
  if (cp < 0x80) {
    dp_buf_putc(b, (char)cp);
  } else if (cp < 0x800) {
    u[0] = (char)(0xc0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3f));
    dp_buf_append(b, u, 2);
  } else if (cp < 0x10000) {
    u[0] = (char)(0xe0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    u[2] = (char)(0x80 | (cp & 0x3f));
    dp_buf_append(b, u, 3);
  } else {
    u[0] = (char)(0xf0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    u[3] = (char)(0x80 | (cp & 0x3f));
    dp_buf_append(b, u, 4);
  }
}

/* Decodes the body of a validated JSON string (between the quotes) into b. */
static void unescape(const char *p, const char *end, dp_buf *b) {
  while (p < end) {
    if (*p != '\\') {
      dp_buf_putc(b, *p++);
      continue;
    }
    char x = p[1];
    p += 2;
    switch (x) {
      case 'b': dp_buf_putc(b, '\b'); break;
      case 'f': dp_buf_putc(b, '\f'); break;
      case 'n': dp_buf_putc(b, '\n'); break;
      case 'r': dp_buf_putc(b, '\r'); break;
      case 't': dp_buf_putc(b, '\t'); break;
      case 'u': {
        unsigned cp = (unsigned)dp_json_hex4(p);
        p += 4;
        if (cp >= 0xd800 && cp <= 0xdbff && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
          int lo = dp_json_hex4(p + 2);
          if (lo >= 0xdc00 && lo <= 0xdfff) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned)lo - 0xdc00);
            p += 6;
          }
        }
        dp_json_put_utf8(b, cp);
        break;
      }
      default: dp_buf_putc(b, x); /* " \ / */
    }
  }
}

/* Is the raw key text k[0..kn) (between the quotes, maybe with escapes) equal to seg? */
static int key_equals(const char *k, size_t kn, const char *seg, size_t sn) {
  if (!memchr(k, '\\', kn)) return kn == sn && memcmp(k, seg, sn) == 0;
  dp_buf b = DP_BUF_INIT;
  unescape(k, k + kn, &b);
  int eq = b.len == sn && (sn == 0 || memcmp(b.data, seg, sn) == 0);
  dp_buf_free(&b);
  return eq;
}

/* Moves s->p from an opening '{' to the value of member seg; 0 found, 1 not there. The text is
 * valid JSON (checked before). */
static int find_member(scan *s, const char *seg, size_t sn) {
  s->p++;
  for (;;) {
    skip_ws(s);
    if (*s->p == '}') return 1;
    const char *k = s->p + 1;
    scan_string(s);
    size_t kn = (size_t)(s->p - 1 - k);
    skip_ws(s);
    s->p++; /* ':' */
    skip_ws(s);
    if (key_equals(k, kn, seg, sn)) return 0;
    scan_value(s);
    skip_ws(s);
    if (*s->p == ',') s->p++;
  }
}

/* Moves s->p from an opening '[' to element idx; 0 found, 1 not there. */
static int find_element(scan *s, size_t idx) {
  s->p++;
  for (size_t i = 0;; i++) {
    skip_ws(s);
    if (*s->p == ']') return 1;
    if (i == idx) return 0;
    scan_value(s);
    skip_ws(s);
    if (*s->p == ',') s->p++;
  }
}

int dp_json_select(const char *text, size_t len, const char *path, size_t plen, const char **val,
                   size_t *vlen, dp_err *e) {
  scan s = {text, text, text + len, NULL, NULL, 0, NULL, 0};
  if (scan_value(&s)) return report(&s, e);
  skip_ws(&s);
  if (s.p != s.end) {
    s.what = "unexpected data after the JSON value";
    return report(&s, e);
  }
  s.p = text;
  s.depth = 0;
  skip_ws(&s);
  const char *seg = path, *pend = path + plen;
  while (plen > 0 && seg <= pend) {
    const char *dot = memchr(seg, '.', (size_t)(pend - seg));
    if (!dot) dot = pend;
    size_t sn = (size_t)(dot - seg);
    int missing = 1;
    if (*s.p == '{') {
      missing = find_member(&s, seg, sn);
    } else if (*s.p == '[' && sn > 0 && sn < 19) {
      size_t idx = 0;
      int digits_only = 1;
      for (size_t i = 0; i < sn; i++) {
        if (seg[i] < '0' || seg[i] > '9') digits_only = 0;
        else idx = idx * 10 + (size_t)(seg[i] - '0');
      }
      if (digits_only) missing = find_element(&s, idx);
    }
    if (missing) return dp_err_set(e, DP_ENOTFOUND, "no value at %.*s", (int)plen, path);
    seg = dot + 1;
  }
  const char *start = s.p;
  scan_value(&s);
  *val = start;
  *vlen = (size_t)(s.p - start);
  return 0;
}

/* Code points (beyond C0 and DEL) that end a line or reorder text on a terminal or in a viewer:
 * C1 controls (NEL U+0085, CSI U+009B, ...), the line and paragraph separators, and the
 * bidirectional embeddings, overrides and isolates ("Trojan Source"). */
static int unsafe_cp(unsigned cp) {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 || (cp >= 0x202A && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200E || cp == 0x200F;
}

static const char hexd[] = "0123456789abcdef";

/* "\uXXXX" */
static size_t put_u(char *o, unsigned cp) {
  o[0] = '\\';
  o[1] = 'u';
  for (int k = 0; k < 4; k++) o[2 + k] = hexd[(cp >> (12 - 4 * k)) & 15];
  return 6;
}

/* "\xNN", or in JSON "\\xNN" (the text \xNN) */
static size_t put_x(char *o, unsigned c, int json) {
  size_t k = 0;
  o[k++] = '\\';
  if (json) o[k++] = '\\';
  o[k++] = 'x';
  o[k++] = hexd[c >> 4];
  o[k++] = hexd[c & 15];
  return k;
}

size_t dp_json_escape_unit(const char *s, size_t len, unsigned flags, char *out, size_t *outn) {
  unsigned char c = (unsigned char)s[0];
  int text = (flags & DP_JSON_ESC_TEXT) != 0, safe = text || (flags & DP_JSON_ESC_SAFE);
  *outn = 2;
  out[0] = '\\';
  if (c >= 0x20 && c < 0x7f) {
    if (!text && (c == '"' || c == '\\')) out[1] = (char)c;
    else if (c == '/' && (flags & DP_JSON_ESC_SLASH)) out[1] = '/';
    else { out[0] = (char)c; *outn = 1; }
    return 1;
  }
  if (c == '\n') { out[1] = 'n'; return 1; }
  if (c == '\r') { out[1] = 'r'; return 1; }
  if (c == '\t') { out[1] = 't'; return 1; }
  if (c == '\b' && (flags & DP_JSON_ESC_BF)) { out[1] = 'b'; return 1; }
  if (c == '\f' && (flags & DP_JSON_ESC_BF)) { out[1] = 'f'; return 1; }
  if (c < 0x20 || (c == 0x7f && (safe || (flags & DP_JSON_ESC_BF)))) {
    *outn = text ? put_x(out, c, 0) : put_u(out, c);
    return 1;
  }
  if (c < 0x80 || !safe) { out[0] = (char)c; *outn = 1; return 1; }
  const unsigned char *p = (const unsigned char *)s;
  unsigned cp;
  int k = dp_utf8_decode(p, p + len, &cp);
  if (k == 0) {
    *outn = put_x(out, c, !text);
    return 1;
  }
  if (unsafe_cp(cp)) {
    *outn = put_u(out, cp);
  } else {
    memcpy(out, s, (size_t)k);
    *outn = (size_t)k;
  }
  return (size_t)k;
}

int dp_json_escape(dp_buf *out, const char *s, size_t n, unsigned flags) {
  int safe = (flags & (DP_JSON_ESC_SAFE | DP_JSON_ESC_TEXT)) != 0;
  if (dp_buf_reserve(out, n)) return DP_ENOMEM;
  for (size_t i = 0; i < n;) {
    size_t run = i; /* bytes that stay as they are, appended at once */
    while (run < n) {
      unsigned char c = (unsigned char)s[run];
      if (c >= 0x80 ? safe : (c < 0x20 || c == 0x7f || c == '"' || c == '\\' || c == '/')) break;
      run++;
    }
    if (run > i && dp_buf_append(out, s + i, run - i)) return DP_ENOMEM;
    i = run;
    if (i == n) break;
    char u[DP_JSON_UNIT_MAX];
    size_t un;
    i += dp_json_escape_unit(s + i, n - i, flags, u, &un);
    if (dp_buf_append(out, u, un)) return DP_ENOMEM;
  }
  return 0;
}

int dp_json_put_string(dp_buf *out, const char *str, size_t n) {
  if (dp_buf_reserve(out, n + 2) || dp_buf_putc(out, '"') || dp_json_escape(out, str, n, 0)) return DP_ENOMEM;
  return dp_buf_putc(out, '"');
}
