"""Client-side state of live subscriptions, with the protocol's merge rules. Pure: no I/O.

A snapshot may already reflect some events that follow its cursor (see
PROTOCOL.md, "Snapshots"). Every field here is merged by a rule under which
applying such an event again changes nothing, in any order:

- a run's status is the one of highest lifecycle rank (created < queued <
  running < completed | failed | canceled), ties to the higher producer seq;
- a metric's latest point is the one with the highest (step, seq, index):
  the step, then the producer's seq, then the point's place in its batch, the
  same order the projection keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runstream.events.codec import from_wire_float
from runstream.live.messages import STATUS_OF_TYPE, TERMINAL_STATUSES, Update

STATUS_RANK = {"created": 0, "queued": 1, "running": 2, "completed": 3, "failed": 3, "canceled": 3}


@dataclass(frozen=True, order=True)
class Point:
    """The latest point of a metric; ordered by the merge rule."""

    step: int
    seq: int
    index: int
    value: float = field(compare=False)
    ts: int = field(compare=False)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Point:
        return cls(
            int(data["step"]),
            int(data.get("seq", -1)),
            int(data.get("index", -1)),
            from_wire_float(data["value"]),
            int(data.get("ts", 0)),
        )


def merge_status(current: tuple[str, int] | None, status: str, seq: int) -> tuple[str, int] | None:
    """The status to hold after seeing ``status`` at ``seq``; None when ``current`` stays."""
    if current is not None and (STATUS_RANK[current[0]], current[1]) >= (STATUS_RANK[status], seq):
        return None
    return status, seq


def merge_point(metrics: dict[str, Point], name: str, point: Point) -> bool:
    held = metrics.get(name)
    if held is not None and held >= point:
        return False
    metrics[name] = point
    return True


@dataclass
class RunState:
    """One run as a chart or widget shows it: status and the latest value of each metric."""

    run_id: str
    status: str | None = None
    status_seq: int = -1
    experiment: str | None = None
    compute: str | None = None
    metrics: dict[str, Point] = field(default_factory=dict)
    cursor: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def apply_snapshot(self, snapshot: dict[str, Any] | None, cursor: int) -> None:
        self.cursor = cursor
        if not snapshot:
            return
        run = snapshot.get("run")
        if run:
            merged = merge_status(self._status(), run["status"], -1)
            if merged is not None:
                self.status, self.status_seq = merged
            self.experiment = run.get("experiment")
            self.compute = run.get("compute")
        for name, point in (snapshot.get("metrics") or {}).items():
            merge_point(self.metrics, name, Point.from_wire(point))

    def apply(self, event: dict[str, Any], cursor: int | None = None) -> bool:
        """Apply one event; True when the state changed."""
        if cursor is not None:
            self.cursor = cursor if self.cursor is None else max(self.cursor, cursor)
        kind = event.get("type")
        seq = int(event.get("seq", 0))
        if kind in STATUS_OF_TYPE:
            if kind == "run.created":
                self.experiment = event.get("experiment", self.experiment)
                self.compute = event.get("payload", {}).get("compute", self.compute)
            merged = merge_status(self._status(), STATUS_OF_TYPE[kind], seq)
            if merged is None:
                return False
            self.status, self.status_seq = merged
            return True
        if kind != "metrics.logged":
            return False
        changed = False
        for index, point in enumerate(event["payload"]["points"]):
            latest = Point(
                int(point["step"]),
                seq,
                index,
                from_wire_float(point["value"]),
                int(point.get("ts", event.get("ts", 0))),
            )
            changed = merge_point(self.metrics, point["name"], latest) or changed
        return changed

    def _status(self) -> tuple[str, int] | None:
        return None if self.status is None else (self.status, self.status_seq)


@dataclass
class RunsState:
    """The runs of an experiment or compute subscription, from its snapshot and updates.

    For a compute target, a run whose update says ``"active": false`` has left it
    and is removed.
    """

    runs: dict[str, RunState] = field(default_factory=dict)
    cursor: dict[int, int] = field(default_factory=dict)

    def apply_snapshot(self, snapshot: dict[str, Any] | None, cursor: dict[int, int]) -> None:
        self.cursor = dict(cursor)
        for run_id, data in ((snapshot or {}).get("runs") or {}).items():
            self._merge(run_id, data)

    def apply(self, update: Update) -> None:
        self.cursor = dict(update.cursor)
        for run_id, data in update.runs.items():
            if data.get("active") is False:
                self.runs.pop(run_id, None)
            else:
                self._merge(run_id, data)

    def _merge(self, run_id: str, data: dict[str, Any]) -> None:
        run = self.runs.setdefault(run_id, RunState(run_id))
        if "status" in data:
            merged = merge_status(run._status(), data["status"], int(data.get("seq", -1)))
            if merged is not None:
                run.status, run.status_seq = merged
        run.experiment = data.get("experiment", run.experiment)
        run.compute = data.get("compute", run.compute)
        for name, point in (data.get("metrics") or {}).items():
            merge_point(run.metrics, name, Point.from_wire(point))
