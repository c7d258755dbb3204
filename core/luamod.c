/* luamod.c - the dp.core Lua module: the C core as seen from Lua (engine library and specs).
 * Misuse raises (luaL_error); runtime failures return nil, err. Userdata metatables are
 * registered once, with __gc. */
#include "bronze_tuning.h"
#include "cast.h"
#include "config.h"
#include "version.h"
#include "engine.h"
#include "gold.h"
#include "hash.h"
#include "http.h"
#include "cron.h"
#include "luapattern.h"
#include "inbox.h"
#include "json.h"
#include "jsonbson.h"
#include "luabridge.h"
#include "meta.h"
#include "pg.h"
#include "rawfile.h"
#include "record.h"
#include "secretlookup.h"
#include "uuid.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <lauxlib.h>
#include <lua.h>
#include <mongoc/mongoc.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


#define RAW_MT "dp.core.raw_writer"
#define PG_MT "dp.core.pg"
#define MONGO_MT "dp.core.mongo"

static int push_err(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

static int l_sha256(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  char hex[65];
  dp_sha256_hex(s, n, hex);
  lua_pushstring(L, hex);
  return 1;
}

static int l_json_compact(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  dp_buf b = DP_BUF_INIT;
  dp_err e;
  if (dp_json_compact(s, n, &b, &e) != 0) {
    dp_buf_free(&b);
    return push_err(L, e.msg);
  }
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  dp_buf_free(&b);
  return 1;
}

static int each_elem(void *ud, const char *elem, size_t n) {
  lua_State *L = ud;
  lua_pushlstring(L, elem, n);
  lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
  return 0;
}

static int l_json_array_elements(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  dp_err e;
  lua_newtable(L);
  if (dp_json_array_each(s, n, each_elem, L, &e) != 0) return push_err(L, e.msg);
  return 1;
}

/* json_select(text, path) -> compact text of the value at the dotted path | nil (absent) |
 * nil, err (malformed JSON: "invalid JSON at byte N: ..."). */
static int l_json_select(lua_State *L) {
  size_t n, pn;
  const char *s = luaL_checklstring(L, 1, &n);
  const char *path = luaL_optlstring(L, 2, "", &pn);
  const char *v;
  size_t vn;
  dp_err e;
  int rc = dp_json_select(s, n, path, pn, &v, &vn, &e);
  if (rc == DP_ENOTFOUND) return 0;
  if (rc) return push_err(L, e.msg);
  dp_buf b = DP_BUF_INIT;
  if (dp_json_compact(v, vn, &b, &e) != 0) {
    dp_buf_free(&b);
    return push_err(L, e.msg);
  }
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  dp_buf_free(&b);
  return 1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int l_listdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  /* links are not followed (nor listed): only the folder's own regular files */
  DIR *d = opendir(path);
  if (!d) return push_err(L, lua_pushfstring(L, "cannot open folder %s", path));
  int dfd = dirfd(d);
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.' && (de->d_name[1] == '\0' || (de->d_name[1] == '.' && de->d_name[2] == '\0')))
      continue;
    struct stat sb;
    if (fstatat(dfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode)) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 32;
      char **p = realloc(names, cap * sizeof *p);
      if (!p) break;
      names = p;
    }
    names[n++] = strdup(de->d_name);
  }
  closedir(d);
  if (n > 1) qsort(names, n, sizeof *names, cmp_str); /* not with NULL (UBSan) */
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, (int)i + 1);
    free(names[i]);
  }
  free(names);
  return 1;
}

static int l_fnmatch(lua_State *L) {
  lua_pushboolean(L, fnmatch(luaL_checkstring(L, 1), luaL_checkstring(L, 2), 0) == 0);
  return 1;
}

static int l_uuid_v7(lua_State *L) {
  uint8_t u[16];
  char s[37];
  dp_uuid_v7(u);
  dp_uuid_format(u, s);
  lua_pushstring(L, s);
  return 1;
}

/* hash({ {"integer", "1"}, {"string"} }) -> uuid text; a pair without a value is NULL. */
static int l_hash(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  dp_hasher h = {DP_BUF_INIT};
  size_t n = lua_objlen(L, 1);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, (int)i);
    luaL_checktype(L, -1, LUA_TTABLE);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    dp_type t;
    const char *tn = lua_tostring(L, -2);
    if (!tn || dp_type_parse(tn, &t) != 0) {
      dp_hasher_free(&h);
      return luaL_error(L, "hash: item %d has no valid type", (int)i);
    }
    size_t len = 0;
    const char *v = lua_isnil(L, -1) ? NULL : lua_tolstring(L, -1, &len);
    dp_hasher_add(&h, dp_type_tag(t), v, len);
    lua_pop(L, 3);
  }
  uint8_t out[16];
  char s[37];
  dp_hasher_digest(&h, out);
  dp_hasher_free(&h);
  dp_uuid_format(out, s);
  lua_pushstring(L, s);
  return 1;
}

/* Parses a JSON object text into a bson_t (caller destroys). */
static int parse_record(const char *s, size_t n, bson_t *out, dp_err *e) {
  if (dp_json_to_bson(s, n, out, e) != 0) {
    bson_destroy(out);
    return DP_EJSON;
  }
  return 0;
}

/* cast(column, json_value_text) -> true, canonical_text_or_nil | false, err */
static int l_cast(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t n;
  const char *v = luaL_checklstring(L, 2, &n);
  lua_newtable(L);
  lua_pushstring(L, "x");
  lua_setfield(L, -2, "system");
  lua_pushstring(L, "x");
  lua_setfield(L, -2, "name");
  lua_newtable(L);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lua_setfield(L, -2, "columns");
  dp_entity ent;
  dp_err e;
  if (dp_entity_from_lua(L, -1, &ent, &e) != 0) return luaL_error(L, "cast: %s", e.msg);
  free(ent.cols[0].path);
  ent.cols[0].path = strdup("v");
  dp_buf doc = DP_BUF_INIT;
  dp_buf_puts(&doc, "{\"v\":");
  dp_buf_append(&doc, v, n);
  dp_buf_puts(&doc, "}");
  bson_t rec;
  int nret;
  if (parse_record(doc.data, doc.len, &rec, &e) != 0) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, e.msg);
    nret = 2;
  } else {
    dp_row row;
    dp_row_init(&row, 1);
    if (dp_row_cast(&row, &ent, &rec, 0, &e) != 0) {
      lua_pushboolean(L, 0);
      lua_pushstring(L, e.msg);
    } else {
      lua_pushboolean(L, 1);
      if (row.null[0]) lua_pushnil(L);
      else lua_pushlstring(L, row.text.data + row.off[0], row.len[0]);
    }
    nret = 2;
    dp_row_free(&row);
    bson_destroy(&rec);
  }
  dp_buf_free(&doc);
  dp_entity_free(&ent);
  return nret;
}

/* row_hashes(entity, record_json) -> {key=, scd1=, scd2=} | nil, err */
static int l_row_hashes(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  dp_entity ent;
  dp_err e;
  if (dp_entity_from_lua(L, 1, &ent, &e) != 0) return luaL_error(L, "row_hashes: %s", e.msg);
  bson_t rec;
  if (parse_record(s, n, &rec, &e) != 0) {
    dp_entity_free(&ent);
    return push_err(L, e.msg);
  }
  dp_row row;
  dp_row_init(&row, ent.ncols);
  int nret;
  if (dp_row_cast(&row, &ent, &rec, 0, &e) != 0) {
    nret = push_err(L, e.msg);
  } else {
    static const char *names[] = {"key", "scd1", "scd2"};
    lua_newtable(L);
    for (int k = 0; k < 3; k++) {
      uint8_t h[16];
      char u[37];
      dp_row_hash(&row, &ent, k, h);
      dp_uuid_format(h, u);
      lua_pushstring(L, u);
      lua_setfield(L, -2, names[k]);
    }
    nret = 1;
  }
  dp_row_free(&row);
  bson_destroy(&rec);
  dp_entity_free(&ent);
  return nret;
}

/* ---------- raw writer ---------- */

typedef struct lraw {
  dp_raw_writer w;
  int open;
} lraw;

static int l_raw_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lraw *r = lua_newuserdata(L, sizeof *r);
  r->open = 0;
  luaL_getmetatable(L, RAW_MT);
  lua_setmetatable(L, -2);
  dp_err e;
  if (dp_raw_open(&r->w, path, &e) != 0) return push_err(L, e.msg);
  r->open = 1;
  return 1;
}

static lraw *check_raw(lua_State *L) {
  lraw *r = luaL_checkudata(L, 1, RAW_MT);
  if (!r->open) luaL_error(L, "raw writer is closed");
  return r;
}

static int l_raw_append(lua_State *L) {
  lraw *r = check_raw(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  dp_err e;
  if (dp_raw_append(&r->w, s, n, &e) != 0) return push_err(L, e.msg);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_raw_tmp_path(lua_State *L) {
  lraw *r = check_raw(L);
  lua_pushstring(L, r->w.tmp_path);
  return 1;
}

static int l_raw_commit(lua_State *L) {
  lraw *r = check_raw(L);
  uint64_t records = r->w.records, bytes = r->w.bytes;
  dp_err e;
  r->open = 0;
  if (dp_raw_commit(&r->w, &e) != 0) return push_err(L, e.msg);
  lua_newtable(L);
  lua_pushnumber(L, (lua_Number)records);
  lua_setfield(L, -2, "records");
  lua_pushnumber(L, (lua_Number)bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushstring(L, r->w.sha256_hex);
  lua_setfield(L, -2, "sha256");
  return 1;
}

static int l_raw_abort(lua_State *L) {
  lraw *r = luaL_checkudata(L, 1, RAW_MT);
  if (r->open) dp_raw_abort(&r->w);
  r->open = 0;
  return 0;
}

/* ---------- PostgreSQL (for specs and the engine library) ---------- */

typedef struct lpg {
  PGconn *c;
} lpg;

static int l_pg_connect(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  dp_err e;
  PGconn *c = dp_pg_connect(url, &e);
  if (!c) return push_err(L, e.msg);
  lpg *p = lua_newuserdata(L, sizeof *p);
  p->c = c;
  luaL_getmetatable(L, PG_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static lpg *check_pg(lua_State *L) {
  lpg *p = luaL_checkudata(L, 1, PG_MT);
  if (!p->c) luaL_error(L, "connection is closed");
  return p;
}

/* conn:query(sql, ...) -> rows (array of {column = text}); NULL is absent. */
static int l_pg_query(lua_State *L) {
  lpg *p = check_pg(L);
  const char *sql = luaL_checkstring(L, 2);
  int n = lua_gettop(L) - 2;
  const char **vals = calloc(n ? (size_t)n : 1, sizeof *vals);
  for (int i = 0; i < n; i++) vals[i] = lua_isnil(L, 3 + i) ? NULL : luaL_checkstring(L, 3 + i);
  PGresult *r = NULL;
  dp_err e;
  int rc = dp_pg_exec(p->c, sql, n, vals, &r, &e);
  free(vals);
  if (rc) return push_err(L, e.msg);
  dp_lua_push_pg_rows(L, r);
  PQclear(r);
  return 1;
}

static int l_pg_close(lua_State *L) {
  lpg *p = luaL_checkudata(L, 1, PG_MT);
  if (p->c) PQfinish(p->c);
  p->c = NULL;
  return 0;
}

/* ---------- MongoDB (for specs) ---------- */

typedef struct lmongo {
  mongoc_client_t *c;
} lmongo;

static int l_mongo_connect(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  bson_error_t be;
  mongoc_uri_t *uri = mongoc_uri_new_with_error(url, &be);
  if (!uri) return push_err(L, be.message);
  mongoc_client_t *c = mongoc_client_new_from_uri(uri);
  mongoc_uri_destroy(uri);
  if (!c) return push_err(L, "cannot create a MongoDB client");
  lmongo *m = lua_newuserdata(L, sizeof *m);
  m->c = c;
  luaL_getmetatable(L, MONGO_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static lmongo *check_mongo(lua_State *L) {
  lmongo *m = luaL_checkudata(L, 1, MONGO_MT);
  if (!m->c) luaL_error(L, "client is closed");
  return m;
}

static int json_arg(lua_State *L, int idx, bson_t *out, const char *def) {
  size_t n;
  const char *s = luaL_optlstring(L, idx, def, &n);
  bson_error_t be;
  if (!bson_init_from_json(out, s, (ssize_t)n, &be)) return luaL_error(L, "bad JSON argument: %s", be.message);
  return 0;
}

/* client:find(db, coll, filter_json[, opts_json]) -> array of relaxed extended JSON texts */
static int l_mongo_find(lua_State *L) {
  lmongo *m = check_mongo(L);
  const char *db = luaL_checkstring(L, 2), *cn = luaL_checkstring(L, 3);
  bson_t filter, opts;
  json_arg(L, 4, &filter, "{}");
  json_arg(L, 5, &opts, "{}");
  mongoc_collection_t *coll = mongoc_client_get_collection(m->c, db, cn);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
  const bson_t *doc;
  lua_newtable(L);
  int i = 0;
  while (mongoc_cursor_next(cur, &doc)) {
    char *js = bson_as_relaxed_extended_json(doc, NULL);
    lua_pushstring(L, js);
    lua_rawseti(L, -2, ++i);
    bson_free(js);
  }
  bson_error_t be;
  int bad = mongoc_cursor_error(cur, &be);
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(coll);
  bson_destroy(&filter);
  bson_destroy(&opts);
  if (bad) return push_err(L, be.message);
  return 1;
}

/* client:command(db, cmd_json) -> reply JSON | nil, err */
static int l_mongo_command(lua_State *L) {
  lmongo *m = check_mongo(L);
  const char *db = luaL_checkstring(L, 2);
  bson_t cmd, reply;
  json_arg(L, 3, &cmd, "{}");
  bson_error_t be;
  bool ok = mongoc_client_command_simple(m->c, db, &cmd, NULL, &reply, &be);
  bson_destroy(&cmd);
  if (!ok) {
    bson_destroy(&reply);
    return push_err(L, be.message);
  }
  char *js = bson_as_relaxed_extended_json(&reply, NULL);
  lua_pushstring(L, js);
  bson_free(js);
  bson_destroy(&reply);
  return 1;
}

/* client:export_bson(db, coll, path) -> count: every document of the collection, as it is, to a
 * file of concatenated BSON (what mongodump writes; bronze's change files have this format). */
static int l_mongo_export_bson(lua_State *L) {
  lmongo *m = check_mongo(L);
  const char *db = luaL_checkstring(L, 2), *cn = luaL_checkstring(L, 3), *path = luaL_checkstring(L, 4);
  FILE *f = fopen(path, "wb");
  if (!f) return push_err(L, "cannot create file");
  mongoc_collection_t *coll = mongoc_client_get_collection(m->c, db, cn);
  bson_t filter = BSON_INITIALIZER;
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, NULL, NULL);
  const bson_t *doc;
  size_t total = 0;
  int bad = 0;
  while (!bad && mongoc_cursor_next(cur, &doc)) {
    bad = fwrite(bson_get_data(doc), 1, doc->len, f) != doc->len;
    total++;
  }
  bson_error_t be;
  const char *why = bad ? "cannot write file" : mongoc_cursor_error(cur, &be) ? be.message : NULL;
  char msg[512];
  snprintf(msg, sizeof msg, "%s", why ? why : "");
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  mongoc_collection_destroy(coll);
  if (fclose(f) != 0 && !why) snprintf(msg, sizeof msg, "cannot write file"), why = msg;
  if (why) return push_err(L, msg);
  lua_pushnumber(L, (lua_Number)total);
  return 1;
}

/* client:insert_bson(db, coll, path) -> count: a plain libmongoc insert_many (unordered, 1000 per
 * batch) of the documents of a concatenated-BSON file, as they are. The baseline of the bronze
 * benchmark: the same documents bronze wrote, inserted without any of its work. */
static int l_mongo_insert_bson(lua_State *L) {
  lmongo *m = check_mongo(L);
  const char *db = luaL_checkstring(L, 2), *cn = luaL_checkstring(L, 3), *path = luaL_checkstring(L, 4);
  bson_error_t be;
  bson_reader_t *r = bson_reader_new_from_file(path, &be);
  if (!r) return push_err(L, be.message);
  mongoc_collection_t *coll = mongoc_client_get_collection(m->c, db, cn);
  bson_t *docs[1000];
  size_t n = 0, total = 0;
  int bad = 0;
  bool eof = false;
  const bson_t *doc;
  bson_t opts = BSON_INITIALIZER;
  BSON_APPEND_BOOL(&opts, "ordered", false);
  while (!bad && (doc = bson_reader_read(r, &eof)) != NULL) {
    docs[n++] = bson_copy(doc);
    if (n == 1000) {
      bad = !mongoc_collection_insert_many(coll, (const bson_t **)docs, n, &opts, NULL, &be);
      for (size_t i = 0; i < n; i++) bson_destroy(docs[i]);
      total += n;
      n = 0;
    }
  }
  if (!bad && (!eof || !dp_bson_file_whole(path, (long long)bson_reader_tell(r)))) {
    bad = 1;
    snprintf(be.message, sizeof be.message, "%s is not a whole BSON file", path);
  }
  if (!bad && n) bad = !mongoc_collection_insert_many(coll, (const bson_t **)docs, n, &opts, NULL, &be);
  total += n;
  for (size_t i = 0; i < n; i++) bson_destroy(docs[i]);
  bson_destroy(&opts);
  bson_reader_destroy(r);
  mongoc_collection_destroy(coll);
  if (bad) return push_err(L, be.message);
  lua_pushnumber(L, (lua_Number)total);
  return 1;
}

/* client:bronze_tuning([pg_url]) -> "ok" | "warn" | "error", message, fix (dp_bronze_tuning_check) */
static int l_mongo_bronze_tuning(lua_State *L) {
  lmongo *m = check_mongo(L);
  char msg[1024], fix[512];
  int st = dp_bronze_tuning_check(m->c, luaL_optstring(L, 2, NULL), msg, sizeof msg, fix, sizeof fix);
  lua_pushstring(L, st == DP_TUNING_OK ? "ok" : st == DP_TUNING_WARN ? "warn" : "error");
  lua_pushstring(L, msg);
  lua_pushstring(L, fix);
  return 3;
}

static int l_mongo_close(lua_State *L) {
  lmongo *m = luaL_checkudata(L, 1, MONGO_MT);
  if (m->c) mongoc_client_destroy(m->c);
  m->c = NULL;
  return 0;
}

static void new_mt(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_register(L, NULL, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
}

/* Concerns kept in their own files add their functions to the module through a registrar
 * (declared in their header): it receives the module table on top of the stack. */
typedef void (*dp_lua_registrar)(lua_State *L);
static const dp_lua_registrar registrars[] = {
    dp_secrets_lua_register, /* secretlookup.h: secret_get, redact, redact_register */
    dp_http_lua_register,    /* http.c: http_client, http_date, sleep, monotonic, time */
    dp_inbox_lua_register,   /* inbox.c: file_info, file_move */
    dp_gold_lua_register,    /* gold.c: gold_begin (builders for specs) */
    dp_cron_lua_register,    /* cron.c: cron_check, cron_next, cron_prev, tz_check, tz_offset */
    dp_pattern_lua_register, /* luapattern.c: str_find, str_match, str_gmatch, str_gsub */
    dp_script_lua_register,  /* luabridge.h: script_call, script_limits, script_memory_left */
    dp_config_lua_register,  /* config.h: config_vars */
    NULL, /* keep last */
};

int luaopen_dp_core(lua_State *L) {
  static const luaL_Reg raw_methods[] = {{"append", l_raw_append}, {"commit", l_raw_commit},
                                         {"abort", l_raw_abort}, {"tmp_path", l_raw_tmp_path},
                                         {NULL, NULL}};
  static const luaL_Reg pg_methods[] = {{"query", l_pg_query}, {"close", l_pg_close}, {NULL, NULL}};
  static const luaL_Reg mongo_methods[] = {{"find", l_mongo_find}, {"command", l_mongo_command},
                                           {"export_bson", l_mongo_export_bson},
                                           {"insert_bson", l_mongo_insert_bson},
                                           {"bronze_tuning", l_mongo_bronze_tuning},
                                           {"close", l_mongo_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"sha256", l_sha256},
      {"json_compact", l_json_compact},
      {"json_array_elements", l_json_array_elements},
      {"json_select", l_json_select},
      {"listdir", l_listdir},
      {"fnmatch", l_fnmatch},
      {"uuid_v7", l_uuid_v7},
      {"hash", l_hash},
      {"cast", l_cast},
      {"row_hashes", l_row_hashes},
      {"raw_open", l_raw_open},
      {"pg_connect", l_pg_connect},
      {"mongo_connect", l_mongo_connect},
      {NULL, NULL},
  };
  if (sodium_init() < 0) return luaL_error(L, "libsodium failed to initialise");
  dp_mongo_log_init();
  mongoc_init();
  new_mt(L, RAW_MT, raw_methods, l_raw_abort);
  new_mt(L, PG_MT, pg_methods, l_pg_close);
  new_mt(L, MONGO_MT, mongo_methods, l_mongo_close);
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  lua_pushstring(L, DP_VERSION);
  lua_setfield(L, -2, "version");
  for (size_t i = 0; registrars[i]; i++) registrars[i](L);
  return 1;
}
