/* cmd_doctor.c - dp-engine doctor: checks the setup and says what to fix (docs/cli.md#doctor). */
#include "bronze_tuning.h"
#include "bronze.h"
#include "cli.h"
#include "doctor.h"
#include "buf.h"
#include "config.h"
#include "json.h"
#include "luabridge.h"
#include "migrate.h"
#include "pg.h"
#include "run.h"
#include "secretlookup.h"
#include "secrets.h"

#include <curl/curl.h>
#include <sodium.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *DOCTOR_USAGE =
    "usage: dp-engine doctor [--network] [--json]\n"
    "\n"
    "Checks the setup, one line per check (ok, warn or fail), with the fix under a warning or a\n"
    "failure: the engine home and scripts folders, PostgreSQL and MongoDB (reachable, versions),\n"
    "migrations, the metadata, the master key and the secret store, the inbox of every enabled\n"
    "file system, the host of every enabled rest system (resolved; --network also sends a HEAD\n"
    "request), the free space of DP_DATA_DIR and bronze's settings. --json prints one JSON\n"
    "document.\n"
    "Exit codes: 0 no check failed (warnings allowed), 1 a check failed, 2 usage error.\n";

struct dp_doctor {
  dp_engine *eng;
  int network, json;
  int failed;        /* lines that failed */
  int pg_ok, mongo_ok;
  int have_facts;    /* facts read (the metadata is valid) */
  dp_doctor_facts facts; /* what the later checks look at in the metadata */
  dp_buf out;        /* --json: the checks array so far */
  int n;
};

dp_engine *dp_doctor_engine(dp_doctor *d) { return d->eng; }
int dp_doctor_network(const dp_doctor *d) { return d->network; }

void dp_doctor_report(dp_doctor *d, dp_doctor_status st, const char *check, const char *fix, const char *fmt, ...) {
  static const char *names[] = {"ok", "warn", "fail"};
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (st == DP_DOCTOR_FAIL) d->failed++;
  if (d->json) {
    dp_buf_puts(&d->out, d->n++ ? ",{\"check\":" : "{\"check\":");
    dp_json_put_string(&d->out, check, strlen(check));
    dp_buf_printf(&d->out, ",\"status\":\"%s\",\"message\":", names[st]);
    dp_json_put_string(&d->out, msg, strlen(msg));
    dp_buf_puts(&d->out, ",\"fix\":");
    if (fix) dp_json_put_string(&d->out, fix, strlen(fix));
    else dp_buf_puts(&d->out, "null");
    dp_buf_putc(&d->out, '}');
    return;
  }
  /* a message of several lines (every metadata error) is indented under the first */
  printf("%-5s %-17s ", names[st], check);
  for (const char *p = msg; *p; p++) {
    putchar(*p);
    if (*p == '\n' && p[1]) printf("%24s", "");
  }
  putchar('\n');
  if (fix) printf("      fix: %s\n", fix);
  fflush(stdout);
}

/* 1 when path/sub is a directory. */
static int has_dir(const char *path, const char *sub) {
  char p[4200];
  struct stat sb;
  snprintf(p, sizeof p, "%s/%s", path, sub);
  return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static void check_home(dp_doctor *d) {
  const char *home = d->eng->cfg.home;
  if (has_dir(home, "migrations")) dp_doctor_report(d, DP_DOCTOR_OK, "engine home", NULL, "%s (lua/ and migrations/ found)", home);
  else dp_doctor_report(d, DP_DOCTOR_FAIL, "engine home", "set DP_HOME to the folder that holds lua/ and migrations/",
                        "%s has no migrations/ folder", home);
}

static void check_scripts(dp_doctor *d) {
  const char *s = d->eng->cfg.scripts;
  int c = has_dir(s, "connectors"), g = has_dir(s, "gold");
  if (c && g) dp_doctor_report(d, DP_DOCTOR_OK, "scripts", NULL, "%s (connectors/ and gold/ found)", s);
  else dp_doctor_report(d, DP_DOCTOR_FAIL, "scripts", "set DP_SCRIPTS to the folder that holds connectors/ and gold/",
                        "%s has no %s folder", s, !c ? "connectors/" : "gold/");
}

static void check_postgres(dp_doctor *d) {
  dp_err e;
  dp_err_clear(&e);
  if (!d->eng->cfg.postgres_url) {
    dp_doctor_report(d, DP_DOCTOR_FAIL, "postgres", "set DP_POSTGRES_URL (a libpq URI: postgresql://user@host:port/db)",
                     "DP_POSTGRES_URL is not set");
    return;
  }
  PGresult *r = NULL;
  if (dp_engine_open_pg(d->eng, &e) || dp_pg_exec(d->eng->audit, "SHOW server_version", 0, NULL, &r, &e)) {
    dp_doctor_report(d, DP_DOCTOR_FAIL, "postgres", "start PostgreSQL, or set DP_POSTGRES_URL to a server that runs",
                     "%s", e.msg);
    return;
  }
  PGconn *c = d->eng->audit;
  dp_doctor_report(d, DP_DOCTOR_OK, "postgres", NULL, "PostgreSQL %s at %s:%s/%s", PQgetvalue(r, 0, 0), PQhost(c),
                   PQport(c), PQdb(c));
  PQclear(r);
  d->pg_ok = 1;
}

static void check_migrations(dp_doctor *d) {
  if (!d->pg_ok) {
    dp_doctor_report(d, DP_DOCTOR_WARN, "migrations", "fix the postgres check first", "skipped: PostgreSQL is not reachable");
    return;
  }
  char dir[4200], first[256];
  int applied, pending;
  dp_err e;
  dp_err_clear(&e);
  snprintf(dir, sizeof dir, "%s/migrations", d->eng->cfg.home);
  if (dp_migrate_status(d->eng->audit, dir, &applied, &pending, first, sizeof first, &e))
    dp_doctor_report(d, DP_DOCTOR_FAIL, "migrations", "see the message", "%s", e.msg);
  else if (pending)
    dp_doctor_report(d, DP_DOCTOR_FAIL, "migrations", "run `dp-engine migrate`", "%d applied, %d pending (first: %s)",
                     applied, pending, first);
  else
    dp_doctor_report(d, DP_DOCTOR_OK, "migrations", NULL, "%d applied, none pending", applied);
}

static void check_mongodb(dp_doctor *d) {
  dp_err e;
  dp_err_clear(&e);
  if (dp_engine_open_mongo(d->eng, &e)) {
    dp_doctor_report(d, DP_DOCTOR_FAIL, "mongodb", "start MongoDB (or FerretDB), or set DP_MONGO_URL to a server that runs",
                     "%s", e.msg);
    return;
  }
  bson_t cmd = BSON_INITIALIZER, reply;
  bson_error_t be;
  BSON_APPEND_INT32(&cmd, "buildInfo", 1);
  char version[64] = "?", flavour[32] = "";
  if (mongoc_client_command_simple(d->eng->mongo, "admin", &cmd, NULL, &reply, &be)) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, &reply, "version") && BSON_ITER_HOLDS_UTF8(&it))
      snprintf(version, sizeof version, "%s", bson_iter_utf8(&it, NULL));
    /* FerretDB answers with ferretdbVersion / ferretdbFeatures (as bronze_tuning.c checks) */
    if (bson_iter_init(&it, &reply))
      while (bson_iter_next(&it))
        if (strncmp(bson_iter_key(&it), "ferretdb", 8) == 0) snprintf(flavour, sizeof flavour, " (FerretDB)");
  }
  bson_destroy(&reply);
  bson_destroy(&cmd);
  const mongoc_host_list_t *h = mongoc_uri_get_hosts(mongoc_client_get_uri(d->eng->mongo));
  dp_doctor_report(d, DP_DOCTOR_OK, "mongodb", NULL, "MongoDB %s%s at %s", version, flavour, h ? h->host_and_port : "?");
  d->mongo_ok = 1;
  dp_bronze_tuning_doctor(d); /* bronze on FerretDB: tuned? (bronze_tuning.c) */
}

static void check_metadata(dp_doctor *d) {
  dp_engine *eng = d->eng;
  dp_err e;
  dp_err_clear(&e);
  if (!eng->L && !(eng->L = dp_lua_new(&eng->cfg, &e))) {
    dp_doctor_report(d, DP_DOCTOR_FAIL, "metadata", "set DP_HOME to the engine's folder", "%s", e.msg);
    return;
  }
  dp_meta_check_all_connectors(eng->L); /* check every system's connector, as validate does */
  dp_snapshot *meta = NULL;
  if (dp_load_metadata(eng, &meta, &e)) {
    int mongo = strcmp(eng->cfg.metadata, "mongo") == 0;
    dp_doctor_report(d, DP_DOCTOR_FAIL, "metadata",
                     mongo && e.code != DP_EMETA
                         ? "push a metadata folder first (`dp-engine metadata push --dir DIR`), or set DP_METADATA to the folder"
                         : "correct the metadata (`dp-engine metadata validate` lists the errors)",
                     "%s", e.msg);
    return;
  }
  char a[48], b[48], c[48];
  dp_doctor_report(d, DP_DOCTOR_OK, "metadata", NULL, "%s is valid: %s, %s, %s",
                   meta->source ? meta->source : eng->cfg.metadata,
                   dp_cli_count(a, sizeof a, meta->nsystems, "system", "systems"),
                   dp_cli_count(b, sizeof b, meta->nentities, "entity", "entities"),
                   dp_cli_count(c, sizeof c, meta->ntargets - meta->nsystems, "gold model", "gold models"));
  dp_snapshot_unref(meta);
  d->have_facts = dp_bridge_doctor_facts(eng->L, &d->facts, &e) == 0;
}

/* How many of the secrets the metadata refers to are not found as DP_SECRET_<NAME> or a file in
 * DP_SECRETS_DIR (the store cannot be opened without a master key). */
static size_t secrets_not_found(dp_doctor *d) {
  dp_secrets_config sc;
  dp_err e;
  dp_err_clear(&e);
  if (dp_secrets_config_from_env(d->eng->cfg.data_dir, &sc, &e)) return d->facts.nsecrets;
  size_t missing = 0;
  for (size_t i = 0; i < d->facts.nsecrets; i++) {
    unsigned char *v = NULL;
    size_t len = 0;
    dp_secret_source src;
    char where[512];
    if (dp_secret_lookup(&sc, d->facts.secrets[i], &v, &len, &src, where, sizeof where, &e) == 0 &&
        src != DP_SECRET_FROM_STORE)
      sodium_free(v);
    else {
      if (v) sodium_free(v);
      missing++;
    }
  }
  dp_secrets_config_free(&sc);
  return missing;
}

static void check_secrets(dp_doctor *d) {
  size_t nrefs = d->have_facts ? d->facts.nsecrets : 0;
  dp_secrets_key key;
  dp_err e;
  dp_err_clear(&e);
  int rc = dp_secrets_key_from_env("DP_MASTER_KEY", &key, &e);
  const char *set_a = dp_config_env("DP_MASTER_KEY"), *set_b = dp_config_env("DP_MASTER_KEY_FILE");
  if (rc && !(set_a && *set_a) && !(set_b && *set_b)) {
    size_t missing = nrefs ? secrets_not_found(d) : 0;
    if (nrefs && missing == 0)
      dp_doctor_report(d, DP_DOCTOR_OK, "secrets", NULL,
                       "no master key; every secret the metadata refers to (%zu) is given as DP_SECRET_<NAME> or a file",
                       nrefs);
    else if (nrefs)
      dp_doctor_report(d, DP_DOCTOR_FAIL, "secrets",
                       "set DP_MASTER_KEY_FILE (or DP_MASTER_KEY) to the store's key, or give each secret as "
                       "DP_SECRET_<NAME> or a file in DP_SECRETS_DIR (docs/secrets.md)",
                       "no master key, and %zu of the %zu secret%s the metadata refers to %s not given otherwise",
                       missing, nrefs, nrefs == 1 ? "" : "s", missing == 1 ? "is" : "are");
    else
      dp_doctor_report(d, DP_DOCTOR_WARN, "secrets",
                       "only needed when metadata refers to secrets; make one with `dp-engine secrets gen-key`",
                       "no master key (DP_MASTER_KEY_FILE or DP_MASTER_KEY): the secret store cannot be opened");
    return;
  }
  if (rc) {
    dp_doctor_report(d, DP_DOCTOR_FAIL, "secrets",
                     rc == DP_EKEY ? "give the key as 44 base64 characters or 64 hex digits (`dp-engine secrets gen-key`)"
                                   : "set one of DP_MASTER_KEY_FILE (a readable file) or DP_MASTER_KEY, not both",
                     "%s", e.msg);
    return;
  }
  dp_secrets_config sc;
  if (dp_secrets_config_from_env(d->eng->cfg.data_dir, &sc, &e)) {
    dp_secrets_key_wipe(&key);
    dp_doctor_report(d, DP_DOCTOR_FAIL, "secrets", "see the message", "%s", e.msg);
    return;
  }
  dp_secret_store st;
  rc = dp_secret_store_load(sc.file, &key, &st, &e);
  dp_secrets_key_wipe(&key);
  if (rc)
    dp_doctor_report(d, DP_DOCTOR_FAIL, "secrets",
                     "use the key the store was sealed with (`dp-engine secrets rotate-key` changes it)", "%s", e.msg);
  else if (!st.exists)
    dp_doctor_report(d, DP_DOCTOR_OK, "secrets", NULL, "master key present; no store yet at %s (`dp-engine secrets set` makes it)",
                     sc.file);
  else
    dp_doctor_report(d, DP_DOCTOR_OK, "secrets", NULL, "master key opens %s (%zu secret%s)", sc.file, st.n,
                     st.n == 1 ? "" : "s");
  if (rc == 0) dp_secret_store_free(&st);
  dp_secrets_config_free(&sc);
}

/* Runs fn(d, system, value) for every fact of the list (check: its name, for the warning when
 * the metadata check failed). */
static void each_fact(dp_doctor *d, const char *check, const dp_doctor_fact *v, size_t n,
                      void (*fn)(dp_doctor *, const char *, const char *)) {
  if (!d->have_facts) {
    dp_doctor_report(d, DP_DOCTOR_WARN, check, "fix the metadata check first", "skipped: the metadata is not valid");
    return;
  }
  for (size_t i = 0; i < n; i++) fn(d, v[i].system, v[i].value);
}

static void one_inbox(dp_doctor *d, const char *system, const char *inbox) {
  char check[200], path[4200];
  snprintf(check, sizeof check, "inbox %s", system);
  if (inbox[0] == '/') snprintf(path, sizeof path, "%s", inbox);
  else snprintf(path, sizeof path, "%s/%s", d->eng->cfg.data_dir, inbox);
  DIR *dir = opendir(path);
  if (!dir) {
    char fix[4400];
    int err = errno;
    if (err == EACCES)
      snprintf(fix, sizeof fix, "give the engine's user read access to %s (chmod or chown)", path);
    else if (err == ENOTDIR)
      snprintf(fix, sizeof fix, "the inbox must be a folder: move the file %s away and create the folder", path);
    else
      snprintf(fix, sizeof fix, "create it (mkdir -p %s) and drop the system's exports there", path);
    errno = err;
    dp_doctor_report(d, DP_DOCTOR_FAIL, check, fix, "%s cannot be read: %m", path);
    return;
  }
  size_t files = 0;
  struct dirent *de;
  while ((de = readdir(dir)) != NULL)
    if (de->d_name[0] != '.') files++;
  closedir(dir);
  dp_doctor_report(d, DP_DOCTOR_OK, check, NULL, "%s (%zu file%s)", path, files, files == 1 ? "" : "s");
}

static void check_inboxes(dp_doctor *d) { each_fact(d, "inboxes", d->facts.inboxes, d->facts.ninboxes, one_inbox); }

static size_t discard(char *p, size_t s, size_t n, void *ud) { (void)p; (void)ud; return s * n; }

static void one_rest(dp_doctor *d, const char *system, const char *base_url) {
  char check[200];
  snprintf(check, sizeof check, "rest %s", system);
  CURLU *u = curl_url();
  char *host = NULL;
  if (!u || curl_url_set(u, CURLUPART_URL, base_url, 0) != CURLUE_OK || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
    dp_doctor_report(d, DP_DOCTOR_FAIL, check, "give base_url as an absolute http(s) URL", "base_url %s is not a URL", base_url);
    curl_url_cleanup(u);
    return;
  }
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  const char *h = host;
  char bare[256];
  if (h[0] == '[') { snprintf(bare, sizeof bare, "%.*s", (int)strcspn(h + 1, "]"), h + 1); h = bare; } /* [::1] */
  int gai = getaddrinfo(h, NULL, &hints, &res);
  if (gai != 0) {
    dp_doctor_report(d, DP_DOCTOR_FAIL, check, "check base_url's host name and this machine's DNS",
                     "host %s of %s does not resolve: %s", host, base_url, gai_strerror(gai));
  } else if (!d->network) {
    dp_doctor_report(d, DP_DOCTOR_OK, check, NULL, "host %s resolves (no request sent; --network sends one)", host);
  } else {
    CURL *c = curl_easy_init();
    long status = 0;
    CURLcode cc = CURLE_FAILED_INIT;
    if (c) {
      curl_easy_setopt(c, CURLOPT_URL, base_url);
      curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
      curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
      curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
      curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
      cc = curl_easy_perform(c);
      curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
      curl_easy_cleanup(c);
    }
    if (cc == CURLE_OK)
      dp_doctor_report(d, DP_DOCTOR_OK, check, NULL, "%s answers HTTP %ld to a HEAD request", base_url, status);
    else
      dp_doctor_report(d, DP_DOCTOR_FAIL, check, "check that the service is up and reachable from this machine",
                       "%s: %s", base_url, curl_easy_strerror(cc));
  }
  if (res) freeaddrinfo(res);
  curl_free(host);
  curl_url_cleanup(u);
}

static void check_rest(dp_doctor *d) { each_fact(d, "rest", d->facts.rest, d->facts.nrest, one_rest); }

static void check_disk(dp_doctor *d) {
  const char *dir = d->eng->cfg.data_dir;
  struct statvfs fs;
  char fix[4400];
  snprintf(fix, sizeof fix, "create it (mkdir -p %s) or set DP_DATA_DIR to a writable folder", dir);
  struct stat sb;
  if (stat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
    dp_doctor_report(d, DP_DOCTOR_FAIL, "disk", "set DP_DATA_DIR to a folder", "DP_DATA_DIR %s is not a folder", dir);
    return;
  }
  if (statvfs(dir, &fs) != 0 || access(dir, W_OK) != 0) {
    dp_doctor_report(d, DP_DOCTOR_FAIL, "disk", fix, "DP_DATA_DIR %s is not a writable folder: %m", dir);
    return;
  }
  double gib = 1024.0 * 1024.0 * 1024.0;
  double avail = (double)fs.f_bavail * fs.f_frsize, total = (double)fs.f_blocks * fs.f_frsize;
  double pct = total > 0 ? 100.0 * avail / total : 0;
  int low = avail < gib || pct < 5.0;
  dp_doctor_report(d, low ? DP_DOCTOR_WARN : DP_DOCTOR_OK, "disk",
                   low ? "free space: raw files and bronze grow with every run (retention, docs/data-flow.md)" : NULL,
                   "%s: %.1f GiB free of %.1f GiB (%.0f%%)", dir, avail / gib, total / gib, pct);
}

static void check_bronze_settings(dp_doctor *d) {
  dp_err e;
  size_t mem;
  int writers;
  dp_bronze_settings(&mem, &writers);
  if (dp_bronze_settings_init(&e) != 0)
    dp_doctor_report(d, DP_DOCTOR_FAIL, "bronze settings", "unset it or give a value in range (docs/index.md)", "%s",
                     e.msg);
  else
    dp_doctor_report(d, DP_DOCTOR_OK, "bronze settings", NULL, "sorts %zu bytes in memory (DP_SORT_MEM), %d writers "
                     "(DP_BRONZE_WRITERS)", mem, writers);
}

/* The checks, in order; a check that needs an earlier one reads what that one left in d. */
static const struct { const char *name; dp_doctor_check_fn fn; } CHECKS[] = {
    {"engine home", check_home},
    {"scripts", check_scripts},
    {"postgres", check_postgres},
    {"migrations", check_migrations},
    {"mongodb", check_mongodb},
    {"metadata", check_metadata},
    {"secrets", check_secrets},
    {"inboxes", check_inboxes},
    {"rest", check_rest},
    {"disk", check_disk},
    {"bronze settings", check_bronze_settings},
};

/* The arguments of doctor: 0, or a usage error's exit code. */
static int doctor_args(dp_doctor *d, int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--network") == 0) d->network = 1;
    else if (strcmp(argv[i], "--json") == 0) d->json = 1;
    else return dp_cli_usage_error(DOCTOR_USAGE, "unexpected argument: %s", argv[i]);
  }
  return 0;
}

/* The end of doctor's output: the JSON document, or the count of failed checks. */
static int doctor_end(dp_doctor *d, const char *note) {
  if (d->json) {
    printf("{\"ok\":%s,\"checks\":[%s]}\n", d->failed ? "false" : "true", d->out.data ? d->out.data : "");
  } else if (d->failed) {
    printf("\n%d check%s failed%s\n", d->failed, d->failed == 1 ? "" : "s", note ? note : "");
  }
  dp_buf_free(&d->out);
  dp_doctor_facts_free(&d->facts);
  return d->failed ? DP_EXIT_RUN_FAILED : DP_EXIT_OK;
}

int dp_cmd_doctor_without_home(const dp_err *why, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(DOCTOR_USAGE, stdout); return DP_EXIT_OK; }
  dp_doctor d;
  memset(&d, 0, sizeof d);
  d.out = (dp_buf)DP_BUF_INIT;
  int rc = doctor_args(&d, argc, argv);
  if (rc) return rc;
  dp_doctor_report(&d, DP_DOCTOR_FAIL, "engine home", "set DP_HOME to the folder that holds lua/ and migrations/", "%s",
                   why->msg);
  return doctor_end(&d, " (the other checks need the engine home)");
}

int dp_cmd_doctor(dp_engine *eng, int argc, char **argv) {
  if (dp_cli_wants_help(argc, argv)) { fputs(DOCTOR_USAGE, stdout); return DP_EXIT_OK; }
  dp_doctor d;
  memset(&d, 0, sizeof d);
  d.eng = eng;
  d.out = (dp_buf)DP_BUF_INIT;
  int rc = doctor_args(&d, argc, argv);
  if (rc) return rc;
  for (size_t i = 0; i < sizeof CHECKS / sizeof CHECKS[0]; i++) CHECKS[i].fn(&d);
  return doctor_end(&d, NULL);
}
