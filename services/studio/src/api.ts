// The query API over fetch, with the bearer token kept in localStorage.
//
// `runstream up` prints the studio's address with the token in the URL fragment
// (`/#token=...`): fragments never reach a server or a Referer header. The studio
// moves it into localStorage and removes it from the address bar.

const TOKEN_KEY = "runstream.token";
const WORKSPACE_KEY = "runstream.workspace";

// The workspace every view reads: `?workspace=` in the address (remembered for the
// next visit), else the one used last, else `default`. A token scoped to another
// workspace gets 403 on every call, which the pages show.
export const WORKSPACE = chooseWorkspace();

function chooseWorkspace(): string {
  const asked = new URLSearchParams(location.search).get("workspace");
  if (asked) {
    localStorage.setItem(WORKSPACE_KEY, asked);
    return asked;
  }
  return localStorage.getItem(WORKSPACE_KEY) || "default";
}

export function takeTokenFromFragment(): void {
  if (!location.hash.includes("token=")) return;
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) localStorage.setItem(TOKEN_KEY, token);
  params.delete("token");
  const rest = params.toString();
  history.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}

export function getToken(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string): void {
  localStorage.setItem(TOKEN_KEY, token.trim());
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly parameter: string | null = null,
  ) {
    super(detail);
  }
}

export type Params = Record<string, string | number | boolean | null | undefined | string[]>;

export function apiUrl(path: string, params: Params = {}): string {
  const search = new URLSearchParams();
  if (!("workspace" in params)) search.set("workspace", WORKSPACE);
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
    else search.set(key, String(value));
  }
  return `/api/v1${path}?${search.toString()}`;
}

function headers(): Record<string, string> {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function failure(response: Response): Promise<ApiError> {
  let detail = `${response.status} ${response.statusText}`;
  let parameter: string | null = null;
  try {
    const body = await response.json();
    detail = body.detail ?? body.error ?? detail;
    parameter = body.parameter ?? null;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) window.dispatchEvent(new CustomEvent("runstream:unauthorized", { detail }));
  return new ApiError(response.status, detail, parameter);
}

export async function getJson<T>(path: string, params: Params = {}, signal?: AbortSignal): Promise<T> {
  const response = await fetch(apiUrl(path, params), { headers: headers(), signal });
  if (!response.ok) throw await failure(response);
  return (await response.json()) as T;
}

/** Download a file of the API (it needs the token, so no plain link). */
export async function download(path: string, fallbackName: string): Promise<void> {
  const response = await fetch(apiUrl(path), { headers: headers() });
  if (!response.ok) throw await failure(response);
  const disposition = response.headers.get("Content-Disposition") ?? "";
  const match = /filename\*=UTF-8''([^;]+)/.exec(disposition) ?? /filename="([^"]+)"/.exec(disposition);
  const name = match ? decodeURIComponent(match[1]) : fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function liveUrl(): string {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/api/v1/live?token=${encodeURIComponent(getToken() ?? "")}`;
}

export const enc = encodeURIComponent;
