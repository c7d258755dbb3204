/* bronze.c - raw JSON Lines -> MongoDB documents keyed by the key hash.
 *
 * Written for what a MongoDB wire server must do well, and what FerretDB v1 (our test and
 * home-server peer) does not: it pushes down to PostgreSQL only an equality on a string _id
 * (anything else it filters in its own process after reading the whole collection), and it
 * holds one pooled connection per statement of a command. And written to keep memory flat
 * however large an entity grows. So a load
 *   1. reads the run's raw file once and sorts its records by key hash (key, then valid_from,
 *      then line: the last record of a key wins), in memory or in sorted runs on disk;
 *   2. reads the stored keys (_id, content hash, deleted flag) in key order: from the key file
 *      the entity's last successful load wrote, or else from one read of the collection (sorted
 *      the same way);
 *   3. walks both in step, as two sorted streams: a new key is inserted (insert_many batches); a
 *      changed, or deleted and returned, key is replaced by _id (one statement per document, bulk
 *      writes of WBATCH); an unchanged key is not written at all; on a full load, a stored key the
 *      run did not deliver is marked deleted (likewise one update by _id each). The record of a
 *      written key is read again from the raw file at its offset;
 *   4. leaves what it wrote in the run's change file (silver's input) and writes the new key file
 *      along the way.
 * The writes go in batches, from the first full batch of new documents or the first replacement
 * or deletion on, to DP_BRONZE_WRITERS writer threads with connections of their own
 * (bronze_writers.c), so that the server works on two batches while the load compares on; a
 * batch reaches the change file, from the load's thread, once it is in MongoDB.
 * Every document written carries the run in _dp.run_id (deletions in _dp.deleted_run_id), which
 * is how silver finds what changed when a change file is missing. */
#include "config.h"
#include "bronze.h"
#include "bronze_writers.h"
#include "rawcompress.h"
#include "cast.h"
#include "extsort.h"
#include "hash.h"
#include "jsonbson.h"
#include "log.h"
#include "progress.h"
#include "rawfile.h"
#include "record.h"
#include "testhook.h"
#include "uuid.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define BATCH 1000    /* new documents per insert_many */
#define WBATCH 40     /* single-document statements (replace or mark deleted, by _id) in flight, over
                       * all writers: FerretDB v1 holds a pooled PostgreSQL connection per statement
                       * until the command ends, and its pool has 50 (docs/performance.md); a bulk
                       * write has WBATCH / DP_BRONZE_WRITERS */
#define BRONZE_WRITERS 2 /* connections inserting new documents (DP_BRONZE_WRITERS) */
#define SORT_MEM (16u << 20) /* bytes of records sorted in memory at a time (DP_SORT_MEM) */
#define KEYFILE_MAGIC "DPKEYS3\n" /* 3: the bronze _id is text (a key file of 2 is not used) */
#define KEYFILE_HEADER 128 /* magic, run id, '\n', count as 16 hex digits, '\n', collection uuid, '\n', padding */
#define CHASH 8           /* bytes of the content hash kept per key (of 16): a change goes
                           * unnoticed with probability 2^-64 */
#define VF_TEXT 28        /* room for a valid_from value as canonical text (NUL-padded) */

/* A stored key, as in the key file: 25 bytes. */
typedef struct stored {
  uint8_t key[16];
  uint8_t content[CHASH];
  uint8_t deleted;
} stored;
_Static_assert(sizeof(stored) == 16 + CHASH + 1, "a key file record is 25 bytes");

/* A record of the run, sorted by key, then valid_from, then line. */
typedef struct incoming {
  uint8_t key[16];
  uint8_t content[CHASH];
  char vf[VF_TEXT];   /* canonical text of the valid_from column; all zero when none */
  int64_t line;       /* 1-based */
  int64_t offset;     /* of the line in the raw file */
} incoming;

static int cmp_stored(const void *a, const void *b) { return memcmp(a, b, 16); }

static int cmp_incoming(const void *a, const void *b) {
  const incoming *x = a, *y = b;
  int c = memcmp(x->key, y->key, 16);
  if (c == 0) c = memcmp(x->vf, y->vf, VF_TEXT);
  if (c == 0) c = (x->line > y->line) - (x->line < y->line);
  return c;
}

typedef struct pending {
  bson_t *docs[BATCH];     /* owned until flushed */
  size_t n, limit;
  int replace;             /* 1: replace by _id, one statement each; 0: insert_many */
} pending;

typedef struct loader {
  mongoc_client_t *cli;
  const char *db;
  mongoc_collection_t *coll;
  dp_bronze_writers *writers; /* insert batches on more connections, once a load has many */
  int nwriters;            /* DP_BRONZE_WRITERS */
  const dp_entity *ent;
  const dp_runinfo *run;
  const char *raw_ref;
  pending ins, rep;
  uint8_t dels[WBATCH][16]; /* keys to mark deleted */
  size_t ndels;
  dp_counts *out;
  FILE *changes;           /* the change file being written, or NULL */
  FILE *keys_out;          /* the new key file being written, or NULL */
  uint64_t nkeys_out;
  char coll_uuid[37];      /* the collection's uuid ("" when the server does not say): a dropped and
                            * made again collection has another one, and the key file is not used */
  FILE *raw;               /* the run's raw file, read again for the records written */
  char *line;              /* the current line, without its newline */
  size_t linecap, linelen;
  int64_t lineno;          /* its number (1-based) ... */
  off_t linestart, at;     /* ... and offset; where the next one starts */
  dp_row row;
  char reason[sizeof(((dp_err *)0)->msg)]; /* why the current line was rejected */
  mongoc_collection_t *rej_coll;  /* <collection>__rejected, once a record was rejected */
  bson_t *rej[BATCH];              /* rejected records' references, not yet written (owned) */
  size_t nrej;
  int rej_cleared;                 /* this run's earlier rejects (a load run again) are gone */
  double write_s;          /* time spent in MongoDB writes (debug log) */
  int wrote;               /* something was written to MongoDB */
} loader;

/* A server's error message without its internals: FerretDB prefixes its Go call sites
 * ("[msg_insert.go:168 handler.(*Handler).MsgInsert] ") and PostgreSQL's codes ("(SQLSTATE 22P05)").
 * Writes into out (cap bytes) and returns it. */
const char *dp_bronze_server_msg(const bson_error_t *be, char *out, size_t cap) {
  const char *p = be->message;
  size_t k = 0;
  while (*p && k + 1 < cap) {
    if (*p == '[') { /* "[file.go:N ...]" */
      const char *close = strchr(p, ']');
      const char *go = strstr(p, ".go:");
      if (close && go && go < close) {
        p = close + 1;
        while (*p == ' ') p++;
        continue;
      }
    }
    if (strncmp(p, " (SQLSTATE ", 11) == 0 || strncmp(p, "(SQLSTATE ", 10) == 0) {
      const char *close = strchr(p, ')');
      if (close) {
        p = close + 1;
        continue;
      }
    }
    out[k++] = *p++;
  }
  out[k] = '\0';
  return out;
}
#define SERVER_MSG(be) DP_BRONZE_SERVER_MSG(be)

void dp_bronze_collection_name(const dp_entity *ent, char *buf, size_t cap) {
  snprintf(buf, cap, "%s__%s", ent->system, ent->name);
}

void dp_bronze_change_file(const char *dir, const char *run_id, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/%s.bson", dir, run_id);
}

/* DP_SORT_MEM and DP_BRONZE_WRITERS, read once per process; a bad value keeps the default and
 * is reported by dp_bronze_settings_init (main.c calls it at start, so a command fails on it). */
static struct {
  size_t sort_mem; /* bytes of records sorted in memory; more go to sorted runs on disk */
  int writers;     /* connections inserting new documents (1: the load's own, no threads) */
  dp_err err;      /* the first bad value */
} settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void read_settings(void) {
  settings.sort_mem = SORT_MEM;
  settings.writers = BRONZE_WRITERS;
  dp_err_clear(&settings.err);
  const char *v = dp_config_env("DP_SORT_MEM");
  char *end = NULL;
  if (v && *v) { /* digits only: strtoull alone takes " -1" (and wraps it) */
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (*v < '0' || *v > '9' || errno || *end || n == 0 || n > SIZE_MAX / 2)
      dp_err_set(&settings.err, DP_ECONFIG, "DP_SORT_MEM must be a number of bytes above 0 (it is \"%.40s\")", v);
    else
      settings.sort_mem = (size_t)n;
  }
  v = dp_config_env("DP_BRONZE_WRITERS");
  if (v && *v) {
    errno = 0;
    long n = strtol(v, &end, 10);
    if (*v < '0' || *v > '9' || errno || *end || n < 1 || n > 8) {
      if (!settings.err.code)
        dp_err_set(&settings.err, DP_ECONFIG, "DP_BRONZE_WRITERS must be a whole number from 1 to 8 (it is \"%.40s\")", v);
    } else {
      settings.writers = (int)n;
    }
  }
}

int dp_bronze_settings_init(dp_err *e) {
  pthread_once(&settings_once, read_settings);
  if (!settings.err.code) return 0;
  *e = settings.err;
  return e->code;
}

void dp_bronze_settings(size_t *sort_mem_bytes, int *writers) {
  pthread_once(&settings_once, read_settings);
  *sort_mem_bytes = settings.sort_mem;
  *writers = settings.writers;
}

static size_t sort_mem(void) {
  pthread_once(&settings_once, read_settings);
  return settings.sort_mem;
}

static int bronze_writers(void) {
  pthread_once(&settings_once, read_settings);
  return settings.writers;
}

static int64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int ensure_indexes(mongoc_collection_t *coll, dp_err *e) {
  bson_t cmd = BSON_INITIALIZER, idx, one, key;
  bson_error_t be;
  BSON_APPEND_UTF8(&cmd, "createIndexes", mongoc_collection_get_name(coll));
  BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &idx);
  BSON_APPEND_DOCUMENT_BEGIN(&idx, "0", &one);
  BSON_APPEND_DOCUMENT_BEGIN(&one, "key", &key);
  BSON_APPEND_INT32(&key, "_dp.run_id", 1);
  bson_append_document_end(&one, &key);
  BSON_APPEND_UTF8(&one, "name", "dp_run_id");
  bson_append_document_end(&idx, &one);
  bson_append_array_end(&cmd, &idx);
  bool ok = mongoc_collection_write_command_with_opts(coll, &cmd, NULL, NULL, &be);
  bson_destroy(&cmd);
  if (!ok) return dp_err_set(e, DP_EMONGO, "bronze: cannot create index: %s", SERVER_MSG(be));
  return 0;
}

/* The collection's uuid from listCollections, or "". */
static void collection_uuid(mongoc_client_t *cli, const char *db, const char *cname, char out[37]) {
  out[0] = '\0';
  mongoc_database_t *d = mongoc_client_get_database(cli, db);
  bson_t opts = BSON_INITIALIZER, filter;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "filter", &filter);
  BSON_APPEND_UTF8(&filter, "name", cname);
  bson_append_document_end(&opts, &filter);
  mongoc_cursor_t *cur = mongoc_database_find_collections_with_opts(d, &opts);
  const bson_t *doc;
  while (mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    const uint8_t *u = NULL;
    uint32_t len = 0;
    bson_subtype_t st;
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "info.uuid", &it) && BSON_ITER_HOLDS_BINARY(&it))
      bson_iter_binary(&it, &st, &len, &u);
    if (u && len == 16) dp_uuid_format(u, out);
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(&opts);
  mongoc_database_destroy(d);
}

void dp_bronze_append_id(bson_t *doc, const char *field, const uint8_t key[16]) {
  static const char hexd[] = "0123456789abcdef";
  char hex[DP_BRONZE_ID_LEN + 1];
  for (int i = 0; i < 16; i++) {
    hex[2 * i] = hexd[key[i] >> 4];
    hex[2 * i + 1] = hexd[key[i] & 15];
  }
  hex[DP_BRONZE_ID_LEN] = '\0';
  bson_append_utf8(doc, field, -1, hex, DP_BRONZE_ID_LEN);
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int dp_bronze_iter_id(const bson_iter_t *it, uint8_t key[16]) {
  uint32_t len = 0;
  if (BSON_ITER_HOLDS_UTF8(it)) {
    const char *s = bson_iter_utf8(it, &len);
    if (len != DP_BRONZE_ID_LEN) return 0;
    for (int i = 0; i < 16; i++) {
      int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
      if (hi < 0 || lo < 0) return 0;
      key[i] = (uint8_t)(hi << 4 | lo);
    }
    return DP_BRONZE_ID_TEXT;
  }
  if (BSON_ITER_HOLDS_BINARY(it)) { /* the form before 0.2: a binary UUID (subtype 4) */
    bson_subtype_t st;
    const uint8_t *id = NULL;
    bson_iter_binary(it, &st, &len, &id);
    if (!id || len != 16 || st != BSON_SUBTYPE_UUID) return 0;
    memcpy(key, id, 16);
    return DP_BRONZE_ID_BINARY;
  }
  return 0;
}

static bson_t *make_doc(loader *L, const uint8_t key[16], const uint8_t content[16], const bson_t *data,
                        int64_t line) {
  bson_t *doc = bson_new();
  bson_t dp, raw;
  dp_bronze_append_id(doc, "_id", key);
  BSON_APPEND_DOCUMENT(doc, "data", data);
  BSON_APPEND_DOCUMENT_BEGIN(doc, "_dp", &dp);
  BSON_APPEND_UTF8(&dp, "run_id", L->run->id_str);
  BSON_APPEND_DATE_TIME(&dp, "run_ts", L->run->ts_us / 1000);
  BSON_APPEND_DATE_TIME(&dp, "loaded_at", now_ms());
  BSON_APPEND_BINARY(&dp, "content_hash", BSON_SUBTYPE_BINARY, content, 16);
  BSON_APPEND_BOOL(&dp, "deleted", false);
  BSON_APPEND_DOCUMENT_BEGIN(&dp, "raw", &raw);
  BSON_APPEND_UTF8(&raw, "file", L->raw_ref);
  BSON_APPEND_INT64(&raw, "line", line);
  bson_append_document_end(&dp, &raw);
  bson_append_document_end(doc, &dp);
  return doc;
}

/* A batch written (on this thread or a writer's): into the change file, only now, so that it
 * holds only what MongoDB has. Frees the docs. */
static int written(void *ctx, dp_bronze_write_kind kind, bson_t **docs, size_t n, int ok, const bson_error_t *be,
                   double secs, dp_err *e) {
  static const char *const what[] = {"write documents", "replace documents", "mark deleted keys"};
  loader *L = ctx;
  int rc = 0;
  L->write_s += secs;
  dp_log(DP_LOG_DEBUG, "bronze: %zu %s in %.3f s", n,
         kind == DP_BRONZE_INSERT ? "inserts" : kind == DP_BRONZE_REPLACE ? "replacements" : "deletions marked", secs);
  if (!ok) rc = dp_err_set(e, DP_EMONGO, "bronze: cannot %s: %s", what[kind], DP_BRONZE_SERVER_MSG(*be));
  for (size_t i = 0; rc == 0 && L->changes && i < n; i++)
    if (fwrite(bson_get_data(docs[i]), 1, docs[i]->len, L->changes) != docs[i]->len)
      rc = dp_err_set(e, DP_EIO, "bronze: cannot write the change file: %s", strerror(errno));
  for (size_t i = 0; i < n; i++) bson_destroy(docs[i]);
  if (rc == 0) dp_test_pause("bronze"); /* crash tests: a batch is written, others are not */
  return rc;
}

/* Writes a batch (takes the docs): on writer threads once a load has a full batch of new
 * documents or any replacement or deletion (DP_BRONZE_WRITERS > 1: the load reads and compares
 * on meanwhile), else here. */
static int write_batch(loader *L, dp_bronze_write_kind kind, bson_t **docs, size_t n, int full, dp_err *e) {
  if (n == 0) return 0;
  L->wrote = 1;
  if (!L->writers && L->nwriters > 1 && (full || kind != DP_BRONZE_INSERT)) {
    L->writers = dp_bronze_writers_start(mongoc_client_get_uri(L->cli), L->db, mongoc_collection_get_name(L->coll),
                                         L->nwriters, e);
    if (!L->writers) {
      for (size_t i = 0; i < n; i++) bson_destroy(docs[i]);
      return DP_EMONGO;
    }
  }
  if (L->writers) return dp_bronze_writers_put(L->writers, kind, docs, n, written, L, e);
  bson_error_t be;
  double t0 = dp_monotonic();
  int ok = dp_bronze_write_batch(L->coll, kind, docs, n, &be);
  return written(L, kind, docs, n, ok, &be, dp_monotonic() - t0, e);
}

/* Every batch handed over written (and in the change file). */
static int drain_writers(loader *L, dp_err *e) {
  return L->writers ? dp_bronze_writers_drain(L->writers, written, L, e) : 0;
}

/* A pending batch: new documents (insert_many) or replacements (one statement per document by
 * _id). */
static int flush(loader *L, pending *p, dp_err *e) {
  size_t n = p->n;
  p->n = 0; /* the docs are write_batch's now */
  return write_batch(L, p->replace ? DP_BRONZE_REPLACE : DP_BRONZE_INSERT, p->docs, n, n == p->limit, e);
}

/* ---------- the stored keys, in key order ---------- */

typedef struct old_keys {
  FILE *f;         /* the key file, or */
  dp_extsort es;   /* the collection's keys, sorted */
  int sorted;
} old_keys;

static int old_next(old_keys *o, stored *out, dp_err *e) {
  if (o->f) {
    size_t got = fread(out, sizeof *out, 1, o->f);
    if (got == 1) return 1;
    return ferror(o->f) ? dp_err_set(e, DP_EIO, "bronze: cannot read the key file") : 0;
  }
  return o->sorted ? dp_extsort_next(&o->es, out, e) : 0;
}

/* Opens the key file at path when it was written by the load trusted_run for this very
 * collection and is whole and in order: 1 (o->f positioned at the first key), 0 when not (the
 * caller reads the collection), or an error. */
static int open_key_file(loader *L, old_keys *o, const char *path, const char *trusted_run, dp_err *e) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  char h[KEYFILE_HEADER];
  int used = 0;
  unsigned long long n = 0;
  size_t got = fread(h, 1, sizeof h, f);
  if (got >= 8 && memcmp(h, "DPKEYS", 6) == 0 && memcmp(h, KEYFILE_MAGIC, 8) != 0) {
    dp_log(DP_LOG_INFO, "bronze: %s is of another format version; reading the collection instead", path);
    goto done;
  }
  char hex[17] = "", *end = hex;
  if (got == sizeof h) {
    memcpy(hex, h + 45, 16); /* the header is not a C string: parse a copy */
    n = strtoull(hex, &end, 16);
  }
  if (got != sizeof h || memcmp(h, KEYFILE_MAGIC, 8) != 0 || h[44] != '\n' || end != hex + 16) {
    dp_log(DP_LOG_WARN, "bronze: %s is not a key file; reading the collection instead", path);
    goto done;
  }
  if (!trusted_run || strlen(trusted_run) != 36 || memcmp(h + 8, trusted_run, 36) != 0) goto done;
  if (strlen(L->coll_uuid) != 36 || memcmp(h + 62, L->coll_uuid, 36) != 0) {
    dp_log(DP_LOG_INFO, "bronze: the collection is not the one %s describes (dropped?); reading it", path);
    goto done;
  }
  if (fseeko(f, 0, SEEK_END) != 0 || ftello(f) != (off_t)(KEYFILE_HEADER + n * sizeof(stored)) ||
      fseeko(f, KEYFILE_HEADER, SEEK_SET) != 0) {
    dp_log(DP_LOG_WARN, "bronze: %s has the wrong size; reading the collection instead", path);
    goto done;
  }
  /* one pass to prove the order before trusting it: the merge relies on it */
  stored prev, cur;
  for (unsigned long long i = 0; i < n; i++) {
    if (fread(&cur, sizeof cur, 1, f) != 1 || (i > 0 && memcmp(cur.key, prev.key, 16) <= 0)) {
      dp_log(DP_LOG_WARN, "bronze: %s is damaged at key %llu; reading the collection instead", path, i);
      goto done;
    }
    prev = cur;
  }
  if (fseeko(f, KEYFILE_HEADER, SEEK_SET) != 0) goto done;
  setvbuf(f, NULL, _IOFBF, 1 << 16);
  o->f = f;
  f = NULL;
  used = 1;
done:
  if (f) fclose(f);
  (void)e;
  return used;
}

/* Otherwise: the collection's keys, content hashes and deleted flags, sorted by key. */
static int read_collection_keys(loader *L, old_keys *o, const char *tmpdir, dp_err *e) {
  int rc = dp_extsort_init(&o->es, sizeof(stored), cmp_stored, sort_mem(), tmpdir, e);
  if (rc) return rc;
  o->sorted = 1;
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "_id", 1);
  BSON_APPEND_INT32(&proj, "_dp.content_hash", 1);
  BSON_APPEND_INT32(&proj, "_dp.deleted", 1);
  bson_append_document_end(&opts, &proj);
  BSON_APPEND_INT32(&opts, "batchSize", 10000);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(L->coll, &filter, &opts, NULL);
  const bson_t *doc;
  while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it, ch;
    bson_subtype_t st;
    uint32_t len = 0;
    const uint8_t *h = NULL;
    stored k;
    memset(&k, 0, sizeof k);
    int form = bson_iter_init_find(&it, doc, "_id") ? dp_bronze_iter_id(&it, k.key) : 0;
    if (form == 0) continue; /* not one of ours */
    if (form == DP_BRONZE_ID_BINARY) { /* new documents would stand beside the old ones */
      rc = dp_err_set(e, DP_EMIGRATE,
                      "bronze: collection %s holds _ids of the binary form written before dp-engine 0.2: run "
                      "'dp-engine migrate --bronze-ids' once to convert it, or rebuild it with "
                      "'dp-engine replay SYSTEM --from raw' after dropping it (docs/storage.md)",
                      mongoc_collection_get_name(L->coll));
      break;
    }
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.content_hash", &ch) &&
        BSON_ITER_HOLDS_BINARY(&ch)) {
      bson_iter_binary(&ch, &st, &len, &h);
      if (h && len == 16) memcpy(k.content, h, CHASH);
    }
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.deleted", &ch) && BSON_ITER_HOLDS_BOOL(&ch))
      k.deleted = bson_iter_bool(&ch);
    rc = dp_extsort_add(&o->es, &k, e);
  }
  bson_error_t be;
  if (rc == 0 && mongoc_cursor_error(cur, &be))
    rc = dp_err_set(e, DP_EMONGO, "bronze: cannot read %s: %s", mongoc_collection_get_name(L->coll), SERVER_MSG(be));
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  return rc ? rc : dp_extsort_finish(&o->es, e);
}

static void old_close(old_keys *o) {
  if (o->f) fclose(o->f);
  if (o->sorted) dp_extsort_free(&o->es);
  memset(o, 0, sizeof *o);
}

/* The new key file: the header now (the count is filled in at the end), records as they come. */
static int key_file_begin(loader *L, const char *tmp, dp_err *e) {
  L->keys_out = fopen(tmp, "wb");
  if (!L->keys_out) return dp_err_set(e, DP_EIO, "bronze: cannot write %s: %s", tmp, strerror(errno));
  setvbuf(L->keys_out, NULL, _IOFBF, 1 << 16);
  char h[KEYFILE_HEADER];
  memset(h, ' ', sizeof h);
  fwrite(h, 1, sizeof h, L->keys_out);
  return 0;
}

static void key_file_put(loader *L, const uint8_t key[16], const uint8_t content[CHASH], int deleted) {
  if (!L->keys_out) return;
  stored k;
  memcpy(k.key, key, 16);
  memcpy(k.content, content, CHASH);
  k.deleted = (uint8_t)(deleted != 0);
  fwrite(&k, sizeof k, 1, L->keys_out);
  L->nkeys_out++;
}

static int key_file_end(loader *L, const char *tmp, const char *path, dp_err *e) {
  FILE *f = L->keys_out;
  L->keys_out = NULL;
  char h[KEYFILE_HEADER];
  memset(h, ' ', sizeof h);
  memcpy(h, KEYFILE_MAGIC, 8);
  memcpy(h + 8, L->run->id_str, 36);
  h[44] = '\n';
  char cnt[17];
  snprintf(cnt, sizeof cnt, "%016llx", (unsigned long long)L->nkeys_out);
  memcpy(h + 45, cnt, 16);
  h[61] = '\n';
  memcpy(h + 62, L->coll_uuid, strlen(L->coll_uuid));
  h[98] = '\n';
  h[KEYFILE_HEADER - 1] = '\n';
  int bad = ferror(f) | fflush(f);
  bad |= fseeko(f, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, f) != sizeof h;
  bad |= fflush(f) | fsync(fileno(f));
  bad |= fclose(f);
  if (bad || rename(tmp, path) != 0) {
    int err = errno;
    unlink(tmp);
    return dp_err_set(e, DP_EIO, "bronze: cannot write %s: %s", path, strerror(err));
  }
  return 0;
}

static int queue(loader *L, pending *p, bson_t *doc, dp_err *e) {
  p->docs[p->n++] = doc;
  return p->n == p->limit ? flush(L, p, e) : 0;
}

/* Keys a full load did not deliver: marked deleted, one update by _id each (a batch of at most
 * WBATCH), and their {_id, _dp: {deleted, deleted_run_id, deleted_at}} documents in the change
 * file. */
static int flush_deletions(loader *L, dp_err *e) {
  bson_t *docs[WBATCH];
  size_t n = L->ndels;
  for (size_t j = 0; j < n; j++) {
    bson_t *d = docs[j] = bson_new(), dp;
    dp_bronze_append_id(d, "_id", L->dels[j]);
    BSON_APPEND_DOCUMENT_BEGIN(d, "_dp", &dp);
    BSON_APPEND_BOOL(&dp, "deleted", true);
    BSON_APPEND_UTF8(&dp, "deleted_run_id", L->run->id_str);
    BSON_APPEND_DATE_TIME(&dp, "deleted_at", L->run->ts_us / 1000);
    bson_append_document_end(d, &dp);
  }
  L->ndels = 0;
  return write_batch(L, DP_BRONZE_MARK_DELETED, docs, n, 0, e);
}

/* Before the key file and the change file vouch for this load: its writes must be durable. With
 * the default write concern a server may acknowledge writes it then loses in a crash (a
 * standalone mongod's journal, a replica set's rollback), and a key file would then hide the gap
 * for good. One small journaled, majority write after them settles it: the journal and the oplog
 * are ordered, so everything before it is durable too. (FerretDB writes through PostgreSQL.) */
static int make_durable(loader *L, mongoc_client_t *cli, const char *db, const char *cname, dp_err *e) {
  if (!L->wrote) return 0;
  mongoc_collection_t *sync = mongoc_client_get_collection(cli, db, "_dp_sync");
  bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, opts = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&sel, "_id", cname);
  BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
  BSON_APPEND_UTF8(&set, "run_id", L->run->id_str);
  BSON_APPEND_DATE_TIME(&set, "at", now_ms());
  bson_append_document_end(&upd, &set);
  BSON_APPEND_BOOL(&opts, "upsert", true);
  mongoc_write_concern_t *wc = mongoc_write_concern_new();
  mongoc_write_concern_set_wmajority(wc, 0);
  mongoc_write_concern_set_journal(wc, true);
  mongoc_write_concern_append(wc, &opts);
  bson_error_t be;
  int rc = 0;
  if (!mongoc_collection_update_one(sync, &sel, &upd, &opts, NULL, &be))
    rc = dp_err_set(e, DP_EMONGO, "bronze: cannot make the writes of %s durable: %s", cname, SERVER_MSG(be));
  mongoc_write_concern_destroy(wc);
  bson_destroy(&sel);
  bson_destroy(&upd);
  bson_destroy(&opts);
  mongoc_collection_destroy(sync);
  return rc;
}

/* The document of key for the record at `offset` of the raw file (line number `line`), read again;
 * expect: the content hash (prefix) the first reading saw. */
static int doc_at(loader *L, const uint8_t key[16], const uint8_t expect[CHASH], int64_t offset, int64_t line,
                  bson_t **out, dp_err *e) {
  uint8_t content[16];
  if (fseeko(L->raw, offset, SEEK_SET) != 0)
    return dp_err_set(e, DP_EIO, "bronze: cannot read %s again: %s", L->raw_ref, strerror(errno));
  ssize_t len = getline(&L->line, &L->linecap, L->raw);
  if (len <= 0) return dp_err_set(e, DP_EIO, "bronze: %s changed while it was read", L->raw_ref);
  if (L->line[len - 1] == '\n') L->line[--len] = '\0';
  bson_t data;
  dp_err je;
  if (dp_json_to_bson(L->line, (size_t)len, &data, &je) != 0) {
    bson_destroy(&data);
    return dp_err_set(e, DP_EIO, "bronze: %s line %lld changed while it was read", L->raw_ref, (long long)line);
  }
  dp_hash_bytes(L->line, (size_t)len, content);
  if (memcmp(content, expect, CHASH) != 0) {
    bson_destroy(&data);
    return dp_err_set(e, DP_EIO, "bronze: %s line %lld changed while it was read", L->raw_ref, (long long)line);
  }
  *out = make_doc(L, key, content, &data, line);
  bson_destroy(&data);
  return 0;
}

/* The next non-empty line of the raw file, parsed into data: 1; 2 when it cannot be stored
 * (L->reason says why; data is empty); 0 at the end; or an error. */
static int next_line(loader *L, bson_t *data, dp_err *e) {
  ssize_t len;
  while ((len = getline(&L->line, &L->linecap, L->raw)) >= 0) { /* NUL bytes and all */
    L->linestart = L->at;
    L->at += len;
    L->lineno++;
    if (len > 0 && L->line[len - 1] == '\n') L->line[--len] = '\0';
    if (len == 0) continue;
    L->linelen = (size_t)len;
    dp_err je;
    if (dp_json_to_bson(L->line, (size_t)len, data, &je) != 0) {
      bson_destroy(data);
      bson_init(data);
      snprintf(L->reason, sizeof L->reason, "%s", je.msg);
      return 2;
    }
    return 1;
  }
  return ferror(L->raw) ? dp_err_set(e, DP_EIO, "bronze: cannot read %s", L->raw_ref) : 0;
}

/* The key, content hash and valid_from text of one raw line (data parsed from it). */
static int read_record(loader *L, const bson_t *data, incoming *in, int64_t lineno, dp_err *e) {
  const dp_entity *ent = L->ent;
  if (dp_row_cast(&L->row, ent, data, DP_ROW_KEY_ONLY, e)) {
    dp_err_prefix(e, "bronze: %s line %lld: primary key ", L->raw_ref, (long long)lineno);
    return DP_ECAST;
  }
  dp_row_hash(&L->row, ent, DP_HASH_KEY, in->key);
  memset(in->vf, 0, sizeof in->vf);
  int vc = ent->valid_from_col;
  if (vc >= 0) {
    /* the event time orders the records of a key; one that cannot be cast counts as oldest (silver
     * rejects it anyway) */
    const dp_column *c = &ent->cols[vc];
    bson_iter_t it, field; /* find_descendant takes plain and dotted paths alike */
    int found = bson_iter_init(&it, data) && bson_iter_find_descendant(&it, dp_row_path(&L->row, (size_t)vc), &field);
    dp_buf t = DP_BUF_INIT;
    int is_null = 0;
    dp_err ce;
    if (found && dp_cast_bson(c, &field, &t, &is_null, &ce) == 0 && !is_null && t.data)
      memcpy(in->vf, t.data, t.len < VF_TEXT - 1 ? t.len : VF_TEXT - 1);
    dp_buf_free(&t);
  }
  return 0;
}

void dp_bronze_rejects_collection_name(const dp_entity *ent, char *buf, size_t cap) {
  snprintf(buf, cap, "%s__%s__rejected", ent->system, ent->name);
}

/* Writes the rejected records' references kept so far. Frees them. */
static int flush_rejects(loader *L, dp_err *e) {
  int rc = 0;
  bson_error_t be;
  if (L->nrej == 0) return 0;
  if (!L->rej_cleared) { /* the same run's bronze load, run again, writes them again */
    bson_t sel = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&sel, "_dp.run_id", L->run->id_str);
    if (!mongoc_collection_delete_many(L->rej_coll, &sel, NULL, NULL, &be))
      rc = dp_err_set(e, DP_EMONGO, "bronze: cannot write rejected records: %s", SERVER_MSG(be));
    bson_destroy(&sel);
    L->rej_cleared = 1;
  }
  if (rc == 0) {
    bson_t opts = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&opts, "ordered", false);
    if (!mongoc_collection_insert_many(L->rej_coll, (const bson_t **)L->rej, L->nrej, &opts, NULL, &be))
      rc = dp_err_set(e, DP_EMONGO, "bronze: cannot write rejected records: %s", SERVER_MSG(be));
    bson_destroy(&opts);
  }
  for (size_t i = 0; i < L->nrej; i++) bson_destroy(L->rej[i]);
  L->nrej = 0;
  return rc;
}

/* A record bronze cannot store or key: with on_type_error "fail" the load fails; otherwise its
 * reference and the reason go to the <collection>__rejected collection (never the record itself:
 * it is in the raw file at that line) and the load goes on. */
static int reject_line(loader *L, mongoc_client_t *cli, const char *db, int64_t line, const char *reason, dp_err *e) {
  if (L->ent->fail_on_type_error)
    return dp_err_set(e, DP_EJSON, "bronze: %s line %lld: %s", L->raw_ref, (long long)line, reason);
  if (!L->rej_coll) {
    char rn[300];
    dp_bronze_rejects_collection_name(L->ent, rn, sizeof rn);
    L->rej_coll = mongoc_client_get_collection(cli, db, rn);
  }
  uint8_t id[16];
  dp_uuid_v7(id);
  bson_t *doc = bson_new(), dp, raw;
  BSON_APPEND_BINARY(doc, "_id", BSON_SUBTYPE_UUID, id, 16);
  BSON_APPEND_DOCUMENT_BEGIN(doc, "_dp", &dp);
  BSON_APPEND_UTF8(&dp, "run_id", L->run->id_str);
  BSON_APPEND_DATE_TIME(&dp, "run_ts", L->run->ts_us / 1000);
  BSON_APPEND_DATE_TIME(&dp, "rejected_at", now_ms());
  BSON_APPEND_UTF8(&dp, "reason", reason);
  BSON_APPEND_DOCUMENT_BEGIN(&dp, "raw", &raw);
  BSON_APPEND_UTF8(&raw, "file", L->raw_ref);
  BSON_APPEND_INT64(&raw, "line", line);
  bson_append_document_end(&dp, &raw);
  bson_append_document_end(doc, &dp);
  L->rej[L->nrej++] = doc;
  L->out->rejected++;
  dp_log(DP_LOG_DEBUG, "bronze: %s line %lld rejected: %s", L->raw_ref, (long long)line, reason);
  return L->nrej == BATCH ? flush_rejects(L, e) : 0;
}

/* ---------- a load, stage by stage ---------- */

/* One load: its loader, the stored keys and the run's sorted records, and its file names. */
typedef struct load {
  loader *L;
  mongoc_client_t *cli;
  const char *db;
  dp_bronze_io *io;
  char cname[256], keyfile[4096], keytmp[4200], changes[4096], changes_part[4200], tmpdir[4200];
  old_keys old;       /* stage 2's stream */
  dp_extsort news;    /* stage 1's stream */
  int have_news;
  double t_start;
} load;

/* Opens what a load writes to: the collection (with its index), the raw file, and in the state
 * folder the change file (.part until the load succeeded). */
static int load_open(load *S, const dp_entity *ent, const dp_runinfo *run, const char *raw_path,
                     const char *raw_ref, dp_counts *out, dp_err *e) {
  dp_bronze_io *io = S->io;
  dp_bronze_collection_name(ent, S->cname, sizeof S->cname);
  snprintf(S->tmpdir, sizeof S->tmpdir, "%s", io->dir ? io->dir : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp"));
  loader *L = S->L = calloc(1, sizeof *L);
  if (!L) return dp_err_set(e, DP_ENOMEM, "out of memory");
  L->cli = S->cli;
  L->db = S->db;
  L->nwriters = bronze_writers();
  L->coll = mongoc_client_get_collection(S->cli, S->db, S->cname);
  L->ent = ent;
  L->run = run;
  L->raw_ref = raw_ref;
  L->out = out;
  L->ins.limit = BATCH;
  L->rep.limit = WBATCH / (size_t)L->nwriters;
  L->rep.replace = 1;
  if (dp_row_init(&L->row, ent->ncols)) return dp_err_set(e, DP_ENOMEM, "out of memory");
  L->raw = dp_raw_fopen_read(raw_path, S->tmpdir); /* .jsonl or .jsonl.gz (rawcompress.h) */
  if (!L->raw) return dp_err_set(e, DP_EIO, "bronze: cannot open raw file %s: %s", raw_path, strerror(errno));
  if (io->dir) {
    int rc = dp_mkdirs(io->dir, e);
    if (rc) return rc;
    snprintf(S->keyfile, sizeof S->keyfile, "%s/keys.idx", io->dir);
    snprintf(S->keytmp, sizeof S->keytmp, "%s.tmp", S->keyfile);
    dp_bronze_change_file(io->dir, run->id_str, S->changes, sizeof S->changes);
    snprintf(S->changes_part, sizeof S->changes_part, "%s.part", S->changes);
    L->changes = fopen(S->changes_part, "wb");
    if (!L->changes) return dp_err_set(e, DP_EIO, "bronze: cannot create %s: %s", S->changes_part, strerror(errno));
  }
  return ensure_indexes(L->coll, e);
}

/* Without a primary key: every record is appended under a new id, in file order. */
static int append_records(load *S, dp_err *e) {
  loader *L = S->L;
  bson_t data;
  int more, rc = 0;
  while ((more = next_line(L, &data, e)) >= 1) {
    L->out->in++;
    if (more == 2) {
      bson_destroy(&data);
      if ((rc = reject_line(L, S->cli, S->db, L->lineno, L->reason, e)) != 0) return rc;
      continue;
    }
    uint8_t key[16], content[16];
    dp_hash_bytes(L->line, L->linelen, content);
    dp_uuid_v7(key);
    L->out->inserted++;
    dp_progress_add(1, "records");
    rc = queue(L, &L->ins, make_doc(L, key, content, &data, L->lineno), e);
    bson_destroy(&data);
    if (rc) return rc;
  }
  return more < 0 ? more : 0;
}

/* Stage 1: the run's records, sorted by key (then valid_from, then line). */
static int sort_run(load *S, dp_err *e) {
  loader *L = S->L;
  int rc = dp_extsort_init(&S->news, sizeof(incoming), cmp_incoming, sort_mem(), S->tmpdir, e);
  if (rc) return rc;
  S->have_news = 1;
  bson_t data;
  int more;
  while ((more = next_line(L, &data, e)) >= 1) {
    L->out->in++;
    if (more == 2) {
      bson_destroy(&data);
      if ((rc = reject_line(L, S->cli, S->db, L->lineno, L->reason, e)) != 0) return rc;
      continue;
    }
    incoming in;
    memset(&in, 0, sizeof in); /* padding too: records go to disk whole */
    uint8_t content[16];
    dp_hash_bytes(L->line, L->linelen, content);
    memcpy(in.content, content, CHASH);
    in.line = L->lineno;
    in.offset = L->linestart;
    rc = read_record(L, &data, &in, L->lineno, e);
    bson_destroy(&data);
    if (rc == DP_ECAST && !L->ent->fail_on_type_error) { /* no key, no place in bronze */
      if ((rc = reject_line(L, S->cli, S->db, L->lineno, e->msg, e)) != 0) return rc;
      continue;
    }
    if (rc == 0) rc = dp_extsort_add(&S->news, &in, e);
    if (rc) return rc;
    dp_progress_add(1, "records read");
  }
  return more < 0 ? more : dp_extsort_finish(&S->news, e);
}

/* Stage 2: the stored keys, in key order, from the key file or the collection; and the new key
 * file begun. */
static int open_stored_keys(load *S, dp_err *e) {
  loader *L = S->L;
  dp_bronze_io *io = S->io;
  if (S->keyfile[0]) collection_uuid(S->cli, S->db, S->cname, L->coll_uuid);
  int rc = S->keyfile[0] ? open_key_file(L, &S->old, S->keyfile, io->trusted_run, e) : 0;
  if (rc < 0) return rc;
  io->used_key_file = rc == 1;
  if (!io->used_key_file && (rc = read_collection_keys(L, &S->old, S->tmpdir, e)) < 0) return rc;
  dp_log(DP_LOG_DEBUG, "bronze %s: stored keys from %s", S->cname, io->used_key_file ? "the key file" : "the collection");
  return S->keyfile[0] && L->coll_uuid[0] ? key_file_begin(L, S->keytmp, e) : 0;
}

/* Stage 3: both streams in step. Of the records of one key the last (in sort order) wins; a new
 * key is inserted, a changed or returning one replaced, an unchanged one left alone, and on a
 * full load a stored key the run lacks is marked deleted. */
static int merge_streams(load *S, dp_err *e) {
  loader *L = S->L;
  const dp_entity *ent = L->ent;
  dp_counts *out = L->out;
  stored o;
  incoming n, peek;
  int rc = 0, ho = old_next(&S->old, &o, e), hp = dp_extsort_next(&S->news, &peek, e), hn = 0;
  if (ho < 0 || hp < 0) return ho < 0 ? ho : hp;
  for (;;) {
    if (!hn && hp == 1) { /* the next key of the run: its last record wins */
      n = peek;
      while ((hp = dp_extsort_next(&S->news, &peek, e)) == 1 && memcmp(peek.key, n.key, 16) == 0) {
        n = peek;
        S->io->duplicates++;
      }
      if (hp < 0) return hp;
      hn = 1;
    }
    if (!ho && !hn) break;
    dp_progress_add(1, "keys compared");
    int c = !ho ? 1 : !hn ? -1 : memcmp(o.key, n.key, 16);
    if (c < 0) { /* stored, not in the run: deleted by a full load */
      if (ent->full_load && !o.deleted) {
        memcpy(L->dels[L->ndels++], o.key, 16);
        out->deleted++;
        o.deleted = 1;
        if (L->ndels == L->rep.limit && (rc = flush_deletions(L, e)) != 0) return rc;
      }
      key_file_put(L, o.key, o.content, o.deleted);
      if ((ho = old_next(&S->old, &o, e)) < 0) return ho;
      continue;
    }
    if (c == 0 && !o.deleted && memcmp(o.content, n.content, CHASH) == 0) {
      out->unchanged++;
      key_file_put(L, o.key, o.content, 0);
    } else { /* new (c > 0), or changed or back from deleted (c == 0) */
      bson_t *doc = NULL;
      if ((rc = doc_at(L, n.key, n.content, n.offset, n.line, &doc, e)) != 0) return rc;
      if (c == 0) out->updated++;
      else out->inserted++;
      key_file_put(L, n.key, n.content, 0);
      if ((rc = queue(L, c == 0 ? &L->rep : &L->ins, doc, e)) != 0) return rc;
    }
    if (c == 0 && (ho = old_next(&S->old, &o, e)) < 0) return ho;
    hn = 0;
  }
  if (S->io->duplicates)
    dp_log(DP_LOG_WARN, "bronze %s: %lld records repeated a key of this run; the %s of each key was kept", S->cname,
           (long long)S->io->duplicates,
           ent->valid_from_col >= 0 ? "latest by valid_from (then the last line)" : "last one");
  return 0;
}

/* What is still queued: inserts, replacements, deletion marks, rejects. */
static int flush_all(load *S, dp_err *e) {
  loader *L = S->L;
  int rc = flush(L, &L->ins, e);
  if (rc == 0) rc = flush(L, &L->rep, e);
  if (rc == 0) rc = flush_deletions(L, e);
  if (rc == 0) rc = drain_writers(L, e); /* every batch in MongoDB and in the change file */
  if (rc == 0) rc = flush_rejects(L, e);
  return rc;
}

/* Nothing lost: every record of the raw file was stored, found unchanged, repeated a key, or
 * rejected with its reason. */
static int check_accounts(load *S, dp_err *e) {
  const dp_counts *out = S->L->out;
  long long kept = out->inserted + out->updated + out->unchanged + out->rejected + S->io->duplicates;
  dp_log(DP_LOG_DEBUG, "bronze %s: %.3f s of MongoDB writes (added up over its connections) in %.3f s", S->cname, S->L->write_s,
         dp_monotonic() - S->t_start);
  if (out->in != kept)
    return dp_err_set(e, DP_EIO, "bronze %s: %lld records read but %lld accounted for (a bug: please report it)",
                      S->cname, (long long)out->in, kept);
  return 0;
}

/* The writes made durable, then the key file, then the change file: each gets its final name
 * only when all before it worked (and the audit, written after this, is what makes either
 * trusted). */
static int commit_files(load *S, dp_err *e) {
  loader *L = S->L;
  int rc = make_durable(L, S->cli, S->db, S->cname, e);
  if (rc == 0 && L->keys_out) rc = key_file_end(L, S->keytmp, S->keyfile, e);
  else if (rc == 0 && S->keyfile[0] && L->ent->npk > 0) unlink(S->keyfile); /* no uuid to tell the collection by */
  if (rc == 0 && L->changes) { /* the change file, complete: silver's input */
    FILE *c = L->changes;
    L->changes = NULL;
    int bad = fflush(c) | fsync(fileno(c));
    bad |= fclose(c);
    if (bad || rename(S->changes_part, S->changes) != 0) {
      rc = dp_err_set(e, DP_EIO, "bronze: cannot write %s: %s", S->changes, strerror(errno));
      unlink(S->changes_part);
    }
  }
  if (rc == 0 && S->io->dir) rc = dp_fsync_dir_of(S->changes[0] ? S->changes : S->keyfile, e);
  return rc;
}

/* Frees the load; a failed one (rc != 0) leaves no rejects, no change file and no key file. */
static void load_close(load *S, int rc) {
  loader *L = S->L;
  if (L) {
    if (L->writers) { /* a failed load: what the writers still have is waited for and freed */
      dp_err ignored;
      drain_writers(L, &ignored);
      dp_bronze_writers_stop(L->writers);
    }
    if (rc != 0 && L->rej_coll && (L->rej_cleared || L->nrej)) {
      /* the next load rejects those lines again (best effort: a rejected line counted twice is a
       * smaller harm than the error this would hide) */
      bson_t sel = BSON_INITIALIZER;
      BSON_APPEND_UTF8(&sel, "_dp.run_id", L->run->id_str);
      mongoc_collection_delete_many(L->rej_coll, &sel, NULL, NULL, NULL);
      bson_destroy(&sel);
    }
    if (L->changes) { /* silver reads the collection instead */
      fclose(L->changes);
      unlink(S->changes_part);
    }
    if (L->keys_out) {
      fclose(L->keys_out);
      unlink(S->keytmp);
    }
    for (size_t i = 0; i < L->ins.n; i++) bson_destroy(L->ins.docs[i]);
    for (size_t i = 0; i < L->rep.n; i++) bson_destroy(L->rep.docs[i]);
    for (size_t i = 0; i < L->nrej; i++) bson_destroy(L->rej[i]);
    if (L->rej_coll) mongoc_collection_destroy(L->rej_coll);
    if (L->raw) fclose(L->raw);
    free(L->line);
    dp_row_free(&L->row);
    if (L->coll) mongoc_collection_destroy(L->coll);
    free(L);
  }
  old_close(&S->old);
  if (S->have_news) dp_extsort_free(&S->news);
  free(S);
}

int dp_bronze_load(mongoc_client_t *cli, const char *db, const dp_entity *ent, const dp_runinfo *run,
                   const char *raw_path, const char *raw_ref, dp_bronze_io *io, dp_counts *out, dp_err *e) {
  memset(out, 0, sizeof *out);
  io->duplicates = 0;
  io->used_key_file = 0;
  load *S = calloc(1, sizeof *S);
  if (!S) return dp_err_set(e, DP_ENOMEM, "out of memory");
  S->cli = cli;
  S->db = db;
  S->io = io;
  S->t_start = dp_monotonic();
  int rc = load_open(S, ent, run, raw_path, raw_ref, out, e);
  if (rc == 0 && ent->npk == 0) rc = append_records(S, e);
  if (rc == 0 && ent->npk > 0) rc = sort_run(S, e);         /* 1. the run's records, by key */
  if (rc == 0 && ent->npk > 0) rc = open_stored_keys(S, e); /* 2. the stored keys, by key */
  if (rc == 0 && ent->npk > 0) rc = merge_streams(S, e);    /* 3. both in step */
  if (rc == 0) rc = flush_all(S, e);
  if (rc == 0) rc = check_accounts(S, e);
  if (rc == 0) rc = commit_files(S, e);                     /* 4. durable, then the files */
  load_close(S, rc);
  return rc;
}
