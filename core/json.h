/* json.h - a small JSON scanner that validates, compacts and splits JSON text while keeping
 * every number's text exactly as written (lua-cjson would turn it into a double), plus
 * helpers to write JSON strings. No heap memory of its own: output goes to a caller's dp_buf. */
#ifndef DP_JSON_H
#define DP_JSON_H

#include <stddef.h>
#include "buf.h"
#include "error.h"

/* Validates that text[0..len) holds exactly one JSON value (RFC 8259, strings UTF-8) and
 * appends its compact form (insignificant white space removed) to out.
 * Returns 0, or DP_EJSON with e->msg = "invalid JSON at byte N: <what>" (N 1-based). */
int dp_json_compact(const char *text, size_t len, dp_buf *out, dp_err *e);

/* Calls each(ud, elem, elen) for every element of the top-level JSON array in text, with
 * the element compacted (elem points into a scratch buffer valid during the call).
 * each returns 0 to go on, or an error code to stop (returned as is).
 * A syntax error returns DP_EJSON with "invalid JSON at byte N: ...". */
typedef int (*dp_json_each_fn)(void *ud, const char *elem, size_t elen);
int dp_json_array_each(const char *text, size_t len, dp_json_each_fn each, void *ud, dp_err *e);

/* Finds the value at a dotted path in text[0..len) after validating all of it: path[0..plen)
 * is "" for the whole value, else keys separated by "." ("data.items"); a segment of digits
 * also indexes an array (0-based); with duplicate keys the first wins. On success *val and
 * *vlen point into text at the value as written (not compacted). Returns 0, DP_ENOTFOUND when
 * the path leads nowhere, or DP_EJSON with "invalid JSON at byte N: ...". */
int dp_json_select(const char *text, size_t len, const char *path, size_t plen, const char **val,
                   size_t *vlen, dp_err *e);

/* Appends s[0..n) as a JSON string literal, with quotes. */
int dp_json_put_string(dp_buf *out, const char *s, size_t n);

/* The one string escaper (JSON writing, log lines, the redactor's encodings of a secret). With no
 * flag: JSON as dp_json_put_string writes it (" \\ \n \r \t, other C0 controls as \u00XX,
 * every other byte as it is). Flags: */
enum {
  DP_JSON_ESC_SLASH = 1, /* "/" as "\/" (lua-cjson) */
  DP_JSON_ESC_BF = 2,    /* \b and \f short, DEL as \u007f (lua-cjson) */
  DP_JSON_ESC_SAFE = 4,  /* for logs and terminals: DEL as \u007f, UTF-8 checked (a bad byte as the
                          * text \\xNN), code points that end or reorder a line (C1 controls, U+2028,
                          * U+2029, bidi controls) as \uXXXX */
  DP_JSON_ESC_TEXT = 8,  /* SAFE for a text log line, not JSON: " and \\ stay, controls and bad
                          * bytes as \xNN */
};
#define DP_JSON_UNIT_MAX 8
/* Escapes the unit at s[0..len) (len > 0: one byte, or with SAFE/TEXT one UTF-8 sequence) into
 * out (*outn bytes, at most DP_JSON_UNIT_MAX); returns how many bytes of s it took. */
size_t dp_json_escape_unit(const char *s, size_t len, unsigned flags, char *out, size_t *outn);
/* Appends s[0..n) escaped (no quotes). */
int dp_json_escape(dp_buf *out, const char *s, size_t n, unsigned flags);
/* The value of 4 hex digits at p (of a \uXXXX escape), or -1. */
int dp_json_hex4(const char *p);
/* Length of a valid UTF-8 sequence at p (1..4; no overlong forms, surrogates or values past
 * U+10FFFF), or 0 when invalid. */
int dp_utf8_len(const unsigned char *p, const unsigned char *end);
/* dp_utf8_len, and the code point in *cp (when not NULL and the sequence is valid). */
int dp_utf8_decode(const unsigned char *p, const unsigned char *end, unsigned *cp);
/* The longest prefix of s[0..n) of at most max bytes that does not cut a UTF-8 sequence (for
 * shortened values in messages and reject rows, which PostgreSQL checks as UTF-8). */
size_t dp_utf8_prefix(const char *s, size_t n, size_t max);
/* Copies src into dst (cap bytes, cap > 0), cut where it would not fit at a UTF-8 boundary:
 * for a message kept in a fixed field, where a cut is intended. Returns dst. */
char *dp_utf8_copy(char *dst, size_t cap, const char *src);
/* Appends the code point cp (at most 0x10FFFF) as UTF-8. */
void dp_json_put_utf8(dp_buf *b, unsigned cp);

#endif
