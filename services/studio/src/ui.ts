// Small pieces shared by the pages.

import { ApiError } from "./api";
import { h } from "./dom";

export function statusBadge(status: string | null | undefined): HTMLSpanElement {
  const s = status ?? "unknown";
  return h("span", { class: `status status-${s}`, dataset: { status: s } }, h("i"), s);
}

export function pageHeader(title: string | Node, ...extra: (Node | string | null)[]): HTMLElement {
  return h("div", { class: "page-header" }, h("h1", null, title), ...extra);
}

export function breadcrumbs(...items: (HTMLElement | string)[]): HTMLElement {
  const out: (HTMLElement | string)[] = [];
  items.forEach((item, i) => {
    if (i) out.push(h("span", { class: "sep" }, "/"));
    out.push(item);
  });
  return h("div", { class: "crumbs" }, ...out);
}

export function errorBox(error: unknown): HTMLElement {
  const text =
    error instanceof ApiError
      ? `${error.status}: ${error.detail}`
      : error instanceof Error
        ? error.message
        : String(error);
  return h("div", { class: "error-box" }, text);
}

export function loading(text = "Loading…"): HTMLElement {
  return h("div", { class: "loading" }, text);
}

export function tagChips(tags: Record<string, string>, limit = 6): HTMLElement {
  const entries = Object.entries(tags);
  return h(
    "span",
    { class: "tags" },
    entries.slice(0, limit).map(([k, v]) => h("span", { class: "tag", title: `${k}=${v}` }, h("b", null, k), v ? `: ${v}` : "")),
    entries.length > limit ? h("span", { class: "tag more" }, `+${entries.length - limit}`) : null,
  );
}

export function runLabel(run: { run_id: string; name?: string | null }): HTMLElement {
  return h(
    "span",
    { class: "run-label" },
    h("span", { class: "run-name" }, run.name || run.run_id),
    run.name ? h("span", { class: "run-id" }, run.run_id) : null,
  );
}

/** Call `fn` at most once per `ms`, with the latest arguments, after the calls stop for `ms`. */
export function debounce<A extends unknown[]>(fn: (...args: A) => void, ms: number): (...args: A) => void {
  let timer: number | null = null;
  return (...args: A) => {
    if (timer !== null) clearTimeout(timer);
    timer = window.setTimeout(() => {
      timer = null;
      fn(...args);
    }, ms);
  };
}
