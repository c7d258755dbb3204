/* forget.c - dp-engine forget (docs/lifecycle.md#forgetting-a-key): the key's hash from the
 * values given, then named steps: record, raw, bronze, silver, gold; and the filter that keeps
 * later runs from writing a forgotten key's records to raw. */
#include "forget.h"
#include "audit.h"
#include "bronze.h"
#include "goldrun.h"
#include "json.h"
#include "jsonbson.h"
#include "lifecycle.h"
#include "log.h"
#include "snapshot.h"
#include "pg.h"
#include "rawcompress.h"
#include "rawfile.h"
#include "rawmanifest.h"
#include "record.h"
#include "run.h"
#include "runinfo.h"
#include "silver.h"
#include "uuid.h"

#include <dirent.h>
#include <sodium.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the key hash of a record ---------------------------------------------------------- */

/* Casts the key columns of one JSON record and hashes them: 1 and key set, or 0 when the
 * record is not JSON or its key cannot be cast. */
static int key_of(dp_row *row, const dp_entity *ent, const char *json, size_t len, uint8_t key[16]) {
  bson_t doc;
  dp_err e;
  int ok = dp_json_to_bson(json, len, &doc, &e) == 0 && dp_row_cast(row, ent, &doc, DP_ROW_KEY_ONLY, &e) == 0;
  bson_destroy(&doc);
  if (ok) dp_row_hash(row, ent, DP_HASH_KEY, key);
  return ok;
}

static int cmp_key(const void *a, const void *b) { return memcmp(a, b, 16); }

struct dp_forget_filter {
  const dp_entity *ent;
  dp_row row;
  int have_row;
  uint8_t (*keys)[16]; /* sorted */
  size_t n;
  long long dropped;
};

int dp_forget_filter_load(PGconn *c, const dp_entity *ent, dp_forget_filter **out, dp_err *e) {
  *out = NULL;
  if (ent->npk == 0) return 0;
  const char *p[] = {ent->system, ent->name};
  PGresult *r = NULL;
  int rc = dp_pg_exec(c,
                      "SELECT key_hash::text FROM dp.forgotten_key WHERE system = $1 AND entity = $2 "
                      "AND NOT allow_return",
                      2, p, &r, e);
  if (rc) return rc;
  size_t n = (size_t)PQntuples(r);
  if (n == 0) {
    PQclear(r);
    return 0;
  }
  dp_forget_filter *f = calloc(1, sizeof *f);
  if (f) f->keys = malloc(n * sizeof *f->keys);
  if (f && f->keys) f->have_row = dp_row_init(&f->row, ent->ncols) == 0;
  if (!f || !f->have_row) {
    PQclear(r);
    dp_forget_filter_free(f);
    return dp_err_set(e, DP_ENOMEM, "out of memory");
  }
  f->ent = ent;
  for (size_t i = 0; i < n; i++)
    if (dp_uuid_parse(PQgetvalue(r, (int)i, 0), f->keys[f->n]) == 0) f->n++;
  PQclear(r);
  qsort(f->keys, f->n, sizeof *f->keys, cmp_key);
  *out = f;
  return 0;
}

int dp_forget_filter_drops(dp_forget_filter *f, const char *json, size_t len) {
  uint8_t key[16];
  if (!f || !key_of(&f->row, f->ent, json, len, key)) return 0;
  if (!bsearch(key, f->keys, f->n, sizeof *f->keys, cmp_key)) return 0;
  f->dropped++;
  return 1;
}

long long dp_forget_filter_dropped(const dp_forget_filter *f) { return f ? f->dropped : 0; }

void dp_forget_filter_free(dp_forget_filter *f) {
  if (!f) return;
  if (f->have_row) dp_row_free(&f->row);
  free(f->keys);
  free(f);
}

/* ---- the command ------------------------------------------------------------------------ */

typedef struct forget_state {
  dp_engine *eng;
  const dp_forget_opts *o;
  dp_entity ent;
  int have_ent;
  dp_row row;
  int have_row;
  uint8_t key[16];
  char key_str[37];
  dp_runinfo run;
  long long raw_files, raw_lines, bronze_docs, silver_versions, silver_rejects, silver_undo;
  int gold_rebuilt; /* the models are (or, in a dry run, would be) rebuilt */
  dp_buf gold;      /* PostgreSQL text[] literal items of the gold models rebuilt */
  char **models;    /* the gold models that read the entity, directly or through other models */
  int nmodels;
} forget_state;

/* Appends the JSON text of a record that holds value at the column's path ("a.b": nested). */
static void put_at_path(dp_buf *b, const char *path, const char *value) {
  const char *dot = strchr(path, '.');
  size_t n = dot ? (size_t)(dot - path) : strlen(path);
  dp_json_put_string(b, path, n);
  dp_buf_putc(b, ':');
  if (dot) {
    dp_buf_putc(b, '{');
    put_at_path(b, dot + 1, value);
    dp_buf_putc(b, '}');
  } else {
    dp_json_put_string(b, value, strlen(value));
  }
}

/* The key hash from "k1=v1,k2=v2": every key column once, its value cast with the column's
 * type. A comma followed by text that does not start a key column's "name=" belongs to the value. */
static int parse_key(forget_state *s, dp_err *e) {
  const dp_entity *ent = &s->ent;
  char **vals = calloc(ent->npk, sizeof *vals);
  char *copy = strdup(s->o->key);
  dp_buf rec = DP_BUF_INIT;
  int rc = 0;
  if (!vals || !copy) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory");
    goto cleanup;
  }
  for (char *p = copy; p && *p;) {
    char *eq = strchr(p, '=');
    if (!eq) {
      rc = dp_err_set(e, DP_EINVAL, "--key: %s is not column=value", p);
      goto cleanup;
    }
    *eq = '\0';
    size_t k = 0;
    while (k < ent->npk && strcmp(ent->cols[ent->pk[k]].name, p) != 0) k++;
    if (k == ent->npk) {
      rc = dp_err_set(e, DP_EINVAL, "--key: %s is not a primary-key column of %s.%s", p, ent->system, ent->name);
      goto cleanup;
    }
    if (vals[k]) {
      rc = dp_err_set(e, DP_EINVAL, "--key: column %s is given twice", p);
      goto cleanup;
    }
    vals[k] = eq + 1;
    /* the value ends at the next ",name=" of a key column */
    char *next = NULL;
    for (char *c = strchr(eq + 1, ','); c && !next; c = strchr(c + 1, ',')) {
      for (size_t j = 0; j < ent->npk; j++) {
        const char *nm = ent->cols[ent->pk[j]].name;
        size_t l = strlen(nm);
        if (strncmp(c + 1, nm, l) == 0 && c[1 + l] == '=') next = c;
      }
    }
    if (next) *next = '\0';
    p = next ? next + 1 : NULL;
  }
  dp_buf_putc(&rec, '{');
  for (size_t k = 0; k < ent->npk; k++) {
    const dp_column *col = &ent->cols[ent->pk[k]];
    if (!vals[k]) {
      rc = dp_err_set(e, DP_EINVAL, "--key: the primary-key column %s is missing (give every one of them)", col->name);
      goto cleanup;
    }
    for (size_t j = 0; j < k; j++) {
      const char *a = ent->cols[ent->pk[j]].path, *b = col->path;
      size_t la = strcspn(a, "."), lb = strcspn(b, ".");
      if (la == lb && strncmp(a, b, la) == 0 && (a[la] == '.' || b[lb] == '.')) {
        rc = dp_err_set(e, DP_EINVAL, "--key: key columns %s and %s share the path %.*s: not supported by forget",
                        ent->cols[ent->pk[j]].name, col->name, (int)la, a);
        goto cleanup;
      }
    }
    if (k) dp_buf_putc(&rec, ',');
    put_at_path(&rec, col->path ? col->path : col->name, vals[k]);
  }
  dp_buf_putc(&rec, '}');
  bson_t doc;
  if ((rc = dp_json_to_bson(rec.data, rec.len, &doc, e)) == 0 &&
      (rc = dp_row_cast(&s->row, ent, &doc, DP_ROW_KEY_ONLY, e)) != 0) {
    dp_err_prefix(e, "--key: ");
    rc = e->code = DP_EINVAL; /* the user's value: a usage error */
  }
  bson_destroy(&doc);
  if (rc == 0) {
    dp_row_hash(&s->row, ent, DP_HASH_KEY, s->key);
    dp_uuid_format(s->key, s->key_str);
  }
cleanup:
  dp_buf_free(&rec);
  free(copy);
  free(vals);
  return rc;
}

/* The entity from metadata, and the gold models downstream of it (transitively). */
static int load_target(forget_state *s, const dp_snapshot *meta, dp_err *e) {
  char sys[200];
  const char *dot = strchr(s->o->target, '.');
  if (!dot || dot == s->o->target || (size_t)(dot - s->o->target) >= sizeof sys)
    return dp_err_set(e, DP_EINVAL, "forget needs SYSTEM.ENTITY, not %s", s->o->target);
  snprintf(sys, sizeof sys, "%.*s", (int)(dot - s->o->target), s->o->target);
  const dp_entity *ent = dp_snapshot_entity(meta, sys, dot + 1);
  if (!ent) return dp_err_set(e, DP_EINVAL, "no entity %s in %s", s->o->target, s->eng->cfg.metadata);
  if (dp_entity_copy(&s->ent, ent) != 0) return dp_err_set(e, DP_ENOMEM, "out of memory");
  s->have_ent = 1;
  if (s->ent.npk == 0)
    return dp_err_set(e, DP_EINVAL, "%s has no primary key: there is no key to forget", s->o->target);
  if (dp_row_init(&s->row, s->ent.ncols) != 0) return dp_err_set(e, DP_ENOMEM, "out of memory");
  s->have_row = 1;
  /* gold: models whose depends_on names the entity or a model already found, until none is added */
  size_t ng = meta->ntargets - meta->nsystems;
  s->models = calloc(ng ? ng : 1, sizeof *s->models);
  if (!s->models) return dp_err_set(e, DP_ENOMEM, "out of memory");
  for (int added = 1; added;) {
    added = 0;
    for (size_t i = meta->nsystems; i < meta->ntargets; i++) {
      const dp_snap_target *g = &meta->targets[i];
      int have = 0, reads = 0;
      for (int k = 0; k < s->nmodels; k++) have |= strcmp(s->models[k], g->name) == 0;
      for (size_t d = 0; !have && d < g->ndepends; d++) {
        const char *dep = g->depends_on[d];
        if (strcmp(dep, s->o->target) == 0) reads = 1;
        for (int k = 0; k < s->nmodels; k++) reads |= strcmp(dep, s->models[k]) == 0;
      }
      if (reads) {
        if (!(s->models[s->nmodels] = strdup(g->name))) return dp_err_set(e, DP_ENOMEM, "out of memory");
        s->nmodels++;
        added = 1;
      }
    }
  }
  return 0;
}

/* Step 1: the record of the forgetting (first, so that a run after a failure half way already
 * leaves the key out), and the audit row. */
static int record_key(forget_state *s, dp_err *e) {
  const char *p[] = {s->run.id_str, s->run.ts_str, s->ent.system, s->ent.name, s->key_str,
                     s->o->dry_run ? "true" : "false", s->o->allow_return ? "true" : "false"};
  int rc = dp_pg_exec(s->eng->audit,
                      "INSERT INTO audit.forget_run (run_id, run_ts, system, entity, key_hash, dry_run, allow_return,"
                      " status, started_at) VALUES ($1::uuid, $2::timestamptz, $3, $4, $5::uuid, $6::boolean,"
                      " $7::boolean, 'running', now())",
                      7, p, NULL, e);
  if (rc || s->o->dry_run) return rc;
  const char *q[] = {s->ent.system, s->ent.name, s->key_str, s->run.id_str, p[6]};
  return dp_pg_exec(s->eng->audit,
                    "INSERT INTO dp.forgotten_key (system, entity, key_hash, run_id, allow_return) VALUES ($1, $2,"
                    " $3::uuid, $4::uuid, $5::boolean) ON CONFLICT (system, entity, key_hash) DO UPDATE SET"
                    " forgotten_at = now(), run_id = EXCLUDED.run_id, allow_return = EXCLUDED.allow_return",
                    5, q, NULL, e);
}

/* The manifest of a raw file whose content is now records + blank lines of bytes bytes. */
static int set_manifest(const char *path, uint64_t records, uint64_t bytes, const char *sha, uint64_t blank,
                        uint64_t stored, dp_err *e) {
  dp_manifest_set sets[] = {
      {"records", DP_MSET_INT, NULL, (int64_t)records},
      {"bytes", DP_MSET_INT, NULL, (int64_t)bytes},
      {"sha256", DP_MSET_STR, sha, 0},
      {"forgotten_lines", DP_MSET_INT, NULL, (int64_t)blank},
      {"stored_bytes", DP_MSET_INT, NULL, (int64_t)stored},
  };
  return dp_raw_manifest_update(path, NULL, sets, dp_raw_is_gz(path) ? 5 : 4, e);
}

/* Refuses to rewrite a raw file that was not read whole: its last line cut (torn), or its lines
 * not those its manifest counts (records + forgotten_lines; a forget keeps every line), or, when
 * no forget stopped between the file and its manifest (the same forgotten lines), other content. */
static int check_whole(const char *path, int torn, uint64_t lines, uint64_t blank, uint64_t bytes,
                       crypto_hash_sha256_state *sha, dp_err *e) {
  if (torn)
    return dp_err_set(e, DP_EIO, "forget: raw file %s is truncated or damaged (its last line is cut); it was not "
                      "rewritten", path);
  dp_raw_facts mf;
  int rc = dp_raw_manifest_facts(path, &mf, e);
  if (rc || mf.sha256[0] == '\0') return rc;
  if (lines != mf.records + mf.forgotten_lines)
    return dp_err_set(e, DP_EIO, "forget: raw file %s is truncated or damaged: %llu lines, its manifest says %llu; "
                      "it was not rewritten", path, (unsigned long long)lines,
                      (unsigned long long)(mf.records + mf.forgotten_lines));
  if (blank != mf.forgotten_lines) return 0; /* an earlier forget stopped before the manifest */
  crypto_hash_sha256_state copy = *sha; /* the caller finishes its own */
  unsigned char d[crypto_hash_sha256_BYTES];
  dp_raw_facts got = {0, bytes, 0, ""};
  crypto_hash_sha256_final(&copy, d);
  sodium_bin2hex(got.sha256, sizeof got.sha256, d, sizeof d);
  rc = dp_raw_check_manifest(path, &got, e);
  if (rc) dp_err_prefix(e, "forget: ");
  return rc;
}

/* One raw file: counts the key's lines; unless a dry run, rewrites the file (same name, same
 * compression; each of those lines becomes an empty line, so other lines keep their numbers)
 * and its manifest. A file an earlier forget rewrote (it has empty lines) gets its manifest set
 * from its content again, so a forget that stopped between the two is completed by the next. */
static int forget_in_file(forget_state *s, const char *path, dp_err *e) {
  struct stat was; /* the rewritten file keeps its times (retention counts from them) */
  if (stat(path, &was) != 0) return dp_err_set(e, DP_EIO, "forget: cannot read %s: %s", path, strerror(errno));
  FILE *f = dp_raw_open_read(path, NULL, 0, e); /* a gzip file only when whole; the manifest: below */
  if (!f) {
    dp_err_prefix(e, "forget: ");
    return e->code;
  }
  int torn = 0; /* the last line has no newline: the file was cut */
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  long long hits = 0;
  uint8_t k[16];
  int rc = 0;
  uint64_t blank = 0, lines = 0, bytes = 0;
  crypto_hash_sha256_state sha;
  crypto_hash_sha256_init(&sha);
  while ((len = getline(&line, &cap, f)) >= 0) {
    torn = !(len > 0 && line[len - 1] == '\n');
    if (!torn) len--;
    lines++;
    bytes += (uint64_t)len + 1;
    crypto_hash_sha256_update(&sha, (const unsigned char *)line, (unsigned long long)len);
    crypto_hash_sha256_update(&sha, (const unsigned char *)"\n", 1);
    if (len == 0) blank++;
    else if (key_of(&s->row, &s->ent, line, (size_t)len, k) && memcmp(k, s->key, 16) == 0) hits++;
  }
  if (ferror(f)) rc = dp_err_set(e, DP_EIO, "forget: cannot read %s", path);
  if (rc == 0) rc = check_whole(path, torn, lines, blank, bytes, &sha, e);
  if (rc || s->o->dry_run) goto done;
  if (hits == 0) {
    if (blank > 0) {
      unsigned char d[crypto_hash_sha256_BYTES];
      char hex[65];
      struct stat st;
      crypto_hash_sha256_final(&sha, d);
      sodium_bin2hex(hex, sizeof hex, d, sizeof d);
      rc = set_manifest(path, lines - blank, bytes, hex, blank, stat(path, &st) == 0 ? (uint64_t)st.st_size : 0, e);
    }
    goto done;
  }
  rewind(f);
  dp_raw_writer w;
  if ((rc = dp_raw_open(&w, path, e)) != 0) goto done;
  blank = 0;
  while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
    if (len > 0 && line[len - 1] == '\n') len--;
    int drop = len > 0 && key_of(&s->row, &s->ent, line, (size_t)len, k) && memcmp(k, s->key, 16) == 0;
    if (drop || len == 0) blank++;
    rc = dp_raw_append(&w, line, drop ? 0 : (size_t)len, e);
  }
  if (rc == 0 && ferror(f)) rc = dp_err_set(e, DP_EIO, "forget: cannot read %s", path);
  if (rc) {
    dp_raw_abort(&w);
    goto done;
  }
  uint64_t records = w.records - blank;
  bytes = w.bytes;
  if ((rc = dp_raw_commit(&w, e)) != 0) goto done;
  const struct timespec times[2] = {was.st_atim, was.st_mtim};
  if (utimensat(AT_FDCWD, path, times, 0) != 0)
    dp_log(DP_LOG_WARN, "forget: cannot keep the times of %s: %s", path, strerror(errno));
  rc = set_manifest(path, records, bytes, w.sha256_hex, blank, w.stored, e);
done:
  if (rc == 0 && hits) {
    s->raw_files++;
    s->raw_lines += hits;
  }
  free(line);
  fclose(f);
  return rc;
}

static int forget_raw_dir(forget_state *s, const char *dir, dp_err *e) {
  char **files = NULL;
  size_t n = 0;
  int rc = dp_lifecycle_raw_files(dir, &files, &n, e);
  for (size_t i = 0; rc == 0 && i < n; i++) rc = forget_in_file(s, files[i], e);
  dp_lifecycle_free_list(files, n);
  return rc;
}

/* Step 2: every raw file of the entity, also those a rollback moved to
 * DP_DATA_DIR/quarantine/<run_id>/raw/<system>/<entity>/ (docs/lifecycle.md#undoing-a-run). */
static int forget_raw(forget_state *s, dp_err *e) {
  char dir[4096], q[4200];
  dp_lifecycle_raw_dir(s->eng->cfg.data_dir, s->ent.system, s->ent.name, dir, sizeof dir);
  int rc = forget_raw_dir(s, dir, e);
  snprintf(q, sizeof q, "%s/quarantine", s->eng->cfg.data_dir);
  DIR *d = rc == 0 ? opendir(q) : NULL;
  struct dirent *de;
  while (d && rc == 0 && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    char qroot[4400];
    if ((rc = dp_path_join(qroot, sizeof qroot, q, de->d_name, e)) != 0) break;
    dp_lifecycle_raw_dir(qroot, s->ent.system, s->ent.name, dir, sizeof dir);
    rc = forget_raw_dir(s, dir, e);
  }
  if (d) closedir(d);
  return rc;
}

/* The change file at path without the key's documents (atomically). */
static int forget_in_change_file(forget_state *s, const char *path, dp_err *e) {
  bson_error_t be;
  bson_reader_t *rd = bson_reader_new_from_file(path, &be);
  if (!rd) return dp_err_set(e, DP_EIO, "forget: cannot read %s: %s", path, be.message);
  dp_buf keep = DP_BUF_INIT;
  const bson_t *doc;
  bool eof = false;
  int hits = 0;
  while ((doc = bson_reader_read(rd, &eof)) != NULL) {
    bson_iter_t it;
    uint8_t k[16];
    if (bson_iter_init_find(&it, doc, "_id") && dp_bronze_iter_id(&it, k) && memcmp(k, s->key, 16) == 0) hits++;
    else dp_buf_append(&keep, bson_get_data(doc), doc->len);
  }
  long long told = (long long)bson_reader_tell(rd); /* where reading stopped */
  bson_reader_destroy(rd);
  int rc = 0;
  if (!eof || !dp_bson_file_whole(path, told)) /* a torn or invalid document: never taken for the end */
    rc = dp_err_set(e, DP_EIO, "forget: bronze change file %s is truncated or damaged at byte %lld; it was not "
                    "rewritten", path, told);
  if (rc == 0 && hits && !s->o->dry_run) rc = dp_write_file_atomic(path, keep.data ? keep.data : "", keep.len, e);
  dp_buf_free(&keep);
  return rc;
}

/* Step 3: the bronze document, pending change files, and the key file (the next load reads the
 * collection once). */
static int forget_bronze(forget_state *s, dp_err *e) {
  char cname[300], dir[4096];
  dp_bronze_collection_name(&s->ent, cname, sizeof cname);
  mongoc_collection_t *coll = mongoc_client_get_collection(s->eng->mongo, s->eng->cfg.bronze_db, cname);
  bson_t sel = BSON_INITIALIZER;
  dp_bronze_append_id(&sel, "_id", s->key);
  bson_error_t be;
  int rc = 0;
  if (s->o->dry_run) {
    int64_t k = mongoc_collection_count_documents(coll, &sel, NULL, NULL, NULL, &be);
    if (k < 0) rc = dp_err_set(e, DP_EMONGO, "forget: bronze %s: %s", cname, be.message);
    else s->bronze_docs = k;
  } else {
    bson_t reply;
    if (!mongoc_collection_delete_many(coll, &sel, NULL, &reply, &be)) {
      rc = dp_err_set(e, DP_EMONGO, "forget: bronze %s: %s", cname, be.message);
    } else {
      bson_iter_t it;
      if (bson_iter_init_find(&it, &reply, "deletedCount")) s->bronze_docs = bson_iter_as_int64(&it);
    }
    bson_destroy(&reply);
  }
  bson_destroy(&sel);
  mongoc_collection_destroy(coll);
  if (rc) return rc;
  dp_lifecycle_bronze_dir(s->eng->cfg.data_dir, s->ent.system, s->ent.name, dir, sizeof dir);
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? 0 : dp_err_set(e, DP_EIO, "forget: cannot read %s: %s", dir, strerror(errno));
  struct dirent *de;
  while (rc == 0 && (de = readdir(d)) != NULL) {
    size_t n = strlen(de->d_name);
    if (n < 6 || strcmp(de->d_name + n - 5, ".bson") != 0) continue;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    rc = forget_in_change_file(s, path, e);
  }
  closedir(d);
  if (rc == 0 && !s->o->dry_run) {
    char keys[4200];
    snprintf(keys, sizeof keys, "%s/keys.idx", dir);
    if (unlink(keys) != 0 && errno != ENOENT)
      rc = dp_err_set(e, DP_EIO, "forget: cannot remove %s: %s", keys, strerror(errno));
  }
  return rc;
}

static long long count_deleted(PGconn *c, const char *sql, const char *key, dp_err *e, int *rc) {
  PGresult *r = NULL;
  const char *p[] = {key};
  *rc = dp_pg_exec(c, sql, 1, p, &r, e);
  long long n = *rc == 0 && PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
  PQclear(r);
  return n;
}

/* Step 4: every version of the key, its rejected rows and the before-images rollback keeps of
 * its rows (dp.silver_undo), in one transaction; a dry run rolls it back. */
static int forget_silver(forget_state *s, dp_err *e) {
  PGconn *c = s->eng->data;
  dp_buf t = DP_BUF_INIT, q = DP_BUF_INIT;
  int rc = dp_pg_begin(c, e);
  for (int pass = 0; rc == 0 && pass < 2; pass++) {
    dp_buf_reset(&t);
    dp_buf_reset(&q);
    dp_lifecycle_silver_table(&t, s->ent.system, s->ent.name, pass ? "__rejected" : "");
    const char *pt[] = {t.data};
    PGresult *r = NULL;
    if ((rc = dp_pg_exec(c, "SELECT to_regclass($1) IS NOT NULL", 1, pt, &r, e)) != 0) break;
    int exists = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!exists) continue;
    dp_buf_printf(&q, "WITH d AS (DELETE FROM %s WHERE _dp_key_hash = $1::uuid RETURNING 1) SELECT count(*) FROM d",
                  t.data);
    long long n = count_deleted(c, q.data, s->key_str, e, &rc);
    if (pass) s->silver_rejects = n;
    else s->silver_versions = n;
  }
  if (rc == 0) rc = dp_silver_undo_forget_key(c, &s->ent, s->key_str, &s->silver_undo, e);
  if (rc == 0 && !s->o->dry_run) rc = dp_pg_commit(c, e);
  else dp_pg_rollback(c);
  dp_buf_free(&t);
  dp_buf_free(&q);
  return rc;
}

/* Step 5: the gold models that read the entity, rebuilt (upstream models first). */
static int forget_gold(forget_state *s, int *failed, dp_err *e) {
  if (s->nmodels == 0) return 0;
  /* silver lost rows now, or an earlier forget of this key may have stopped before gold */
  int rebuild = s->silver_versions > 0;
  if (!rebuild) {
    const char *p[] = {s->ent.system, s->ent.name, s->key_str, s->run.id_str};
    PGresult *r = NULL;
    int rc = dp_pg_exec(s->eng->audit,
                        "SELECT 1 FROM audit.forget_run WHERE system = $1 AND entity = $2 AND key_hash = $3::uuid"
                        " AND NOT dry_run AND status <> 'succeeded' AND run_id <> $4::uuid LIMIT 1",
                        4, p, &r, e);
    if (rc) return rc;
    rebuild = PQntuples(r) > 0;
    PQclear(r);
  }
  s->gold_rebuilt = rebuild;
  for (int k = 0; rebuild && k < s->nmodels; k++) { /* the audit's text[] and the report */
    if (k) dp_buf_putc(&s->gold, ',');
    dp_buf_putc(&s->gold, '"');
    dp_buf_puts(&s->gold, s->models[k]); /* model names are identifiers (metadata) */
    dp_buf_putc(&s->gold, '"');
  }
  if (s->o->dry_run || !rebuild) return 0;
  /* full refresh: an incremental model keeps no row of the forgotten key */
  dp_gold_opts go = {.trigger = "forget", .trigger_detail = s->run.id_str, .full_refresh = 1};
  int run_failed = 0;
  int rc = dp_gold_run(s->eng, (const char *const *)s->models, s->nmodels, NULL, &go, &run_failed, e);
  if (run_failed) *failed = 1;
  return rc;
}

static void finish_audit(forget_state *s, const char *error) {
  char n[5][32];
  long long v[5] = {s->raw_files, s->raw_lines, s->bronze_docs, s->silver_versions, s->silver_rejects};
  for (int i = 0; i < 5; i++) snprintf(n[i], sizeof n[i], "%lld", v[i]);
  dp_buf g = DP_BUF_INIT;
  dp_buf_printf(&g, "{%s}", s->gold.data ? s->gold.data : "");
  const char *p[] = {s->run.id_str, error ? "failed" : "succeeded", n[0], n[1], n[2], n[3], n[4], g.data, error};
  dp_err e;
  if (dp_pg_exec(s->eng->audit,
                 "UPDATE audit.forget_run SET status = $2, raw_files = $3::bigint, raw_lines = $4::bigint,"
                 " bronze_documents = $5::bigint, silver_versions = $6::bigint, silver_rejects = $7::bigint,"
                 " gold_models = $8::text[], error = $9, ended_at = now() WHERE run_id = $1::uuid",
                 9, p, NULL, &e) != 0)
    dp_log(DP_LOG_WARN, "forget: cannot finish the audit row: %s", e.msg);
  dp_buf_free(&g);
}

static void report(const forget_state *s, dp_buf *out, const char *status) {
  dp_buf_printf(out,
                "forget %s of %s key %s%s: %s\n"
                "  raw          %lld lines in %lld files\n"
                "  bronze       %lld documents\n"
                "  silver       %lld versions, %lld rejected rows, %lld before-images of rollback\n"
                "  gold         %s%s\n",
                s->run.id_str, s->o->target, s->key_str, s->o->dry_run ? " (dry run)" : "", status, s->raw_lines,
                s->raw_files, s->bronze_docs, s->silver_versions, s->silver_rejects, s->silver_undo,
                !s->nmodels ? "no model reads it" : !s->gold_rebuilt ? "nothing to rebuild: silver lost no rows"
                                                    : s->o->dry_run ? "would rebuild " : "rebuilt ",
                s->gold_rebuilt && s->gold.data ? s->gold.data : "");
  if (!s->o->dry_run)
    dp_buf_printf(out, "  later loads  %s\n",
                  s->o->allow_return ? "may bring the key back (--allow-return)" : "leave the key out");
}

int dp_forget(dp_engine *eng, const dp_forget_opts *o, dp_buf *out, int *failed, dp_err *e) {
  *failed = 0;
  dp_snapshot *meta = NULL;
  int rc = dp_load_metadata(eng, &meta, e);
  if (rc) return rc;
  forget_state s;
  memset(&s, 0, sizeof s);
  s.eng = eng;
  s.o = o;
  int locked = 0, audited = 0;
  if ((rc = load_target(&s, meta, e)) != 0 || (rc = parse_key(&s, e)) != 0) goto cleanup;
  if ((rc = dp_engine_open_migrated(eng, e)) != 0 || (rc = dp_engine_open_mongo(eng, e)) != 0) goto cleanup;
  if ((rc = dp_audit_lock_system(eng->audit, s.ent.system, e)) != 0) goto cleanup;
  locked = 1;
  dp_runinfo_new(&s.run);
  if ((rc = record_key(&s, e)) != 0) goto cleanup;
  audited = 1;
  dp_log(DP_LOG_INFO, "forget %s: %s key %s%s", s.run.id_str, o->target, s.key_str, o->dry_run ? " (dry run)" : "");
  /* the named steps; each is idempotent, so a failed forget can simply be run again */
  if ((rc = forget_raw(&s, e)) == 0 && (rc = forget_bronze(&s, e)) == 0 && (rc = forget_silver(&s, e)) == 0) {
    dp_audit_unlock_system(eng->audit, s.ent.system); /* gold runs take their own locks */
    locked = 0;
    rc = forget_gold(&s, failed, e);
  }
  if (rc) *failed = 1;
  finish_audit(&s, rc ? e->msg : (*failed ? "a gold model failed to rebuild" : NULL));
  report(&s, out, rc || *failed ? "failed" : "done");
cleanup:
  (void)audited;
  if (locked) dp_audit_unlock_system(eng->audit, s.ent.system);
  for (int k = 0; k < s.nmodels; k++) free(s.models[k]);
  free(s.models);
  dp_buf_free(&s.gold);
  if (s.have_row) dp_row_free(&s.row);
  if (s.have_ent) dp_entity_free(&s.ent);
  dp_snapshot_unref(meta);
  return rc;
}
