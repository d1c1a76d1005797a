"""A request sent again (its answer was lost) is answered with the positions its events already have."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from runstream.eventlog.port import EventLog
from runstream.settings import Settings
from tests.conftest import unique
from tests.support import event, points, running_server


async def test_events_sent_again_are_not_appended_twice(settings: Settings, event_log: EventLog) -> None:
    """The same batch posted twice, then again with a new event and one event twice in it: every
    repeat gets its first position, and the log grows by the new event only."""
    run_id = unique("run")
    batch = [event("run.created", run_id, seq=0), event("metrics.logged", run_id, points("x", [1.0]), seq=1)]
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        first = (await http.post("/api/v1/events", content=orjson.dumps(batch))).json()["accepted"]
        before = sum((await event_log.end_offsets(settings.events_topic)).values())
        again = (await http.post("/api/v1/events", content=orjson.dumps(batch))).json()["accepted"]
        assert again == first
        assert sum((await event_log.end_offsets(settings.events_topic)).values()) == before
        new = event("run.started", run_id, seq=2)
        mixed = await http.post("/api/v1/events", content=orjson.dumps([batch[1], new, new]))
        assert mixed.status_code == 200, mixed.text
        accepted = mixed.json()["accepted"]
        assert [a["index"] for a in accepted] == [0, 1, 2]
        assert accepted[0]["offset"] == first[1]["offset"]
        assert accepted[1]["offset"] == accepted[2]["offset"] != first[1]["offset"]
        assert sum((await event_log.end_offsets(settings.events_topic)).values()) == before + 1


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_a_retry_sent_while_the_first_request_is_still_appending_waits_for_it(
    settings: Settings, event_log: EventLog
) -> None:
    """The client gave up waiting and sent the batch again while the server was still appending it
    (an overloaded server): the retry is answered with the first append's positions."""
    run_id = unique("run")
    batch = [event("run.created", run_id, seq=0), event("run.completed", run_id, seq=1)]
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30) as http,
    ):
        log = server.app.state.runtime.log
        append = log.append
        release = asyncio.Event()

        async def slow_append(topic: str, records: Any) -> Any:
            await release.wait()  # the real append, held back
            return await append(topic, records)

        log.append = slow_append
        before = sum((await event_log.end_offsets(settings.events_topic)).values())
        first = asyncio.create_task(http.post("/api/v1/events", content=orjson.dumps(batch)))
        await asyncio.sleep(0.3)
        retry = asyncio.create_task(http.post("/api/v1/events", content=orjson.dumps(batch)))
        await asyncio.sleep(0.3)
        release.set()
        answers = [(await first).json()["accepted"], (await retry).json()["accepted"]]
        log.append = append
        assert answers[0] == answers[1]
        assert sum((await event_log.end_offsets(settings.events_topic)).values()) == before + 2
