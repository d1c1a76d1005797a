// The studio's entry: token from the URL fragment, the header, the router.

import "./style.css";
import { getToken, setToken, takeTokenFromFragment } from "./api";
import { chartData, charts } from "./chart";
import { h, replaceChildren } from "./dom";
import { LiveClient, type LiveState } from "./live";
import { comparePage } from "./pages/compare";
import { computePage } from "./pages/compute";
import { experimentsPage } from "./pages/experiments";
import { runPage } from "./pages/run";
import { runsTablePage } from "./pages/runs-table";
import { type Cleanup, current, interceptLinks, navigate, onNavigate, type PageFn } from "./router";

declare global {
  interface Window {
    __studio: Record<string, unknown>;
  }
}

takeTokenFromFragment();

const app = document.getElementById("app") as HTMLElement;
const dot = h("span", { class: "live-dot", title: "live updates" });
const liveLabel = h("span", { class: "live-label" }, "");
const nav = {
  experiments: h("a", { href: "/experiments" }, "Experiments"),
  compute: h("a", { href: "/compute" }, "Compute"),
};
const header = h(
  "header",
  { class: "topbar" },
  h("a", { class: "brand", href: "/" }, h("span", { class: "brand-mark" }), "Runstream"),
  h("nav", null, nav.experiments, nav.compute),
  h("div", { class: "spacer" }),
  h("div", { class: "live-status" }, dot, liveLabel),
);
const main = h("main", { class: "page" });
app.append(header, main);

function showLive(state: LiveState | "idle"): void {
  dot.className = `live-dot ${state}`;
  liveLabel.textContent = { idle: "", connecting: "connecting", live: "live", reconnecting: "reconnecting…", closed: "" }[
    state
  ];
}

function route(path: string): PageFn {
  const parts = current().parts;
  if (parts[0] === "compute") return computePage;
  if (parts[0] === "experiments" && parts.length > 1) return runsTablePage;
  if (parts[0] === "runs" && parts.length > 1) return runPage;
  if (parts[0] === "compare") return comparePage;
  if (path === "/" || parts[0] === "experiments") return experimentsPage;
  return notFound;
}

function notFound(root: HTMLElement): void {
  replaceChildren(
    root,
    h("div", { class: "empty" }, h("h2", null, "Nothing here"), h("p", null, h("a", { href: "/" }, "Back to the experiments"))),
  );
}

let cleanup: Cleanup | void;
function render(): void {
  if (typeof cleanup === "function") cleanup();
  for (const client of [...LiveClient.current]) client.close();
  const here = current();
  nav.experiments.classList.toggle("active", here.parts[0] === "experiments" || here.path === "/");
  nav.compute.classList.toggle("active", here.parts[0] === "compute");
  showLive("idle");
  const root = h("div", { class: "view" });
  replaceChildren(main, root);
  if (!getToken()) {
    tokenPrompt(root, "This studio needs the server's token.");
    return;
  }
  cleanup = route(here.path)(root, here);
  for (const client of LiveClient.current) {
    showLive(client.state);
    client.listeners.add(showLive);
  }
}

function tokenPrompt(root: HTMLElement, reason: string): void {
  const input = h("input", { type: "password", placeholder: "rs_…", autocomplete: "off", class: "token-input" });
  const form = h(
    "form",
    {
      class: "token-form",
      onsubmit: (event: Event) => {
        event.preventDefault();
        if (input.value.trim()) {
          setToken(input.value);
          render();
        }
      },
    },
    h("h2", null, "Sign in"),
    h("p", null, reason),
    h(
      "p",
      { class: "muted" },
      "Open the address `runstream up` printed (it carries the token), or paste the token from ",
      h("code", null, "runstream token"),
      " (stored in ",
      h("code", null, "~/.runstream/token"),
      ").",
    ),
    input,
    h("button", { class: "button primary", type: "submit" }, "Continue"),
  );
  replaceChildren(root, form);
  input.focus();
}

window.addEventListener("runstream:unauthorized", () => {
  if (typeof cleanup === "function") cleanup();
  cleanup = undefined;
  for (const client of [...LiveClient.current]) client.close();
  const root = h("div", { class: "view" });
  replaceChildren(main, root);
  tokenPrompt(root, "The server refused the stored token.");
});

window.__studio = {
  charts,
  chartData,
  live: () => [...LiveClient.current],
  navigate,
};

interceptLinks();
onNavigate(render);
render();
