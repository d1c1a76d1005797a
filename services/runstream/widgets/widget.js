// The run widget (anywidget ES module, no build step): follows one run over the live gateway.
//
// The model's traitlets (api_url, token, run_id, workspace, portal_url, max_lines) say
// what to follow; this module opens /api/v1/live itself, subscribes to the run from its
// first event (cursor -1) and to each child run's lifecycle, resumes from its cursors
// after a drop (with backoff), and closes the socket once the run has ended. State
// rules are those of runstream.widgets.model.RunDetailsModel.

const STATUS_OF_TYPE = {
  "run.created": "created",
  "run.queued": "queued",
  "run.started": "running",
  "run.completed": "completed",
  "run.failed": "failed",
  "run.canceled": "canceled",
};
const RANK = { created: 0, queued: 1, running: 2, completed: 3, failed: 3, canceled: 3 };
const TERMINAL = new Set(["completed", "failed", "canceled"]);
const STAMP = { created: "created", queued: "queued", running: "started" };
const WIRE = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };
const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];
const SVG = "http://www.w3.org/2000/svg";
const CSS = `
.rs-widget { font: 13px/1.4 system-ui, sans-serif; color: #1f2937; border: 1px solid #e5e7eb;
  border-radius: 6px; padding: 10px 12px; background: #fff; max-width: 100%; box-sizing: border-box; }
.rs-head { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
.rs-title { font-weight: 600; font-size: 14px; }
.rs-status { padding: 1px 8px; border-radius: 10px; background: #e5e7eb; font-size: 12px; }
.rs-status[data-status=running] { background: #dbeafe; color: #1e40af; }
.rs-status[data-status=completed] { background: #dcfce7; color: #166534; }
.rs-status[data-status=failed] { background: #fee2e2; color: #991b1b; }
.rs-status[data-status=canceled] { background: #fef3c7; color: #92400e; }
.rs-times, .rs-conn { color: #6b7280; font-size: 12px; }
.rs-message { margin: 6px 0; padding: 6px 8px; border-radius: 4px; background: #fef2f2; color: #991b1b; }
.rs-message:empty { display: none; }
.rs-charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 8px; margin: 8px 0; }
.rs-chart { border: 1px solid #f3f4f6; border-radius: 4px; padding: 4px 6px; }
.rs-chart-name { font-weight: 600; font-size: 12px; }
.rs-chart-info { color: #6b7280; font-size: 11px; }
.rs-chart svg { display: block; width: 100%; height: 110px; }
.rs-log { background: #111827; color: #e5e7eb; font: 12px/1.35 ui-monospace, monospace; height: 150px;
  overflow: auto; padding: 4px 8px; border-radius: 4px; white-space: pre-wrap; margin: 0; }
.rs-log .stderr { color: #fca5a5; }
.rs-children { margin: 6px 0; font-size: 12px; }
.rs-children:empty { display: none; }
.rs-children span { margin-right: 10px; }
.rs-section { font-weight: 600; font-size: 12px; margin-top: 8px; color: #374151; }
`;

function num(value) {
  return typeof value === "string" ? WIRE[value] : Number(value);
}

function when(ms) {
  return ms == null ? "" : new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text != null) node.textContent = text;
  return node;
}

/** The run's state, built from its events exactly as RunDetailsModel builds it. */
export class RunView {
  constructor(runId, maxLines = 200) {
    this.runId = runId;
    this.maxLines = maxLines;
    this.status = null;
    this.statusSeq = -1;
    this.experiment = null;
    this.error = null;
    this.times = {};
    this.series = new Map(); // name -> {kind: "step"|"index"|"columns", x, y, columns, steps}
    this.lines = []; // [stream, text]
    this.children = new Map(); // id -> {name, status, seq}
    this.cursor = null;
  }

  get finished() {
    return TERMINAL.has(this.status);
  }

  apply(event, cursor) {
    if (cursor != null) {
      if (this.cursor != null && cursor <= this.cursor) return false;
      this.cursor = cursor;
    }
    const payload = event.payload || {};
    const type = event.type;
    if (type in STATUS_OF_TYPE) {
      const status = STATUS_OF_TYPE[type];
      if (type === "run.created") this.experiment = event.experiment ?? this.experiment;
      const stamp = STAMP[status] || "ended";
      if (!(stamp in this.times)) this.times[stamp] = event.ts;
      if (type === "run.failed" && payload.error) this.error = String(payload.error);
      const seq = event.seq ?? 0;
      if (this.status != null) {
        const held = RANK[this.status];
        if (held > RANK[status] || (held === RANK[status] && this.statusSeq >= seq)) return false;
      }
      this.status = status;
      this.statusSeq = seq;
      return true;
    }
    if (type === "metrics.logged") {
      for (const point of payload.points) this.point(point.name, Number(point.step), num(point.value));
    } else if (type === "list.logged") {
      const s = this.get(payload.name, "index");
      for (const value of payload.values) {
        s.x.push(s.x.length);
        s.y.push(num(value));
      }
    } else if (type === "row.logged") {
      const row = {};
      for (const [k, v] of Object.entries(payload.row)) row[k] = [v];
      this.addColumns(payload.name, row);
    } else if (type === "table.logged") {
      this.addColumns(payload.name, payload.columns);
    } else if (type === "logs.appended") {
      for (const line of payload.lines) this.lines.push([line.stream, line.text]);
      if (this.lines.length > this.maxLines) this.lines.splice(0, this.lines.length - this.maxLines);
    } else if (type === "run.child_linked") {
      const child = this.child(payload.child_run_id);
      if (payload.name) child.name = payload.name;
    } else {
      return false;
    }
    return true;
  }

  applyChild(childId, event) {
    const status = STATUS_OF_TYPE[event.type];
    if (!status) return false;
    const child = this.child(childId);
    if (event.type === "run.created" && event.payload?.name) child.name = event.payload.name;
    const seq = event.seq ?? 0;
    if (child.status != null) {
      const held = RANK[child.status];
      if (held > RANK[status] || (held === RANK[status] && child.seq >= seq)) return false;
    }
    child.status = status;
    child.seq = seq;
    return true;
  }

  child(id) {
    if (!this.children.has(id)) this.children.set(id, { name: null, status: null, seq: -1 });
    return this.children.get(id);
  }

  get(name, kind) {
    if (!this.series.has(name)) this.series.set(name, { kind, x: [], y: [], columns: {}, steps: new Map() });
    return this.series.get(name);
  }

  point(name, step, value) {
    const s = this.get(name, "step");
    if (s.steps.has(step)) {
      s.y[s.steps.get(step)] = value;
      return;
    }
    if (s.x.length && step < s.x[s.x.length - 1]) {
      s.x.push(step);
      s.y.push(value);
      const order = s.x.map((_, i) => i).sort((a, b) => s.x[a] - s.x[b]);
      s.x = order.map((i) => s.x[i]);
      s.y = order.map((i) => s.y[i]);
      s.steps = new Map(s.x.map((x, i) => [x, i]));
      return;
    }
    s.steps.set(step, s.x.length);
    s.x.push(step);
    s.y.push(value);
  }

  addColumns(name, columns) {
    const s = this.get(name, "columns");
    const length = rows(s);
    const keys = new Set([...Object.keys(s.columns), ...Object.keys(columns)]);
    for (const key of keys) {
      const held = (s.columns[key] ??= []);
      while (held.length < length) held.push(NaN);
      for (const v of columns[key] || []) held.push(num(v));
    }
    const width = rows(s);
    for (const held of Object.values(s.columns)) while (held.length < width) held.push(NaN);
  }
}

function rows(series) {
  return Math.max(0, ...Object.values(series.columns).map((c) => c.length));
}

/** How many points a series has (what the chart draws). */
export function pointCount(series) {
  return series.kind === "columns" ? rows(series) : series.x.length;
}

/** One SVG line chart: lines = [{x: [], y: [], label}]. */
function drawChart(svg, lines) {
  const width = 300;
  const height = 110;
  const pad = { left: 42, right: 6, top: 6, bottom: 16 };
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const line of lines) {
    for (let i = 0; i < line.x.length; i++) {
      const x = line.x[i], y = line.y[i];
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  }
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  if (!Number.isFinite(x0)) return;
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
  const sx = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const sy = (y) => height - pad.bottom - ((y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  const axis = document.createElementNS(SVG, "path");
  axis.setAttribute("d", `M${pad.left},${pad.top}V${height - pad.bottom}H${width - pad.right}`);
  axis.setAttribute("stroke", "#d1d5db");
  axis.setAttribute("fill", "none");
  svg.append(axis);
  const label = (text, x, y, anchor) => {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", x);
    t.setAttribute("y", y);
    t.setAttribute("font-size", "9");
    t.setAttribute("fill", "#6b7280");
    t.setAttribute("text-anchor", anchor);
    t.textContent = text;
    svg.append(t);
  };
  const fmt = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : +v.toPrecision(3));
  label(fmt(y1), pad.left - 3, pad.top + 7, "end");
  label(fmt(y0), pad.left - 3, height - pad.bottom, "end");
  label(fmt(x0), pad.left, height - 4, "start");
  label(fmt(x1), width - pad.right, height - 4, "end");
  lines.forEach((line, n) => {
    const poly = document.createElementNS(SVG, "polyline");
    const points = [];
    for (let i = 0; i < line.x.length; i++) {
      if (Number.isFinite(line.x[i]) && Number.isFinite(line.y[i])) {
        points.push(`${sx(line.x[i]).toFixed(1)},${sy(line.y[i]).toFixed(1)}`);
      }
    }
    poly.setAttribute("points", points.join(" "));
    poly.setAttribute("fill", "none");
    poly.setAttribute("stroke", COLORS[n % COLORS.length]);
    poly.setAttribute("stroke-width", "1.5");
    poly.setAttribute("vector-effect", "non-scaling-stroke");
    poly.dataset.points = String(points.length);
    svg.append(poly);
  });
}

/** The lines a series is drawn as: log over step, log_list over index, rows/tables as x vs each other column. */
function linesOf(series, xColumn) {
  if (series.kind !== "columns") return [{ x: series.x, y: series.y }];
  const keys = Object.keys(series.columns);
  const x = xColumn && keys.includes(xColumn) ? xColumn : keys[0];
  const others = keys.filter((k) => k !== x);
  if (!others.length) return [{ x: series.columns[x].map((_, i) => i), y: series.columns[x], label: x }];
  return others.map((k) => ({ x: series.columns[x], y: series.columns[k], label: k }));
}

function liveUrl(api, token) {
  const base = api.replace(/\/+$/, "").replace(/^http(s?):\/\//, "ws$1://");
  return `${base}/api/v1/live?token=${encodeURIComponent(token)}`;
}

export function render({ model, el: root }) {
  const runId = model.get("run_id");
  const api = model.get("api_url");
  const token = model.get("token");
  const workspace = model.get("workspace") || "default";
  const view = new RunView(runId, model.get("max_lines") || 200);

  const style = el("style", null, CSS);
  const box = el("div", "rs-widget");
  box.dataset.runId = runId;
  const head = el("div", "rs-head");
  const title = el("span", "rs-title", runId);
  const status = el("span", "rs-status", "connecting");
  const link = el("a", null, "open in the studio");
  link.href = model.get("portal_url") || `${api}/runs/${encodeURIComponent(runId)}`;
  link.target = "_blank";
  link.rel = "noopener";
  const conn = el("span", "rs-conn", "connecting…");
  head.append(title, status, link, conn);
  const times = el("div", "rs-times");
  const message = el("div", "rs-message");
  const charts = el("div", "rs-charts");
  const childTitle = el("div", "rs-section", "Child runs");
  childTitle.hidden = true;
  const children = el("div", "rs-children");
  const logTitle = el("div", "rs-section", "Log");
  const log = el("pre", "rs-log");
  box.append(head, times, message, charts, childTitle, children, logTitle, log);
  root.replaceChildren(style, box);

  const chartNodes = new Map(); // name -> {node, svg, info, select}
  let ws = null;
  let closed = false; // the widget is gone, or the run ended
  let opened = false;
  let delay = 250;
  let timer = null;
  let frame = 0;
  const childSubs = new Map(); // sub name -> child id
  const childCursors = new Map(); // child id -> cursor

  function draw() {
    frame = 0;
    status.textContent = view.status ?? "unknown";
    status.dataset.status = view.status ?? "";
    title.textContent = view.experiment ? `${view.experiment} / ${runId}` : runId;
    const t = view.times;
    times.textContent = [
      t.created != null && `created ${when(t.created)}`,
      t.queued != null && `queued ${when(t.queued)}`,
      t.started != null && `started ${when(t.started)}`,
      t.ended != null && `ended ${when(t.ended)}`,
      t.started != null && t.ended != null && `(${((t.ended - t.started) / 1000).toFixed(1)} s)`,
    ].filter(Boolean).join(" · ");
    if (view.error && !message.dataset.connection) message.textContent = view.error.split("\n").slice(-3).join("\n");
    for (const [name, series] of view.series) {
      let chart = chartNodes.get(name);
      if (!chart) {
        const node = el("div", "rs-chart");
        node.dataset.metric = name;
        const label = el("div", "rs-chart-name", name);
        const info = el("div", "rs-chart-info");
        const svg = document.createElementNS(SVG, "svg");
        node.append(label, info, svg);
        chart = { node, svg, info, select: null };
        if (series.kind === "columns") {
          chart.select = el("select");
          chart.select.title = "x column";
          chart.select.addEventListener("change", () => schedule());
          label.append(" x: ", chart.select);
        }
        chartNodes.set(name, chart);
        charts.append(node);
      }
      if (chart.select) {
        const keys = Object.keys(series.columns);
        if (chart.select.options.length !== keys.length) {
          const chosen = chart.select.value;
          chart.select.replaceChildren(...keys.map((k) => new Option(k, k)));
          chart.select.value = keys.includes(chosen) ? chosen : keys[0];
        }
      }
      const count = pointCount(series);
      chart.node.dataset.points = String(count);
      const lines = linesOf(series, chart.select?.value);
      const last = series.y[series.y.length - 1];
      if (series.kind === "columns") {
        const legend = lines.map((l, n) => {
          const key = el("span", null, ` ${l.label}`);
          key.style.color = COLORS[n % COLORS.length];
          return key;
        });
        chart.info.replaceChildren(`${count} rows ·`, ...legend);
      } else {
        chart.info.textContent =
          series.kind === "step"
            ? `${count} points · step ${series.x[count - 1]} · last ${last != null ? +last.toPrecision(4) : ""}`
            : `${count} values (by index)`;
      }
      drawChart(chart.svg, lines);
    }
    const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.replaceChildren(
      ...view.lines.map(([stream, text]) => {
        const line = el("div", `rs-line ${stream}`, text);
        return line;
      }),
    );
    log.dataset.lines = String(view.lines.length);
    if (follow) log.scrollTop = log.scrollHeight;
    childTitle.hidden = view.children.size === 0;
    children.replaceChildren(
      ...[...view.children].map(([id, child]) => {
        const item = el("span", "rs-child");
        item.dataset.runId = id;
        const badge = el("span", "rs-status", child.status ?? "…");
        badge.dataset.status = child.status ?? "";
        item.append(`${child.name || id} `, badge);
        return item;
      }),
    );
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function showConnection(text, problem) {
    conn.textContent = text;
    if (problem) {
      message.dataset.connection = "1";
      message.textContent = problem;
    } else if (message.dataset.connection) {
      delete message.dataset.connection;
      message.textContent = "";
    }
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function subscribeRun() {
    send({ op: "subscribe", sub: "run", run_id: runId, workspace, cursor: view.cursor ?? -1 });
  }

  function subscribeChild(id) {
    let sub = null;
    for (const [name, child] of childSubs) if (child === id) sub = name;
    if (!sub) {
      sub = `child-${childSubs.size + 1}`;
      childSubs.set(sub, id);
    }
    send({ op: "subscribe", sub, run_id: id, workspace, cursor: childCursors.get(id) ?? -1, types: ["run.*"] });
  }

  function childrenDone() {
    return [...view.children.values()].every((child) => TERMINAL.has(child.status));
  }

  let grace = null;
  function finish() {
    if (closed) return;
    // The run ended; its children's last statuses may still be on their way (up to 2 s).
    if (!childrenDone() && grace === null) {
      grace = setTimeout(finish, 2000);
      return;
    }
    if (grace !== null) clearTimeout(grace);
    closed = true;
    showConnection(`run ${view.status}: live updates stopped`);
    if (ws) ws.close(1000);
    ws = null;
  }

  function onEvent(sub, event, cursor) {
    if (sub === "run") {
      const known = new Set(view.children.keys());
      if (view.apply(event, cursor)) schedule();
      for (const id of view.children.keys()) if (!known.has(id)) subscribeChild(id);
      if (view.finished) {
        schedule();
        finish();
      }
    } else if (childSubs.has(sub)) {
      const id = childSubs.get(sub);
      childCursors.set(id, cursor);
      if (view.applyChild(id, event)) schedule();
      if (view.finished && childrenDone()) finish();
    }
  }

  function onMessage(frameData) {
    let msg;
    try {
      msg = JSON.parse(frameData);
    } catch {
      return;
    }
    switch (msg.type) {
      case "heartbeat":
        send({ op: "pong" });
        break;
      case "subscribed":
        if (msg.sub === "run") showConnection("live");
        break;
      case "event":
        onEvent(msg.sub, msg.event, msg.cursor);
        break;
      case "events":
        msg.events.forEach((event, i) => {
          if (!closed) onEvent(msg.sub, event, msg.cursors[i]);
        });
        break;
      case "resync":
        if (msg.sub === "run") subscribeRun();
        else if (childSubs.has(msg.sub)) subscribeChild(childSubs.get(msg.sub));
        break;
      case "error":
        if (msg.code === "unavailable") {
          setTimeout(() => (msg.sub === "run" ? subscribeRun() : childSubs.has(msg.sub) && subscribeChild(childSubs.get(msg.sub))), 1000);
        } else if (msg.sub === "run") {
          showConnection("stopped", `The gateway refused the subscription (${msg.code}): ${msg.detail}`);
          closed = true;
          if (ws) ws.close(1000);
        }
        break;
    }
  }

  async function explainFailure() {
    // A browser sees neither the status of a refused handshake (401) nor why a socket failed:
    // a request to /healthz (no token, no CORS needed in no-cors mode) tells the two apart.
    try {
      await fetch(`${api.replace(/\/+$/, "")}/healthz`, { mode: "no-cors", cache: "no-store" });
      return "token";
    } catch {
      return "unreachable";
    }
  }

  function connect() {
    if (closed) return;
    timer = null;
    opened = false;
    let socket;
    try {
      socket = new WebSocket(liveUrl(api, token));
    } catch (error) {
      showConnection("stopped", `Cannot open the gateway's websocket at ${api}: ${error.message}`);
      closed = true;
      return;
    }
    ws = socket;
    socket.onopen = () => {
      opened = true;
      delay = 250;
      showConnection("connected");
      subscribeRun();
      for (const id of view.children.keys()) subscribeChild(id);
    };
    socket.onmessage = (e) => {
      if (ws === socket) onMessage(e.data);
    };
    socket.onclose = async (e) => {
      if (ws !== socket && ws !== null) return;
      ws = null;
      if (closed) return;
      if (e.code === 1008) {
        closed = true;
        showConnection("stopped", `The gateway refused the token (${e.reason || "close 1008"}). Check RUNSTREAM_TOKEN.`);
        return;
      }
      if (!opened) {
        const why = await explainFailure();
        if (closed) return;
        if (why === "token") {
          closed = true;
          showConnection(
            "stopped",
            `The gateway at ${api} refused the connection: the token is probably wrong (HTTP 401). Check RUNSTREAM_TOKEN.`,
          );
          return;
        }
        showConnection(`reconnecting in ${(delay / 1000).toFixed(1)} s`, `Cannot reach the gateway at ${api}; retrying.`);
      } else {
        showConnection(`connection lost; reconnecting in ${(delay / 1000).toFixed(1)} s`);
      }
      timer = setTimeout(connect, delay * (0.5 + Math.random()));
      delay = Math.min(delay * 2, 10000);
    };
  }

  if (!api || !runId) {
    showConnection("stopped", "The widget needs the gateway's address (api_url) and a run id.");
  } else {
    connect();
  }
  draw();

  return () => {
    closed = true;
    if (timer) clearTimeout(timer);
    if (grace !== null) clearTimeout(grace);
    if (frame) cancelAnimationFrame(frame);
    if (ws) ws.close(1000);
    ws = null;
  };
}

export default { render };
