// dp-engine status page (docs/status-page.md). Plain JavaScript, no library: every page reads the
// JSON API with the bearer token kept in sessionStorage (a /#token=... fragment signs in; the
// fragment never reaches the server). Data is put in the page with textContent, never as HTML.
"use strict";
(function () {
  var KEY = "dp_token";
  var main = document.getElementById("main");

  function token() { return sessionStorage.getItem(KEY); }
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "class") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) { if (c != null) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  function svg(tag, attrs, kids) {
    var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (var k in attrs || {}) { if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]); }
    (kids || []).forEach(function (c) { e.appendChild(c); });
    return e;
  }
  function show(nodes) {
    main.textContent = "";
    nodes.forEach(function (n) { main.appendChild(n); });
  }
  function status(s) { return el("span", { class: "status s-" + (s || "never"), text: s || "never ran" }); }
  var serverNow = null; // the server's clock (overview.generated_at), so "ago" agrees with it
  function ago(iso) {
    var s = ((serverNow != null ? serverNow * 1000 : Date.now()) - Date.parse(iso)) / 1000;
    if (s < 90) return Math.max(0, Math.round(s)) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }
  function num(v) { return v == null ? "" : Number(v).toLocaleString("en"); }
  function table(caption, heads, rows) {
    var thead = el("thead", {}, [el("tr", {}, heads.map(function (h) {
      return el("th", { scope: "col", class: /^(in|current|versions|rejected|inserted|updated|deleted|seconds|records)/.test(h) ? "num" : "" , text: h });
    }))]);
    return el("div", { class: "scroll" }, [el("table", {}, [el("caption", { text: caption }), thead, el("tbody", {}, rows)])]);
  }
  function td(v, cls) { return el("td", cls ? { class: cls } : {}, [v == null ? "" : v]); }

  function login(message) {
    var input = el("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: "" });
    var form = el("form", { method: "post", action: "/login", id: "login" }, [
      el("label", { for: "token", text: "API token" }), input, el("button", { type: "submit", text: "Sign in" })]);
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      sessionStorage.setItem(KEY, input.value);
      location.hash = "#/";
      route();
    });
    show([el("section", { class: "login", "aria-labelledby": "h-login" }, [
      el("h1", { id: "h-login", text: "Sign in" }),
      el("p", {}, ["The status page needs the API token of this dp-engine (", el("code", { text: "DP_API_TOKEN" }), ")."]),
      message ? el("p", { class: "error", role: "alert", text: message }) : null, form])]);
  }

  function api(path) {
    return fetch(path, { headers: { Authorization: "Bearer " + token() } }).then(function (r) {
      if (r.status === 401) { sessionStorage.removeItem(KEY); throw { login: "That token was refused." }; }
      return r.json().then(function (j) { if (!r.ok) throw { error: j.error || ("HTTP " + r.status) }; return j; });
    });
  }

  function overview() {
    return api("/api/v1/overview").then(function (o) {
      serverNow = o.generated_at;
      var rows = o.targets.map(function (t) {
        var r = t.last_run;
        var name = t.kind === "system" ? el("a", { href: "#/system/" + encodeURIComponent(t.name), text: t.name }) : t.name;
        var last = r ? el("div", {}, [el("a", { href: "#/run/" + r.run_id }, [status(r.status)]),
          r.error && r.status !== "succeeded" ? el("div", { class: "error", text: r.error }) : null]) : status(null);
        return el("tr", { "data-name": t.name, "data-status": r ? r.status : "never", "data-freshness": t.freshness }, [
          el("th", { scope: "row" }, [name, t.enabled ? null : el("small", { text: " (disabled)" })]),
          td(t.kind), el("td", {}, [last]),
          td(r ? el("time", { datetime: r.started_at, text: ago(r.started_at) }) : ""),
          td(r ? r.trigger_kind : ""), td(r && r.seconds != null ? r.seconds.toFixed(1) + " s" : ""),
          el("td", {}, [el("span", { class: "fresh f-" + t.freshness, text: t.freshness === "none" ? "no schedule" : t.freshness })])]);
      });
      show([el("section", { "aria-labelledby": "h-overview" }, [el("h1", { id: "h-overview", text: "Overview" }),
        table("Every system and gold model: its last run and whether its data is fresh against its schedule",
          ["name", "kind", "last run", "when", "trigger", "duration", "freshness"], rows)])]);
    });
  }

  // Records inserted / updated / deleted in silver per run, as stacked bars.
  function chart(runs) {
    var W = 640, H = 180, pad = 28, n = Math.max(runs.length, 1), bw = (W - pad - 8) / n;
    var vals = runs.map(function (r) { var s = (r.layers || {}).silver || {}; return [s.inserted || 0, s.updated || 0, s.deleted || 0]; });
    var max = Math.max.apply(null, vals.map(function (v) { return v[0] + v[1] + v[2]; }).concat([1]));
    var g = [svg("line", { x1: pad, y1: H - 20, x2: W, y2: H - 20, class: "axis" }),
      svg("text", { x: 0, y: 12, text: num(max) }), svg("text", { x: 0, y: H - 22, text: "0" })];
    var colors = ["var(--ins)", "var(--upd)", "var(--del)"], names = ["inserted", "updated", "deleted"];
    vals.forEach(function (v, i) {
      var y = H - 20;
      v.forEach(function (x, k) {
        var h = x / max * (H - 40);
        if (h > 0) {
          y -= h;
          g.push(svg("rect", { x: pad + i * bw + 1, y: y, width: Math.max(bw - 2, 1), height: h, fill: colors[k] },
            [svg("title", { text: runs[i].started_at + ": " + num(x) + " " + names[k] })]));
        }
      });
    });
    return el("figure", {}, [svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "Records inserted, updated and deleted in silver per run, oldest first" }, g),
      el("figcaption", { class: "legend" }, names.map(function (nm) { return el("span", { class: "c-" + nm, text: nm }); }))]);
  }

  function system(name) {
    return api("/api/v1/systems/" + encodeURIComponent(name)).then(function (s) {
      var ents = s.entities.map(function (e) {
        return el("tr", { "data-entity": e.name }, [el("th", { scope: "row", text: e.name }),
          td(e.loaded ? num(e.current) : "not loaded yet", "num"), td(num(e.versions), "num"), td(num(e.rejected), "num")]);
      });
      var runs = s.runs.slice().reverse().map(function (r) {
        var L = r.layers || {}, raw = L.raw || {}, sil = L.silver || {};
        return el("tr", {}, [el("td", {}, [el("a", { href: "#/run/" + r.run_id }, [el("time", { datetime: r.started_at, text: ago(r.started_at) })])]),
          el("td", {}, [status(r.status)]), td(r.trigger_kind + (r.trigger_detail ? " (" + r.trigger_detail + ")" : "")),
          td(r.seconds != null ? Number(r.seconds).toFixed(1) : "", "num"), td(num(raw.in), "num"),
          td(num(sil.inserted), "num"), td(num(sil.updated), "num"), td(num(sil.deleted), "num"), td(num(sil.rejected), "num"),
          el("td", {}, [!r.prefect_flow_run_id ? "" : s.prefect_ui_url
            ? el("a", { href: s.prefect_ui_url.replace(/\/+$/, "") + "/runs/flow-run/" + r.prefect_flow_run_id, text: "flow run" })
            : r.prefect_flow_run_id])]);
      });
      show([el("section", { "aria-labelledby": "h-sys" }, [el("h1", { id: "h-sys", text: s.name }),
        table("Entities in silver: current rows, all versions, rejected records", ["entity", "current", "versions", "rejected"], ents),
        el("h2", { text: "Changes per run" }), chart(s.runs),
        el("h2", { text: "Last runs" }),
        table("Newest first; counts of the raw and silver layers",
          ["started", "status", "trigger", "seconds", "records in", "inserted", "updated", "deleted", "rejected", "Prefect flow run"], runs)])]);
    });
  }

  function run(id) {
    return api("/api/v1/runs/" + encodeURIComponent(id)).then(function (r) {
      var steps = r.entities || [];
      var t0 = Math.min.apply(null, steps.map(function (s) { return Date.parse(s.started_at); }).concat([Date.parse(r.started_at)]));
      var t1 = Math.max.apply(null, steps.map(function (s) { return Date.parse(s.ended_at || s.started_at); }).concat([t0 + 1]));
      var W = 640, row = 22, left = 170, H = steps.length * row + 24, span = Math.max(t1 - t0, 1);
      var bars = [];
      steps.forEach(function (s, i) {
        var a = Date.parse(s.started_at), b = Date.parse(s.ended_at || s.started_at);
        var x = left + (a - t0) / span * (W - left - 10), w = Math.max((b - a) / span * (W - left - 10), 2);
        bars.push(svg("text", { x: 0, y: i * row + 15, text: s.entity + " · " + s.layer }));
        bars.push(svg("rect", { x: x, y: i * row + 4, width: w, height: row - 8, rx: 3,
          fill: s.status === "succeeded" ? "var(--ok)" : s.status === "running" ? "var(--info)" : s.status === "skipped" ? "var(--never)" : "var(--bad)" },
          [svg("title", { text: s.entity + " " + s.layer + ": " + s.status + ", " + ((b - a) / 1000).toFixed(2) + " s" })]));
      });
      bars.push(svg("text", { x: left, y: H - 4, text: "0 s" }), svg("text", { x: W - 60, y: H - 4, text: (span / 1000).toFixed(2) + " s" }));
      var errs = steps.filter(function (s) { return s.error; }).map(function (s) {
        return el("li", {}, [el("strong", { text: s.entity + " " + s.layer + ": " }), el("span", { class: "error", text: s.error })]);
      });
      show([el("section", { "aria-labelledby": "h-run" }, [el("h1", { id: "h-run" }, ["Run of ", el("a", { href: "#/system/" + encodeURIComponent(r.system), text: r.system }), " ", status(r.status)]),
        el("p", { class: "muted" }, [r.run_id + " · " + r.trigger_kind + (r.trigger_detail ? " (" + r.trigger_detail + ")" : "") + " · started " + r.started_at]),
        r.error ? el("p", { class: "error", text: r.error }) : null,
        el("h2", { text: "Timeline" }),
        el("figure", {}, [svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "Timeline of the run's entity-layer steps" }, bars)]),
        errs.length ? el("h2", { text: "Errors" }) : null, errs.length ? el("ul", {}, errs) : null])]);
    });
  }

  function lineage() {
    return api("/api/v1/lineage").then(function (g) {
      var col = {}, byId = {};
      g.nodes.forEach(function (n) { byId[n.id] = n; col[n.id] = n.kind === "system" ? 0 : n.kind === "entity" ? 1 : 2; });
      for (var pass = 0; pass < g.nodes.length; pass++) // gold models after the gold models they read
        g.edges.forEach(function (e) { if (byId[e[1]] && byId[e[1]].kind === "gold" && col[e[0]] >= 2 && col[e[1]] <= col[e[0]]) col[e[1]] = col[e[0]] + 1; });
      var rows = {}, pos = {}, W = 0, H = 0, bw = 150, bh = 28;
      g.nodes.forEach(function (n) {
        var c = col[n.id]; rows[c] = (rows[c] || 0) + 1;
        pos[n.id] = { x: 10 + c * 190, y: 10 + (rows[c] - 1) * 40 };
        W = Math.max(W, pos[n.id].x + bw + 10); H = Math.max(H, pos[n.id].y + bh + 10);
      });
      var parts = [];
      g.edges.forEach(function (e) {
        var a = pos[e[0]], b = pos[e[1]];
        if (!a || !b) return;
        parts.push(svg("path", { d: "M" + (a.x + bw) + "," + (a.y + bh / 2) + " C" + (a.x + bw + 30) + "," + (a.y + bh / 2) + " " + (b.x - 30) + "," + (b.y + bh / 2) + " " + b.x + "," + (b.y + bh / 2),
          fill: "none", stroke: "var(--muted)", "stroke-width": 1.2 }));
      });
      g.nodes.forEach(function (n) {
        var p = pos[n.id], c = n.status === "succeeded" ? "var(--ok)" : n.status ? (n.status === "running" ? "var(--info)" : "var(--bad)") : "var(--never)";
        parts.push(svg("g", { "data-node": n.id, "data-status": n.status || "never" }, [
          svg("rect", { x: p.x, y: p.y, width: bw, height: bh, rx: 6, fill: "var(--card)", stroke: c, "stroke-width": 2 }),
          svg("text", { x: p.x + 8, y: p.y + 18, text: (n.kind === "entity" ? "· " : n.kind === "gold" ? "◆ " : "") + n.name }),
          svg("title", { text: n.kind + " " + n.id + ": " + (n.status || "never ran") })]));
      });
      show([el("section", { "aria-labelledby": "h-lin" }, [el("h1", { id: "h-lin", text: "Lineage" }),
        el("p", { class: "muted", text: "Systems, their entities and the gold models that read them; the outline is the last run's status." }),
        el("div", { class: "scroll" }, [svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "Lineage graph" }, parts)])])]);
    });
  }

  function decode(s) { try { return decodeURIComponent(s); } catch (e) { return null; } }

  function route() {
    var h = location.hash || "#/";
    if (h.indexOf("#token=") === 0) { // #token=TOKEN[&page=/system/bank]: sign in (and open a page)
      var rest = h.slice(7), amp = rest.indexOf("&page=");
      var tok = decode(amp < 0 ? rest : rest.slice(0, amp));
      if (tok) sessionStorage.setItem(KEY, tok);
      h = "#" + (amp < 0 ? "/" : rest.slice(amp + 6));
      history.replaceState(null, "", location.pathname + h);
    }
    if (!token()) {
      // signed in with the session cookie (the form without JavaScript): the overview the server
      // rendered stays; the other pages need the token
      if (h === "#/" && !document.getElementById("h-login")) return;
      login();
      return;
    }
    var m, p;
    if ((m = h.match(/^#\/(system|run)\/(.+)$/)) && decode(m[2]) == null) { show([el("p", { class: "error", role: "alert", text: "That address is not valid." })]); return; }
    if ((m = h.match(/^#\/system\/(.+)$/))) p = system(decode(m[1]));
    else if ((m = h.match(/^#\/run\/(.+)$/))) p = run(decode(m[1]));
    else if (h === "#/lineage") p = lineage();
    else p = overview();
    p.catch(function (e) { if (e && e.login) login(e.login); else show([el("p", { class: "error", role: "alert", text: (e && e.error) || String(e) })]); });
  }

  var out = document.getElementById("logout");
  if (out) out.addEventListener("click", function () { sessionStorage.removeItem(KEY); });
  window.addEventListener("hashchange", route);
  route();
})();
