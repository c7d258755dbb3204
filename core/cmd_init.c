/* cmd_init.c - dp-engine init system|connector: scaffolds metadata (columns inferred from
 * sample exports) or a connector (docs/init.md). The work is Lua's (lua/dp/scaffold.lua, through
 * engine.init_system / init_connector); this file parses the arguments and writes the files it
 * returns, each to a temporary name, fsynced and renamed over the target. */
#include "cli.h"
#include "luabridge.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *INIT_USAGE =
    "usage: dp-engine init system NAME --type file|rest [--from SAMPLE [--entity E]]... [--dir DIR]\n"
    "                             [--base-url URL] [--path PATH] [--nested flatten|json] [--dry-run]\n"
    "       dp-engine init connector NAME [--dry-run]\n"
    "\n"
    "system     adds a system, and an entity per sample, to the metadata folder (DIR, else\n"
    "           DP_METADATA, else ./metadata): columns, types, nullability and a primary key\n"
    "           inferred from the sample (JSON Lines, JSON array, CSV, or a saved API response\n"
    "           for --type rest). Samples that give one entity name are read together; --entity\n"
    "           names the entity of the samples before it. Nothing existing is overwritten, and\n"
    "           the result validates.\n"
    "connector  writes DP_SCRIPTS/connectors/NAME.lua (a JSON HTTP API connector to adapt) and\n"
    "           DP_SCRIPTS/spec/NAME_connector_spec.lua\n"
    "--dry-run  prints what would be written, writes nothing\n"
    "\n"
    "Exit codes: 0 written, 2 usage, an existing name, an unreadable sample or invalid metadata.\n";

/* mkdir -p of the folder of path (path is not changed). 0, or -1 with errno. */
static int make_parent(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n >= sizeof buf) { errno = ENAMETOOLONG; return -1; }
  memcpy(buf, path, n + 1);
  char *slash = strrchr(buf, '/');
  if (!slash || slash == buf) return 0;
  *slash = '\0';
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
  return 0;
}

/* Writes text to path + ".init-tmp" and fsyncs it. 0, or -1 with errno. */
static int write_temp(const char *tmp, const char *text, size_t len) {
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) return -1;
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      close(fd);
      errno = saved;
      return -1;
    }
    off += (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0) return -1;
  return 0;
}

/* Writes r->files (all temporaries first, then the renames). Returns 0, or prints the failure
 * and returns DP_EXIT_RUN_FAILED. */
static int write_files(const dp_init_result *r, const char *cmd) {
  size_t n = r->nfiles, made = 0;
  int rc = 0;
  char tmp[4200];
  for (size_t i = 0; i < n && rc == 0; i++, made++) {
    const char *path = r->files[i].path;
    snprintf(tmp, sizeof tmp, "%s.init-tmp", path);
    if (make_parent(path) != 0 || write_temp(tmp, r->files[i].text, r->files[i].len) != 0) {
      rc = dp_cli_error(cmd, DP_EXIT_RUN_FAILED, "cannot write %s: %s (nothing written)", path, strerror(errno));
      unlink(tmp);
    }
  }
  for (size_t i = 0; i < n; i++) { /* rename, or on failure remove the temporaries */
    const char *path = r->files[i].path;
    snprintf(tmp, sizeof tmp, "%s.init-tmp", path);
    if (rc != 0) {
      if (i < made) unlink(tmp);
    } else if (rename(tmp, path) != 0) {
      rc = dp_cli_error(cmd, DP_EXIT_RUN_FAILED, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
      unlink(tmp);
    }
  }
  return rc;
}

/* Prints r->report and then "wrote X" (or "would write X" and the text, dry run). */
static void print_result(const dp_init_result *r, int dry_run) {
  if (r->report) printf("%s\n", r->report);
  for (size_t i = 0; i < r->nwritten; i++) printf("%s %s\n", dry_run ? "would write" : "wrote", r->written[i]);
  if (!dry_run) return;
  for (size_t i = 0; i < r->nfiles; i++) printf("\n--- %s\n%s", r->files[i].path, r->files[i].text);
}

/* The arguments after system|connector into o (samples: room for argc) and *dry_run. 0, or
 * the exit code of a usage error (printed). */
static int init_args(int argc, char **argv, const char *cmd, dp_init_sample *samples, dp_init_opts *o, int *dry_run) {
  static const char *const value_opts[] = {"--type", "--from", "--entity", "--dir", "--base-url", "--path", "--nested", NULL};
  int entity_pending = 0;
  const char *orphan_entity = NULL;
  o->samples = samples;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int rc = dp_cli_missing_value(argc, argv, i, value_opts, INIT_USAGE);
    if (rc) return rc;
    int sys_only = strcmp(a, "--type") == 0 || strcmp(a, "--from") == 0 || strcmp(a, "--entity") == 0 ||
                   strcmp(a, "--dir") == 0 || strcmp(a, "--base-url") == 0 || strcmp(a, "--path") == 0 ||
                   strcmp(a, "--nested") == 0;
    if (sys_only && !o->is_system) return dp_cli_usage_error(INIT_USAGE, "init connector takes no %s", a);
    if (strcmp(a, "--dry-run") == 0) *dry_run = 1;
    else if (strcmp(a, "--type") == 0) o->type = argv[++i];
    else if (strcmp(a, "--dir") == 0) o->dir = argv[++i];
    else if (strcmp(a, "--base-url") == 0) o->base_url = argv[++i];
    else if (strcmp(a, "--path") == 0) o->path = argv[++i];
    else if (strcmp(a, "--nested") == 0) o->nested = argv[++i];
    else if (strcmp(a, "--from") == 0) {
      samples[o->nsamples++] = (dp_init_sample){.file = argv[++i]};
      entity_pending = 1;
    } else if (strcmp(a, "--entity") == 0) {
      const char *ename = argv[++i];
      if (!entity_pending) { orphan_entity = ename; continue; }
      /* names the samples since the previous --entity */
      for (size_t k = o->nsamples; k >= 1 && !samples[k - 1].entity; k--) samples[k - 1].entity = ename;
      entity_pending = 0;
    } else if (a[0] != '-' && !o->name) o->name = a;
    else return dp_cli_usage_error(INIT_USAGE, "unexpected argument: %s", a);
  }
  if (!o->name) return dp_cli_usage_error(INIT_USAGE, "%s needs a NAME", cmd);
  if (o->is_system && !o->type) return dp_cli_usage_error(INIT_USAGE, "%s needs --type file or --type rest", cmd);
  if (orphan_entity) {
    return dp_cli_error(cmd, DP_EXIT_USAGE, "--entity %s needs a --from SAMPLE before it (an entity needs columns)",
                        orphan_entity);
  }
  return 0;
}

int dp_cmd_init(dp_engine *eng, int argc, char **argv) {
  if (argc == 0) { fputs(INIT_USAGE, stderr); return DP_EXIT_USAGE; }
  if (dp_cli_wants_help(argc, argv)) { fputs(INIT_USAGE, stdout); return DP_EXIT_OK; }
  const char *what = argv[0];
  int is_system = strcmp(what, "system") == 0;
  if (!is_system && strcmp(what, "connector") != 0)
    return dp_cli_usage_error(INIT_USAGE, "unknown init command: %s (system or connector)", what);
  const char *cmd = is_system ? "init system" : "init connector";
  dp_init_opts o = {.is_system = is_system};
  int dry_run = 0;
  dp_err e;
  dp_err_clear(&e);
  if (!eng->L && !(eng->L = dp_lua_new(&eng->cfg, &e))) return dp_cli_exit(cmd, &e);
  dp_init_sample *samples = calloc((size_t)argc, sizeof *samples);
  if (!samples) {
    dp_err_set(&e, DP_ENOMEM, "out of memory");
    return dp_cli_exit(cmd, &e);
  }
  int rc = init_args(argc, argv, cmd, samples, &o, &dry_run);
  if (rc == 0 && is_system && !o.dir && strcmp(eng->cfg.metadata, "mongo") == 0) {
    rc = dp_cli_error(cmd, DP_EXIT_USAGE, "DP_METADATA is mongo: give the metadata folder to write with --dir DIR "
                                          "(then dp-engine metadata push --dir DIR)");
  }
  if (rc) {
    free(samples);
    return rc;
  }
  if (!o.dir) o.dir = eng->cfg.metadata;
  dp_init_result r;
  rc = dp_bridge_init(eng->L, &o, &r, &e);
  free(samples);
  if (rc == DP_EINVAL) {
    dp_cli_error(cmd, DP_EXIT_USAGE, "%s", r.error);
    dp_init_result_free(&r);
    return DP_EXIT_USAGE;
  }
  if (rc) return dp_cli_exit(cmd, &e);
  rc = DP_EXIT_OK;
  if (!dry_run) rc = write_files(&r, cmd);
  if (rc == DP_EXIT_OK) print_result(&r, dry_run);
  dp_init_result_free(&r);
  return rc;
}
