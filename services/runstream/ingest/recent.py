"""The events this ingest process appended lately, so that a request sent again is not appended again.

A client that lost the answer to a request (the connection dropped after the
server had appended the events) sends the same events again, with the same
``event_id``s. Appending them again would put each event on the log twice; the
ingest API answers them with the positions they already have instead (only when
the event is the same, byte for byte, as the one appended under that id). The memory
is bounded (the oldest ids are forgotten first) and belongs to one process: it
covers the retries of a client that reconnects to the same server, which is what
the SDK does right after a failed request.
"""

from __future__ import annotations

import uuid

DEFAULT_CAPACITY = 100_000
"""Event ids remembered (about 13 MB): minutes of retries at thousands of events a second."""


class RecentEvents:
    """event_id -> (partition, offset) of the latest ``capacity`` events appended (and what they held)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1; got {capacity}")
        self.capacity = capacity
        self._positions: dict[int, tuple[int, int, int]] = {}

    def __len__(self) -> int:
        return len(self._positions)

    def get(self, event_id: str, value: bytes) -> tuple[int, int] | None:
        """Where the event ``event_id`` encoded as ``value`` was appended, if it was lately."""
        known = self._positions.get(_key(event_id))
        if known is None or known[2] != hash(value):
            return None
        return known[0], known[1]

    def add(self, event_id: str, value: bytes, partition: int, offset: int) -> None:
        positions = self._positions
        positions[_key(event_id)] = (partition, offset, hash(value))
        while len(positions) > self.capacity:
            del positions[next(iter(positions))]


def _key(event_id: str) -> int:
    return uuid.UUID(event_id).int
