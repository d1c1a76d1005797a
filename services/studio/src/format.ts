// Formatting of numbers, times, durations and statuses, and the wire encoding of non-finite values.

export type WireNumber = number | "NaN" | "Infinity" | "-Infinity" | null;

/** A metric value from the wire as a number (non-finite strings become NaN / ±Infinity). */
export function fromWire(value: WireNumber | undefined): number | null {
  if (value === null || value === undefined) return null;
  if (typeof value === "number") return value;
  if (value === "NaN") return Number.NaN;
  if (value === "Infinity") return Number.POSITIVE_INFINITY;
  if (value === "-Infinity") return Number.NEGATIVE_INFINITY;
  return null;
}

/** A value a chart can draw: non-finite values leave a gap. */
export function plottable(value: WireNumber | undefined): number | null {
  const n = fromWire(value);
  return n === null || !Number.isFinite(n) ? null : n;
}

export function formatValue(value: WireNumber | undefined): string {
  const n = fromWire(value);
  if (n === null) return "—";
  if (Number.isNaN(n)) return "NaN";
  if (!Number.isFinite(n)) return n > 0 ? "∞" : "−∞";
  if (Number.isInteger(n) && Math.abs(n) < 1e12) return n.toLocaleString("en-US");
  const abs = Math.abs(n);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e7)) return n.toExponential(3);
  return Number(n.toPrecision(5)).toString();
}

export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return "—";
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

export function parseTime(iso: string | null | undefined): number | null {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

/** "2025-11-28 14:03:12" in the browser's time zone. */
export function formatTime(iso: string | null | undefined): string {
  const t = parseTime(iso);
  if (t === null) return "—";
  const d = new Date(t);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** "Nov 28 14:03" (with the year when it is not this year's). */
export function formatShortTime(iso: string | null | undefined): string {
  const t = parseTime(iso);
  if (t === null) return "—";
  const d = new Date(t);
  const p = (n: number) => String(n).padStart(2, "0");
  const year = d.getFullYear() === new Date().getFullYear() ? "" : ` ${d.getFullYear()}`;
  return `${MONTHS[d.getMonth()]} ${d.getDate()}${year} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

export function formatAgo(iso: string | null | undefined, now = Date.now()): string {
  const t = parseTime(iso);
  if (t === null) return "—";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export const STATUS_RANK: Record<string, number> = {
  created: 0,
  queued: 1,
  running: 2,
  completed: 3,
  failed: 3,
  canceled: 3,
};

export const TERMINAL = new Set(["completed", "failed", "canceled"]);

export const STATUS_OF_EVENT: Record<string, string> = {
  "run.created": "created",
  "run.queued": "queued",
  "run.started": "running",
  "run.completed": "completed",
  "run.failed": "failed",
  "run.canceled": "canceled",
};

/** The protocol's merge rule: the status of highest rank wins (PROTOCOL.md, Snapshots). */
export function mergeStatus(current: string | null | undefined, next: string | null | undefined): string | null {
  if (!next) return current ?? null;
  if (!current) return next;
  return (STATUS_RANK[next] ?? -1) >= (STATUS_RANK[current] ?? -1) ? next : current;
}

export const PALETTE = [
  "#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed",
  "#0891b2", "#db2777", "#65a30d", "#ea580c", "#4f46e5",
];
