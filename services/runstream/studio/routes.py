"""Serving the built studio: its pages (one ``index.html`` for every page URL) and assets.

The studio is a single-page application: ``/``, ``/compute``, ``/experiments``,
``/experiments/<name>``, ``/runs/<run_id>`` (what ``run.get_portal_url()`` returns)
and ``/compare`` all answer ``index.html``, which the browser never caches; the
assets under ``/assets/`` carry a content hash in their names, so they are cached
for a year. None of these needs the token (``auth.middleware``): they hold no
data, and the studio reads every run through ``/api/``, which does.

When the studio has not been built (``scripts/install`` builds it with npm), the
page URLs answer a short page saying so.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

DIST_DIR = Path(__file__).resolve().parent / "dist"
"""Where ``npm run build`` in ``services/studio`` writes the studio."""

PAGE_PATHS = frozenset({"/", "/compute", "/experiments", "/compare"})
PAGE_PREFIXES = ("/experiments/", "/runs/")
ASSETS_PREFIX = "/assets/"

PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
ASSET_CACHE = "public, max-age=31536000, immutable"

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Runstream: studio not built</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#111827}
code{background:#f3f4f6;padding:.1em .35em;border-radius:4px}</style></head>
<body><h1>The studio has not been built</h1>
<p>This Runstream server is running, and its API answers under <code>/api/v1/</code>, but the web
studio's files are missing from <code>{dist}</code>.</p>
<p>Run <code>scripts/install</code> (it builds the studio with <code>npm ci &amp;&amp; npm run build</code>;
it needs Node.js 20.19 or later), then reload this page.</p></body></html>
"""


def is_studio_path(path: str) -> bool:
    """Whether ``path`` is a page or an asset of the studio (served without a token)."""
    return path in PAGE_PATHS or path.startswith(PAGE_PREFIXES) or path.startswith(ASSETS_PREFIX)


class _Assets(StaticFiles):
    """The hashed asset files, cached for good; a 404 (not a 500) while nothing is built."""

    def built(self) -> bool:
        return self.directory is not None and Path(self.directory).is_dir()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.built():
            await PlainTextResponse("studio not built", status_code=404)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = ASSET_CACHE
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response


class _Index:
    """``index.html``, read again when the build changes it."""

    def __init__(self, dist: Path) -> None:
        self.path = dist / "index.html"
        self._cached: tuple[float, bytes] | None = None

    def read(self) -> bytes | None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._cached = None
            return None
        if self._cached is None or self._cached[0] != mtime:
            self._cached = (mtime, self.path.read_bytes())
        return self._cached[1]

    async def page(self, request: Request) -> Response:
        body = self.read()
        if body is None:
            return HTMLResponse(NOT_BUILT.replace("{dist}", str(self.path.parent)), status_code=503)
        return HTMLResponse(body, headers=PAGE_HEADERS)


def studio_routes(dist: Path = DIST_DIR) -> list[BaseRoute]:
    """The studio's routes: every page URL answers ``index.html``; ``/assets`` the built files."""
    index = _Index(dist)
    pages = ["/", "/compute", "/experiments", "/experiments/{name:path}", "/runs/{run_id}", "/compare"]
    routes: list[BaseRoute] = [Route(path, index.page, methods=["GET"]) for path in pages]
    assets = _Assets(directory=dist / "assets", check_dir=False)
    routes.append(Mount("/assets", app=assets, name="studio-assets"))
    return routes
