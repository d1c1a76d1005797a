// `/runs/{run_id}` (what `run.get_portal_url()` opens): one run, live.
//
// One run subscription (30 frames/s at most) carries everything that happens to
// the run: lifecycle, metrics, values, output. Its snapshot fixes a cursor; the
// page then reads the run from the query API, which holds at least everything up
// to that cursor, and applies the events after it on top. Points are keyed by step
// and log lines by (stream, line number), so an event that is in both is shown once.

import { ApiError, download, enc, getJson } from "../api";
import { h, replaceChildren } from "../dom";
import { formatDuration, formatTime, mergeStatus, parseTime, STATUS_OF_EVENT, TERMINAL, type WireNumber } from "../format";
import { LiveClient } from "../live";
import { LogView } from "../logview";
import { paths, type Route } from "../router";
import { colorOf, MetricCard, ValueCard } from "../run-charts";
import type {
  ChildRun,
  FileEntry,
  LiveEvent,
  LogLine,
  LogsAnswer,
  RunDetails,
  SeriesAnswer,
  ValuesAnswer,
} from "../types";
import { breadcrumbs, debounce, errorBox, loading, statusBadge } from "../ui";

const LIVE_TYPES = ["run.*", "metrics.logged", "list.logged", "row.logged", "table.logged", "logs.appended", "file.uploaded"];
const LOG_PAGE = 10_000;
const LOG_PAGES = 20;

export function runPage(root: HTMLElement, route: Route): () => void {
  const runId = route.parts[1];
  const abort = new AbortController();
  const live = new LiveClient();

  let run: RunDetails | null = null;
  let files: FileEntry[] = [];
  let loaded = false;
  let pending: LiveEvent[] = [];
  const metricCards = new Map<string, MetricCard>();
  const valueCards = new Map<string, ValueCard>();
  const logView = new LogView();

  const crumbs = h("div");
  const header = h("div", { class: "run-header" });
  const overview = h("div", { class: "run-overview" });
  const metricsGrid = h("div", { class: "chart-grid", dataset: { section: "metrics" } });
  const valuesGrid = h("div", { class: "chart-grid", dataset: { section: "values" } });
  const metricsEmpty = h("div", { class: "card empty small" }, "No metrics logged yet.");
  const status = h("div", { class: "run-message" });
  replaceChildren(
    root,
    crumbs,
    header,
    status,
    overview,
    h("h2", { class: "section-title" }, "Metrics"),
    metricsEmpty,
    metricsGrid,
    valuesGrid,
    logView.el,
  );
  replaceChildren(status, loading());

  const chartWidth = () => Math.max(240, Math.round((metricsGrid.clientWidth || root.clientWidth || 1200) / 2 - 40));

  // -- reading the run ---------------------------------------------------------------------
  const loadAll = async () => {
    loaded = false;
    try {
      run = await getJson<RunDetails>(`/runs/${enc(runId)}`, {}, abort.signal);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        replaceChildren(status, h("div", { class: "card empty" }, h("h2", null, "No such run yet"), h("p", null, `Run ${runId} is not known to this server. This page shows it as soon as it logs.`)));
        run = null;
        loaded = true;
        pending = [];
        return;
      }
      throw error;
    }
    const [values, logs, fileList] = await Promise.all([
      getJson<ValuesAnswer>(`/runs/${enc(runId)}/values`, {}, abort.signal),
      readLogs(),
      getJson<{ files: FileEntry[] }>(`/runs/${enc(runId)}/files`, {}, abort.signal).catch(() => ({ files: [] })),
    ]);
    files = fileList.files;
    const width = chartWidth();
    const series = await Promise.all(
      Object.keys(run.metrics)
        .sort()
        .map((name) =>
          getJson<SeriesAnswer>(`/runs/${enc(runId)}/metrics/${enc(name)}`, { max_points: width }, abort.signal),
        ),
    );
    replaceChildren(status);
    for (const answer of series) metricCard(answer.name).load(answer, answer.summary);
    for (const [name, list] of Object.entries(values.lists)) valueCard("list", name).setList(list);
    for (const [name, table] of Object.entries(values.tables)) valueCard("table", name).setColumns(table);
    for (const [name, table] of Object.entries(values.rows)) valueCard("row", name).setColumns(table);
    logView.reset(logs);
    loaded = true;
    const queued = pending;
    pending = [];
    apply(queued);
    renderRun();
  };

  const readLogs = async (): Promise<LogLine[]> => {
    const lines: LogLine[] = [];
    let after = -1;
    for (let page = 0; page < LOG_PAGES; page++) {
      const answer = await getJson<LogsAnswer>(`/runs/${enc(runId)}/logs`, { after_line: after, limit: LOG_PAGE }, abort.signal);
      lines.push(...answer.lines);
      if (answer.next_after_line === null) break;
      after = answer.next_after_line;
    }
    return lines;
  };

  const refine = (name: string) => (maxPoints: number, full: boolean) =>
    getJson<SeriesAnswer>(`/runs/${enc(runId)}/metrics/${enc(name)}`, full ? { full: true } : { max_points: maxPoints }, abort.signal);

  const metricCard = (name: string): MetricCard => {
    let card = metricCards.get(name);
    if (!card) {
      card = new MetricCard(name, colorOf(metricCards.size), refine(name));
      metricCards.set(name, card);
      const names = [...metricCards.keys()].sort();
      const next = metricCards.get(names[names.indexOf(name) + 1]);
      metricsGrid.insertBefore(card.el, next?.el ?? null);
      metricsEmpty.hidden = true;
    }
    return card;
  };

  const valueCard = (kind: "list" | "table" | "row", name: string): ValueCard => {
    const key = `${kind}:${name}`;
    let card = valueCards.get(key);
    if (!card) {
      card = new ValueCard(kind, name, colorOf(metricCards.size + valueCards.size + 3));
      valueCards.set(key, card);
      valuesGrid.appendChild(card.el);
      metricsEmpty.hidden = true;
    }
    return card;
  };

  // -- live --------------------------------------------------------------------------------
  const refreshRun = debounce(async () => {
    try {
      const fresh = await getJson<RunDetails>(`/runs/${enc(runId)}`, {}, abort.signal);
      if (run) fresh.status = mergeStatus(fresh.status, run.status) ?? fresh.status;
      run = fresh;
      renderRun();
    } catch {
      // the next change tries again
    }
  }, 600);

  const apply = (events: LiveEvent[]) => {
    if (!run) {
      if (events.length) void loadAll().catch(showError);
      return;
    }
    const touched = new Set<MetricCard>();
    const lines: LogLine[] = [];
    let runChanged = false;
    for (const event of events) {
      const p = event.payload as Record<string, any>;
      const type = event.type;
      if (type in STATUS_OF_EVENT) {
        const next = STATUS_OF_EVENT[type];
        run.status = mergeStatus(run.status, next) ?? run.status;
        const at = new Date(event.ts).toISOString();
        if (type === "run.queued") run.queued_at ??= at;
        if (type === "run.started") run.started_at ??= at;
        if (TERMINAL.has(next)) {
          run.ended_at ??= at;
          if (type === "run.failed" && p.error) run.error = p.error;
          refreshRun();
        }
        runChanged = true;
      } else if (type === "run.tags_set") {
        run.tags = { ...run.tags, ...(p.tags as Record<string, string>) };
        runChanged = true;
      } else if (type === "run.properties_set") {
        run.properties = { ...run.properties, ...(p.properties as Record<string, unknown>) };
        runChanged = true;
      } else if (type === "run.child_linked") {
        if (!run.children.some((c) => c.run_id === p.child_run_id)) {
          run.children.push({ run_id: p.child_run_id, name: p.name ?? null, status: null, experiment: null, compute: null, children: [] });
        }
        refreshRun();
        runChanged = true;
      } else if (type === "metrics.logged") {
        for (const point of p.points as { name: string; step: number; value: WireNumber }[]) {
          const card = metricCard(point.name);
          card.add(point.step, point.value);
          touched.add(card);
        }
      } else if (type === "list.logged") {
        valueCard("list", p.name).setList(p.values);
      } else if (type === "table.logged") {
        valueCard("table", p.name).setColumns(p.columns);
      } else if (type === "row.logged") {
        valueCard("row", p.name).setRow(p.index, p.row);
      } else if (type === "logs.appended") {
        lines.push(...(p.lines as LogLine[]));
      } else if (type === "file.uploaded") {
        files = [...files.filter((f) => f.path !== p.path), { path: p.path, kind: p.kind, size: p.size, sha256: p.sha256, content_type: p.content_type, uploaded_at: null }];
        runChanged = true;
      }
    }
    for (const card of touched) card.draw();
    if (lines.length) logView.add(lines);
    if (runChanged) renderRun();
  };

  live.subscribe(
    { run_id: runId },
    {
      subscribed(_frame, resumed) {
        if (!resumed) {
          pending = [];
          loadAll().catch(showError);
        }
      },
      events(events) {
        if (loaded) apply(events);
        else pending.push(...events);
      },
    },
    { max_rate: 30, types: LIVE_TYPES },
  );

  const showError = (error: unknown) => {
    if (!abort.signal.aborted) replaceChildren(status, errorBox(error));
  };

  // -- rendering the run's facts -----------------------------------------------------------
  const renderRun = () => {
    if (!run) return;
    const r = run;
    replaceChildren(
      crumbs,
      breadcrumbs(
        h("a", { href: "/experiments" }, "Experiments"),
        h("a", { href: paths.experiment(r.experiment) }, r.experiment),
        r.name || r.run_id,
      ),
    );
    const snapshot = files.find((f) => f.kind === "snapshot");
    replaceChildren(
      header,
      h(
        "div",
        { class: "run-title" },
        h("h1", null, r.name || r.run_id),
        statusBadge(r.status),
        h("span", { class: "run-id big", title: "run id" }, r.run_id),
      ),
      h("div", { class: "spacer" }),
      snapshot
        ? h(
            "button",
            {
              class: "button",
              title: `${snapshot.path}, ${(snapshot.size / 1024).toFixed(1)} KiB`,
              onclick: () => void download(`/runs/${enc(runId)}/snapshot`, "snapshot.zip").catch(showError),
            },
            "⤓ Snapshot",
          )
        : h("button", { class: "button", disabled: true, title: "this run uploaded no snapshot" }, "No snapshot"),
      h("a", { class: "button", href: paths.compare([r.run_id], Object.keys(r.metrics).slice(0, 4)) }, "Compare…"),
    );
    const started = parseTime(r.started_at);
    const ended = parseTime(r.ended_at);
    const duration = r.duration_ms ?? (started !== null ? (ended ?? Date.now()) - started : null);
    const fact = (label: string, value: Node | string | null) => h("div", { class: "fact" }, h("dt", null, label), h("dd", null, value ?? "—"));
    const outputs = files.filter((f) => f.kind === "output");
    replaceChildren(
      overview,
      h(
        "section",
        { class: "card facts" },
        h("div", { class: "card-head" }, h("h2", null, "Details")),
        h(
          "dl",
          null,
          fact("Experiment", h("a", { href: paths.experiment(r.experiment) }, r.experiment)),
          fact("Compute", r.compute ? h("a", { href: paths.compute(r.compute) }, r.compute) : null),
          fact("Parent", r.parent_run_id ? h("a", { href: paths.run(r.parent_run_id) }, r.parent_run_id) : null),
          fact("Created", formatTime(r.created_at)),
          fact("Queued", formatTime(r.queued_at)),
          fact("Started", formatTime(r.started_at)),
          fact("Ended", formatTime(r.ended_at)),
          fact("Duration", h("span", { class: "mono", dataset: !TERMINAL.has(r.status) && r.started_at ? { since: r.started_at } : {} }, formatDuration(duration))),
        ),
        r.error ? h("pre", { class: "run-error" }, r.error) : null,
      ),
      h(
        "section",
        { class: "card" },
        h("div", { class: "card-head" }, h("h2", null, "Tags")),
        Object.keys(r.tags).length
          ? h("div", { class: "kv" }, Object.entries(r.tags).map(([k, v]) => h("div", { class: "kv-row" }, h("span", { class: "k" }, k), h("span", { class: "v" }, v))))
          : h("div", { class: "muted small" }, "No tags."),
        h("div", { class: "card-head sub" }, h("h2", null, "Properties")),
        Object.keys(r.properties).length
          ? h(
              "div",
              { class: "kv" },
              Object.entries(r.properties).map(([k, v]) =>
                h("div", { class: "kv-row" }, h("span", { class: "k" }, k), h("span", { class: "v mono" }, typeof v === "string" ? v : JSON.stringify(v))),
              ),
            )
          : h("div", { class: "muted small" }, "No properties."),
      ),
      h(
        "section",
        { class: "card" },
        h("div", { class: "card-head" }, h("h2", null, "Child runs"), h("span", { class: "muted small" }, r.children.length ? String(countRuns(r.children)) : "")),
        r.children.length ? childTree(r.children) : h("div", { class: "muted small" }, "No child runs."),
        outputs.length ? h("div", { class: "card-head sub" }, h("h2", null, "Outputs")) : null,
        outputs.length
          ? h(
              "ul",
              { class: "files" },
              outputs.map((f) =>
                h(
                  "li",
                  null,
                  h("button", { class: "linkish", onclick: () => void download(`/runs/${enc(runId)}/files/${f.path.split("/").map(enc).join("/")}`, f.path).catch(showError) }, f.path),
                  h("span", { class: "muted small" }, ` ${(f.size / 1024).toFixed(1)} KiB`),
                ),
              ),
            )
          : null,
      ),
    );
  };

  const clock = window.setInterval(() => {
    const now = Date.now();
    for (const cell of overview.querySelectorAll<HTMLElement>("[data-since]")) {
      const t = parseTime(cell.dataset.since);
      if (t !== null) cell.textContent = formatDuration(now - t);
    }
  }, 1000);

  return () => {
    abort.abort();
    live.close();
    clearInterval(clock);
    for (const card of metricCards.values()) card.chart.destroy();
    for (const card of valueCards.values()) card.chart.destroy();
  };
}

function countRuns(children: ChildRun[]): number {
  return children.reduce((n, c) => n + 1 + countRuns(c.children), 0);
}

function childTree(children: ChildRun[]): HTMLElement {
  return h(
    "ul",
    { class: "child-tree" },
    children.map((c) =>
      h(
        "li",
        { dataset: { runId: c.run_id } },
        c.status ? statusBadge(c.status) : null,
        h("a", { href: paths.run(c.run_id) }, c.name || c.run_id),
        c.name ? h("span", { class: "run-id" }, c.run_id) : null,
        c.children.length ? childTree(c.children) : null,
      ),
    ),
  );
}
