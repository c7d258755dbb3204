/* cmd_init.c - dp-engine init system|connector: scaffolds metadata (columns inferred from
 * sample exports) or a connector (docs/init.md). The work is Lua's (lua/dp/scaffold.lua, through
 * engine.init_system / init_connector); this file parses the arguments and writes the files it
 * returns, each to a temporary name, fsynced and renamed over the target. */
#include "cli.h"
#include "luabridge.h"

#include <errno.h>
#include <fcntl.h>
#include <lua.h>
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

/* The result table is on top: writes result.files (all temporaries first, then the renames).
 * Returns 0, or prints the failure and returns DP_EXIT_RUN_FAILED. */
static int write_files(lua_State *L, const char *cmd) {
  lua_getfield(L, -1, "files");
  int n = (int)lua_objlen(L, -1);
  int rc = 0, made = 0;
  char tmp[4200];
  for (int i = 1; i <= n && rc == 0; i++, made++) {
    lua_rawgeti(L, -1, i);
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "text");
    const char *path = lua_tostring(L, -2);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    snprintf(tmp, sizeof tmp, "%s.init-tmp", path);
    if (make_parent(path) != 0 || write_temp(tmp, text, len) != 0) {
      fprintf(stderr, "dp-engine %s: cannot write %s: %s (nothing written)\n", cmd, path, strerror(errno));
      unlink(tmp);
      rc = DP_EXIT_RUN_FAILED;
    }
    lua_pop(L, 3);
  }
  for (int i = 1; i <= n; i++) { /* rename, or on failure remove the temporaries */
    lua_rawgeti(L, -1, i);
    lua_getfield(L, -1, "path");
    const char *path = lua_tostring(L, -1);
    snprintf(tmp, sizeof tmp, "%s.init-tmp", path);
    if (rc != 0) {
      if (i <= made) unlink(tmp);
    } else if (rename(tmp, path) != 0) {
      fprintf(stderr, "dp-engine %s: cannot rename %s to %s: %s\n", cmd, tmp, path, strerror(errno));
      unlink(tmp);
      rc = DP_EXIT_RUN_FAILED;
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  return rc;
}

/* Prints result.report and then "wrote X" (or "would write X" and the text, dry run). */
static void print_result(lua_State *L, int dry_run) {
  lua_getfield(L, -1, "report");
  if (lua_isstring(L, -1)) printf("%s\n", lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_getfield(L, -1, "written");
  int n = (int)lua_objlen(L, -1);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    printf("%s %s\n", dry_run ? "would write" : "wrote", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (!dry_run) return;
  lua_getfield(L, -1, "files");
  n = (int)lua_objlen(L, -1);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "text");
    printf("\n--- %s\n%s", lua_tostring(L, -2), lua_tostring(L, -1));
    lua_pop(L, 3);
  }
  lua_pop(L, 1);
}

static void set_str(lua_State *L, const char *key, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, key);
}

int dp_cmd_init(dp_engine *eng, int argc, char **argv) {
  if (argc == 0) { fputs(INIT_USAGE, stderr); return DP_EXIT_USAGE; }
  if (dp_cli_wants_help(argc, argv)) { fputs(INIT_USAGE, stdout); return DP_EXIT_OK; }
  const char *what = argv[0];
  int is_system = strcmp(what, "system") == 0;
  if (!is_system && strcmp(what, "connector") != 0)
    return dp_cli_usage_error(INIT_USAGE, "unknown init command: %s (system or connector)", what);
  const char *cmd = is_system ? "init system" : "init connector";
  static const char *const value_opts[] = {"--type", "--from", "--entity", "--dir", "--base-url", "--path", "--nested", NULL};
  const char *name = NULL, *type = NULL, *dir = NULL, *base_url = NULL, *path = NULL, *nested = NULL;
  int dry_run = 0;
  dp_err e;
  dp_err_clear(&e);
  if (!eng->L && !(eng->L = dp_lua_new(&eng->cfg, &e))) return dp_cli_exit(cmd, &e);
  lua_State *L = eng->L;
  int base = lua_gettop(L);
  lua_newtable(L); /* opts */
  lua_newtable(L); /* opts.samples */
  int nsamples = 0, entity_pending = 0;
  const char *orphan_entity = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int rc = dp_cli_missing_value(argc, argv, i, value_opts, INIT_USAGE);
    if (rc) { lua_settop(L, base); return rc; }
    int sys_only = strcmp(a, "--type") == 0 || strcmp(a, "--from") == 0 || strcmp(a, "--entity") == 0 ||
                   strcmp(a, "--dir") == 0 || strcmp(a, "--base-url") == 0 || strcmp(a, "--path") == 0 ||
                   strcmp(a, "--nested") == 0;
    if (sys_only && !is_system) {
      lua_settop(L, base);
      return dp_cli_usage_error(INIT_USAGE, "init connector takes no %s", a);
    }
    if (strcmp(a, "--dry-run") == 0) dry_run = 1;
    else if (strcmp(a, "--type") == 0) type = argv[++i];
    else if (strcmp(a, "--dir") == 0) dir = argv[++i];
    else if (strcmp(a, "--base-url") == 0) base_url = argv[++i];
    else if (strcmp(a, "--path") == 0) path = argv[++i];
    else if (strcmp(a, "--nested") == 0) nested = argv[++i];
    else if (strcmp(a, "--from") == 0) {
      lua_newtable(L);
      lua_pushstring(L, argv[++i]);
      lua_setfield(L, -2, "file");
      lua_rawseti(L, -2, ++nsamples);
      entity_pending = 1;
    } else if (strcmp(a, "--entity") == 0) {
      const char *ename = argv[++i];
      if (!entity_pending) { orphan_entity = ename; continue; }
      /* names the samples since the previous --entity */
      for (int k = nsamples; k >= 1; k--) {
        lua_rawgeti(L, -1, k);
        lua_getfield(L, -1, "entity");
        int named = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (named) { lua_pop(L, 1); break; }
        lua_pushstring(L, ename);
        lua_setfield(L, -2, "entity");
        lua_pop(L, 1);
      }
      entity_pending = 0;
    } else if (a[0] != '-' && !name) name = a;
    else {
      lua_settop(L, base);
      return dp_cli_usage_error(INIT_USAGE, "unexpected argument: %s", a);
    }
  }
  if (!name) {
    lua_settop(L, base);
    return dp_cli_usage_error(INIT_USAGE, "%s needs a NAME", cmd);
  }
  if (is_system && !type) {
    lua_settop(L, base);
    return dp_cli_usage_error(INIT_USAGE, "%s needs --type file or --type rest", cmd);
  }
  if (orphan_entity) {
    lua_settop(L, base);
    fprintf(stderr, "dp-engine %s: --entity %s needs a --from SAMPLE before it (an entity needs columns)\n", cmd,
            orphan_entity);
    return DP_EXIT_USAGE;
  }
  lua_setfield(L, -2, "samples");
  set_str(L, "name", name);
  set_str(L, "type", type);
  set_str(L, "dir", dir ? dir : eng->cfg.metadata);
  set_str(L, "base_url", base_url);
  set_str(L, "path", path);
  set_str(L, "nested", nested);
  if (is_system && !dir && strcmp(eng->cfg.metadata, "mongo") == 0) {
    lua_settop(L, base);
    fprintf(stderr, "dp-engine %s: DP_METADATA is mongo: give the metadata folder to write with --dir DIR "
                    "(then dp-engine metadata push --dir DIR)\n", cmd);
    return DP_EXIT_USAGE;
  }
  lua_getglobal(L, "__dp_engine");
  lua_getfield(L, -1, is_system ? "init_system" : "init_connector");
  lua_remove(L, -2);
  lua_insert(L, -2);
  if (dp_lua_pcall(L, 1, 2, &e)) { lua_settop(L, base); return dp_cli_exit(cmd, &e); }
  if (lua_isnil(L, -2)) {
    fprintf(stderr, "dp-engine %s: %s\n", cmd, lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_settop(L, base);
    return DP_EXIT_USAGE;
  }
  lua_pop(L, 1);
  int rc = DP_EXIT_OK;
  if (!dry_run) rc = write_files(L, cmd);
  if (rc == DP_EXIT_OK) print_result(L, dry_run);
  lua_settop(L, base);
  return rc;
}
