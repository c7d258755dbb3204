/* meta.c - column types and entity helpers. */
#include "meta.h"
#include "buf.h"
#include "error.h"

#include <stdlib.h>
#include <string.h>

static const char *type_names[] = {
#define DP__TYPE_NAME(name, str, tag) str,
  DP_TYPE_MAP(DP__TYPE_NAME)
#undef DP__TYPE_NAME
};

static const char type_tags[] = {
#define DP__TYPE_TAG(name, str, tag) tag,
  DP_TYPE_MAP(DP__TYPE_TAG)
#undef DP__TYPE_TAG
};

const char *dp_type_name(dp_type t) { return t < DP_T__COUNT ? type_names[t] : "?"; }

char dp_type_tag(dp_type t) { return t < DP_T__COUNT ? type_tags[t] : '?'; }

int dp_type_parse(const char *s, dp_type *out) {
  for (int i = 0; i < DP_T__COUNT; i++)
    if (strcmp(s, type_names[i]) == 0) { *out = (dp_type)i; return 0; }
  return DP_EINVAL;
}

int dp_column_sql_type(const dp_column *c, dp_buf *out) {
  switch (c->type) {
    case DP_T_STRING:
      return c->length > 0 ? dp_buf_printf(out, "varchar(%d)", c->length) : dp_buf_puts(out, "varchar");
    case DP_T_TEXT: return dp_buf_puts(out, "text");
    case DP_T_INTEGER: return dp_buf_puts(out, "integer");
    case DP_T_BIGINT: return dp_buf_puts(out, "bigint");
    case DP_T_DECIMAL: return dp_buf_printf(out, "numeric(%d,%d)", c->precision, c->scale);
    case DP_T_DOUBLE: return dp_buf_puts(out, "double precision");
    case DP_T_BOOLEAN: return dp_buf_puts(out, "boolean");
    case DP_T_DATE: return dp_buf_puts(out, "date");
    case DP_T_TIMESTAMP: return dp_buf_puts(out, "timestamptz");
    case DP_T_JSON: return dp_buf_puts(out, "jsonb");
    case DP_T_UUID: return dp_buf_puts(out, "uuid");
    default: return DP_EINVAL;
  }
}

void dp_entity_free(dp_entity *e) {
  if (e == NULL) return;
  for (size_t i = 0; i < e->ncols; i++) {
    free(e->cols[i].name);
    free(e->cols[i].path);
  }
  free(e->cols);
  free(e->pk);
  free(e->system);
  free(e->name);
  free(e->cursor);
  free(e->marker_json);
  memset(e, 0, sizeof *e);
}

/* strdup of s, or NULL for NULL; *bad set when a copy fails. */
static char *dup_or_null(const char *s, int *bad) {
  if (!s) return NULL;
  char *c = strdup(s);
  if (!c) *bad = 1;
  return c;
}

int dp_entity_copy(dp_entity *dst, const dp_entity *src) {
  int bad = 0;
  *dst = *src;
  dst->ncols = 0;
  dst->cols = calloc(src->ncols ? src->ncols : 1, sizeof *dst->cols);
  dst->pk = calloc(src->npk ? src->npk : 1, sizeof *dst->pk);
  dst->system = dup_or_null(src->system, &bad);
  dst->name = dup_or_null(src->name, &bad);
  dst->cursor = dup_or_null(src->cursor, &bad);
  dst->marker_json = dup_or_null(src->marker_json, &bad);
  if (!dst->cols || !dst->pk) bad = 1;
  for (size_t i = 0; !bad && i < src->ncols; i++) {
    dst->cols[i] = src->cols[i];
    dst->cols[i].name = dup_or_null(src->cols[i].name, &bad);
    dst->cols[i].path = dup_or_null(src->cols[i].path, &bad);
    dst->ncols = i + 1;
  }
  if (!bad && src->npk) memcpy(dst->pk, src->pk, src->npk * sizeof *dst->pk);
  if (bad) {
    dp_entity_free(dst);
    return DP_ENOMEM;
  }
  return 0;
}
