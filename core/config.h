/* config.h - every environment variable the engine reads, in one table: name, default and a
 * one-line description. The table prints the Environment section of `dp-engine --help`, is
 * exposed to Lua as dp.core.config_vars() and is checked against docs/index.md by
 * spec/01-unit/config_vars_spec.lua. Not in it: TZDIR (tz.c, the C library's convention),
 * TMPDIR, MONGOC_DISABLE_SHM (a library switch) and the DP_TEST_* hooks of the specs. */
#ifndef DP_CONFIG_H
#define DP_CONFIG_H

#include <stdio.h>

struct lua_State;

/* X(name, default or NULL, description). The default is what the engine uses when the
 * variable is unset or empty, as text ("" or a phrase in parentheses where it is computed). */
#define DP_CONFIG_MAP(X)                                                                                    \
  X("DP_POSTGRES_URL", NULL, "libpq URI of the PostgreSQL database (required for migrate, run)")          \
  X("DP_MONGO_URL", NULL, "mongodb:// URI of MongoDB or FerretDB (required for run, metadata push)")      \
  X("DP_DATA_DIR", "./data", "root for raw files and relative inbox folders")                             \
  X("DP_METADATA", "./metadata", "metadata folder, or mongo (the set pushed with metadata push)")          \
  X("DP_METADATA_DB", "metadata", "MongoDB database of pushed metadata")                                 \
  X("DP_BRONZE_DB", "bronze", "MongoDB database of the bronze layer")                                    \
  X("DP_SCRIPTS", "(DP_HOME)", "root holding connectors/ and gold/")                                     \
  X("DP_HOME", "(from the executable)", "engine home (lua/, migrations/)")                               \
  X("DP_LOG_LEVEL", "info", "debug | info | warn | error")                                               \
  X("DP_LOG_FORMAT", "text", "text | json")                                                              \
  X("DP_PROGRESS_SECONDS", "(30; 0.5 on a terminal)", "seconds between progress lines")                \
  X("DP_SORT_MEM", "16777216", "bytes bronze sorts in memory before it uses sorted runs on disk")        \
  X("DP_BRONZE_WRITERS", "2", "connections bronze inserts new documents on (1 to 8)")                   \
  X("DP_FERRETDB_PG_URL", NULL, "libpq URI of FerretDB's PostgreSQL database (doctor checks its tuning)") \
  X("DP_GOLD_STATEMENT_TIMEOUT", "300", "seconds a gold script's query may run (0: no limit)")           \
  X("DP_SCRIPT_TIMEOUT", "300", "CPU seconds of one script call")                                        \
  X("DP_SCRIPT_LOAD_TIMEOUT", "10", "CPU seconds of loading one script")                                 \
  X("DP_SCRIPT_MEMORY", "1024", "MiB of Lua heap a script may use")                                      \
  X("DP_SCRIPT_WALL_TIMEOUT", "21600", "wall-clock seconds of one script call")                          \
  X("DP_MASTER_KEY", NULL, "key of the secret store (or DP_MASTER_KEY_FILE)")                           \
  X("DP_MASTER_KEY_FILE", NULL, "file holding the key of the secret store")                              \
  X("DP_NEW_MASTER_KEY", NULL, "new key for secrets rotate-key (or DP_NEW_MASTER_KEY_FILE)")            \
  X("DP_NEW_MASTER_KEY_FILE", NULL, "file holding the new key for secrets rotate-key")                   \
  X("DP_SECRETS_FILE", "($DP_DATA_DIR/secrets.enc)", "the encrypted secret store")                       \
  X("DP_SECRETS_DIR", "/run/secrets", "folder of secret files (read-only backend)")                      \
  X("DP_SECRET_<NAME>", NULL, "a secret in the environment (read-only backend)")                         \
  X("DP_LISTEN", "127.0.0.1:8080", "serve: address of the HTTP API")                                     \
  X("DP_API_TOKEN", NULL, "serve: bearer token of the HTTP API (or DP_API_TOKEN_FILE)")                   \
  X("DP_API_TOKEN_FILE", NULL, "serve: file holding the bearer token")                                   \
  X("DP_API_INSECURE", NULL, "serve: 1 allows no token on a non-loopback DP_LISTEN")                      \
  X("DP_API_MAX_BODY", "1048576", "serve: largest request body in bytes")                                \
  X("DP_API_REQUEST_TIMEOUT", "10", "serve: seconds a request may take to arrive")                       \
  X("DP_WORKERS", "2", "serve: runs at the same time")                                                   \
  X("DP_SHUTDOWN_GRACE", "30", "serve: seconds running runs get on shutdown")                            \
  X("DP_FILE_SETTLE_MS", "3000", "serve: milliseconds a new file must stay unchanged")                   \
  X("DP_RELOAD_POLL", "10", "serve: seconds between checks for changed metadata")                        \
  X("DP_RETENTION_AT", "03:00", "serve: daily retention job time HH:MM UTC, or off")                        \
  X("DP_PREFECT_WORK_POOL", "dp-engine", "prefect deploy: the work pool")                                \
  X("PREFECT_API_URL", NULL, "report runs to Prefect (docs/orchestration.md)")                           \
  X("PREFECT_API_AUTH_STRING", NULL, "Prefect basic auth (user:password)")                               \
  X("PREFECT_API_KEY", NULL, "Prefect Cloud API key")                                                    \
  X("PREFECT_UI_URL", NULL, "the status page's links to flow runs")                                      \
  X("PREFECT__FLOW_RUN_ID", NULL, "set by a Prefect worker: the flow run to report to")

/* The value of the variable name when set and not empty, else its default (NULL when it has
 * none or is computed). name must be in the table (else NULL and a debug log). Returns the
 * environment's or static storage; do not free. */
const char *dp_config_get(const char *name);
/* The value of the variable name when set and not empty, else NULL; for variables whose
 * default is computed by the caller. Same storage and table rule as dp_config_get. */
const char *dp_config_env(const char *name);
/* Prints the Environment section of --help: one line per variable. */
void dp_config_print_help(FILE *out);
/* dp.core.config_vars() -> { {name=, default=, description=}, ... } in table order. */
void dp_config_lua_register(struct lua_State *L);

#endif
