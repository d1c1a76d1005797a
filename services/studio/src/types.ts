// The JSON shapes of the query API (services/runstream/query) and the live protocol
// (services/runstream/gateway/PROTOCOL.md) that the studio reads.

import type { WireNumber } from "./format";

export interface Experiment {
  experiment: string;
  runs: number;
  active_runs: number;
  queued_runs: number;
  last_activity: string | null;
}

export interface RunState {
  run_id: string;
  workspace: string;
  experiment: string;
  name: string | null;
  status: string;
  compute: string | null;
  parent_run_id: string | null;
  created_at: string | null;
  queued_at: string | null;
  started_at: string | null;
  ended_at: string | null;
  duration_ms: number | null;
  error: string | null;
  last_event_at: string | null;
  tags: Record<string, string>;
  properties: Record<string, unknown>;
}

export interface Summary {
  last: WireNumber;
  min: WireNumber;
  max: WireNumber;
  count: number;
  first_step: number;
  last_step: number;
  last_ts: string | null;
}

export interface ChildRun {
  run_id: string;
  name: string | null;
  status: string | null;
  experiment: string | null;
  compute: string | null;
  children: ChildRun[];
}

export interface RunDetails extends RunState {
  metrics: Record<string, Summary>;
  children: ChildRun[];
  children_truncated: boolean;
}

export interface RunsRow extends RunState {
  columns: Record<string, WireNumber>;
}

export interface RunsPage {
  experiment: string;
  runs: RunsRow[];
  next_cursor: string | null;
}

export interface Point {
  step: number;
  value: WireNumber;
  ts?: string | null;
}

export interface Bucket {
  step_min: number;
  step_max: number;
  min: WireNumber;
  max: WireNumber;
  last: WireNumber;
  count: number;
}

export interface SeriesData {
  downsampled: boolean;
  bucket_width: number | null;
  points?: Point[];
  buckets?: Bucket[];
}

export interface SeriesAnswer extends SeriesData {
  run_id: string;
  name: string;
  summary: Summary;
  max_points: number;
}

export interface CompareAnswer {
  max_points: number;
  metrics: string[];
  runs: {
    run_id: string;
    experiment: string;
    name: string | null;
    status: string | null;
    metrics: Record<string, SeriesData & { summary: Summary }>;
  }[];
}

export interface ValuesAnswer {
  run_id: string;
  lists: Record<string, WireNumber[]>;
  tables: Record<string, Record<string, WireNumber[]>>;
  rows: Record<string, Record<string, WireNumber[]>>;
}

export interface LogLine {
  stream: "stdout" | "stderr";
  line_no: number;
  text: string;
  ts?: string | number | null;
}

export interface LogsAnswer {
  run_id: string;
  lines: LogLine[];
  next_after_line: number | null;
}

export interface ComputeRun {
  run_id: string;
  experiment: string;
  name: string | null;
  status: string;
  parent_run_id: string | null;
  created_at: string | null;
  queued_at: string | null;
  started_at: string | null;
  children: ComputeRun[];
}

export interface ComputeTarget {
  name: string;
  runs_total: number;
  last_activity: string | null;
  queued: number;
  running: number;
  runs: ComputeRun[];
}

export interface FileEntry {
  path: string;
  kind: string;
  size: number;
  sha256: string;
  content_type: string;
  uploaded_at: string | null;
}

/** An event as it is on the log (schemas/events/v1/envelope.json). */
export interface LiveEvent {
  event_id: string;
  type: string;
  seq: number;
  ts: number;
  run_id: string;
  experiment: string;
  workspace: string;
  payload: Record<string, unknown>;
}

export interface LivePoint {
  step: number;
  value: WireNumber;
  ts: number;
  seq: number;
  index: number;
}

export interface RunChange {
  status?: string;
  seq?: number;
  ts?: number;
  name?: string;
  compute?: string;
  parent_run_id?: string;
  experiment?: string;
  active?: boolean;
  metrics?: Record<string, LivePoint>;
}
