"""Resuming a run subscription from its cursor: no gap, no duplicate.

- a property-based test drops the socket at random points of a stream being
  produced and reconnects with the last cursor; what the client received must be
  exactly what was produced;
- resuming after the gateway restarts (events produced while it was down);
- resuming from a cursor older than the log still holds (ClickHouse raw_events).

All against the real stack on both event-log adapters.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runstream.eventlog.factory import open_event_log
from runstream.events.partitioning import partition_for_key
from runstream.gateway.snapshots import GatewayStore
from runstream.settings import Settings
from tests.conftest import isolated_settings, unique
from tests.support import RunningServer, event, eventually, points, running_server


class ServerThread:
    """The real server in an event loop of its own thread, for tests driven by hypothesis."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        self.context = running_server(self.settings)
        server: RunningServer = asyncio.run_coroutine_threadsafe(self.context.__aenter__(), self.loop).result(
            60
        )
        return server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.context.__aexit__(None, None, None), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module", params=["local", "kafka"])
def shared_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, chdb_path: Path
) -> Iterator[RunningServer]:
    kafka = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    settings = isolated_settings(
        tmp_path_factory.mktemp("data"), chdb_path, kafka_bootstrap=kafka, partitions=2
    )
    with ServerThread(settings) as server:
        yield server


async def recv(ws: websockets.ClientConnection, timeout: float = 15.0) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


def received_events(frame: dict[str, Any]) -> list[tuple[int, str]]:
    if frame["type"] == "event":
        return [(frame["cursor"], frame["event"]["event_id"])]
    if frame["type"] == "events":
        return [(c, e["event_id"]) for c, e in zip(frame["cursors"], frame["events"], strict=True)]
    return []


async def follow_with_drops(
    server: RunningServer, run_id: str, expected: int, drops: set[int], max_rate: float | None
) -> list[tuple[int, str]]:
    """Follow ``run_id`` from its start, dropping the socket after the n-th event for n in
    ``drops`` (0: right after subscribing), reconnecting each time with the last cursor."""
    got: list[tuple[int, str]] = []
    cursor = -1
    pending_drop = 0 in drops
    while len(got) < expected:
        async with websockets.connect(f"{server.ws_url}/api/v1/live?token={server.token}") as ws:
            message: dict[str, Any] = {"op": "subscribe", "sub": "s", "run_id": run_id, "cursor": cursor}
            if max_rate is not None:
                message["max_rate"] = max_rate
            await ws.send(orjson.dumps(message).decode())
            if pending_drop:
                pending_drop = False
                ws.transport.abort()
                continue
            while len(got) < expected:
                frame = await recv(ws)
                if frame["type"] == "resync":
                    cursor = frame["cursor"]
                    break
                assert frame["type"] in ("subscribed", "event", "events"), frame
                for item in received_events(frame):
                    got.append(item)
                    cursor = item[0]
                    if len(got) in drops:
                        drops.discard(len(got))
                        pending_drop = True
                if pending_drop:
                    pending_drop = False
                    ws.transport.abort()  # abrupt: no closing handshake
                    break
    return got


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batches=st.lists(st.integers(1, 8), min_size=1, max_size=8),
    drops=st.sets(st.integers(0, 40), max_size=5),
    max_rate=st.sampled_from([None, None, 200.0]),
    seed=st.integers(0, 2**16),
)
def test_dropping_the_socket_anywhere_and_resuming_gives_exactly_what_was_produced(
    shared_server: RunningServer, batches: list[int], drops: set[int], max_rate: float | None, seed: int
) -> None:
    server = shared_server
    run_id = unique("run")
    rng = random.Random(seed)

    async def scenario() -> None:
        produced: list[str] = []
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http:

            async def produce() -> None:
                seq = 0
                for size in batches:
                    batch = []
                    for _ in range(size):
                        batch.append(event("metrics.logged", run_id, points("x", [seq]), seq=seq))
                        seq += 1
                    produced.extend(e["event_id"] for e in batch)
                    mixed = list(batch)
                    for _ in range(rng.randint(0, 3)):  # other runs' events in between
                        mixed.insert(rng.randint(0, len(mixed)), event("run.created", unique("noise")))
                    response = await http.post("/api/v1/events", content=orjson.dumps(mixed))
                    assert response.status_code == 200, response.text
                    await asyncio.sleep(rng.choice([0, 0, 0.005, 0.03]))

            producer = asyncio.create_task(produce())
            await asyncio.sleep(rng.choice([0, 0.01, 0.05]))
            got = await asyncio.wait_for(follow_with_drops(server, run_id, sum(batches), drops, max_rate), 60)
            await producer
        assert [event_id for _, event_id in got] == produced
        cursors = [c for c, _ in got]
        assert cursors == sorted(set(cursors))

    asyncio.run(scenario())


async def test_resume_after_a_gateway_restart(settings: Settings) -> None:
    run_id = unique("run")
    sent = [event("metrics.logged", run_id, points("x", [i]), seq=i) for i in range(12)]
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
        websockets.connect(f"{server.ws_url}/api/v1/live", additional_headers=server.headers) as ws,
    ):
        await ws.send(orjson.dumps({"op": "subscribe", "sub": "s", "run_id": run_id}).decode())
        assert (await recv(ws))["type"] == "subscribed"
        await http.post("/api/v1/events", content=orjson.dumps(sent[:4]))
        first = [item for _ in range(4) for item in received_events(await recv(ws))]
    cursor = first[-1][0]
    # While no gateway runs, the job goes on logging straight to the log.
    log = open_event_log(settings)
    await log.start()
    await log.append(settings.events_topic, [(run_id.encode(), orjson.dumps(e)) for e in sent[4:8]])
    await log.close()
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        await http.post("/api/v1/events", content=orjson.dumps(sent[8:10]))
        async with websockets.connect(
            f"{server.ws_url}/api/v1/live", additional_headers=server.headers
        ) as ws:
            subscribe = {"op": "subscribe", "sub": "s", "run_id": run_id, "cursor": cursor}
            await ws.send(orjson.dumps(subscribe).decode())
            assert (await recv(ws))["cursor"] == cursor
            rest = [item for _ in range(6) for item in received_events(await recv(ws))]
            await http.post("/api/v1/events", content=orjson.dumps(sent[10:]))
            rest += [item for _ in range(2) for item in received_events(await recv(ws))]
    assert [e for _, e in first + rest] == [e["event_id"] for e in sent]


async def test_a_cursor_older_than_the_log_resumes_from_clickhouse(settings: Settings) -> None:
    run_id = unique("run")
    sent = [event("metrics.logged", run_id, points("x", [i]), seq=i) for i in range(10)]
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        response = await http.post("/api/v1/events", content=orjson.dumps(sent))
        offsets: list[int] = [a["offset"] for a in response.json()["accepted"]]
        partition = partition_for_key(run_id.encode(), settings.partitions)
        store: GatewayStore = server.app.state.runtime.hub.store

        async def projected() -> bool:
            applied = await store.applied_positions()
            return applied.get(partition, 0) > offsets[-1]

        await eventually(projected)
    # Retention removes the run's first six events from the log.
    log = open_event_log(settings)
    await log.start()
    await log.delete_records_before(settings.events_topic, {partition: offsets[6]})
    assert (await log.begin_offsets(settings.events_topic))[partition] == offsets[6]
    await log.close()
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
        websockets.connect(f"{server.ws_url}/api/v1/live", additional_headers=server.headers) as ws,
    ):
        for sub, cursor, count in (("all", -1, 10), ("mid", offsets[2], 7)):
            await ws.send(
                orjson.dumps({"op": "subscribe", "sub": sub, "run_id": run_id, "cursor": cursor}).decode()
            )
            assert (await recv(ws))["type"] == "subscribed"
            got = [item for _ in range(count) for item in received_events(await recv(ws))]
            assert [e for _, e in got] == [e["event_id"] for e in sent[10 - count :]]
            assert [c for c, _ in got] == offsets[10 - count :]
        live = event("metrics.logged", run_id, points("x", [99]), seq=10)
        await http.post("/api/v1/events", content=orjson.dumps([live]))
        frames = [await recv(ws), await recv(ws)]
        assert {f["sub"] for f in frames} == {"all", "mid"}
        assert all(f["event"]["event_id"] == live["event_id"] for f in frames)
