// `/` and `/experiments`: every experiment of the workspace with its run counts.

import { getJson } from "../api";
import { h, replaceChildren } from "../dom";
import { formatAgo, formatTime } from "../format";
import { paths } from "../router";
import type { Experiment } from "../types";
import { errorBox, loading, pageHeader } from "../ui";

export function experimentsPage(root: HTMLElement): () => void {
  const body = h("div", { class: "card" }, loading());
  replaceChildren(root, pageHeader("Experiments"), body);
  const abort = new AbortController();
  getJson<{ experiments: Experiment[] }>("/experiments", {}, abort.signal)
    .then(({ experiments }) => {
      if (!experiments.length) {
        replaceChildren(
          body,
          h(
            "div",
            { class: "empty" },
            h("h2", null, "No runs yet"),
            h("p", null, "Start one from a training script:"),
            h("pre", null, 'import runstream\n\nwith runstream.start_run("mnist") as run:\n    run.log("loss", 0.31)'),
          ),
        );
        return;
      }
      replaceChildren(
        body,
        h(
          "table",
          { class: "grid experiments" },
          h(
            "thead",
            null,
            h("tr", null, h("th", null, "Experiment"), h("th", { class: "num" }, "Runs"), h("th", { class: "num" }, "Running"), h("th", { class: "num" }, "Queued"), h("th", null, "Last activity")),
          ),
          h(
            "tbody",
            null,
            experiments.map((e) =>
              h(
                "tr",
                { dataset: { experiment: e.experiment } },
                h("td", null, h("a", { href: paths.experiment(e.experiment), class: "strong" }, e.experiment)),
                h("td", { class: "num" }, e.runs.toLocaleString("en-US")),
                h("td", { class: "num" }, e.active_runs ? h("span", { class: "pill running" }, String(e.active_runs)) : "0"),
                h("td", { class: "num" }, e.queued_runs ? h("span", { class: "pill queued" }, String(e.queued_runs)) : "0"),
                h("td", { title: formatTime(e.last_activity) }, formatAgo(e.last_activity)),
              ),
            ),
          ),
        ),
      );
    })
    .catch((error) => abort.signal.aborted || replaceChildren(body, errorBox(error)));
  return () => abort.abort();
}
