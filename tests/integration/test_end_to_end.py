"""One metric point the whole way: POST to ingest, read back from the query API, pushed to a websocket.

Runs on both event-log adapters: the embedded local log and real Apache Kafka,
with the real ClickHouse engine (chdb) as the projection store.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import websockets

from runstream.settings import Settings
from tests.conftest import unique
from tests.support import RunningServer, event, eventually, points, running_server


async def recv_json(ws: websockets.ClientConnection, timeout: float = 15.0) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), timeout)
    message: dict[str, Any] = orjson.loads(frame)
    return message


async def test_event_reaches_query_api_and_websocket(settings: Settings) -> None:
    run_id = unique("run")
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
        websockets.connect(f"{server.ws_url}/api/v1/live", additional_headers=server.headers) as ws,
    ):
        await ws.send(orjson.dumps({"op": "subscribe", "sub": "s1", "run_id": run_id}).decode())
        subscribed = await recv_json(ws)
        assert subscribed["type"] == "subscribed" and subscribed["run_id"] == run_id

        batch = [
            event("run.created", run_id, {"name": "first", "compute": "gpu-cluster"}, seq=0),
            event("run.started", run_id, seq=1),
            event("metrics.logged", run_id, points("loss", [0.9, 0.5, "NaN", "Infinity"]), seq=2),
        ]
        response = await http.post("/api/v1/events", content=orjson.dumps(batch))
        assert response.status_code == 200, response.text
        body = response.json()
        assert [a["index"] for a in body["accepted"]] == [0, 1, 2]
        assert body["rejected"] == []

        pushed = [await recv_json(ws) for _ in range(3)]
        assert [m["type"] for m in pushed] == ["event"] * 3
        assert [m["event"]["event_id"] for m in pushed] == [e["event_id"] for e in batch]
        assert [m["cursor"] for m in pushed] == [a["offset"] for a in body["accepted"]]
        assert pushed[2]["event"]["payload"]["points"][2]["value"] == "NaN"

        async def metrics() -> dict[str, Any] | None:
            r = await http.get(f"/api/v1/runs/{run_id}/metrics")
            data: dict[str, Any] = r.json()
            return data if r.status_code == 200 and len(data["metrics"].get("loss", [])) == 4 else None

        loss = (await eventually(metrics))["metrics"]["loss"]
        assert [p["step"] for p in loss] == [0, 1, 2, 3]
        assert [p["value"] for p in loss] == [0.9, 0.5, "NaN", "Infinity"]

        run = (await http.get(f"/api/v1/runs/{run_id}")).json()
        assert run["status"] == "running"
        assert run["name"] == "first" and run["compute"] == "gpu-cluster"
        assert run["created_at"] is not None and run["started_at"] is not None
        assert run["ended_at"] is None

        done = await http.post(
            "/api/v1/events", content=orjson.dumps([event("run.completed", run_id, seq=3)])
        )
        assert done.status_code == 200
        assert (await recv_json(ws))["event"]["type"] == "run.completed"

        async def completed() -> dict[str, Any] | None:
            r = (await http.get(f"/api/v1/runs/{run_id}")).json()
            return r if r["status"] == "completed" else None

        assert (await eventually(completed))["ended_at"] is not None


async def test_same_event_twice_changes_nothing(settings: Settings) -> None:
    run_id = unique("run")
    created = event("run.created", run_id, seq=0)
    logged = event("metrics.logged", run_id, points("acc", [0.1, 0.2, 0.3]), seq=1)
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        for _ in range(2):
            r = await http.post("/api/v1/events", content=orjson.dumps([created, logged]))
            assert r.status_code == 200
        marker = unique("run")
        await http.post("/api/v1/events", content=orjson.dumps([event("run.created", marker)]))
        # Once the marker (appended after both copies) is projected, both copies are too.
        await eventually(lambda: _status(http, marker))
        data = (await http.get(f"/api/v1/runs/{run_id}/metrics")).json()
        assert [p["value"] for p in data["metrics"]["acc"]] == [0.1, 0.2, 0.3]
        runtime = server.app.state.runtime
        rows = await runtime.store.query(
            "SELECT count() FROM run_events FINAL WHERE run_id = {r:String}", {"r": run_id}
        )
        assert rows == [(1,)]


async def test_relogged_step_keeps_the_latest_value(settings: Settings) -> None:
    run_id = unique("run")
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        first = event("metrics.logged", run_id, points("loss", [1.0, 2.0]), seq=1)
        again = event("metrics.logged", run_id, points("loss", ["-Infinity"], start_step=1), seq=2)
        r = await http.post("/api/v1/events", content=orjson.dumps([first, again]))
        assert r.status_code == 200

        async def two_points() -> list[Any] | None:
            resp = await http.get(f"/api/v1/runs/{run_id}/metrics")
            if resp.status_code != 200:
                return None
            loss: list[Any] = resp.json()["metrics"].get("loss", [])
            return loss if loss and loss[-1]["value"] == "-Infinity" else None

        loss = await eventually(two_points)
        assert [(p["step"], p["value"]) for p in loss] == [(0, 1.0), (1, "-Infinity")]


async def _status(http: httpx.AsyncClient, run_id: str) -> str | None:
    r = await http.get(f"/api/v1/runs/{run_id}")
    return r.json()["status"] if r.status_code == 200 else None


async def test_unknown_run_is_404(settings: Settings) -> None:
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        r = await http.get("/api/v1/runs/nope-123")
        assert r.status_code == 404
        assert "nope-123" in r.json()["detail"]
        r = await http.get("/api/v1/runs/nope-123/metrics")
        assert r.status_code == 404


async def test_websocket_resumes_after_its_cursor(settings: Settings) -> None:
    run_id = unique("run")
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        batch = [event("metrics.logged", run_id, points("x", [i]), seq=i) for i in range(6)]
        first = await http.post("/api/v1/events", content=orjson.dumps(batch[:3]))
        cursor = first.json()["accepted"][0]["offset"]
        await http.post("/api/v1/events", content=orjson.dumps(batch[3:]))
        await _wait_hub_caught_up(server)
        async with websockets.connect(f"{server.ws_url}/api/v1/live?token={server.token}") as ws:
            sub = {"op": "subscribe", "sub": "a", "run_id": run_id, "cursor": cursor}
            await ws.send(orjson.dumps(sub).decode())
            assert (await recv_json(ws))["type"] == "subscribed"
            replayed = [await recv_json(ws) for _ in range(5)]
            assert [m["event"]["event_id"] for m in replayed] == [e["event_id"] for e in batch[1:]]
            live = event("metrics.logged", run_id, points("x", [99]), seq=6)
            await http.post("/api/v1/events", content=orjson.dumps([live]))
            nxt = await recv_json(ws)
            assert nxt["event"]["event_id"] == live["event_id"]
            assert nxt["cursor"] == replayed[-1]["cursor"] + 1


async def _wait_hub_caught_up(server: RunningServer) -> None:
    hub = server.app.state.runtime.hub
    log = server.app.state.runtime.log
    topic = server.app.state.runtime.settings.events_topic

    async def caught_up() -> bool:
        ends = await log.end_offsets(topic)
        return all(hub._positions.get(p, 0) >= end for p, end in ends.items())

    await eventually(caught_up)
