"""A run's lifecycle as the SDK enforces it. Pure.

created ──► queued ──► running ──► completed | failed | canceled
   └──────────────────►┘   (start without queueing)
created and queued runs may also be failed or canceled. Nothing is sent for a run
after its terminal status: the call raises ``RunStateError`` naming the status.
"""

from __future__ import annotations

import enum

from runstream.errors import RunstreamError


class RunStatus(enum.Enum):
    CREATED = "created"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)


class RunStateError(RunstreamError):
    """A call not allowed in the run's current status."""


ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.CREATED}),
    RunStatus.RUNNING: frozenset({RunStatus.CREATED, RunStatus.QUEUED}),
    RunStatus.COMPLETED: frozenset({RunStatus.RUNNING}),
    RunStatus.FAILED: frozenset({RunStatus.CREATED, RunStatus.QUEUED, RunStatus.RUNNING}),
    RunStatus.CANCELED: frozenset({RunStatus.CREATED, RunStatus.QUEUED, RunStatus.RUNNING}),
}


def check_transition(run_id: str, current: RunStatus, target: RunStatus) -> None:
    allowed = ALLOWED.get(target, frozenset())
    if current not in allowed:
        expected = " or ".join(sorted(s.value for s in allowed))
        raise RunStateError(
            f"run {run_id} cannot become {target.value}: it is {current.value}, expected {expected}"
        )


def check_open(run_id: str, current: RunStatus) -> None:
    if current.terminal:
        raise RunStateError(f"run {run_id} is {current.value}: nothing more can be logged to it")
