"""Re-delivered events change no answer: the same records applied twice, on both event logs."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from runstream.eventlog.port import EventLog, LogRecord
from runstream.events.codec import encode_event
from runstream.projector.projector import Projector
from runstream.settings import Settings
from tests.integration.query_helpers import answers, brute_summary, post, rich_events, same
from tests.support import running_server


async def read_all(log: EventLog, topic: str) -> list[LogRecord]:
    ends = await log.end_offsets(topic)
    consumer = log.consumer([topic])
    await consumer.start()
    out: list[LogRecord] = []
    try:
        for _ in range(200):
            out += await consumer.fetch(5000, timeout=0.5)
            if len(out) >= sum(ends.values()):
                break
    finally:
        await consumer.close()
    return out


async def test_the_same_records_applied_twice_change_no_answer(settings: Settings) -> None:
    events = rich_events()
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60) as http,
    ):
        runtime = server.app.state.runtime
        await post(http, events)
        before = await answers(http)

        # 1. Every event delivered again (a client retrying after a lost answer): new offsets.
        positions = await runtime.log.append(
            settings.events_topic, [(e["run_id"].encode(), encode_event(e)) for e in events]
        )
        from tests.integration.query_helpers import settle

        await settle(http, {p.partition: p.offset for p in positions})
        assert await answers(http) == before

        # 2. The same records applied again by a projector that does not know they were (no
        # stored positions, an empty step tracker), twice, one insert per table each time.
        records = await read_all(runtime.log, settings.events_topic)
        other = Projector(
            runtime.log,
            runtime.store,
            events_topic=settings.events_topic,
            deadletter_topic=None,
            group="another",
        )
        await other.apply(records)
        await Projector(
            runtime.log,
            runtime.store,
            events_topic=settings.events_topic,
            deadletter_topic=None,
            group="a-third",
        ).apply(records)
        assert await answers(http) == before

        # The summaries still equal a brute-force computation over what was logged.
        logged = [
            (p["step"], float(p["value"]) if not isinstance(p["value"], str) else float("inf"), e["seq"], i)
            for e in events
            if e["type"] == "metrics.logged"
            for i, p in enumerate(e["payload"]["points"])
            if p["name"] == "loss"
        ]
        want = brute_summary(logged)
        summary = before["/api/v1/runs/main?[]"]["metrics"]["loss"]
        assert summary["count"] == want.count == 9000
        assert (
            same(summary["min"], want.min)
            and same(summary["max"], want.max)
            and same(summary["last"], want.last)
        )

        # raw_events holds each record once per position, with its bytes.
        rows = await runtime.store.query(
            "SELECT count(), uniqExact(partition, offset), uniqExact(event_id) FROM raw_events FINAL"
        )
        assert rows == [(2 * len(events), 2 * len(events), len(events))]
        first = records[0]
        stored: list[tuple[Any, ...]] = await runtime.store.query(
            "SELECT value FROM raw_events WHERE partition = {p:UInt32} AND offset = {o:UInt64} LIMIT 1",
            {"p": first.partition, "o": first.offset},
            column_formats={"value": "bytes"},
        )
        assert orjson.loads(stored[0][0]) == orjson.loads(first.value)
