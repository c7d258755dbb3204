/* secretlookup.c - the lookup order of secrets, and their Lua face (dp.core registrar). */
#include "config.h"
#include "secretlookup.h"
#include "buf.h"
#include "log.h"
#include "redact.h"
#include "secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The variable's value or its default (config.h), strdup'ed (caller frees). */
static char *env_or(const char *name) {
  return strdup(dp_config_get(name));
}

int dp_secrets_config_from_env(const char *data_dir, dp_secrets_config *c, dp_err *e) {
  memset(c, 0, sizeof *c);
  const char *file = dp_config_env("DP_SECRETS_FILE");
  if (file && *file) {
    c->file = strdup(file);
  } else {
    const char *dd = data_dir ? data_dir : dp_config_get("DP_DATA_DIR");
    if (!dd || !*dd) dd = "./data";
    if (asprintf(&c->file, "%s/secrets.enc", dd) < 0) c->file = NULL;
  }
  c->dir = env_or("DP_SECRETS_DIR");
  if (!c->file || !c->dir) {
    dp_secrets_config_free(c);
    return dp_err_set(e, DP_ENOMEM, "out of memory");
  }
  return 0;
}

void dp_secrets_config_free(dp_secrets_config *c) {
  free(c->file);
  free(c->dir);
  memset(c, 0, sizeof *c);
}

void dp_secret_env_name(const char *name, char *out, size_t cap) {
  size_t k = (size_t)snprintf(out, cap, "DP_SECRET_");
  for (const char *s = name; *s && k + 1 < cap; s++) {
    char ch = *s;
    if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
    else if (ch == '.' || ch == '-') ch = '_';
    out[k++] = ch;
  }
  if (k < cap) out[k] = '\0';
}

/* A heap copy of value in wiped-on-free memory (caller sodium_free's it). */
static unsigned char *secure_copy(const void *value, size_t len) {
  unsigned char *p = sodium_malloc(len ? len : 1);
  if (p && len) memcpy(p, value, len);
  return p;
}

/* 1 when path is the file of DP_MASTER_KEY_FILE or DP_NEW_MASTER_KEY_FILE. */
static int is_key_file(const struct stat *sb) {
  static const char *vars[] = {"DP_MASTER_KEY_FILE", "DP_NEW_MASTER_KEY_FILE"};
  for (size_t i = 0; i < 2; i++) {
    const char *p = dp_config_env(vars[i]);
    struct stat kb;
    if (p && *p && stat(p, &kb) == 0 && kb.st_dev == sb->st_dev && kb.st_ino == sb->st_ino) return 1;
  }
  return 0;
}

/* Reads a secret file. Returns 0 (found), 1 (no such file) or an error. */
static int from_file(const char *path, const char *name, unsigned char **value, size_t *len, dp_err *e) {
  unsigned char *buf = NULL;
  size_t n = 0, cap = DP_SECRET_VALUE_MAX + 3;
  int rc = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return 1;
    return dp_err_set(e, DP_EIO, "secret \"%s\": cannot read %s: %s", name, path, strerror(errno));
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    rc = dp_err_set(e, DP_EIO, "secret \"%s\": %s is not a regular file", name, path);
    goto cleanup;
  }
  if (is_key_file(&sb)) {
    rc = dp_err_set(e, DP_EINVAL, "secret \"%s\": %s is the master key file, which is never served as a secret",
                    name, path);
    goto cleanup;
  }
  buf = sodium_malloc(cap);
  if (!buf) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  for (;;) {
    ssize_t k = read(fd, buf + n, cap - n);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      rc = dp_err_set(e, DP_EIO, "secret \"%s\": cannot read %s: %s", name, path, strerror(errno));
      goto cleanup;
    }
    if (k == 0) break;
    n += (size_t)k;
    if (n == cap) {
      rc = dp_err_set(e, DP_EINVAL, "secret \"%s\": %s is over the %d-byte limit", name, path, DP_SECRET_VALUE_MAX);
      goto cleanup;
    }
  }
  if (n > 0 && buf[n - 1] == '\n') { /* one trailing "\n" or "\r\n", as editors and echo add */
    n--;
    if (n > 0 && buf[n - 1] == '\r') n--;
  }
  if (n == 0 || n > DP_SECRET_VALUE_MAX) {
    rc = dp_err_set(e, DP_EINVAL, "secret \"%s\": %s is %s", name, path, n ? "over the size limit" : "empty");
    goto cleanup;
  }
  *value = buf;
  *len = n;
  buf = NULL;
cleanup:
  close(fd);
  if (buf) sodium_free(buf);
  return rc;
}

/* Looks name up in the store. Returns 0 (found), 1 (not there: *why says so) or an error. */
static int from_store(const char *path, const char *name, unsigned char **value, size_t *len, char *why,
                      size_t why_cap, dp_err *e) {
  dp_secrets_key key;
  dp_secret_store st;
  int rc = 0;
  struct stat sb;
  memset(&key, 0, sizeof key);
  memset(&st, 0, sizeof st);
  if (stat(path, &sb) != 0 && errno == ENOENT) {
    snprintf(why, why_cap, "no store at %s", path);
    return 1;
  }
  rc = dp_secrets_key_from_env("DP_MASTER_KEY", &key, e);
  if (rc) {
    dp_err_prefix(e, "secret \"%s\": the store %s cannot be opened: ", name, path);
    goto cleanup;
  }
  rc = dp_secret_store_load(path, &key, &st, e);
  if (rc) {
    dp_err_prefix(e, "secret \"%s\": ", name);
    goto cleanup;
  }
  const dp_secret_item *it = dp_secret_store_find(&st, name);
  if (!it) {
    snprintf(why, why_cap, "no secret of that name in the store %s", path);
    rc = 1;
    goto cleanup;
  }
  *value = secure_copy(it->value, it->value_len);
  if (!*value) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  *len = it->value_len;
cleanup:
  dp_secret_store_free(&st);
  dp_secrets_key_wipe(&key);
  return rc;
}

int dp_secret_lookup(const dp_secrets_config *c, const char *name, unsigned char **value, size_t *len,
                     dp_secret_source *src, char *where, size_t where_cap, dp_err *e) {
  char var[DP_SECRET_NAME_MAX + 16], why[4200];
  char *path = NULL;
  int rc;
  *value = NULL;
  *len = 0;
  if (!dp_secret_name_valid(name))
    return dp_err_set(e, DP_EINVAL, "\"%s\" is not a secret name: use 1 to %d letters, digits, _, . and -",
                      name ? name : "", DP_SECRET_NAME_MAX);
  /* 1. the environment */
  dp_secret_env_name(name, var, sizeof var);
  const char *v = getenv(var);
  if (v && *v) {
    size_t n = strlen(v);
    if (n > DP_SECRET_VALUE_MAX)
      return dp_err_set(e, DP_EINVAL, "secret \"%s\": %s is over the %d-byte limit", name, var, DP_SECRET_VALUE_MAX);
    if (!(*value = secure_copy(v, n))) return dp_err_set(e, DP_ENOMEM, "out of memory");
    *len = n;
    *src = DP_SECRET_FROM_ENV;
    snprintf(where, where_cap, "%s", var);
    return 0;
  }
  /* 2. secret files */
  if (asprintf(&path, "%s/%s", c->dir, name) < 0) return dp_err_set(e, DP_ENOMEM, "out of memory");
  rc = from_file(path, name, value, len, e);
  if (rc == 0) {
    *src = DP_SECRET_FROM_FILE;
    snprintf(where, where_cap, "%s", path);
  }
  if (rc <= 0) goto cleanup;
  /* 3. the store */
  rc = from_store(c->file, name, value, len, why, sizeof why, e);
  if (rc == 0) {
    *src = DP_SECRET_FROM_STORE;
    snprintf(where, where_cap, "%s", c->file);
  } else if (rc == 1) {
    rc = dp_err_set(e, DP_ENOTFOUND, "secret \"%s\" was not found: no %s in the environment, no file %s, %s", name,
                    var, path, why);
  }
cleanup:
  free(path);
  return rc;
}

/* ---------- Lua (trusted engine library only: scripts never see dp.core) ---------- */

static const char *source_name(dp_secret_source s) {
  return s == DP_SECRET_FROM_ENV ? "environment" : s == DP_SECRET_FROM_FILE ? "file" : "store";
}

/* secret_get(name) -> value, source, where | nil, err. The value is registered for redaction. */
static int l_secret_get(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  dp_secrets_config c;
  dp_err e;
  dp_err_clear(&e);
  unsigned char *value = NULL;
  size_t len = 0;
  dp_secret_source src = 0;
  char where[4200];
  int rc = dp_secrets_config_from_env(NULL, &c, &e);
  if (rc == 0) rc = dp_secret_lookup(&c, name, &value, &len, &src, where, sizeof where, &e);
  dp_secrets_config_free(&c);
  if (rc) {
    lua_pushnil(L);
    lua_pushstring(L, e.msg);
    return 2;
  }
  if (dp_redact_register(name, value, len) == DP_EINVAL)
    dp_log(DP_LOG_WARN, "secret %s is shorter than %d bytes: it cannot be redacted from logs and errors", name,
           DP_REDACT_MIN_LEN);
  lua_pushlstring(L, (const char *)value, len);
  sodium_free(value);
  lua_pushstring(L, source_name(src));
  lua_pushstring(L, where);
  return 3;
}

/* redact(text) -> text with registered values replaced, number of replacements */
static int l_redact(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  if (dp_redact_count() == 0) {
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    return 2;
  }
  dp_buf b = DP_BUF_INIT;
  if (dp_buf_append(&b, s, n) != 0) return luaL_error(L, "redact: out of memory");
  int k = dp_redact_buf(&b);
  if (k < 0) {
    sodium_memzero(b.data, b.cap);
    dp_buf_free(&b);
    return luaL_error(L, "redact: out of memory");
  }
  lua_pushlstring(L, b.data, b.len);
  sodium_memzero(b.data, b.cap);
  dp_buf_free(&b);
  lua_pushinteger(L, k);
  return 2;
}

/* redact_register(value[, label]) -> true | nil, err */
static int l_redact_register(lua_State *L) {
  size_t n;
  const char *v = luaL_checklstring(L, 1, &n);
  const char *label = luaL_optstring(L, 2, NULL);
  int rc = dp_redact_register(label, v, n);
  if (rc == DP_EINVAL) {
    lua_pushnil(L);
    lua_pushfstring(L, "values shorter than %d bytes are not redacted", DP_REDACT_MIN_LEN);
    return 2;
  }
  if (rc) return luaL_error(L, "redact_register: out of memory");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_redact_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)dp_redact_count());
  return 1;
}

/* For specs: forget every registered value. */
static int l_redact_reset(lua_State *L) {
  dp_redact_reset();
  return 0;
}

void dp_secrets_lua_register(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"secret_get", l_secret_get},   {"redact", l_redact},           {"redact_register", l_redact_register},
      {"redact_count", l_redact_count}, {"redact_reset", l_redact_reset}, {NULL, NULL},
  };
  luaL_register(L, NULL, funcs);
}
