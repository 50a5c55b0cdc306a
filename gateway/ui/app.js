// jobgate's console: plain JS over the HTTP API (the same token as the
// CLI, kept in sessionStorage). Routes are #/functions, #/invocations,
// #/invocation/<id>, #/deadletters, #/cluster.
"use strict";

const main = document.getElementById("main");
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("jobgate-token") || "";
document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("jobgate-token", tokenInput.value);
  route();
});

async function api(method, path, body) {
  const headers = {};
  const token = sessionStorage.getItem("jobgate-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : body });
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = data.Error || { Code: resp.status, Message: resp.statusText };
    throw new Error(err.Code + ": " + err.Message);
  }
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

function table(header, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, header.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

function status(s) { return el("span", { class: s, "data-status": s }, s); }
function link(id) { return el("a", { href: "#/invocation/" + id }, id); }
function show(...nodes) { main.replaceChildren(...nodes); }
function fail(e) { show(el("p", { class: "error" }, String(e.message || e))); }

let stopStream = null; // the open log stream, closed when leaving its page

async function route() {
  if (stopStream) { stopStream(); stopStream = null; }
  const [path, query] = location.hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", path.startsWith(a.getAttribute("href").slice(1)));
  try {
    if (path.startsWith("/invocation/")) return await invocationPage(decodeURIComponent(path.slice(12)));
    if (path === "/invocations") return await invocationsPage(params);
    if (path === "/deadletters") return await deadLettersPage();
    if (path === "/cluster") return await clusterPage();
    return await functionsPage();
  } catch (e) { fail(e); }
}

async function functionsPage() {
  const { Functions } = await api("GET", "/v1/functions");
  const rows = [];
  for (const f of Functions) {
    const recent = await api("GET", "/v1/invocations?limit=5&function=" + encodeURIComponent(f.Name));
    const event = el("textarea", { "data-event": f.Name }, "{}");
    const invoke = el("button", { "data-invoke": f.Name, onclick: async () => {
      try {
        const rec = await api("POST", "/v1/functions/" + encodeURIComponent(f.Name) + "/invoke?wait=none", event.value);
        location.hash = "#/invocation/" + rec.RequestId;
      } catch (e) { fail(e); }
    } }, "Invoke");
    rows.push([
      el("a", { href: "#/invocations?function=" + encodeURIComponent(f.Name) }, f.Name),
      f.Image,
      f.Triggers.map((t) => el("div", {}, t.Type + "/" + t.Name + (t.Path ? " " + t.Path : "") + (t.Cron ? " " + t.Cron : "") +
        (t.NextFire ? " (next " + t.NextFire + ")" : "") + (t.Source ? " " + t.Source : ""))),
      recent.Invocations.map((r) => el("div", {}, status(r.Status), " ", link(r.RequestId))),
      el("div", {}, event, invoke),
    ]);
  }
  show(el("h2", {}, "Functions"), table(["Function", "Image", "Triggers", "Last outcomes", "Invoke with an event"], rows));
}

async function invocationsPage(params) {
  const fn = params.get("function") || "", st = params.get("status") || "", since = params.get("since") || "";
  const q = new URLSearchParams({ limit: "50" });
  if (fn) q.set("function", fn);
  if (st) q.set("status", st);
  if (params.get("cursor")) q.set("cursor", params.get("cursor"));
  const page = await api("GET", "/v1/invocations?" + q);
  const cutoff = since ? Date.now() - Number(since) * 60000 : 0;
  const recs = page.Invocations.filter((r) => !cutoff || Date.parse(r.EnqueueTime) >= cutoff);
  const form = el("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const p = new URLSearchParams();
    for (const [k, v] of f) if (v) p.set(k, v);
    location.hash = "#/invocations?" + p;
  } },
  el("label", {}, "Function ", el("input", { name: "function", value: fn })),
  el("label", {}, "Status ", el("select", { name: "status" }, ["", "SCHEDULED", "PENDING", "SCHEDULING", "RUNNING", "FINISHED", "FAILED", "TIMEOUT", "ABORTED"]
    .map((s) => { const o = el("option", { value: s }, s || "any"); if (s === st) o.selected = true; return o; }))),
  el("label", {}, "Within the last ", el("input", { name: "since", value: since, size: 4 }), " minutes"),
  el("button", { type: "submit" }, "Filter"));
  const next = page.NextCursor ? el("a", { href: "#/invocations?" + new URLSearchParams({ function: fn, status: st, since, cursor: page.NextCursor }) }, "Older →") : "";
  show(el("h2", {}, "Invocations"), form, table(["RequestId", "Function", "Status", "Code", "Attempt", "Enqueued", "Duration"],
    recs.map((r) => [link(r.RequestId), r.FunctionName, status(r.Status), String(r.StatusCode), String(r.Attempt), r.EnqueueTime,
      r.EndTime ? r.DurationMs + " ms" : "–"])), next);
}

function attemptsOf(rec) {
  return (rec.Attempts || []).concat([{ Attempt: rec.Attempt, Status: rec.Status, StatusCode: rec.StatusCode, Message: rec.Message,
    ExitCode: rec.ExitCode, DurationMs: rec.DurationMs, current: true }]);
}

function attemptsTable(rec) {
  return table(["Attempt", "Status", "Code", "Exit", "Duration", "Message"], attemptsOf(rec).map((a) => [String(a.Attempt), status(a.Status),
    String(a.StatusCode), a.ExitCode == null ? "–" : String(a.ExitCode), a.DurationMs ? a.DurationMs + " ms" : "–", a.Message || ""]));
}

async function invocationPage(id) {
  const rec = await api("GET", "/v1/invocations/" + encodeURIComponent(id));
  const attempts = attemptsOf(rec);
  const log = el("pre", { id: "log" });
  const picker = el("select", { id: "attempt", onchange: () => follow(Number(picker.value)) },
    attempts.map((a) => { const o = el("option", { value: a.Attempt }, "attempt " + a.Attempt); if (a.current) o.selected = true; return o; }));
  const header = el("p", { id: "record" }, status(rec.Status), " ", rec.FunctionName, " · code ", String(rec.StatusCode),
    rec.ExitCode != null ? " · exit " + rec.ExitCode : "", rec.Message ? " · " + rec.Message : "");
  const stop = el("button", { onclick: async () => { try { await api("POST", "/v1/invocations/" + encodeURIComponent(id) + "/terminate", "{\"GraceShutdown\":true}"); route(); } catch (e) { fail(e); } } }, "Terminate");
  let attemptsEl = attemptsTable(rec);
  show(el("h2", {}, "Invocation ", id), header, stop, attemptsEl, el("h3", {}, "Log ", picker), log);

  // Follow the log; when it ends, refresh the record (its status line).
  async function follow(n) {
    if (stopStream) stopStream();
    log.replaceChildren();
    const ctl = new AbortController();
    stopStream = () => ctl.abort();
    const headers = {};
    const token = sessionStorage.getItem("jobgate-token");
    if (token) headers["Authorization"] = "Bearer " + token;
    try {
      const resp = await fetch("/v1/invocations/" + encodeURIComponent(id) + "/logs?follow=1&attempt=" + n, { headers, signal: ctl.signal });
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "", partial = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = JSON.parse(buf.slice(0, i));
          buf = buf.slice(i + 1);
          if (line.partial) { partial += line.line; continue; }
          log.append(el("div", { class: line.stream }, line.ts.slice(11, 23) + " " + line.stream.padEnd(8) + " " + partial + line.line));
          partial = "";
          log.scrollTop = log.scrollHeight;
        }
      }
      const now = await api("GET", "/v1/invocations/" + encodeURIComponent(id));
      const fresh = attemptsTable(now);
      attemptsEl.replaceWith(fresh);
      attemptsEl = fresh;
      header.replaceChildren(status(now.Status), " ", now.FunctionName, " · code ", String(now.StatusCode),
        now.ExitCode != null ? " · exit " + now.ExitCode : "", now.Message ? " · " + now.Message : "");
    } catch (e) { if (e.name !== "AbortError") log.append(el("div", { class: "error" }, String(e))); }
  }
  follow(rec.Attempt);
}

async function deadLettersPage() {
  const page = await api("GET", "/v1/deadletters?limit=100");
  show(el("h2", {}, "Dead letters"), table(["RequestId", "Function", "Code", "Message", "Dead", ""],
    page.DeadLetters.map((d) => [link(d.RequestId), d.Body.FunctionName, String(d.ErrorCode), d.ErrorMessage, d.DeadTime,
      el("button", { "data-redrive": d.RequestId, onclick: async () => {
        try {
          const rec = await api("POST", "/v1/deadletters/" + encodeURIComponent(d.RequestId) + "/redrive");
          location.hash = "#/invocation/" + rec.RequestId;
        } catch (e) { fail(e); }
      } }, "Redrive")])));
}

async function clusterPage() {
  const c = await api("GET", "/v1/cluster");
  show(el("h2", {}, "Queue"), table(Object.keys(c.Queue), [Object.values(c.Queue).map(String)]),
    el("h2", {}, "Workers"), table(["Node", "Lease", "Running"], c.Nodes.map((n) => [n.Node,
      n.LeaseMs > 0 ? "held (" + Math.round(n.LeaseMs / 1000) + " s left)" : el("span", { class: "error" }, "gone"), String(n.Running)])),
    el("p", { class: "muted" }, c.Running + " invocations running in all."));
}

window.addEventListener("hashchange", route);
route();
