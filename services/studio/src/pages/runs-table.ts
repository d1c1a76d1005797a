// `/experiments/{name}`: the runs table of one experiment.
//
// Sorting, filtering and paging happen on the server (keyset pages of 200 runs);
// the table draws only the rows in view, so it stays smooth at 10,000 runs and
// more. Metric columns show last, min or max (chosen per column). Status and
// values change live: an `experiment` subscription says which runs changed, and
// the visible ones are read again (exact summaries, not the coalesced points).
//
// URL: ?columns=min(loss),last(acc)&sort=min(loss)&status=running&tag=team=vision&where=min(loss)<0.3

import { ApiError, enc, getJson } from "../api";
import { h, replaceChildren } from "../dom";
import { formatDuration, formatShortTime, formatTime, formatValue, mergeStatus, parseTime, TERMINAL } from "../format";
import { LiveClient } from "../live";
import { navigate, paths, type Route, setQuery } from "../router";
import type { RunChange, RunDetails, RunsPage, RunsRow } from "../types";
import { breadcrumbs, debounce, errorBox, pageHeader, statusBadge, tagChips } from "../ui";

const ROW_H = 36;
const PAGE = 200;
const AGGREGATES = ["last", "min", "max"] as const;
const STATUSES = ["created", "queued", "running", "completed", "failed", "canceled"];
const MAX_REFRESH = 24;

interface Spec {
  agg: string;
  metric: string;
}

const specText = (s: Spec) => `${s.agg}(${s.metric})`;

function parseSpecs(raw: string | null): Spec[] {
  const out: Spec[] = [];
  for (const part of (raw ?? "").split(",")) {
    const m = /^\s*([a-z_]+)\(([^(),]+)\)\s*$/.exec(part);
    if (m && !out.some((s) => s.agg === m[1] && s.metric === m[2])) out.push({ agg: m[1], metric: m[2] });
  }
  return out;
}

export function runsTablePage(root: HTMLElement, route: Route): () => void {
  const experiment = route.parts.slice(1).join("/");
  const query = route.query;
  let columns = parseSpecs(query.get("columns"));
  let sort = query.get("sort") ?? "-created_at";
  let status = query.get("status") ?? "";
  let tag = query.get("tag") ?? "";
  let where = query.get("where") ?? "";
  const explicitColumns = query.has("columns");

  let rows: RunsRow[] = [];
  let index = new Map<string, number>();
  let next: string | null = null;
  let fetching: AbortController | null = null;
  let generation = 0;
  const selected = new Set<string>();
  const known = new Set<string>();
  const stale = new Set<string>();
  /** Rows whose element must be drawn again; every row when drawGeneration changes. */
  const dirty = new Set<string>();
  let drawGeneration = 0;
  const redrawAll = () => {
    drawGeneration += 1;
    scheduleRows();
  };

  const live = new LiveClient();
  const abort = new AbortController();

  // -- layout ------------------------------------------------------------------------------
  const compareButton = h("button", { class: "button primary", disabled: true, onclick: () => compare() }, "Compare");
  const clearButton = h("button", { class: "button", hidden: true, onclick: () => (selected.clear(), redrawAll(), updateSelection()) }, "Clear selection");
  const statusSelect = h(
    "select",
    { class: "input", "aria-label": "status", onchange: () => ((status = statusSelect.value), reload()) },
    h("option", { value: "" }, "Any status"),
    STATUSES.map((s) => h("option", { value: s }, s)),
  );
  statusSelect.value = status;
  const tagInput = h("input", { class: "input", placeholder: "tag: key=value", value: tag, "aria-label": "tag filter" });
  const whereInput = h("input", { class: "input wide", placeholder: "where: min(loss)<0.3, last(acc)>0.9", value: where, "aria-label": "where" });
  const addColumn = h("select", { class: "input", "aria-label": "add a metric column", onchange: () => addMetric() });
  const filterForm = h(
    "form",
    {
      class: "toolbar",
      onsubmit: (event: Event) => {
        event.preventDefault();
        tag = tagInput.value.trim();
        where = whereInput.value.trim();
        reload();
      },
    },
    statusSelect,
    tagInput,
    whereInput,
    h("button", { class: "button", type: "submit" }, "Filter"),
    h("div", { class: "spacer" }),
    addColumn,
    clearButton,
    compareButton,
  );
  const message = h("div", { class: "table-message" });
  const head = h("div", { class: "vrow vhead" });
  const spacer = h("div", { class: "vspacer" });
  const windowEl = h("div", { class: "vwindow" });
  const footer = h("div", { class: "vfooter" });
  const scroller = h("div", { class: "vscroll", onscroll: () => scheduleRows() }, head, h("div", { class: "vbody" }, spacer, windowEl), footer);
  const countLabel = h("span", { class: "subtitle" });
  replaceChildren(
    root,
    breadcrumbs(h("a", { href: "/experiments" }, "Experiments"), experiment),
    pageHeader(experiment, countLabel),
    filterForm,
    message,
    h("div", { class: "card table-card" }, scroller),
  );

  // -- columns -----------------------------------------------------------------------------
  // Fixed pixel widths (the run column takes what is left): every row, drawn on its own,
  // lines up with the header, and no row needs its content measured.
  let width = 0;
  const layout = () => {
    const fixed = 40 + 124 + 128 + 100 + 200 + columns.length * 128;
    const run = Math.max(260, (scroller.clientWidth || 1300) - fixed - 2);
    width = fixed + run;
    scroller.style.setProperty("--cols", `40px ${run}px 124px 128px 100px 200px ${columns.map(() => "128px").join(" ")}`);
    scroller.style.setProperty("--row-width", `${width}px`);
  };

  const sortHeader = (label: string, key: string, descFirst: boolean, extra: Node[] = []) => {
    const active = sort === key || sort === `-${key}`;
    const arrow = !active ? "" : sort.startsWith("-") ? " ↓" : " ↑";
    return h(
      "div",
      { class: `vcell th sortable${active ? " sorted" : ""}`, dataset: { sort: key } },
      h(
        "button",
        {
          class: "th-label",
          title: `sort by ${key}`,
          onclick: () => {
            sort = sort === key ? `-${key}` : sort === `-${key}` ? key : descFirst ? `-${key}` : key;
            reload();
          },
        },
        label,
        h("span", { class: "arrow" }, arrow),
      ),
      ...extra,
    );
  };

  const renderHead = () => {
    layout();
    const all = h("input", {
      type: "checkbox",
      "aria-label": "select all loaded runs",
      onchange: () => {
        if (all.checked) rows.slice(0, 50).forEach((r) => selected.add(r.run_id));
        else selected.clear();
        redrawAll();
        updateSelection();
      },
    });
    replaceChildren(
      head,
      h("div", { class: "vcell th" }, all),
      sortHeader("Run", "name", false),
      sortHeader("Status", "status", false),
      sortHeader("Created", "created_at", true),
      sortHeader("Duration", "duration_ms", true),
      h("div", { class: "vcell th" }, "Tags"),
      columns.map((spec, i) => {
        const agg = h(
          "select",
          {
            class: "agg",
            "aria-label": `summary of ${spec.metric}`,
            onchange: () => {
              const old = specText(spec);
              columns[i] = { agg: agg.value, metric: spec.metric };
              if (sort === old || sort === `-${old}`) sort = sort.replace(old, specText(columns[i]));
              reload();
            },
          },
          AGGREGATES.map((a) => h("option", { value: a, selected: a === spec.agg }, a)),
        );
        const remove = h(
          "button",
          {
            class: "remove",
            title: `remove ${specText(spec)}`,
            onclick: () => {
              columns.splice(i, 1);
              if (sort.replace(/^-/, "") === specText(spec)) sort = "-created_at";
              reload();
            },
          },
          "×",
        );
        const cell = sortHeader(spec.metric, specText(spec), spec.agg === "max", [h("div", { class: "th-tools" }, agg, remove)]);
        cell.classList.add("metric-th");
        cell.title = specText(spec);
        return cell;
      }),
    );
    const options = [...known].filter((m) => !columns.some((c) => c.metric === m)).sort();
    replaceChildren(
      addColumn,
      h("option", { value: "" }, options.length ? "+ metric column" : "no more metrics"),
      options.map((m) => h("option", { value: m }, m)),
    );
  };

  const addMetric = () => {
    const metric = addColumn.value;
    if (!metric) return;
    columns.push({ agg: "last", metric });
    reload();
  };

  // -- rows --------------------------------------------------------------------------------
  let rowFrame: number | null = null;
  let lastWidth = 0;
  const scheduleRows = () => {
    if (rowFrame === null) rowFrame = requestAnimationFrame(() => ((rowFrame = null), renderRows()));
  };

  const renderRows = () => {
    const top = scroller.scrollTop;
    const height = scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_H) - 8);
    const last = Math.min(rows.length, Math.ceil((top + height) / ROW_H) + 8);
    if ((scroller.clientWidth || 1300) !== lastWidth) {
      lastWidth = scroller.clientWidth || 1300;
      layout();
    }
    spacer.style.height = `${rows.length * ROW_H}px`;
    windowEl.style.transform = `translateY(${first * ROW_H}px)`;
    const now = Date.now();
    // Rows still in view keep their elements (scrolling moves the window, it does not redraw).
    const drawn = new Map<string, HTMLElement>();
    for (const el of windowEl.children as HTMLCollectionOf<HTMLElement>) {
      if (el.dataset.runId && el.dataset.gen === String(drawGeneration)) drawn.set(el.dataset.runId, el);
    }
    const visible = rows.slice(first, last).map((row) => {
      const el = !dirty.has(row.run_id) && drawn.get(row.run_id);
      if (el) return el;
      dirty.delete(row.run_id);
      const fresh = rowElement(row, now);
      fresh.dataset.gen = String(drawGeneration);
      return fresh;
    });
    const keep = new Set<Element>(visible);
    for (const el of [...windowEl.children]) if (!keep.has(el)) el.remove();
    let cursor = windowEl.firstElementChild;
    for (const el of visible) {
      if (el === cursor) cursor = cursor.nextElementSibling;
      else windowEl.insertBefore(el, cursor);
    }
    if (next && last >= rows.length - 20 && !fetching) void loadPage();
    if (rows.length) countLabel.textContent = `${rows.length.toLocaleString("en-US")}${next ? "+" : ""} runs`;
    void refreshStale(first, last);
  };

  const rowElement = (row: RunsRow, now: number) => {
    const check = h("input", {
      type: "checkbox",
      checked: selected.has(row.run_id),
      "aria-label": `select ${row.name ?? row.run_id}`,
      onchange: () => {
        if (check.checked) selected.add(row.run_id);
        else selected.delete(row.run_id);
        check.closest(".vrow")?.classList.toggle("selected", check.checked);
        updateSelection();
      },
    });
    const started = parseTime(row.started_at);
    const duration = row.duration_ms ?? (started !== null && !TERMINAL.has(row.status) ? now - started : null);
    return h(
      "div",
      { class: `vrow${selected.has(row.run_id) ? " selected" : ""}`, dataset: { runId: row.run_id } },
      h("div", { class: "vcell" }, check),
      h(
        "div",
        { class: "vcell run-cell" },
        h("a", { href: paths.run(row.run_id), class: "strong", title: row.run_id }, row.name || row.run_id),
        row.name ? h("span", { class: "run-id" }, row.run_id) : null,
      ),
      h("div", { class: "vcell" }, statusBadge(row.status)),
      h("div", { class: "vcell muted", title: formatTime(row.created_at) }, formatShortTime(row.created_at)),
      h("div", { class: "vcell mono", dataset: row.duration_ms === null && started !== null && !TERMINAL.has(row.status) ? { since: row.started_at ?? "" } : {} }, formatDuration(duration)),
      h("div", { class: "vcell" }, tagChips(row.tags, 3)),
      columns.map((spec) => {
        const value = row.columns[specText(spec)];
        return h("div", { class: "vcell num mono", dataset: { column: specText(spec) } }, formatValue(value));
      }),
    );
  };

  const updateSelection = () => {
    compareButton.disabled = selected.size < 1;
    compareButton.textContent = selected.size ? `Compare ${selected.size} run${selected.size > 1 ? "s" : ""}` : "Compare";
    clearButton.hidden = selected.size === 0;
  };

  const compare = () => {
    const metrics = [...new Set(columns.map((c) => c.metric))];
    navigate(paths.compare([...selected], metrics.length ? metrics : [...known].sort().slice(0, 4)));
  };

  // -- loading -----------------------------------------------------------------------------
  const params = (cursor: string | null) => ({
    columns: columns.map(specText).join(","),
    sort,
    status: status || null,
    tag: tag ? [tag] : null,
    where: where ? [where] : null,
    limit: PAGE,
    cursor,
  });

  const loadPage = async () => {
    const mine = generation;
    fetching = new AbortController();
    footer.textContent = "Loading…";
    try {
      const page = await getJson<RunsPage>(`/experiments/${enc(experiment)}/runs`, params(next), fetching.signal);
      if (mine !== generation) return;
      for (const row of page.runs) {
        if (index.has(row.run_id)) continue;
        index.set(row.run_id, rows.length);
        rows.push(row);
      }
      next = page.next_cursor;
      footer.textContent = next ? "" : rows.length ? `${rows.length.toLocaleString("en-US")} runs` : "";
      message.textContent = "";
      if (!rows.length) footer.textContent = "No runs match.";
    } catch (error) {
      if (mine !== generation || (error instanceof DOMException && error.name === "AbortError")) return;
      footer.textContent = "";
      replaceChildren(message, errorBox(error));
      if (error instanceof ApiError && error.parameter === "columns" && columns.length) {
        // a column names a metric no run logged: drop the columns and show the runs
        columns = [];
        reload();
        return;
      }
    } finally {
      if (mine === generation) fetching = null;
    }
    scheduleRows();
  };

  /** Without the live snapshot: the metrics of the first runs of the page. */
  const discoverMetrics = async () => {
    const ids = rows.slice(0, 8).map((r) => r.run_id);
    const details = await Promise.all(
      ids.map((id) => getJson<RunDetails>(`/runs/${enc(id)}`, {}, abort.signal).catch(() => null)),
    );
    for (const d of details) for (const m of Object.keys(d?.metrics ?? {})) known.add(m);
  };

  const reload = (keepScroll = false) => {
    generation += 1;
    fetching?.abort();
    fetching = null;
    rows = [];
    index = new Map();
    drawGeneration += 1;
    next = null;
    for (const id of fresh) existing.add(id);
    fresh.clear();
    banner.hidden = true;
    if (!keepScroll) scroller.scrollTop = 0;
    const q = new URLSearchParams();
    if (columns.length || explicitColumns) q.set("columns", columns.map(specText).join(","));
    if (sort !== "-created_at") q.set("sort", sort);
    if (status) q.set("status", status);
    if (tag) q.set("tag", tag);
    if (where) q.set("where", where);
    setQuery(q);
    renderHead();
    void loadPage();
  };

  // The experiment's subscription comes first: its snapshot names every metric the runs
  // logged and every run that exists, and fixes a cursor; the table is read after it, and
  // the updates after that cursor say which runs changed (or are new).
  const existing = new Set<string>();
  const fresh = new Set<string>();
  let snapshotSeen: () => void = () => undefined;
  const snapshotReady = new Promise<void>((resolve) => (snapshotSeen = resolve));
  let started = false;

  const banner = h("button", { class: "banner", hidden: true, onclick: () => reload() });
  message.after(banner);

  live.subscribe(
    { experiment },
    {
      subscribed(frame, resumed) {
        if (resumed) return;
        const runs = (frame.snapshot?.runs ?? {}) as Record<string, { metrics?: Record<string, unknown> }>;
        existing.clear();
        for (const [id, run] of Object.entries(runs)) {
          existing.add(id);
          for (const m of Object.keys(run.metrics ?? {})) known.add(m);
        }
        if (started) reload(true); // a fresh start after a gap the stream could not fill
        snapshotSeen();
      },
      update(changes: Record<string, RunChange>) {
        let changed = false;
        for (const [id, change] of Object.entries(changes)) {
          for (const m of Object.keys(change.metrics ?? {})) {
            if (!known.has(m)) {
              known.add(m);
              changed = true;
            }
          }
          const at = index.get(id);
          if (at === undefined) {
            if (!existing.has(id)) fresh.add(id);
            continue;
          }
          const row = rows[at];
          if (change.status) row.status = mergeStatus(row.status, change.status) ?? row.status;
          if (change.name) row.name = change.name;
          for (const spec of columns) {
            const point = change.metrics?.[spec.metric];
            if (point && spec.agg === "last") row.columns[specText(spec)] = point.value;
          }
          stale.add(id);
          dirty.add(id);
        }
        if (fresh.size) {
          banner.hidden = false;
          banner.textContent = `${fresh.size} new run${fresh.size > 1 ? "s" : ""} since the table was read — show`;
        }
        if (changed) renderHead();
        scheduleRows();
      },
    },
    { max_rate: 4 },
  );

  // First load: without columns in the URL, show the last value of a few of the metrics.
  const start = async () => {
    renderHead();
    const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 4000));
    const haveSnapshot = await Promise.race([snapshotReady.then(() => true), timeout]);
    started = true;
    if (columns.length === 0 && !explicitColumns) {
      if (!haveSnapshot) {
        await loadPage();
        await discoverMetrics();
      }
      const names = [...known].sort();
      if (names.length) {
        columns = names.slice(0, 3).map((metric) => ({ agg: "last", metric }));
        reload(true);
        return;
      }
      if (haveSnapshot) await loadPage();
      renderHead();
    } else {
      await loadPage();
      if (!haveSnapshot) await discoverMetrics();
      renderHead();
    }
  };
  start().catch((error) => abort.signal.aborted || replaceChildren(message, errorBox(error)));

  // Changed runs in view are read again: exact last/min/max, status, duration.
  let refreshing = false;
  const refreshStale = debounce(async (first: number, last: number) => {
    if (refreshing || stale.size === 0) return;
    const visible = rows.slice(first, last).filter((r) => stale.has(r.run_id)).slice(0, MAX_REFRESH);
    if (!visible.length) return;
    refreshing = true;
    visible.forEach((r) => stale.delete(r.run_id));
    try {
      const details = await Promise.all(
        visible.map((r) => getJson<RunDetails>(`/runs/${enc(r.run_id)}`, {}, abort.signal).catch(() => null)),
      );
      for (const d of details) {
        if (!d) continue;
        const at = index.get(d.run_id);
        if (at === undefined) continue;
        const row = rows[at];
        dirty.add(row.run_id);
        Object.assign(row, {
          status: mergeStatus(row.status, d.status),
          name: d.name,
          started_at: d.started_at,
          ended_at: d.ended_at,
          duration_ms: d.duration_ms,
          tags: d.tags,
        });
        for (const spec of columns) {
          const summary = d.metrics[spec.metric];
          if (summary) row.columns[specText(spec)] = summary[spec.agg as "last" | "min" | "max"];
        }
      }
    } finally {
      refreshing = false;
    }
    scheduleRows();
  }, 400);

  const clock = window.setInterval(() => {
    const now = Date.now();
    for (const cell of windowEl.querySelectorAll<HTMLElement>("[data-since]")) {
      const t = parseTime(cell.dataset.since);
      if (t !== null) cell.textContent = formatDuration(now - t);
    }
  }, 1000);
  window.addEventListener("resize", scheduleRows);

  return () => {
    abort.abort();
    fetching?.abort();
    live.close();
    clearInterval(clock);
    window.removeEventListener("resize", scheduleRows);
    if (rowFrame !== null) cancelAnimationFrame(rowFrame);
  };
}
