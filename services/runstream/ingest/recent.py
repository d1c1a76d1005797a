"""The events this ingest process appended lately, so that a request sent again is not appended again.

A client that lost the answer to a request (the connection dropped after the
server had appended the events) sends the same events again, with the same
``event_id``s. Appending them again would put each event on the log twice; the
ingest API answers them with the positions they already have instead (only when
the event is the same, byte for byte, as the one appended under that id). The memory
is bounded (the oldest ids are forgotten first) and belongs to one process: it
covers the retries of a client that reconnects to the same server, which is what
the SDK does right after a failed request.

An append that gave up waiting (``AppendUnconfirmedError``) may still write its
records: they are held here as unconfirmed until the log says where they landed
(then they count as appended) or that they never will (then they are forgotten).
A request sending one of them again waits for that answer before anything is
appended.
"""

from __future__ import annotations

import asyncio
import uuid

from runstream.eventlog.port import LogPosition

DEFAULT_CAPACITY = 100_000
"""Event ids remembered (about 13 MB): minutes of retries at thousands of events a second."""


class RecentEvents:
    """event_id -> (partition, offset) of the latest ``capacity`` events appended (and what they held)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1; got {capacity}")
        self.capacity = capacity
        self._positions: dict[int, tuple[int, int, int]] = {}
        self._unconfirmed: dict[int, tuple[asyncio.Future[LogPosition], int]] = {}

    def __len__(self) -> int:
        return len(self._positions)

    def get(self, event_id: str, value: bytes) -> tuple[int, int] | None:
        """Where the event ``event_id`` encoded as ``value`` was appended, if it was lately."""
        key = _key(event_id)
        self._settle(key)
        known = self._positions.get(key)
        if known is None or known[2] != hash(value):
            return None
        return known[0], known[1]

    def add(self, event_id: str, value: bytes, partition: int, offset: int) -> None:
        self._remember(_key(event_id), hash(value), partition, offset)

    def hold(self, event_id: str, value: bytes, pending: asyncio.Future[LogPosition]) -> None:
        """An append of this event gave up waiting; ``pending`` ends when the log knows its fate."""
        held = self._unconfirmed
        held[_key(event_id)] = (pending, hash(value))
        while len(held) > self.capacity:
            del held[next(iter(held))]

    def pending(self, event_id: str, value: bytes) -> asyncio.Future[LogPosition] | None:
        """The unconfirmed append of this very event, while the log has not said where it went."""
        key = _key(event_id)
        self._settle(key)
        held = self._unconfirmed.get(key)
        if held is None or held[1] != hash(value):
            return None
        return held[0]

    def _settle(self, key: int) -> None:
        held = self._unconfirmed.get(key)
        if held is None or not held[0].done():
            return
        del self._unconfirmed[key]
        task, digest = held
        if not task.cancelled() and task.exception() is None:
            position = task.result()
            self._remember(key, digest, position.partition, position.offset)

    def _remember(self, key: int, digest: int, partition: int, offset: int) -> None:
        positions = self._positions
        positions[key] = (partition, offset, digest)
        while len(positions) > self.capacity:
            del positions[next(iter(positions))]


def _key(event_id: str) -> int:
    return uuid.UUID(event_id).int
