"""One websocket's outgoing side: a queue bounded in frames and bytes, written by one sender task.

``push`` refuses a frame once the queue holds ``queue_frames`` frames or
``queue_bytes`` bytes (the hub then resyncs the client); control frames
(``subscribed``, errors, resync, heartbeats) are let past that bound up to a
small reserve, beyond which the connection is closed: a client that never
reads cannot make the gateway hold more than the bound plus the reserve.
Each queued frame remembers the subscription and cursor it carries, so that
once it is written the subscription knows the last cursor the client was sent.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runstream.auth.grants import Principal
from runstream.gateway.protocol import CloseCode, Cursor

if TYPE_CHECKING:
    from runstream.gateway.subscription import Subscription

CONTROL_RESERVE = 300
"""Control frames a full queue still takes (at least one per subscription, for resync)."""


@dataclass(frozen=True)
class GatewayConfig:
    """Per-connection limits and timers of the live gateway (see PROTOCOL.md, "Limits")."""

    heartbeat_interval: float = 15.0
    """Every this many seconds a client gets a ``heartbeat`` (to answer with ``pong``)."""
    idle_timeout: float = 60.0
    """Seconds without a message from a client after which it is closed with 4000."""
    queue_frames: int = 2000
    queue_bytes: int = 4 * 1024 * 1024
    pending_bytes: int = 4 * 1024 * 1024
    """What one subscription may hold between two frames (rate-limited batches)."""
    max_frame_bytes: int = 512 * 1024
    """A batch of events is cut into frames of about this size."""
    max_message_bytes: int = 64 * 1024
    max_subscriptions: int = 256


class ConnectionState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


Outgoing = tuple[bytes, "Subscription | None", Cursor | None]


class Connection:
    def __init__(self, config: GatewayConfig | None = None, principal: Principal | None = None) -> None:
        self.config = config or GatewayConfig()
        self.principal = principal
        """Who the socket's token is; None only where no authentication runs (unit tests)."""
        self.state = ConnectionState.OPEN
        self.subscriptions: dict[str, Subscription] = {}
        self.frames: deque[Outgoing] = deque()
        self.queued_bytes = 0
        self.in_flight: Outgoing | None = None
        """The frame the sender took and is writing: it reaches the client before anything queued later."""
        self.resyncs = 0
        self.close_code: int = CloseCode.NORMAL
        self.close_reason = ""
        now = time.monotonic()
        self.last_received = now
        self.last_heartbeat = now
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def full(self) -> bool:
        return len(self.frames) >= self.config.queue_frames or self.queued_bytes >= self.config.queue_bytes

    @property
    def room_bytes(self) -> int:
        """Bytes the queue takes before it is full."""
        return max(0, self.config.queue_bytes - self.queued_bytes)

    def push(self, frame: bytes, sub: Subscription | None = None, cursor: Cursor | None = None) -> bool:
        """Queue a data frame; False when the queue is full (nothing queued)."""
        if self.state is not ConnectionState.OPEN:
            return True
        if self.full:
            return False
        self._append(frame, sub, cursor)
        return True

    def push_control(
        self, frame: bytes, sub: Subscription | None = None, cursor: Cursor | None = None
    ) -> None:
        """Queue a control frame past the bound; close the connection when even the reserve is used."""
        if self.state is not ConnectionState.OPEN:
            return
        if len(self.frames) >= self.config.queue_frames + CONTROL_RESERVE:
            self.close(CloseCode.POLICY_VIOLATION, "the client does not read what it is sent")
            return
        self._append(frame, sub, cursor)

    def _append(self, frame: bytes, sub: Subscription | None, cursor: Cursor | None) -> None:
        self.frames.append((frame, sub, cursor))
        self.queued_bytes += len(frame)
        self._wake.set()
        if self.full:
            self._room.clear()

    def drop_queue(self) -> None:
        self.frames.clear()
        self.queued_bytes = 0
        self._room.set()

    def close(self, code: int, reason: str) -> None:
        """Ask the sender to close the socket with ``code`` and ``reason`` after nothing more."""
        if self.state is ConnectionState.OPEN:
            self.state = ConnectionState.CLOSING
            self.close_code, self.close_reason = code, reason
            self.drop_queue()
            self._wake.set()

    async def next_frame(self) -> Outgoing | None:
        """The next frame to write; None once the connection is to be closed."""
        while True:
            if self.state is not ConnectionState.OPEN:
                return None
            if self.frames:
                item = self.frames.popleft()
                self.queued_bytes -= len(item[0])
                if not self._room.is_set() and self._has_room():
                    self._room.set()
                return item
            self._wake.clear()
            await self._wake.wait()

    def written_cursor(self, sub: Subscription) -> Cursor | None:
        """The last cursor of ``sub`` written, or being written, to the socket."""
        if self.in_flight is not None and self.in_flight[1] is sub and self.in_flight[2] is not None:
            return self.in_flight[2]
        return sub.sent_cursor

    def _has_room(self) -> bool:
        return (
            len(self.frames) <= self.config.queue_frames // 2
            and self.queued_bytes <= self.config.queue_bytes // 2
        )

    async def wait_room(self) -> None:
        """Wait until the queue is at most half full (used while replaying: backpressure, not resync)."""
        if self._has_room():
            return
        self._room.clear()
        await self._room.wait()
