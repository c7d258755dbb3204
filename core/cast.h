/* cast.h - typed casting of source values to a column's canonical text.
 * The canonical text is both what the hash covers (hash.h) and what COPY sends to
 * PostgreSQL. Rules are documented in docs/data-types.md. */
#ifndef DP_CAST_H
#define DP_CAST_H

#include <bson/bson.h>
#include "buf.h"
#include "error.h"
#include "meta.h"

/* Casts the BSON value at it (NULL when the path is missing) to col's type.
 * On success appends the canonical text to out and sets *is_null (nothing appended for NULL).
 * On failure returns DP_ECAST with e->msg the reason ("\"abc\" is not an integer"). */
int dp_cast_bson(const dp_column *col, const bson_iter_t *it, dp_buf *out, int *is_null, dp_err *e);

/* Writes a BSON value as compact JSON text (int64 exact, doubles shortest round-trip). */
int dp_bson_value_to_json(const bson_iter_t *it, dp_buf *out);
/* Writes a whole document as compact JSON text. */
int dp_bson_to_json(const bson_t *doc, dp_buf *out);

/* Shortest "%.Ng" text that reads back as the same double (15..17 digits). */
void dp_format_double(double d, char buf[40]);

#endif
