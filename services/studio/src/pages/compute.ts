// `/compute`: every compute target with its queued and active runs, live.
//
// The set of runs and their statuses come from one live `compute` subscription per
// target (its snapshot, then updates: a run leaves when it ends); names, parents and
// times come from `GET /compute`, read again when a run joins that it did not list.

import { getJson } from "../api";
import { h, replaceChildren } from "../dom";
import { formatAgo, formatDuration, formatTime, mergeStatus, parseTime, STATUS_OF_EVENT, TERMINAL } from "../format";
import { LiveClient } from "../live";
import { paths, type Route } from "../router";
import type { ComputeRun, ComputeTarget, RunChange } from "../types";
import { debounce, errorBox, loading, pageHeader, runLabel, statusBadge } from "../ui";

interface LiveRun {
  status: string;
  experiment: string;
}

export function computePage(root: HTMLElement, route: Route): () => void {
  const only = route.query.get("target");
  const body = h("div", { class: "compute" }, loading());
  replaceChildren(
    root,
    pageHeader(
      only ? h("span", null, h("a", { href: "/compute", class: "muted-link" }, "Compute"), " / ", only) : "Compute",
      h("span", { class: "subtitle" }, "Queued and active runs of every compute target, as they change"),
    ),
    body,
  );

  const live = new LiveClient();
  const abort = new AbortController();
  const targets = new Map<string, ComputeTarget>();
  const state = new Map<string, Map<string, LiveRun>>();
  const details = new Map<string, ComputeRun>();
  const collapsed = new Set<string>();
  // Child runs that inherit their parent's target are listed by GET /compute but not
  // by the compute subscription (it follows runs created with that target): each is
  // followed by a run subscription of its own (lifecycle events only) instead.
  const inherited = new Map<string, { target: string; status: string; sub: ReturnType<LiveClient["subscribe"]> }>();
  let ready = false;
  let frame: number | null = null;

  const schedule = () => {
    if (frame === null) frame = requestAnimationFrame(() => ((frame = null), render()));
  };

  const subscribe = (name: string) => {
    state.set(name, new Map());
    live.subscribe(
      { compute: name },
      {
        subscribed(frame, resumed) {
          if (resumed) return;
          const runs = new Map<string, LiveRun>();
          const snapshot = (frame.snapshot?.runs ?? {}) as Record<string, LiveRun>;
          for (const [id, run] of Object.entries(snapshot)) runs.set(id, { ...run });
          state.set(name, runs);
          refetch();
          schedule();
        },
        update(changes: Record<string, RunChange>) {
          const runs = state.get(name) ?? new Map<string, LiveRun>();
          let unknown = false;
          for (const [id, change] of Object.entries(changes)) {
            if (change.active === false) {
              runs.delete(id);
              continue;
            }
            const run = runs.get(id);
            runs.set(id, {
              status: mergeStatus(run?.status, change.status) ?? "created",
              experiment: change.experiment ?? run?.experiment ?? "",
            });
            if (!details.has(id)) unknown = true;
          }
          state.set(name, runs);
          if (unknown) refetch();
          schedule();
        },
      },
      { max_rate: 10 },
    );
  };

  const load = async () => {
    const answer = await getJson<{ targets: ComputeTarget[] }>("/compute", {}, abort.signal);
    details.clear();
    const walk = (runs: ComputeRun[], parent: string | null) => {
      for (const run of runs) {
        details.set(run.run_id, { ...run, parent_run_id: run.parent_run_id ?? parent });
        walk(run.children, run.run_id);
      }
    };
    for (const target of answer.targets) {
      if (only && target.name !== only) continue;
      targets.set(target.name, target);
      walk(target.runs, null);
      if (!state.has(target.name)) subscribe(target.name);
    }
    followInherited();
    ready = true;
    schedule();
    // A run that joined live may not be in the projections yet: read again, a few times at most.
    const missing = [...state.values()].some((runs) => [...runs.keys()].some((id) => !details.has(id)));
    if (missing && retries < 6) {
      retries += 1;
      window.setTimeout(refetch, 300 * retries);
    } else if (!missing) {
      retries = 0;
    }
  };
  let retries = 0;
  const followInherited = () => {
    for (const [name, runs] of state) {
      for (const run of details.values()) {
        if (runs.has(run.run_id) || inherited.has(run.run_id) || !run.parent_run_id) continue;
        if (!runs.has(run.parent_run_id) && !inherited.has(run.parent_run_id)) continue;
        if (!targets.get(name)?.runs.some(function has(r: ComputeRun): boolean {
          return r.run_id === run.run_id || r.children.some(has);
        })) continue;
        const id = run.run_id;
        const sub = live.subscribe(
          { run_id: id },
          {
            subscribed(frame) {
              const entry = inherited.get(id);
              const snapshot = frame.snapshot?.run as { status?: string } | null | undefined;
              if (entry && snapshot?.status) entry.status = mergeStatus(entry.status, snapshot.status) ?? entry.status;
              schedule();
            },
            events(events) {
              const entry = inherited.get(id);
              if (!entry) return;
              for (const event of events) entry.status = mergeStatus(entry.status, STATUS_OF_EVENT[event.type]) ?? entry.status;
              schedule();
            },
          },
          { types: ["run.*"], max_rate: 10 },
        );
        inherited.set(id, { target: name, status: run.status, sub });
      }
    }
  };
  const refetch = debounce(() => load().catch(() => undefined), 250);

  load().catch((error) => abort.signal.aborted || replaceChildren(body, errorBox(error)));

  const render = () => {
    if (!ready) return;
    if (targets.size === 0) {
      replaceChildren(
        body,
        h(
          "div",
          { class: "card empty" },
          h("h2", null, only ? `No compute target ${only}` : "No compute targets yet"),
          h("p", null, "Runs started with ", h("code", null, 'start_run(..., compute="gpu-cluster")'), " appear here."),
        ),
      );
      return;
    }
    replaceChildren(body, [...targets.values()].map((t) => targetCard(t, members(t.name))));
    tickElapsed();
  };

  /** The runs shown on a target: its live members and, under them, the children that inherit it. */
  const members = (name: string): Map<string, LiveRun> => {
    const runs = new Map(state.get(name) ?? []);
    let grew = true;
    while (grew) {
      grew = false;
      for (const [id, entry] of inherited) {
        const parent = details.get(id)?.parent_run_id;
        if (entry.target !== name || runs.has(id) || TERMINAL.has(entry.status) || !parent || !runs.has(parent)) continue;
        runs.set(id, { status: entry.status, experiment: details.get(id)?.experiment ?? "" });
        grew = true;
      }
    }
    return runs;
  };

  const targetCard = (target: ComputeTarget, runs: Map<string, LiveRun>) => {
    const ids = [...runs.keys()];
    const nested = new Map<string, string[]>();
    const tops: string[] = [];
    for (const id of ids) {
      const parent = details.get(id)?.parent_run_id;
      if (parent && runs.has(parent)) nested.set(parent, [...(nested.get(parent) ?? []), id]);
      else tops.push(id);
    }
    const order = (a: string, b: string) => sortKey(a).localeCompare(sortKey(b));
    const sortKey = (id: string) => {
      const d = details.get(id);
      return `${runs.get(id)?.status === "running" ? 0 : 1}${d?.started_at ?? d?.queued_at ?? d?.created_at ?? "~"}${id}`;
    };
    const running = ids.filter((id) => runs.get(id)?.status === "running").length;
    const queued = ids.filter((id) => runs.get(id)?.status === "queued").length;
    const rows: HTMLElement[] = [];
    const addRows = (id: string, depth: number) => {
      const children = (nested.get(id) ?? []).sort(order);
      rows.push(runRow(id, runs.get(id) as LiveRun, depth, children.length));
      if (!collapsed.has(id)) for (const child of children) addRows(child, depth + 1);
    };
    tops.sort(order).forEach((id) => addRows(id, 0));
    return h(
      "section",
      { class: "card target", dataset: { target: target.name } },
      h(
        "div",
        { class: "card-head" },
        h("h2", null, h("span", { class: "target-icon" }), target.name),
        h("span", { class: "pill running" }, `${running} running`),
        h("span", { class: "pill queued" }, `${queued} queued`),
        h("div", { class: "spacer" }),
        h("span", { class: "muted" }, `${target.runs_total} run${target.runs_total === 1 ? "" : "s"} in all · last activity ${formatAgo(target.last_activity)}`),
      ),
      rows.length
        ? h(
            "table",
            { class: "grid compute-runs" },
            h(
              "thead",
              null,
              h("tr", null, h("th", { class: "status-col" }, "Status"), h("th", null, "Run"), h("th", null, "Experiment"), h("th", null, "Queued"), h("th", null, "Started"), h("th", { class: "num" }, "Elapsed")),
            ),
            h("tbody", null, rows),
          )
        : h("div", { class: "empty small" }, "Nothing queued or running."),
    );
  };

  const runRow = (id: string, run: LiveRun, depth: number, childCount: number) => {
    const d = details.get(id);
    const since = run.status === "running" ? d?.started_at : (d?.queued_at ?? d?.created_at);
    const toggle = childCount
      ? h(
          "button",
          {
            class: "tree-toggle",
            title: collapsed.has(id) ? "show child runs" : "hide child runs",
            onclick: () => {
              if (collapsed.has(id)) collapsed.delete(id);
              else collapsed.add(id);
              render();
            },
          },
          collapsed.has(id) ? "▸" : "▾",
        )
      : h("span", { class: "tree-toggle-space" });
    const experiment = run.experiment || d?.experiment || "";
    return h(
      "tr",
      { dataset: { runId: id, status: run.status, depth: String(depth) } },
      h("td", null, statusBadge(run.status)),
      h(
        "td",
        null,
        h(
          "div",
          { class: "tree", style: `padding-left:${depth * 22}px` },
          toggle,
          h("a", { href: paths.run(id) }, runLabel({ run_id: id, name: d?.name })),
          childCount ? h("span", { class: "muted small" }, ` ${childCount} child run${childCount > 1 ? "s" : ""}`) : null,
        ),
      ),
      h("td", null, experiment ? h("a", { href: paths.experiment(experiment) }, experiment) : "—"),
      h("td", { class: "muted" }, formatTime(d?.queued_at)),
      h("td", { class: "muted" }, formatTime(d?.started_at)),
      h("td", { class: "num mono", dataset: { since: since ?? "" } }, "—"),
    );
  };

  const tickElapsed = () => {
    const now = Date.now();
    for (const cell of body.querySelectorAll<HTMLElement>("td[data-since]")) {
      const t = parseTime(cell.dataset.since);
      cell.textContent = t === null ? "—" : formatDuration(now - t);
    }
  };
  const clock = window.setInterval(tickElapsed, 1000);

  return () => {
    abort.abort();
    live.close();
    clearInterval(clock);
    if (frame !== null) cancelAnimationFrame(frame);
  };
}
