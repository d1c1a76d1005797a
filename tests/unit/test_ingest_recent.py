"""The ingest API's memory of recently appended event ids: bounded, oldest forgotten first."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from runstream.errors import EventLogError
from runstream.eventlog.port import LogPosition
from runstream.ingest.recent import RecentEvents


def test_remembers_positions_by_event_id() -> None:
    recent = RecentEvents(capacity=10)
    event_id = str(uuid.uuid4())
    assert recent.get(event_id, b"{}") is None
    recent.add(event_id, b"{}", 2, 41)
    assert recent.get(event_id, b"{}") == (2, 41)
    assert recent.get(event_id.upper(), b"{}") == (2, 41)  # the same UUID however it is spelled


def test_an_id_reused_for_another_event_is_not_a_repeat() -> None:
    recent = RecentEvents(capacity=10)
    event_id = str(uuid.uuid4())
    recent.add(event_id, b'{"seq": 1}', 0, 7)
    assert recent.get(event_id, b'{"seq": 2}') is None


def test_forgets_the_oldest_beyond_capacity() -> None:
    recent = RecentEvents(capacity=3)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for offset, event_id in enumerate(ids):
        recent.add(event_id, b"{}", 0, offset)
    assert len(recent) == 3
    assert [recent.get(i, b"{}") for i in ids] == [None, None, (0, 2), (0, 3), (0, 4)]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1; got 0"):
        RecentEvents(capacity=0)


async def test_an_unconfirmed_append_counts_once_the_log_stored_it() -> None:
    recent = RecentEvents(capacity=10)
    stored, lost = str(uuid.uuid4()), str(uuid.uuid4())
    loop = asyncio.get_running_loop()
    stored_at: asyncio.Future[LogPosition] = loop.create_future()
    never: asyncio.Future[LogPosition] = loop.create_future()
    recent.hold(stored, b"a", stored_at)
    recent.hold(lost, b"b", never)
    assert recent.pending(stored, b"a") is stored_at
    assert recent.pending(stored, b"other") is None
    assert recent.get(stored, b"a") is None
    stored_at.set_result(LogPosition("t", 1, 9))
    never.set_exception(EventLogError("the broker gave up"))
    assert never.exception() is not None
    assert recent.pending(stored, b"a") is None
    assert recent.get(stored, b"a") == (1, 9)
    assert recent.pending(lost, b"b") is None
    assert recent.get(lost, b"b") is None
