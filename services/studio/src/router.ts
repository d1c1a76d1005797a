// A tiny history router: links with data-link (or any same-origin <a>) navigate without a reload.

export interface Route {
  path: string;
  parts: string[];
  query: URLSearchParams;
}

export type Cleanup = () => void;
export type PageFn = (root: HTMLElement, route: Route) => Cleanup | void;

type Listener = () => void;
const listeners = new Set<Listener>();

export function current(): Route {
  const path = location.pathname;
  const parts = path.split("/").filter(Boolean).map((p) => decodeURIComponent(p));
  return { path, parts, query: new URLSearchParams(location.search) };
}

export function navigate(url: string, replace = false): void {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  for (const listener of listeners) listener();
}

/** Change the query string of the current page without a new history entry or a re-render. */
export function setQuery(query: URLSearchParams): void {
  const search = query.toString().replace(/%28/g, "(").replace(/%29/g, ")").replace(/%2C/g, ",");
  history.replaceState(null, "", location.pathname + (search ? `?${search}` : ""));
}

export function onNavigate(listener: Listener): void {
  listeners.add(listener);
  window.addEventListener("popstate", listener);
}

export function interceptLinks(): void {
  document.addEventListener("click", (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    const link = (event.target as Element).closest?.("a");
    if (!link || link.target || link.hasAttribute("download")) return;
    const url = new URL(link.href, location.href);
    if (url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
    event.preventDefault();
    navigate(url.pathname + url.search);
  });
}

export const paths = {
  experiments: () => "/experiments",
  experiment: (name: string) => `/experiments/${encodeURIComponent(name)}`,
  run: (id: string) => `/runs/${encodeURIComponent(id)}`,
  compute: (target?: string) => (target ? `/compute?target=${encodeURIComponent(target)}` : "/compute"),
  compare: (runs: string[], metrics: string[]) => {
    const q = new URLSearchParams({ runs: runs.join(",") });
    if (metrics.length) q.set("metrics", metrics.join(","));
    return `/compare?${q.toString().replace(/%2C/g, ",")}`;
  },
};
