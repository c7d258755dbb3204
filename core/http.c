/* http.c - one HTTP request through libcurl, and its dp.core binding. */
#include "http.h"
#include "version.h"
#include "log.h"

#include <curl/curl.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


#define HTTP_MT "dp.core.http"
#define MAX_REDIRECTS 5L

struct dp_http {
  CURL *curl;
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static CURLcode init_rc = CURLE_OK;

static void global_init(void) { init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int dp_http_global_init(dp_err *e) {
  pthread_once(&init_once, global_init);
  if (init_rc != CURLE_OK)
    return dp_err_set(e, DP_EIO, "libcurl failed to initialise: %s", curl_easy_strerror(init_rc));
  return 0;
}

/* Returns a new client (caller frees with dp_http_free). */
dp_http *dp_http_new(dp_err *e) {
  if (dp_http_global_init(e)) return NULL;
  dp_http *h = calloc(1, sizeof *h);
  if (!h) {
    dp_err_set(e, DP_ENOMEM, "out of memory");
    return NULL;
  }
  h->curl = curl_easy_init();
  if (!h->curl) {
    free(h);
    dp_err_set(e, DP_EIO, "cannot create a libcurl handle");
    return NULL;
  }
  return h;
}

/* Frees the client and closes its connections. */
void dp_http_free(dp_http *h) {
  if (!h) return;
  if (h->curl) curl_easy_cleanup(h->curl);
  free(h);
}

void dp_http_resp_free(dp_http_resp *resp) {
  dp_buf_free(&resp->headers);
  dp_buf_free(&resp->body);
  dp_buf_free(&resp->url);
}

typedef struct sink {
  dp_http_resp *resp;
  size_t max_bytes;
  int too_large;
  int oom;
} sink;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  sink *s = ud;
  size_t len = size * n;
  if (s->max_bytes && s->resp->body.len + len > s->max_bytes) {
    s->too_large = 1;
    return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
  }
  if (dp_buf_append(&s->resp->body, p, len) != 0) {
    s->oom = 1;
    return 0;
  }
  return len;
}

/* Keeps the header lines of the last response only: a redirect or a 100 Continue starts a new
 * block with its status line. */
static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  sink *s = ud;
  size_t len = size * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    dp_buf_reset(&s->resp->headers);
    return len;
  }
  size_t k = len;
  while (k > 0 && (p[k - 1] == '\r' || p[k - 1] == '\n')) k--;
  if (k == 0) return len;
  if ((dp_buf_append(&s->resp->headers, p, k) || dp_buf_putc(&s->resp->headers, '\n'))) {
    s->oom = 1;
    return 0;
  }
  return len;
}

static dp_http_fail classify(CURLcode rc, const sink *s) {
  switch (rc) {
    case CURLE_OK: return DP_HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT: return DP_HTTP_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
      return DP_HTTP_NETWORK;
    case CURLE_FILESIZE_EXCEEDED: return DP_HTTP_TOO_LARGE;
    case CURLE_WRITE_ERROR: return s->too_large ? DP_HTTP_TOO_LARGE : DP_HTTP_OTHER;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return DP_HTTP_URL;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
      return DP_HTTP_TLS;
    default: return DP_HTTP_OTHER;
  }
}

int dp_http_perform(dp_http *h, const dp_http_req *req, dp_http_resp *resp, dp_err *e) {
  CURL *c = h->curl;
  struct curl_slist *hdrs = NULL;
  char errbuf[CURL_ERROR_SIZE] = "";
  sink s = {resp, req->max_bytes, 0, 0};
  int rc = 0;
  memset(resp, 0, sizeof *resp);

  curl_easy_reset(c); /* keeps the connection cache */
  for (size_t i = 0; i < req->nheaders; i++) {
    struct curl_slist *n = curl_slist_append(hdrs, req->headers[i]);
    if (!n) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); goto cleanup; }
    hdrs = n;
  }
  curl_easy_setopt(c, CURLOPT_URL, req->url);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "dp-engine/" DP_VERSION);
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, ""); /* every encoding libcurl can decode */
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &s);
  if (req->connect_timeout_ms > 0) curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
  if (req->timeout_ms > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, req->timeout_ms);
  if (req->max_bytes > 0) curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_bytes);
  if (req->follow_redirects) {
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, MAX_REDIRECTS);
  }
  const char *m = req->method ? req->method : "GET";
  if (strcmp(m, "GET") == 0) {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(m, "HEAD") == 0) {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else {
    if (strcmp(m, "POST") != 0) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, m);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body ? req->body : "");
  }

  CURLcode cc = curl_easy_perform(c);
  double secs = 0;
  curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &secs);
  resp->seconds = secs;
  char *eff = NULL;
  if (curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &eff) == CURLE_OK && eff) dp_buf_puts(&resp->url, eff);
  if (s.oom) {
    rc = dp_err_set(e, DP_ENOMEM, "out of memory reading the response");
    resp->fail = DP_HTTP_OTHER;
    goto cleanup;
  }
  resp->fail = classify(cc, &s);
  if (cc != CURLE_OK) {
    if (resp->fail == DP_HTTP_TOO_LARGE)
      rc = dp_err_set(e, DP_EIO, "response larger than %zu bytes", req->max_bytes);
    else
      rc = dp_err_set(e, DP_EIO, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
    goto cleanup;
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);

cleanup:
  curl_slist_free_all(hdrs);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
  return rc;
}

long long dp_http_parse_date(const char *s) {
  time_t t = curl_getdate(s, NULL);
  return t == (time_t)-1 ? -1 : (long long)t;
}

/* ---------- dp.core binding ---------- */

typedef struct lhttp {
  dp_http *h;
} lhttp;

static lhttp *check_http(lua_State *L) {
  lhttp *u = luaL_checkudata(L, 1, HTTP_MT);
  if (!u->h) luaL_error(L, "http client is closed");
  return u;
}

/* http_client() -> client userdata (freed by __gc or client:close()). */
static int l_http_client(lua_State *L) {
  lhttp *u = lua_newuserdata(L, sizeof *u);
  u->h = NULL;
  luaL_getmetatable(L, HTTP_MT);
  lua_setmetatable(L, -2);
  dp_err e;
  if (!(u->h = dp_http_new(&e))) return luaL_error(L, "http_client: %s", e.msg);
  return 1;
}

static double opt_number(lua_State *L, int t, const char *key, double def) {
  lua_getfield(L, t, key);
  double v = def;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "request: %s must be a number", key);
    v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* Pushes the header lines as a table: lower-case names, repeated headers joined with ", ". */
static void push_headers(lua_State *L, const dp_buf *b) {
  lua_newtable(L);
  const char *p = b->data, *end = b->data + b->len;
  while (p && p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) nl = end;
    const char *colon = memchr(p, ':', (size_t)(nl - p));
    if (colon && colon > p) {
      luaL_Buffer name;
      luaL_buffinit(L, &name);
      for (const char *q = p; q < colon; q++) {
        char ch = *q;
        luaL_addchar(&name, (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch);
      }
      luaL_pushresult(&name);
      const char *v = colon + 1, *ve = nl;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      lua_pushvalue(L, -1);
      lua_rawget(L, -3);
      if (lua_isstring(L, -1)) {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, -3);
    }
    p = nl + 1;
  }
}

static const char *fail_name(dp_http_fail f) {
  switch (f) {
    case DP_HTTP_OK: return "ok";
    case DP_HTTP_NETWORK: return "network";
    case DP_HTTP_TIMEOUT: return "timeout";
    case DP_HTTP_TOO_LARGE: return "too_large";
    case DP_HTTP_URL: return "url";
    case DP_HTTP_TLS: return "tls";
    default: return "error";
  }
}

/* client:request{ method, url, headers = { "Name: value", ... }, body, connect_timeout,
 * timeout (seconds), max_bytes, follow_redirects }
 *   -> { status, headers = { name = value }, body, url, seconds }
 *   |  nil, kind ("network" | "timeout" | "too_large" | "url" | "tls" | "error"), message */
static int l_http_request(lua_State *L) {
  lhttp *u = check_http(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  dp_http_req req;
  memset(&req, 0, sizeof req);
  lua_getfield(L, 2, "method");
  req.method = lua_isnil(L, -1) ? "GET" : luaL_checkstring(L, -1);
  lua_getfield(L, 2, "url");
  req.url = lua_tostring(L, -1);
  if (!req.url) return luaL_error(L, "request: url must be a string");
  lua_getfield(L, 2, "body");
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "request: body must be a string");
    req.body = lua_tolstring(L, -1, &req.body_len);
  }
  /* method, url and body stay on the stack (3 slots) while the request runs */
  req.connect_timeout_ms = (long)(opt_number(L, 2, "connect_timeout", 0) * 1000);
  req.timeout_ms = (long)(opt_number(L, 2, "timeout", 0) * 1000);
  req.max_bytes = (size_t)opt_number(L, 2, "max_bytes", 0);
  lua_getfield(L, 2, "follow_redirects");
  req.follow_redirects = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
  lua_pop(L, 1);

  lua_getfield(L, 2, "headers");
  int hidx = lua_gettop(L);
  const char **lines = NULL;
  if (!lua_isnil(L, hidx)) {
    if (!lua_istable(L, hidx)) return luaL_error(L, "request: headers must be an array of lines");
    req.nheaders = lua_objlen(L, hidx);
    lines = calloc(req.nheaders ? req.nheaders : 1, sizeof *lines);
    if (!lines) return luaL_error(L, "out of memory");
    for (size_t i = 0; i < req.nheaders; i++) {
      lua_rawgeti(L, hidx, (int)i + 1);
      lines[i] = lua_tostring(L, -1); /* kept alive by the headers table */
      lua_pop(L, 1);
      if (!lines[i] || strchr(lines[i], '\n') || strchr(lines[i], '\r')) {
        free(lines);
        return luaL_error(L, "request: header %d must be one line of text", (int)i + 1);
      }
    }
  }
  req.headers = lines;

  dp_http_resp resp;
  dp_err e;
  int rc = dp_http_perform(u->h, &req, &resp, &e);
  free(lines);
  if (rc) {
    lua_pushnil(L);
    lua_pushstring(L, fail_name(resp.fail));
    lua_pushstring(L, e.msg);
    dp_http_resp_free(&resp);
    return 3;
  }
  lua_createtable(L, 0, 5);
  lua_pushnumber(L, (lua_Number)resp.status);
  lua_setfield(L, -2, "status");
  push_headers(L, &resp.headers);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, resp.body.data ? resp.body.data : "", resp.body.len);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, resp.url.data ? resp.url.data : req.url);
  lua_setfield(L, -2, "url");
  lua_pushnumber(L, resp.seconds);
  lua_setfield(L, -2, "seconds");
  dp_http_resp_free(&resp);
  return 1;
}

static int l_http_close(lua_State *L) {
  lhttp *u = luaL_checkudata(L, 1, HTTP_MT);
  dp_http_free(u->h);
  u->h = NULL;
  return 0;
}

/* http_date(text) -> seconds since 1970, or nil when it is not an HTTP date. */
static int l_http_date(lua_State *L) {
  long long t = dp_http_parse_date(luaL_checkstring(L, 1));
  if (t < 0) return 0;
  lua_pushnumber(L, (lua_Number)t);
  return 1;
}

/* sleep(seconds): sleeps, resuming after signals. */
static int l_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  if (s <= 0) return 0;
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  return 0;
}

/* monotonic() -> seconds of a monotonic clock (for intervals). */
static int l_monotonic(lua_State *L) {
  lua_pushnumber(L, dp_monotonic());
  return 1;
}

/* time() -> seconds since 1970 with a fraction (wall clock). */
static int l_time(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec / 1e9);
  return 1;
}

void dp_http_lua_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"request", l_http_request}, {"close", l_http_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"http_client", l_http_client}, {"http_date", l_http_date},
                                   {"sleep", l_sleep},             {"monotonic", l_monotonic},
                                   {"time", l_time},               {NULL, NULL}};
  dp_err e;
  if (dp_http_global_init(&e)) luaL_error(L, "%s", e.msg);
  if (luaL_newmetatable(L, HTTP_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_http_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_register(L, NULL, funcs);
}
