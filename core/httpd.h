/* httpd.h - a small HTTP/1.1 server on a libuv loop, parsed by http-parser (never by hand).
 *
 * One request per connection (the response says "Connection: close"; bytes after the first request
 * are not parsed), at most 256 connections at once. Limits: the request line
 * and headers together at most 16 KiB (431), the body at most max_body bytes (413), the whole
 * request within timeout_ms of the connection (408). The handler runs on the loop thread and answers
 * now or later with dp_httpd_respond; a connection the client closed meanwhile answers nowhere. */
#ifndef DP_HTTPD_H
#define DP_HTTPD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "error.h"

typedef struct dp_httpd dp_httpd;
typedef struct dp_httpd_conn dp_httpd_conn;

typedef struct dp_http_req {
  const char *method;  /* "GET", "POST", ... */
  const char *path;    /* decoded of nothing: the raw path, without the query */
  const char *query;   /* raw query string without "?", "" when none */
  const char *auth;    /* the Authorization header, NULL when absent */
  const char *cookie; /* the Cookie header, NULL when absent */
  const char *host;   /* the Host header, NULL when absent */
  const char *body;    /* NUL-terminated copy of the body ("" when none) */
  size_t body_len;
} dp_http_req;

/* Called once per complete request. The request and its strings live until the response. */
typedef void (*dp_httpd_handler)(dp_httpd_conn *c, const dp_http_req *req, void *ud);
/* Called when a request announces a body, with its method, raw URL and Authorization header
 * (NULL when absent): the largest body to read for it, or 0 to refuse it (401) before any of it
 * is buffered. NULL: every request may send up to max_body. */
typedef size_t (*dp_httpd_body_ok)(const char *method, const char *url, const char *auth, void *ud);

/* Listens on "HOST:PORT" (IPv4 or [IPv6]) on loop. Returns 0 and *out (owned by the loop: close
 * with dp_httpd_close), or DP_ECONFIG with e naming the address and the reason. */
int dp_httpd_start(uv_loop_t *loop, const char *listen, size_t max_body, uint64_t timeout_ms, dp_httpd_handler h,
                   dp_httpd_body_ok body_ok, void *ud, dp_httpd **out, dp_err *e);
/* The bound port (useful with port 0). */
int dp_httpd_port(const dp_httpd *s);
/* Stops listening; open connections finish their responses. Frees s once everything closed. */
void dp_httpd_close(dp_httpd *s);

/* Sends the response and closes the connection. body is copied. extra_headers: NULL or lines
 * ending in "\r\n". Exactly one call per request. */
void dp_httpd_respond(dp_httpd_conn *c, int status, const char *content_type, const char *extra_headers,
                      const char *body, size_t len);
/* Shorthand: {"error": msg} with status. */
void dp_httpd_error(dp_httpd_conn *c, int status, const char *msg);

/* Whether host (of "HOST:PORT") is a loopback address. */
int dp_listen_is_loopback(const char *listen);

#endif
