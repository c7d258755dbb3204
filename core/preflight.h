/* preflight.h - what a command checks before it queries a table that a run creates, so that a
 * user who has not run the upstream yet is told what to run instead of getting an SQL error. */
#ifndef DP_PREFLIGHT_H
#define DP_PREFLIGHT_H

#include <stddef.h>
#include <libpq-fe.h>
#include "error.h"

/* 1 when schema.name (a table or a view) exists, 0 when not; or a negative DP_E* code with e set.
 * name travels as a parameter (quote_ident on the server), never inside the SQL text. */
int dp_relation_exists(PGconn *c, const char *schema, const char *name, dp_err *e);

/* Checks that the table an input of a gold model or a show reads exists: input is
 * "system.entity" (silver.<system>__<entity>_current) or a gold model's name (gold.<name>).
 * Missing: DP_ENOTFOUND, e = "<who> reads silver.x__y_current, which does not exist yet: run
 * `dp-engine run x` first" (who NULL: "silver.x__y_current does not exist yet: ..."). */
int dp_input_exists(PGconn *c, const char *input, const char *who, dp_err *e);

/* dp_input_exists for each of the n depends_on entries of the gold model name. */
int dp_gold_inputs_exist(PGconn *c, char *const *depends_on, size_t n, const char *name, dp_err *e);

#endif
