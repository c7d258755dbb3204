/* secretlookup.h - where a secret's value comes from at run time: the environment
 * (DP_SECRET_<NAME>), secret files ($DP_SECRETS_DIR/<name>, default /run/secrets), then the
 * encrypted store (secrets.h), in that order (docs/secrets.md, "Lookup order"). Also the Lua
 * face of secrets for the trusted engine library (core.secret_get, core.redact...). */
#ifndef DP_SECRETLOOKUP_H
#define DP_SECRETLOOKUP_H

#include <stddef.h>
#include "error.h"

typedef struct lua_State lua_State;

typedef struct dp_secrets_config {
  char *file; /* the store: DP_SECRETS_FILE, else <data_dir>/secrets.enc (owned) */
  char *dir;  /* secret files: DP_SECRETS_DIR, else /run/secrets (owned) */
} dp_secrets_config;

typedef enum { DP_SECRET_FROM_ENV = 1, DP_SECRET_FROM_FILE, DP_SECRET_FROM_STORE } dp_secret_source;

/* Reads the configuration from the environment; data_dir NULL means DP_DATA_DIR or ./data.
 * Strings are owned by c until dp_secrets_config_free. */
int dp_secrets_config_from_env(const char *data_dir, dp_secrets_config *c, dp_err *e);
void dp_secrets_config_free(dp_secrets_config *c);
/* The environment variable of a secret: DP_SECRET_ + name upper-cased, "." and "-" as "_". */
void dp_secret_env_name(const char *name, char *out, size_t cap);

/* Looks name up in the documented order. On success *value is a sodium_malloc'd copy (the
 * caller releases it with sodium_free, which wipes it), *len its length, *src the backend and
 * where (cap bytes) says where it was found ("DP_SECRET_X", a file or store path). Returns 0,
 * DP_ENOTFOUND (the message lists every place looked), DP_EINVAL (not a secret name), or the
 * store's errors (DP_ECONFIG / DP_EKEY / DP_ETAMPERED / DP_EIO). */
int dp_secret_lookup(const dp_secrets_config *c, const char *name, unsigned char **value, size_t *len,
                     dp_secret_source *src, char *where, size_t where_cap, dp_err *e);

/* dp.core registrar: secret_get, redact, redact_register, redact_count, redact_reset. */
void dp_secrets_lua_register(lua_State *L);

#endif
