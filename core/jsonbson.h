/* jsonbson.h - one JSON record (an object) -> BSON, keeping every value exact, and refusing what a
 * MongoDB wire server cannot store (docs/data-layers.md, "How bronze stores a record").
 *
 * Replaces libbson's bson_init_from_json for source records, which wraps integers of 2^64 and
 * more, turns 1e400 into 0, reads {"$date": ...} as a date and stops at a NUL byte.
 *   - an integer that fits int32 is an int32, one that fits int64 an int64 (as libbson did);
 *   - any other number is a double when the text is the double's own (shortest round-trip)
 *     value: 1.5, 0.1, 1E+2, -0.0; otherwise it is kept as its text, exactly as the source wrote
 *     it, in a BSON binary of subtype DP_BSON_NUMBER_TEXT (FerretDB v1 has no decimal128);
 *   - a string holding U+0000 (which PostgreSQL's jsonb under FerretDB refuses) is kept as its
 *     UTF-8 bytes in a binary of subtype DP_BSON_NUL_STRING;
 *   - an array directly inside an array is stored as {"%5B%5D": [...]} (FerretDB v1 cannot
 *     store nested arrays; "[[1,2]]" -> [{"%5B%5D": [1, 2]}]), undone for json columns;
 *   - keys are kept as written ("" too), except that '%', '.', U+0000 and a leading '$' are
 *     written %25, %2E, %00 and %24 (FerretDB v1 refuses '.' and '$' in keys at any depth, BSON
 *     keys cannot hold NUL): one-to-one, undone by dp_key_decode; column paths are encoded
 *     the same way to find them (record.c), json columns get the keys decoded (cast.c).
 * Refused, so that the caller rejects the record with the reason: invalid JSON, a lone
 * surrogate (\ud800), invalid UTF-8, a duplicate member, nesting deeper than
 * DP_JSONBSON_MAX_DEPTH, a record of more than DP_JSONBSON_MAX_SIZE bytes of BSON. */
#ifndef DP_JSONBSON_H
#define DP_JSONBSON_H

#include <bson/bson.h>
#include <stddef.h>
#include "buf.h"
#include "error.h"

#define DP_BSON_NUMBER_TEXT ((bson_subtype_t)0x80) /* a JSON number's text, as written */
#define DP_BSON_NUL_STRING ((bson_subtype_t)0x81)  /* a string's UTF-8 bytes, some of them NUL */
#define DP_BSON_ARRAY_KEY "%5B%5D" /* {"%5B%5D": [...]}: an array that was inside an array */

/* Levels of objects and arrays in a record (the record itself is level 1). MongoDB refuses
 * documents nested deeper than 100 levels, and bronze wraps a record in its document (top level
 * and "data"), so 98 is the most that loads into any MongoDB wire server. (FerretDB v1 took
 * 2000 levels in a test; the limit is MongoDB's, so that bronze can move between servers.) */
#define DP_JSONBSON_MAX_DEPTH 98
/* MongoDB's document limit is 16 MiB; bronze's wrapper (_id, _dp) needs well under 64 KiB. */
#define DP_JSONBSON_MAX_SIZE (16 * 1024 * 1024 - 64 * 1024)

/* Parses text[0..len) (one JSON object, any bytes, NUL too) into out (initialized here; the
 * caller destroys it, also on failure). Returns 0, or DP_EJSON with e->msg naming what and at
 * which byte (1-based): "duplicate member \"n\" at byte 9". */
int dp_json_to_bson(const char *text, size_t len, bson_t *out, dp_err *e);

/* Appends key k[0..n) encoded as bronze stores it, or decoded back. 0 or DP_ENOMEM. */
int dp_key_encode(const char *k, size_t n, dp_buf *out);
int dp_key_decode(const char *k, size_t n, dp_buf *out);

/* A number's text normalized: value = (neg ? -1 : 1) * 0.DIGITS * 10^point, digits without
 * leading or trailing zeros (empty for zero). digits is appended to the caller's buffer. */
typedef struct dp_num {
  int neg;
  long point;
} dp_num;
int dp_num_normalize(const char *t, size_t n, dp_num *num, dp_buf *digits);

#endif
