"""Records as the gateway routes them, and the window of recent records it keeps per partition.

Each record is parsed once when it is read (``entry_of``); what routing needs is
kept (run, workspace, experiment, type, ...) with the record's bytes, which are
sent on unparsed. ``RecentRecords`` holds the latest records of one partition
within a byte budget, so that a subscription that starts a little behind the
live position (a snapshot's cursor, a reconnect) catches up from memory rather
than from the log.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

ENTRY_OVERHEAD = 200
"""Approximate bytes an entry costs beyond its value (object, strings, list slot)."""


@dataclass(slots=True, eq=False)
class Entry:
    """One event record, with the envelope fields routing reads."""

    partition: int
    offset: int
    run_id: str
    workspace: str
    experiment: str
    type: str
    seq: int
    ts: int
    compute: str | None
    """The compute target of a ``run.created`` event, else None."""
    value: bytes
    """The event's bytes as on the log."""

    @property
    def size(self) -> int:
        return len(self.value) + ENTRY_OVERHEAD

    def envelope(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.value)
        return parsed


def entry_of(partition: int, offset: int, value: bytes) -> tuple[Entry, dict[str, Any]] | None:
    """The entry of a record and its parsed envelope; None when the record is not an event.

    Only the envelope fields routing needs are checked here; full schema
    validation is the projector's (which dead-letters what fails it).
    """
    try:
        event: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    run_id, workspace = event.get("run_id"), event.get("workspace")
    experiment, kind = event.get("experiment"), event.get("type")
    seq, ts, payload = event.get("seq"), event.get("ts"), event.get("payload")
    if not (
        isinstance(run_id, str)
        and isinstance(workspace, str)
        and isinstance(experiment, str)
        and isinstance(kind, str)
        and isinstance(seq, int)
        and isinstance(ts, int)
        and isinstance(payload, dict)
    ):
        return None
    compute = payload.get("compute") if kind == "run.created" else None
    entry = Entry(
        partition,
        offset,
        run_id,
        workspace,
        experiment,
        kind,
        seq,
        ts,
        compute if isinstance(compute, str) else None,
        value,
    )
    return entry, event


class RecentRecords:
    """The latest records of one partition: every event at offsets ``[start, end)``.

    Records that are not events take no room but still advance ``end``. The
    oldest entries go once ``budget`` bytes are held; ``start`` follows them.
    """

    def __init__(self, start: int, budget: int) -> None:
        self.start = start
        self.end = start
        self.budget = budget
        self.bytes = 0
        self._entries: list[Entry] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._entries) - self._head

    def append(self, offset: int, entry: Entry | None) -> None:
        if offset < self.end:
            return
        if self.end == self.start and not len(self):
            self.start = offset
        self.end = offset + 1
        if entry is None:
            return
        self._entries.append(entry)
        self.bytes += entry.size
        while self.bytes > self.budget and len(self):
            dropped = self._entries[self._head]
            self._head += 1
            self.bytes -= dropped.size
            self.start = dropped.offset + 1
        if self._head > 1024 and self._head * 2 > len(self._entries):
            del self._entries[: self._head]
            self._head = 0

    def since(self, offset: int) -> Iterator[Entry]:
        """Entries at ``offset`` and after (``offset`` must be at least ``start``)."""
        if offset < self.start:
            raise ValueError(f"offset {offset} is before the recent records, which start at {self.start}")
        index = bisect.bisect_left(self._entries, offset, lo=self._head, key=lambda e: e.offset)
        for i in range(index, len(self._entries)):
            yield self._entries[i]
