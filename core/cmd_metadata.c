/* cmd_metadata.c - dp-engine metadata validate|push|show. */
#include "cli.h"
#include "version.h"
#include "json.h"
#include "luabridge.h"
#include "metastore.h"
#include "run.h"

#include <limits.h>
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

/* Loads and validates the metadata into *meta (e set on error, nothing printed). */
static int load_meta(dp_engine *eng, dp_snapshot **meta, dp_err *e) {
  /* validate, push and show check every system's connector, a disabled system's too (each
   * under the script load time limit); runs load only enabled systems' (lua/dp/engine.lua) */
  if (!eng->L && !(eng->L = dp_lua_new(&eng->cfg, e))) return e->code;
  dp_meta_check_all_connectors(eng->L);
  return dp_load_metadata(eng, meta, e);
}

/* Loads and validates the metadata into *meta; on error prints "dp-engine metadata CMD: ..."
 * and returns the exit class (invalid metadata or configuration 2, MongoDB unreachable or
 * failing 1). */
static int load(dp_engine *eng, const char *cmd, dp_snapshot **meta) {
  dp_err e;
  dp_err_clear(&e);
  if (load_meta(eng, meta, &e) == 0) return 0;
  return dp_cli_exit(cmd, &e);
}

/* validate --json: one document on stdout; the errors are the lines of the message after its
 * first ("invalid metadata in DIR:"), or the whole message for any other failure. */
static int validate_json(dp_engine *eng) {
  dp_err e;
  dp_err_clear(&e);
  dp_buf b = DP_BUF_INIT;
  dp_snapshot *meta = NULL;
  int rc = load_meta(eng, &meta, &e);
  if (rc == 0) {
    dp_buf_puts(&b, "{\"valid\":true,\"source\":");
    const char *src = meta->source ? meta->source : eng->cfg.metadata;
    dp_json_put_string(&b, src, strlen(src));
    dp_buf_printf(&b, ",\"hash\":\"%s\",\"systems\":%zu,\"entities\":%zu,\"gold_models\":%zu}",
                  meta->hash ? meta->hash : "", meta->nsystems, meta->nentities, meta->ntargets - meta->nsystems);
    dp_snapshot_unref(meta);
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
  dp_snapshot *meta;
  int rc = load(eng, "metadata validate", &meta);
  if (rc) return rc;
  char a[48], b[48], c[48];
  printf("metadata in %s is valid: %s, %s, %s (hash %.12s)\n", meta->source ? meta->source : eng->cfg.metadata,
         dp_cli_count(a, sizeof a, meta->nsystems, "system", "systems"),
         dp_cli_count(b, sizeof b, meta->nentities, "entity", "entities"),
         dp_cli_count(c, sizeof c, meta->ntargets - meta->nsystems, "gold model", "gold models"),
         meta->hash ? meta->hash : "?");
  dp_snapshot_unref(meta);
  return DP_EXIT_OK;
}

static int cmd_push(dp_engine *eng) {
  if (strcmp(eng->cfg.metadata, "mongo") == 0) {
    fprintf(stderr, "dp-engine metadata push: push reads a metadata folder: give --dir DIR or set DP_METADATA "
                    "to a folder (it is \"mongo\")\n");
    return DP_EXIT_USAGE;
  }
  dp_snapshot *meta;
  int rc = load(eng, "metadata push", &meta); /* invalid metadata: exit 2 before MongoDB is touched */
  if (rc) return rc;
  dp_snapshot_unref(meta);
  dp_metastore_set set;
  dp_err e;
  dp_err_clear(&e);
  if ((rc = dp_meta_push_set(eng->L, &set, &e)) != 0) return dp_cli_exit("metadata push", &e);
  char abs[PATH_MAX];
  set.source = realpath(eng->cfg.metadata, abs) ? abs : eng->cfg.metadata;
  set.engine_version = DP_VERSION;
  const char *hook = getenv("DP_TEST_PUSH_FAIL");
  set.fail_after_staging = hook && strcmp(hook, "after-staging") == 0;

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
  set.source = NULL;
  dp_meta_push_set_free(&set);
  if (rc == 0) return DP_EXIT_OK;
  return dp_cli_exit("metadata push", &e);
}

static int cmd_show(dp_engine *eng, const char *name, int as_json) {
  dp_snapshot *meta;
  int rc = load(eng, "metadata show", &meta);
  if (rc) return rc;
  dp_snapshot_unref(meta);
  dp_err e;
  dp_err_clear(&e);
  char *text;
  if (dp_meta_show(eng->L, name, as_json, &text, &e) != 0) return dp_cli_exit("metadata show", &e);
  fputs(text, stdout);
  free(text);
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
