/* cli.c - helpers shared by the subcommands. */
#include "cli.h"
#include "json.h"
#include "log.h"
#include "pg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dp_cli_wants_help(int argc, char **argv) {
  for (int i = 0; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
  return 0;
}

int dp_cli_layers(const char *arg, unsigned *mask) {
  static const struct { const char *name; unsigned bit; } names[] = {
      {"raw", 1}, {"bronze", 2}, {"silver", 4}, {"all", 7}};
  const char *p = arg;
  do {
    size_t n = strcspn(p, ",");
    int ok = 0;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
      if (strlen(names[k].name) == n && strncmp(p, names[k].name, n) == 0) {
        *mask |= names[k].bit;
        ok = 1;
      }
    if (!ok) return -1;
    p += n;
  } while (*p++ == ',');
  return 0;
}

int dp_cli_missing_value(int argc, char **argv, int i, const char *const *opts, const char *usage) {
  for (const char *const *o = opts; *o; o++)
    if (strcmp(argv[i], *o) == 0 && (i + 1 >= argc || (argv[i + 1][0] == '-' && argv[i + 1][1] == '-')))
      return dp_cli_usage_error(usage, "option %s needs a value", argv[i]);
  return 0;
}

const char *dp_cli_count(char *buf, size_t cap, size_t n, const char *one, const char *many) {
  snprintf(buf, cap, "%zu %s", n, n == 1 ? one : many);
  return buf;
}

int dp_cli_usage_error(const char *usage, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "dp-engine: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n\n%s", usage);
  return DP_EXIT_USAGE;
}

/* "dp-engine[ CMD]: msg" on stderr, or with DP_LOG_FORMAT=json a command_failed line, so that
 * stderr stays JSON lines for a log shipper (docs/cli.md#logs). */
static void print_failure(const char *cmd, const char *msg) {
  const char *sep = cmd ? " " : "";
  if (!cmd) cmd = "";
  if (dp_log_is_json()) dp_log_event(DP_LOG_ERROR, "command_failed", NULL, "dp-engine%s%s: %s", sep, cmd, msg);
  else fprintf(stderr, "dp-engine%s%s: %s\n", sep, cmd, msg);
}

int dp_cli_fail_config(const dp_err *e) {
  print_failure(NULL, e->msg);
  return DP_EXIT_USAGE;
}

int dp_cli_error(const char *cmd, int exit_code, const char *fmt, ...) {
  char msg[sizeof ((dp_err *)0)->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  print_failure(cmd, msg);
  return exit_code;
}

int dp_cli_exit(const char *cmd, const dp_err *e) {
  print_failure(cmd, e->msg[0] ? e->msg : dp_strerror(e->code));
  return e->code ? dp_err_exit_class(e->code) : DP_EXIT_RUN_FAILED;
}

/* Terminal columns of code point cp: 0 for combining marks and joiners, 2 for East Asian wide
 * and fullwidth characters and most emoji, else 1 (the ranges of wcwidth, without a locale). */
static int cp_columns(unsigned cp) {
  static const unsigned zero[][2] = {{0x0300, 0x036F}, {0x0483, 0x0489}, {0x0591, 0x05BD}, {0x0610, 0x061A},
                                     {0x064B, 0x065F}, {0x1AB0, 0x1AFF}, {0x1DC0, 0x1DFF}, {0x200B, 0x200F},
                                     {0x20D0, 0x20FF}, {0xFE00, 0xFE0F}, {0xFE20, 0xFE2F}, {0xE0100, 0xE01EF}};
  static const unsigned wide[][2] = {{0x1100, 0x115F}, {0x2E80, 0x303E}, {0x3041, 0x33FF}, {0x3400, 0x4DBF},
                                     {0x4E00, 0x9FFF}, {0xA000, 0xA4CF}, {0xAC00, 0xD7A3}, {0xF900, 0xFAFF},
                                     {0xFE30, 0xFE4F}, {0xFF00, 0xFF60}, {0xFFE0, 0xFFE6}, {0x1F300, 0x1F64F},
                                     {0x1F900, 0x1F9FF}, {0x20000, 0x2FFFD}, {0x30000, 0x3FFFD}};
  for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++)
    if (cp >= zero[i][0] && cp <= zero[i][1]) return 0;
  for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
    if (cp >= wide[i][0] && cp <= wide[i][1]) return 2;
  return 1;
}

/* The code point at b[*i], *i moved past it (dp_log_escape's output is valid UTF-8; a byte that
 * were not would count as one character). */
static unsigned next_cp(const char *b, size_t n, size_t *i) {
  const unsigned char *p = (const unsigned char *)b + *i;
  unsigned cp = *p;
  int k = dp_utf8_decode(p, (const unsigned char *)b + n, &cp);
  *i += k > 0 ? (size_t)k : 1;
  return cp;
}

/* Terminal columns of UTF-8 text b[0..n) */
static int text_columns(const char *b, size_t n) {
  int w = 0;
  for (size_t i = 0; i < n;) w += cp_columns(next_cp(b, n, &i));
  return w;
}

/* Bytes of the longest start of UTF-8 text b[0..n) that fits in `columns` (never half a character) */
static size_t bytes_within(const char *b, size_t n, int columns) {
  size_t i = 0;
  int w = 0;
  while (i < n) {
    size_t at = i;
    int cw = cp_columns(next_cp(b, n, &i));
    if (w + cw > columns) return at;
    w += cw;
  }
  return n;
}

/* One cell, cut to w columns (never inside a character) and padded to w, then sep. */
static void print_cell(const dp_buf *b, int w, int cut, const char *sep) {
  const char *d = b->data ? b->data : "";
  size_t n = cut ? bytes_within(d, b->len, w) : b->len;
  fwrite(d, 1, n, stdout);
  int pad = w - text_columns(d, n);
  printf("%*s%s", pad > 0 ? pad : 0, "", sep);
}

/* Cells are untrusted (source data): control characters, bidirectional overrides and bytes
 * that are not UTF-8 are escaped as in log lines (dp_log_escape), so nothing reaches the
 * terminal as a control sequence and a row stays one line. Widths are terminal columns (a wide
 * character takes two); a cell is cut at 60 of them. */
void dp_cli_print_table(PGresult *r) {
  int rows = PQntuples(r), cols = PQnfields(r);
  int *w = calloc((size_t)cols, sizeof *w);
  dp_buf *cell = calloc((size_t)(rows + 1) * (size_t)(cols ? cols : 1), sizeof *cell);
  if (!w || !cell) {
    free(w);
    free(cell);
    fprintf(stderr, "dp-engine: out of memory\n");
    return;
  }
  for (int k = 0; k < cols; k++) {
    for (int i = 0; i <= rows; i++) {
      const char *v = i == 0 ? PQfname(r, k) : PQgetisnull(r, i - 1, k) ? "" : PQgetvalue(r, i - 1, k);
      dp_buf *b = &cell[(size_t)i * (size_t)cols + (size_t)k];
      dp_buf_puts(b, ""); /* a cell is never NULL */
      dp_log_escape(b, v, strlen(v), 0);
      int width = text_columns(b->data ? b->data : "", b->len);
      if (width > w[k]) w[k] = width;
    }
    if (w[k] > 60) w[k] = 60;
  }
  for (int i = 0; i <= rows; i++)
    for (int k = 0; k < cols; k++) {
      const dp_buf *b = &cell[(size_t)i * (size_t)cols + (size_t)k];
      const char *sep = k + 1 < cols ? "  " : "\n";
      print_cell(b, w[k], i > 0, sep); /* names are never cut */
    }
  for (size_t j = 0; j < (size_t)(rows + 1) * (size_t)cols; j++) dp_buf_free(&cell[j]);
  free(cell);
  free(w);
}

int dp_cli_query_print(PGconn *c, const char *sql, int n, const char *const *p, int json, dp_err *e) {
  PGresult *r = NULL;
  int rc;
  if (json) {
    dp_buf q = DP_BUF_INIT;
    dp_buf_printf(&q, "SELECT coalesce(json_agg(t), '[]'::json) FROM (%s) t", sql);
    rc = dp_pg_exec(c, q.data, n, p, &r, e);
    dp_buf_free(&q);
    if (rc == 0) printf("%s\n", PQgetvalue(r, 0, 0));
  } else {
    rc = dp_pg_exec(c, sql, n, p, &r, e);
    if (rc == 0) dp_cli_print_table(r);
  }
  PQclear(r);
  return rc;
}

