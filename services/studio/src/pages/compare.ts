// `/compare?runs=a,b&metrics=loss,acc`: several runs on one chart per metric, and
// their last/min/max side by side. Charts extend live while the runs log.

import uPlot from "uplot";
import { enc, getJson } from "../api";
import { LineChart } from "../chart";
import { h, replaceChildren } from "../dom";
import { formatValue, fromWire, mergeStatus, plottable, STATUS_OF_EVENT, type WireNumber } from "../format";
import { LiveClient } from "../live";
import { navigate, paths, type Route } from "../router";
import { colorOf } from "../run-charts";
import { StepSeries } from "../series";
import type { CompareAnswer, LiveEvent, RunDetails } from "../types";
import { breadcrumbs, errorBox, loading, pageHeader, runLabel, statusBadge } from "../ui";

interface Stat {
  last: number | null;
  lastStep: number;
  min: number | null;
  max: number | null;
}

export function comparePage(root: HTMLElement, route: Route): () => void {
  const runIds = [...new Set((route.query.get("runs") ?? "").split(",").filter(Boolean))];
  const asked = (route.query.get("metrics") ?? "").split(",").filter(Boolean);
  const abort = new AbortController();
  const live = new LiveClient();
  const charts = new Map<string, LineChart>();
  const series = new Map<string, StepSeries>(); // `${run}\u0000${metric}`
  const stats = new Map<string, Stat>();
  const details = new Map<string, RunDetails>();
  let metrics: string[] = [];

  const toolbar = h("div", { class: "compare-toolbar" });
  const grid = h("div", { class: "chart-grid" });
  const table = h("div", { class: "card table-card" });
  const message = h("div");
  replaceChildren(
    root,
    breadcrumbs(h("a", { href: "/experiments" }, "Experiments"), "Compare"),
    pageHeader("Compare runs", h("span", { class: "subtitle" }, `${runIds.length} run${runIds.length === 1 ? "" : "s"}`)),
    toolbar,
    message,
    grid,
    h("h2", { class: "section-title" }, "Summaries"),
    table,
  );
  if (!runIds.length) {
    replaceChildren(message, h("div", { class: "card empty" }, "Select runs in an experiment's runs table, then Compare."));
    return () => undefined;
  }
  replaceChildren(message, loading());

  const key = (run: string, metric: string) => `${run}\u0000${metric}`;
  const color = (run: string) => colorOf(runIds.indexOf(run));
  const label = (run: string) => details.get(run)?.name || run;

  const load = async () => {
    const found = await Promise.all(runIds.map((id) => getJson<RunDetails>(`/runs/${enc(id)}`, {}, abort.signal).catch(() => null)));
    found.forEach((d) => d && details.set(d.run_id, d));
    const all = [...new Set(found.flatMap((d) => Object.keys(d?.metrics ?? {})))].sort();
    metrics = asked.length ? asked.filter((m) => all.includes(m)) : all.slice(0, 4);
    renderToolbar(all);
    if (!metrics.length) {
      replaceChildren(message, h("div", { class: "card empty" }, "These runs logged no metrics in common with the selection."));
      renderTable();
      return;
    }
    const width = Math.max(240, Math.round((grid.clientWidth || 1200) / 2 - 40));
    const answer = await getJson<CompareAnswer>(
      "/compare",
      { runs: runIds.filter((id) => details.has(id)).join(","), metrics: metrics.join(","), max_points: width },
      abort.signal,
    );
    replaceChildren(message);
    series.clear();
    stats.clear();
    for (const run of answer.runs) {
      for (const [metric, data] of Object.entries(run.metrics)) {
        series.set(key(run.run_id, metric), StepSeries.from(data));
        stats.set(key(run.run_id, metric), {
          last: fromWire(data.summary.last),
          lastStep: data.summary.last_step,
          min: fromWire(data.summary.min),
          max: fromWire(data.summary.max),
        });
      }
    }
    for (const chart of charts.values()) chart.destroy();
    charts.clear();
    replaceChildren(grid);
    for (const metric of metrics) {
      const chart = new LineChart({
        key: `compare:${metric}`,
        xLabel: "step",
        lines: runIds.map((id) => ({ label: label(id), color: color(id) })),
        height: 240,
      });
      charts.set(metric, chart);
      grid.appendChild(
        h("section", { class: "card chart-card", dataset: { metric } }, h("div", { class: "card-head" }, h("h3", null, metric)), chart.el),
      );
      draw(metric);
    }
    renderTable();
  };

  const draw = (metric: string) => {
    const chart = charts.get(metric);
    if (!chart) return;
    const tables = runIds.map((id) => {
      const s = series.get(key(id, metric));
      return [s?.steps ?? [], s?.value ?? []] as unknown as uPlot.AlignedData;
    });
    const joined = uPlot.join(tables);
    chart.setData(joined[0] as number[], joined.slice(1) as (number | null)[][]);
  };

  const renderToolbar = (all: string[]) => {
    replaceChildren(
      toolbar,
      h(
        "div",
        { class: "chips" },
        h("span", { class: "muted small" }, "Runs"),
        runIds.map((id) =>
          h(
            "span",
            { class: "chip", style: `--chip:${color(id)}` },
            h("i"),
            h("a", { href: paths.run(id) }, label(id)),
            runIds.length > 1
              ? h("button", { class: "remove", title: "remove from the comparison", onclick: () => navigate(paths.compare(runIds.filter((r) => r !== id), metrics)) }, "×")
              : null,
          ),
        ),
      ),
      h(
        "div",
        { class: "chips" },
        h("span", { class: "muted small" }, "Metrics"),
        all.map((m) =>
          h(
            "label",
            { class: `chip toggle${metrics.includes(m) ? " on" : ""}` },
            h("input", {
              type: "checkbox",
              checked: metrics.includes(m),
              onchange: () => {
                const next = metrics.includes(m) ? metrics.filter((x) => x !== m) : [...metrics, m].sort();
                navigate(paths.compare(runIds, next), true);
              },
            }),
            m,
          ),
        ),
      ),
    );
  };

  const renderTable = () => {
    const cell = (v: number | null) => h("td", { class: "num mono" }, formatValue(v as WireNumber));
    replaceChildren(
      table,
      h(
        "table",
        { class: "grid compare-table" },
        h(
          "thead",
          null,
          h("tr", null, h("th", { rowspan: 2 }, "Run"), h("th", { rowspan: 2 }, "Status"), metrics.map((m) => h("th", { colspan: 3, class: "group" }, m))),
          h("tr", null, metrics.map(() => ["last", "min", "max"].map((a) => h("th", { class: "num sub" }, a)))),
        ),
        h(
          "tbody",
          null,
          runIds.map((id) => {
            const d = details.get(id);
            return h(
              "tr",
              { dataset: { runId: id } },
              h("td", null, h("span", { class: "swatch", style: `background:${color(id)}` }), h("a", { href: paths.run(id) }, runLabel({ run_id: id, name: d?.name }))),
              h("td", null, d ? statusBadge(d.status) : "not found"),
              metrics.map((m) => {
                const s = stats.get(key(id, m));
                return [cell(s?.last ?? null), cell(s?.min ?? null), cell(s?.max ?? null)];
              }),
            );
          }),
        ),
      ),
    );
  };

  let tableFrame: number | null = null;
  const applyEvents = (id: string, events: LiveEvent[]) => {
    const touched = new Set<string>();
    for (const event of events) {
      if (event.type in STATUS_OF_EVENT) {
        const d = details.get(id);
        if (d) d.status = mergeStatus(d.status, STATUS_OF_EVENT[event.type]) ?? d.status;
        continue;
      }
      if (event.type !== "metrics.logged") continue;
      for (const p of event.payload.points as { name: string; step: number; value: WireNumber }[]) {
        if (!metrics.includes(p.name)) continue;
        const k = key(id, p.name);
        const s = series.get(k) ?? new StepSeries();
        series.set(k, s);
        s.upsert(p.step, plottable(p.value));
        const st = stats.get(k) ?? { last: null, lastStep: -1, min: null, max: null };
        const v = fromWire(p.value);
        if (p.step >= st.lastStep) Object.assign(st, { last: v, lastStep: p.step });
        if (v !== null && !Number.isNaN(v)) {
          st.min = st.min === null ? v : Math.min(st.min, v);
          st.max = st.max === null ? v : Math.max(st.max, v);
        }
        stats.set(k, st);
        touched.add(p.name);
      }
    }
    touched.forEach(draw);
    if (tableFrame === null) tableFrame = requestAnimationFrame(() => ((tableFrame = null), renderTable()));
  };

  // Subscribe first: each snapshot fixes a cursor; the read that follows holds at least
  // everything up to it, and the events after it are applied on top (by step: no duplicate).
  let loaded = false;
  let waiting = runIds.length;
  let buffered: [string, LiveEvent[]][] = [];
  const start = () => {
    loaded = false;
    load()
      .then(() => {
        loaded = true;
        const queued = buffered;
        buffered = [];
        for (const [id, events] of queued) applyEvents(id, events);
      })
      .catch((error) => abort.signal.aborted || replaceChildren(message, errorBox(error)));
  };
  for (const id of runIds) {
    live.subscribe(
      { run_id: id },
      {
        subscribed(_frame, resumed) {
          if (resumed) return;
          if (waiting > 0) {
            waiting -= 1;
            if (waiting === 0) start();
          } else {
            start();
          }
        },
        events(events) {
          if (loaded) applyEvents(id, events);
          else buffered.push([id, events]);
        },
      },
      { max_rate: 10, types: ["metrics.logged", "run.*"] },
    );
  }

  return () => {
    abort.abort();
    live.close();
    for (const chart of charts.values()) chart.destroy();
    if (tableFrame !== null) cancelAnimationFrame(tableFrame);
  };
}
