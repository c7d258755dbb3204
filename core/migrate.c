/* migrate.c - numbered SQL migrations with checksums. */
#include "migrate.h"
#include "log.h"
#include "pg.h"
#include "rawfile.h"

#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define MIGRATION_LOCK "7346926734001"  /* advisory lock key: one migrator at a time */

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists NNNN_*.sql names in dir, sorted (caller frees each and the array). */
static int list_migrations(const char *dir, char ***out, size_t *n, dp_err *e) {
  DIR *d = opendir(dir);
  if (!d) return dp_err_set(e, DP_EMIGRATE, "cannot open migrations folder %s", dir);
  char **names = NULL;
  size_t cnt = 0, cap = 0;
  struct dirent *de;
  int rc = 0;
  while ((de = readdir(d)) != NULL) {
    const char *nm = de->d_name;
    size_t len = strlen(nm);
    if (len < 9 || strcmp(nm + len - 4, ".sql") != 0) continue;
    if (!isdigit((unsigned char)nm[0]) || !isdigit((unsigned char)nm[1]) ||
        !isdigit((unsigned char)nm[2]) || !isdigit((unsigned char)nm[3]) || nm[4] != '_')
      continue;
    if (cnt == cap) {
      cap = cap ? cap * 2 : 16;
      char **p = realloc(names, cap * sizeof *p);
      if (!p) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); break; }
      names = p;
    }
    names[cnt++] = strdup(nm);
  }
  closedir(d);
  if (rc == 0) qsort(names, cnt, sizeof *names, cmp_names);
  *out = names;
  *n = cnt;
  return rc;
}

int dp_migrate(PGconn *c, const char *dir, int *applied, dp_err *e) {
  char **names = NULL;
  size_t n = 0;
  int rc;
  *applied = 0;
  rc = dp_pg_exec(c,
                  "CREATE SCHEMA IF NOT EXISTS dp;"
                  "CREATE TABLE IF NOT EXISTS dp.schema_migration ("
                  " name text PRIMARY KEY, checksum text NOT NULL,"
                  " applied_at timestamptz NOT NULL DEFAULT now())",
                  0, NULL, NULL, e);
  if (rc) return rc;
  rc = dp_pg_exec(c, "SELECT pg_advisory_lock(" MIGRATION_LOCK ")", 0, NULL, NULL, e);
  if (rc) return rc;
  rc = list_migrations(dir, &names, &n, e);
  if (rc) goto cleanup;
  for (size_t i = 0; i < n; i++) {
    char path[PATH_MAX], sum[65];
    char *sql = NULL;
    size_t len;
    rc = dp_path_join(path, sizeof path, dir, names[i], e);
    if (rc == 0) rc = dp_read_file(path, &sql, &len, e);
    if (rc) goto cleanup;
    dp_sha256_hex(sql, len, sum);
    PGresult *r = NULL;
    const char *p1[] = {names[i]};
    rc = dp_pg_exec(c, "SELECT checksum FROM dp.schema_migration WHERE name = $1", 1, p1, &r, e);
    if (rc) { free(sql); goto cleanup; }
    if (PQntuples(r) == 1) {
      const char *old = PQgetvalue(r, 0, 0);
      if (strcmp(old, sum) != 0) {
        rc = dp_err_set(e, DP_EMIGRATE,
                        "migration %s was changed after it was applied (applied checksum %.12s..., "
                        "file now %.12s...); add a new migration instead of editing an applied one",
                        names[i], old, sum);
      }
      PQclear(r);
      free(sql);
      if (rc) goto cleanup;
      continue;
    }
    PQclear(r);
    rc = dp_pg_begin(c, e);
    if (rc == 0) rc = dp_pg_exec(c, sql, 0, NULL, NULL, e);
    const char *p2[] = {names[i], sum};
    if (rc == 0)
      rc = dp_pg_exec(c, "INSERT INTO dp.schema_migration (name, checksum) VALUES ($1, $2)", 2, p2,
                      NULL, e);
    if (rc == 0) rc = dp_pg_commit(c, e);
    free(sql);
    if (rc) {
      dp_pg_rollback(c);
      dp_err_prefix(e, "migration %s failed, nothing of it was applied: ", names[i]);
      e->code = DP_EMIGRATE;
      goto cleanup;
    }
    dp_log(DP_LOG_INFO, "applied migration %s", names[i]);
    (*applied)++;
  }
cleanup:
  dp_pg_exec(c, "SELECT pg_advisory_unlock(" MIGRATION_LOCK ")", 0, NULL, NULL, NULL);
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  return rc;
}

int dp_migrate_status(PGconn *c, const char *dir, int *applied, int *pending, char *first, size_t cap, dp_err *e) {
  char **names = NULL;
  size_t n = 0;
  PGresult *r = NULL;
  *applied = *pending = 0;
  if (cap) first[0] = '\0';
  int rc = list_migrations(dir, &names, &n, e);
  if (rc) goto cleanup;
  rc = dp_pg_exec(c, "SELECT to_regclass('dp.schema_migration') IS NOT NULL", 0, NULL, &r, e);
  if (rc) goto cleanup;
  int have_table = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  r = NULL;
  for (size_t i = 0; i < n; i++) {
    int done = 0;
    if (have_table) {
      const char *p[] = {names[i]};
      if ((rc = dp_pg_exec(c, "SELECT 1 FROM dp.schema_migration WHERE name = $1", 1, p, &r, e)) != 0) goto cleanup;
      done = PQntuples(r) == 1;
      PQclear(r);
      r = NULL;
    }
    if (done) (*applied)++;
    else if ((*pending)++ == 0 && cap) snprintf(first, cap, "%s", names[i]);
  }
cleanup:
  PQclear(r);
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  return rc;
}
