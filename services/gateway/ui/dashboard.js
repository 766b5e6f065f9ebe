// The trader's dashboard: the overview and a device drawn with Plotly, kept
// live by the gateway's server-sent events (read with fetch, so that the API
// key travels in the Authorization header as on every other route).
"use strict";

const KEY = "intraday-api-key"; // sessionStorage: gone when the tab closes
const QUARTER = 15 * 60 * 1000;
const state = { overview: null, freshness: null, renders: 0, events: 0, device: null, timer: null };
window.intraday = state; // for the browser tests and the curious

const $ = (id) => document.getElementById(id);
const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(d));
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)} %`);
const utc = (iso) => (iso ? iso.slice(0, 16).replace("T", " ") : "");
// A model version's content hash (the rest is its date), as a commit's short id.
const short = (v) => (v && v.includes("-") ? v.split("-").pop() : v);
const grid = (start, n) => Array.from({ length: n }, (_, i) => new Date(Date.parse(start) + i * QUARTER));

class AuthError extends Error {}

async function api(path) {
  const r = await fetch(path, { headers: { authorization: `Bearer ${sessionStorage.getItem(KEY)}` } });
  if (r.status === 401 || r.status === 403) {
    throw new AuthError((await r.json()).detail);
  }
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

const layout = (yTitle, extra = {}) => ({
  margin: { l: 56, r: 16, t: 8, b: 36 },
  xaxis: { type: "date", gridcolor: "#eef0f3" },
  yaxis: { title: { text: yTitle }, gridcolor: "#eef0f3", zeroline: false },
  legend: { orientation: "h", y: 1.12, x: 0 },
  hovermode: "x unified",
  paper_bgcolor: "#fff",
  plot_bgcolor: "#fff",
  ...extra,
});
const config = { displaylogo: false, responsive: true };

function bandTraces(intervals, name) {
  const x = intervals.map((i) => i.interval_start);
  return [
    { x, y: intervals.map((i) => i.p10), name: "P10", mode: "lines", line: { width: 0 }, showlegend: false,
      hoverinfo: "skip" },
    { x, y: intervals.map((i) => i.p90), name: "P10–P90", mode: "lines", line: { width: 0 }, fill: "tonexty",
      fillcolor: "rgba(46, 116, 181, 0.22)" },
    { x, y: intervals.map((i) => i.p50), name: `${name} P50`, mode: "lines", line: { color: "#2e74b5", width: 2 } },
    { x, y: intervals.map((i) => i.mean), name: "mean (what is bought)", mode: "lines",
      line: { color: "#1d2733", width: 1.5, dash: "dot" } },
  ];
}

function actualTrace(start, values, name = "actual") {
  const x = grid(start, values.length);
  return { x, y: values, name, mode: "lines+markers", connectgaps: false,
           line: { color: "#f79009", width: 2 }, marker: { size: 3 } };
}

function nowShapes(o, start) {
  const shapes = [{ type: "line", xref: "x", yref: "paper", x0: o.now, x1: o.now, y0: 0, y1: 1,
                    line: { color: "#98a2b3", width: 1, dash: "dash" } }];
  if (start) {
    shapes.push({ type: "rect", xref: "x", yref: "paper", x0: o.window[0], x1: start, y0: 0, y1: 1,
                  fillcolor: "#f2f4f7", opacity: 0.5, line: { width: 0 }, layer: "below" });
  }
  return shapes;
}

function renderPortfolio(o) {
  const p = o.portfolio;
  $("portfolio-empty").hidden = !!p;
  const traces = p ? bandTraces(p.intervals, "portfolio") : [];
  if (o.actuals) traces.push(actualTrace(o.actuals.start, o.actuals.total_kw, "actual (devices reporting)"));
  $("portfolio-meta").textContent = p
    ? `${p.forecast_id} · ${p.devices.toLocaleString()} devices · model ${p.model_version} · from ${utc(p.forecast_start)} UTC` +
      (p.failed ? ` · ${p.failed} not forecast` : "") + (p.notes.length ? ` · ${p.notes.join("; ")}` : "")
    : "";
  Plotly.react("portfolio-chart", traces,
               layout("kW", { xaxis: { type: "date", range: o.window }, shapes: nowShapes(o, p && p.forecast_start) }),
               config);
}

function renderPositions(o) {
  const latest = o.decisions[0];
  const orders = latest && latest.orders ? latest.orders : [];
  const traces = [
    { type: "bar", x: orders.map((r) => r.interval_start), y: orders.map((r) => r.order_mw), name: "latest orders (MW)",
      marker: { color: orders.map((r) => (r.order_mw >= 0 ? "#12b76a" : "#f04438")) } },
    { x: o.positions.map((r) => r.interval_start), y: o.positions.map((r) => r.position_mw), name: "position (MW)",
      mode: "lines", line: { shape: "hv", color: "#1d2733" } },
    { x: orders.map((r) => r.interval_start), y: orders.map((r) => r.target_mw), name: "target quantile (MW)",
      mode: "lines", line: { color: "#2e74b5", dash: "dot" } },
  ];
  $("orders-meta").textContent = latest
    ? `${latest.decision_id}: buy ${fmt(latest.buy_mwh, 3)} MWh, sell ${fmt(latest.sell_mwh, 3)} MWh at P${Math.round(100 * latest.target_quantile)}`
    : "no decision yet";
  Plotly.react("positions-chart", traces, layout("MW", { xaxis: { type: "date", range: o.window }, barmode: "overlay" }),
               config);
}

function renderPrices(o) {
  const ticks = o.prices;
  const moved = ticks.filter((t) => t.verdict === "move");
  Plotly.react("prices-chart", [
    { x: ticks.map((t) => t.at), y: ticks.map((t) => t.price_eur_mwh), name: "price", mode: "lines+markers",
      line: { color: "#667085", width: 1.5 }, marker: { size: 4 } },
    { x: moved.map((t) => t.at), y: moved.map((t) => t.price_eur_mwh), name: "move: forecast and trade",
      mode: "markers", marker: { color: "#d92d20", size: 11, symbol: "diamond" } },
  ], layout("EUR/MWh", ticks.length > 1 ? {} : { // one tick: an hour around it, not a millisecond
    xaxis: { type: "date", range: ticks.length ? [new Date(Date.parse(ticks[0].at) - 3600e3), new Date(Date.parse(ticks[0].at) + 600e3)] : undefined },
  }), config);
}

function renderDecisions(o) {
  const body = $("decisions").querySelector("tbody");
  const seen = new Set([...body.querySelectorAll("tr")].map((tr) => tr.dataset.id));
  body.replaceChildren(...o.decisions.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.id = d.decision_id;
    tr.className = "decision" + (seen.size && !seen.has(d.decision_id) ? " new" : "");
    tr.title = `${d.decision_id} on ${d.portfolio_forecast_id}` + (d.trace_id ? ` · trace ${d.trace_id}` : "");
    for (const v of [utc(d.decided_at), fmt(d.price_eur_mwh, 2), fmt(d.reference_price, 2), fmt(d.buy_mwh, 3),
                     fmt(d.sell_mwh, 3), `P${Math.round(100 * d.target_quantile)}`, short(d.model_version)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
}

function renderModel(o) {
  const m = o.model || {};
  const s = m.served;
  const last = (m.trainings || [])[0];
  const held = last && last.promoted && last.candidate_version === m.promoted ? last.evaluation.candidate.portfolio : null;
  $("model").textContent = s
    ? `model ${s.version} · ${s.devices} devices to ${utc(s.data_end)}` +
      (held ? ` · held-out portfolio WAPE ${pct(held.wape)}, P10–P90 ${pct(held.coverage_p10_p90)}` : "")
    : m.error ? `model: ${m.error}` : "seasonal fallback (no model promoted)";
  $("model-detail").innerHTML = s
    ? `<b>${s.version}</b>, trained on ${s.devices} devices, ${utc(s.data_start)} to ${utc(s.data_end)} UTC` +
      (s.validation ? `; calibration span: device WAPE ${pct(s.validation.wape)}, P10–P90 ${pct(s.validation.coverage_p10_p90)}` : "") +
      `. ${m.versions} versions stored.`
    : "Forecasts come from the seasonal fallback until a model is promoted.";
  const body = $("trainings").querySelector("tbody");
  body.replaceChildren(...(m.trainings || []).map((t) => {
    const tr = document.createElement("tr");
    const e = t.evaluation;
    for (const v of [utc(t.finished_at), t.trigger, short(t.candidate_version), short(t.champion_version),
                     `${fmt(e.candidate.portfolio.pinball_mean, 2)} vs ${fmt(e.champion.portfolio.pinball_mean, 2)}`,
                     t.promoted ? (t.forced ? "promoted (forced)" : "promoted") : "kept"]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    tr.title = t.reason;
    return tr;
  }));
}

// Published forecasts scored against their readings (GET /scores): the
// held-out scores of the served model's training, the last 7 days pooled,
// then each day, newest first.
function renderScores(o) {
  const sc = o.scores || {};
  const live = sc.live;
  const body = $("scores").querySelector("tbody");
  if (!live) {
    $("scores-meta").textContent = sc.error ? `scores: ${sc.error}` : "";
    body.replaceChildren();
    return;
  }
  $("scores-meta").textContent = `${live.forecasts} forecasts scored, delivery days ${live.from} to ${live.to}` +
    (live.last_scored_at ? ` · last scored ${utc(live.last_scored_at)} UTC` : " · none scored yet");
  $("scores-alerts").textContent = live.alerts.join("; ");
  const row = (label, pf, dev, cls) => {
    const tr = document.createElement("tr");
    tr.className = cls;
    pf = pf || {};
    dev = dev || {};
    for (const v of [label, pct(pf.wape), pct(pf.bias), fmt(pf.pinball, 2), pct(pf.coverage),
                     pct(dev.wape), pct(dev.bias), pct(dev.coverage)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  };
  const rows = [];
  if (sc.training) {
    rows.push(row(`held out at training (${sc.training.days} days)`, sc.training.portfolio, sc.training.device,
                  "training"));
  }
  rows.push(row("last 7 days", live.week.portfolio, live.week.device, "week"));
  for (const d of [...live.days].reverse()) rows.push(row(d.day, d.portfolio, d.device, "day"));
  body.replaceChildren(...rows);
}

function age(seconds) {
  if (seconds === null) return "never reported";
  const m = seconds / 60;
  return m < 90 ? `${Math.round(m)} min` : m < 48 * 60 ? `${(m / 60).toFixed(1)} h` : `${(m / 1440).toFixed(1)} days`;
}

async function renderFreshness() {
  const f = await api("/ui/api/freshness");
  state.freshness = f;
  $("freshness-meta").textContent = `${f.devices} devices · ${f.quiet["1h"]} quiet for over an hour, ` +
    `${f.quiet["24h"]} for over a day` + (f.never_reported ? ` · ${f.never_reported} never reported` : "") +
    (f.median_age_seconds !== null ? ` · newest reading ${age(f.median_age_seconds)} old at the median` : "");
  const body = $("freshness").querySelector("tbody");
  body.replaceChildren(...f.stalest.filter((d) => d.age_seconds === null || d.age_seconds > 3600).map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.id = d.device_id;
    for (const v of [d.device_id, d.newest_reading_end ? utc(d.newest_reading_end) : "–", age(d.age_seconds)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    tr.onclick = () => { $("device").value = d.device_id; showDevice(d.device_id).catch(fail); };
    return tr;
  }));
}

async function refresh() {
  renderFreshness().catch(fail);
  const o = await api("/ui/api/overview");
  state.overview = o;
  renderPortfolio(o);
  renderPositions(o);
  renderPrices(o);
  renderDecisions(o);
  renderModel(o);
  renderScores(o);
  state.renders += 1;
}

function refreshSoon() { // many events at once: one refresh
  clearTimeout(state.timer);
  state.timer = setTimeout(() => refresh().catch(fail), 300);
}

async function showDevice(id) {
  if (!id) return;
  const d = await api(`/ui/api/devices/${encodeURIComponent(id)}`);
  state.device = d;
  const f = d.forecast;
  const traces = f ? bandTraces(f.intervals, id) : [];
  if (d.actuals) traces.push(actualTrace(d.actuals.start, d.actuals.values));
  $("device-meta").textContent = f
    ? `${f.forecast_id} · model ${f.model_version} · ${fmt(f.history_days)} days of history` +
      (f.notes.length ? ` · ${f.notes.join("; ")}` : "")
    : "no forecast of this device yet: its readings";
  Plotly.react("device-chart", traces, layout("kW"), config);
}

async function listen() { // server-sent events over fetch, reconnecting
  const live = $("live");
  for (;;) {
    try {
      const r = await fetch("/ui/api/events", { headers: { authorization: `Bearer ${sessionStorage.getItem(KEY)}` } });
      if (r.status === 401 || r.status === 403) throw new AuthError((await r.json()).detail);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      live.className = "live on";
      live.textContent = "live";
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const kind = (block.match(/^event: (.*)$/m) || [])[1];
          if (kind && kind !== "hello") {
            state.events += 1;
            refreshSoon();
          }
        }
      }
    } catch (e) {
      if (e instanceof AuthError) return fail(e);
    }
    live.className = "live off";
    live.textContent = "reconnecting";
    await new Promise((ok) => setTimeout(ok, 3000));
  }
}

function fail(e) {
  if (e instanceof AuthError) {
    sessionStorage.removeItem(KEY);
    $("board").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = e.message;
    return;
  }
  console.error(e);
}

async function start() {
  $("login").hidden = true;
  $("board").hidden = false;
  try {
    await refresh();
  } catch (e) {
    return fail(e);
  }
  listen();
  setInterval(() => refresh().catch(fail), 60000); // actuals arrive by the quarter-hour
  api("/devices").then((devices) => {
    $("device-list").replaceChildren(...devices.map((d) => Object.assign(document.createElement("option"),
                                                                         { value: d.device_id })));
    const first = devices[0] && devices[0].device_id;
    if (first && !$("device").value) {
      $("device").value = first;
      showDevice(first).catch(fail);
    }
  }).catch(fail);
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("key").value.trim());
  start();
});
$("device").addEventListener("change", (ev) => showDevice(ev.target.value.trim()).catch(fail));

if (sessionStorage.getItem(KEY)) start();
else $("login").hidden = false;
