/* bronze.c - raw JSON Lines -> MongoDB documents keyed by the key hash.
 *
 * Written for what a MongoDB wire server must do well, and what FerretDB v1 (our test and
 * home-server peer) does not: it filters most queries in its own process after reading the
 * whole collection, and a multi-statement update command can stall it. So a load:
 *   1. gets the stored keys (_id, content hash, deleted flag) as a sorted index in memory
 *      (25 bytes per stored key, plus 4-5 per key this run adds): from the key file the entity's last successful load wrote, or
 *      else by reading the collection once;
 *   2. streams the raw file: a new key is inserted (insert_many batches); a changed, or deleted
 *      and returned, key is replaced (delete_many + insert_many of the batch); an unchanged key
 *      is not written at all;
 *   3. on a full load, marks the keys this run did not see as deleted (one update_many per batch);
 *   4. leaves what it wrote in the run's change file (silver's input) and rewrites the key file.
 * Every document written carries the run in _dp.run_id (deletions in _dp.deleted_run_id), which
 * is how silver finds what changed when a change file is missing. */
#include "bronze.h"
#include "hash.h"
#include "log.h"
#include "rawfile.h"
#include "record.h"
#include "testhook.h"
#include "uuid.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BATCH 1000    /* new documents per insert_many */
#define RBATCH 10000  /* replaced or deleted ids per delete_many / update_many: each one costs
                       * FerretDB v1 a read of the whole collection, so fewer and larger */
#define KEYFILE_MAGIC "DPKEYS2\n"
#define KEYFILE_HEADER 128 /* magic, run id, '\n', count as 16 hex digits, '\n', collection uuid, '\n', padding */
#define CHASH 8           /* bytes of the content hash kept per key (of 16): a change goes
                           * unnoticed with probability 2^-64, and 5,000,000 keys fit in 125 MB */
#define KEYFILE_REC (16 + CHASH + 1) /* key, content hash, deleted flag */

typedef struct known {  /* 25 bytes */
  uint8_t key[16];
  uint8_t content[CHASH];
  uint8_t deleted : 1;
  uint8_t seen : 1;       /* this run delivered the key */
} known;
_Static_assert(sizeof(known) == 16 + CHASH + 1, "a key index entry is 25 bytes");

typedef struct key_index {
  known *v;         /* owned */
  size_t n, cap;
  size_t sorted;    /* v[0..sorted) is in key order; later entries were added this run */
  uint32_t *slots;  /* hash table over the added entries: index + 1, 0 = empty (owned) */
  size_t nslots;    /* a power of two */
} key_index;

typedef struct pending {
  bson_t *docs[RBATCH];    /* owned until flushed */
  uint8_t ids[RBATCH][16]; /* keys to delete first (replacements) */
  size_t n, limit;
  int replace;             /* 1: delete the ids before inserting */
} pending;

typedef struct loader {
  mongoc_collection_t *coll;
  const dp_entity *ent;
  const dp_runinfo *run;
  const char *raw_ref;
  key_index idx;
  pending ins, rep;
  int64_t duplicates;
  dp_counts *out;
  FILE *changes;    /* the change file being written, or NULL */
  char coll_uuid[37]; /* the collection's uuid ("" when the server does not say): a dropped and
                       * made again collection has another one, and the key file is not used */
} loader;

void dp_bronze_change_file(const char *dir, const char *run_id, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/%s.bson", dir, run_id);
}

void dp_bronze_collection_name(const dp_entity *ent, char *buf, size_t cap) {
  snprintf(buf, cap, "%s__%s", ent->system, ent->name);
}

static double mono_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int cmp_known(const void *a, const void *b) { return memcmp(a, b, 16); }

static void swap_known(known *a, known *b) {
  known t = *a;
  *a = *b;
  *b = t;
}

/* Sorts v[0..n) by key in place: glibc's qsort would allocate a second copy of the index (the
 * memory this index is built to keep small). The keys are hashes, so a middle pivot is as good as
 * any; the smaller side is sorted first by recursion, the larger one by the loop (depth log n). */
static void sort_known(known *v, size_t n) {
  while (n > 16) {
    swap_known(&v[n / 2], &v[n - 1]);
    size_t lo = 0;
    for (size_t i = 0; i + 1 < n; i++)
      if (memcmp(v[i].key, v[n - 1].key, 16) < 0) swap_known(&v[i], &v[lo++]);
    swap_known(&v[lo], &v[n - 1]);
    if (lo < n - lo - 1) {
      sort_known(v, lo);
      v += lo + 1;
      n -= lo + 1;
    } else {
      sort_known(v + lo + 1, n - lo - 1);
      n = lo;
    }
  }
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && memcmp(v[j - 1].key, v[j].key, 16) > 0; j--) swap_known(&v[j - 1], &v[j]);
}

static size_t slot_of(const uint8_t key[16], size_t nslots) {
  uint64_t h;
  memcpy(&h, key, 8); /* the key is already a hash */
  return (size_t)h & (nslots - 1);
}

static known *find_known(key_index *ix, const uint8_t key[16]) {
  known *k = bsearch(key, ix->v, ix->sorted, sizeof *ix->v, cmp_known);
  if (k || !ix->nslots) return k;
  for (size_t s = slot_of(key, ix->nslots); ix->slots[s]; s = (s + 1) & (ix->nslots - 1))
    if (memcmp(ix->v[ix->slots[s] - 1].key, key, 16) == 0) return &ix->v[ix->slots[s] - 1];
  return NULL;
}

/* Puts the entry v[i] (added this run, key set) in the hash table, growing it at 3/4 load. */
static int hash_added(key_index *ix, size_t i, dp_err *e) {
  size_t added = i - ix->sorted + 1;
  if (i + 1 >= UINT32_MAX) return dp_err_set(e, DP_ENOMEM, "bronze: more than 4 billion keys");
  if (added * 4 > ix->nslots * 3) {
    size_t n = ix->nslots ? ix->nslots * 2 : 4096;
    uint32_t *slots = calloc(n, sizeof *slots);
    if (!slots) return dp_err_set(e, DP_ENOMEM, "bronze: out of memory for the key index");
    for (size_t j = ix->sorted; j < i; j++) {
      size_t s = slot_of(ix->v[j].key, n);
      while (slots[s]) s = (s + 1) & (n - 1);
      slots[s] = (uint32_t)(j + 1);
    }
    free(ix->slots);
    ix->slots = slots;
    ix->nslots = n;
  }
  size_t s = slot_of(ix->v[i].key, ix->nslots);
  while (ix->slots[s]) s = (s + 1) & (ix->nslots - 1);
  ix->slots[s] = (uint32_t)(i + 1);
  return 0;
}

static known *add_known(key_index *ix, dp_err *e) {
  if (ix->n == ix->cap) {
    size_t cap = ix->cap ? ix->cap * 2 : 1024;
    known *p = realloc(ix->v, cap * sizeof *p);
    if (!p) { dp_err_set(e, DP_ENOMEM, "bronze: out of memory for the key index"); return NULL; }
    ix->v = p;
    ix->cap = cap;
  }
  known *k = &ix->v[ix->n++];
  memset(k, 0, sizeof *k);
  return k;
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
  if (!ok) return dp_err_set(e, DP_EMONGO, "bronze: cannot create index: %s", be.message);
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

/* Step 1, from the key file at path when it was written by the load trusted_run: 1 when it
 * was used, 0 when not (missing, another load's, damaged: the caller reads the collection). */
static int read_key_file(loader *L, const char *path, const char *trusted_run, dp_err *e) {
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
  if (got != sizeof h || memcmp(h, KEYFILE_MAGIC, 8) != 0 || h[44] != '\n' || sscanf(h + 45, "%16llx", &n) != 1) {
    dp_log(DP_LOG_WARN, "bronze: %s is not a key file; reading the collection instead", path);
    goto done;
  }
  if (!trusted_run || strlen(trusted_run) != 36 || memcmp(h + 8, trusted_run, 36) != 0) goto done;
  if (strlen(L->coll_uuid) != 36 || memcmp(h + 62, L->coll_uuid, 36) != 0) {
    dp_log(DP_LOG_INFO, "bronze: the collection is not the one %s describes (dropped?); reading it", path);
    goto done;
  }
  if (fseek(f, 0, SEEK_END) != 0 || ftell(f) != (long)(KEYFILE_HEADER + n * KEYFILE_REC) ||
      fseek(f, KEYFILE_HEADER, SEEK_SET) != 0) {
    dp_log(DP_LOG_WARN, "bronze: %s has the wrong size; reading the collection instead", path);
    goto done;
  }
  L->idx.cap = (size_t)n + 1024;
  L->idx.v = malloc(L->idx.cap * sizeof *L->idx.v);
  if (!L->idx.v) {
    dp_err_set(e, DP_ENOMEM, "bronze: out of memory for the key index");
    used = -1;
    goto done;
  }
  uint8_t rec[KEYFILE_REC];
  for (size_t i = 0; i < n; i++) {
    if (fread(rec, 1, sizeof rec, f) != sizeof rec ||
        (i > 0 && memcmp(rec, L->idx.v[i - 1].key, 16) <= 0)) {
      dp_log(DP_LOG_WARN, "bronze: %s is damaged at key %zu; reading the collection instead", path, i);
      L->idx.n = 0;
      goto done;
    }
    known *k = &L->idx.v[i];
    memcpy(k->key, rec, 16);
    memcpy(k->content, rec + 16, CHASH);
    k->deleted = rec[16 + CHASH] & 1;
    k->seen = 0;
    L->idx.n = i + 1;
  }
  L->idx.sorted = L->idx.n;
  used = 1;
done:
  fclose(f);
  return used;
}

/* Step 4: the index as it is now, sorted by key, to path (through a temporary file). */
static int write_key_file(loader *L, const char *path, dp_err *e) {
  key_index *ix = &L->idx;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  sort_known(ix->v + ix->sorted, ix->n - ix->sorted);
  FILE *f = fopen(tmp, "wb");
  if (!f) return dp_err_set(e, DP_EIO, "bronze: cannot write %s: %s", tmp, strerror(errno));
  char h[KEYFILE_HEADER];
  memset(h, ' ', sizeof h);
  memcpy(h, KEYFILE_MAGIC, 8);
  memcpy(h + 8, L->run->id_str, 36);
  h[44] = '\n';
  char cnt[17];
  snprintf(cnt, sizeof cnt, "%016llx", (unsigned long long)ix->n);
  memcpy(h + 45, cnt, 16);
  h[61] = '\n';
  memcpy(h + 62, L->coll_uuid, strlen(L->coll_uuid));
  h[98] = '\n';
  h[KEYFILE_HEADER - 1] = '\n';
  fwrite(h, 1, sizeof h, f);
  /* merge the keys known before this run with those it added */
  size_t a = 0, b = ix->sorted;
  uint8_t rec[KEYFILE_REC];
  while (a < ix->sorted || b < ix->n) {
    known *k = b >= ix->n || (a < ix->sorted && memcmp(ix->v[a].key, ix->v[b].key, 16) < 0) ? &ix->v[a++]
                                                                                              : &ix->v[b++];
    memcpy(rec, k->key, 16);
    memcpy(rec + 16, k->content, CHASH);
    rec[16 + CHASH] = k->deleted;
    fwrite(rec, 1, sizeof rec, f);
  }
  int bad = ferror(f) | fflush(f) | fsync(fileno(f));
  bad |= fclose(f);
  if (bad || rename(tmp, path) != 0) {
    int err = errno;
    unlink(tmp);
    return dp_err_set(e, DP_EIO, "bronze: cannot write %s: %s", path, strerror(err));
  }
  return 0;
}

/* Step 1 otherwise: the stored keys, their content hashes and deleted flags, sorted by key. */
static int load_index(loader *L, dp_err *e) {
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "_id", 1);
  BSON_APPEND_INT32(&proj, "_dp.content_hash", 1);
  BSON_APPEND_INT32(&proj, "_dp.deleted", 1);
  bson_append_document_end(&opts, &proj);
  BSON_APPEND_INT32(&opts, "batchSize", 10000);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(L->coll, &filter, &opts, NULL);
  const bson_t *doc;
  int rc = 0;
  while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it, ch;
    bson_subtype_t st;
    uint32_t len = 0;
    const uint8_t *id = NULL, *h = NULL;
    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_BINARY(&it)) bson_iter_binary(&it, &st, &len, &id);
    if (!id || len != 16) continue; /* not one of ours */
    known *k = add_known(&L->idx, e);
    if (!k) { rc = DP_ENOMEM; break; }
    memcpy(k->key, id, 16);
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.content_hash", &ch) &&
        BSON_ITER_HOLDS_BINARY(&ch)) {
      bson_iter_binary(&ch, &st, &len, &h);
      if (h && len == 16) memcpy(k->content, h, CHASH);
    }
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_dp.deleted", &ch) && BSON_ITER_HOLDS_BOOL(&ch))
      k->deleted = bson_iter_bool(&ch);
  }
  bson_error_t be;
  if (rc == 0 && mongoc_cursor_error(cur, &be))
    rc = dp_err_set(e, DP_EMONGO, "bronze: cannot read %s: %s", mongoc_collection_get_name(L->coll), be.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  if (rc == 0) {
    sort_known(L->idx.v, L->idx.n);
    L->idx.sorted = L->idx.n;
  }
  return rc;
}

static bson_t *make_doc(loader *L, const uint8_t key[16], const uint8_t content[16], const bson_t *data,
                        int64_t line) {
  bson_t *doc = bson_new();
  bson_t dp, raw;
  BSON_APPEND_BINARY(doc, "_id", BSON_SUBTYPE_UUID, key, 16);
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

static void append_id_array(bson_t *parent, const char *op, uint8_t (*ids)[16], size_t n) {
  bson_t idf, in;
  BSON_APPEND_DOCUMENT_BEGIN(parent, "_id", &idf);
  BSON_APPEND_ARRAY_BEGIN(&idf, op, &in);
  for (size_t i = 0; i < n; i++) {
    char ix[16];
    const char *k;
    bson_uint32_to_string((uint32_t)i, &k, ix, sizeof ix);
    bson_append_binary(&in, k, -1, BSON_SUBTYPE_UUID, ids[i], 16);
  }
  bson_append_array_end(&idf, &in);
  bson_append_document_end(parent, &idf);
}

/* Writes a pending batch: for replacements, the old documents go first. Frees the docs. */
static int flush(loader *L, pending *p, dp_err *e) {
  int rc = 0;
  bson_error_t be;
  if (p->n == 0) return 0;
  double t0 = mono_s(), t1 = t0;
  if (p->replace) {
    bson_t sel = BSON_INITIALIZER;
    append_id_array(&sel, "$in", p->ids, p->n);
    if (!mongoc_collection_delete_many(L->coll, &sel, NULL, NULL, &be))
      rc = dp_err_set(e, DP_EMONGO, "bronze: cannot replace documents: %s", be.message);
    bson_destroy(&sel);
    t1 = mono_s();
  }
  if (rc == 0) {
    bson_t opts = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&opts, "ordered", false);
    if (!mongoc_collection_insert_many(L->coll, (const bson_t **)p->docs, p->n, &opts, NULL, &be))
      rc = dp_err_set(e, DP_EMONGO, "bronze: cannot write documents: %s", be.message);
    bson_destroy(&opts);
  }
  /* where a load's time goes (docs/performance.md) */
  if (p->replace) dp_log(DP_LOG_DEBUG, "bronze: %zu replacements: delete %.3f s, insert %.3f s", p->n, t1 - t0, mono_s() - t1);
  for (size_t i = 0; rc == 0 && L->changes && i < p->n; i++)
    if (fwrite(bson_get_data(p->docs[i]), 1, p->docs[i]->len, L->changes) != p->docs[i]->len)
      rc = dp_err_set(e, DP_EIO, "bronze: cannot write the change file: %s", strerror(errno));
  for (size_t i = 0; i < p->n; i++) bson_destroy(p->docs[i]);
  p->n = 0;
  if (rc == 0) dp_test_pause("bronze"); /* crash tests: a batch is written, others are not */
  return rc;
}

static int queue(loader *L, pending *p, bson_t *doc, const uint8_t key[16], dp_err *e) {
  memcpy(p->ids[p->n], key, 16);
  p->docs[p->n++] = doc;
  return p->n == p->limit ? flush(L, p, e) : 0;
}

/* Step 2, one record. */
static int take(loader *L, const bson_t *data, const uint8_t key[16], const uint8_t content[16], int64_t line,
                dp_err *e) {
  known *k = find_known(&L->idx, key);
  if (k && k->seen) {
    /* The same key twice in one run: the last record wins. Write what is queued first, so the
     * later record replaces the earlier one in order. */
    L->duplicates++;
    if (memcmp(k->content, content, CHASH) == 0) return 0;
    int rc = flush(L, &L->ins, e);
    if (rc == 0) rc = flush(L, &L->rep, e);
    if (rc) return rc;
    memcpy(k->content, content, CHASH);
    return queue(L, &L->rep, make_doc(L, key, content, data, line), key, e);
  }
  if (!k) {
    k = add_known(&L->idx, e);
    if (!k) return DP_ENOMEM;
    memcpy(k->key, key, 16);
    memcpy(k->content, content, CHASH);
    k->seen = 1;
    int rc = hash_added(&L->idx, (size_t)(k - L->idx.v), e);
    if (rc) return rc;
    L->out->inserted++;
    return queue(L, &L->ins, make_doc(L, key, content, data, line), key, e);
  }
  k->seen = 1;
  if (!k->deleted && memcmp(k->content, content, CHASH) == 0) {
    L->out->unchanged++;
    return 0;
  }
  memcpy(k->content, content, CHASH);
  k->deleted = 0;
  L->out->updated++;
  return queue(L, &L->rep, make_doc(L, key, content, data, line), key, e);
}

/* Step 3 (full loads): keys this run did not deliver are marked deleted. */
static int mark_deleted(loader *L, dp_err *e) {
  uint8_t (*ids)[16] = malloc(RBATCH * 16);
  size_t n = 0;
  int rc = 0;
  if (!ids) return dp_err_set(e, DP_ENOMEM, "out of memory");
  for (size_t i = 0; i <= L->idx.sorted && rc == 0; i++) {
    int last = i == L->idx.sorted;
    if (!last) {
      known *k = &L->idx.v[i];
      if (k->seen || k->deleted) continue;
      memcpy(ids[n++], k->key, 16);
      k->deleted = 1;
      L->out->deleted++;
    }
    if (n == RBATCH || (last && n > 0)) {
      bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
      bson_error_t be;
      append_id_array(&sel, "$in", ids, n);
      BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
      BSON_APPEND_BOOL(&set, "_dp.deleted", true);
      BSON_APPEND_UTF8(&set, "_dp.deleted_run_id", L->run->id_str);
      BSON_APPEND_DATE_TIME(&set, "_dp.deleted_at", L->run->ts_us / 1000);
      bson_append_document_end(&upd, &set);
      double t0 = mono_s();
      if (!mongoc_collection_update_many(L->coll, &sel, &upd, NULL, NULL, &be))
        rc = dp_err_set(e, DP_EMONGO, "bronze: cannot mark deleted keys: %s", be.message);
      dp_log(DP_LOG_DEBUG, "bronze: %zu deletions marked in %.3f s", n, mono_s() - t0);
      /* the change file gets {_id, _dp: {deleted, deleted_run_id, deleted_at}} per key */
      for (size_t j = 0; rc == 0 && L->changes && j < n; j++) {
        bson_t d = BSON_INITIALIZER, dp;
        BSON_APPEND_BINARY(&d, "_id", BSON_SUBTYPE_UUID, ids[j], 16);
        BSON_APPEND_DOCUMENT_BEGIN(&d, "_dp", &dp);
        BSON_APPEND_BOOL(&dp, "deleted", true);
        BSON_APPEND_UTF8(&dp, "deleted_run_id", L->run->id_str);
        BSON_APPEND_DATE_TIME(&dp, "deleted_at", L->run->ts_us / 1000);
        bson_append_document_end(&d, &dp);
        if (fwrite(bson_get_data(&d), 1, d.len, L->changes) != d.len)
          rc = dp_err_set(e, DP_EIO, "bronze: cannot write the change file: %s", strerror(errno));
        bson_destroy(&d);
      }
      bson_destroy(&sel);
      bson_destroy(&upd);
      n = 0;
    }
  }
  free(ids);
  return rc;
}

int dp_bronze_load(mongoc_client_t *cli, const char *db, const dp_entity *ent, const dp_runinfo *run,
                   const char *raw_path, const char *raw_ref, dp_bronze_io *io, dp_counts *out, dp_err *e) {
  char cname[256], keyfile[4096] = "", changes[4096] = "", changes_part[4200] = "";
  int rc = 0;
  FILE *f = NULL;
  char *line = NULL;
  size_t cap = 0;
  int64_t lineno = 0;
  dp_row row;
  memset(out, 0, sizeof *out);
  io->duplicates = 0;
  io->used_key_file = 0;
  dp_bronze_collection_name(ent, cname, sizeof cname);
  loader *L = calloc(1, sizeof *L);
  if (!L) return dp_err_set(e, DP_ENOMEM, "out of memory");
  L->coll = mongoc_client_get_collection(cli, db, cname);
  L->ent = ent;
  L->run = run;
  L->raw_ref = raw_ref;
  L->out = out;
  L->ins.limit = BATCH;
  L->rep.limit = RBATCH;
  L->rep.replace = 1;
  if (dp_row_init(&row, ent->ncols)) {
    mongoc_collection_destroy(L->coll);
    free(L);
    return dp_err_set(e, DP_ENOMEM, "out of memory");
  }
  if (io->dir) {
    rc = dp_mkdirs(io->dir, e);
    if (rc) goto cleanup;
    snprintf(keyfile, sizeof keyfile, "%s/keys.idx", io->dir);
    dp_bronze_change_file(io->dir, run->id_str, changes, sizeof changes);
    snprintf(changes_part, sizeof changes_part, "%s.part", changes);
    L->changes = fopen(changes_part, "wb");
    if (!L->changes) {
      rc = dp_err_set(e, DP_EIO, "bronze: cannot create %s: %s", changes_part, strerror(errno));
      goto cleanup;
    }
  }
  rc = ensure_indexes(L->coll, e);
  if (rc == 0 && ent->npk > 0 && keyfile[0]) collection_uuid(cli, db, cname, L->coll_uuid);
  if (rc == 0 && ent->npk > 0) {
    int used = keyfile[0] ? read_key_file(L, keyfile, io->trusted_run, e) : 0;
    if (used < 0) rc = DP_ENOMEM;
    else if (used) io->used_key_file = 1;
    else {
      free(L->idx.v);
      memset(&L->idx, 0, sizeof L->idx);
      rc = load_index(L, e);
    }
    dp_log(DP_LOG_DEBUG, "bronze %s: %zu stored keys from %s", cname, L->idx.n,
           io->used_key_file ? "the key file" : "the collection");
  }
  if (rc) goto cleanup;
  f = fopen(raw_path, "r");
  if (!f) {
    rc = dp_err_set(e, DP_EIO, "bronze: cannot open raw file %s: %s", raw_path, strerror(errno));
    goto cleanup;
  }
  ssize_t len;
  while ((len = getline(&line, &cap, f)) >= 0) {
    lineno++;
    if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
    if (len == 0) continue;
    bson_t data;
    bson_error_t be;
    if (!bson_init_from_json(&data, line, len, &be)) {
      rc = dp_err_set(e, DP_EJSON, "bronze: %s line %lld: %s", raw_ref, (long long)lineno, be.message);
      goto cleanup;
    }
    out->in++;
    uint8_t key[16], content[16];
    dp_hash_bytes(line, (size_t)len, content);
    if (ent->npk > 0) {
      if (dp_row_cast(&row, ent, &data, DP_ROW_KEY_ONLY, e)) {
        bson_destroy(&data);
        dp_err_prefix(e, "bronze: %s line %lld: primary key ", raw_ref, (long long)lineno);
        rc = DP_ECAST;
        goto cleanup;
      }
      dp_row_hash(&row, ent, DP_HASH_KEY, key);
      rc = take(L, &data, key, content, lineno, e);
    } else {
      /* no primary key: every record is appended under a new id */
      dp_uuid_v7(key);
      out->inserted++;
      rc = queue(L, &L->ins, make_doc(L, key, content, &data, lineno), key, e);
    }
    bson_destroy(&data);
    if (rc) goto cleanup;
  }
  if (ferror(f)) {
    rc = dp_err_set(e, DP_EIO, "bronze: cannot read %s", raw_path);
    goto cleanup;
  }
  rc = flush(L, &L->ins, e);
  if (rc == 0) rc = flush(L, &L->rep, e);
  if (rc == 0 && ent->full_load && ent->npk > 0) rc = mark_deleted(L, e); /* whatever silver's delete_detection says */
  if (rc == 0 && L->duplicates)
    dp_log(DP_LOG_WARN, "bronze %s: %lld records repeated a key of this run; the last one of each key was kept",
           cname, (long long)L->duplicates);
  io->duplicates = L->duplicates;
  if (rc == 0 && L->changes) {
    /* the change file, complete: silver's input */
    FILE *c = L->changes;
    L->changes = NULL;
    int bad = fflush(c) | fsync(fileno(c));
    bad |= fclose(c);
    if (bad || rename(changes_part, changes) != 0)
      rc = dp_err_set(e, DP_EIO, "bronze: cannot write %s: %s", changes, strerror(errno));
  }
  if (rc == 0 && keyfile[0] && ent->npk > 0) {
    if (L->coll_uuid[0]) rc = write_key_file(L, keyfile, e);
    else unlink(keyfile); /* nothing to tell this collection from a new one by */
  }
cleanup:
  if (L->changes) { /* a failed load leaves no change file: silver reads the collection */
    fclose(L->changes);
    unlink(changes_part);
  }
  for (size_t i = 0; i < L->ins.n; i++) bson_destroy(L->ins.docs[i]);
  for (size_t i = 0; i < L->rep.n; i++) bson_destroy(L->rep.docs[i]);
  free(L->idx.v);
  free(L->idx.slots);
  free(line);
  if (f) fclose(f);
  dp_row_free(&row);
  mongoc_collection_destroy(L->coll);
  free(L);
  return rc;
}
