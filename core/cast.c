/* cast.c - typed casting to canonical text (see docs/data-types.md for the rules). */
#include "cast.h"
#include "tz.h" /* dp_days_from_civil, dp_civil_from_days */
#include "json.h"
#include "jsonbson.h"
#include "uuid.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SHOWN 60

/* Appends a short, quoted rendering of a source string for error messages. */
static void shown(char *dst, size_t cap, const char *s, size_t n) {
  /* control bytes (NUL too, which would end the message) written as \0, \n, \xHH */
  size_t k = 0, i = 0;
  if (cap < 8) { if (cap) dst[0] = '\0'; return; }
  dst[k++] = '"';
  size_t shown_n = dp_utf8_prefix(s, n, MAX_SHOWN); /* never half a character */
  for (; i < n && k + 8 < cap && i < shown_n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != 0x7f) { dst[k++] = (char)c; continue; }
    if (c == 0) k += (size_t)snprintf(dst + k, cap - k, "\\0");
    else if (c == '\n') k += (size_t)snprintf(dst + k, cap - k, "\\n");
    else k += (size_t)snprintf(dst + k, cap - k, "\\x%02x", c);
  }
  if (i < n && k + 4 < cap) k += (size_t)snprintf(dst + k, cap - k, "...");
  dst[k++] = '"';
  dst[k] = '\0';
}

void dp_format_double(double d, char buf[40]) {
  for (int p = 15; p <= 17; p++) {
    snprintf(buf, 40, "%.*g", p, d);
    if (strtod(buf, NULL) == d) return;
  }
}

/* ---------- calendar (days since 1970 and back: tz.c) ---------- */

static int days_in_month(int64_t y, unsigned m) {
  static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
  return dm[m - 1];
}

static int num(const char *s, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i])) return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

/* Parses YYYY-MM-DD at s; returns days since 1970-01-01 via out. */
static int parse_date(const char *s, size_t n, int64_t *out) {
  int y, m, d;
  if (n < 10 || s[4] != '-' || s[7] != '-' || num(s, 4, &y) || num(s + 5, 2, &m) ||
      num(s + 8, 2, &d))
    return -1;
  if (y < 1 || m < 1 || m > 12 || d < 1 || d > days_in_month(y, (unsigned)m)) return -1;
  *out = dp_days_from_civil(y, (unsigned)m, (unsigned)d);
  return 0;
}

/* n digits of v, zero-padded, at p */
static void digits(char *p, int n, uint64_t v) {
  for (int i = n - 1; i >= 0; i--) { p[i] = (char)('0' + v % 10); v /= 10; }
}

static void format_date(int64_t days, dp_buf *out) {
  int64_t y;
  unsigned m, d;
  dp_civil_from_days(days, &y, &m, &d);
  if (y < 0 || y > 9999) { /* not from a parsed date: keep printf's rendering */
    dp_buf_printf(out, "%04" PRId64 "-%02u-%02u", y, m, d);
    return;
  }
  char b[10];
  digits(b, 4, (uint64_t)y);
  b[4] = '-';
  digits(b + 5, 2, m);
  b[7] = '-';
  digits(b + 8, 2, d);
  dp_buf_append(out, b, sizeof b);
}

/* Microseconds since the epoch -> "YYYY-MM-DDTHH:MM:SS.ffffffZ". */
static int format_ts(int64_t us, dp_buf *out) {
  int64_t secs = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
  int64_t frac = us - secs * 1000000;
  int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
  int64_t sod = secs - days * 86400;
  int64_t y;
  unsigned m, d;
  dp_civil_from_days(days, &y, &m, &d);
  if (y < 1 || y > 9999) return -1;
  char b[27]; /* YYYY-MM-DDTHH:MM:SS.ffffffZ */
  digits(b, 4, (uint64_t)y);
  b[4] = '-';
  digits(b + 5, 2, m);
  b[7] = '-';
  digits(b + 8, 2, d);
  b[10] = 'T';
  digits(b + 11, 2, (uint64_t)(sod / 3600));
  b[13] = ':';
  digits(b + 14, 2, (uint64_t)(sod / 60 % 60));
  b[16] = ':';
  digits(b + 17, 2, (uint64_t)(sod % 60));
  b[19] = '.';
  digits(b + 20, 6, (uint64_t)frac);
  b[26] = 'Z';
  return dp_buf_append(out, b, sizeof b);
}

/* ISO 8601: YYYY-MM-DD, or YYYY-MM-DD[T ]HH:MM[:SS[.fff...]][Z|+HH[:MM]|-HH[:MM]].
 * No zone means UTC. Fractions beyond microseconds are truncated. */
static int parse_ts(const char *s, size_t n, int64_t *us) {
  int64_t days;
  if (parse_date(s, n, &days)) return -1;
  int64_t secs = days * 86400, micro = 0;
  size_t i = 10;
  if (i < n) {
    int hh, mi, ss = 0;
    if (s[i] != 'T' && s[i] != 't' && s[i] != ' ') return -1;
    i++;
    if (n - i < 5 || s[i + 2] != ':' || num(s + i, 2, &hh) || num(s + i + 3, 2, &mi)) return -1;
    i += 5;
    if (i < n && s[i] == ':') {
      if (n - i < 3 || num(s + i + 1, 2, &ss)) return -1;
      i += 3;
      if (i < n && (s[i] == '.' || s[i] == ',')) {
        i++;
        int digits = 0;
        while (i < n && isdigit((unsigned char)s[i])) {
          if (digits < 6) micro = micro * 10 + (s[i] - '0');
          digits++;
          i++;
        }
        if (digits == 0) return -1;
        for (; digits < 6; digits++) micro *= 10;
      }
    }
    if (hh > 23 || mi > 59 || ss > 60) return -1;
    if (ss == 60) ss = 59; /* leap second: clamp */
    secs += hh * 3600 + mi * 60 + ss;
    if (i < n) {
      if (s[i] == 'Z' || s[i] == 'z') {
        i++;
      } else if (s[i] == '+' || s[i] == '-') {
        int sign = s[i] == '-' ? -1 : 1, oh, om = 0;
        i++;
        if (n - i < 2 || num(s + i, 2, &oh)) return -1;
        i += 2;
        if (i < n && s[i] == ':') i++;
        if (i < n) {
          if (n - i < 2 || num(s + i, 2, &om)) return -1;
          i += 2;
        }
        if (oh > 23 || om > 59) return -1;
        secs -= sign * (oh * 3600 + om * 60);
      } else {
        return -1;
      }
    }
    if (i != n) return -1;
  }
  *us = secs * 1000000 + micro;
  return 0;
}

/* ---------- decimals ---------- */

/* Rounds the decimal text s to col's scale (half away from zero) and checks precision. */
static int cast_decimal_text(const dp_column *col, const char *s, size_t n, dp_buf *out,
                             dp_err *e) {
  char sh[4 * MAX_SHOWN + 16]; /* the value as shown in messages: made only when one is needed */
#define sh (shown(sh, sizeof sh, s0, n0), sh)
  const char *s0 = s;
  size_t n0 = n;
  size_t i = 0;
  int neg = 0;
  if (i < n && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  char digs[1100];
  int nd = 0, point = -1; /* point = number of digits before the decimal point */
  int any = 0;
  for (; i < n; i++) {
    if (isdigit((unsigned char)s[i])) {
      if (nd >= 1000) return dp_err_set(e, DP_ECAST, "%s has too many digits", sh);
      digs[nd++] = s[i];
      any = 1;
    } else if (s[i] == '.' && point < 0) {
      point = nd;
    } else {
      break;
    }
  }
  if (!any) return dp_err_set(e, DP_ECAST, "%s is not a decimal number", sh);
  if (point < 0) point = nd;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    char *end;
    errno = 0;
    /* strtol would skip white space: the exponent starts right after the e */
    const char *x = s + i + 1;
    int digit_next = x < s + n && (isdigit((unsigned char)*x) ||
                                   ((*x == '+' || *x == '-') && x + 1 < s + n && isdigit((unsigned char)x[1])));
    long ex = digit_next ? strtol(x, &end, 10) : 0;
    if (!digit_next || end == x || (size_t)(end - s) != n || errno || ex > 1000 || ex < -1000)
      return dp_err_set(e, DP_ECAST, "%s is not a decimal number", sh);
    point += (int)ex;
    i = n;
  }
  if (i != n) return dp_err_set(e, DP_ECAST, "%s is not a decimal number", sh);
  /* Digit k (0-based from the left) has weight 10^(point-1-k). Build integer part and
   * scale+1 fractional digits (the extra one decides the rounding). */
  int scale = col->scale;
  char ip[2200], fp[2200];
  int ni = 0;
  for (int k = 0; k < point; k++) ip[ni++] = (k < nd) ? digs[k] : '0';
  for (int k = 0; k <= scale; k++) {
    int idx = point + k;
    fp[k] = (idx >= 0 && idx < nd) ? digs[idx] : '0';
  }
  int roundup = fp[scale] >= '5';
  /* Add one ulp at the last kept position when rounding up. */
  if (roundup) {
    int k = scale - 1;
    int carry = 1;
    for (; k >= 0 && carry; k--) {
      if (fp[k] == '9') fp[k] = '0';
      else { fp[k]++; carry = 0; }
    }
    for (k = ni - 1; k >= 0 && carry; k--) {
      if (ip[k] == '9') ip[k] = '0';
      else { ip[k]++; carry = 0; }
    }
    if (carry) {
      memmove(ip + 1, ip, (size_t)ni);
      ip[0] = '1';
      ni++;
    }
  }
  int lead = 0;
  while (lead < ni && ip[lead] == '0') lead++;
  int intdigits = ni - lead;
  if (intdigits > col->precision - scale)
    return dp_err_set(e, DP_ECAST, "%s does not fit decimal(%d,%d)", sh, col->precision, scale);
  int zero = intdigits == 0;
  for (int k = 0; k < scale && zero; k++) zero = fp[k] == '0';
  if (neg && !zero) dp_buf_putc(out, '-');
  if (intdigits == 0) dp_buf_putc(out, '0');
  else dp_buf_append(out, ip + lead, (size_t)intdigits);
  if (scale > 0) {
    dp_buf_putc(out, '.');
    dp_buf_append(out, fp, (size_t)scale);
  }
  return 0;
#undef sh
}

/* ---------- per-type casts from the source's representations ---------- */

static void trim(const char **s, size_t *n) {
  while (*n && isspace((unsigned char)**s)) { (*s)++; (*n)--; }
  while (*n && isspace((unsigned char)(*s)[*n - 1])) (*n)--;
}

static int parse_int_text(const char *s, size_t n, int64_t *v) {
  char tmp[32];
  if (n == 0) return -1;
  if (n >= sizeof tmp) { /* all digits: a number too large; else not one */
    size_t k = (s[0] == '+' || s[0] == '-') ? 1 : 0;
    for (; k < n; k++)
      if (!isdigit((unsigned char)s[k])) return -1;
    return -2;
  }
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  size_t i = (tmp[0] == '+' || tmp[0] == '-') ? 1 : 0;
  if (tmp[i] == '\0') return -1;
  for (size_t k = i; tmp[k]; k++)
    if (!isdigit((unsigned char)tmp[k])) return -1;
  errno = 0;
  long long x = strtoll(tmp, NULL, 10);
  if (errno == ERANGE) return -2;
  *v = x;
  return 0;
}

static size_t utf8_chars(const char *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    if (((unsigned char)s[i] & 0xc0) != 0x80) c++;
  return c;
}

/* v in decimal into buf (at least 21 bytes, NUL-terminated); returns the length */
static size_t i64_text(int64_t v, char *buf) {
  char tmp[24];
  size_t n = 0;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
  size_t k = 0;
  if (v < 0) buf[k++] = '-';
  while (n) buf[k++] = tmp[--n];
  buf[k] = '\0';
  return k;
}

/* v as the column's canonical text; 1 when it does not fit an `integer` (the caller says so) */
static int put_int(const dp_column *col, int64_t v, dp_buf *out) {
  if (col->type == DP_T_INTEGER && (v < INT32_MIN || v > INT32_MAX)) return 1;
  char b[24];
  dp_buf_append(out, b, i64_text(v, b));
  return 0;
}

/* [+-] digits [. digits] [e [+-] digits], a digit somewhere before the exponent: what strtod
 * reads besides (hex, inf, nan) is not a number a source means */
static int decimal_syntax(const char *s, size_t n) {
  size_t i = 0, d = 0;
  if (i < n && (s[i] == '+' || s[i] == '-')) i++;
  while (i < n && isdigit((unsigned char)s[i])) i++, d++;
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && isdigit((unsigned char)s[i])) i++, d++;
  }
  if (d == 0) return 0;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    size_t x = 0;
    while (i < n && isdigit((unsigned char)s[i])) i++, x++;
    if (x == 0) return 0;
  }
  return i == n;
}

static int cast_from_string(const dp_column *col, const char *s, size_t n, dp_buf *out,
                            dp_err *e) {
  char sh[4 * MAX_SHOWN + 16]; /* the value as shown in messages: made only when one is needed */
#define sh (shown(sh, sizeof sh, s0, n0), sh)
  const char *s0 = s;
  size_t n0 = n;
  if (col->type == DP_T_STRING || col->type == DP_T_TEXT) {
    if (col->type == DP_T_STRING && col->length > 0) {
      size_t chars = utf8_chars(s, n);
      if (chars > (size_t)col->length)
        return dp_err_set(e, DP_ECAST, "%s is %zu characters, longer than string(%d)", sh, chars,
                          col->length);
    }
    if (memchr(s, '\0', n)) return dp_err_set(e, DP_ECAST, "%s contains a NUL character", sh);
    return dp_buf_append(out, s, n);
  }
  if (col->type == DP_T_JSON) return dp_json_put_string(out, s, n);
  /* the parsers below read C strings: "12\u00003" must not become 12 */
  if (memchr(s, '\0', n)) return dp_err_set(e, DP_ECAST, "%s contains a NUL character", sh);
  trim(&s, &n);
  switch (col->type) {
    case DP_T_INTEGER:
    case DP_T_BIGINT: {
      int64_t v;
      int r = parse_int_text(s, n, &v);
      if (r == -2) return dp_err_set(e, DP_ECAST, "%s is out of range for %s", sh, dp_type_name(col->type));
      if (r) return dp_err_set(e, DP_ECAST, "%s is not an integer", sh);
      if (put_int(col, v, out)) return dp_err_set(e, DP_ECAST, "%s is out of range for integer", sh);
      return 0;
    }
    case DP_T_DECIMAL: return cast_decimal_text(col, s, n, out, e);
    case DP_T_DOUBLE: {
      char tmp[512], *end;
      if (n == 0 || n >= sizeof tmp || !decimal_syntax(s, n)) return dp_err_set(e, DP_ECAST, "%s is not a number", sh);
      memcpy(tmp, s, n);
      tmp[n] = '\0';
      errno = 0;
      double d = strtod(tmp, &end);
      int range = errno == ERANGE;
      if (*end || end == tmp) return dp_err_set(e, DP_ECAST, "%s is not a number", sh);
      if (!isfinite(d)) return dp_err_set(e, DP_ECAST, "%s is not a finite number", sh);
      if (range && d == 0) return dp_err_set(e, DP_ECAST, "%s is too small for a double (it would be 0)", sh);
      char b[40];
      dp_format_double(d, b);
      return dp_buf_puts(out, b);
    }
    case DP_T_BOOLEAN: {
      static const char *yes[] = {"true", "t", "yes", "y", "1", "on"};
      static const char *no[] = {"false", "f", "no", "n", "0", "off"};
      for (int k = 0; k < 6; k++) {
        if (strlen(yes[k]) == n && strncasecmp(s, yes[k], n) == 0) return dp_buf_puts(out, "true");
        if (strlen(no[k]) == n && strncasecmp(s, no[k], n) == 0) return dp_buf_puts(out, "false");
      }
      return dp_err_set(e, DP_ECAST, "%s is not a boolean (true/false, yes/no, y/n, t/f, 1/0, on/off)", sh);
    }
    case DP_T_DATE: {
      int64_t days;
      if (n != 10 || parse_date(s, n, &days))
        return dp_err_set(e, DP_ECAST, "%s is not a date (YYYY-MM-DD)", sh);
      format_date(days, out);
      return 0;
    }
    case DP_T_TIMESTAMP: {
      int64_t us;
      if (parse_ts(s, n, &us) || format_ts(us, out))
        return dp_err_set(e, DP_ECAST, "%s is not an ISO 8601 timestamp", sh);
      return 0;
    }
    case DP_T_UUID: {
      char tmp[40];
      uint8_t u[16];
      if (n >= sizeof tmp) return dp_err_set(e, DP_ECAST, "%s is not a UUID", sh);
      memcpy(tmp, s, n);
      tmp[n] = '\0';
      if (dp_uuid_parse(tmp, u)) return dp_err_set(e, DP_ECAST, "%s is not a UUID", sh);
      dp_uuid_format(u, tmp);
      return dp_buf_append(out, tmp, 36);
    }
    default: return dp_err_set(e, DP_EINVAL, "unknown column type");
  }
#undef sh
}

static int cast_from_int(const dp_column *col, int64_t v, dp_buf *out, dp_err *e) {
  char sh[48];
  i64_text(v, sh);
  switch (col->type) {
    case DP_T_STRING:
    case DP_T_TEXT:
    case DP_T_DECIMAL: return cast_from_string(col, sh, strlen(sh), out, e);
    case DP_T_INTEGER:
    case DP_T_BIGINT:
      if (put_int(col, v, out)) return dp_err_set(e, DP_ECAST, "%s is out of range for integer", sh);
      return 0;
    case DP_T_DOUBLE: {
      char b[40];
      dp_format_double((double)v, b);
      return dp_buf_puts(out, b);
    }
    case DP_T_JSON: return dp_buf_puts(out, sh);
    case DP_T_BOOLEAN:
      if (v == 0 || v == 1) return dp_buf_puts(out, v ? "true" : "false");
      return dp_err_set(e, DP_ECAST, "%s is not a boolean (only 0 and 1 are)", sh);
    case DP_T_TIMESTAMP: /* Unix epoch seconds */
      if (v > 253402300799LL || v < -62135596800LL || format_ts(v * 1000000, out))
        return dp_err_set(e, DP_ECAST, "%s is out of range for a timestamp (epoch seconds)", sh);
      return 0;
    default: return dp_err_set(e, DP_ECAST, "%s (a number) is not a %s", sh, dp_type_name(col->type));
  }
}

static int cast_from_double(const dp_column *col, double d, dp_buf *out, dp_err *e) {
  char b[40];
  dp_format_double(d, b);
  if (!isfinite(d)) return dp_err_set(e, DP_ECAST, "%s is not a finite number", b);
  switch (col->type) {
    case DP_T_STRING:
    case DP_T_TEXT:
    case DP_T_DECIMAL:
    case DP_T_DOUBLE: return cast_from_string(col, b, strlen(b), out, e);
    case DP_T_JSON: return dp_buf_puts(out, b);
    case DP_T_INTEGER:
    case DP_T_BIGINT:
      if (d != floor(d)) return dp_err_set(e, DP_ECAST, "%s is not an integer", b);
      if (d < -9223372036854775808.0 || d >= 9223372036854775808.0)
        return dp_err_set(e, DP_ECAST, "%s is out of range for %s", b, dp_type_name(col->type));
      if (put_int(col, (int64_t)d, out)) return dp_err_set(e, DP_ECAST, "%s is out of range for integer", b);
      return 0;
    case DP_T_TIMESTAMP: {
      double us = floor(d * 1e6 + 0.5);
      if (d > 253402300799.0 || d < -62135596800.0 || format_ts((int64_t)us, out))
        return dp_err_set(e, DP_ECAST, "%s is out of range for a timestamp (epoch seconds)", b);
      return 0;
    }
    case DP_T_BOOLEAN: /* 1.0 and 0.0 are the integers 1 and 0, as -7.0 is an integer above */
      if (d == 0.0 || d == 1.0) return dp_buf_puts(out, d == 1.0 ? "true" : "false");
      return dp_err_set(e, DP_ECAST, "%s is not a boolean (only 0 and 1 are)", b);
    default: return dp_err_set(e, DP_ECAST, "%s (a number) is not a %s", b, dp_type_name(col->type));
  }
}

/* A JSON number's text that neither int64 nor double holds exactly (jsonbson.h): exact for text,
 * json and decimal columns, range-checked for the others; never wrapped or rounded silently. */
static int cast_from_number_text(const dp_column *col, const char *s, size_t n, dp_buf *out, dp_err *e) {
  char sh[4 * MAX_SHOWN + 16];
  shown(sh, sizeof sh, s, n);
  switch (col->type) {
    case DP_T_STRING:
    case DP_T_TEXT:
    case DP_T_DECIMAL: return cast_from_string(col, s, n, out, e);
    case DP_T_JSON: return dp_buf_append(out, s, n);
    case DP_T_INTEGER:
    case DP_T_BIGINT: {
      dp_buf d = DP_BUF_INIT;
      dp_num num;
      int rc;
      if (dp_num_normalize(s, n, &num, &d) != 0) {
        rc = dp_err_set(e, DP_ECAST, "%s is not a number", sh);
      } else if ((long)d.len > num.point) {
        rc = dp_err_set(e, DP_ECAST, "%s is not an integer", sh);
      } else if (num.point > 19) {
        rc = dp_err_set(e, DP_ECAST, "%s is out of range for %s", sh, dp_type_name(col->type));
      } else {
        char t[32];
        size_t k = 0;
        if (num.neg) t[k++] = '-';
        for (long i = 0; i < num.point; i++) t[k++] = i < (long)d.len ? d.data[i] : '0';
        if (num.point == 0) t[k++] = '0';
        int64_t v;
        int r = parse_int_text(t, k, &v);
        if (r == -2) rc = dp_err_set(e, DP_ECAST, "%s is out of range for %s", sh, dp_type_name(col->type));
        else if (r) rc = dp_err_set(e, DP_ECAST, "%s is not an integer", sh);
        else if (put_int(col, v, out)) rc = dp_err_set(e, DP_ECAST, "%s is out of range for integer", sh);
        else rc = 0;
      }
      dp_buf_free(&d);
      return rc;
    }
    case DP_T_DOUBLE: {
      dp_buf t = DP_BUF_INIT;
      dp_buf_append(&t, s, n);
      errno = 0;
      double d = t.data ? strtod(t.data, NULL) : 0;
      int range = errno == ERANGE;
      dp_buf_free(&t);
      if (!isfinite(d)) return dp_err_set(e, DP_ECAST, "%s does not fit a double (too large)", sh);
      if (range && d == 0) return dp_err_set(e, DP_ECAST, "%s is too small for a double (it would be 0)", sh);
      /* a double holds the nearest value, as PostgreSQL's float8 input does (docs/data-types.md) */
      char b[40];
      dp_format_double(d, b);
      return dp_buf_puts(out, b);
    }
    case DP_T_TIMESTAMP: {
      dp_buf t = DP_BUF_INIT;
      dp_buf_append(&t, s, n);
      double d = t.data ? strtod(t.data, NULL) : 0;
      dp_buf_free(&t);
      if (!isfinite(d) || d > 253402300799.0 || d < -62135596800.0)
        return dp_err_set(e, DP_ECAST, "%s is out of range for a timestamp (epoch seconds)", sh);
      return cast_from_double(col, d, out, e);
    }
    case DP_T_BOOLEAN: return dp_err_set(e, DP_ECAST, "%s is not a boolean", sh);
    default: return dp_err_set(e, DP_ECAST, "%s (a number) is not a %s", sh, dp_type_name(col->type));
  }
}

/* A key as the source wrote it (bronze stores some encoded: jsonbson.h). */
static void put_key(dp_buf *out, const char *k, size_t n) {
  if (!memchr(k, '%', n)) {
    dp_json_put_string(out, k, n);
    return;
  }
  dp_buf d = DP_BUF_INIT;
  dp_key_decode(k, n, &d);
  dp_json_put_string(out, d.data ? d.data : "", d.len);
  dp_buf_free(&d);
}

int dp_bson_value_to_json(const bson_iter_t *it, dp_buf *out) {
  switch (bson_iter_type(it)) {
    case BSON_TYPE_UTF8: {
      uint32_t n;
      const char *s = bson_iter_utf8(it, &n);
      return dp_json_put_string(out, s, n);
    }
    case BSON_TYPE_INT32: return dp_buf_printf(out, "%d", bson_iter_int32(it));
    case BSON_TYPE_INT64: return dp_buf_printf(out, "%" PRId64, bson_iter_int64(it));
    case BSON_TYPE_DOUBLE: {
      double d = bson_iter_double(it);
      if (!isfinite(d)) return dp_buf_puts(out, "null");
      char b[40];
      dp_format_double(d, b);
      return dp_buf_puts(out, b);
    }
    case BSON_TYPE_BOOL: return dp_buf_puts(out, bson_iter_bool(it) ? "true" : "false");
    case BSON_TYPE_NULL:
    case BSON_TYPE_UNDEFINED: return dp_buf_puts(out, "null");
    case BSON_TYPE_BINARY: { /* a number's text, or a string holding NUL (jsonbson.h) */
      bson_subtype_t st;
      uint32_t n;
      const uint8_t *bin;
      bson_iter_binary(it, &st, &n, &bin);
      if (st == DP_BSON_NUMBER_TEXT) return dp_buf_append(out, bin, n);
      if (st == DP_BSON_NUL_STRING) return dp_json_put_string(out, (const char *)bin, n);
      bson_t tmp = BSON_INITIALIZER;
      bson_append_iter(&tmp, "v", 1, it);
      size_t len;
      char *js = bson_as_relaxed_extended_json(&tmp, &len);
      int rc = js ? dp_buf_puts(out, js) : DP_EINVAL;
      bson_free(js);
      bson_destroy(&tmp);
      return rc;
    }
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY: {
      int is_array = bson_iter_type(it) == BSON_TYPE_ARRAY;
      bson_iter_t child;
      if (!bson_iter_recurse(it, &child)) return DP_EINVAL;
      if (!is_array) { /* {"%5B%5D": [...]} is an array that was inside an array (jsonbson.h) */
        bson_iter_t probe = child;
        if (bson_iter_next(&probe) && strcmp(bson_iter_key(&probe), DP_BSON_ARRAY_KEY) == 0 &&
            BSON_ITER_HOLDS_ARRAY(&probe)) {
          bson_iter_t after = probe;
          if (!bson_iter_next(&after)) return dp_bson_value_to_json(&probe, out);
        }
      }
      dp_buf_putc(out, is_array ? '[' : '{');
      int first = 1;
      while (bson_iter_next(&child)) {
        if (!first) dp_buf_putc(out, ',');
        first = 0;
        if (!is_array) {
          put_key(out, bson_iter_key(&child), bson_iter_key_len(&child));
          dp_buf_putc(out, ':');
        }
        int rc = dp_bson_value_to_json(&child, out);
        if (rc) return rc;
      }
      return dp_buf_putc(out, is_array ? ']' : '}');
    }
    default: {
      /* Other BSON types do not come from JSON sources; fall back to extended JSON. */
      bson_t tmp = BSON_INITIALIZER;
      bson_append_iter(&tmp, "v", 1, it);
      size_t len;
      char *js = bson_as_relaxed_extended_json(&tmp, &len);
      int rc = js ? dp_buf_puts(out, js) : DP_EINVAL;
      bson_free(js);
      bson_destroy(&tmp);
      return rc;
    }
  }
}

int dp_bson_to_json(const bson_t *doc, dp_buf *out) {
  bson_iter_t it;
  if (!bson_iter_init(&it, doc)) return DP_EINVAL;
  dp_buf_putc(out, '{');
  int first = 1;
  while (bson_iter_next(&it)) {
    if (!first) dp_buf_putc(out, ',');
    first = 0;
    put_key(out, bson_iter_key(&it), bson_iter_key_len(&it));
    dp_buf_putc(out, ':');
    int rc = dp_bson_value_to_json(&it, out);
    if (rc) return rc;
  }
  return dp_buf_putc(out, '}');
}

/* Does JSON text s[0..n) hold the escape \u0000 (not a literal backslash before "u0000")? */
static int json_has_nul(const char *s, size_t n) {
  for (size_t i = 0; i + 6 <= n; i++) {
    if (s[i] != '\\') continue;
    if (s[i + 1] == '\\') { i++; continue; } /* an escaped backslash */
    if (memcmp(s + i + 1, "u0000", 5) == 0) return 1;
  }
  return 0;
}

int dp_cast_bson(const dp_column *col, const bson_iter_t *it, dp_buf *out, int *is_null,
                 dp_err *e) {
  size_t mark = out->len;
  int rc;
  *is_null = 0;
  bson_type_t t = it ? bson_iter_type(it) : BSON_TYPE_NULL;
  switch (t) {
    case BSON_TYPE_NULL:
    case BSON_TYPE_UNDEFINED:
      *is_null = 1;
      rc = 0;
      break;
    case BSON_TYPE_UTF8: {
      uint32_t n;
      const char *s = bson_iter_utf8(it, &n);
      rc = cast_from_string(col, s, n, out, e);
      break;
    }
    case BSON_TYPE_INT32: rc = cast_from_int(col, bson_iter_int32(it), out, e); break;
    case BSON_TYPE_INT64: rc = cast_from_int(col, bson_iter_int64(it), out, e); break;
    case BSON_TYPE_DOUBLE: rc = cast_from_double(col, bson_iter_double(it), out, e); break;
    case BSON_TYPE_BOOL:
      if (col->type == DP_T_BOOLEAN || col->type == DP_T_JSON || col->type == DP_T_STRING ||
          col->type == DP_T_TEXT)
        rc = dp_buf_puts(out, bson_iter_bool(it) ? "true" : "false");
      else
        rc = dp_err_set(e, DP_ECAST, "%s (a boolean) is not a %s",
                        bson_iter_bool(it) ? "true" : "false", dp_type_name(col->type));
      break;
    case BSON_TYPE_DATE_TIME: {
      int64_t ms = bson_iter_date_time(it);
      if (col->type == DP_T_TIMESTAMP) {
        rc = format_ts(ms * 1000, out) ? dp_err_set(e, DP_ECAST, "date out of range") : 0;
      } else if (col->type == DP_T_DATE) {
        int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
        format_date(days, out);
        rc = 0;
      } else {
        rc = dp_err_set(e, DP_ECAST, "a date is not a %s", dp_type_name(col->type));
      }
      break;
    }
    case BSON_TYPE_BINARY: {
      bson_subtype_t st;
      uint32_t n;
      const uint8_t *bin;
      bson_iter_binary(it, &st, &n, &bin);
      if (st == DP_BSON_NUMBER_TEXT) {
        rc = cast_from_number_text(col, (const char *)bin, n, out, e);
      } else if (st == DP_BSON_NUL_STRING) {
        rc = cast_from_string(col, (const char *)bin, n, out, e);
      } else if (col->type == DP_T_UUID && n == 16 && (st == BSON_SUBTYPE_UUID || st == BSON_SUBTYPE_UUID_DEPRECATED)) {
        char u[37];
        dp_uuid_format(bin, u);
        rc = dp_buf_puts(out, u);
      } else {
        rc = dp_err_set(e, DP_ECAST, "binary data is not a %s", dp_type_name(col->type));
      }
      break;
    }
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY:
      if (col->type == DP_T_JSON) rc = dp_bson_value_to_json(it, out);
      else rc = dp_err_set(e, DP_ECAST, "%s is not a %s (use a json column)",
                           t == BSON_TYPE_ARRAY ? "an array" : "an object", dp_type_name(col->type));
      break;
    default:
      rc = dp_err_set(e, DP_ECAST, "unsupported source value for %s", dp_type_name(col->type));
  }
  if (rc == 0 && col->type == DP_T_JSON && json_has_nul(out->data + mark, out->len - mark))
    rc = dp_err_set(e, DP_ECAST, "holds U+0000 (\\u0000), which a json column (PostgreSQL jsonb) cannot");
  if (rc == 0 && *is_null && !col->nullable)
    rc = dp_err_set(e, DP_ECAST, "is null but the column is not nullable");
  if (rc != 0) out->len = mark, out->data ? (void)(out->data[mark] = '\0') : (void)0;
  return rc;
}
