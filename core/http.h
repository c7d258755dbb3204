/* http.h - one HTTP request through libcurl's easy interface, for the connectors' HTTP client.
 * Mechanism only: a request goes out and a response (any status) or a classified failure comes
 * back. The policy (URLs, auth, retries, back-off, rate limit, redaction, messages) lives in the
 * trusted Lua library lua/dp/http.lua. One dp_http per run worker: a handle is not shared
 * across threads. Only http and https are spoken, also after redirects. */
#ifndef DP_HTTP_H
#define DP_HTTP_H

#include <stddef.h>
#include "buf.h"
#include "error.h"

typedef struct lua_State lua_State;

/* A client: one libcurl easy handle, reused so that connections are kept alive. */
typedef struct dp_http dp_http;

typedef struct dp_http_req {
  const char *method;          /* "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD" */
  const char *url;
  const char *const *headers;  /* "Name: value" lines (borrowed) */
  size_t nheaders;
  const char *body;            /* request body, or NULL for none (borrowed) */
  size_t body_len;
  long connect_timeout_ms;     /* 0: libcurl's default (300 s) */
  long timeout_ms;             /* whole transfer; 0: no limit */
  size_t max_bytes;            /* cap on the (decoded) response body; 0: no cap */
  int follow_redirects;        /* up to 5, http and https only */
} dp_http_req;

/* Why a request got no response. */
typedef enum dp_http_fail {
  DP_HTTP_OK = 0,        /* a response arrived (any status) */
  DP_HTTP_NETWORK,       /* connect, DNS, reset, closed early: worth retrying */
  DP_HTTP_TIMEOUT,       /* connect or total timeout: worth retrying */
  DP_HTTP_TOO_LARGE,     /* the body passed max_bytes */
  DP_HTTP_URL,           /* malformed URL or a protocol other than http/https */
  DP_HTTP_TLS,           /* certificate or TLS setup problem */
  DP_HTTP_OTHER          /* anything else libcurl reports */
} dp_http_fail;

typedef struct dp_http_resp {
  long status;           /* HTTP status of the final response */
  dp_buf headers;        /* header lines of the final response, "Name: value\n" each (owned) */
  dp_buf body;           /* response body, decoded (gzip, deflate, br) (owned) */
  dp_buf url;            /* effective URL after redirects (owned) */
  double seconds;        /* total time */
  dp_http_fail fail;     /* DP_HTTP_OK when a response arrived */
} dp_http_resp;

/* Initialises libcurl once per process (thread-safe). Returns 0 or DP_EIO. */
int dp_http_global_init(dp_err *e);
/* A new client; the caller owns it and frees it with dp_http_free. NULL with e set. */
dp_http *dp_http_new(dp_err *e);
void dp_http_free(dp_http *h);
/* Performs one request. Returns 0 when a response arrived (resp->status set, any status), or
 * DP_EIO with resp->fail and e->msg saying why ("Failed to connect to ..."). resp is filled
 * in both cases; the caller frees it with dp_http_resp_free. */
int dp_http_perform(dp_http *h, const dp_http_req *req, dp_http_resp *resp, dp_err *e);
void dp_http_resp_free(dp_http_resp *resp);
/* Seconds since 1970 of an HTTP date ("Wed, 21 Oct 2026 07:28:00 GMT"), or -1. */
long long dp_http_parse_date(const char *s);

/* Registrar for dp.core (see luamod.c): http_client(), http_date(s), sleep(seconds),
 * monotonic(), time(). Expects the module table on top of the stack. */
void dp_http_lua_register(lua_State *L);

#endif
