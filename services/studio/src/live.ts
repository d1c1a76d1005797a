// The live client: one websocket per page, any number of subscriptions on it
// (services/runstream/gateway/PROTOCOL.md).
//
// Each subscription remembers the cursor of the last frame it received. When the
// socket drops, the client reconnects with exponential backoff and jitter and
// subscribes again with those cursors: the gateway sends exactly what was missed,
// so a page resumes without a gap or a duplicate and nothing on screen resets.
// A `resync` (the client fell behind) is handled the same way. When resuming is
// impossible (`cursor_unavailable`, or a resync before anything was received) the
// subscription starts afresh, and its `subscribed` handler is called with
// `resumed = false`: the page refetches its state.

import { liveUrl, WORKSPACE } from "./api";
import type { LiveEvent, RunChange } from "./types";

export type Cursor = number | Record<string, number>;
export type Target = { run_id: string } | { experiment: string } | { compute: string };

export interface SubscribedFrame {
  type: "subscribed";
  sub: string;
  kind: "run" | "experiment" | "compute";
  cursor: Cursor | null;
  snapshot: Record<string, unknown> | null;
  partition?: number;
  detail?: string;
}

export interface Handlers {
  /** The subscription (re)started. `resumed`: it continues after the last cursor, nothing was lost. */
  subscribed?(frame: SubscribedFrame, resumed: boolean): void;
  /** Run subscriptions: events in log order. */
  events?(events: LiveEvent[]): void;
  /** Experiment and compute subscriptions: the latest state of each changed run. */
  update?(runs: Record<string, RunChange>): void;
  error?(code: string, detail: string): void;
}

export interface SubscribeOptions {
  max_rate?: number;
  types?: string[];
  snapshot?: boolean;
}

export type LiveState = "connecting" | "live" | "reconnecting" | "closed";

export class Subscription {
  cursor: Cursor | null = null;
  active = true;
  received = 0;

  constructor(
    readonly client: LiveClient,
    readonly sub: string,
    readonly target: Target,
    readonly options: SubscribeOptions,
    readonly handlers: Handlers,
  ) {}

  close(): void {
    this.client.unsubscribe(this);
  }
}

const MAX_BACKOFF_MS = 8000;

export class LiveClient {
  private ws: WebSocket | null = null;
  private readonly subs = new Map<string, Subscription>();
  private counter = 0;
  private attempt = 0;
  private timer: number | null = null;
  private closed = false;
  state: LiveState = "connecting";
  reconnects = 0;
  readonly listeners = new Set<(state: LiveState) => void>();

  constructor(private readonly url: () => string = liveUrl) {
    LiveClient.current.add(this);
  }

  /** Every open client, for the connection indicator and for tests. */
  static readonly current = new Set<LiveClient>();

  subscribe(target: Target, handlers: Handlers, options: SubscribeOptions = {}): Subscription {
    const sub = new Subscription(this, `s${++this.counter}`, target, options, handlers);
    this.subs.set(sub.sub, sub);
    if (this.ws === null && this.timer === null) this.connect();
    else if (this.ws?.readyState === WebSocket.OPEN) this.sendSubscribe(sub);
    return sub;
  }

  unsubscribe(sub: Subscription): void {
    if (!this.subs.delete(sub.sub)) return;
    sub.active = false;
    if (this.ws?.readyState === WebSocket.OPEN) this.send({ op: "unsubscribe", sub: sub.sub });
  }

  close(): void {
    this.closed = true;
    for (const sub of this.subs.values()) sub.active = false;
    this.subs.clear();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.ws?.close(1000, "page closed");
    this.ws = null;
    this.setState("closed");
    LiveClient.current.delete(this);
  }

  /** Drop the socket as a network failure would (for tests and the "reconnect" action). */
  drop(): void {
    this.ws?.close(4001, "dropped by the client");
  }

  private setState(state: LiveState): void {
    if (this.state === state) return;
    this.state = state;
    for (const listener of this.listeners) listener(state);
  }

  private connect(): void {
    this.timer = null;
    if (this.closed) return;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.setState("live");
      for (const sub of this.subs.values()) this.sendSubscribe(sub);
    };
    ws.onmessage = (message) => {
      if (typeof message.data === "string") this.receive(JSON.parse(message.data));
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      this.setState("reconnecting");
      const delay = Math.min(MAX_BACKOFF_MS, 200 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt += 1;
      this.reconnects += 1;
      this.timer = window.setTimeout(() => this.connect(), delay);
    };
  }

  private send(message: Record<string, unknown>): void {
    this.ws?.send(JSON.stringify(message));
  }

  private sendSubscribe(sub: Subscription): void {
    const message: Record<string, unknown> = { op: "subscribe", sub: sub.sub, workspace: WORKSPACE, ...sub.target };
    if (sub.options.max_rate) message.max_rate = sub.options.max_rate;
    if (sub.options.types) message.types = sub.options.types;
    if (sub.cursor !== null) message.cursor = sub.cursor;
    else if (sub.options.snapshot === false) message.snapshot = false;
    this.send(message);
  }

  private restart(sub: Subscription, cursor: Cursor | null): void {
    sub.cursor = cursor;
    if (this.ws?.readyState === WebSocket.OPEN) this.sendSubscribe(sub);
  }

  private receive(frame: Record<string, any>): void {
    if (frame.type === "heartbeat") {
      this.send({ op: "pong" });
      return;
    }
    const sub = typeof frame.sub === "string" ? this.subs.get(frame.sub) : undefined;
    if (sub === undefined) return;
    switch (frame.type) {
      case "subscribed": {
        const resumed = sub.cursor !== null;
        if (!resumed || frame.cursor !== null) sub.cursor = frame.cursor ?? sub.cursor;
        sub.handlers.subscribed?.(frame as SubscribedFrame, resumed);
        break;
      }
      case "event":
        sub.cursor = frame.cursor;
        sub.received += 1;
        sub.handlers.events?.([frame.event as LiveEvent]);
        break;
      case "events":
        sub.cursor = frame.cursor;
        sub.received += frame.events.length;
        sub.handlers.events?.(frame.events as LiveEvent[]);
        break;
      case "update":
        sub.cursor = frame.cursor;
        sub.received += 1;
        sub.handlers.update?.(frame.runs as Record<string, RunChange>);
        break;
      case "resync":
        // Everything up to frame.cursor was received: continue from there (or afresh).
        this.restart(sub, frame.cursor ?? null);
        break;
      case "error":
        sub.handlers.error?.(frame.code, frame.detail);
        if (frame.code === "cursor_unavailable") this.restart(sub, null);
        else if (frame.code === "unavailable") {
          window.setTimeout(() => sub.active && this.restart(sub, sub.cursor), 2000);
        }
        break;
      default:
        break;
    }
  }
}
