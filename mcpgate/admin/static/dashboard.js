// The mcpgate dashboard: plain JavaScript, no build step, nothing fetched from elsewhere.
//
// The page holds no data. It reads everything from /admin/v1 on this listener with the admin
// credential, which it takes from its login form or from a #token= fragment (removed from the
// address bar at once) and keeps in sessionStorage: this tab only, sent only as
// "Authorization: Bearer" to same-origin /admin/v1 requests.
//
// Text from the API is only ever set with textContent or as attribute values, never parsed as HTML.
// <body data-state> says where the page is: "loading", "login", or "ready" (after the first full
// render), so that a headless browser can tell when it is done.
"use strict";

(() => {
  const TOKEN_KEY = "mcpgate.admin.token";
  const PERIOD_KEY = "mcpgate.admin.period";
  const PERIODS = ["1h", "24h", "7d", "30d"];
  const REFRESH_MS = 10000;
  const API = "v1/"; // relative to /admin/: same origin, same listener
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const body = document.body;

  // --- the credential ---------------------------------------------------------------------------

  const storage = {
    get(key) {
      try { return window.sessionStorage.getItem(key); } catch { return null; }
    },
    set(key, value) {
      try { window.sessionStorage.setItem(key, value); } catch { /* private mode: this page load only */ }
    },
    remove(key) {
      try { window.sessionStorage.removeItem(key); } catch { /* nothing kept */ }
    },
  };
  let memoryToken = null; // when sessionStorage is unavailable

  function token() {
    return storage.get(TOKEN_KEY) || memoryToken;
  }

  function setToken(value) {
    memoryToken = value;
    storage.set(TOKEN_KEY, value);
  }

  function clearToken() {
    memoryToken = null;
    storage.remove(TOKEN_KEY);
  }

  // A #token=... fragment: keep it, then take it out of the address bar (and the history entry).
  function takeFragmentToken() {
    const hash = window.location.hash;
    if (!hash || hash.length < 2) return false;
    // Not URLSearchParams: it would read a "+" in a token as a space.
    const parts = hash.slice(1).split("&");
    const found = parts.find((part) => part.startsWith("token="));
    if (found === undefined) return false;
    const rest = parts.filter((part) => !part.startsWith("token=")).join("&");
    const clean = window.location.pathname + window.location.search + (rest ? "#" + rest : "");
    window.history.replaceState(window.history.state, "", clean);
    let value = found.slice("token=".length);
    try {
      value = decodeURIComponent(value);
    } catch {
      // not percent-encoded: taken as it is
    }
    if (value.trim()) setToken(value.trim());
    return true;
  }

  // --- small DOM helpers --------------------------------------------------------------------------

  // An element with attributes and children; strings become text nodes (never HTML).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function setText(id, value) {
    const node = $(id);
    if (node) node.textContent = value;
  }

  function rows(tableId, list, makeRow) {
    const table = $(tableId);
    const tbody = table.tBodies[0];
    tbody.replaceChildren(...list.map(makeRow));
    const empty = document.querySelector(`[data-empty-for="${tableId}"]`);
    if (empty) empty.hidden = list.length > 0;
    table.dataset.rows = String(list.length);
  }

  function cell(col, value, opts = {}) {
    const td = el("td", { "data-col": col, className: opts.className || null, title: opts.title || null });
    if (value instanceof Node) td.append(value);
    else td.textContent = value === null || value === undefined ? "—" : String(value);
    if (opts.value !== undefined && opts.value !== null) td.dataset.value = String(opts.value);
    return td;
  }

  // --- formatting -----------------------------------------------------------------------------------

  const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

  function fmtInt(n) {
    return typeof n === "number" && Number.isFinite(n) ? integer.format(n) : "—";
  }

  function fmtMs(ms) {
    if (typeof ms !== "number" || !Number.isFinite(ms)) return "—";
    if (ms >= 10000) return decimal.format(ms / 1000) + " s";
    if (ms >= 100) return integer.format(ms) + " ms";
    return decimal.format(ms) + " ms";
  }

  function fmtPct(ratio) {
    if (typeof ratio !== "number" || !Number.isFinite(ratio)) return "—";
    const pct = ratio * 100;
    if (pct === 0) return "0%";
    if (pct < 0.1) return "<0.1%";
    return decimal.format(pct) + "%";
  }

  function fmtBytes(n) {
    if (typeof n !== "number" || !Number.isFinite(n)) return "—";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let value = n;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return (unit === 0 ? integer.format(value) : decimal.format(value)) + " " + units[unit];
  }

  function fmtDuration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d > 0) return `${d}d ${h}h`;
    if (h > 0) return `${h}h ${m}m`;
    if (m > 0) return `${m}m ${s % 60}s`;
    return `${s}s`;
  }

  const pad = (n) => String(n).padStart(2, "0");

  function clock(date) {
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  function fmtTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    const today = new Date();
    const sameDay = date.toDateString() === today.toDateString();
    const day = date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
    return sameDay ? clock(date) : `${day} ${clock(date)}`;
  }

  function fmtAgo(epochSeconds) {
    if (typeof epochSeconds !== "number") return "never";
    const ago = Math.max(0, Date.now() / 1000 - epochSeconds);
    return ago < 2 ? "just now" : fmtDuration(ago) + " ago";
  }

  function bucketText(bucket) {
    const match = /^(\d+)([smhdw])$/.exec(bucket || "");
    if (!match) return "";
    const names = { s: "second", m: "minute", h: "hour", d: "day", w: "week" };
    const n = Number(match[1]);
    return n === 1 ? `per ${names[match[2]]}` : `per ${n} ${names[match[2]]}s`;
  }

  // --- the API ---------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail, errors) {
      super(detail);
      this.status = status;
      this.detail = detail;
      this.errors = errors || [];
    }
  }

  async function api(path, signal) {
    const credential = token();
    if (!credential) throw new ApiError(401, "Sign in with an admin key.");
    let response;
    try {
      response = await fetch(API + path, {
        headers: { Authorization: "Bearer " + credential, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        redirect: "error", // never carry the credential anywhere else
        referrerPolicy: "no-referrer",
        signal,
      });
    } catch (error) {
      if (error && error.name === "AbortError") throw error;
      throw new ApiError(0, "The gateway cannot be reached.");
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch {
      answer = null;
    }
    if (!response.ok) {
      const detail = answer && typeof answer.detail === "string" ? answer.detail : `HTTP ${response.status}`;
      throw new ApiError(response.status, detail, answer && Array.isArray(answer.errors) ? answer.errors : []);
    }
    if (answer === null) throw new ApiError(response.status, "The answer was not JSON.");
    return answer;
  }

  // --- views -----------------------------------------------------------------------------------------

  let rendered = false; // a full render happened since the last sign-in

  function showLogin(message) {
    stopTimer();
    if (inflight) inflight.abort();
    inflight = null;
    rendered = false;
    clearData();
    $("dashboard").hidden = true;
    $("toolbar").hidden = true;
    $("login").hidden = false;
    const error = $("login-error");
    error.textContent = message || "";
    error.hidden = !message;
    const input = $("login-key");
    input.value = "";
    body.dataset.state = "login";
    delete body.dataset.analytics;
    input.focus();
  }

  function showDashboard() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("toolbar").hidden = false;
  }

  // Nothing from a previous credential stays on the page.
  function clearData() {
    for (const id of ["upstreams", "sessions", "top-tools", "top-clients", "rejections"]) rows(id, [], () => null);
    for (const id of ["chart-requests", "chart-errors", "chart-p95"]) {
      delete charts[id]; // nor redrawn from memory on a resize
      const chart = $(id);
      chart.replaceChildren();
      chart.dataset.total = "0";
    }
    for (const id of ["total-requests", "total-errors", "error-rate", "p95", "live-sessions", "upstreams-healthy",
      "version", "uptime", "store-state", "analytics-state"]) setText(id, "–");
    $("dropped-tile").hidden = true;
    $("notices").replaceChildren();
    setText("updated", "not updated yet");
    const dialog = $("client-dialog");
    if (dialog.open) dialog.close();
  }

  function notice(kind, title, detail, errors) {
    const box = el("div", { className: `notice notice-${kind}`, "data-kind": kind },
      el("strong", null, title), detail ? " " : null, detail || null);
    if (errors && errors.length) {
      box.append(el("ul", null, ...errors.map((e) => el("li", null, `${e.parameter || e.pointer || ""}: ${e.detail}`))));
    }
    return box;
  }

  function badge(text, kind) {
    return el("span", { className: `badge badge-${kind}` }, text);
  }

  const HEALTH = { healthy: "ok", unhealthy: "bad", unknown: "muted", not_served: "warn" };
  const REASONS = { forbidden: "bad", rate_limited: "warn", unauthenticated: "muted", invalid_token: "muted",
    insufficient_scope: "warn" };

  function renderStatus(status) {
    setText("version", status.version || "–");
    setText("uptime", fmtDuration(status.uptime_s));
    const store = status.store || {};
    setText("store-state", [store.backend, store.state].filter(Boolean).join(" · ") || "–");
    const analytics = status.analytics;
    setText("analytics-state", analytics ? `${analytics.backend} · ${analytics.state}` : "off");

    const upstreams = Array.isArray(status.upstreams) ? status.upstreams : [];
    const healthy = upstreams.filter((u) => u.state === "healthy").length;
    const tile = $("upstreams-healthy");
    tile.textContent = `${healthy} / ${upstreams.length}`;
    tile.dataset.healthy = String(healthy);
    tile.dataset.total = String(upstreams.length);
    tile.classList.toggle("value-bad", healthy < upstreams.length);
    setText("upstreams-sub", `${healthy} of ${upstreams.length} healthy`);
    rows("upstreams", upstreams, (u) => el("tr", { "data-name": u.name },
      cell("name", u.name, { className: "strong" }),
      cell("transport", u.transport),
      cell("state", badge(u.state || "unknown", HEALTH[u.state] || "warn"), { value: u.state }),
      cell("latency_ms", fmtMs(u.latency_ms), { className: "num", value: u.latency_ms }),
      cell("protocol", u.protocol || "—", { className: "mono" }),
      cell("checked_at", fmtAgo(u.checked_at), { value: u.checked_at }),
      cell("last_error", u.last_error || "—", { className: u.last_error ? "error-text wrap" : "muted" }),
    ));

    const sessions = status.sessions || { total: 0, by_endpoint: {} };
    const live = $("live-sessions");
    live.textContent = fmtInt(sessions.total);
    live.dataset.value = String(sessions.total || 0);
    const byEndpoint = Object.entries(sessions.by_endpoint || {}).sort((a, b) => b[1] - a[1]);
    rows("sessions", byEndpoint, ([endpoint, n]) => el("tr", null,
      cell("endpoint", endpoint, { className: "mono" }),
      cell("sessions", fmtInt(n), { className: "num", value: n }),
    ));

    const dropped = analytics ? analytics.dropped || 0 : 0;
    $("dropped-tile").hidden = !(dropped > 0);
    const droppedValue = $("dropped-events");
    droppedValue.textContent = fmtInt(dropped);
    droppedValue.dataset.value = String(dropped);
  }

  function renderUsage(usage) {
    const groups = usage.groups || [];
    let requests = 0;
    let errors = 0;
    for (const g of groups) {
      requests += g.requests || 0;
      errors += g.errors || 0;
    }
    if (usage.totals) {  // the period's own totals: right even when the groups are truncated
      requests = usage.totals.requests;
      errors = usage.totals.errors;
    }
    const p95 = usage.totals ? usage.totals.p95_ms : null;
    const total = $("total-requests");
    total.textContent = fmtInt(requests);
    total.dataset.value = String(requests);
    const errorTile = $("total-errors");
    errorTile.textContent = fmtInt(errors);
    errorTile.dataset.value = String(errors);
    errorTile.classList.toggle("value-bad", errors > 0);
    setText("error-rate", requests ? fmtPct(errors / requests) : "—");
    setText("p95", fmtMs(p95));
    setText("p95-note", "over the period");
    setText("requests-note", `in the last ${period}`);

    rows("top-clients", groups.slice(0, 10), (g) => {
      const name = g.client === null || g.client === undefined
        ? el("span", { className: "muted" }, "(no credential)")
        : el("button", { type: "button", className: "link", "data-client": g.client }, g.client);
      return el("tr", null,
        cell("client", name, { value: g.client }),
        cell("requests", fmtInt(g.requests), { className: "num", value: g.requests }),
        cell("errors", fmtInt(g.errors), { className: g.errors ? "num error-text" : "num", value: g.errors }),
        cell("p50_ms", fmtMs(g.p50_ms), { className: "num", value: g.p50_ms }),
        cell("p95_ms", fmtMs(g.p95_ms), { className: "num", value: g.p95_ms }),
        cell("bytes", `${fmtBytes(g.bytes_in)} / ${fmtBytes(g.bytes_out)}`, { className: "num muted" }),
      );
    });
  }

  function renderTools(answer) {
    const tools = answer.tools || [];
    const most = tools.reduce((m, t) => Math.max(m, t.invocations || 0), 0) || 1;
    rows("top-tools", tools, (t) => {
      const bar = el("span", { className: "bar" });
      bar.style.width = `${Math.max(2, Math.round((100 * (t.invocations || 0)) / most))}%`;
      const track = el("span", { className: "bar-track", "aria-hidden": "true" }, bar);
      const calls = el("span", { className: "bar-cell" }, track, el("span", { className: "bar-num" }, fmtInt(t.invocations)));
      return el("tr", null,
        cell("tool", t.tool, { className: "mono strong" }),
        cell("server", t.server),
        cell("invocations", calls, { className: "num", value: t.invocations }),
        cell("unique_clients", fmtInt(t.unique_clients), { className: "num", value: t.unique_clients }),
        cell("p95_ms", fmtMs(t.p95_ms), { className: "num", value: t.p95_ms }),
        cell("error_rate", fmtPct(t.error_rate), { className: t.error_rate ? "num error-text" : "num", value: t.error_rate }),
      );
    });
  }

  function renderRejections(answer) {
    const list = answer.rejections || [];
    rows("rejections", list, (r) => el("tr", { "data-request-id": r.request_id },
      cell("time", fmtTime(r.time), { title: r.time, value: r.time, className: "nowrap" }),
      cell("client", r.client_id === null ? "(no credential)" : r.client_id, { className: r.client_id === null ? "muted" : null }),
      cell("server", r.server),
      cell("method", [r.method, r.item].filter(Boolean).join(" · ") || "—", { className: "mono" }),
      cell("status", r.status, { className: "num" }),
      cell("reason", badge(r.reason || "—", REASONS[r.reason] || "muted"), { value: r.reason }),
      cell("rule", r.rule || "—", { className: "mono muted" }),
    ));
  }

  // --- charts ------------------------------------------------------------------------------------------

  // A y axis from 0: a round step (1, 2, 2.5 or 5 times a power of ten; whole for counts), 2 to 5 ticks.
  function scale(most, whole) {
    if (!(most > 0)) return { top: 1, step: whole ? 1 : 0.25 };
    const rough = most / 4;
    const power = 10 ** Math.floor(Math.log10(rough));
    const steps = [1, 2, 2.5, 5, 10].map((f) => f * power).filter((v) => !whole || (v >= 1 && Number.isInteger(v)));
    const step = steps.find((v) => v >= rough) || (whole ? Math.max(1, Math.ceil(rough)) : rough);
    return { top: Math.ceil(most / step - 1e-9) * step, step };
  }

  function tickLabel(date, spanMs) {
    if (spanMs <= 36 * 3600 * 1000) return `${pad(date.getHours())}:${pad(date.getMinutes())}`;
    return date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  }

  // Bars (counts) or a line (latency) over the buckets of a time series, sized to its box.
  function drawChart(target, points, opts) {
    const width = Math.max(280, Math.round(target.parentElement.clientWidth || 480));
    const height = 190;
    const m = { top: 12, right: 12, bottom: 26, left: 46 };
    const plotW = width - m.left - m.right;
    const plotH = height - m.top - m.bottom;
    const values = points.map((p) => (typeof p.value === "number" ? p.value : 0));
    const total = values.reduce((a, b) => a + b, 0);
    const { top, step: tick } = scale(Math.max(0, ...values), opts.kind !== "line");
    const times = points.map((p) => new Date(p.timestamp));
    const spanMs = times.length > 1 ? times[times.length - 1] - times[0] : 3600 * 1000;
    const n = Math.max(1, points.length);
    const step = plotW / n;
    const y = (v) => m.top + plotH - (v / top) * plotH;

    target.setAttribute("viewBox", `0 0 ${width} ${height}`);
    target.setAttribute("width", String(width));
    target.setAttribute("height", String(height));
    target.dataset.total = String(opts.kind === "line" ? Math.round(total * 1000) / 1000 : total);
    target.dataset.max = String(Math.max(0, ...values));
    target.dataset.points = String(points.length);

    const parts = [];
    // Horizontal grid and y labels.
    for (let i = 0; i * tick <= top + 1e-9; i += 1) {
      const v = i * tick;
      const yy = Math.round(y(v)) + 0.5;
      parts.push(svg("line", { x1: m.left, x2: width - m.right, y1: yy, y2: yy, class: i === 0 ? "axis" : "gridline" }));
      const label = opts.kind === "line" ? fmtMs(v).replace(" ms", "") : (Number.isInteger(v) ? fmtInt(v) : decimal.format(v));
      parts.push(svg("text", { x: m.left - 6, y: yy + 4, class: "tick", "text-anchor": "end" }, label));
    }
    // X labels: about five, on bucket starts.
    const every = Math.max(1, Math.ceil(n / 5));
    for (let i = 0; i < n; i += every) {
      const x = m.left + step * i + step / 2;
      parts.push(svg("line", { x1: x, x2: x, y1: m.top + plotH, y2: m.top + plotH + 4, class: "axis" }));
      parts.push(svg("text", { x, y: height - 8, class: "tick", "text-anchor": "middle" }, tickLabel(times[i], spanMs)));
    }

    const describe = (i) => {
      const when = times[i];
      const label = opts.kind === "line" ? fmtMs(values[i]) : `${fmtInt(values[i])} ${opts.unit}`;
      return `${when.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })} · ${label}`;
    };

    if (opts.kind === "line") {
      // A bucket without requests has no latency: the line breaks there instead of dropping to 0.
      const gap = (i) => (opts.gaps ? opts.gaps.has(points[i].timestamp) : false);
      const runs = [];
      let run = [];
      values.forEach((v, i) => {
        if (gap(i)) {
          if (run.length) runs.push(run);
          run = [];
        } else {
          run.push([m.left + step * i + step / 2, y(v), i]);
        }
      });
      if (run.length) runs.push(run);
      const base = (m.top + plotH).toFixed(1);
      for (const r of runs) {
        const d = r.map(([x, yy], k) => `${k ? "L" : "M"}${x.toFixed(1)},${yy.toFixed(1)}`).join("");
        const last = r[r.length - 1][0].toFixed(1);
        parts.push(svg("path", { d: `${d}L${last},${base}L${r[0][0].toFixed(1)},${base}Z`, class: "area" }));
        if (r.length > 1) parts.push(svg("path", { d, class: "line" }));
        for (const [x, yy, i] of r) {
          if (r.length === 1 || (values[i] > 0 && n <= 130)) parts.push(svg("circle", { cx: x, cy: yy, r: 2.5, class: "point" }));
        }
      }
    } else {
      const barW = Math.max(1, step * 0.72);
      values.forEach((v, i) => {
        if (v <= 0) return;
        const x = m.left + step * i + (step - barW) / 2;
        const h = Math.max(1, (v / top) * plotH);
        parts.push(svg("rect", { x: x.toFixed(1), y: (m.top + plotH - h).toFixed(1), width: barW.toFixed(1), height: h.toFixed(1), class: "barv", rx: Math.min(2, barW / 3).toFixed(1) }));
      });
    }
    // One hover column per bucket, each with its <title> tooltip.
    values.forEach((v, i) => {
      if (opts.kind === "line" && opts.gaps && opts.gaps.has(points[i].timestamp)) return;
      parts.push(svg("rect", { x: (m.left + step * i).toFixed(1), y: m.top, width: Math.max(1, step).toFixed(2), height: plotH, class: "hit", "data-value": v },
        svg("title", null, describe(i))));
    });
    if (total === 0) {
      parts.push(svg("text", { x: m.left + plotW / 2, y: m.top + plotH / 2, class: "nodata", "text-anchor": "middle" }, opts.empty));
    }
    target.replaceChildren(...parts);
  }

  const charts = {}; // the last series per chart, to redraw on resize

  function renderChart(id, answer, opts) {
    charts[id] = { answer, opts };
    drawChart($(id), answer.points || [], opts);
    setText(`${id}-sub`, [opts.kind === "line" ? "ms" : "", bucketText(answer.bucket)].filter(Boolean).join(" · "));
  }

  function chartsOff(message) {
    for (const id of ["chart-requests", "chart-errors", "chart-p95"]) {
      delete charts[id];
      const chart = $(id);
      chart.dataset.total = "0";
      const width = Math.max(280, Math.round(chart.parentElement.clientWidth || 480));
      chart.setAttribute("viewBox", `0 0 ${width} 190`);
      chart.setAttribute("width", String(width));
      chart.setAttribute("height", "190");
      chart.replaceChildren(svg("text", { x: width / 2, y: 95, class: "nodata", "text-anchor": "middle" }, message));
      setText(`${id}-sub`, "");
    }
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const [id, { answer, opts }] of Object.entries(charts)) drawChart($(id), answer.points || [], opts);
    }, 150);
  });

  // --- one refresh -----------------------------------------------------------------------------------

  let period = PERIODS.includes(storage.get(PERIOD_KEY)) ? storage.get(PERIOD_KEY) : "24h";
  let inflight = null;
  let timer = null;

  function stopTimer() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }

  function schedule() {
    stopTimer();
    if (document.visibilityState === "hidden" || !token()) return;
    timer = setTimeout(refresh, REFRESH_MS);
  }

  function analyticsOff(detail) {
    for (const id of ["total-requests", "total-errors", "error-rate", "p95"]) setText(id, "–");
    for (const id of ["top-tools", "top-clients", "rejections"]) {
      rows(id, [], () => null);
      const empty = document.querySelector(`[data-empty-for="${id}"]`);
      if (empty) empty.textContent = "Analytics are off.";
    }
    chartsOff("Analytics are off");
    return notice("info", "Analytics are off.", detail);
  }

  const EMPTY_TEXT = {
    "top-tools": "No tool calls in this period.",
    "top-clients": "No requests in this period.",
    rejections: "Nothing was refused in this period.",
  };

  async function refresh() {
    stopTimer();
    if (!token()) {
      showLogin("");
      return;
    }
    if (inflight) inflight.abort();
    const controller = new AbortController();
    inflight = controller;
    const signal = controller.signal;
    const q = `period=${encodeURIComponent(period)}`;
    const asks = {
      status: api("status", signal),
      usage: api(`analytics/usage?${q}&group_by=client`, signal),
      tools: api(`analytics/tools?${q}&limit=10`, signal),
      rejections: api(`analytics/rejections?${q}&limit=20`, signal),
      requests: api(`analytics/timeseries?${q}&metric=requests`, signal),
      errors: api(`analytics/timeseries?${q}&metric=errors`, signal),
      p95: api(`analytics/timeseries?${q}&metric=p95_ms`, signal),
    };
    const names = Object.keys(asks);
    const settled = await Promise.allSettled(Object.values(asks));
    if (signal.aborted || inflight !== controller) return; // a newer refresh, or a sign-out
    inflight = null;
    const got = {};
    const failed = {};
    names.forEach((name, i) => {
      if (settled[i].status === "fulfilled") got[name] = settled[i].value;
      else failed[name] = settled[i].reason;
    });

    // A credential refused anywhere: sign in again, with the reason.
    const refused = Object.values(failed).find((e) => e instanceof ApiError && (e.status === 401 || e.status === 403));
    if (refused) {
      clearToken();
      showLogin(refused.detail);
      return;
    }

    showDashboard();
    const notes = [];
    const dot = $("live-dot");
    if (failed.status) {
      const e = failed.status;
      notes.push(notice("error", "Cannot read the gateway's status.", e.detail || String(e)));
      dot.className = "dot dot-bad";
    } else {
      renderStatus(got.status);
      dot.className = "dot dot-ok";
    }

    const analyticNames = names.filter((n) => n !== "status");
    const off = analyticNames.map((n) => failed[n]).find((e) => e instanceof ApiError && e.status === 404);
    let analyticsOk = false;
    if (off) {
      notes.push(analyticsOff(off.detail));
      body.dataset.analytics = "off";
    } else {
      body.dataset.analytics = "on";
      for (const id of Object.keys(EMPTY_TEXT)) {
        const empty = document.querySelector(`[data-empty-for="${id}"]`);
        if (empty) empty.textContent = EMPTY_TEXT[id];
      }
      const render = {
        usage: () => renderUsage(got.usage),
        tools: () => renderTools(got.tools),
        rejections: () => renderRejections(got.rejections),
        requests: () => renderChart("chart-requests", got.requests, { kind: "bar", unit: "requests", empty: "No requests in this period" }),
        errors: () => renderChart("chart-errors", got.errors, { kind: "bar", unit: "errors", empty: "No errors in this period" }),
        p95: () => renderChart("chart-p95", got.p95, { kind: "line", unit: "ms", empty: "No requests in this period",
          gaps: got.requests ? new Set(got.requests.points.filter((p) => !p.value).map((p) => p.timestamp)) : null }),
      };
      const problems = [];
      for (const name of analyticNames) {
        if (got[name]) render[name]();
        else problems.push(failed[name]);
      }
      if (problems.length) {
        const first = problems[0];
        const errors = problems.flatMap((e) => (e instanceof ApiError ? e.errors : []));
        notes.push(notice("error", "Some analytics could not be read.", first instanceof ApiError ? first.detail : String(first), errors));
      } else {
        analyticsOk = true;
      }
    }
    $("notices").replaceChildren(...notes);
    const now = new Date();
    setText("updated", `updated ${clock(now)}`);
    $("updated").dataset.at = now.toISOString();
    if (!failed.status && (analyticsOk || off)) {
      rendered = true;
      body.dataset.state = "ready";
    } else if (!rendered) {
      body.dataset.state = "error";
    }
    schedule();
  }

  // --- one client's usage ---------------------------------------------------------------------------

  async function showClient(clientId) {
    const dialog = $("client-dialog");
    const content = $("client-body");
    setText("client-title", clientId);
    content.replaceChildren(el("p", { className: "muted" }, "Loading…"));
    if (!dialog.open) dialog.showModal();
    let answer;
    try {
      answer = await api(`analytics/usage/${encodeURIComponent(clientId)}?period=${encodeURIComponent(period)}`);
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
        dialog.close();
        clearToken();
        showLogin(e.detail);
        return;
      }
      content.replaceChildren(notice("error", "Cannot read this client's usage.", e.detail || String(e)));
      return;
    }
    const t = answer.totals || {};
    const stat = (label, value) => el("div", { className: "mini" }, el("div", { className: "tile-label" }, label),
      el("div", { className: "mini-value" }, value));
    const table = (headers, list, makeRow) => el("div", { className: "table-wrap" },
      el("table", { className: "table" },
        el("thead", null, el("tr", null, ...headers.map(([text, num]) => el("th", { className: num ? "num" : null }, text)))),
        el("tbody", null, ...list.map(makeRow))));
    content.replaceChildren(
      el("p", { className: "muted" }, `Last ${answer.period || period}`),
      el("div", { className: "minis" },
        stat("Requests", fmtInt(t.requests)), stat("Errors", fmtInt(t.errors)),
        stat("p50", fmtMs(t.p50_ms)), stat("p95", fmtMs(t.p95_ms)),
        stat("In", fmtBytes(t.bytes_in)), stat("Out", fmtBytes(t.bytes_out))),
      el("h3", null, "By server"),
      (answer.servers || []).length
        ? table([["Server"], ["Requests", 1], ["Errors", 1], ["p95", 1]], answer.servers, (s) => el("tr", null,
          cell("server", s.server === null ? "(none)" : s.server), cell("requests", fmtInt(s.requests), { className: "num" }),
          cell("errors", fmtInt(s.errors), { className: "num" }), cell("p95_ms", fmtMs(s.p95_ms), { className: "num" })))
        : el("p", { className: "empty" }, "No requests."),
      el("h3", null, "By tool"),
      (answer.tools || []).length
        ? table([["Tool"], ["Server"], ["Calls", 1], ["Errors", 1], ["p95", 1]], answer.tools, (s) => el("tr", null,
          cell("tool", s.tool, { className: "mono" }), cell("server", s.server), cell("requests", fmtInt(s.requests), { className: "num" }),
          cell("errors", fmtInt(s.errors), { className: "num" }), cell("p95_ms", fmtMs(s.p95_ms), { className: "num" })))
        : el("p", { className: "empty" }, "No tool calls."),
    );
  }

  // --- wiring ------------------------------------------------------------------------------------------

  function markPeriod() {
    for (const button of $("period").querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.period === period));
    }
  }

  function start() {
    markPeriod();
    $("period").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-period]");
      if (!button || button.dataset.period === period) return;
      period = button.dataset.period;
      storage.set(PERIOD_KEY, period);
      markPeriod();
      refresh();
    });
    $("refresh").addEventListener("click", () => refresh());
    $("sign-out").addEventListener("click", () => {
      clearToken();
      showLogin("Signed out.");
    });
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault(); // nothing is submitted anywhere: the key stays in this tab
      const value = $("login-key").value.trim();
      if (!value) {
        const error = $("login-error");
        error.textContent = "Enter an admin key.";
        error.hidden = false;
        return;
      }
      setToken(value);
      $("login-key").value = "";
      body.dataset.state = "loading";
      refresh();
    });
    $("top-clients").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-client]");
      if (button) showClient(button.dataset.client);
    });
    $("client-close").addEventListener("click", () => $("client-dialog").close());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") stopTimer();
      else if (token() && body.dataset.state !== "login") refresh();
    });
    window.addEventListener("hashchange", () => {
      if (takeFragmentToken()) refresh();
    });

    takeFragmentToken();
    if (token()) refresh();
    else showLogin("");
  }

  start();
})();
