/* lifecycle.h - an entity's lifecycle settings from validated metadata (docs/lifecycle.md):
 * retention.* and raw.compression, read by the run driver, retention and forget. */
#ifndef DP_LIFECYCLE_H
#define DP_LIFECYCLE_H

typedef struct lua_State lua_State;

typedef struct dp_lifecycle {
  int raw_days;            /* retention.raw_days, 0 when not set */
  int raw_delete_days;     /* retention.raw_delete_days, 0 when not set */
  int bronze_deleted_days; /* retention.bronze_deleted_days, 0 when not set */
  int silver_history_days; /* retention.silver_history_days, 0 when not set */
  int gzip;                /* raw.compression == "gzip" */
} dp_lifecycle;

/* The settings of the entity table at idx. */
void dp_lifecycle_read(lua_State *L, int idx, dp_lifecycle *out);
/* Pushes the entity table system.entity of the validated metadata at meta_idx and returns 1, or
 * pushes nothing and returns 0 when there is none. */
int dp_lifecycle_push_entity(lua_State *L, int meta_idx, const char *system, const char *entity);
/* The settings of system.entity (all zero when it is not in metadata). */
void dp_lifecycle_of(lua_State *L, int meta_idx, const char *system, const char *entity, dp_lifecycle *out);

#endif
