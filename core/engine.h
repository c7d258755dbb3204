/* engine.h - the engine context: configuration and the connections a run uses.
 * Built once by the composition root (main.c) and passed down explicitly. */
#ifndef DP_ENGINE_H
#define DP_ENGINE_H

#include <libpq-fe.h>
#include <mongoc/mongoc.h>
#include "error.h"

typedef struct lua_State lua_State;
typedef struct dp_meta_texts dp_meta_texts;

typedef struct dp_config {
  char *home;         /* DP_HOME: holds lua/ and migrations/ */
  char *scripts;      /* DP_SCRIPTS: holds connectors/ and gold/ */
  char *metadata;     /* DP_METADATA: a folder, or "mongo" */
  char *data_dir;     /* DP_DATA_DIR */
  char *postgres_url; /* DP_POSTGRES_URL */
  char *mongo_url;    /* DP_MONGO_URL */
  char *bronze_db;    /* DP_BRONZE_DB: MongoDB database of the bronze layer, default "bronze" */
  char *metadata_db;  /* DP_METADATA_DB: MongoDB database of pushed metadata, default "metadata" */
  char *gold_statement_timeout; /* DP_GOLD_STATEMENT_TIMEOUT as set (checked by gold runs), or NULL */
} dp_config;

typedef struct dp_engine {
  dp_config cfg;
  PGconn *audit;            /* audit rows and advisory locks; autocommit */
  PGconn *data;             /* silver merges, one transaction per entity */
  mongoc_client_t *mongo;   /* bronze, pushed metadata */
  lua_State *L;             /* the run's Lua state (trusted engine library) */
  const dp_meta_texts *meta; /* borrowed: the metadata texts to use (a serve snapshot's), or NULL to
                                read DP_METADATA afresh (metaload.c) */
} dp_engine;

/* Reads the environment into cfg (strings owned by cfg). Returns 0 or DP_ECONFIG. */
int dp_config_from_env(dp_config *cfg, dp_err *e);
void dp_config_free(dp_config *cfg);
/* Opens what is not open yet. */
int dp_engine_open_pg(dp_engine *eng, dp_err *e);
int dp_engine_open_mongo(dp_engine *eng, dp_err *e);
/* dp_engine_open_pg, then DP_ECONFIG "the database is not migrated: run `dp-engine migrate`
 * (...)" when a file of DP_HOME/migrations is not applied: what every command but migrate uses,
 * so that none meets a missing table as an SQL error. */
int dp_engine_open_migrated(dp_engine *eng, dp_err *e);
/* Routes libmongoc logging through dp_log and turns off its shared-memory counters (call once,
 * before mongoc_init). */
void dp_mongo_log_init(void);
/* Closes connections and the Lua state and frees the configuration. */
void dp_engine_close(dp_engine *eng);

#endif
