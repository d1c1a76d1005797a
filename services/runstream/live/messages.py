"""What a live subscription yields, and the client's errors. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from runstream.errors import RunstreamError
from runstream.gateway.protocol import Cursor, ErrorCode

TERMINAL_STATUSES = ("completed", "failed", "canceled")
STATUS_OF_TYPE = {
    "run.created": "created",
    "run.queued": "queued",
    "run.started": "running",
    "run.completed": "completed",
    "run.failed": "failed",
    "run.canceled": "canceled",
}


class LiveError(RunstreamError):
    """The live gateway refused or ended a subscription, or cannot be reached."""

    retriable = True


class SubscriptionError(LiveError):
    """An ``error`` frame ended the subscription (or refused it); ``code`` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.retriable = code == ErrorCode.UNAVAILABLE


@dataclass(frozen=True)
class Subscribed:
    """The subscription started: its snapshot (None when resuming from a cursor) and cursor."""

    kind: str
    cursor: Cursor
    snapshot: dict[str, Any] | None


@dataclass(frozen=True)
class Event:
    """One event of a run, as on the log, with its cursor (its offset in the run's partition)."""

    cursor: int
    partition: int
    event: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.event["type"])

    @property
    def status(self) -> str | None:
        """The run status this event moves to, for a lifecycle event."""
        return STATUS_OF_TYPE.get(self.type)


@dataclass(frozen=True)
class Update:
    """Changes of the runs of an experiment or compute target since the previous update."""

    cursor: dict[int, int]
    runs: dict[str, dict[str, Any]]


LiveMessage: TypeAlias = Subscribed | Event | Update
