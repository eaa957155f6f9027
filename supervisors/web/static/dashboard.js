// limitline's dashboard: plain JavaScript, no framework, nothing fetched from outside.
// It reads /status, /status/strategies, /status/tree and /events (polled: the feed asks
// for the entries after the last sequence number it has), a strategy's chart from
// /status/strategies/NAME/chart (drawn by /assets/chart.js, the Lab report's component;
// polled while open) and posts the operator's actions
// to /strategies/NAME/ACTION with the token typed in the header (kept in this tab only).
"use strict";

const PAGE = 50;
const FEED_ROWS = 300;
const FEED_EVERY_MS = 1000;
const STATUS_EVERY_MS = 2000;

const state = { offset: 0, total: 0, lastSeq: null, feedKey: null, strategiesKnown: new Set(), chartOf: null, chartKey: null };
const $ = (id) => document.getElementById(id);

function token() { return sessionStorage.getItem("limitline-token") || ""; }

async function call(path, options = {}) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  return { ok: response.ok, status: response.status, body };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function utc(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
}

// Amounts arrive as exact decimal strings; shown rounded, the exact value in the tooltip.
function money(text, places = 2) {
  if (text === null || text === undefined) return el("span", { class: "muted" }, "–");
  const value = Number(text);
  const shown = Math.abs(value) >= 1 || value === 0 ? value.toFixed(places) : value.toPrecision(4);
  return el("span", { class: value > 0 ? "pos" : value < 0 ? "neg" : "", title: text }, shown);
}

function problem(message) {
  $("problem").hidden = !message;
  $("problem").textContent = message || "";
}

// ------------------------------------------------------------------ summary

async function refreshStatus() {
  const { ok, status, body } = await call("/status");
  if (!ok) {
    problem(status === 401 ? "This server needs a token to read: type the read or operator token above." : `status: ${body && body.error || status}`);
    return;
  }
  problem("");
  $("mode").textContent = body.armed_live ? "LIVE armed" : body.mode;
  $("mode").className = `badge ${body.armed_live ? "bad" : ""}`;
  $("ready").textContent = body.ready ? "ready" : "not ready";
  $("ready").className = `badge ${body.ready ? "good" : "bad"}`;
  $("ready").title = body.not_ready.join("\n");
  $("updated").textContent = `updated ${utc(body.at)} UTC`;
  const cards = [
    ["strategies", `${body.strategies.total}`, Object.entries(body.strategies.by_state).map(([k, v]) => `${v} ${k}`).join(", ")],
    ["open orders", `${body.strategies.open_orders}`, ""],
    ...Object.entries(body.realized_pnl).map(([currency, amount]) => [`realized P&L (${currency})`, Number(amount).toFixed(2), `exact: ${amount}`]),
    ["fees", Object.entries(body.fees_paid).map(([c, a]) => `${Number(a).toPrecision(6)} ${c}`).join(", ") || "0", ""],
    ["actors", `${body.tree.running}/${body.tree.actors} running`, `${body.tree.restarts_in_window} restarts in window`],
  ];
  $("totals").replaceChildren(...cards.map(([label, value, note]) =>
    el("div", { class: "card" }, el("span", { class: "muted" }, label), el("b", { title: value }, value), note ? el("small", { class: "muted" }, note) : null)));
  $("venues").tBodies[0].replaceChildren(...body.venues.map((v) => el("tr", { "data-venue": v.name },
    el("td", {}, v.name, el("span", { class: "why" }, v.mode || "")),
    el("td", { class: v.connected ? "state-active" : "state-failed" }, v.connected ? "yes" : "no"),
    el("td", { class: v.isolated ? "state-isolated" : "" }, v.isolated ? v.isolated : "no"),
    el("td", {}, v.reconciled ? utc(v.last_reconciled_at) : "not yet"))));
}

// --------------------------------------------------------------- strategies

function holdings(row) {
  const parts = [`${row.held ?? "?"} ${row.base}`];
  if (row.quote_free !== null) parts.push(`${Number(row.quote_free).toFixed(2)} ${row.quote} free`);
  if (row.quote_reserved && Number(row.quote_reserved) !== 0) parts.push(`${Number(row.quote_reserved).toFixed(2)} ${row.quote} reserved`);
  if (row.entry_price) parts.push(`entry ${Number(row.entry_price).toFixed(2)}`);
  if (row.mark_price) parts.push(`mark ${row.mark_price}`);
  return el("span", {}, parts.join(" · "));
}

function orderList(row) {
  if (!row.orders.length) return el("span", { class: "muted" }, `${row.open_orders}`);
  return el("ul", { class: "orders" }, row.orders.map((o) =>
    el("li", { title: o.client_order_id }, `${o.side} ${o.amount} @ ${o.price} ${o.state.toLowerCase()}${Number(o.filled) ? ` (filled ${o.filled})` : ""}`)));
}

function actionButton(row, action, label) {
  return el("button", { type: "button", "data-action": action, onclick: () => act(row.name, action, label) }, label);
}

async function refreshStrategies() {
  const { ok, body } = await call(`/status/strategies?offset=${state.offset}&limit=${PAGE}`);
  if (!ok) return;
  state.total = body.total;
  $("strategy-count").textContent = `(${body.total})`;
  $("page-info").textContent = body.total ? `${body.offset + 1}–${body.offset + body.strategies.length} of ${body.total}` : "";
  $("prev").disabled = state.offset === 0;
  $("next").disabled = !body.next;
  $("strategies").tBodies[0].replaceChildren(...body.strategies.map((row) => {
    if (!state.strategiesKnown.has(row.name)) {
      state.strategiesKnown.add(row.name);
      $("feed-strategy").append(el("option", { value: row.name }, row.name));
    }
    const breaker = row.breaker ? row.breaker.state + (row.breaker.consecutive_failures ? ` (${row.breaker.consecutive_failures} failures)` : "") : "–";
    const decision = row.last_decision;
    return el("tr", { "data-strategy": row.name },
      el("td", {}, el("b", {}, row.name), el("span", { class: "why" }, `${row.symbol} on ${row.venue}`)),
      el("td", { class: `state state-${row.state}` }, row.state, row.why ? el("span", { class: "why" }, row.why) : null),
      el("td", {}, row.mode),
      el("td", { class: row.breaker && row.breaker.state !== "closed" ? "state-paused" : "" }, breaker),
      el("td", { class: "num" }, money(row.realized_pnl), ` ${row.quote}`),
      el("td", { class: "num" }, money(row.unrealized_pnl), ` ${row.quote}`),
      el("td", {}, holdings(row)),
      el("td", {}, orderList(row)),
      el("td", {}, decision ? el("span", { title: utc(decision.at) + " UTC" }, decision.summary) : el("span", { class: "muted" }, "none yet")),
      el("td", { class: "actions" },
        actionButton(row, "pause", "pause"), actionButton(row, "resume", "resume"),
        actionButton(row, "cancel-open-orders", "cancel open orders"),
        el("button", { type: "button", "data-action": "chart", onclick: () => showChart(row.name) }, "chart")));
  }));
}

async function act(name, action, label) {
  if (!token()) {
    $("action-result").textContent = "Actions need the operator token: type it in the header first.";
    return;
  }
  const { ok, body, status } = await call(`/strategies/${encodeURIComponent(name)}/${action}`, { method: "POST" });
  $("action-result").textContent = ok ? `${label}: sent to ${name}` : `${label} ${name}: ${body && body.error || status}`;
  setTimeout(refreshStrategies, 300);
}

// --------------------------------------------------------------------- tree

function treeNode(node) {
  const mailbox = node.mailbox ? ` · mailbox ${node.mailbox.depth}/${node.mailbox.capacity}` : "";
  const restarts = node.restarts ? ` · ${node.restarts} restarts` : "";
  const incarnation = node.incarnation > 1 ? ` · incarnation ${node.incarnation}` : "";
  const exit = node.last_exit ? ` · last exit: ${node.last_exit.reason}` : "";
  return el("li", { "data-node": node.name },
    el("b", {}, node.name), " ", el("span", { class: `state-${node.state}` }, node.state),
    el("span", { class: "muted" }, `${node.strategy ? ` · ${node.strategy}` : ""}${restarts}${incarnation}${mailbox}${exit}`),
    node.children ? el("ul", {}, node.children.map(treeNode)) : null);
}

async function refreshTree() {
  const { ok, body } = await call("/status/tree");
  if (ok) $("tree").replaceChildren(treeNode(body));
}

// --------------------------------------------------------------------- feed

function detail(event) {
  const p = event.payload || {};
  const parts = [];
  if (event.kind === "evaluated") {
    parts.push(`close ${p.close}`);
    for (const rule of p.rules || []) parts.push(`${rule.rule}${rule.fired ? " FIRED" : ""}`);
  }
  for (const key of ["side", "amount", "price", "fee"]) if (p[key] !== undefined) parts.push(`${key} ${p[key]}`);
  if (p.fee_currency) parts.push(p.fee_currency);
  if (event.rule) parts.push(`rule ${event.rule}`);
  if (event.reason) parts.push(event.reason);
  return parts.join(" · ");
}

function feedRow(event) {
  return el("tr", { class: `kind-${event.kind}`, "data-seq": event.seq, "data-kind": event.kind },
    el("td", {}, event.seq), el("td", {}, utc(event.at).slice(11)), el("td", {}, event.kind),
    el("td", {}, event.strategy || event.actor), el("td", {}, event.client_order_id || ""), el("td", {}, detail(event)));
}

function feedQuery() {
  const params = new URLSearchParams();
  if ($("feed-strategy").value) params.set("strategy", $("feed-strategy").value);
  if ($("feed-kind").value) params.set("kind", $("feed-kind").value);
  return params;
}

async function refreshFeed() {
  const params = feedQuery();
  const key = params.toString();
  const body = $("feed").tBodies[0];
  if (key !== state.feedKey) {  // a new filter: start over with the newest entries
    params.set("limit", "100");
    const { ok, body: answer } = await call(`/events?${params}`);
    if (!ok) return;
    state.feedKey = key;
    body.replaceChildren(...answer.events.map(feedRow));
    state.lastSeq = answer.events.length ? answer.events[0].seq : 0;
    return;
  }
  if (!$("feed-live").checked) return;
  params.set("after", String(state.lastSeq));
  params.set("limit", "500");
  const { ok, body: answer } = await call(`/events?${params}`);
  if (!ok || !answer.events.length) return;
  for (const event of answer.events) body.prepend(feedRow(event));
  state.lastSeq = answer.events[answer.events.length - 1].seq;
  while (body.rows.length > FEED_ROWS) body.deleteRow(-1);
}

// -------------------------------------------------------------------- chart

// The report's chart component (/assets/chart.js, on Lightweight Charts) for one strategy:
// the candles its venue replayed lately, its fills as markers, its equity. Redrawn while open.
const CHART_EVERY_MS = 5000;

async function refreshChart() {
  const name = state.chartOf;
  if (!name) return;
  const { ok, body } = await call(`/status/strategies/${encodeURIComponent(name)}/chart`);
  if (!ok || state.chartOf !== name) return;
  const key = JSON.stringify([body.candles.length && body.candles[body.candles.length - 1][0], body.fills.length]);
  if (key === state.chartKey) return;  // nothing new: keep the user's zoom
  state.chartKey = key;
  if (window.limitlineChart) window.limitlineChart.remove();
  window.limitlineChart = LimitlineChart.render($("strategy-chart"), body);
  window.limitlineChart.data = body;
  $("chart-note").textContent = body.candles.length
    ? `${body.symbol}: last ${body.candles.length} candles, ${body.fills.length} fills (times UTC)`
    : `${body.symbol}: no candles kept for this venue (only a simulated venue's replay is drawn)`;
}

function showChart(name) {
  state.chartOf = name;
  state.chartKey = null;
  $("chart-strategy").textContent = name;
  $("chart-panel").hidden = false;
  refreshChart();
}

// ------------------------------------------------------------------ wiring

function every(ms, task) {
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    try { await task(); } catch (error) { problem(`cannot reach limitline: ${error.message}`); } finally { running = false; }
  };
  run();
  return setInterval(run, ms);
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("limitline-token", $("token").value);
  $("token").value = "";
  $("token-state").textContent = token() ? "token set for this tab" : "no token";
  state.feedKey = null;
  refreshStatus(); refreshStrategies(); refreshTree();
});
$("token-state").textContent = token() ? "token set for this tab" : "no token";
$("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); refreshStrategies(); });
$("next").addEventListener("click", () => { state.offset += PAGE; refreshStrategies(); });
$("feed-strategy").addEventListener("change", () => { state.feedKey = null; refreshFeed(); });
$("feed-kind").addEventListener("change", () => { state.feedKey = null; refreshFeed(); });
$("chart-close").addEventListener("click", () => {
  state.chartOf = null;
  $("chart-panel").hidden = true;
  if (window.limitlineChart) { window.limitlineChart.remove(); window.limitlineChart = null; }
});

every(STATUS_EVERY_MS, refreshStatus);
every(STATUS_EVERY_MS, refreshStrategies);
every(STATUS_EVERY_MS * 2, refreshTree);
every(FEED_EVERY_MS, refreshFeed);
every(CHART_EVERY_MS, refreshChart);
