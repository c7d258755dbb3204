/* meta.h - the C view of validated metadata: column types and entities.
 * Validation happens in Lua (lua/dp/models.lua); C reads the validated, defaulted tables
 * through dp_entity_from_lua (luabridge.c). An entity owns all its strings. */
#ifndef DP_META_H
#define DP_META_H

#include <stdbool.h>
#include <stddef.h>

#define DP_TYPE_MAP(X)                      \
  X(STRING, "string", 's')                  \
  X(TEXT, "text", 's')                      \
  X(INTEGER, "integer", 'i')                \
  X(BIGINT, "bigint", 'i')                  \
  X(DECIMAL, "decimal", 'n')                \
  X(DOUBLE, "double", 'f')                  \
  X(BOOLEAN, "boolean", 'b')                \
  X(DATE, "date", 'd')                      \
  X(TIMESTAMP, "timestamp", 't')            \
  X(JSON, "json", 'j')                      \
  X(UUID, "uuid", 'u')

typedef enum {
#define DP__TYPE_ENUM(name, str, tag) DP_T_##name,
  DP_TYPE_MAP(DP__TYPE_ENUM)
#undef DP__TYPE_ENUM
  DP_T__COUNT
} dp_type;

typedef enum { DP_DELETE_CLOSE, DP_DELETE_TOMBSTONE, DP_DELETE_IGNORE } dp_delete_mode;

typedef struct dp_column {
  char *name;
  char *path;       /* dotted path in the source record */
  dp_type type;
  int length;       /* string: max characters, 0 = unlimited */
  int precision;    /* decimal */
  int scale;        /* decimal */
  bool nullable;
  bool scd1;        /* history: scd1 (else scd2) */
  bool key;         /* part of the primary key */
} dp_column;

/* An entity's lifecycle settings (docs/lifecycle.md): retention.* and raw.compression. */
typedef struct dp_lifecycle {
  int raw_days;            /* retention.raw_days, 0 when not set */
  int raw_delete_days;     /* retention.raw_delete_days, 0 when not set */
  int bronze_deleted_days; /* retention.bronze_deleted_days, 0 when not set */
  int silver_history_days; /* retention.silver_history_days, 0 when not set */
  int gzip;                /* raw.compression == "gzip" */
} dp_lifecycle;

typedef struct dp_entity {
  char *system;
  char *name;
  bool enabled;     /* "enabled" (default true) */
  char *cursor;     /* cursor column, or NULL */
  bool full_load;   /* load_type full (else delta) */
  dp_delete_mode delete_mode;
  bool fail_on_type_error;
  size_t ncols;
  dp_column *cols;
  size_t npk;
  size_t *pk;       /* indexes into cols, in primary_key order */
  int marker_col;   /* delete_marker.column as an index into cols, or -1 */
  char *marker_json;/* delete_marker.value as JSON text (cast with the column at merge time) */
  int valid_from_col; /* valid_from: the event-time column, or -1 (versions start at run_ts) */
  dp_lifecycle lifecycle; /* retention.* and raw.compression */
} dp_entity;

const char *dp_type_name(dp_type t);
int dp_type_parse(const char *s, dp_type *out);
/* The hash family tag of a type (integer and bigint share 'i', string and text share 's'). */
char dp_type_tag(dp_type t);
/* Appends the PostgreSQL type of a column ("numeric(12,2)") to out. */
struct dp_buf;
int dp_column_sql_type(const dp_column *c, struct dp_buf *out);
/* Frees everything the entity owns (not the struct itself). */
void dp_entity_free(dp_entity *e);
/* A deep copy of src into dst (dst owns its strings; dp_entity_free). 0, or DP_ENOMEM (dst is
 * left empty). */
int dp_entity_copy(dp_entity *dst, const dp_entity *src);

#endif
