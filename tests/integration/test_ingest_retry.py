"""A request sent again (its answer was lost) is answered with the positions its events already have."""

from __future__ import annotations

import httpx
import orjson

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
