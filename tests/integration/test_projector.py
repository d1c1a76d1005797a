"""The projector against the real log and the real ClickHouse engine."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
import pytest

from runstream.eventlog.port import EventLog, LogRecord, TopicPartition
from runstream.events.codec import encode_event
from runstream.server.app import Service
from runstream.settings import Settings
from tests.conftest import unique
from tests.support import event, eventually, points, running_server


async def read_topic(log: EventLog, topic: str, count: int) -> list[LogRecord]:
    consumer = log.consumer([topic])
    await consumer.start()
    out: list[LogRecord] = []
    try:
        for _ in range(60):
            out += await consumer.fetch(100, timeout=0.5)
            if len(out) >= count:
                break
    finally:
        await consumer.close()
    return out


async def test_malformed_events_on_the_log_go_to_dead_letter_and_do_not_stall(
    settings: Settings,
) -> None:
    """Events written straight to the topic (not through ingest) are checked again."""
    run_id = unique("run")
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        log: EventLog = server.app.state.runtime.log
        future = event("run.created", run_id)
        future["schema_version"] = 7
        good = event("metrics.logged", run_id, points("loss", [0.25]), seq=1)
        key = run_id.encode()
        await log.append(
            settings.events_topic,
            [(key, b"{not json"), (key, encode_event(future)), (key, encode_event(good))],
        )

        async def projected() -> Any:
            r = await http.get(f"/api/v1/runs/{run_id}/metrics")
            return r.json()["metrics"] if r.status_code == 200 else None

        assert (await eventually(projected))["loss"][0]["value"] == 0.25
        dead = await read_topic(log, settings.deadletter_topic, 2)
        reasons = [orjson.loads(r.value) for r in dead]
        assert len(reasons) == 2
        assert reasons[0]["reason"]["message"].startswith("invalid JSON")
        assert reasons[0]["value"] == "{not json"
        assert reasons[1]["reason"]["field"] == "schema_version"
        assert reasons[1]["reason"]["rule"] == "maximum"
        assert all(r.key == key for r in dead)


async def test_projector_resumes_where_it_left_off_without_duplicates(settings: Settings) -> None:
    """A restarted projector continues from its stored position; nothing twice, nothing lost."""
    run_id = unique("run")
    first = [event("metrics.logged", run_id, points("m", [i], start_step=i), seq=i) for i in range(5)]
    second = [event("metrics.logged", run_id, points("m", [i], start_step=i), seq=i) for i in range(5, 9)]
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        await http.post("/api/v1/events", content=orjson.dumps(first))
        await eventually(lambda: _count(server.app.state.runtime, run_id, 5))
    # Ingest alone (no projector) accepts more events while the projector is down.
    async with (
        running_server(settings, frozenset({Service.INGEST})) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        assert (await http.post("/api/v1/events", content=orjson.dumps(second))).status_code == 200
    async with running_server(settings) as server:
        runtime = server.app.state.runtime
        await eventually(lambda: _count(runtime, run_id, 9))
        rows = await runtime.store.query(
            "SELECT count(), uniqExact(event_id) FROM metric_points WHERE run_id = {r:String}",
            {"r": run_id},
        )
        assert rows == [(9, 9)]


async def test_records_deleted_by_retention_before_projection_are_reported_not_skipped_silently(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = unique("run")
    batch = [event("metrics.logged", run_id, points("m", [i], start_step=i), seq=i) for i in range(15)]
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        await http.post("/api/v1/events", content=orjson.dumps(batch[:5]))
        await eventually(lambda: _count(server.app.state.runtime, run_id, 5))
    async with (
        running_server(settings, frozenset({Service.INGEST})) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        accepted = (await http.post("/api/v1/events", content=orjson.dumps(batch[5:]))).json()["accepted"]
        partition, first = accepted[0]["partition"], accepted[0]["offset"]
        log = server.app.state.runtime.log
        await log.delete_records_before(settings.events_topic, {partition: first + 7})  # retention
    with caplog.at_level(logging.ERROR, logger="runstream.projector"):
        async with running_server(settings) as server:
            runtime = server.app.state.runtime
            await eventually(lambda: _count(runtime, run_id, 8))
            tp = TopicPartition(settings.events_topic, partition)
            assert runtime.projector.skipped == {tp: 7}
    assert f"offsets {first}..{first + 6} (7 records) were deleted by the log's retention" in caplog.text


async def _count(runtime: Any, run_id: str, expected: int) -> bool:
    rows = await runtime.store.query(
        "SELECT count() FROM metric_points FINAL WHERE run_id = {r:String}", {"r": run_id}
    )
    return bool(rows[0][0] == expected)
