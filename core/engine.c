/* engine.c - configuration from the environment and the engine's connections. */
#include "engine.h"
#include "config.h"
#include "log.h"
#include "migrate.h"
#include "pg.h"
#include "rawfile.h"

#include <libgen.h>
#include <lua.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef DP_INSTALL_SHARE
#define DP_INSTALL_SHARE "/usr/local/share/dp-engine"
#endif

/* The variable's value or its default from config.h, else def; strdup'ed (caller frees). */
static char *env_or(const char *name, const char *def) {
  const char *v = dp_config_get(name);
  if (v) return strdup(v);
  return def ? strdup(def) : NULL;
}

static int has_engine_lua(const char *dir) {
  char p[PATH_MAX];
  dp_err e;
  return dp_path_join(p, sizeof p, dir, "lua/dp/engine.lua", &e) == 0 && access(p, R_OK) == 0;
}

/* The folder above the executable's folder when it holds lua/dp/engine.lua. */
static char *home_from_exe(void) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return NULL;
  exe[n] = '\0';
  char *parent = dirname(dirname(exe));
  if (has_engine_lua(parent)) return strdup(parent);
  return NULL;
}

int dp_config_from_env(dp_config *cfg, dp_err *e) {
  memset(cfg, 0, sizeof *cfg);
  cfg->home = env_or("DP_HOME", NULL);
  if (!cfg->home) cfg->home = home_from_exe();
  if (!cfg->home) cfg->home = strdup(DP_INSTALL_SHARE);
  if (!has_engine_lua(cfg->home)) {
    dp_err_set(e, DP_ECONFIG, "engine home %s has no lua/dp/engine.lua (set DP_HOME)", cfg->home);
    dp_config_free(cfg);
    return DP_ECONFIG;
  }
  cfg->scripts = env_or("DP_SCRIPTS", cfg->home);
  cfg->metadata = env_or("DP_METADATA", NULL);
  cfg->data_dir = env_or("DP_DATA_DIR", NULL);
  cfg->postgres_url = env_or("DP_POSTGRES_URL", NULL);
  cfg->mongo_url = env_or("DP_MONGO_URL", NULL);
  cfg->bronze_db = env_or("DP_BRONZE_DB", NULL);
  cfg->metadata_db = env_or("DP_METADATA_DB", NULL);
  const char *gold_timeout = dp_config_env("DP_GOLD_STATEMENT_TIMEOUT");
  cfg->gold_statement_timeout = gold_timeout ? strdup(gold_timeout) : NULL;
  return 0;
}

void dp_config_free(dp_config *cfg) {
  free(cfg->home);
  free(cfg->scripts);
  free(cfg->metadata);
  free(cfg->data_dir);
  free(cfg->postgres_url);
  free(cfg->mongo_url);
  free(cfg->bronze_db);
  free(cfg->metadata_db);
  free(cfg->gold_statement_timeout);
  memset(cfg, 0, sizeof *cfg);
}

int dp_engine_open_pg(dp_engine *eng, dp_err *e) {
  if (!eng->audit && !(eng->audit = dp_pg_connect(eng->cfg.postgres_url, e))) return e->code;
  if (!eng->data && !(eng->data = dp_pg_connect(eng->cfg.postgres_url, e))) return e->code;
  return 0;
}

int dp_engine_open_migrated(dp_engine *eng, dp_err *e) {
  int rc = dp_engine_open_pg(eng, e);
  if (rc) return rc;
  char dir[4200], first[256];
  int applied, pending;
  snprintf(dir, sizeof dir, "%s/migrations", eng->cfg.home);
  if ((rc = dp_migrate_status(eng->audit, dir, &applied, &pending, first, sizeof first, e)) != 0) return rc;
  if (pending == 0) return 0;
  if (pending == 1)
    return dp_err_set(e, DP_ECONFIG, "the database is not migrated: run `dp-engine migrate` (%s is not applied)", first);
  return dp_err_set(e, DP_ECONFIG, "the database is not migrated: run `dp-engine migrate` (%s and %d more are not applied)",
                    first, pending - 1);
}

/* libmongoc's own log lines go through ours. FerretDB v1 has no endSessions command, which
 * libmongoc sends when a client closes; that warning is expected and dropped. */
static void mongoc_log_to_dp(mongoc_log_level_t level, const char *domain, const char *message, void *ud) {
  (void)ud;
  if (strstr(message, "endSessions")) return;
  if (level <= MONGOC_LOG_LEVEL_ERROR) dp_log(DP_LOG_ERROR, "mongoc %s: %s", domain, message);
  else if (level == MONGOC_LOG_LEVEL_WARNING) dp_log(DP_LOG_WARN, "mongoc %s: %s", domain, message);
  else if (level <= MONGOC_LOG_LEVEL_INFO) dp_log(DP_LOG_DEBUG, "mongoc %s: %s", domain, message);
}

/* Also turns off libmongoc's shared-memory performance counters (/dev/shm/mongoc-<pid>): a
 * process killed with SIGKILL leaves its file behind, a later process with the same pid then
 * warns on stderr, and nothing here reads the counters. Call before mongoc_init. (Where the
 * library initialises itself when loaded, only MONGOC_DISABLE_SHM in the environment of the
 * process helps: spec/run.sh and the scripts export it.) */
void dp_mongo_log_init(void) {
  setenv("MONGOC_DISABLE_SHM", "1", 0);
  mongoc_log_set_handler(mongoc_log_to_dp, NULL);
}

int dp_engine_open_mongo(dp_engine *eng, dp_err *e) {
  if (eng->mongo) return 0;
  if (!eng->cfg.mongo_url) return dp_err_set(e, DP_ECONFIG, "DP_MONGO_URL is not set");
  bson_error_t be;
  mongoc_uri_t *uri = mongoc_uri_new_with_error(eng->cfg.mongo_url, &be);
  if (!uri) return dp_err_set(e, DP_ECONFIG, "DP_MONGO_URL is not a valid MongoDB URI: %s", be.message);
  eng->mongo = mongoc_client_new_from_uri(uri);
  mongoc_uri_destroy(uri);
  if (!eng->mongo) return dp_err_set(e, DP_EMONGO, "cannot create a MongoDB client");
  mongoc_client_set_appname(eng->mongo, "dp-engine");
  bson_t ping = BSON_INITIALIZER;
  BSON_APPEND_INT32(&ping, "ping", 1);
  bool ok = mongoc_client_command_simple(eng->mongo, "admin", &ping, NULL, NULL, &be);
  bson_destroy(&ping);
  if (!ok) return dp_err_set(e, DP_EMONGO, "cannot reach MongoDB: %s", be.message);
  return 0;
}

void dp_engine_close(dp_engine *eng) {
  if (eng->L) lua_close(eng->L);
  if (eng->audit) PQfinish(eng->audit);
  if (eng->data) PQfinish(eng->data);
  if (eng->mongo) mongoc_client_destroy(eng->mongo);
  dp_config_free(&eng->cfg);
  eng->L = NULL;
  eng->audit = eng->data = NULL;
  eng->mongo = NULL;
}
