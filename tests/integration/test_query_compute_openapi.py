"""Compute targets with their queued and active runs; the OpenAPI document covers every route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from runstream.settings import Settings
from tests.integration.query_helpers import event, make_settings, post
from tests.support import RunningServer, running_server


@pytest.fixture
def settings(tmp_path: Path, chdb_path: Path) -> Settings:
    return make_settings(tmp_path, chdb_path)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    async with running_server(settings) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60) as client:
        yield client


async def test_compute_targets_with_queued_and_active_runs_children_nested(http: httpx.AsyncClient) -> None:
    events = [
        event("run.created", "sweep", {"compute": "gpu"}, seq=0),
        event("run.started", "sweep", seq=1),
        event("run.created", "trial-1", {"parent_run_id": "sweep"}, seq=0),  # on its parent's target
        event("run.started", "trial-1", seq=1),
        event("run.created", "trial-2", {"parent_run_id": "sweep", "compute": "gpu"}, seq=0),
        event("run.queued", "trial-2", seq=1),
        event("run.created", "waiting", {"compute": "gpu"}, seq=0),
        event("run.queued", "waiting", seq=1),
        event("run.created", "done", {"compute": "gpu"}, seq=0),
        event("run.completed", "done", seq=1),
        event("run.created", "cpu-job", {"compute": "cpu"}, seq=0, experiment="other"),
        event("run.completed", "cpu-job", seq=1, experiment="other"),
    ]
    await post(http, events)
    body = (await http.get("/api/v1/compute")).json()
    targets = {t["name"]: t for t in body["targets"]}
    assert set(targets) == {"gpu", "cpu"}
    gpu = targets["gpu"]
    assert (gpu["running"], gpu["queued"], gpu["runs_total"]) == (2, 2, 4)
    assert [r["run_id"] for r in gpu["runs"]] == ["sweep", "waiting"]
    sweep = gpu["runs"][0]
    assert [(c["run_id"], c["status"]) for c in sweep["children"]] == [
        ("trial-1", "running"),
        ("trial-2", "queued"),
    ]
    assert targets["cpu"]["runs"] == [] and targets["cpu"]["running"] == 0
    one = (await http.get("/api/v1/compute/gpu")).json()
    assert one == gpu
    assert (await http.get("/api/v1/compute/tpu")).status_code == 404


async def test_openapi_document_is_valid_and_covers_every_route(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    response = await http.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)  # raises on anything that is not OpenAPI 3.1
    assert document["openapi"].startswith("3.1")
    documented = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    routes = {
        (route.path.replace(":path", ""), method)
        for route in server.app.routes
        if isinstance(route, Route) and route.path.startswith("/api/v1") and route.methods
        for method in route.methods - {"HEAD"}
    }
    assert routes, "the application has routes"
    assert routes <= documented, f"routes missing from the OpenAPI document: {sorted(routes - documented)}"
    async with httpx.AsyncClient(base_url=server.base_url) as anonymous:
        assert (await anonymous.get("/api/v1/openapi.json")).status_code == 401
