/* cmd_metadata.c - dp-engine metadata validate|push|show. */
#include "cli.h"
#include "version.h"
#include "json.h"
#include "luabridge.h"
#include "metastore.h"
#include "run.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const char *METADATA_USAGE =
    "usage: dp-engine metadata validate [--dir DIR] [--json]\n"
    "       dp-engine metadata push [--dir DIR]\n"
    "       dp-engine metadata show [NAME] [--json] [--dir DIR]\n"
    "\n"
    "validate  checks systems.json, entities.json and gold.json and prints every error with\n"
    "          file, JSON path and rule; --json: {\"valid\", \"source\", \"hash\", \"systems\",\n"
    "          \"entities\", \"gold_models\"} or {\"valid\": false, \"source\", \"errors\": [...]}\n"
    "push      validates a folder, then stores it in MongoDB (database DP_METADATA_DB, default\n"
    "          metadata) and makes it current in one atomic step; DP_METADATA=mongo reads it\n"
    "show      prints the validated metadata: all, one system, one entity (system.entity) or\n"
    "          one gold model; --json for JSON\n"
    "\n"
    "Metadata is read from DIR, else DP_METADATA (a folder, or mongo), else ./metadata.\n"
    "Exit codes: 0 success, 1 MongoDB failed or could not be reached, 2 invalid metadata or usage.\n";

/* The validated meta table is on top of the stack. */
static void counts(lua_State *L, size_t *ns, size_t *ne, size_t *ng) {
  lua_getfield(L, -1, "systems");
  *ns = lua_objlen(L, -1);
  lua_getfield(L, -2, "entities");
  *ne = lua_objlen(L, -1);
  lua_getfield(L, -3, "gold");
  *ng = lua_objlen(L, -1);
  lua_pop(L, 3);
}

/* Loads and validates the metadata onto the stack (e set on error, nothing printed). */
static int load_meta(dp_engine *eng, dp_err *e) {
  /* validate, push and show check every system's connector, a disabled system's too (each
   * under the script load time limit); runs load only enabled systems' (lua/dp/engine.lua) */
  if (!eng->L && !(eng->L = dp_lua_new(&eng->cfg, e))) return e->code;
  lua_getglobal(eng->L, "__dp_engine");
  lua_pushboolean(eng->L, 1);
  lua_setfield(eng->L, -2, "all_connectors");
  lua_pop(eng->L, 1);
  return dp_load_metadata(eng, e);
}

/* Loads and validates the metadata; on error prints "dp-engine metadata CMD: ..." and returns
 * the exit class (invalid metadata or configuration 2, MongoDB unreachable or failing 1). */
static int load(dp_engine *eng, const char *cmd) {
  dp_err e;
  dp_err_clear(&e);
  if (load_meta(eng, &e) == 0) return 0;
  return dp_cli_exit(cmd, &e);
}

/* validate --json: one document on stdout; the errors are the lines of the message after its
 * first ("invalid metadata in DIR:"), or the whole message for any other failure. */
static int validate_json(dp_engine *eng) {
  dp_err e;
  dp_err_clear(&e);
  dp_buf b = DP_BUF_INIT;
  int rc = load_meta(eng, &e);
  if (rc == 0) {
    lua_State *L = eng->L;
    size_t ns, ne, ng;
    counts(L, &ns, &ne, &ng);
    char *hash = dp_lua_strfield(L, -1, "hash"), *source = dp_lua_strfield(L, -1, "source");
    dp_buf_puts(&b, "{\"valid\":true,\"source\":");
    const char *src = source ? source : eng->cfg.metadata;
    dp_json_put_string(&b, src, strlen(src));
    dp_buf_printf(&b, ",\"hash\":\"%s\",\"systems\":%zu,\"entities\":%zu,\"gold_models\":%zu}", hash ? hash : "", ns, ne,
                  ng);
    free(hash);
    free(source);
  } else {
    dp_buf_puts(&b, "{\"valid\":false,\"source\":");
    dp_json_put_string(&b, eng->cfg.metadata, strlen(eng->cfg.metadata));
    dp_buf_puts(&b, ",\"errors\":[");
    const char *p = e.msg, *nl = strchr(p, '\n');
    int n = 0;
    if (rc == DP_EMETA && nl) p = nl + 1;
    while (*p) {
      size_t len = strcspn(p, "\n");
      const char *t = p;
      while (len && *t == ' ') { t++; len--; }
      if (len) {
        if (n++) dp_buf_putc(&b, ',');
        dp_json_put_string(&b, t, len);
      }
      p = t + len;
      if (*p == '\n') p++;
    }
    dp_buf_puts(&b, "]}");
  }
  printf("%s\n", b.data);
  dp_buf_free(&b);
  if (rc) return dp_cli_exit("metadata validate", &e);
  return DP_EXIT_OK;
}

static int cmd_validate(dp_engine *eng) {
  int rc = load(eng, "metadata validate");
  if (rc) return rc;
  lua_State *L = eng->L;
  size_t ns, ne, ng;
  counts(L, &ns, &ne, &ng);
  char *hash = dp_lua_strfield(L, -1, "hash");
  char *source = dp_lua_strfield(L, -1, "source");
  char a[48], b[48], c[48];
  printf("metadata in %s is valid: %s, %s, %s (hash %.12s)\n", source ? source : eng->cfg.metadata,
         dp_cli_count(a, sizeof a, ns, "system", "systems"), dp_cli_count(b, sizeof b, ne, "entity", "entities"),
         dp_cli_count(c, sizeof c, ng, "gold model", "gold models"), hash ? hash : "?");
  free(hash);
  free(source);
  return DP_EXIT_OK;
}

/* Reads engine.push_documents(meta)[coll] into items (strings stay owned by the Lua table,
 * which the caller keeps on the stack). */
static int read_items(lua_State *L, int docs_idx, const char *coll, dp_metastore_item **items, size_t *n) {
  lua_getfield(L, docs_idx, coll);
  *n = lua_objlen(L, -1);
  *items = calloc(*n ? *n : 1, sizeof **items);
  if (!*items) return DP_ENOMEM;
  for (size_t i = 0; i < *n; i++) {
    lua_rawgeti(L, -1, (int)i + 1);
    lua_getfield(L, -1, "id");
    (*items)[i].id = lua_tostring(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, -1, "json");
    (*items)[i].json = lua_tostring(L, -1);
    lua_pop(L, 2); /* the strings stay referenced by the table */
  }
  lua_pop(L, 1);
  return 0;
}

static int cmd_push(dp_engine *eng) {
  if (strcmp(eng->cfg.metadata, "mongo") == 0) {
    fprintf(stderr, "dp-engine metadata push: push reads a metadata folder: give --dir DIR or set DP_METADATA "
                    "to a folder (it is \"mongo\")\n");
    return DP_EXIT_USAGE;
  }
  int rc = load(eng, "metadata push"); /* invalid metadata: exit 2 before MongoDB is touched */
  if (rc) return rc;
  lua_State *L = eng->L;
  int meta_idx = lua_gettop(L);
  dp_metastore_set set;
  memset(&set, 0, sizeof set);
  dp_metastore_item *items[DP_META_NFILES] = {NULL, NULL, NULL};
  dp_err e;
  dp_err_clear(&e);

  lua_getfield(L, meta_idx, "texts");
  for (int i = 0; i < DP_META_NFILES; i++) {
    lua_getfield(L, -1, dp_metastore_file(i));
    if (lua_type(L, -1) == LUA_TSTRING) set.texts[i] = lua_tolstring(L, -1, &set.lens[i]);
    lua_pop(L, 1); /* still referenced by meta.texts */
  }
  lua_pop(L, 1);
  lua_getfield(L, meta_idx, "hash");
  set.hash = lua_tostring(L, -1);
  lua_pop(L, 1);
  char abs[4096];
  set.source = realpath(eng->cfg.metadata, abs) ? abs : eng->cfg.metadata;
  set.engine_version = DP_VERSION;
  const char *hook = getenv("DP_TEST_PUSH_FAIL");
  set.fail_after_staging = hook && strcmp(hook, "after-staging") == 0;

  lua_getglobal(L, "__dp_engine");
  lua_getfield(L, -1, "push_documents");
  lua_remove(L, -2);
  lua_pushvalue(L, meta_idx);
  rc = dp_lua_pcall(L, 1, 1, &e);
  if (rc) goto cleanup;
  int docs_idx = lua_gettop(L);
  static const char *colls[DP_META_NFILES] = {"systems", "entities", "gold"};
  for (int i = 0; i < DP_META_NFILES && rc == 0; i++) {
    rc = read_items(L, docs_idx, colls[i], &items[i], &set.nitems[i]);
    set.items[i] = items[i];
  }
  if (rc) { dp_err_set(&e, rc, "out of memory"); goto cleanup; }

  rc = dp_engine_open_mongo(eng, &e);
  if (rc) goto cleanup;
  dp_metastore_pushed out;
  rc = dp_metastore_push(eng->mongo, eng->cfg.metadata_db, &set, &out, &e);
  if (rc) goto cleanup;
  if (out.unchanged)
    printf("metadata in %s is already current in MongoDB database %s (push %s, hash %.12s): nothing pushed\n",
           eng->cfg.metadata, eng->cfg.metadata_db, out.push_id, set.hash);
  else {
    char a[48], b[48], c[48];
    printf("pushed metadata in %s to MongoDB database %s: %s, %s, %s (push %s, hash %.12s)\n", eng->cfg.metadata,
           eng->cfg.metadata_db, dp_cli_count(a, sizeof a, set.nitems[0], "system", "systems"),
           dp_cli_count(b, sizeof b, set.nitems[1], "entity", "entities"),
           dp_cli_count(c, sizeof c, set.nitems[2], "gold model", "gold models"), out.push_id, set.hash);
  }

cleanup:
  for (int i = 0; i < DP_META_NFILES; i++) free(items[i]);
  lua_settop(L, meta_idx);
  if (rc == 0) return DP_EXIT_OK;
  return dp_cli_exit("metadata push", &e);
}

static int cmd_show(dp_engine *eng, const char *name, int as_json) {
  int rc = load(eng, "metadata show");
  if (rc) return rc;
  lua_State *L = eng->L;
  int meta_idx = lua_gettop(L);
  dp_err e;
  dp_err_clear(&e);
  lua_getglobal(L, "__dp_engine");
  lua_getfield(L, -1, "show");
  lua_remove(L, -2);
  lua_pushvalue(L, meta_idx);
  if (name) lua_pushstring(L, name);
  else lua_pushnil(L);
  lua_pushboolean(L, as_json);
  if (dp_lua_pcall(L, 3, 2, &e)) return dp_cli_exit("metadata show", &e);
  if (lua_isnil(L, -2)) { /* an unknown NAME */
    dp_err_set(&e, DP_ENOTFOUND, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_settop(L, meta_idx);
    return dp_cli_exit("metadata show", &e);
  }
  size_t n;
  const char *text = lua_tolstring(L, -2, &n);
  fwrite(text, 1, n, stdout);
  lua_settop(L, meta_idx);
  return DP_EXIT_OK;
}

int dp_cmd_metadata(dp_engine *eng, int argc, char **argv) {
  if (argc == 0 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
    fputs(METADATA_USAGE, argc == 0 ? stderr : stdout);
    return argc == 0 ? DP_EXIT_USAGE : DP_EXIT_OK;
  }
  const char *cmd = argv[0];
  int is_show = strcmp(cmd, "show") == 0;
  if (strcmp(cmd, "validate") != 0 && strcmp(cmd, "push") != 0 && !is_show)
    return dp_cli_usage_error(METADATA_USAGE, "unknown metadata command: %s", cmd);
  if (dp_cli_wants_help(argc, argv)) { fputs(METADATA_USAGE, stdout); return DP_EXIT_OK; }
  const char *name = NULL;
  int as_json = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      free(eng->cfg.metadata);
      eng->cfg.metadata = strdup(argv[++i]);
    } else if ((is_show || strcmp(cmd, "validate") == 0) && strcmp(argv[i], "--json") == 0) {
      as_json = 1;
    } else if (is_show && !name && argv[i][0] != '-') {
      name = argv[i];
    } else {
      return dp_cli_usage_error(METADATA_USAGE, "unexpected argument: %s", argv[i]);
    }
  }
  if (strcmp(cmd, "validate") == 0) return as_json ? validate_json(eng) : cmd_validate(eng);
  if (strcmp(cmd, "push") == 0) return cmd_push(eng);
  return cmd_show(eng, name, as_json);
}
