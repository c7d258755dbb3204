/* secrets.c - the encrypted secret store (format version 1, see docs/secrets.md). */
#include "config.h"
#include "secrets.h"
#include "log.h"
#include "rawfile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "DPSECRET"
#define MAGIC_LEN 8
#define VERSION 1
#define AD_LEN (MAGIC_LEN + 1 + DP_SECRETS_KEY_ID_BYTES)                       /* 17 */
#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES                 /* 24 */
#define HEADER_LEN (AD_LEN + NONCE_LEN)                                        /* 41 */
#define TAG_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES                      /* 16 */
#define KDF_CONTEXT "dpsecret"
#define KEY_FILE_MAX 1024
/* Largest content: a sane bound on the number of entries keeps a damaged length from asking
 * for gigabytes. */
#define MAX_ENTRIES 100000

static int name_bytes_ok(const char *s, size_t n) {
  if (n == 0 || n > DP_SECRET_NAME_MAX) return 0;
  if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '-'))
      return 0;
  }
  return 1;
}

int dp_secret_name_valid(const char *name) { return name != NULL && name_bytes_ok(name, strlen(name)); }

/* ---------- keys ---------- */

static int is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int dp_secrets_key_parse(const unsigned char *text, size_t len, int raw_ok, const char *what,
                         dp_secrets_key *key, dp_err *e) {
  unsigned char master[32], id[16];
  size_t got = 0;
  int rc = 0, ok = 0;
  memset(key, 0, sizeof *key);
  if (raw_ok && len == 32) {
    memcpy(master, text, 32);
    ok = 1;
  } else {
    const unsigned char *s = text, *end = text + len;
    while (s < end && is_space(*s)) s++;
    while (end > s && is_space(end[-1])) end--;
    size_t n = (size_t)(end - s);
    if (n == 64) {
      ok = sodium_hex2bin(master, sizeof master, (const char *)s, n, NULL, &got, NULL) == 0 && got == 32;
    } else if (n == 43 || n == 44) {
      static const int variants[] = {sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
                                     sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING};
      for (size_t v = 0; v < 4 && !ok; v++) {
        const char *last = NULL;
        ok = sodium_base642bin(master, sizeof master, (const char *)s, n, NULL, &got, &last, variants[v]) == 0 &&
             got == 32 && last == (const char *)end;
      }
    }
    if (!ok) {
      rc = dp_err_set(e, DP_EKEY,
                      "%s is not a key: expected 32 bytes written as 44 base64 characters or 64 hex digits"
                      "%s (found %zu characters); create one with `dp-engine secrets gen-key`",
                      what, raw_ok ? " (or 32 raw bytes)" : "", n);
      goto cleanup;
    }
  }
  if (sodium_is_zero(master, sizeof master)) {
    rc = dp_err_set(e, DP_EKEY, "%s is all zero bytes, which is not a key; create one with `dp-engine secrets gen-key`", what);
    goto cleanup;
  }
  crypto_kdf_derive_from_key(key->enc, sizeof key->enc, 1, KDF_CONTEXT, master);
  crypto_kdf_derive_from_key(id, sizeof id, 2, KDF_CONTEXT, master);
  memcpy(key->id, id, sizeof key->id);
cleanup:
  sodium_memzero(master, sizeof master);
  sodium_memzero(id, sizeof id);
  if (rc) dp_secrets_key_wipe(key);
  return rc;
}

static int key_from_file(const char *var_file, const char *path, dp_secrets_key *key, dp_err *e) {
  unsigned char buf[KEY_FILE_MAX + 1];
  size_t n = 0;
  int rc = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    rc = dp_err_set(e, DP_ECONFIG, "cannot read %s %s: %s", var_file, path, strerror(errno));
    goto cleanup;
  }
  for (;;) {
    ssize_t k = read(fd, buf + n, sizeof buf - n);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      rc = dp_err_set(e, DP_ECONFIG, "cannot read %s %s: %s", var_file, path, strerror(errno));
      goto cleanup;
    }
    if (k == 0) break;
    n += (size_t)k;
    if (n == sizeof buf) {
      rc = dp_err_set(e, DP_EKEY, "%s %s is not a key: more than %d bytes", var_file, path, KEY_FILE_MAX);
      goto cleanup;
    }
  }
  char what[4200];
  snprintf(what, sizeof what, "%s %s", var_file, path);
  rc = dp_secrets_key_parse(buf, n, 1, what, key, e);
cleanup:
  if (fd >= 0) close(fd);
  sodium_memzero(buf, sizeof buf);
  return rc;
}

int dp_secrets_key_from_env(const char *var, dp_secrets_key *key, dp_err *e) {
  char var_file[64];
  snprintf(var_file, sizeof var_file, "%s_FILE", var);
  const char *file = dp_config_env(var_file), *text = dp_config_env(var);
  int has_file = file && *file, has_text = text && *text;
  memset(key, 0, sizeof *key);
  if (has_file && has_text)
    return dp_err_set(e, DP_ECONFIG, "both %s and %s are set: set one, so it is clear which key is used",
                      var_file, var);
  if (has_file) return key_from_file(var_file, file, key, e);
  if (has_text) return dp_secrets_key_parse((const unsigned char *)text, strlen(text), 0, var, key, e);
  return dp_err_set(e, DP_ECONFIG,
                    "no %s key: set %s to a file holding 32 random bytes as base64 (create one with "
                    "`dp-engine secrets gen-key`), or %s to the key itself",
                    strcmp(var, "DP_MASTER_KEY") == 0 ? "master" : "new master", var_file, var);
}

void dp_secrets_key_wipe(dp_secrets_key *key) { sodium_memzero(key, sizeof *key); }

void dp_secrets_key_id_hex(const dp_secrets_key *key, char out[2 * DP_SECRETS_KEY_ID_BYTES + 1]) {
  sodium_bin2hex(out, 2 * DP_SECRETS_KEY_ID_BYTES + 1, key->id, sizeof key->id);
}

void dp_secrets_gen_key(char out[45]) {
  unsigned char k[32];
  randombytes_buf(k, sizeof k);
  sodium_bin2base64(out, 45, k, sizeof k, sodium_base64_VARIANT_ORIGINAL);
  sodium_memzero(k, sizeof k);
}

/* ---------- content ---------- */

static void put_u32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16); p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}
static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}
static void put_i64(unsigned char *p, int64_t v) {
  put_u32(p, (uint32_t)((uint64_t)v >> 32));
  put_u32(p + 4, (uint32_t)(uint64_t)v);
}
static int64_t get_i64(const unsigned char *p) {
  return (int64_t)((uint64_t)get_u32(p) << 32 | get_u32(p + 4));
}

static int name_cmp(const char *a, size_t an, const char *b, size_t bn) {
  int c = memcmp(a, b, an < bn ? an : bn);
  if (c) return c;
  return an < bn ? -1 : an > bn;
}

/* Builds st->items over st->plain; checks every length, name and the order. */
static int index_content(dp_secret_store *st, const char *path, dp_err *e) {
  const unsigned char *p = st->plain, *end = st->plain + st->plain_len;
  if (st->plain_len < 4) goto bad;
  uint32_t n = get_u32(p);
  p += 4;
  if (n > MAX_ENTRIES) goto bad;
  st->items = calloc(n ? n : 1, sizeof *st->items);
  if (!st->items) return dp_err_set(e, DP_ENOMEM, "out of memory");
  for (uint32_t i = 0; i < n; i++) {
    dp_secret_item *it = &st->items[i];
    if (end - p < 1) goto bad;
    it->name_len = *p++;
    if (it->name_len == 0 || (size_t)(end - p) < it->name_len + 8 + 4) goto bad;
    it->name = (const char *)p;
    if (!name_bytes_ok(it->name, it->name_len)) goto bad;
    p += it->name_len;
    it->updated_at = get_i64(p);
    p += 8;
    it->value_len = get_u32(p);
    p += 4;
    if (it->value_len == 0 || it->value_len > DP_SECRET_VALUE_MAX || (size_t)(end - p) < it->value_len) goto bad;
    it->value = p;
    p += it->value_len;
    if (i > 0 && name_cmp(st->items[i - 1].name, st->items[i - 1].name_len, it->name, it->name_len) >= 0) goto bad;
    st->n = i + 1;
  }
  if (p != end) goto bad;
  return 0;
bad:
  free(st->items);
  st->items = NULL;
  st->n = 0;
  return dp_err_set(e, DP_ETAMPERED,
                    "the secret store %s decrypted, but its content is malformed (written by another "
                    "program or version?); it is left as it is", path);
}

void dp_secret_store_free(dp_secret_store *st) {
  if (st->plain) sodium_free(st->plain); /* wipes */
  free(st->items);
  memset(st, 0, sizeof *st);
}

static int empty_store(dp_secret_store *st, dp_err *e) {
  st->plain = sodium_malloc(4);
  if (!st->plain) return dp_err_set(e, DP_ENOMEM, "out of memory");
  put_u32(st->plain, 0);
  st->plain_len = 4;
  st->items = calloc(1, sizeof *st->items);
  if (!st->items) return dp_err_set(e, DP_ENOMEM, "out of memory");
  return 0;
}

int dp_secret_store_load(const char *path, const dp_secrets_key *key, dp_secret_store *st, dp_err *e) {
  char *data = NULL;
  size_t len = 0;
  int rc = 0;
  struct stat sb;
  memset(st, 0, sizeof *st);
  if (stat(path, &sb) != 0) {
    if (errno != ENOENT) {
      rc = dp_err_set(e, DP_EIO, "cannot read the secret store %s: %s", path, strerror(errno));
      goto cleanup;
    }
    rc = empty_store(st, e);
    goto cleanup;
  }
  st->exists = 1;
  if (sb.st_mode & 077)
    dp_log(DP_LOG_WARN, "the secret store %s can be read by others (mode %03o); dp-engine writes it 0600: "
           "chmod 600 %s", path, (unsigned)(sb.st_mode & 0777), path);
  rc = dp_read_file(path, &data, &len, e);
  if (rc) goto cleanup;
  if (len < MAGIC_LEN || memcmp(data, MAGIC, MAGIC_LEN) != 0) {
    rc = dp_err_set(e, DP_ETAMPERED, "%s is not a dp-engine secret store (no DPSECRET header); it is left as it is",
                    path);
    goto cleanup;
  }
  if (len < HEADER_LEN + TAG_LEN + 4) {
    rc = dp_err_set(e, DP_ETAMPERED, "the secret store %s is cut short (%zu bytes): it was damaged (it is left "
                    "as it is; restore it from a backup)", path, len);
    goto cleanup;
  }
  if ((unsigned char)data[MAGIC_LEN] != VERSION) {
    rc = dp_err_set(e, DP_ETAMPERED, "the secret store %s has format version %u; this dp-engine reads version %d",
                    path, (unsigned char)data[MAGIC_LEN], VERSION);
    goto cleanup;
  }
  if (sodium_memcmp(data + MAGIC_LEN + 1, key->id, DP_SECRETS_KEY_ID_BYTES) != 0) {
    char want[2 * DP_SECRETS_KEY_ID_BYTES + 1], have[2 * DP_SECRETS_KEY_ID_BYTES + 1];
    sodium_bin2hex(want, sizeof want, (const unsigned char *)data + MAGIC_LEN + 1, DP_SECRETS_KEY_ID_BYTES);
    dp_secrets_key_id_hex(key, have);
    rc = dp_err_set(e, DP_EKEY,
                    "the secret store %s was sealed with another key (key id %s; the configured key has id %s), "
                    "or its header is damaged: check DP_MASTER_KEY_FILE / DP_MASTER_KEY", path, want, have);
    goto cleanup;
  }
  st->plain_len = len - HEADER_LEN - TAG_LEN;
  st->plain = sodium_malloc(st->plain_len);
  if (!st->plain) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  unsigned long long plen = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          st->plain, &plen, NULL, (const unsigned char *)data + HEADER_LEN, len - HEADER_LEN,
          (const unsigned char *)data, AD_LEN, (const unsigned char *)data + AD_LEN, key->enc) != 0) {
    rc = dp_err_set(e, DP_ETAMPERED,
                    "the secret store %s failed authentication: it was modified or damaged (it is left as "
                    "it is; restore it from a backup)", path);
    goto cleanup;
  }
  rc = index_content(st, path, e);
cleanup:
  free(data); /* ciphertext only */
  if (rc) dp_secret_store_free(st);
  return rc;
}

int dp_secret_store_save(const char *path, const dp_secrets_key *key, const dp_secret_store *st, dp_err *e) {
  size_t len = HEADER_LEN + st->plain_len + TAG_LEN;
  unsigned char *out = malloc(len);
  char *dir = strdup(path);
  int rc = 0;
  if (!out || !dir) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  memcpy(out, MAGIC, MAGIC_LEN);
  out[MAGIC_LEN] = VERSION;
  memcpy(out + MAGIC_LEN + 1, key->id, DP_SECRETS_KEY_ID_BYTES);
  randombytes_buf(out + AD_LEN, NONCE_LEN);
  unsigned long long clen = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(out + HEADER_LEN, &clen, st->plain, st->plain_len, out, AD_LEN,
                                             NULL, out + AD_LEN, key->enc);
  rc = dp_mkdirs(dirname(dir), e);
  if (rc) goto cleanup;
  rc = dp_write_file_atomic_mode(path, (const char *)out, HEADER_LEN + (size_t)clen, 0600, e);
  if (rc) dp_err_prefix(e, "cannot write the secret store: ");
cleanup:
  free(out);
  free(dir);
  return rc;
}

const dp_secret_item *dp_secret_store_find(const dp_secret_store *st, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < st->n; i++)
    if (name_cmp(st->items[i].name, st->items[i].name_len, name, n) == 0) return &st->items[i];
  return NULL;
}

/* Rewrites the content: every entry except `name`, plus (when value) the new entry, in order. */
static int rebuild(dp_secret_store *st, const char *name, const void *value, size_t vlen, int64_t now,
                   dp_err *e) {
  size_t nlen = strlen(name), size = 4, count = 0;
  for (size_t i = 0; i < st->n; i++) {
    if (name_cmp(st->items[i].name, st->items[i].name_len, name, nlen) == 0) continue;
    size += 1 + st->items[i].name_len + 8 + 4 + st->items[i].value_len;
    count++;
  }
  if (value) {
    size += 1 + nlen + 8 + 4 + vlen;
    count++;
  }
  if (count > MAX_ENTRIES) return dp_err_set(e, DP_EINVAL, "the secret store holds at most %d secrets", MAX_ENTRIES);
  dp_secret_store ns;
  memset(&ns, 0, sizeof ns);
  ns.plain = sodium_malloc(size);
  if (!ns.plain) return dp_err_set(e, DP_ENOMEM, "out of memory");
  ns.plain_len = size;
  unsigned char *p = ns.plain;
  put_u32(p, (uint32_t)count);
  p += 4;
  int placed = value == NULL;
  for (size_t i = 0; i <= st->n; i++) {
    const dp_secret_item *it = i < st->n ? &st->items[i] : NULL;
    if (!placed && (!it || name_cmp(name, nlen, it->name, it->name_len) < 0)) {
      *p++ = (unsigned char)nlen;
      memcpy(p, name, nlen), p += nlen;
      put_i64(p, now), p += 8;
      put_u32(p, (uint32_t)vlen), p += 4;
      memcpy(p, value, vlen), p += vlen;
      placed = 1;
    }
    if (!it || name_cmp(it->name, it->name_len, name, nlen) == 0) continue;
    *p++ = (unsigned char)it->name_len;
    memcpy(p, it->name, it->name_len), p += it->name_len;
    put_i64(p, it->updated_at), p += 8;
    put_u32(p, (uint32_t)it->value_len), p += 4;
    memcpy(p, it->value, it->value_len), p += it->value_len;
  }
  int rc = index_content(&ns, "(in memory)", e);
  if (rc) {
    dp_secret_store_free(&ns);
    return rc;
  }
  ns.exists = st->exists;
  dp_secret_store_free(st);
  *st = ns;
  return 0;
}

int dp_secret_store_put(dp_secret_store *st, const char *name, const void *value, size_t len, int64_t now,
                        dp_err *e) {
  if (!dp_secret_name_valid(name))
    return dp_err_set(e, DP_EINVAL, "\"%s\" is not a secret name: use 1 to %d letters, digits, _, . and -",
                      name, DP_SECRET_NAME_MAX);
  if (len == 0) return dp_err_set(e, DP_EINVAL, "the value of secret %s is empty", name);
  if (len > DP_SECRET_VALUE_MAX)
    return dp_err_set(e, DP_EINVAL, "the value of secret %s is %zu bytes, over the %d-byte limit", name, len,
                      DP_SECRET_VALUE_MAX);
  return rebuild(st, name, value, len, now, e);
}

int dp_secret_store_remove(dp_secret_store *st, const char *name, dp_err *e) {
  if (!dp_secret_store_find(st, name)) return dp_err_set(e, DP_ENOTFOUND, "no secret named %s in the store", name);
  return rebuild(st, name, NULL, 0, 0, e);
}

int dp_secret_store_lock(const char *path, int *fd, dp_err *e) {
  char *lock = NULL, *dir = strdup(path);
  int rc = 0;
  *fd = -1;
  if (!dir || asprintf(&lock, "%s.lock", path) < 0) {
    lock = NULL;
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  rc = dp_mkdirs(dirname(dir), e);
  if (rc) goto cleanup;
  *fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (*fd < 0) {
    rc = dp_err_set(e, DP_EIO, "cannot open the lock file %s: %s", lock, strerror(errno));
    goto cleanup;
  }
  while (flock(*fd, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    rc = dp_err_set(e, DP_EIO, "cannot lock %s: %s", lock, strerror(errno));
    close(*fd);
    *fd = -1;
    goto cleanup;
  }
cleanup:
  free(lock);
  free(dir);
  return rc;
}

void dp_secret_store_unlock(int fd) {
  if (fd < 0) return;
  flock(fd, LOCK_UN);
  close(fd);
}
