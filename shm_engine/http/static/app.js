// shm-engine dashboard: plain JavaScript, no build step, no library.
//
// Live numbers come from GET /v1/stream (server-sent events: one `history`
// event, then a compact `tick` summary at most every stream interval); the
// node table is fetched a page at a time from GET /v1/nodes, filtered,
// sorted and paged by the server, so the page costs the same at 10 nodes
// and at 10K.  The event panel shows the newest events (GET /v1/events),
// then follows GET /v1/events/stream from there (the browser resumes it
// with Last-Event-ID after a drop); the server filters by node.  Charts
// are drawn on canvas by the small functions below.
"use strict";

const STATES = ["healthy", "degraded", "overloaded", "quarantined", "dead"];
const COLORS = {
  healthy: "#2e9d57", degraded: "#d9a400", overloaded: "#e3702d",
  quarantined: "#8a55c7", dead: "#7d8694",
};
const WEIGHT_COLORS = ["#2563eb", "#0891b2", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#64748b"];
const REFRESH_MS = 1000;
const EVENTS_SHOWN = 200;  // newest events kept in the panel
// `?node=ID` opens that node's detail view.
// `?live=0`: a still page (no stream, no polling), for screenshots and for
// headless checks whose virtual clock stops while a request is open.
const LIVE = new URLSearchParams(location.search).get("live") !== "0";
const HISTORY_S = 600;

const $ = (id) => document.getElementById(id);
const state = {
  summaries: [],       // one per second, oldest first
  cursors: [null],     // cursor of each page seen; the last is the current page
  next: null,
  selected: null,      // node id of the detail view
  lastTick: null,
  events: null,        // the event stream (EventSource), if open
  eventsLost: 0,       // events the stream said were lost
  configSeen: null,    // "version/reloads" last shown
};

// ------------------------------------------------------------------ fetch --
async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    const e = body && body.error;
    throw new Error(e ? `${e.code}: ${e.message}` : `HTTP ${r.status}`);
  }
  return body;
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined) return "–";
  if (typeof x !== "number") return String(x);
  if (!isFinite(x)) return "∞";
  return x.toFixed(digits);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// ----------------------------------------------------------------- charts --
// Lines over time on a canvas: series = [{name, color, values}], aligned
// with `times` (seconds); y from `lo` to `hi` (hi null: the data's max).
function drawChart(canvas, times, series, lo = 0, hi = null) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 34, B = 16, T = 6, R = 6;
  ctx.clearRect(0, 0, W, H);
  let top = hi;
  if (top === null) {
    top = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > top) top = v;
    top = top > 0 ? top * 1.1 : 1;
  }
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillStyle = "#6b7280";
  ctx.strokeStyle = "#e3e6eb";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = T + (H - T - B) * (1 - i / 4);
    ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(W - R, y); ctx.stroke();
    const v = lo + (top - lo) * i / 4;
    ctx.fillText(top >= 10 ? v.toFixed(0) : v.toFixed(2), 2, y + 3);
  }
  if (times.length < 2) {
    ctx.fillText("collecting…", L + 8, T + 14);
    return;
  }
  const t0 = times[0], t1 = times[times.length - 1], span = Math.max(t1 - t0, 1);
  ctx.fillText(`-${Math.round(span)} s`, L, H - 3);
  ctx.fillText("now", W - R - 18, H - 3);
  const x = (t) => L + (W - L - R) * (t - t0) / span;
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / ((top - lo) || 1));
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = 1.5; ctx.beginPath();
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      if (pen) ctx.lineTo(x(times[i]), y(v)); else ctx.moveTo(x(times[i]), y(v));
      pen = true;
    });
    ctx.stroke();
  }
}

function legend(node, entries) {
  node.replaceChildren(...entries.map(([name, color]) => {
    const i = el("i"); i.style.background = color;
    return el("span", {}, i, name);
  }));
}

// A score sparkline: values in [0, 1], null gaps.
function sparkline(values) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 90 18");
  const pts = [];
  const n = values.length;
  values.forEach((v, i) => {
    if (v === null) return;
    const px = n > 1 ? (i * 90) / (n - 1) : 45;
    pts.push(`${px.toFixed(1)},${(17 - v * 16).toFixed(1)}`);
  });
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.append(line);
  return svg;
}

function drawCharts() {
  const s = state.summaries;
  const times = s.map((x) => x.t);
  drawChart($("chart-states"), times, STATES.map((k) => ({
    name: k, color: COLORS[k], values: s.map((x) => x.counts[k] ?? null),
  })));
  drawChart($("chart-pressure"), times, [{
    name: "pressure", color: "#2563eb", values: s.map((x) => x.pressure),
  }], 0, 1);
  const names = s.length ? Object.keys(s[s.length - 1].weights) : [];
  drawChart($("chart-weights"), times, names.map((k, i) => ({
    name: k, color: WEIGHT_COLORS[i % WEIGHT_COLORS.length], values: s.map((x) => x.weights[k] ?? null),
  })));
  legend($("legend-weights"), names.map((k, i) => [k, WEIGHT_COLORS[i % WEIGHT_COLORS.length]]));
}

// --------------------------------------------------------------- summary --
function showSummary(x) {
  state.lastTick = x;
  for (const k of STATES) $(`count-${k}`).textContent = x.counts[k] ?? 0;
  $("count-ranked").textContent = x.ranked;
  $("pressure").textContent = fmt(x.pressure);
  $("epoch").textContent = x.epoch;
  $("tick-age").textContent = `${(x.age_s * 1000).toFixed(0)} ms`;
  $("tick-p99").textContent = `${(x.tick_us_p99 / 1000).toFixed(2)} ms`;
  $("hb-accepted").textContent = x.ingest.accepted.toLocaleString();
  $("hb-rejected").textContent = x.ingest.rejected.toLocaleString();
  if (x.config_version !== undefined) {
    const seen = `${x.config_version}/${x.reloads}`;
    if (seen !== state.configSeen) {
      state.configSeen = seen;
      $("config-version").textContent = `v${x.config_version}`;
      if (x.reloads) loadConfig();  // a reload happened: show its result
    }
  }
  const sec = Math.floor(x.t);
  const last = state.summaries[state.summaries.length - 1];
  if (!last || Math.floor(last.t) < sec) {
    state.summaries.push(x);
    if (state.summaries.length > HISTORY_S) state.summaries.shift();
    drawCharts();
  }
}

function connect() {
  const es = new EventSource("/v1/stream");
  es.addEventListener("open", () => { $("conn").textContent = "live"; });
  es.addEventListener("history", (ev) => {
    state.summaries = JSON.parse(ev.data).summaries;
    drawCharts();
  });
  es.addEventListener("tick", (ev) => showSummary(JSON.parse(ev.data)));
  es.addEventListener("error", () => { $("conn").textContent = "reconnecting…"; });
}

async function refreshReady() {
  const r = await fetch("/readyz").catch(() => null);
  const dot = $("ready");
  const ok = r !== null && r.ok;
  dot.className = ok ? "dot ok" : "dot bad";
  dot.textContent = ok ? "ready" : "not ready";
}

// ------------------------------------------------------------------ nodes --
function query(cursor) {
  const p = new URLSearchParams();
  const st = $("f-state").value, zone = $("f-zone").value.trim();
  const label = $("f-label").value.trim(), prefix = $("f-prefix").value.trim();
  if (st) p.set("state", st);
  if (zone) p.set("zone", zone);
  if (label) p.set("label", label);
  if (prefix) p.set("prefix", prefix);
  p.set("sort", $("f-sort").value);
  p.set("limit", $("f-limit").value);
  p.set("history", "1");
  if (cursor) p.set("cursor", cursor);
  return `/v1/nodes?${p}`;
}

async function loadNodes() {
  const cursor = state.cursors[state.cursors.length - 1];
  let page;
  try {
    page = await getJSON(query(cursor));
    $("nodes-error").hidden = true;
  } catch (err) {
    $("nodes-error").textContent = err.message;
    $("nodes-error").hidden = false;
    return;
  }
  const rows = page.nodes.map((n) => {
    const tr = el("tr", { "data-node": n.node },
      el("td", {}, n.rank === null ? "–" : n.rank + 1),
      el("td", { class: "node" }, n.node),
      el("td", {}, el("span", { class: `state ${n.state}` }, n.state)),
      el("td", {}, fmt(n.score)),
      el("td", {}, sparkline(n.history || [])),
      el("td", {}, fmt(n.raw)),
      el("td", {}, fmt(n.wait, 2)),
      el("td", {}, fmt(n.liveness, 2)),
      el("td", {}, n.zone || ""));
    if (n.node === state.selected) tr.classList.add("selected");
    tr.addEventListener("click", () => select(n.node));
    return tr;
  });
  $("node-table").tBodies[0].replaceChildren(...rows);
  const first = (state.cursors.length - 1) * Number(page.limit);
  $("page-info").textContent = page.nodes.length
    ? `${first + 1}–${first + page.nodes.length} of ${page.total} nodes (epoch ${page.epoch})`
    : `no nodes match (epoch ${page.epoch})`;
  state.next = page.next_cursor;
  $("next").disabled = !page.next_cursor;
  $("prev").disabled = state.cursors.length < 2;
}

function restartPaging() {
  state.cursors = [null];
  loadNodes();
}

// ----------------------------------------------------------------- detail --
async function select(node) {
  state.selected = node;
  $("detail").hidden = false;
  for (const tr of $("node-table").tBodies[0].rows) {
    tr.classList.toggle("selected", tr.dataset.node === node);
  }
  await loadDetail();
}

function kv(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
}

async function loadDetail() {
  const node = state.selected;
  if (!node) return;
  let d;
  try {
    d = await getJSON(`/v1/nodes/${encodeURIComponent(node)}`);
  } catch (err) {
    $("detail-name").textContent = `${node}: ${err.message}`;
    return;
  }
  if (node !== state.selected) return;
  $("detail-name").textContent = d.node;
  kv($("detail-fields"), [
    ["state", d.state], ["score", fmt(d.score)], ["raw", fmt(d.raw)],
    ["rank", d.rank === null ? "not ranked" : d.rank + 1], ["wait (s)", fmt(d.wait, 2)],
    ["queue EMA", fmt(d.qema, 2)], ["liveness", fmt(d.liveness, 2)],
    ["in flight", d.in_flight ?? "–"], ["zone", d.zone || "–"],
    ["labels", Object.entries(d.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "–"],
  ]);
  const hb = d.heartbeat || {};
  kv($("detail-heartbeat"), Object.entries(hb).map(([k, v]) => [k, fmt(v, k === "ts" ? 0 : 3)]));
  const hist = d.history || [];
  const now = Date.now() / 1000;
  drawChart($("detail-chart"), hist.map((_, i) => now - (hist.length - 1 - i)),
    [{ name: "score", color: "#2563eb", values: hist }], 0, 1);
  renderNodeEvents(d.events);
}

// ----------------------------------------------------------------- events --
function clock(t) {
  const d = new Date(t * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// One event as a list item: time, node (click: its detail), from → to, why.
function eventItem(e, withNode = true) {
  const li = el("li", { "data-seq": e.seq },
    el("time", { title: `epoch ${e.epoch}, event ${e.seq}` }, clock(e.tick_wall)));
  if (withNode) {
    const name = el("span", { class: "ev-node" }, e.node || "?");
    name.addEventListener("click", () => select(e.node));
    li.append(name);
  }
  li.append(
    el("span", { class: `state ${e.from_state}` }, e.from_state), "→",
    el("span", { class: `state ${e.to_state}` }, e.to_state),
    el("span", { class: "reason" }, e.reason));
  return li;
}

// Newest first, at most EVENTS_SHOWN.
function addEvents(events) {
  const list = $("event-list");
  for (const e of events) list.prepend(eventItem(e));
  while (list.children.length > EVENTS_SHOWN) list.lastElementChild.remove();
  $("events-none").hidden = list.children.length > 0;
}

function eventsInfo() {
  const node = $("ev-node").value.trim();
  const lost = state.eventsLost ? `; ${state.eventsLost} lost (the page fell behind)` : "";
  $("events-info").textContent = (node ? `node ${node}` : "all nodes") + lost;
}

async function loadEvents() {
  const node = $("ev-node").value.trim();
  const p = new URLSearchParams({ limit: "50" });
  if (node) p.set("node", node);
  if (state.events) { state.events.close(); state.events = null; }
  let body;
  try {
    body = await getJSON(`${$("events").dataset.endpoint}?${p}`);
  } catch (err) {
    $("event-list").replaceChildren();
    $("events-none").textContent = err.message;
    $("events-none").hidden = false;
    return;
  }
  if (node !== $("ev-node").value.trim()) return;  // the filter changed meanwhile
  $("event-list").replaceChildren();
  state.eventsLost = 0;
  addEvents(body.events);
  $("events-none").textContent = node ? `no events of ${node} in the log` : "no events yet";
  $("events-none").hidden = body.events.length > 0;
  eventsInfo();
  if (LIVE) followEvents(body.next_seq, node);
}

function followEvents(after, node) {
  const p = new URLSearchParams({ after: String(after) });
  if (node) p.set("node", node);
  const es = new EventSource(`/v1/events/stream?${p}`);
  state.events = es;
  es.addEventListener("events", (ev) => {
    const b = JSON.parse(ev.data);
    if (b.lost) {
      state.eventsLost += b.lost;
      $("event-list").prepend(el("li", { class: "lost" }, `${b.lost} events lost here`));
    }
    addEvents(b.events);
    eventsInfo();
  });
}

function renderNodeEvents(events) {
  const list = $("detail-events"), none = $("detail-events-none");
  if (events === null || events === undefined) {
    list.replaceChildren();
    none.textContent = "this server has no event log";
    none.hidden = false;
    return;
  }
  list.replaceChildren(...events.slice().reverse().map((e) => eventItem(e, false)));
  none.textContent = "no events of this node in the log";
  none.hidden = events.length > 0;
}

// ----------------------------------------------------------------- config --
async function loadConfig() {
  let c;
  try {
    c = (await getJSON("/v1/stats")).config;
  } catch (err) {
    return;
  }
  showConfig(c);
}

function showConfig(c) {
  if (!c) return;
  $("config-version").textContent = `v${c.version}`;
  const r = c.last_reload, span = $("reload-status");
  span.className = "reload";
  if (!r) {
    span.textContent = c.reloads ? "" : "(no reload)";
    span.title = "";
    return;
  }
  let text = `last reload ${r.status}`;
  if (r.status === "applied") text += `: ${r.applied.join(", ")}`;
  if (r.restart_needed.length) text += `; needs restart: ${r.restart_needed.join(", ")}`;
  if (r.status === "invalid") span.classList.add("invalid");
  span.textContent = `(${text})`;
  span.title = r.error || `config hash ${r.config_hash}`;
}

// ------------------------------------------------------------------- main --
async function main() {
  legend($("legend-states"), STATES.map((k) => [k, COLORS[k]]));
  try {
    const stats = await getJSON("/v1/stats");
    $("engine-name").textContent = stats.engine;
    document.title = `shm-engine ${stats.engine}`;
    showSummary({
      epoch: stats.epoch, t: stats.tick_wall, age_s: stats.age_s ?? 0, counts: stats.counts,
      pressure: stats.pressure, weights: stats.weights, ranked: stats.ranked,
      ingest: { accepted: stats.ingest.accepted,
                rejected: Object.values(stats.ingest.rejected).reduce((a, b) => a + b, 0) },
      tick_us_p99: stats.tick.us.p99,
    });
    showConfig(stats.config);
    state.summaries = (await getJSON("/v1/stats/history")).summaries;
    drawCharts();
  } catch (err) {
    $("conn").textContent = err.message;
  }
  const linked = new URLSearchParams(location.search).get("node");  // ?node=ID opens its detail
  await Promise.all([loadNodes(), refreshReady(), loadEvents(), linked ? select(linked) : null]);
  for (const id of ["f-state", "f-sort", "f-limit"]) $(id).addEventListener("change", restartPaging);
  for (const id of ["f-zone", "f-label", "f-prefix"]) $(id).addEventListener("input", restartPaging);
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); restartPaging(); });
  $("ev-node").addEventListener("change", loadEvents);
  $("event-filters").addEventListener("submit", (e) => { e.preventDefault(); loadEvents(); });
  $("next").addEventListener("click", () => { if (state.next) { state.cursors.push(state.next); loadNodes(); } });
  $("prev").addEventListener("click", () => { if (state.cursors.length > 1) { state.cursors.pop(); loadNodes(); } });
  $("detail-close").addEventListener("click", () => { state.selected = null; $("detail").hidden = true; });
  if (!LIVE) {
    $("conn").textContent = "still (live=0)";
    return;
  }
  connect();
  setInterval(() => {
    if (document.hidden) return;
    loadNodes();
    loadDetail();
    refreshReady();
  }, REFRESH_MS);
}

main();
