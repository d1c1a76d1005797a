"""The Python client of the live gateway (``runstream/gateway/PROTOCOL.md``).

``LiveClient`` is the asyncio client: one websocket, any number of
subscriptions, each an async iterator that survives reconnects by resubscribing
with its last cursor. ``follow_run`` and ``wait_for_completion`` use it from
plain code (a script, a notebook, the SDK's ``run.wait_for_completion``).
"""

from runstream.live.client import LiveClient, LiveSubscription, live_url
from runstream.live.messages import (
    TERMINAL_STATUSES,
    Event,
    LiveError,
    LiveMessage,
    Subscribed,
    SubscriptionError,
    Update,
)
from runstream.live.state import RunState
from runstream.live.sync import follow_run, wait_for_completion

__all__ = [
    "TERMINAL_STATUSES",
    "Event",
    "LiveClient",
    "LiveError",
    "LiveMessage",
    "LiveSubscription",
    "RunState",
    "Subscribed",
    "SubscriptionError",
    "Update",
    "follow_run",
    "live_url",
    "wait_for_completion",
]
