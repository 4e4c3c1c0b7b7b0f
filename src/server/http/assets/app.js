// The actormq management UI: plain JavaScript over the JSON API (/api/...), with HTTP
// basic auth from the login form. No framework, no build step; the DOM is built with
// h() so that names coming from the broker are never parsed as HTML.
"use strict";

const REFRESH_MS = 5000;
let auth = sessionStorage.getItem("actormq-auth");
let timer = null;
let pageState = {};

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

const enc = encodeURIComponent;
const fmt = (n) => (n === undefined || n === null ? "" : Number(n).toLocaleString("en"));
const rate = (stats, f) => {
  const d = stats && stats[f + "_details"];
  return d ? d.rate : 0;
};
const fmtRate = (r) => (r >= 100 ? Math.round(r).toLocaleString("en") : (Math.round(r * 10) / 10).toString()) + "/s";
function bytes(n) {
  if (n === null || n === undefined) return "?";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.reason ? body.reason : "HTTP " + status);
    this.status = status;
  }
}

async function api(method, path, body, headers) {
  const init = { method, headers: Object.assign({ Authorization: "Basic " + auth, "X-Requested-With": "XMLHttpRequest" }, headers || {}) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) { logout("Your credentials were refused."); throw new ApiError(401); }
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

function notice(text, isError) {
  const n = document.getElementById("notice");
  n.textContent = text;
  n.className = "notice" + (isError ? " error" : "");
  n.hidden = !text;
}

// Runs an action from a button or form: shows its outcome, then refreshes the page.
async function act(what, fn) {
  try {
    const r = await fn();
    notice(typeof r === "string" ? r : what + ": done.");
    await refresh();
  } catch (e) {
    notice(what + " failed: " + e.message, true);
  }
}

function table(columns, rows, opts) {
  opts = opts || {};
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.title)));
  const body = rows.map((r) =>
    h("tr", opts.rowAttrs ? opts.rowAttrs(r) : {}, columns.map((c) => h("td", { class: [c.num ? "num" : "", c.cls || ""].join(" ").trim() || null }, c.value(r))))
  );
  if (!rows.length) body.push(h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, opts.empty || "None.")));
  return h("table", { id: opts.id }, h("thead", {}, head), h("tbody", {}, body));
}

// ---------------------------------------------------------------- plots

// Rates from RabbitMQ's samples (accumulated totals, newest first): one point per pair.
function ratesFrom(samples) {
  const out = [];
  for (let i = 0; i + 1 < (samples || []).length; i++) {
    const a = samples[i], b = samples[i + 1];
    const dt = (a.timestamp - b.timestamp) / 1000;
    if (dt > 0) out.push([a.timestamp, Math.max(0, (a.sample - b.sample) / dt)]);
  }
  return out.reverse();
}

const valuesFrom = (samples) => (samples || []).map((p) => [p.timestamp, p.sample]).reverse();

// A line plot of [timestamp, value] series over the last `span` ms, in SVG.
function plot(series, span, unit) {
  const W = 640, H = 200, L = 48, R = 8, T = 8, B = 22;
  const now = Date.now(), t0 = now - span;
  let max = 0;
  for (const se of series) for (const [, v] of se.points) max = Math.max(max, v);
  max = niceMax(max);
  const x = (t) => L + ((t - t0) / span) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const svg = s("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    svg.append(s("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(s("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, shortNum(v) + unit));
  }
  const minutes = Math.round(span / 60000);
  for (let m = 0; m <= minutes; m += Math.max(1, Math.round(minutes / 5))) {
    const t = now - m * 60000;
    svg.append(s("text", { x: x(t), y: H - 6, "text-anchor": "middle" }, m ? `-${m} min` : "now"));
  }
  for (const se of series) {
    const pts = se.points.filter(([t]) => t >= t0).map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    if (pts.length === 1) pts.push(pts[0]);
    svg.append(s("polyline", { points: pts.join(" "), fill: "none", stroke: se.color, "stroke-width": 2 }));
  }
  const legend = h("div", { class: "legend" }, series.map((se) => h("span", {}, h("i", { style: "background:" + se.color }), se.name)));
  return h("div", {}, svg, legend);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

const shortNum = (v) => (v >= 1e6 ? v / 1e6 + "M" : v >= 1e3 ? v / 1e3 + "k" : String(Math.round(v * 10) / 10));

// ---------------------------------------------------------------- pages

const pages = {};

pages.overview = async function () {
  const [o, nodes, health] = await Promise.all([
    api("GET", "/api/overview?msg_rates_age=600&lengths_age=600"),
    api("GET", "/api/nodes"),
    fetch("/api/health/checks/alarms", { headers: { Authorization: "Basic " + auth, "X-Requested-With": "XMLHttpRequest" } }).then((r) => r.json()),
  ]);
  const t = o.object_totals, q = o.queue_totals, m = o.message_stats;
  const stat = (k, v, id) => h("div", { class: "stat", id }, h("div", { class: "v" }, v), h("div", { class: "k" }, k));
  const node = nodes[0] || {};
  const alarms = health.status === "ok"
    ? h("span", { class: "badge good", id: "alarms" }, "No alarms")
    : h("span", { class: "badge bad", id: "alarms" }, "Alarms: " + health.alarms.map((a) => a.resource).join(", "));
  const span = 10 * 60 * 1000;
  return [
    h("h2", {}, "Overview ", alarms),
    h("div", { class: "stats" },
      stat("Connections", fmt(t.connections), "total-connections"),
      stat("Channels", fmt(t.channels)),
      stat("Queues", fmt(t.queues), "total-queues"),
      stat("Consumers", fmt(t.consumers)),
      stat("Exchanges", fmt(t.exchanges)),
      stat("Ready", fmt(q.messages_ready), "total-ready"),
      stat("Unacked", fmt(q.messages_unacknowledged)),
      stat("Publish", fmtRate(rate(m, "publish")), "rate-publish"),
      stat("Deliver", fmtRate(rate(m, "deliver_get"))),
      stat("Ack", fmtRate(rate(m, "ack"))),
      stat("Redeliver", fmtRate(rate(m, "redeliver")))),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h3", {}, "Message rates, last 10 minutes"),
        plot([
          { name: "publish", color: "#e85d04", points: ratesFrom(m.publish_details.samples) },
          { name: "deliver / get", color: "#1565c0", points: ratesFrom(m.deliver_get_details.samples) },
          { name: "ack", color: "#2e7d32", points: ratesFrom(m.ack_details.samples) },
          { name: "redeliver", color: "#8e24aa", points: ratesFrom(m.redeliver_details.samples) },
        ], span, "/s")),
      h("div", { class: "card" }, h("h3", {}, "Queued messages, last 10 minutes"),
        plot([
          { name: "ready", color: "#e85d04", points: valuesFrom(q.messages_ready_details.samples) },
          { name: "unacked", color: "#1565c0", points: valuesFrom(q.messages_unacknowledged_details.samples) },
        ], span, ""))),
    h("div", { class: "card" }, h("h3", {}, "Node " + (node.name || "")),
      table([
        { title: "Uptime", value: (n) => Math.round(n.uptime / 1000) + " s" },
        { title: "Memory (queued messages)", value: (n) => bytes(n.mem_used) + " of " + (n.mem_limit ? bytes(n.mem_limit) : "no limit") },
        { title: "Resident memory", value: (n) => bytes(n.mem_rss) },
        { title: "Disk free", value: (n) => bytes(n.disk_free) + " (limit " + bytes(n.disk_free_limit) + ")" },
        { title: "File descriptors", value: (n) => fmt(n.fd_used) + " / " + fmt(n.fd_total) },
      ], nodes)),
    h("div", { class: "card" }, h("h3", {}, "Listeners"),
      table([
        { title: "Protocol", value: (l) => l.protocol },
        { title: "Address", value: (l) => l.ip_address },
        { title: "Port", value: (l) => l.port, num: true },
      ], o.listeners)),
  ];
};

function vhostSelect(vhosts, id) {
  return h("select", { id, name: "vhost" }, vhosts.map((v) => h("option", { value: v.name }, v.name)));
}

// The queues page shows one page of the list (a broker may have thousands of queues).
const queueView = { page: 1, name: "" };
const QUEUES_PER_PAGE = 50;

pages.queues = async function () {
  const query = `page=${queueView.page}&page_size=${QUEUES_PER_PAGE}&sort=name&name=${enc(queueView.name)}`;
  let listed;
  try {
    listed = await api("GET", "/api/queues?" + query);
  } catch (e) {
    // Past the last page (queues went away): back to the first.
    if (queueView.page === 1 || e.status !== 400) throw e;
    queueView.page = 1;
    return pages.queues();
  }
  const queues = listed.items;
  const vhosts = await api("GET", "/api/vhosts");
  const filter = h("form", { class: "inline", id: "queue-filter" },
    h("input", { id: "queue-filter-name", placeholder: "name contains", value: queueView.name }),
    h("button", { type: "submit" }, "Filter"),
    h("button", { type: "button", disabled: queueView.page <= 1, onclick: () => { queueView.page -= 1; refresh(true); } }, "Previous"),
    h("span", { class: "muted", id: "queue-page" }, `page ${listed.page} of ${Math.max(1, listed.page_count)}, ${listed.filtered_count} of ${listed.total_count} queues`),
    h("button", { type: "button", disabled: listed.page >= listed.page_count, onclick: () => { queueView.page += 1; refresh(true); } }, "Next"));
  filter.addEventListener("submit", (ev) => {
    ev.preventDefault();
    queueView.name = document.getElementById("queue-filter-name").value;
    queueView.page = 1;
    document.activeElement.blur();
    refresh(true);
  });
  const declare = h("form", { class: "inline", id: "declare-queue" },
    vhostSelect(vhosts, "declare-queue-vhost"),
    h("input", { id: "declare-queue-name", placeholder: "queue name", required: true }),
    h("label", {}, h("input", { type: "checkbox", id: "declare-queue-durable", checked: true }), " durable"),
    h("button", { type: "submit", class: "primary" }, "Declare queue"));
  declare.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = document.getElementById("declare-queue-vhost").value;
    const n = document.getElementById("declare-queue-name").value;
    const durable = document.getElementById("declare-queue-durable").checked;
    act("Declare queue " + n, () => api("PUT", `/api/queues/${enc(v)}/${enc(n)}`, { durable }));
  });
  return [
    h("h2", {}, "Queues"),
    h("div", { class: "card" }, declare),
    h("div", { class: "card" }, filter),
    table([
      { title: "Virtual host", value: (q) => q.vhost },
      { title: "Name", value: (q) => h("a", { href: `#queue/${enc(q.vhost)}/${enc(q.name)}`, class: "queue-link" }, q.name) },
      { title: "State", value: (q) => q.state },
      { title: "Ready", value: (q) => fmt(q.messages_ready), num: true, cls: "q-ready" },
      { title: "Unacked", value: (q) => fmt(q.messages_unacknowledged), num: true, cls: "q-unacked" },
      { title: "Total", value: (q) => fmt(q.messages), num: true },
      { title: "Consumers", value: (q) => fmt(q.consumers), num: true },
      { title: "Incoming", value: (q) => fmtRate(rate(q.message_stats, "publish")), num: true },
      { title: "Deliver / get", value: (q) => fmtRate(rate(q.message_stats, "deliver_get")), num: true },
      { title: "Ack", value: (q) => fmtRate(rate(q.message_stats, "ack")), num: true },
    ], queues, { id: "queues-table", rowAttrs: (q) => ({ "data-queue": q.name, "data-vhost": q.vhost }), empty: "No queues." }),
  ];
};

pages.queue = async function (vhost, name) {
  const base = `/api/queues/${enc(vhost)}/${enc(name)}`;
  const [q, consumers, bindings] = await Promise.all([
    api("GET", base),
    api("GET", `/api/consumers/${enc(vhost)}`),
    api("GET", base + "/bindings"),
  ]);
  const mine = consumers.filter((c) => c.queue.name === name);
  const ms = q.message_stats;
  const publish = h("form", { id: "publish-form" },
    h("label", {}, "Payload", h("textarea", { id: "publish-payload" }, "hello")),
    h("label", {}, h("input", { type: "checkbox", id: "publish-persistent" }), " persistent"),
    " ", h("button", { type: "submit", class: "primary", id: "publish-submit" }, "Publish message"));
  publish.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = {
      routing_key: name,
      payload: document.getElementById("publish-payload").value,
      payload_encoding: "string",
      properties: document.getElementById("publish-persistent").checked ? { delivery_mode: 2 } : {},
    };
    act("Publish", async () => {
      const r = await api("POST", `/api/exchanges/${enc(vhost)}/amq.default/publish`, body);
      return r.routed ? "Message published." : "Message published, but routed to no queue.";
    });
  });
  const got = h("div", { id: "get-result" }, pageState.got || []);
  const getForm = h("form", { class: "inline", id: "get-form" },
    h("label", {}, "Messages ", h("input", { id: "get-count", type: "number", value: "1", min: "1", max: "100", style: "width:4rem" })),
    h("select", { id: "get-ackmode" },
      h("option", { value: "ack_requeue_true" }, "Nack, requeue"),
      h("option", { value: "ack_requeue_false" }, "Ack, remove"),
      h("option", { value: "reject_requeue_true" }, "Reject, requeue"),
      h("option", { value: "reject_requeue_false" }, "Reject, no requeue")),
    h("button", { type: "submit", id: "get-submit" }, "Get messages"));
  getForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      count: Number(document.getElementById("get-count").value),
      ackmode: document.getElementById("get-ackmode").value,
      encoding: "auto",
      truncate: 50000,
    };
    await act("Get", async () => {
      const msgs = await api("POST", base + "/get", body);
      pageState.got = msgs.length
        ? msgs.map((m, i) => h("div", { class: "card got-message" },
          h("div", { class: "muted" }, `Message ${i + 1}: exchange "${m.exchange}", routing key "${m.routing_key}", ${m.payload_bytes} bytes, redelivered: ${m.redelivered}, ${m.message_count} left`),
          h("pre", {}, m.payload)))
        : [h("p", { class: "muted" }, "The queue is empty.")];
      return msgs.length + " message(s) got.";
    });
  });
  return [
    h("h2", {}, "Queue ", h("span", { id: "queue-name" }, name), h("span", { class: "muted" }, " in " + vhost)),
    h("div", { class: "stats" },
      h("div", { class: "stat" }, h("div", { class: "v", id: "queue-ready" }, fmt(q.messages_ready)), h("div", { class: "k" }, "Ready")),
      h("div", { class: "stat" }, h("div", { class: "v", id: "queue-unacked" }, fmt(q.messages_unacknowledged)), h("div", { class: "k" }, "Unacked")),
      h("div", { class: "stat" }, h("div", { class: "v" }, fmt(q.consumers)), h("div", { class: "k" }, "Consumers")),
      h("div", { class: "stat" }, h("div", { class: "v" }, bytes(q.message_bytes)), h("div", { class: "k" }, "Bytes")),
      h("div", { class: "stat" }, h("div", { class: "v" }, fmtRate(rate(ms, "publish"))), h("div", { class: "k" }, "Incoming")),
      h("div", { class: "stat" }, h("div", { class: "v" }, fmtRate(rate(ms, "deliver_get"))), h("div", { class: "k" }, "Deliver / get")),
      h("div", { class: "stat" }, h("div", { class: "v" }, fmtRate(rate(ms, "ack"))), h("div", { class: "k" }, "Ack")),
      h("div", { class: "stat" }, h("div", { class: "v" }, fmtRate(rate(ms, "redeliver"))), h("div", { class: "k" }, "Redeliver"))),
    h("p", { class: "muted" }, `durable: ${q.durable}, auto-delete: ${q.auto_delete}, arguments: ${JSON.stringify(q.arguments)}`),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h3", {}, "Publish a message"), publish),
      h("div", { class: "card" }, h("h3", {}, "Get messages"), getForm, got)),
    h("div", { class: "card" }, h("h3", {}, "Consumers"),
      table([
        { title: "Tag", value: (c) => c.consumer_tag },
        { title: "Channel", value: (c) => (c.channel_details ? c.channel_details.name : "(embedded)") },
        { title: "Ack required", value: (c) => String(c.ack_required) },
        { title: "Prefetch", value: (c) => c.prefetch_count, num: true },
        { title: "Status", value: (c) => c.activity_status },
      ], mine, { empty: "No consumers." })),
    h("div", { class: "card" }, h("h3", {}, "Bindings"),
      table([
        { title: "From", value: (b) => b.source || "(default exchange)" },
        { title: "Routing key", value: (b) => b.routing_key },
      ], bindings)),
    h("div", { class: "card" },
      h("button", { id: "purge-button", onclick: () => confirm(`Purge every ready message of ${name}?`) && act("Purge", () => api("DELETE", base + "/contents").then(() => "Queue purged.")) }, "Purge"),
      " ",
      h("button", { class: "danger", id: "delete-queue-button", onclick: () => confirm(`Delete queue ${name}?`) && act("Delete", () => api("DELETE", base).then(() => { location.hash = "#queues"; return "Queue deleted."; })) }, "Delete queue")),
  ];
};

pages.exchanges = async function () {
  const [xs, bindings, vhosts] = await Promise.all([api("GET", "/api/exchanges?sort=name"), api("GET", "/api/bindings"), api("GET", "/api/vhosts")]);
  const declare = h("form", { class: "inline", id: "declare-exchange" },
    vhostSelect(vhosts, "declare-exchange-vhost"),
    h("input", { id: "declare-exchange-name", placeholder: "exchange name", required: true }),
    h("select", { id: "declare-exchange-type" }, ["direct", "fanout", "topic", "headers"].map((t) => h("option", { value: t }, t))),
    h("button", { type: "submit", class: "primary" }, "Declare exchange"));
  declare.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = document.getElementById("declare-exchange-vhost").value;
    const n = document.getElementById("declare-exchange-name").value;
    const type = document.getElementById("declare-exchange-type").value;
    act("Declare exchange " + n, () => api("PUT", `/api/exchanges/${enc(v)}/${enc(n)}`, { type, durable: true }));
  });
  const bind = h("form", { class: "inline", id: "bind-form" },
    vhostSelect(vhosts, "bind-vhost"),
    h("input", { id: "bind-source", placeholder: "from exchange", required: true }),
    h("input", { id: "bind-queue", placeholder: "to queue", required: true }),
    h("input", { id: "bind-key", placeholder: "routing key" }),
    h("button", { type: "submit" }, "Bind"));
  bind.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = document.getElementById("bind-vhost").value;
    const src = document.getElementById("bind-source").value;
    const q = document.getElementById("bind-queue").value;
    const key = document.getElementById("bind-key").value;
    act("Bind", () => api("POST", `/api/bindings/${enc(v)}/e/${enc(src)}/q/${enc(q)}`, { routing_key: key }));
  });
  return [
    h("h2", {}, "Exchanges"),
    h("div", { class: "card" }, declare),
    table([
      { title: "Virtual host", value: (x) => x.vhost },
      { title: "Name", value: (x) => x.name || "(default exchange)" },
      { title: "Type", value: (x) => x.type },
      { title: "Durable", value: (x) => String(x.durable) },
      { title: "In", value: (x) => fmtRate(rate(x.message_stats, "publish_in")), num: true },
      { title: "Out", value: (x) => fmtRate(rate(x.message_stats, "publish_out")), num: true },
      { title: "", value: (x) => (x.name === "" || x.name.startsWith("amq.") ? "" : h("button", { class: "danger", onclick: () => confirm(`Delete exchange ${x.name}?`) && act("Delete exchange", () => api("DELETE", `/api/exchanges/${enc(x.vhost)}/${enc(x.name)}`)) }, "Delete")) },
    ], xs, { id: "exchanges-table" }),
    h("h3", {}, "Bindings"),
    h("div", { class: "card" }, bind),
    table([
      { title: "Virtual host", value: (b) => b.vhost },
      { title: "From", value: (b) => b.source },
      { title: "To", value: (b) => b.destination_type + " " + b.destination },
      { title: "Routing key", value: (b) => b.routing_key },
      { title: "", value: (b) => h("button", { onclick: () => act("Unbind", () => api("DELETE", `/api/bindings/${enc(b.vhost)}/e/${enc(b.source)}/${b.destination_type === "queue" ? "q" : "e"}/${enc(b.destination)}/${enc(b.properties_key)}`)) }, "Unbind") },
    ], bindings, { empty: "No bindings (besides every queue's to the default exchange)." }),
  ];
};

pages.connections = async function () {
  const [conns, channels] = await Promise.all([api("GET", "/api/connections"), api("GET", "/api/channels")]);
  return [
    h("h2", {}, "Connections"),
    table([
      { title: "Name", value: (c) => c.name },
      { title: "Protocol", value: (c) => c.protocol },
      { title: "User", value: (c) => c.user },
      { title: "Virtual host", value: (c) => c.vhost },
      { title: "Channels", value: (c) => c.channels, num: true },
      { title: "Publish", value: (c) => fmtRate(rate(c.message_stats, "publish")), num: true },
      { title: "Deliver", value: (c) => fmtRate(rate(c.message_stats, "deliver_get")), num: true },
      { title: "", value: (c) => h("button", { class: "danger", onclick: () => confirm(`Close connection ${c.name}?`) && act("Close connection", () => api("DELETE", `/api/connections/${enc(c.name)}`, undefined, { "X-Reason": "Closed from the management UI" })) }, "Close") },
    ], conns, { id: "connections-table", empty: "No connections." }),
    h("h3", {}, "Channels"),
    table([
      { title: "Channel", value: (c) => c.name },
      { title: "User", value: (c) => c.user },
      { title: "Virtual host", value: (c) => c.vhost },
      { title: "Consumers", value: (c) => c.consumer_count, num: true },
      { title: "Unacked", value: (c) => c.messages_unacknowledged, num: true },
      { title: "Prefetch", value: (c) => c.prefetch_count, num: true },
      { title: "Confirm", value: (c) => String(c.confirm) },
    ], channels, { empty: "No channels." }),
  ];
};

pages.users = async function () {
  const [users, perms, vhosts] = await Promise.all([api("GET", "/api/users"), api("GET", "/api/permissions"), api("GET", "/api/vhosts")]);
  const add = h("form", { class: "inline", id: "add-user" },
    h("input", { id: "add-user-name", placeholder: "name", required: true }),
    h("input", { id: "add-user-password", type: "password", placeholder: "password", required: true }),
    h("input", { id: "add-user-tags", placeholder: "tags (e.g. management)" }),
    h("button", { type: "submit", class: "primary" }, "Add user"));
  add.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const n = document.getElementById("add-user-name").value;
    act("Add user " + n, () => api("PUT", `/api/users/${enc(n)}`, {
      password: document.getElementById("add-user-password").value,
      tags: document.getElementById("add-user-tags").value,
    }));
  });
  const grant = h("form", { class: "inline", id: "grant" },
    h("select", { id: "grant-user" }, users.map((u) => h("option", { value: u.name }, u.name))),
    vhostSelect(vhosts, "grant-vhost"),
    h("button", { type: "submit" }, "Grant access"));
  grant.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const u = document.getElementById("grant-user").value, v = document.getElementById("grant-vhost").value;
    act("Grant", () => api("PUT", `/api/permissions/${enc(v)}/${enc(u)}`, { configure: ".*", write: ".*", read: ".*" }));
  });
  const addVhost = h("form", { class: "inline", id: "add-vhost" },
    h("input", { id: "add-vhost-name", placeholder: "virtual host", required: true }),
    h("button", { type: "submit" }, "Add virtual host"));
  addVhost.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = document.getElementById("add-vhost-name").value;
    act("Add virtual host " + v, () => api("PUT", `/api/vhosts/${enc(v)}`));
  });
  const importForm = h("form", { class: "inline", id: "import-definitions" },
    h("input", { type: "file", id: "import-file", accept: "application/json,.json", required: true }),
    h("button", { type: "submit" }, "Import definitions"));
  importForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("import-file");
    const file = input.files[0];
    act("Import definitions", async () => {
      await api("POST", "/api/definitions", JSON.parse(await file.text()));
      input.value = "";
      return "Definitions imported.";
    });
  });
  const exportButton = h("button", { id: "export-definitions", onclick: () => act("Export definitions", async () => {
    const defs = await api("GET", "/api/definitions");
    const link = h("a", { href: URL.createObjectURL(new Blob([JSON.stringify(defs, null, 2)], { type: "application/json" })), download: "actormq-definitions.json" });
    link.click();
    return "Definitions exported.";
  }) }, "Export definitions");
  return [
    h("h2", {}, "Users"),
    h("div", { class: "card" }, add),
    table([
      { title: "Name", value: (u) => u.name },
      { title: "Tags", value: (u) => u.tags.join(", ") },
      { title: "", value: (u) => h("button", { class: "danger", onclick: () => confirm(`Delete user ${u.name}?`) && act("Delete user", () => api("DELETE", `/api/users/${enc(u.name)}`)) }, "Delete") },
    ], users, { id: "users-table" }),
    h("h3", {}, "Permissions"),
    h("div", { class: "card" }, grant),
    table([
      { title: "User", value: (p) => p.user },
      { title: "Virtual host", value: (p) => p.vhost },
      { title: "Configure / write / read", value: (p) => `${p.configure} ${p.write} ${p.read}` },
      { title: "", value: (p) => h("button", { onclick: () => act("Revoke", () => api("DELETE", `/api/permissions/${enc(p.vhost)}/${enc(p.user)}`)) }, "Revoke") },
    ], perms),
    h("h3", {}, "Virtual hosts"),
    h("div", { class: "card" }, addVhost),
    table([
      { title: "Name", value: (v) => v.name },
      { title: "Messages", value: (v) => fmt(v.messages), num: true },
      { title: "Publish", value: (v) => fmtRate(rate(v.message_stats, "publish")), num: true },
      { title: "Deliver", value: (v) => fmtRate(rate(v.message_stats, "deliver_get")), num: true },
    ], vhosts),
    h("h3", {}, "Definitions"),
    h("div", { class: "card" }, h("p", { class: "muted" }, "Users, virtual hosts, permissions, policies, queues, exchanges and bindings, in RabbitMQ's definitions format."), exportButton, " ", importForm),
  ];
};

// ---------------------------------------------------------------- navigation

function route() {
  const parts = (location.hash.slice(1) || "overview").split("/").map(decodeURIComponent);
  return { page: pages[parts[0]] ? parts[0] : "overview", args: parts.slice(1) };
}

// Redraws the current page; keeps focus and typed values by skipping the redraw while
// the user is typing in a form.
// True while the user has chosen a file that no form has sent yet: a refresh would
// replace the form and lose the choice.
function fileChosen() {
  return [...document.querySelectorAll("#page input[type=file]")].some((i) => i.files && i.files.length);
}

async function refresh(force) {
  const { page, args } = route();
  const active = document.activeElement;
  if (!force && active && active.closest && active.closest("form") && ["INPUT", "TEXTAREA", "SELECT"].includes(active.tagName)) return;
  if (!force && fileChosen()) return;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === page || (page === "queue" && a.dataset.page === "queues"));
  }
  try {
    const content = await pages[page](...args);
    // A file chosen while the page loaded (the load is asynchronous) is kept too.
    if (!force && fileChosen()) return;
    const el = document.getElementById("page");
    el.replaceChildren(...content);
    el.dataset.page = page;
    el.dataset.loaded = String(Date.now());
  } catch (e) {
    if (e.status !== 401) notice("Could not load the page: " + e.message, true);
  }
}

function start() {
  document.getElementById("login-view").hidden = true;
  document.getElementById("app-view").hidden = false;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  clearInterval(timer);
  timer = setInterval(() => refresh(false), REFRESH_MS);
  refresh(true);
}

function logout(reason) {
  auth = null;
  sessionStorage.removeItem("actormq-auth");
  clearInterval(timer);
  document.getElementById("login-view").hidden = false;
  document.getElementById("app-view").hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("login-error").textContent = reason || "";
}

document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const user = document.getElementById("login-user").value;
  const password = document.getElementById("login-password").value;
  // btoa takes Latin-1: encode UTF-8 first so any name and password work.
  auth = btoa(String.fromCharCode(...new TextEncoder().encode(user + ":" + password)));
  const res = await fetch("/api/whoami", { headers: { Authorization: "Basic " + auth, "X-Requested-With": "XMLHttpRequest" } });
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    logout(body.reason || "Login refused (HTTP " + res.status + ").");
    return;
  }
  const me = await res.json();
  sessionStorage.setItem("actormq-auth", auth);
  document.getElementById("who").textContent = me.name + (me.tags.length ? " (" + me.tags.join(", ") + ")" : "");
  start();
});

document.getElementById("logout").addEventListener("click", () => logout());
window.addEventListener("hashchange", () => { pageState = {}; notice(""); refresh(true); });

if (auth) {
  api("GET", "/api/whoami").then((me) => {
    document.getElementById("who").textContent = me.name;
    start();
  }).catch(() => logout());
}
