/* cron.c - the cron matcher (see cron.h). Kept to one file with exhaustive specs
 * (spec/01-unit/core_cron_spec.lua); no C cron library is packaged in Debian. */
#include "cron.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

static const char *const MONTH_NAMES[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const DAY_NAMES[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

typedef struct field_spec {
  const char *what;
  int lo, hi;
  const char *const *names; /* names[i] is value i + name_base */
  int nnames, name_base;
} field_spec;

static const field_spec FIELDS[5] = {
    {"minute", 0, 59, NULL, 0, 0},
    {"hour", 0, 23, NULL, 0, 0},
    {"day of month", 1, 31, NULL, 0, 0},
    {"month", 1, 12, MONTH_NAMES, 12, 1},
    {"day of week", 0, 7, DAY_NAMES, 7, 0},
};

/* One value: digits or a name. Returns the end, or NULL. */
static const char *value(const char *p, const char *end, const field_spec *f, int *out) {
  if (p < end && isdigit((unsigned char)*p)) {
    int v = 0;
    while (p < end && isdigit((unsigned char)*p)) {
      v = v * 10 + (*p++ - '0');
      if (v > 1000) return NULL;
    }
    *out = v;
    return p;
  }
  for (int i = 0; i < f->nnames; i++) {
    if (end - p >= 3 && strncasecmp(p, f->names[i], 3) == 0) {
      *out = i + f->name_base;
      return p + 3;
    }
  }
  return NULL;
}

/* Parses one field (text [p, end)) into bits. Returns 0 or DP_EINVAL with e saying what is wrong
 * (dp_cron_parse prefixes the expression). */
static int parse_field(const char *p, const char *end, const field_spec *f, uint64_t *bits, uint8_t *star,
                       dp_err *e) {
  *bits = 0;
  *star = p < end && *p == '*';
  while (p <= end) {
    const char *item_end = memchr(p, ',', (size_t)(end - p));
    if (!item_end) item_end = end;
    int lo, hi, step = 1;
    const char *q = p;
    if (q < item_end && *q == '*') {
      lo = f->lo;
      hi = f->hi;
      q++;
    } else {
      if (!(q = value(q, item_end, f, &lo))) {
        size_t bad = strcspn(p, "-/,");
        if (p + bad > item_end) bad = (size_t)(item_end - p);
        return dp_err_set(e, DP_EINVAL, "%s \"%.*s\" is not a number%s", f->what, (int)bad, p,
                          f->names ? " or a name" : "");
      }
      hi = lo;
      if (q < item_end && *q == '-') {
        if (!(q = value(q + 1, item_end, f, &hi)))
          return dp_err_set(e, DP_EINVAL, "%s range \"%.*s\" has no valid end", f->what, (int)(item_end - p), p);
      } else if (q < item_end && *q == '/') {
        hi = f->hi; /* "N/S": from N to the end, every S (as cronie) */
      }
      if (lo < f->lo || lo > f->hi)
        return dp_err_set(e, DP_EINVAL, "%s %d is out of range %d-%d", f->what, lo, f->lo, f->hi);
      if (hi < f->lo || hi > f->hi)
        return dp_err_set(e, DP_EINVAL, "%s %d is out of range %d-%d", f->what, hi, f->lo, f->hi);
      if (lo > hi)
        return dp_err_set(e, DP_EINVAL, "%s range %.*s is reversed", f->what, (int)(q - p), p);
    }
    if (q < item_end && *q == '/') {
      q++;
      step = 0;
      if (q == item_end) step = -1;
      while (q < item_end && isdigit((unsigned char)*q) && step >= 0 && step <= 1000) step = step * 10 + (*q++ - '0');
      if (step <= 0 || step > 1000) {
        const char *sl = memchr(p, '/', (size_t)(item_end - p));
        return dp_err_set(e, DP_EINVAL, "%s step \"%.*s\" is not a positive number", f->what,
                          (int)(item_end - sl - 1), sl + 1);
      }
    }
    if (q != item_end)
      return dp_err_set(e, DP_EINVAL, "%s \"%.*s\" cannot be read (expected *, N, N-M, each with an optional /STEP)",
                        f->what, (int)(item_end - p), p);
    for (int v = lo; v <= hi; v += step) *bits |= 1ull << v;
    p = item_end + 1;
  }
  return 0;
}

static const struct {
  const char *name, *expr;
} MACROS[] = {{"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
              {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
              {"@hourly", "0 * * * *"}};

int dp_cron_parse(const char *expr, dp_cron *c, dp_err *e) {
  memset(c, 0, sizeof *c);
  while (*expr == ' ' || *expr == '\t') expr++;
  if (*expr == '@') {
    size_t n = strcspn(expr, " \t");
    const char *rest = expr + n + strspn(expr + n, " \t");
    for (size_t i = 0; i < sizeof MACROS / sizeof MACROS[0]; i++)
      if (strlen(MACROS[i].name) == n && strncasecmp(expr, MACROS[i].name, n) == 0 && !*rest)
        return dp_cron_parse(MACROS[i].expr, c, e);
    return dp_err_set(e, DP_EINVAL,
                      "\"%s\" is not a cron macro (known: @yearly, @annually, @monthly, @weekly, @daily, "
                      "@midnight, @hourly)",
                      expr);
  }
  const char *p = expr;
  uint64_t bits[5];
  uint8_t star[5];
  int n = 0;
  int count = 0;
  for (const char *q = p; *q;) { /* the fields first, so a wrong count is said as such */
    q += strcspn(q, " \t");
    q += strspn(q, " \t");
    count++;
  }
  if (count != 5)
    return dp_err_set(e, DP_EINVAL,
                      "\"%s\" is not a cron expression: expected 5 fields (minute hour day-of-month month "
                      "day-of-week), got %d",
                      expr, count);
  while (*p) {
    const char *end = p + strcspn(p, " \t");
    int rc = parse_field(p, end, &FIELDS[n], &bits[n], &star[n], e);
    if (rc) {
      dp_err_prefix(e, "\"%s\" is not a valid cron expression: ", expr);
      return rc;
    }
    n++;
    p = end + strspn(end, " \t");
  }
  c->minutes = bits[0];
  c->hours = (uint32_t)bits[1];
  c->mdays = (uint32_t)bits[2];
  c->months = (uint16_t)bits[3];
  c->wdays = (uint8_t)((bits[4] | (bits[4] >> 7)) & 0x7f); /* 7 is Sunday too */
  c->mday_star = star[2];
  c->wday_star = star[4];
  return 0;
}

/* Whether day number `days` (since 1970-01-01) matches the date fields. */
static int day_matches(const dp_cron *c, int64_t days) {
  int64_t y;
  unsigned m, d;
  dp_civil_from_days(days, &y, &m, &d);
  if (!(c->months >> m & 1)) return 0;
  int wd = (int)(((days % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
  int dom = c->mdays >> d & 1, dow = c->wdays >> wd & 1;
  return (c->mday_star || c->wday_star) ? (dom && dow) : (dom || dow);
}

static int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

int dp_cron_matches_wall(const dp_cron *c, int64_t wall) {
  int64_t days = floor_div(wall, 86400), sec = wall - days * 86400;
  return sec % 60 == 0 && day_matches(c, days) && (c->hours >> (sec / 3600) & 1) &&
         (c->minutes >> (sec % 3600 / 60) & 1);
}

#define DP_CRON_HORIZON_DAYS (366 * 10)

/* Walks matching wall times from day `from` on (dir 1) or back (dir -1); returns the first
 * instant t with (dir 1) t > bound or (dir -1) t <= bound. Wall order and instant order agree
 * (dp_tz_from_wall is monotonic), so the first hit is the answer. */
static int walk(const dp_cron *c, const dp_tz *tz, int64_t from, int dir, int64_t bound, int64_t *out) {
  for (int64_t i = 0; i <= DP_CRON_HORIZON_DAYS; i++) {
    int64_t day = from + dir * i;
    if (!day_matches(c, day)) continue;
    for (int hh = 0; hh < 24; hh++) {
      int h = dir > 0 ? hh : 23 - hh;
      if (!(c->hours >> h & 1)) continue;
      for (int mm = 0; mm < 60; mm++) {
        int m = dir > 0 ? mm : 59 - mm;
        if (!(c->minutes >> m & 1)) continue;
        int64_t t = dp_tz_from_wall(tz, day * 86400 + h * 3600 + m * 60, NULL, NULL);
        if (dir > 0 ? t > bound : t <= bound) {
          *out = t;
          return 0;
        }
      }
    }
  }
  return DP_ENOTFOUND;
}

int dp_cron_next(const dp_cron *c, const dp_tz *tz, int64_t after, int64_t *next) {
  /* start a day before the local date of `after`: a repeated hour's walls may lie behind it */
  return walk(c, tz, floor_div(after + dp_tz_offset(tz, after), 86400) - 1, 1, after, next);
}

int dp_cron_prev(const dp_cron *c, const dp_tz *tz, int64_t at, int64_t *prev) {
  return walk(c, tz, floor_div(at + dp_tz_offset(tz, at), 86400) + 1, -1, at, prev);
}

/* ---- dp.core functions --------------------------------------------------------------------- */

static int push_err(lua_State *L, const dp_err *e) {
  lua_pushnil(L);
  lua_pushstring(L, e->msg);
  return 2;
}

/* cron_check(expr) -> true | nil, err */
static int l_cron_check(lua_State *L) {
  dp_cron c;
  dp_err e;
  if (dp_cron_parse(luaL_checkstring(L, 1), &c, &e)) return push_err(L, &e);
  lua_pushboolean(L, 1);
  return 1;
}

/* tz_check(name) -> true | nil, err */
static int l_tz_check(lua_State *L) {
  dp_tz *tz;
  dp_err e;
  if (dp_tz_load(luaL_checkstring(L, 1), &tz, &e)) return push_err(L, &e);
  dp_tz_free(tz);
  lua_pushboolean(L, 1);
  return 1;
}

/* tz_offset(name, t) -> seconds east of UTC | nil, err */
static int l_tz_offset(lua_State *L) {
  dp_tz *tz;
  dp_err e;
  int64_t t = (int64_t)luaL_checknumber(L, 2);
  if (dp_tz_load(luaL_checkstring(L, 1), &tz, &e)) return push_err(L, &e);
  lua_pushnumber(L, dp_tz_offset(tz, t));
  dp_tz_free(tz);
  return 1;
}

/* cron_next(expr, tz, after) / cron_prev(expr, tz, at) -> instant | nil, err */
static int cron_step(lua_State *L, int dir) {
  dp_cron c;
  dp_tz *tz;
  dp_err e;
  int64_t t = (int64_t)luaL_checknumber(L, 3), out;
  if (dp_cron_parse(luaL_checkstring(L, 1), &c, &e)) return push_err(L, &e);
  if (dp_tz_load(luaL_checkstring(L, 2), &tz, &e)) return push_err(L, &e);
  int rc = dir > 0 ? dp_cron_next(&c, tz, t, &out) : dp_cron_prev(&c, tz, t, &out);
  dp_tz_free(tz);
  if (rc) {
    lua_pushnil(L);
    lua_pushstring(L, "the expression matches no time within 10 years");
    return 2;
  }
  lua_pushnumber(L, (lua_Number)out);
  return 1;
}

static int l_cron_next(lua_State *L) { return cron_step(L, 1); }
static int l_cron_prev(lua_State *L) { return cron_step(L, -1); }

void dp_cron_lua_register(lua_State *L) {
  static const luaL_Reg funcs[] = {{"cron_check", l_cron_check}, {"cron_next", l_cron_next},
                                   {"cron_prev", l_cron_prev},   {"tz_check", l_tz_check},
                                   {"tz_offset", l_tz_offset},   {NULL, NULL}};
  luaL_register(L, NULL, funcs);
}
