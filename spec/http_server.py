#!/usr/bin/env python3
"""spec/http_server.py - the HTTP test server the connector specs talk to (loopback only).

Usage: python3 spec/http_server.py PORT_FILE [WATCH_PID]

Binds 127.0.0.1 on a free port, writes the port number to PORT_FILE (atomically) and serves
until killed, or until WATCH_PID (the busted process) is gone, so a crashed test run leaves no
server behind. Standard library only.

Every request except the /__ control routes is logged; specs read the log to check what the
client sent (parameters, headers, bodies). Routes (query parameters in brackets):

  /offset/items [offset, limit, nototal]    {"items": [...], "total": 7}
  /page/items [page, per_page]              {"data": [...], "meta": {"total_pages": N}}
  /cursor/items [cursor]                    {"results": [...3], "paging": {"next": "t3" | null}}
  /next_url/items [p, relative]             {"items": [...3], "links": {"next": URL | null}}
  /link/items [page, per_page]              [...], Link: <...>; rel="next"
  /single/items                             [...7]
  /scalars                                  [{"id": 1}, 2]
  /auth/bearer /auth/basic /auth/header /auth/query /auth/oauth   401 unless authenticated
  POST /oauth/token                         form: refresh_token or client_credentials grant
  /events [since, page, per_page]           page_number pages of state "events" (updated_at >= since)
  /repos (also /user/repos), /repos/<owner>/<name>/commits [page, since]
                                            parent and child; octo/empty -> 409
  /status/<code> [counter, times, retry_after, echo]  <code> for the first `times` calls per
                                            counter (echo: with the request's credentials), then 200
  /slow [delay]                             answers after `delay` seconds
  /malformed                                a JSON syntax error at byte 31
  /numbers                                  exact big numbers as text
  /gzip                                     gzip-encoded when asked for
  /big [bytes]                              a JSON string of that many bytes
  /echo                                     the request as JSON (any method)
  /echo_token                               {"items": [...]}: the bearer token echoed in every
                                            JSON encoding (see echo_token below)
  /redirect [to]                            302 to `to`
  GET /__requests, POST /__reset, POST /__state (JSON merged into the state)
"""
import base64
import gzip
import json
import math
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ITEMS = [{"id": i, "name": "item-%d" % i} for i in range(1, 8)]
BEARER = "tok-123"
BASIC = ("alice", "s3cret")
API_KEY = "key-456"
CLIENT = ("cid", "csecret")
REFRESH = "rt-1"

NUMBERS = ('{"records": [{"id": 9007199254740993, "amount": "1234567890123456789012.12345678", '
           '"big": 9223372036854775807, "neg": -9223372036854775808, "ratio": 0.1}]}')

DEFAULT_EVENTS = [
    {"id": 1, "kind": "a", "updated_at": "2024-01-01T00:00:00Z"},
    {"id": 2, "kind": "b", "updated_at": "2024-01-02T00:00:00Z"},
    {"id": 3, "kind": "c", "updated_at": "2024-01-03T00:00:00Z"},
]

REPOS = [
    {"id": 1, "full_name": "octo/a"},
    {"id": 2, "full_name": "octo/b"},
    {"id": 3, "full_name": "octo/empty"},
]
COMMITS = {
    "octo/a": [
        {"sha": "a1", "commit": {"committer": {"date": "2024-02-01T00:00:00Z"}}},
        {"sha": "a2", "commit": {"committer": {"date": "2024-02-03T00:00:00Z"}}},
    ],
    "octo/b": [
        {"sha": "b1", "commit": {"committer": {"date": "2024-02-02T00:00:00Z"}}},
    ],
}

lock = threading.Lock()
log = []
counters = {}
state = {}
tokens = {}


def reset():
    with lock:
        log.clear()
        counters.clear()
        state.clear()
        tokens.clear()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stalls

    def log_message(self, fmt, *args):  # quiet
        pass

    # -- helpers ------------------------------------------------------------------------------

    def send(self, status, body, ctype="application/json", headers=None):
        if not isinstance(body, (bytes, bytearray)):
            if not isinstance(body, str):
                body = json.dumps(body)
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def base(self):
        return "http://%s:%d" % self.server.server_address[:2]

    def q(self, name, default=None):
        v = self.query.get(name)
        return v[0] if v else default

    def qint(self, name, default):
        v = self.q(name)
        return int(v) if v is not None else default

    def unauthorized(self):
        self.send(401, {"error": "unauthorized"})

    # -- dispatch -----------------------------------------------------------------------------

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        self.route = url.path
        self.raw_query = url.query
        self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        n = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(n) if n else b""
        if not self.route.startswith("/__"):
            with lock:
                log.append({
                    "method": self.command, "path": self.route, "query": self.raw_query,
                    "params": {k: v[0] for k, v in self.query.items()},
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": self.body.decode("utf-8", "replace"),
                })
        try:
            self.dispatch()
        except BrokenPipeError:
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any

    def dispatch(self):
        r = self.route
        parts = r.strip("/").split("/")
        if r == "/__requests":
            with lock:
                return self.send(200, list(log))
        if r == "/__reset":
            reset()
            return self.send(200, {"ok": True})
        if r == "/__state":
            with lock:
                state.update(json.loads(self.body or b"{}"))
            return self.send(200, {"ok": True})
        if r == "/offset/items":
            o, lim = self.qint("offset", 0), self.qint("limit", 100)
            body = {"items": ITEMS[o:o + lim]}
            if not self.q("nototal"):
                body["total"] = len(ITEMS)
            return self.send(200, body)
        if r == "/page/items":
            p, pp = self.qint("page", 1), self.qint("per_page", 3)
            return self.send(200, {"data": ITEMS[(p - 1) * pp:p * pp],
                                   "meta": {"total_pages": math.ceil(len(ITEMS) / pp)}})
        if r == "/cursor/items":
            start = int((self.q("cursor") or "t0")[1:])
            nxt = "t%d" % (start + 3) if start + 3 < len(ITEMS) else None
            return self.send(200, {"results": ITEMS[start:start + 3], "paging": {"next": nxt}})
        if r == "/next_url/items":
            p = self.qint("p", 1)
            nxt = None
            if p * 3 < len(ITEMS):
                nxt = "/next_url/items?p=%d&relative=1" % (p + 1)
                if not self.q("relative"):
                    nxt = self.base() + "/next_url/items?p=%d" % (p + 1)
            return self.send(200, {"items": ITEMS[(p - 1) * 3:p * 3], "links": {"next": nxt}})
        if r == "/link/items":
            p, pp = self.qint("page", 1), self.qint("per_page", 3)
            last = math.ceil(len(ITEMS) / pp)
            links = []
            if p < last:
                links.append('<%s/link/items?page=%d&per_page=%d>; rel="next"' % (self.base(), p + 1, pp))
            links.append('<%s/link/items?page=%d&per_page=%d>; rel="last"' % (self.base(), last, pp))
            return self.send(200, ITEMS[(p - 1) * pp:p * pp], headers={"Link": ", ".join(links)})
        if r == "/single/items":
            return self.send(200, ITEMS)
        if r == "/scalars":
            return self.send(200, [{"id": 1}, 2])
        if parts[0] == "auth":
            return self.auth(parts[1])
        if r == "/oauth/token":
            return self.oauth_token()
        if r == "/events":
            return self.events()
        if r in ("/repos", "/user/repos"):
            return self.send(200, REPOS)
        if parts[0] == "repos" and len(parts) == 4 and parts[3] == "commits":
            return self.commits(parts[1] + "/" + parts[2])
        if parts[0] == "status":
            return self.status(int(parts[1]))
        if r == "/slow":
            time.sleep(float(self.q("delay", "1")))
            return self.send(200, [])
        if r == "/malformed":
            return self.send(200, '{"items": [{"id": 1}, {"id": 2,}]}')
        if r == "/numbers":
            return self.send(200, NUMBERS)
        if r == "/gzip":
            body = json.dumps({"gzip": True, "items": ITEMS}).encode()
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                return self.send(200, gzip.compress(body), headers={"Content-Encoding": "gzip"})
            return self.send(200, json.dumps({"gzip": False, "items": ITEMS}))
        if r == "/big":
            return self.send(200, json.dumps("x" * self.qint("bytes", 1000)))
        if r == "/echo":
            return self.send(200, {
                "method": self.command, "path": self.route, "query": self.raw_query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": self.body.decode("utf-8", "replace"),
            })
        if r == "/echo_token":
            return self.echo_token()
        if r == "/redirect":
            return self.send(302, "", headers={"Location": self.q("to", "/echo")})
        return self.send(404, {"error": "no route " + r})

    # -- routes -------------------------------------------------------------------------------

    def auth(self, kind):
        h = self.headers.get("Authorization") or ""
        ok = False
        if kind == "bearer":
            ok = h == "Bearer " + BEARER
        elif kind == "basic":
            ok = h == "Basic " + base64.b64encode(("%s:%s" % BASIC).encode()).decode()
        elif kind == "header":
            ok = self.headers.get("X-Api-Key") == API_KEY
        elif kind == "query":
            ok = self.q("api_key") == API_KEY
        elif kind == "oauth":
            with lock:
                ok = h.startswith("Bearer ") and tokens.get(h[7:]) == "valid"
        if not ok:
            return self.unauthorized()
        return self.send(200, [{"id": 1, "auth": kind}])

    def oauth_token(self):
        if self.command != "POST":
            return self.send(405, {"error": "POST only"})
        form = {k: v[0] for k, v in urllib.parse.parse_qs(self.body.decode()).items()}
        cid, csecret = form.get("client_id"), form.get("client_secret")
        h = self.headers.get("Authorization") or ""
        if h.startswith("Basic "):
            cid, _, csecret = base64.b64decode(h[6:]).decode().partition(":")
        if (cid, csecret) != CLIENT:
            return self.send(401, {"error": "invalid_client"})
        grant = form.get("grant_type")
        if grant == "refresh_token" and form.get("refresh_token") != REFRESH:
            return self.send(400, {"error": "invalid_grant"})
        if grant not in ("refresh_token", "client_credentials"):
            return self.send(400, {"error": "unsupported_grant_type"})
        with lock:
            token = "at-%d" % (len(tokens) + 1)
            tokens[token] = "valid"
            expires = state.get("expires_in", 3600)
            for t in state.pop("revoke", []):
                tokens[t] = "revoked"
        return self.send(200, {"access_token": token, "token_type": "bearer", "expires_in": expires,
                               "scope": form.get("scope", "")})

    def events(self):
        with lock:
            events = list(state.get("events", DEFAULT_EVENTS))
            fail_page = state.get("fail_page")
        since = self.q("since")
        if since is not None:
            events = [e for e in events if e["updated_at"] >= since]
        events.sort(key=lambda e: (e["updated_at"], e["id"]))
        p, pp = self.qint("page", 1), self.qint("per_page", 2)
        if fail_page is not None and p >= fail_page:
            return self.send(500, {"error": "events are down"})
        return self.send(200, {"events": events[(p - 1) * pp:p * pp]})

    def commits(self, repo):
        if repo == "octo/empty":
            return self.send(409, {"message": "Git Repository is empty."})
        commits = COMMITS.get(repo)
        if commits is None:
            return self.send(404, {"message": "Not Found"})
        since = self.q("since")
        if since is not None:
            commits = [c for c in commits if c["commit"]["committer"]["date"] >= since]
        p = self.qint("page", 1)
        return self.send(200, commits[p - 1:p])

    def echo_token(self):
        h = self.headers.get("Authorization") or ""
        if not h.startswith("Bearer "):
            return self.unauthorized()
        # http.server reads header bytes as latin-1: recover the UTF-8 the client sent
        tok = h[7:].encode("latin-1").decode("utf-8", "replace")
        return self.send(200, echo_token_body(tok))

    def status(self, code):
        key = self.q("counter", self.route)
        times = self.qint("times", 1)
        with lock:
            n = counters.get(key, 0) + 1
            counters[key] = n
        if n <= times:
            headers = {}
            if self.q("retry_after") is not None:
                headers["Retry-After"] = self.q("retry_after")
            body = {"error": "status %d, call %d" % (code, n)}
            if self.q("echo"):  # an error page that shows the request's credentials
                body["authorization"] = self.headers.get("Authorization")
                body["query"] = self.raw_query
            return self.send(code, body, headers=headers)
        return self.send(200, {"items": [{"id": 1, "calls": n}]})


# -- a careless API that echoes the caller's credential -------------------------------------------

def _units(s):
    """UTF-16 code units of s (a character beyond U+FFFF gives a surrogate pair)."""
    b = s.encode("utf-16-be")
    return [int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2)]


def enc_ascii(s):
    r"""ensure_ascii: \u00f6 for non-ASCII, surrogate pairs beyond U+FFFF, "/" kept."""
    return json.dumps(s)


def enc_every(s):
    r"""Every character as \uXXXX, plain ASCII letters too."""
    return '"' + "".join("\\u%04x" % u for u in _units(s)) + '"'


def enc_slash(s):
    r"""Raw UTF-8 with "/" written as "\/" (lua-cjson, PHP)."""
    return json.dumps(s, ensure_ascii=False).replace("/", "\\/")


def enc_mixed(s):
    r"""Raw characters and \uXXXX escapes alternating, "/" as "\/"."""
    out = []
    for i, ch in enumerate(s):
        if ch == "/":
            out.append("\\/")
        elif i % 2:
            out.append("".join("\\u%04x" % u for u in _units(ch)))
        else:
            out.append(json.dumps(ch, ensure_ascii=False)[1:-1])
    return '"' + "".join(out) + '"'


def enc_upper(s):
    """ensure_ascii with upper-case hex digits."""
    return re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), json.dumps(s))


def echo_token_body(tok):
    """The body /echo_token answers with: the token in every encoding, in values, in a key, in
    JSON inside a string, deep in an array, URL-encoded with lower-case hex, and once in a value
    that silver rejects (not an integer)."""
    url_lower = "".join(c if c.isascii() and (c.isalnum() or c in "-._~") else
                        "".join("%%%02x" % b for b in c.encode()) for c in tok)
    items = [
        '{"id": 1, "how": "ensure_ascii", "note": %s}' % enc_ascii(tok),
        '{"id": 2, "how": "every character escaped", "note": %s}' % enc_every(tok),
        '{"id": 3, "how": "slash escaped", "note": %s}' % enc_slash(tok),
        '{"id": 4, "how": "mixed", "note": %s}' % enc_mixed(tok),
        '{"id": 5, "how": "upper-case hex", "note": %s}' % enc_upper(tok),
        '{"id": 6, "how": "in a key", "extra": {%s: true}}' % enc_ascii(tok),
        '{"id": 7, "how": "JSON in a string", "note": %s}' % json.dumps(json.dumps({"auth": "Bearer " + tok})),
        '{"id": 8, "how": "deep", "extra": {"a": [{"b": ["x", %s]}]}}' % enc_mixed(tok),
        '{"id": 9, "how": "raw", "note": %s}' % json.dumps(tok, ensure_ascii=False),
        '{"id": 10, "how": "rejected", "n": %s}' % enc_every(tok),
        '{"id": 11, "how": "url", "note": "https://api.example/v1?t=%s"}' % url_lower,
        '{"id": 12, "how": "clean", "note": "nothing secret"}',
    ]
    return '{"items": [' + ", ".join(items) + "]}"


def watch(pid):
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass


def main():
    port_file = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, port_file)
    if len(sys.argv) > 2:
        threading.Thread(target=watch, args=(int(sys.argv[2]),), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
