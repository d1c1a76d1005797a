// The charts of a run page: one card per metric, drawn by how it was logged.
//
// - `log` series: a line over step (downsampled on the server to the chart's width,
//   with the min/max of each bucket shaded; zooming in reads it again, finer);
// - `log_list`: a line over index;
// - `log_row` rows and `log_table` tables: a line of one column against another
//   (the user picks x and y).

import { LineChart } from "./chart";
import { h, replaceChildren } from "./dom";
import { formatValue, fromWire, PALETTE, plottable, type WireNumber } from "./format";
import { StepSeries } from "./series";
import type { SeriesData, Summary } from "./types";

export interface Refiner {
  (maxPoints: number, full: boolean): Promise<SeriesData>;
}

const FULL_LIMIT = 100_000;
const MAX_POINTS = 10_000;

export class MetricCard {
  readonly el: HTMLElement;
  readonly chart: LineChart;
  readonly series = new StepSeries();
  private readonly stats: HTMLElement;
  summary: { last: number | null; lastStep: number; min: number | null; max: number | null; count: number };

  constructor(
    readonly name: string,
    color: string,
    private readonly refine: Refiner,
  ) {
    this.summary = { last: null, lastStep: -1, min: null, max: null, count: 0 };
    this.chart = new LineChart({
      key: `metric:${name}`,
      xLabel: "step",
      lines: [
        { label: name, color },
        { label: "bucket max", color, band: true },
        { label: "bucket min", color, band: true },
      ],
      bands: [[1, 2]],
      onZoom: (range) => void this.zoomed(range),
    });
    this.chart.el.classList.add("banded");
    this.stats = h("div", { class: "stats" });
    this.el = h(
      "section",
      { class: "card chart-card", dataset: { metric: name, kind: "series" } },
      h("div", { class: "card-head" }, h("h3", null, name), h("div", { class: "spacer" }), this.stats),
      this.chart.el,
    );
  }

  load(data: SeriesData, summary: Summary | null): void {
    this.series.load(data);
    if (summary) {
      this.summary = {
        last: fromWire(summary.last),
        lastStep: summary.last_step,
        min: fromWire(summary.min),
        max: fromWire(summary.max),
        count: summary.count,
      };
    }
    this.draw();
  }

  /** A live point. */
  add(step: number, value: WireNumber): void {
    const v = fromWire(value);
    const isNew = step > this.summary.lastStep;
    if (this.series.upsert(step, plottable(value)) && isNew) this.summary.count += 1;
    if (step >= this.summary.lastStep) {
      this.summary.last = v;
      this.summary.lastStep = step;
    }
    if (v !== null && !Number.isNaN(v)) {
      if (this.summary.min === null || v < this.summary.min) this.summary.min = v;
      if (this.summary.max === null || v > this.summary.max) this.summary.max = v;
    }
  }

  draw(): void {
    const s = this.series;
    this.chart.setData(s.steps, [s.value, s.hi, s.lo]);
    const { last, min, max, count } = this.summary;
    replaceChildren(
      this.stats,
      h("span", null, "last ", h("b", null, formatValue(last))),
      h("span", null, "min ", h("b", null, formatValue(min))),
      h("span", null, "max ", h("b", null, formatValue(max))),
      h("span", { class: "muted" }, `${count.toLocaleString("en-US")} pts`),
    );
  }

  private async zoomed(range: { min: number; max: number } | null): Promise<void> {
    if (range === null || !this.series.downsampled) return;
    const first = this.series.steps[0] ?? 0;
    const last = this.series.steps[this.series.length - 1] ?? 0;
    const wanted = Math.ceil((this.chart.width * (last - first + 1)) / Math.max(1, range.max - range.min));
    const full = wanted > MAX_POINTS && this.summary.count <= FULL_LIMIT;
    const data = await this.refine(Math.min(MAX_POINTS, Math.max(wanted, 1)), full);
    this.series.load(data);
    this.draw();
  }
}

export type Columns = Record<string, WireNumber[] | (WireNumber | null)[]>;

/** A list, or a table of columns (from log_table or log_row): a line of y against x. */
export class ValueCard {
  readonly el: HTMLElement;
  readonly chart: LineChart;
  private columns: Columns = {};
  private readonly xSelect: HTMLSelectElement;
  private readonly ySelect: HTMLSelectElement;
  private readonly info: HTMLElement;

  constructor(
    readonly kind: "list" | "table" | "row",
    readonly name: string,
    readonly color: string,
  ) {
    this.chart = new LineChart({ key: `${kind}:${name}`, xLabel: "x", lines: [{ label: "y", color }], legend: true });
    this.xSelect = h("select", { class: "input small", "aria-label": `x of ${name}`, onchange: () => this.draw() });
    this.ySelect = h("select", { class: "input small", "aria-label": `y of ${name}`, onchange: () => this.draw() });
    this.info = h("span", { class: "muted small" });
    const picks =
      kind === "list"
        ? [this.info]
        : [h("label", { class: "axis-pick" }, "x ", this.xSelect), h("label", { class: "axis-pick" }, "y ", this.ySelect), this.info];
    const label = { list: "list", table: "table", row: "rows" }[kind];
    this.el = h(
      "section",
      { class: "card chart-card", dataset: { metric: name, kind } },
      h("div", { class: "card-head" }, h("h3", null, name), h("span", { class: "kind" }, label), h("div", { class: "spacer" }), ...picks),
      this.chart.el,
    );
  }

  setList(values: WireNumber[]): void {
    this.columns = { value: values };
    this.draw();
  }

  setColumns(columns: Columns): void {
    const before = Object.keys(this.columns).join(",");
    this.columns = columns;
    const names = Object.keys(columns);
    if (names.join(",") !== before) {
      const x = this.xSelect.value;
      const y = this.ySelect.value;
      replaceChildren(this.xSelect, h("option", { value: "" }, "(index)"), names.map((n) => h("option", { value: n }, n)));
      replaceChildren(this.ySelect, names.map((n) => h("option", { value: n }, n)));
      this.xSelect.value = names.includes(x) ? x : names.length > 1 ? names[0] : "";
      this.ySelect.value = names.includes(y) ? y : (names.find((n) => n !== this.xSelect.value) ?? names[0] ?? "");
    }
    this.draw();
  }

  /** One more row (log_row): cells by column, at row `index`. */
  setRow(index: number, row: Record<string, WireNumber>): void {
    const columns = { ...this.columns } as Record<string, (WireNumber | null)[]>;
    const length = Math.max(index + 1, ...Object.values(columns).map((c) => c.length), 0);
    for (const name of new Set([...Object.keys(columns), ...Object.keys(row)])) {
      const column = (columns[name] ?? []).slice();
      while (column.length < length) column.push(null);
      column[index] = name in row ? row[name] : (column[index] ?? null);
      columns[name] = column;
    }
    this.setColumns(columns);
  }

  private draw(): void {
    const yName = this.kind === "list" ? "value" : this.ySelect.value;
    const xName = this.kind === "list" ? "" : this.xSelect.value;
    const ys = (this.columns[yName] ?? []) as (WireNumber | null)[];
    const xs = xName ? ((this.columns[xName] ?? []) as (WireNumber | null)[]) : ys.map((_, i) => i);
    const pairs: [number, number | null][] = [];
    for (let i = 0; i < ys.length; i++) {
      const x = plottable(xs[i] as WireNumber);
      if (x !== null) pairs.push([x, plottable(ys[i] as WireNumber)]);
    }
    let sorted = true;
    for (let i = 1; i < pairs.length; i++) if (pairs[i][0] < pairs[i - 1][0]) sorted = false;
    if (!sorted) pairs.sort((a, b) => a[0] - b[0]);
    this.chart.relabel(xName || "index", [yName || "value"]);
    this.chart.setData(
      pairs.map((p) => p[0]),
      [pairs.map((p) => p[1])],
    );
    this.chart.el.dataset.x = xName || "index";
    this.chart.el.dataset.y = yName;
    this.info.textContent = `${ys.length.toLocaleString("en-US")} ${this.kind === "list" ? "values" : "rows"}`;
  }
}

export function colorOf(i: number): string {
  return PALETTE[i % PALETTE.length];
}
