// A metric series held in the browser: step-ordered, downsampled from the server,
// extended by live points.
//
// `value` is what the line draws: a point's value, or a bucket's last value at its
// last step. `lo` and `hi` are a bucket's min and max (the value itself for a
// point), shaded as a band so a spike survives downsampling. A step received again
// replaces the earlier value, as the projection does, which makes replays harmless.

import { plottable } from "./format";
import type { SeriesData } from "./types";

const COMPACT_ABOVE = 120_000;

export class StepSeries {
  steps: number[] = [];
  value: (number | null)[] = [];
  lo: (number | null)[] = [];
  hi: (number | null)[] = [];
  downsampled = false;
  /** Steps up to this one came from the server in buckets (coarser than single points). */
  bucketedUpTo = -1;

  static from(data: SeriesData): StepSeries {
    const series = new StepSeries();
    series.load(data);
    return series;
  }

  /** Replace everything up to the server's last step with the server's answer; keep later live points. */
  load(data: SeriesData): void {
    const steps: number[] = [];
    const value: (number | null)[] = [];
    const lo: (number | null)[] = [];
    const hi: (number | null)[] = [];
    if (data.buckets) {
      for (const b of data.buckets) {
        steps.push(b.step_max);
        value.push(plottable(b.last));
        lo.push(plottable(b.min));
        hi.push(plottable(b.max));
      }
    }
    for (const p of data.points ?? []) {
      const v = plottable(p.value);
      steps.push(p.step);
      value.push(v);
      lo.push(v);
      hi.push(v);
    }
    const last = steps.length ? steps[steps.length - 1] : -1;
    const keep = this.steps.findIndex((s) => s > last);
    if (keep >= 0) {
      steps.push(...this.steps.slice(keep));
      value.push(...this.value.slice(keep));
      lo.push(...this.lo.slice(keep));
      hi.push(...this.hi.slice(keep));
    }
    this.steps = steps;
    this.value = value;
    this.lo = lo;
    this.hi = hi;
    this.downsampled = Boolean(data.downsampled);
    this.bucketedUpTo = data.downsampled ? last : -1;
  }

  get length(): number {
    return this.steps.length;
  }

  /** Add or replace one point; returns true when something changed. */
  upsert(step: number, raw: number | null): boolean {
    const n = this.steps.length;
    if (n === 0 || step > this.steps[n - 1]) {
      this.steps.push(step);
      this.value.push(raw);
      this.lo.push(raw);
      this.hi.push(raw);
      if (this.steps.length > COMPACT_ABOVE) this.compact(COMPACT_ABOVE / 2);
      return true;
    }
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.steps[mid] < step) lo = mid + 1;
      else hi = mid;
    }
    if (step <= this.bucketedUpTo) return false; // inside a bucket: a refetch shows it
    if (this.steps[lo] === step) {
      this.value[lo] = raw;
      this.lo[lo] = raw;
      this.hi[lo] = raw;
    } else {
      this.steps.splice(lo, 0, step);
      this.value.splice(lo, 0, raw);
      this.lo.splice(lo, 0, raw);
      this.hi.splice(lo, 0, raw);
    }
    return true;
  }

  /** Merge neighbours into about `target` buckets (keeping min, max and last), for very long live series. */
  compact(target: number): void {
    const width = Math.ceil(this.steps.length / target);
    const steps: number[] = [];
    const value: (number | null)[] = [];
    const lo: (number | null)[] = [];
    const hi: (number | null)[] = [];
    for (let i = 0; i < this.steps.length; i += width) {
      const end = Math.min(i + width, this.steps.length);
      let min: number | null = null;
      let max: number | null = null;
      for (let j = i; j < end; j++) {
        const l = this.lo[j];
        const u = this.hi[j];
        if (l !== null && (min === null || l < min)) min = l;
        if (u !== null && (max === null || u > max)) max = u;
      }
      steps.push(this.steps[end - 1]);
      value.push(this.value[end - 1]);
      lo.push(min);
      hi.push(max);
    }
    this.bucketedUpTo = steps[steps.length - 1];
    this.downsampled = true;
    this.steps = steps;
    this.value = value;
    this.lo = lo;
    this.hi = hi;
  }
}
