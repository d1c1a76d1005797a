// Line charts on uPlot, redrawn at most 30 times a second however fast data arrives.
//
// Every chart registers itself under a key (`metric:loss`, `table:sine wave`, ...)
// in `window.__studio.charts`, and its element carries `data-points` (how many x
// values it draws), so tests and scripts can read what is on screen.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { h } from "./dom";
import { formatValue } from "./format";

export interface LineSpec {
  label: string;
  color: string;
  width?: number;
  /** Drawn as a band edge (min/max of downsampled buckets), not a line of its own. */
  band?: boolean;
}

export interface ChartOptions {
  key: string;
  xLabel: string;
  lines: LineSpec[];
  height?: number;
  /** Pairs of indexes into `lines` (upper, lower) to shade between. */
  bands?: [number, number][];
  /** Called (debounced) when the user zooms the x axis, and with null when the zoom is reset. */
  onZoom?: (range: { min: number; max: number } | null) => void;
  legend?: boolean;
}

export type Column = (number | null)[];

const FRAME_MS = 1000 / 30;
export const charts = new Map<string, LineChart>();

export class LineChart {
  readonly el: HTMLDivElement;
  private plot: uPlot | null = null;
  private x: number[] = [];
  private ys: Column[];
  private dirty = false;
  private frame: number | null = null;
  private lastDraw = 0;
  private zoomed = false;
  private zoomTimer: number | null = null;
  private resize: ResizeObserver;
  private destroyed = false;
  draws = 0;

  constructor(readonly options: ChartOptions) {
    this.ys = options.lines.map(() => []);
    this.el = h("div", { class: "chart", dataset: { chart: options.key, points: "0" } });
    charts.set(options.key, this);
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(this.el);
  }

  get width(): number {
    return Math.max(200, Math.floor(this.el.clientWidth || this.el.parentElement?.clientWidth || 600));
  }

  /** Replace the data (x ascending; one column per line). */
  setData(x: number[], ys: Column[]): void {
    this.x = x;
    this.ys = ys;
    this.invalidate();
  }

  /** The arrays were changed in place: draw them at the next frame. */
  invalidate(): void {
    this.dirty = true;
    if (this.frame === null && !this.destroyed) this.frame = requestAnimationFrame(() => this.tick());
  }

  /** New axis and line labels: the plot is built again at the next frame. */
  relabel(xLabel: string, labels: string[]): void {
    const lines = this.options.lines;
    if (this.options.xLabel === xLabel && labels.every((l, i) => lines[i]?.label === l)) return;
    this.options.xLabel = xLabel;
    labels.forEach((l, i) => lines[i] && (lines[i].label = l));
    this.plot?.destroy();
    this.plot = null;
    this.zoomed = false;
    this.invalidate();
  }

  data(): { x: number[]; series: Column[]; labels: string[] } {
    return { x: this.x, series: this.ys, labels: this.options.lines.map((l) => l.label) };
  }

  destroy(): void {
    this.destroyed = true;
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.resize.disconnect();
    this.plot?.destroy();
    this.plot = null;
    if (charts.get(this.options.key) === this) charts.delete(this.options.key);
  }

  private tick(): void {
    this.frame = null;
    if (!this.dirty || this.destroyed) return;
    const now = performance.now();
    if (now - this.lastDraw < FRAME_MS) {
      this.frame = requestAnimationFrame(() => this.tick());
      return;
    }
    this.lastDraw = now;
    this.dirty = false;
    this.draw();
  }

  private draw(): void {
    if (!this.el.isConnected) {
      this.dirty = true;
      return;
    }
    const data = [this.x, ...this.ys] as uPlot.AlignedData;
    if (this.plot === null) this.plot = this.create(data);
    else this.plot.setData(data, !this.zoomed);
    this.el.dataset.points = String(this.x.length);
    this.draws += 1;
  }

  private fit(): void {
    if (this.plot === null) {
      if (this.dirty || this.x.length) this.invalidate();
      return;
    }
    const width = this.width;
    if (Math.abs(width - this.plot.width) > 1) this.plot.setSize({ width, height: this.options.height ?? 220 });
  }

  private create(data: uPlot.AlignedData): uPlot {
    const options = this.options;
    const series: uPlot.Series[] = [
      { label: options.xLabel, value: (_u, v) => (v === null ? "—" : formatValue(v)) },
      ...options.lines.map(
        (line): uPlot.Series => ({
          label: line.label,
          stroke: line.band ? "transparent" : line.color,
          width: line.band ? 0 : (line.width ?? 1.5),
          spanGaps: true,
          points: { show: false },
          value: (_u, v) => (v === null ? "—" : formatValue(v)),
        }),
      ),
    ];
    const bands: uPlot.Band[] = (options.bands ?? []).map(([hi, lo]) => ({
      series: [hi + 1, lo + 1],
      fill: `${options.lines[hi].color}22`,
    }));
    const opts: uPlot.Options = {
      width: this.width,
      height: options.height ?? 220,
      series,
      bands,
      legend: { show: options.legend ?? true, live: true },
      scales: { x: { time: false } },
      cursor: { drag: { x: true, y: false, setScale: true } },
      axes: [
        { stroke: "#64748b", grid: { stroke: "#eef2f7" }, ticks: { stroke: "#e2e8f0" } },
        {
          stroke: "#64748b",
          grid: { stroke: "#eef2f7" },
          ticks: { stroke: "#e2e8f0" },
          size: 56,
          values: (_u, splits) => splits.map((v) => formatValue(v)),
        },
      ],
      hooks: {
        setScale: [(u, key) => key === "x" && this.scaleChanged(u)],
      },
    };
    return new uPlot(opts, data, this.el);
  }

  private scaleChanged(u: uPlot): void {
    const min = u.scales.x.min;
    const max = u.scales.x.max;
    if (min === undefined || max === undefined || this.x.length < 2) return;
    const full = this.x[this.x.length - 1] - this.x[0];
    const zoomed = full > 0 && max - min < full * 0.98;
    if (zoomed === this.zoomed && !zoomed) return;
    this.zoomed = zoomed;
    if (!this.options.onZoom) return;
    if (this.zoomTimer !== null) clearTimeout(this.zoomTimer);
    this.zoomTimer = window.setTimeout(() => {
      this.zoomTimer = null;
      this.options.onZoom?.(zoomed ? { min, max } : null);
    }, 150);
  }
}

/** For tests and the console: `window.__studio.chartData("metric:loss")`. */
export function chartData(key: string): ReturnType<LineChart["data"]> | null {
  return charts.get(key)?.data() ?? null;
}
