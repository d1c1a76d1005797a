"""A subscription's state on the gateway: what it asked for, its feed, where its client stands."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from runstream.gateway.connection import Connection
from runstream.gateway.feeds import Feed
from runstream.gateway.protocol import Cursor, Subscribe


class SubscriptionState(enum.Enum):
    STARTING = "starting"
    """Reading its snapshot or resolving its cursor."""
    CATCHING_UP = "catching_up"
    """``subscribed`` is queued; sending what came before the live position."""
    LIVE = "live"
    """Routed every new record."""
    ENDED = "ended"


@dataclass(eq=False)
class Subscription:
    request: Subscribe
    connection: Connection
    feed: Feed | None = None
    partition: int | None = None
    """The run's partition (run subscriptions)."""
    state: SubscriptionState = SubscriptionState.STARTING
    sent_cursor: Cursor | None = None
    """The last cursor written to the socket: what a resync reports."""
    task: asyncio.Task[None] | None = None
    flush_handle: asyncio.TimerHandle | None = None
    touched: bool = False

    @property
    def sub(self) -> str:
        return self.request.sub

    def catching_up(self) -> bool:
        """Still catching up (a method, so that checks after an await are not narrowed away)."""
        return self.state is SubscriptionState.CATCHING_UP

    def expect(self, *states: SubscriptionState) -> None:
        if self.state not in states:
            expected = " or ".join(s.name for s in states)
            raise RuntimeError(f"subscription {self.sub!r}: expected state {expected}, got {self.state.name}")
