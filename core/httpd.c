/* httpd.c - see httpd.h. */
#include "httpd.h"
#include "buf.h"
#include "json.h"
#include "log.h"

#include <arpa/inet.h>
#include <limits.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DP_HTTPD_MAX_HEAD (16 * 1024)
#define DP_HTTPD_MAX_CONNS 256

struct dp_httpd {
  uv_tcp_t tcp;
  uv_loop_t *loop;
  size_t max_body;
  uint64_t timeout_ms; /* a request must arrive whole within this */
  dp_httpd_handler handler;
  dp_httpd_body_ok body_ok;
  void *ud;
  int port;
  int closing, closed; /* dp_httpd_close was called; the listener handle is closed */
  int nconns;          /* open connections; s is freed once closed and none is left */
};

enum { CONN_READING, CONN_HANDLING, CONN_WRITING, CONN_LINGERING, CONN_CLOSED };

/* After the response: how long what the client still sends (a body that was refused, pipelined
 * requests) is read and dropped before the connection closes. Closing with unread bytes would
 * send a reset, and the client could lose the response. */
#define DP_HTTPD_LINGER_MS 2000

struct dp_httpd_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wr;
  uv_shutdown_t shut;
  dp_httpd *srv;
  http_parser parser;
  int state;
  int handles; /* open libuv handles (tcp, timer) */
  size_t head_bytes;
  int reject;  /* an HTTP status to answer with once the request cannot be served */
  size_t body_limit; /* set by body_ok, 0: max_body */
  dp_buf url, field, value, auth, cookie, host, body, out;
  int in_value;
  char method[16];
  char *path, *query;
  dp_http_req req;
};

static void free_conn(dp_httpd_conn *c) {
  dp_httpd *s = c->srv;
  dp_buf_free(&c->url);
  dp_buf_free(&c->field);
  dp_buf_free(&c->value);
  dp_buf_free(&c->auth);
  dp_buf_free(&c->cookie);
  dp_buf_free(&c->host);
  dp_buf_free(&c->body);
  dp_buf_free(&c->out);
  free(c->path);
  free(c->query);
  free(c);
  if (--s->nconns == 0 && s->closed) free(s);
}

static void on_handle_closed(uv_handle_t *h) {
  dp_httpd_conn *c = h->data;
  if (--c->handles == 0) free_conn(c);
}

static void conn_close(dp_httpd_conn *c) {
  if (c->state == CONN_CLOSED) return;
  c->state = CONN_CLOSED;
  uv_timer_stop(&c->timer);
  /* at shutdown the loop's walk may have closed the handles already */
  if (!uv_is_closing((uv_handle_t *)&c->timer)) uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static const char *reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 303: return "See Other";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* Lingering: drop what arrives until the client closes its side, or the time is up. */
static void on_linger_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  dp_httpd_conn *c = st->data;
  (void)buf;
  if (nread < 0) conn_close(c);
}

static void on_linger_timeout(uv_timer_t *t) { conn_close(t->data); }

static void on_shutdown(uv_shutdown_t *req, int status) {
  dp_httpd_conn *c = req->data;
  if (c->state != CONN_LINGERING) return;
  if (status < 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_linger_read) != 0) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_linger_timeout, DP_HTTPD_LINGER_MS, 0);
}

static void on_written(uv_write_t *w, int status) {
  dp_httpd_conn *c = w->data;
  /* a half close (FIN) after the response, then read until the client closes: everything the
   * client was sent reaches it */
  if (status < 0 || c->state != CONN_WRITING || uv_is_closing((uv_handle_t *)&c->tcp)) {
    conn_close(c);
    return;
  }
  c->state = CONN_LINGERING;
  c->shut.data = c;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) conn_close(c);
}

void dp_httpd_respond(dp_httpd_conn *c, int status, const char *content_type, const char *extra_headers,
                      const char *body, size_t len) {
  /* A connection is only closed by this file once its response is written, or while it is still
   * reading (timeout, EOF): a handled request's connection is always open here. */
  if (c->state == CONN_CLOSED || c->state == CONN_WRITING || c->state == CONN_LINGERING) return;
  if (uv_is_closing((uv_handle_t *)&c->tcp)) { /* the loop is shutting down: nobody to answer */
    c->state = CONN_CLOSED;
    return;
  }
  c->state = CONN_WRITING;
  uv_timer_stop(&c->timer);
  uv_read_stop((uv_stream_t *)&c->tcp);
  dp_buf_reset(&c->out);
  dp_buf_printf(&c->out,
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n"
                "Cache-Control: no-store\r\n%s\r\n",
                status, reason(status), content_type ? content_type : "application/json", len,
                extra_headers ? extra_headers : "");
  dp_buf_append(&c->out, body, len);
  uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
  c->wr.data = c;
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) conn_close(c);
}

void dp_httpd_error(dp_httpd_conn *c, int status, const char *msg) {
  dp_buf b = DP_BUF_INIT;
  dp_buf_puts(&b, "{\"error\":");
  dp_json_put_string(&b, msg, strlen(msg));
  dp_buf_puts(&b, "}");
  const char *extra = status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL;
  dp_httpd_respond(c, status, "application/json", extra, b.data, b.len);
  dp_buf_free(&b);
}

/* ---- parsing ---- */

static int count_head(dp_httpd_conn *c, size_t n) {
  c->head_bytes += n;
  if (c->head_bytes > DP_HTTPD_MAX_HEAD) {
    c->reject = 431;
    return -1;
  }
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  dp_httpd_conn *c = p->data;
  if (c->state != CONN_READING) return -1; /* one request per connection: nothing after it */
  if (count_head(c, n)) return -1;
  return dp_buf_append(&c->url, at, n) ? -1 : 0;
}

static void header_done(dp_httpd_conn *c) {
  dp_buf *keep = !c->field.len                                   ? NULL
                 : strcasecmp(c->field.data, "authorization") == 0 ? &c->auth
                 : strcasecmp(c->field.data, "cookie") == 0        ? &c->cookie
                 : strcasecmp(c->field.data, "host") == 0          ? &c->host
                                                                   : NULL;
  if (keep) {
    dp_buf_reset(keep);
    dp_buf_append(keep, c->value.data ? c->value.data : "", c->value.len);
  }
  dp_buf_reset(&c->field);
  dp_buf_reset(&c->value);
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  dp_httpd_conn *c = p->data;
  if (count_head(c, n)) return -1;
  if (c->in_value) {
    header_done(c);
    c->in_value = 0;
  }
  return dp_buf_append(&c->field, at, n) ? -1 : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  dp_httpd_conn *c = p->data;
  if (count_head(c, n)) return -1;
  c->in_value = 1;
  return dp_buf_append(&c->value, at, n) ? -1 : 0;
}

static int on_headers_complete(http_parser *p) {
  dp_httpd_conn *c = p->data;
  if (c->in_value) header_done(c);
  c->in_value = 0;
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->srv->max_body) {
    c->reject = 413;
    return -1;
  }
  /* a body is read only for requests the server takes one for (e.g. authenticated POSTs): no
   * one buffers megabytes before proving who they are */
  if (c->srv->body_ok && (((p->flags & F_CONTENTLENGTH) && p->content_length > 0) || (p->flags & F_CHUNKED))) {
    char m[16];
    snprintf(m, sizeof m, "%s", http_method_str((enum http_method)p->method));
    size_t limit = c->srv->body_ok(m, c->url.data ? c->url.data : "", c->auth.len ? c->auth.data : NULL, c->srv->ud);
    if (limit == 0) {
      c->reject = 401;
      return -1;
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > limit) {
      c->reject = 413;
      return -1;
    }
    c->body_limit = limit;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  dp_httpd_conn *c = p->data;
  if (c->body.len + n > (c->body_limit ? c->body_limit : c->srv->max_body)) {
    c->reject = 413;
    return -1;
  }
  return dp_buf_append(&c->body, at, n) ? -1 : 0;
}

static int on_message_complete(http_parser *p) {
  dp_httpd_conn *c = p->data;
  if (c->state != CONN_READING) return -1;
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (!c->url.data || http_parser_parse_url(c->url.data, c->url.len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
    c->reject = 400;
    return -1;
  }
  c->path = strndup(c->url.data + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
  if (u.field_set & (1 << UF_QUERY))
    c->query = strndup(c->url.data + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
  else
    c->query = strdup("");
  snprintf(c->method, sizeof c->method, "%s", http_method_str((enum http_method)p->method));
  c->req.method = c->method;
  c->req.path = c->path;
  c->req.query = c->query;
  c->req.auth = c->auth.len ? c->auth.data : NULL;
  c->req.cookie = c->cookie.len ? c->cookie.data : NULL;
  c->req.host = c->host.len ? c->host.data : NULL;
  if (!c->body.data) dp_buf_puts(&c->body, "");
  c->req.body = c->body.data;
  c->req.body_len = c->body.len;
  c->state = CONN_HANDLING;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_timer_stop(&c->timer);
  /* pipelined bytes after this request are never parsed (the parser stops here) and never
   * answered: the response closes the connection */
  http_parser_pause(p, 1);
  c->srv->handler(c, &c->req, c->srv->ud);
  return 0;
}

static const http_parser_settings SETTINGS = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- I/O ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static _Thread_local char slab[65536];
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  dp_httpd_conn *c = st->data;
  if (nread == 0) return;
  if (c->state != CONN_READING) return;
  if (nread < 0) { /* EOF or error before a whole request */
    conn_close(c);
    return;
  }
  size_t done = http_parser_execute(&c->parser, &SETTINGS, buf->base, (size_t)nread);
  if (c->state != CONN_READING) return; /* handled (or answering, or closed by the handler) */
  if (c->reject || done != (size_t)nread || HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
    int status = c->reject ? c->reject : 400;
    dp_httpd_error(c, status,
                   status == 413   ? "request body too large"
                   : status == 431 ? "request headers too large"
                   : status == 401 ? "missing or wrong bearer token"
                                   : "malformed HTTP request");
  }
}

static void on_timeout(uv_timer_t *t) {
  dp_httpd_conn *c = t->data;
  if (c->state == CONN_READING) dp_httpd_error(c, 408, "request not received in time");
}

static void on_connection(uv_stream_t *server, int status) {
  dp_httpd *s = server->data;
  if (status < 0 || s->closing) return;
  dp_httpd_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  if (s->nconns >= DP_HTTPD_MAX_CONNS) { /* accept and close at once: the client sees a reset */
    uv_tcp_t *t = calloc(1, sizeof *t);
    free(c);
    if (!t) return;
    uv_tcp_init(s->loop, t);
    if (uv_accept(server, (uv_stream_t *)t) == 0) dp_log(DP_LOG_WARN, "http: %d connections open: one refused", s->nconns);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
    return;
  }
  c->srv = s;
  uv_tcp_init(s->loop, &c->tcp);
  c->tcp.data = c;
  c->handles = 1;
  s->nconns++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    c->state = CONN_CLOSED;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    return;
  }
  uv_timer_init(s->loop, &c->timer);
  c->timer.data = c;
  c->handles = 2;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_tcp_nodelay(&c->tcp, 1);
  uv_timer_start(&c->timer, on_timeout, s->timeout_ms, 0);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* "HOST:PORT" or "[V6]:PORT" into a sockaddr. */
static int parse_listen(const char *listen, struct sockaddr_storage *ss) {
  char host[128];
  const char *colon = strrchr(listen, ':');
  if (!colon || colon == listen) return -1;
  size_t hn = (size_t)(colon - listen);
  const char *h = listen;
  if (h[0] == '[') {
    if (hn < 2 || h[hn - 1] != ']') return -1;
    h++;
    hn -= 2;
  }
  if (hn >= sizeof host) return -1;
  memcpy(host, h, hn);
  host[hn] = 0;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port < 0 || port > 65535 || colon[1] == 0) return -1;
  if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return -1;
}

int dp_listen_is_loopback(const char *listen) {
  struct sockaddr_storage ss;
  if (parse_listen(listen, &ss) != 0) return 0;
  if (ss.ss_family == AF_INET)
    return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
  const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(a);
}

static void on_server_closed(uv_handle_t *h) {
  dp_httpd *s = h->data;
  s->closed = 1;
  if (s->nconns == 0) free(s);
}

int dp_httpd_start(uv_loop_t *loop, const char *listen, size_t max_body, uint64_t timeout_ms, dp_httpd_handler h,
                   dp_httpd_body_ok body_ok, void *ud, dp_httpd **out, dp_err *e) {
  *out = NULL;
  struct sockaddr_storage ss;
  if (parse_listen(listen, &ss) != 0)
    return dp_err_set(e, DP_ECONFIG, "DP_LISTEN=%s: expected HOST:PORT, e.g. 127.0.0.1:8080", listen);
  dp_httpd *s = calloc(1, sizeof *s);
  if (!s) return dp_err_set(e, DP_ENOMEM, "out of memory");
  s->loop = loop;
  s->max_body = max_body;
  s->timeout_ms = timeout_ms;
  s->handler = h;
  s->body_ok = body_ok;
  s->ud = ud;
  uv_tcp_init(loop, &s->tcp);
  s->tcp.data = s;
  int rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&ss, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->tcp, 128, on_connection);
  if (rc != 0) {
    s->closing = 1;
    uv_close((uv_handle_t *)&s->tcp, on_server_closed);
    return dp_err_set(e, DP_ECONFIG, "cannot listen on %s: %s", listen, uv_strerror(rc));
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &len);
  s->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                              : ((struct sockaddr_in6 *)&bound)->sin6_port);
  *out = s;
  return 0;
}

int dp_httpd_port(const dp_httpd *s) { return s->port; }

void dp_httpd_close(dp_httpd *s) {
  if (!s || s->closing) return;
  s->closing = 1;
  uv_close((uv_handle_t *)&s->tcp, on_server_closed);
}
