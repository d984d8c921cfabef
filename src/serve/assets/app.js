// The live view: reads the JSON API, re-reads it on every commit (server-
// sent events from /api/events), renders with the DOM only (no innerHTML
// of data, no libraries, nothing from another host).
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 1000;
const state = { stock: [], previous: new Map(), alerts: [], seenAlerts: null, health: null, healthAt: 0 };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

const fmtInt = new Intl.NumberFormat("en-US");

// Exact decimal sums of the API's decimal strings ("1234.50"), via BigInt.
function toScaled(s, scale) {
  const neg = s.startsWith("-");
  const [i, f = ""] = (neg ? s.slice(1) : s).split(".");
  const v = BigInt(i || "0") * 10n ** BigInt(scale) + BigInt((f + "0".repeat(scale)).slice(0, scale) || "0");
  return neg ? -v : v;
}
function sumDecimals(values) {
  const scale = Math.max(2, ...values.map((s) => (s.split(".")[1] || "").length));
  const total = values.reduce((a, s) => a + toScaled(s, scale), 0n);
  const neg = total < 0n;
  const digits = (neg ? -total : total).toString().padStart(scale + 1, "0");
  const int = digits.slice(0, digits.length - scale);
  return (neg ? "-" : "") + fmtInt.format(BigInt(int)) + "." + digits.slice(digits.length - scale, digits.length - scale + 2);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 1) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

function timeOf(iso) {
  const d = new Date(iso);
  return d.toISOString().slice(11, 19) + " UTC";
}

// ---- stock -----------------------------------------------------------------

function renderStock() {
  const q = $("search").value.trim().toLowerCase();
  const lowOnly = $("low-only").checked;
  const rows = state.stock.filter((p) =>
    (!lowOnly || p.low) && (!q || p.product_id.toLowerCase().includes(q) || p.name.toLowerCase().includes(q)));
  const body = $("stock-body");
  const frag = document.createDocumentFragment();
  for (const p of rows.slice(0, MAX_ROWS)) {
    const before = state.previous.get(p.product_id);
    const changed = before !== undefined && before !== p.quantity_on_hand;
    const scale = Math.max(p.reorder_level * 3, 1);
    const width = Math.max(0, Math.min(100, (p.quantity_on_hand / scale) * 100));
    const tr = el("tr", { "data-product": p.product_id, "data-quantity": String(p.quantity_on_hand), "data-reorder-level": String(p.reorder_level), "data-low": String(p.low), class: (p.low ? "low" : "") + (changed ? " changed" : "") },
      el("td", {}, el("code", {}, p.product_id), p.low ? el("span", { class: "tag tag-low" }, "LOW") : null),
      el("td", { class: "name" }, p.name),
      el("td", { class: "num qty" }, fmtInt.format(p.quantity_on_hand)),
      el("td", { class: "num" }, fmtInt.format(p.reorder_level)),
      el("td", { class: "level-col" }, el("div", { class: "meter", title: `${p.quantity_on_hand} of ${p.reorder_level}` }, el("span"))));
    tr.querySelector(".meter span").style.width = width.toFixed(1) + "%";
    frag.append(tr);
  }
  body.replaceChildren(frag);
  const shown = Math.min(rows.length, MAX_ROWS);
  $("stock-foot").textContent = rows.length === state.stock.length
    ? `${fmtInt.format(state.stock.length)} products` + (shown < rows.length ? `, first ${fmtInt.format(shown)} shown` : "")
    : `${fmtInt.format(rows.length)} of ${fmtInt.format(state.stock.length)} products match` + (shown < rows.length ? `, first ${fmtInt.format(shown)} shown` : "");
}

function applyStock(stock) {
  state.previous = new Map(state.stock.map((p) => [p.product_id, p.quantity_on_hand]));
  state.stock = stock;
  const low = stock.filter((p) => p.low).length;
  $("card-products").textContent = fmtInt.format(stock.length);
  $("card-low").textContent = fmtInt.format(low);
  $("card-low-box").classList.toggle("alarm", low > 0);
  $("card-units").textContent = fmtInt.format(stock.reduce((a, p) => a + p.quantity_on_hand, 0));
  renderStock();
}

// ---- alerts ----------------------------------------------------------------

function applyAlerts(alerts) {
  const seen = state.seenAlerts;
  const feed = $("alert-feed");
  const frag = document.createDocumentFragment();
  for (const a of alerts) {
    const li = el("li", { "data-alert-id": a.alert_id, "data-product": a.product_id, "data-kind": a.kind, class: seen && !seen.has(a.alert_id) ? "new" : "" },
      el("span", { class: `kind kind-${a.kind}` }, a.kind),
      el("span", { class: "what" }, el("b", {}, a.name || a.product_id), " ", el("code", { class: "muted" }, a.product_id),
        el("br"), el("span", { class: "muted" }, `${fmtInt.format(a.quantity_on_hand)} on hand, reorder at ${fmtInt.format(a.reorder_level)}`)),
      el("span", { class: "when", title: a.raised_at }, timeOf(a.raised_at)));
    frag.append(li);
  }
  feed.replaceChildren(frag);
  state.seenAlerts = new Set(alerts.map((a) => a.alert_id));
  $("alerts-empty").hidden = alerts.length > 0;
  $("alerts-count").textContent = alerts.length ? `latest ${alerts.length}` : "";
}

// ---- sales chart -------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// A round step for about four grid lines up to `v`.
function niceStep(v) {
  if (v <= 0) return 1;
  const raw = v / 4, p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function applySales(sales) {
  $("sales-day").textContent = sales.day;
  const byHour = Array.from({ length: 24 }, () => ({ online: null, store: null }));
  for (const h of sales.hours) byHour[new Date(h.hour).getUTCHours()][h.source] = h;
  const revenues = sales.hours.map((h) => h.revenue);
  $("card-revenue").textContent = revenues.length ? sumDecimals(revenues) : "0.00";
  const units = sales.hours.reduce((a, h) => a + h.units, 0);
  const orders = sales.hours.reduce((a, h) => a + h.order_count, 0);
  $("card-revenue-sub").textContent = `${fmtInt.format(units)} units · ${fmtInt.format(orders)} sales`;

  const W = 640, H = 300, L = 52, B = 22, T = 10;
  const step = niceStep(Math.max(0, ...sales.hours.map((h) => Number(h.revenue))));
  const lines = Math.max(1, Math.ceil(Math.max(0, ...sales.hours.map((h) => Number(h.revenue))) / step));
  const max = step * lines;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Revenue by hour and channel" });
  const plotH = H - B - T, slot = (W - L) / 24, bw = Math.max(2, slot / 2 - 2);
  for (let i = 0; i <= lines; i++) {
    const y = T + plotH - (plotH * i) / lines;
    s.append(svg("line", { x1: L, x2: W, y1: y, y2: y, class: i ? "grid-line" : "axis" }));
    s.append(svg("text", { x: L - 6, y: y + 3, "text-anchor": "end" }, fmtInt.format(step * i)));
  }
  byHour.forEach((h, i) => {
    const x0 = L + i * slot + 1;
    if (i % 3 === 0) s.append(svg("text", { x: x0 + slot / 2, y: H - 6, "text-anchor": "middle" }, String(i).padStart(2, "0") + ":00"));
    ["online", "store"].forEach((src, j) => {
      const row = h[src];
      if (!row) return;
      const hgt = Math.max(1, (Number(row.revenue) / max) * plotH);
      const r = svg("rect", { x: x0 + j * (bw + 1), y: T + plotH - hgt, width: bw, height: hgt, rx: 1.5, class: `bar-${src}`, "data-hour": i, "data-source": src });
      r.append(svg("title", {}, `${String(i).padStart(2, "0")}:00 ${src}: ${row.revenue} revenue, ${row.units} units, ${row.order_count} sales`));
      s.append(r);
    });
  });
  $("sales-chart").replaceChildren(s);
}

// ---- rejections and health ---------------------------------------------------

function applyRejections(list) {
  const total = list.reduce((a, r) => a + r.count, 0);
  $("card-rejected").textContent = fmtInt.format(total);
  $("card-rejected-box").classList.toggle("alarm", total > 0);
  const max = Math.max(1, ...list.map((r) => r.count));
  const frag = document.createDocumentFragment();
  for (const r of list) {
    const fill = el("div", { class: "fill" });
    fill.style.width = ((r.count / max) * 100).toFixed(1) + "%";
    frag.append(el("li", { "data-code": r.code }, el("code", {}, r.code), el("div", { class: "track" }, fill), el("span", { class: "num" }, fmtInt.format(r.count))));
  }
  $("rejections").replaceChildren(frag);
  $("rejections-empty").hidden = list.length > 0;
}

const STATUS = {
  ok: ["pill-ok", "live"],
  waiting_kafka: ["pill-waiting", "waiting on Kafka"],
  waiting_postgres: ["pill-waiting", "waiting on PostgreSQL"],
  no_heartbeat: ["pill-down", "processor not running"],
  never_run: ["pill-unknown", "no processor yet"],
};

function renderHealth() {
  const h = state.health;
  if (!h) return;
  const since = h.seconds_since_commit === null ? null : h.seconds_since_commit + (Date.now() - state.healthAt) / 1000;
  const [cls, word] = STATUS[h.status] || ["pill-unknown", h.status];
  const pill = $("health-pill");
  pill.className = `pill ${cls}`;
  pill.textContent = word;
  pill.dataset.status = h.status;
  $("last-commit").textContent = h.last_commit ? `last commit ${ago(since)} · epoch ${h.last_commit.epoch}` : "no commit yet";
  const live = h.processors.filter((p) => p.heartbeat_age_seconds < 15);
  const lagMsgs = live.reduce((a, p) => a + p.consumer_lag_messages, 0);
  const lagS = live.length ? Math.max(...live.map((p) => p.lag_seconds)) : null;
  $("card-lag").textContent = lagS === null ? "–" : `${lagS.toFixed(1)} s`;
  $("card-lag-sub").textContent = live.length ? `${fmtInt.format(lagMsgs)} messages behind` : "no live processor";
  const rows = [
    ["Status", word],
    ["Last commit", h.last_commit ? `${ago(since)} (epoch ${h.last_commit.epoch})` : "never"],
    ["Commits / min", fmtInt.format(h.commits_last_minute)],
    ["Messages / min", fmtInt.format(h.messages_last_minute)],
    ["Commit lag", lagS === null ? "–" : `${lagS.toFixed(2)} s`],
    ["Consumer lag", live.length ? `${fmtInt.format(lagMsgs)} messages` : "–"],
  ];
  for (const p of h.processors) {
    const waiting = [p.waiting_kafka && "Kafka", p.waiting_postgres && "PostgreSQL"].filter(Boolean).join(", ");
    rows.push([`Process ${p.process}`, `${p.workers} worker${p.workers === 1 ? "" : "s"} · heartbeat ${ago(p.heartbeat_age_seconds)}` + (waiting ? ` · waiting on ${waiting}` : "")]);
  }
  const frag = document.createDocumentFragment();
  for (const [k, v] of rows) frag.append(el("dt", {}, k), el("dd", {}, v));
  $("health-list").replaceChildren(frag);
}

async function refreshHealth() {
  try {
    state.health = await getJson("/api/health");
    state.healthAt = Date.now();
    renderHealth();
  } catch (e) {
    const pill = $("health-pill");
    pill.className = "pill pill-error";
    pill.textContent = "view cannot read the database";
    pill.dataset.status = "error";
  }
}

// ---- refresh loop --------------------------------------------------------------

let running = false, again = false;
async function refresh() {
  if (running) { again = true; return; }
  running = true;
  try {
    do {
      again = false;
      const [stock, alerts, sales, rejections] = await Promise.all([
        getJson("/api/stock"), getJson("/api/alerts?limit=50"), getJson("/api/sales/hourly"), getJson("/api/rejections")]);
      applyStock(stock);
      applyAlerts(alerts);
      applySales(sales);
      applyRejections(rejections);
      await refreshHealth();
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
      document.body.dataset.ready = "1";
    } while (again);
  } catch (e) {
    console.warn("live view: refresh failed", e);
    setTimeout(refresh, 2000);
  } finally {
    running = false;
  }
}

function listen() {
  const events = new EventSource("/api/events");
  events.addEventListener("commit", () => {
    document.body.dataset.commitEvents = String(Number(document.body.dataset.commitEvents) + 1);
    refresh();
  });
  events.addEventListener("open", () => refresh());
}

$("search").addEventListener("input", renderStock);
$("low-only").addEventListener("change", renderStock);
setInterval(refreshHealth, 5000);
setInterval(renderHealth, 1000);
listen();
