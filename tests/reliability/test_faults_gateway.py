"""Gateway faults (issue 7, faults 8 and 9), on the embedded log and on real Kafka.

- F8: the gateway process is killed (SIGKILL) and started again while a job logs and
  200 websocket subscribers follow its runs; every subscriber reconnects to the new
  process with its last cursor and ends up with exactly the acknowledged events of
  its run, in order: lost = 0, duplicated = 0 (per subscriber, through the checker).
- F9: a subscriber whose cursor is older than both the log's retention and what
  ClickHouse still holds gets an explicit ``cursor_unavailable`` error (and the
  Python client raises it), never a stream that silently skips the missing events.

Figures are printed (run pytest with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from runstream.events.partitioning import partition_for_key
from runstream.live import Event, LiveClient, SubscriptionError
from runstream.server.app import Service
from runstream.settings import Settings
from tests.conftest import unique
from tests.reliability.checker import DeliveryLedger
from tests.support import RunningServer, event, eventually, points, running_server

BACKEND = frozenset({Service.INGEST, Service.PROJECTOR, Service.QUERY})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def recv(ws: websockets.ClientConnection, timeout: float = 20.0) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


def stream_events(frame: dict[str, Any]) -> list[tuple[int, str]]:
    if frame["type"] == "event":
        return [(frame["cursor"], frame["event"]["event_id"])]
    if frame["type"] == "events":
        return [(c, e["event_id"]) for c, e in zip(frame["cursors"], frame["events"], strict=True)]
    return []


async def wait_projected(server: RunningServer, partition: int, offset: int) -> None:
    """Wait until the projector applied ``partition`` past ``offset``."""
    store = server.app.state.runtime.store

    async def projected() -> bool:
        rows = await store.query(
            "SELECT max(next_offset) FROM projector_offsets WHERE partition = {p:UInt32}", {"p": partition}
        )
        return bool(rows) and int(rows[0][0]) > offset

    await eventually(projected, timeout=60)


# ---------------------------------------------------------------------------------------------
# F8: the gateway killed and restarted under 200 subscribers
# ---------------------------------------------------------------------------------------------

SUBSCRIBERS = 200
RUNS = 10
JOB_INTERVAL = 0.05
"""Seconds between two requests of the job (one event for each of its runs per request)."""


class GatewayProcess:
    """``runstream gateway`` in a process of its own on a fixed port, killed with SIGKILL.

    It reads the same event log as the test's backend (the local log's file, or the
    Kafka topics). Its ClickHouse is an embedded one of its own (chdb opens one data
    folder per process): the subscribers resume from cursors the log still holds, so
    it needs none of the projections.
    """

    def __init__(self, settings: Settings, port: int, workdir: Path) -> None:
        self.settings = settings
        self.port = port
        self.workdir = workdir
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
        env.update(
            RUNSTREAM_DATA_DIR=str(self.settings.data_dir),
            RUNSTREAM_CLICKHOUSE=f"chdb://{self.workdir / 'gateway-clickhouse'}",
            RUNSTREAM_CLICKHOUSE_DATABASE=self.settings.clickhouse_database,
            RUNSTREAM_TOPIC_PREFIX=self.settings.topic_prefix,
            RUNSTREAM_PARTITIONS=str(self.settings.partitions),
            RUNSTREAM_TOKEN=str(self.settings.token),
        )
        if self.settings.kafka_bootstrap:
            env["RUNSTREAM_KAFKA"] = self.settings.kafka_bootstrap
        return env

    async def start(self) -> float:
        """Start the process; the monotonic time it answered ``/healthz``."""
        self.starts += 1
        output = (self.workdir / f"gateway-{self.starts}.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "runstream"),
            "gateway",
            "--port",
            str(self.port),
            env=self.environment(),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
        output.close()
        async with httpx.AsyncClient(base_url=self.base_url) as http:

            async def healthy() -> bool:
                assert self.process is not None and self.process.returncode is None, "the gateway exited"
                with contextlib.suppress(httpx.TransportError):
                    return (await http.get("/healthz", timeout=2)).status_code == 200
                return False

            await eventually(healthy, timeout=120, interval=0.05)
        return time.monotonic()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(self.process.wait(), 30)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                await self.kill()


@dataclass
class Subscriber:
    """One websocket client following one run from its first event, reconnecting with its cursor."""

    run_id: str
    url: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = -1
    received: int = 0
    subscribed_at: list[float] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    async def follow(self) -> None:
        delay = 0.05
        while True:
            try:
                async with websockets.connect(self.url, open_timeout=30, max_size=None) as ws:
                    delay = 0.05
                    await self._subscribe(ws)
                    async for raw in ws:
                        await self._on_frame(ws, orjson.loads(raw))
            except (ConnectionClosed, OSError, TimeoutError, InvalidHandshake):
                pass
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.5)

    async def _subscribe(self, ws: websockets.ClientConnection) -> None:
        message = {"op": "subscribe", "sub": "run", "run_id": self.run_id, "cursor": self.cursor}
        await ws.send(orjson.dumps(message).decode())

    async def _on_frame(self, ws: websockets.ClientConnection, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "heartbeat":
            await ws.send('{"op": "pong"}')
        elif kind == "subscribed":
            self.subscribed_at.append(time.monotonic())
        elif kind in ("event", "events"):
            self.frames.append(frame)
            self.received += len(stream_events(frame))
            self.cursor = frame["cursor"]
        elif kind == "resync":
            if frame["cursor"] is not None:
                self.cursor = frame["cursor"]
            await self._subscribe(ws)
        else:
            self.errors.append(frame)


@contextlib.asynccontextmanager
async def following(subscribers: list[Subscriber]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.follow()) for s in subscribers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def job(
    http: httpx.AsyncClient, run_ids: list[str], ledger: DeliveryLedger, stop: asyncio.Event
) -> int:
    """Log one point to each run every ``JOB_INTERVAL`` until ``stop``; acknowledged events go to
    ``ledger``. Returns the number of requests made."""
    seq = 0
    requests = 0
    while not stop.is_set():
        batch = [
            event("metrics.logged", r, points("loss", [seq / 7], start_step=seq), seq=seq) for r in run_ids
        ]
        response = await http.post("/api/v1/events", content=orjson.dumps(batch))
        assert response.status_code == 200, response.text
        ledger.acknowledge_all(batch)
        seq += 1
        requests += 1
        await asyncio.sleep(JOB_INTERVAL)
    return requests


async def test_f8_gateway_killed_and_restarted_under_200_subscribers_loses_and_repeats_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """200 subscribers (20 on each of 10 runs) follow a job's runs from their first event; the
    gateway process is SIGKILLed and, 2 s later, started again on the same port while the job
    goes on logging. Each subscriber reconnects with its last cursor and ends with every
    acknowledged event of its run exactly once, in log order."""
    settings = settings.with_changes(partitions=4)
    gateway = GatewayProcess(settings, free_port(), tmp_path)
    run_ids = [unique("run") for _ in range(RUNS)]
    ledger = DeliveryLedger()
    url = f"ws://127.0.0.1:{gateway.port}/api/v1/live?token={settings.token}"
    subscribers = [Subscriber(run_ids[i % RUNS], url) for i in range(SUBSCRIBERS)]
    stop_job = asyncio.Event()
    async with (
        running_server(settings, BACKEND) as backend,
        httpx.AsyncClient(base_url=backend.base_url, headers=backend.headers, timeout=30) as http,
    ):
        await gateway.start()
        try:
            async with following(subscribers):
                await eventually(lambda: _all(s.subscribed_at for s in subscribers), timeout=120)
                producer = asyncio.create_task(job(http, run_ids, ledger, stop_job))
                await eventually(lambda: _all(s.received >= 20 for s in subscribers), timeout=120)
                before_kill = sum(s.received for s in subscribers)
                await gateway.kill()
                killed_at = time.monotonic()
                await asyncio.sleep(2.0)
                up_at = await gateway.start()
                await eventually(lambda: _all(len(s.subscribed_at) >= 2 for s in subscribers), timeout=120)
                first_served = min(s.subscribed_at[1] for s in subscribers)
                resumed_at = max(s.subscribed_at[1] for s in subscribers)
                acked_at_resume = {r: _acked(ledger, r) for r in run_ids}
                caught_up_at = await eventually(
                    lambda: _caught_up(subscribers, acked_at_resume), timeout=120, interval=0.05
                )
                await asyncio.sleep(1.0)
                stop_job.set()
                requests = await producer
                final = {r: _acked(ledger, r) for r in run_ids}
                await eventually(lambda: _caught_up(subscribers, final), timeout=120)
        finally:
            stop_job.set()
            await gateway.stop()
    reports = [ledger.report_stream(s.frames, [s.run_id]) for s in subscribers]
    totals = {
        k: sum(r.figures()[k] for r in reports) for k in ("lost", "duplicated", "out_of_order", "unseen")
    }
    per_subscriber = sorted({r.total for r in reports})
    path = "kafka" if settings.kafka_bootstrap else "local"
    print(
        f"\nF8 [{path}]: {SUBSCRIBERS} subscribers on {RUNS} runs,"
        f" {per_subscriber[0]}-{per_subscriber[-1]} events per subscriber ({requests} job requests),"
        f" {before_kill} events delivered before the kill; gateway down {up_at - killed_at:.2f} s"
        f" (SIGKILL to /healthz answering); the new gateway served its first subscriber"
        f" {first_served - killed_at:.2f} s after the kill, all {SUBSCRIBERS} had resumed"
        f" {resumed_at - first_served:.2f} s later and were caught up with everything acknowledged"
        f" by then {caught_up_at - first_served:.2f} s after the first;"
        f" lost={totals['lost']} duplicated={totals['duplicated']} out_of_order={totals['out_of_order']}"
        f" unseen={totals['unseen']}"
    )
    assert all(not s.errors for s in subscribers), [s.errors for s in subscribers if s.errors][:3]
    assert all(len(s.subscribed_at) >= 2 for s in subscribers)
    for subscriber, report in zip(subscribers, reports, strict=True):
        report.assert_clean()
        cursors = [c for f in subscriber.frames for c, _ in stream_events(f)]
        assert cursors == sorted(set(cursors)), f"cursors of {subscriber.run_id} not strictly increasing"


async def _all(flags: Any) -> bool:
    return all(flags)


def _acked(ledger: DeliveryLedger, run_id: str) -> int:
    return sum(1 for e in ledger.events if e.run_id == run_id)


async def _caught_up(subscribers: list[Subscriber], acked: dict[str, int]) -> float | None:
    if all(s.received >= acked[s.run_id] for s in subscribers):
        return time.monotonic()
    return None


async def test_f8_a_restarted_gateway_reads_back_recent_records_and_resumes_older_cursors_from_the_log(
    settings: Settings,
) -> None:
    """A new gateway process holds the latest records in memory from the start (so that 200
    reconnecting clients do not each read the log); a cursor older than what memory holds is
    resumed from the log, exactly."""
    run_id = unique("run")
    sent = [event("metrics.logged", run_id, points("x", [i], start_step=i), seq=i) for i in range(12)]
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        response = await http.post("/api/v1/events", content=orjson.dumps(sent[:8]))
        offsets: list[int] = [a["offset"] for a in response.json()["accepted"]]
    partition = partition_for_key(run_id.encode(), settings.partitions)
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
        websockets.connect(f"{server.ws_url}/api/v1/live", additional_headers=server.headers) as ws,
    ):
        hub = server.app.state.runtime.hub
        assert hub.recent(partition).start <= offsets[0], "the new gateway did not read recent records back"
        subscribe = {"op": "subscribe", "sub": "warm", "run_id": run_id, "cursor": offsets[1]}
        await ws.send(orjson.dumps(subscribe).decode())
        assert (await recv(ws))["cursor"] == offsets[1]
        warm = [item for _ in range(6) for item in stream_events(await recv(ws))]
        assert [e for _, e in warm] == [e["event_id"] for e in sent[2:8]]

        hub.reset_positions(hub.positions())  # memory now starts at the tail: older cursors need the log
        await http.post("/api/v1/events", content=orjson.dumps(sent[8:]))
        live = [item for _ in range(4) for item in stream_events(await recv(ws))]
        assert [e for _, e in live] == [e["event_id"] for e in sent[8:]]
        subscribe = {"op": "subscribe", "sub": "cold", "run_id": run_id, "cursor": offsets[3]}
        await ws.send(orjson.dumps(subscribe).decode())
        assert (await recv(ws))["cursor"] == offsets[3]
        cold = [item for _ in range(8) for item in stream_events(await recv(ws))]
        assert [e for _, e in cold] == [e["event_id"] for e in sent[4:]]


# ---------------------------------------------------------------------------------------------
# F9: a cursor nothing can replay any more
# ---------------------------------------------------------------------------------------------


async def test_f9_a_cursor_older_than_log_and_clickhouse_gets_an_explicit_error_not_a_gap(
    settings: Settings,
) -> None:
    """Retention removed the run's first 6 events from the log and ClickHouse's own retention
    the first 3 from ``raw_events``: a cursor needing any of those 3 ends with
    ``cursor_unavailable`` (the Python client raises it); a cursor just after them replays
    the other 7 exactly, then live."""
    run_id = unique("run")
    sent = [event("metrics.logged", run_id, points("x", [i]), seq=i) for i in range(10)]
    partition = partition_for_key(run_id.encode(), settings.partitions)
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        response = await http.post("/api/v1/events", content=orjson.dumps(sent))
        assert response.status_code == 200, response.text
        offsets: list[int] = [a["offset"] for a in response.json()["accepted"]]
        await wait_projected(server, partition, offsets[-1])
        runtime = server.app.state.runtime
        await runtime.log.delete_records_before(settings.events_topic, {partition: offsets[6]})
        await runtime.store.command(
            "ALTER TABLE raw_events DELETE WHERE topic = {topic:String} AND partition = {p:UInt32}"
            " AND offset < {cut:UInt64} SETTINGS mutations_sync = 2",
            {"topic": settings.events_topic, "p": partition, "cut": offsets[3]},
        )
    # A new gateway process: nothing of the run is in its memory.
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
        websockets.connect(f"{server.ws_url}/api/v1/live", additional_headers=server.headers) as ws,
    ):
        for sub, cursor in (("from-start", -1), ("mid-hole", offsets[1])):
            await ws.send(
                orjson.dumps({"op": "subscribe", "sub": sub, "run_id": run_id, "cursor": cursor}).decode()
            )
            assert (await recv(ws))["type"] == "subscribed"
            refused = await recv(ws)
            assert refused["type"] == "error" and refused["sub"] == sub, refused
            assert refused["code"] == "cursor_unavailable", refused
            assert "no longer" in refused["detail"] and str(partition) in refused["detail"], refused
        await ws.send(
            orjson.dumps({"op": "subscribe", "sub": "held", "run_id": run_id, "cursor": offsets[2]}).decode()
        )
        assert (await recv(ws))["type"] == "subscribed"
        replayed = [item for _ in range(7) for item in stream_events(await recv(ws))]
        assert [e for _, e in replayed] == [e["event_id"] for e in sent[3:]]
        live = event("metrics.logged", run_id, points("x", [10], start_step=10), seq=10)
        await http.post("/api/v1/events", content=orjson.dumps([live]))
        assert stream_events(await recv(ws))[0][1] == live["event_id"]

        async with LiveClient(server.base_url, server.token) as client:
            received: list[Event] = []
            with pytest.raises(SubscriptionError) as ended:
                async for message in client.subscribe_run(run_id, cursor=offsets[0]):
                    if isinstance(message, Event):
                        received.append(message)
            assert ended.value.code == "cursor_unavailable"
            assert received == []
    print(
        f"\nF9 [{(settings.kafka_bootstrap and 'kafka') or 'local'}]: log begins at offset {offsets[6]},"
        f" raw_events at {offsets[3]}; cursors {-1} and {offsets[1]} -> cursor_unavailable,"
        f" cursor {offsets[2]} -> 7 events replayed exactly"
    )
