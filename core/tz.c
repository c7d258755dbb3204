/* tz.c - TZif reader and POSIX TZ rules (see tz.h). RFC 8536 describes the file format. */
#include "tz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rawfile.h" /* dp_read_file */

/* A POSIX TZ rule date: Jn (julian, no Feb 29), n (zero-based, with Feb 29) or Mm.w.d. */
typedef struct rule_date {
  char kind; /* 'J', 'N' or 'M' */
  int n, m, w, d;
  int32_t time; /* seconds after local midnight; may be negative or past 24 h */
} rule_date;

typedef struct posix_rule {
  int valid;
  int32_t std_off, dst_off; /* seconds east of UTC */
  int has_dst;
  rule_date start, end;
} posix_rule;

struct dp_tz {
  char *name;
  size_t ntrans;
  int64_t *trans;      /* transition instants, ascending */
  int32_t *trans_off;  /* offset in force from trans[i] on */
  int32_t first_off;   /* offset before the first transition (time type 0) */
  posix_rule footer;
};

static int64_t be64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return (int64_t)v;
}

static int32_t be32(const unsigned char *p) {
  uint32_t v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
  return (int32_t)v;
}

int64_t dp_days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

void dp_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = (unsigned)(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

/* ---- POSIX TZ strings ---------------------------------------------------------------------- */

static const char *parse_name(const char *p) {
  if (*p == '<') {
    while (*p && *p != '>') p++;
    return *p == '>' ? p + 1 : NULL;
  }
  const char *s = p;
  while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) p++;
  return p - s >= 3 ? p : NULL;
}

static const char *parse_num(const char *p, int *out, int max) {
  if (*p < '0' || *p > '9') return NULL;
  int v = 0;
  while (*p >= '0' && *p <= '9') {
    v = v * 10 + (*p++ - '0');
    if (v > max) return NULL;
  }
  *out = v;
  return p;
}

/* [+-]hh[:mm[:ss]], hours up to 167 (RFC 8536's extension). */
static const char *parse_hms(const char *p, int32_t *out) {
  int sign = 1, h, m = 0, s = 0;
  if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
  if (!(p = parse_num(p, &h, 167))) return NULL;
  if (*p == ':') {
    if (!(p = parse_num(p + 1, &m, 59))) return NULL;
    if (*p == ':' && !(p = parse_num(p + 1, &s, 59))) return NULL;
  }
  *out = sign * (h * 3600 + m * 60 + s);
  return p;
}

static const char *parse_date(const char *p, rule_date *r) {
  if (*p == 'J') {
    r->kind = 'J';
    p = parse_num(p + 1, &r->n, 365);
    if (p && r->n < 1) return NULL;
  } else if (*p == 'M') {
    r->kind = 'M';
    if (!(p = parse_num(p + 1, &r->m, 12)) || *p != '.') return NULL;
    if (!(p = parse_num(p + 1, &r->w, 5)) || *p != '.') return NULL;
    p = parse_num(p + 1, &r->d, 6);
    if (p && (r->m < 1 || r->w < 1)) return NULL;
  } else {
    r->kind = 'N';
    p = parse_num(p, &r->n, 365);
  }
  if (!p) return NULL;
  r->time = 7200;
  if (*p == '/') p = parse_hms(p + 1, &r->time);
  return p;
}

/* Parses a TZ footer; leaves r->valid 0 when the string is empty or not understood. */
static void parse_posix(const char *s, posix_rule *r) {
  memset(r, 0, sizeof *r);
  const char *p = parse_name(s);
  int32_t off;
  if (!p || !(p = parse_hms(p, &off))) return;
  r->std_off = -off; /* POSIX counts west of Greenwich as positive */
  r->valid = 1;
  if (!*p) return;
  if (!(p = parse_name(p))) goto bad;
  r->has_dst = 1;
  r->dst_off = r->std_off + 3600;
  if (*p && *p != ',') {
    if (!(p = parse_hms(p, &off))) goto bad;
    r->dst_off = -off;
  }
  if (!*p) { /* no rule: POSIX leaves it to the implementation; use the US rule as glibc does */
    r->start = (rule_date){'M', 0, 3, 2, 0, 7200};
    r->end = (rule_date){'M', 0, 11, 1, 0, 7200};
    return;
  }
  if (*p != ',' || !(p = parse_date(p + 1, &r->start))) goto bad;
  if (*p != ',' || !(p = parse_date(p + 1, &r->end))) goto bad;
  if (*p) goto bad;
  return;
bad:
  r->valid = 0;
}

/* Days since 1970 of a rule date in year y. */
static int64_t rule_day(const rule_date *r, int64_t y) {
  int64_t jan1 = dp_days_from_civil(y, 1, 1);
  if (r->kind == 'J') return jan1 + r->n - 1 + (is_leap(y) && r->n >= 60);
  if (r->kind == 'N') return jan1 + r->n;
  static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int64_t first = dp_days_from_civil(y, (unsigned)r->m, 1);
  int wd1 = (int)((first % 7 + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
  int day = 1 + (r->d - wd1 + 7) % 7 + (r->w - 1) * 7;
  int dim = mdays[r->m - 1] + (r->m == 2 && is_leap(y));
  while (day > dim) day -= 7;
  return first + day - 1;
}

static int32_t posix_offset(const posix_rule *r, int64_t t) {
  if (!r->has_dst) return r->std_off;
  int64_t y;
  unsigned m, d;
  dp_civil_from_days(floor_div(t, 86400), &y, &m, &d);
  /* the start is given in standard time, the end in daylight time */
  int64_t start = rule_day(&r->start, y) * 86400 + r->start.time - r->std_off;
  int64_t end = rule_day(&r->end, y) * 86400 + r->end.time - r->dst_off;
  int dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
  return dst ? r->dst_off : r->std_off;
}

/* ---- TZif files ---------------------------------------------------------------------------- */

static int valid_name(const char *name) {
  if (!*name || *name == '/' || strlen(name) > 255) return 0;
  const char *seg = name;
  for (const char *p = name;; p++) {
    if (*p == '/' || !*p) {
      if (p == seg || (p - seg == 2 && seg[0] == '.' && seg[1] == '.') || seg[0] == '.') return 0;
      if (!*p) return 1;
      seg = p + 1;
    } else if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                 *p == '_' || *p == '+' || *p == '-')) {
      return 0;
    }
  }
}

typedef struct tzif_counts {
  uint32_t isut, isstd, leap, time, type, chr;
} tzif_counts;

static void read_counts(const unsigned char *h, tzif_counts *c) {
  c->isut = (uint32_t)be32(h + 20);
  c->isstd = (uint32_t)be32(h + 24);
  c->leap = (uint32_t)be32(h + 28);
  c->time = (uint32_t)be32(h + 32);
  c->type = (uint32_t)be32(h + 36);
  c->chr = (uint32_t)be32(h + 40);
}

static size_t block_size(const tzif_counts *c, size_t tsize) {
  return c->time * tsize + c->time + c->type * 6 + c->chr + c->leap * (tsize + 4) + c->isstd + c->isut;
}

/* Parses the file bytes into tz. Returns 0 or DP_EJSON (damaged). */
static int parse_tzif(dp_tz *tz, const unsigned char *p, size_t n) {
  tzif_counts c;
  if (n < 44 || memcmp(p, "TZif", 4) != 0) return DP_EJSON;
  read_counts(p, &c);
  size_t tsize = 4;
  const unsigned char *blk = p + 44;
  if (p[4] >= '2') { /* skip the v1 block: the v2 header and 64-bit block follow */
    size_t v1 = block_size(&c, 4);
    if (n < 44 + v1 + 44 || memcmp(p + 44 + v1, "TZif", 4) != 0) return DP_EJSON;
    read_counts(p + 44 + v1, &c);
    blk = p + 44 + v1 + 44;
    tsize = 8;
  }
  if (c.type == 0 || c.type > 256 || c.time > 100000) return DP_EJSON;
  size_t need = block_size(&c, tsize);
  if ((size_t)(blk - p) + need > n) return DP_EJSON;
  const unsigned char *times = blk, *idx = blk + c.time * tsize, *types = idx + c.time;
  tz->ntrans = c.time;
  tz->trans = calloc(c.time ? c.time : 1, sizeof *tz->trans);
  tz->trans_off = calloc(c.time ? c.time : 1, sizeof *tz->trans_off);
  if (!tz->trans || !tz->trans_off) return DP_ENOMEM;
  for (uint32_t i = 0; i < c.time; i++) {
    tz->trans[i] = tsize == 8 ? be64(times + 8 * i) : be32(times + 4 * i);
    if (idx[i] >= c.type || (i > 0 && tz->trans[i] <= tz->trans[i - 1])) return DP_EJSON;
    tz->trans_off[i] = be32(types + 6 * idx[i]);
  }
  tz->first_off = be32(types);
  if (tsize == 8) { /* the footer: "\n" TZ-string "\n" */
    const unsigned char *f = blk + need, *end = p + n;
    if (f < end && *f == '\n') {
      const unsigned char *nl = memchr(f + 1, '\n', (size_t)(end - f - 1));
      if (nl && nl - f - 1 < 128) {
        char rule[128];
        memcpy(rule, f + 1, (size_t)(nl - f - 1));
        rule[nl - f - 1] = 0;
        parse_posix(rule, &tz->footer);
      }
    }
  }
  return 0;
}

int dp_tz_load(const char *name, dp_tz **out, dp_err *e) {
  *out = NULL;
  if (!name || !valid_name(name))
    return dp_err_set(e, DP_EINVAL, "%s is not a time zone name (e.g. UTC, Europe/Amsterdam)", name ? name : "(null)");
  const char *dir = getenv("TZDIR");
  if (!dir || !*dir) dir = "/usr/share/zoneinfo";
  char path[1024];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
    return dp_err_set(e, DP_EINVAL, "time zone name %s is too long", name);
  char *data = NULL;
  size_t n = 0;
  dp_err re = {0};
  int rc = dp_read_file(path, &data, &n, &re);
  if (rc != 0) {
    return dp_err_set(e, DP_ENOTFOUND, "unknown time zone %s: no file %s in the tz database", name, path);
  }
  dp_tz *tz = calloc(1, sizeof *tz);
  if (!tz || !(tz->name = strdup(name))) {
    free(tz);
    free(data);
    return dp_err_set(e, DP_ENOMEM, "out of memory loading time zone %s", name);
  }
  rc = parse_tzif(tz, (const unsigned char *)data, n);
  free(data);
  if (rc != 0) {
    dp_tz_free(tz);
    return dp_err_set(e, rc, "time zone %s: %s is not a valid TZif file", name, path);
  }
  *out = tz;
  return 0;
}

void dp_tz_free(dp_tz *tz) {
  if (!tz) return;
  free(tz->name);
  free(tz->trans);
  free(tz->trans_off);
  free(tz);
}

const char *dp_tz_name(const dp_tz *tz) { return tz->name; }

int32_t dp_tz_offset(const dp_tz *tz, int64_t t) {
  if (tz->ntrans == 0) return tz->footer.valid ? posix_offset(&tz->footer, t) : tz->first_off;
  if (t < tz->trans[0]) return tz->first_off;
  if (t >= tz->trans[tz->ntrans - 1] && tz->footer.valid) return posix_offset(&tz->footer, t);
  size_t lo = 0, hi = tz->ntrans; /* last transition <= t */
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (tz->trans[mid] <= t) lo = mid;
    else hi = mid;
  }
  return tz->trans_off[lo];
}

int64_t dp_tz_from_wall(const dp_tz *tz, int64_t wall, int *fold, int *gap) {
  if (fold) *fold = 0;
  if (gap) *gap = 0;
  /* Offsets a day either side (more than any UTC offset): real zones never change twice within
   * two days, so these are the candidates. */
  int32_t oa = dp_tz_offset(tz, wall - 2 * 86400), ob = dp_tz_offset(tz, wall + 2 * 86400);
  int64_t ta = wall - oa, tb = wall - ob;
  int va = dp_tz_offset(tz, ta) == oa, vb = dp_tz_offset(tz, tb) == ob;
  if (oa == ob) return ta;
  if (va && vb) {
    if (fold) *fold = 1;
    return ta < tb ? ta : tb;
  }
  if (va) return ta;
  if (vb) return tb;
  /* a gap: the offset changes from oa to ob somewhere in [tb, ta] (ob > oa); find the change */
  if (gap) *gap = 1;
  int64_t lo = tb < ta ? tb : ta, hi = tb < ta ? ta : tb; /* offset(lo) != ob, offset(hi) == ob */
  if (dp_tz_offset(tz, lo) == ob) return lo;
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2;
    if (dp_tz_offset(tz, mid) == ob) hi = mid;
    else lo = mid;
  }
  return hi;
}

void dp_iso_utc(char *out, int64_t unix_us, int digits) {
  int64_t secs = unix_us >= 0 ? unix_us / 1000000 : -((-unix_us + 999999) / 1000000);
  long frac = (long)(unix_us - secs * 1000000);
  for (int k = digits; k < 6; k++) frac /= 10;
  time_t t = (time_t)secs;
  struct tm tm;
  gmtime_r(&t, &tm);
  size_t n = strftime(out, DP_ISO_UTC_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
  if (digits > 0) n += (size_t)snprintf(out + n, DP_ISO_UTC_MAX - n, ".%0*ld", digits, frac);
  if (n + 2 <= DP_ISO_UTC_MAX) memcpy(out + n, "Z", 2);
}
