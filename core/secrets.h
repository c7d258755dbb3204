/* secrets.h - the encrypted secret store: one file sealed with XChaCha20-Poly1305 under a key
 * derived from the master key, rewritten atomically, locked around read-modify-write.
 * The file format is documented in docs/secrets.md ("The store file"). */
#ifndef DP_SECRETS_H
#define DP_SECRETS_H

#include <stddef.h>
#include <stdint.h>
#include "error.h"

#define DP_SECRET_NAME_MAX 128
#define DP_SECRET_VALUE_MAX 65536
#define DP_SECRETS_KEY_ID_BYTES 8

/* The master key as the store uses it: subkeys derived from it (the master key itself is wiped
 * as soon as they are derived). The caller owns the struct and wipes it with
 * dp_secrets_key_wipe. */
typedef struct dp_secrets_key {
  unsigned char enc[32];                     /* AEAD key */
  unsigned char id[DP_SECRETS_KEY_ID_BYTES]; /* key id, public: tells a wrong key from tampering */
} dp_secrets_key;

/* One entry; the pointers point into the store's decrypted content. */
typedef struct dp_secret_item {
  const char *name;
  size_t name_len;
  const unsigned char *value;
  size_t value_len;
  int64_t updated_at; /* Unix seconds, UTC */
} dp_secret_item;

/* A decrypted store. The caller owns the struct; its memory is owned by it until
 * dp_secret_store_free, which wipes the content. */
typedef struct dp_secret_store {
  unsigned char *plain;  /* decrypted content (sodium_malloc) */
  size_t plain_len;
  dp_secret_item *items; /* sorted by name; point into plain (malloc) */
  size_t n;
  int exists;            /* the file existed when loaded */
} dp_secret_store;

/* 1 when name is a valid secret name: 1..128 of [A-Za-z0-9_.-], not "." or "..". */
int dp_secret_name_valid(const char *name);

/* Parses key material: 44 base64 characters or 64 hex digits (whitespace around ignored), or
 * exactly 32 raw bytes when raw_ok. what names the source in errors ("DP_MASTER_KEY"); the key
 * text never appears in a message. Returns 0 or DP_EKEY. */
int dp_secrets_key_parse(const unsigned char *text, size_t len, int raw_ok, const char *what,
                         dp_secrets_key *key, dp_err *e);
/* Reads the key from <var>_FILE or <var> (var: "DP_MASTER_KEY" or "DP_NEW_MASTER_KEY").
 * Returns 0, DP_ECONFIG (neither or both set, unreadable file) or DP_EKEY (malformed). */
int dp_secrets_key_from_env(const char *var, dp_secrets_key *key, dp_err *e);
void dp_secrets_key_wipe(dp_secrets_key *key);
/* The key id as 16 hex digits. */
void dp_secrets_key_id_hex(const dp_secrets_key *key, char out[2 * DP_SECRETS_KEY_ID_BYTES + 1]);
/* A new random master key as base64 text (44 characters and the NUL). */
void dp_secrets_gen_key(char out[45]);

/* Loads and decrypts the store at path. A missing file is an empty store (st->exists = 0).
 * Returns 0, DP_EKEY (sealed with another key), DP_ETAMPERED (authentication failed, not a
 * store, unknown version, malformed content), DP_EIO, DP_ENOMEM. st is empty on error. */
int dp_secret_store_load(const char *path, const dp_secrets_key *key, dp_secret_store *st, dp_err *e);
/* Seals st under key with a fresh nonce and replaces path atomically (mode 0600; the folder is
 * created when missing). On error the old file is untouched. */
int dp_secret_store_save(const char *path, const dp_secrets_key *key, const dp_secret_store *st, dp_err *e);
/* The entry named name, or NULL. */
const dp_secret_item *dp_secret_store_find(const dp_secret_store *st, const char *name);
/* Adds or replaces an entry (value: 1..DP_SECRET_VALUE_MAX bytes, copied). */
int dp_secret_store_put(dp_secret_store *st, const char *name, const void *value, size_t len,
                        int64_t now, dp_err *e);
/* Removes an entry; DP_ENOTFOUND when there is none. */
int dp_secret_store_remove(dp_secret_store *st, const char *name, dp_err *e);
void dp_secret_store_free(dp_secret_store *st);

/* Takes an exclusive flock on <path>.lock (created 0600, kept), waiting for other writers.
 * *fd gets the lock's descriptor for dp_secret_store_unlock. */
int dp_secret_store_lock(const char *path, int *fd, dp_err *e);
void dp_secret_store_unlock(int fd);

#endif
