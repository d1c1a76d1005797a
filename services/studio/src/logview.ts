// A log viewer that follows a run's stdout and stderr as lines arrive.
//
// Lines are kept in arrival order (the API's order for what was read, then the live
// order), once each: a line is (stream, line_no), so a line seen both in the API's
// answer and on the live stream is shown once. The newest MAX_DOM lines are in the
// DOM; "follow" keeps the view at the bottom until the user scrolls up.

import { h, replaceChildren } from "./dom";
import type { LogLine } from "./types";

const MAX_DOM = 5000;

export class LogView {
  readonly el: HTMLElement;
  private readonly body: HTMLElement;
  private readonly info: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly follow: HTMLInputElement;
  private readonly filter: HTMLSelectElement;
  private readonly seen = new Set<string>();
  private lines: LogLine[] = [];
  private pending: LogLine[] = [];
  private frame: number | null = null;
  private shown = 0;

  constructor() {
    this.follow = h("input", { type: "checkbox", checked: true, "aria-label": "follow" });
    this.filter = h(
      "select",
      { class: "input small", "aria-label": "stream", onchange: () => this.rerender() },
      h("option", { value: "" }, "stdout + stderr"),
      h("option", { value: "stdout" }, "stdout"),
      h("option", { value: "stderr" }, "stderr"),
    );
    this.info = h("span", { class: "muted small" });
    this.body = h("div", { class: "log-body", onscroll: () => this.scrolled(), dataset: { lines: "0" } });
    this.empty = h("div", { class: "log-empty" }, "Waiting for output…");
    this.el = h(
      "section",
      { class: "card log-card" },
      h(
        "div",
        { class: "card-head" },
        h("h2", null, "Output"),
        this.info,
        h("div", { class: "spacer" }),
        this.filter,
        h("label", { class: "check" }, this.follow, "Follow"),
      ),
      this.empty,
      this.body,
    );
    this.showInfo();
  }

  /** Replace everything (a fresh read of the log). */
  reset(lines: LogLine[]): void {
    this.seen.clear();
    this.lines = [];
    this.pending = [];
    this.add(lines);
    this.rerender();
  }

  add(lines: LogLine[]): void {
    for (const line of lines) {
      const key = `${line.stream}:${line.line_no}`;
      if (this.seen.has(key)) continue;
      this.seen.add(key);
      this.lines.push(line);
      this.pending.push(line);
    }
    if (this.pending.length && this.frame === null) this.frame = requestAnimationFrame(() => this.flush());
  }

  get count(): number {
    return this.lines.length;
  }

  private visible(line: LogLine): boolean {
    return !this.filter.value || line.stream === this.filter.value;
  }

  private row(line: LogLine): HTMLElement {
    return h(
      "div",
      { class: `log-line ${line.stream}`, dataset: { stream: line.stream, line: String(line.line_no) } },
      h("span", { class: "ln" }, String(line.line_no + 1)),
      h("span", { class: "tx" }, line.text),
    );
  }

  private flush(): void {
    this.frame = null;
    const batch = this.pending.filter((l) => this.visible(l));
    this.pending = [];
    const fragment = document.createDocumentFragment();
    for (const line of batch.slice(-MAX_DOM)) fragment.appendChild(this.row(line));
    this.body.appendChild(fragment);
    this.shown += Math.min(batch.length, MAX_DOM);
    while (this.shown > MAX_DOM && this.body.firstChild) {
      this.body.removeChild(this.body.firstChild);
      this.shown -= 1;
    }
    this.showInfo();
    if (this.follow.checked) this.body.scrollTop = this.body.scrollHeight;
  }

  private rerender(): void {
    const lines = this.lines.filter((l) => this.visible(l)).slice(-MAX_DOM);
    replaceChildren(this.body, lines.map((l) => this.row(l)));
    this.shown = lines.length;
    this.pending = [];
    this.showInfo();
    if (this.follow.checked) this.body.scrollTop = this.body.scrollHeight;
  }

  private scrolled(): void {
    const atBottom = this.body.scrollHeight - this.body.scrollTop - this.body.clientHeight < 24;
    if (!atBottom && this.follow.checked && this.frame === null) this.follow.checked = false;
    else if (atBottom && !this.follow.checked) this.follow.checked = true;
  }

  private showInfo(): void {
    const total = this.lines.length;
    this.body.dataset.lines = String(total);
    this.info.textContent = total ? `${total.toLocaleString("en-US")} lines` : "";
    this.empty.hidden = total > 0;
    this.body.hidden = total === 0;
  }
}
