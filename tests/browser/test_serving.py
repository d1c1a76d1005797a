"""Serving the studio: pages and assets without a token, the API still behind it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware

from runstream.auth.middleware import BearerAuthMiddleware
from runstream.auth.registry import TokenRegistry
from runstream.cli.main import studio_url
from runstream.settings import Settings
from runstream.studio import studio_routes
from tests.support import running_server

PAGES = [
    "/",
    "/compute",
    "/experiments",
    "/experiments/mnist",
    "/experiments/a/b%20c",
    "/runs/run-1",
    "/compare?runs=a,b&metrics=loss",
]
INDEX = '<!doctype html><div id="app"></div><script type="module" src="/assets/app-1a2b.js"></script>'


def built(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "app-1a2b.js").write_text("console.log('studio')")
    return dist


def client_for(dist: Path) -> httpx.AsyncClient:
    app = Starlette(
        routes=studio_routes(dist), middleware=[Middleware(BearerAuthMiddleware, registry=TokenRegistry("t"))]
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://studio")


async def test_every_page_url_answers_the_index_without_a_token(tmp_path: Path) -> None:
    async with client_for(built(tmp_path)) as client:
        for path in PAGES:
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.text == INDEX
            assert response.headers["cache-control"] == "no-cache"
            assert "default-src 'self'" in response.headers["content-security-policy"]
        asset = await client.get("/assets/app-1a2b.js")
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert (await client.get("/assets/missing.js")).status_code == 404
        assert (await client.get("/assets/%2E%2E/index.html")).status_code == 404
        assert (await client.get("/elsewhere")).status_code == 401


async def test_a_studio_that_was_not_built_says_how_to_build_it(tmp_path: Path) -> None:
    async with client_for(tmp_path / "nothing") as client:
        response = await client.get("/runs/run-1")
        assert response.status_code == 503
        assert "scripts/install" in response.text
        assert (await client.get("/assets/app.js")).status_code == 404


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_the_api_keeps_its_token_beside_the_studio(settings: Settings) -> None:
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        for path in ("/", "/runs/run-1", "/compute"):
            assert (await http.get(path)).status_code in (200, 503), path  # 503 in a checkout never built
        for path in ("/api/v1/experiments", "/api/v1/runs/r-1", "/api/v1/compute", "/api/runs/r-1", "/nope"):
            assert (await http.get(path)).status_code == 401, path
        ok = await http.get("/api/v1/experiments", headers=server.headers)
        assert ok.status_code == 200


def test_runstream_up_prints_the_studio_address_with_the_token_in_the_fragment(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, port=8555)
    assert studio_url(settings, "rs_a/b+c") == "http://127.0.0.1:8555/#token=rs_a%2Fb%2Bc"
    assert studio_url(settings.with_changes(host="0.0.0.0"), None) == "http://127.0.0.1:8555/"
    assert studio_url(settings.with_changes(host="::1", port=9000), "t") == "http://[::1]:9000/#token=t"
