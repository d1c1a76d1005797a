"""What one subscription sends: pure state machines from entries to frames, with rate control.

A feed is offered the entries its subscription routes to (in offset order per
partition; an entry at or before what it already took is ignored, which is what
makes replay and live meet without a duplicate) and holds what it has not sent
yet. ``take`` turns that into frames; ``due`` says when the rate allows the next
one. Nothing here does I/O or reads a clock: the hub passes ``now``.

- ``RunFeed``: every event of one run. Without a rate each event is its own
  ``event`` frame; with one, the events between two frames go together in one
  ``events`` frame (batched, never dropped).
- ``ExperimentFeed``: per run of one experiment, its status and the latest point
  of each metric, coalesced between frames into ``update`` frames.
- ``ComputeFeed``: the runs queued or active on one compute target; a run joins
  when it is created there and leaves when it ends.
"""

from __future__ import annotations

import abc
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from runstream.gateway.protocol import Cursor, Kind, VectorCursor, cursor_json, event_frame, events_frame
from runstream.gateway.recent import Entry

STATUS_OF_TYPE: dict[str, tuple[str, int]] = {
    "run.created": ("created", 0),
    "run.queued": ("queued", 1),
    "run.started": ("running", 2),
    "run.completed": ("completed", 3),
    "run.failed": ("failed", 3),
    "run.canceled": ("canceled", 3),
}
RANK_OF_STATUS = dict(STATUS_OF_TYPE.values())
TERMINAL_RANK = 3
METRIC_ENTRY_BYTES = 96
"""Approximate bytes one pending metric or run change holds."""


@dataclass
class RateGate:
    """At most one frame per ``interval`` seconds: the first at once, the rest when the interval ends."""

    interval: float = 0.0
    last: float = -math.inf

    def due(self, now: float) -> float:
        return max(now, self.last + self.interval)

    def sent(self, now: float) -> None:
        self.last = now


class Feed(abc.ABC):
    kind: Kind

    def __init__(self, sub: str, workspace: str, max_rate: float | None) -> None:
        self.sub = sub
        self.sub_json = orjson.dumps(sub)
        self.workspace = workspace
        self.gate = RateGate(0.0 if max_rate is None else 1.0 / max_rate)
        self.pending_bytes = 0

    @abc.abstractmethod
    def matches(self, entry: Entry) -> bool:
        """Whether ``entry`` belongs to this subscription."""

    @abc.abstractmethod
    def offer(self, entry: Entry, envelope: dict[str, Any] | None) -> bool:
        """Take a matching entry; True when it added something to send."""

    @abc.abstractmethod
    def take(self, max_frame_bytes: int) -> list[tuple[bytes, Cursor]]:
        """Frames for everything pending, each with the cursor it brings the client to."""

    @property
    @abc.abstractmethod
    def has_pending(self) -> bool: ...

    def advance(self, positions: dict[int, int]) -> None:  # noqa: B027 - only vector feeds track it
        """Everything before ``positions`` (next offsets) was offered: the cursor may move there."""

    def due(self, now: float) -> float | None:
        return self.gate.due(now) if self.has_pending else None


class RunFeed(Feed):
    kind = Kind.RUN

    def __init__(
        self,
        sub: str,
        workspace: str,
        run_id: str,
        partition: int,
        after: int,
        max_rate: float | None,
        types: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(sub, workspace, max_rate)
        self.run_id = run_id
        self.wants = types
        self.partition = partition
        self.last = after
        """Offset of the last event taken in (pending or sent)."""
        self.batched = max_rate is not None
        self._offsets: list[int] = []
        self._values: list[bytes] = []

    def matches(self, entry: Entry) -> bool:
        return (
            entry.run_id == self.run_id
            and entry.workspace == self.workspace
            and (self.wants is None or self.wants(entry.type))
        )

    def offer(self, entry: Entry, envelope: dict[str, Any] | None) -> bool:
        if entry.offset <= self.last:
            return False
        self.last = entry.offset
        self._offsets.append(entry.offset)
        self._values.append(entry.value)
        self.pending_bytes += len(entry.value)
        return True

    @property
    def has_pending(self) -> bool:
        return bool(self._offsets)

    def take(self, max_frame_bytes: int) -> list[tuple[bytes, Cursor]]:
        offsets, values = self._offsets, self._values
        self._offsets, self._values, self.pending_bytes = [], [], 0
        if not self.batched:
            return [
                (event_frame(self.sub_json, self.partition, o, v), o)
                for o, v in zip(offsets, values, strict=True)
            ]
        frames: list[tuple[bytes, Cursor]] = []
        start, size = 0, 0
        for i, value in enumerate(values):
            if i > start and size + len(value) > max_frame_bytes:
                frames.append(self._batch(offsets[start:i], values[start:i]))
                start, size = i, 0
            size += len(value) + 1
        if start < len(values):
            frames.append(self._batch(offsets[start:], values[start:]))
        return frames

    def _batch(self, offsets: list[int], values: list[bytes]) -> tuple[bytes, Cursor]:
        return events_frame(self.sub_json, self.partition, offsets, values), offsets[-1]


class VectorFeed(Feed):
    """A feed over every partition: its cursor is the last offset accounted for in each."""

    def __init__(self, sub: str, workspace: str, positions: VectorCursor, max_rate: float | None) -> None:
        super().__init__(sub, workspace, max_rate)
        self.positions = dict(positions)
        self._runs: dict[str, dict[str, Any]] = {}

    def advance(self, positions: dict[int, int]) -> None:
        for partition, next_offset in positions.items():
            if next_offset - 1 > self.positions.get(partition, -1):
                self.positions[partition] = next_offset - 1

    def _fresh(self, entry: Entry) -> bool:
        if entry.offset <= self.positions.get(entry.partition, -1):
            return False
        self.positions[entry.partition] = entry.offset
        return True

    def _pending(self, run_id: str) -> dict[str, Any]:
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = {}
            self.pending_bytes += METRIC_ENTRY_BYTES
        return run

    @property
    def has_pending(self) -> bool:
        return bool(self._runs)

    def take(self, max_frame_bytes: int) -> list[tuple[bytes, Cursor]]:
        if not self._runs:
            return []
        runs, self._runs, self.pending_bytes = self._runs, {}, 0
        cursor = dict(self.positions)
        frame = orjson.dumps({"type": "update", "sub": self.sub, "cursor": cursor_json(cursor), "runs": runs})
        return [(frame, cursor)]


def fold_status(run: dict[str, Any], entry: Entry) -> bool:
    """Record ``entry``'s status on ``run`` unless it already holds a later one (by rank, then seq)."""
    status, rank = STATUS_OF_TYPE[entry.type]
    current = run.get("status")
    if current is not None and (RANK_OF_STATUS[current], run.get("seq", -1)) >= (rank, entry.seq):
        return False
    run["status"], run["seq"], run["ts"] = status, entry.seq, entry.ts
    return True


def fold_point(metrics: dict[str, Any], point: dict[str, Any], seq: int, index: int, ts: int) -> bool:
    """Keep ``point`` as its metric's latest unless a later one is held (by step, seq, index)."""
    name, step = point.get("name"), point.get("step")
    if not isinstance(name, str) or not isinstance(step, int):
        return False
    held = metrics.get(name)
    if held is not None and (held["step"], held["seq"], held["index"]) >= (step, seq, index):
        return False
    point_ts = point.get("ts")
    metrics[name] = {
        "step": step,
        "value": point.get("value"),
        "ts": point_ts if isinstance(point_ts, int) else ts,
        "seq": seq,
        "index": index,
    }
    return True


class ExperimentFeed(VectorFeed):
    kind = Kind.EXPERIMENT

    def __init__(
        self, sub: str, workspace: str, experiment: str, positions: VectorCursor, max_rate: float | None
    ) -> None:
        super().__init__(sub, workspace, positions, max_rate)
        self.experiment = experiment

    def matches(self, entry: Entry) -> bool:
        return entry.experiment == self.experiment and entry.workspace == self.workspace

    def offer(self, entry: Entry, envelope: dict[str, Any] | None) -> bool:
        if not self._fresh(entry):
            return False
        if entry.type in STATUS_OF_TYPE:
            run = self._pending(entry.run_id)
            changed = fold_status(run, entry)
            if entry.type == "run.created":
                payload = (envelope or entry.envelope())["payload"]
                for key in ("name", "compute", "parent_run_id"):
                    if isinstance(payload.get(key), str):
                        run[key] = payload[key]
                changed = True
            return changed
        if entry.type != "metrics.logged":
            return False
        points = (envelope or entry.envelope())["payload"].get("points")
        if not isinstance(points, list):
            return False
        metrics = self._pending(entry.run_id).setdefault("metrics", {})
        before = len(metrics)
        changed = False
        for index, point in enumerate(points):
            if isinstance(point, dict):
                changed = fold_point(metrics, point, entry.seq, index, entry.ts) or changed
        self.pending_bytes += (len(metrics) - before) * METRIC_ENTRY_BYTES
        return changed


@dataclass
class Member:
    status: str
    rank: int
    seq: int
    experiment: str


@dataclass
class Membership:
    """The runs queued or active on one compute target, from its runs' lifecycle events.

    A run joins when it is created on the target (or is in the snapshot), moves
    with its status, and leaves when it completes, fails or is canceled. A left
    run is remembered (the latest ``tombstones`` of them) so that an older event
    seen again, as when a snapshot was ahead of the stream, never brings it back.
    """

    compute: str
    members: dict[str, Member] = field(default_factory=dict)
    tombstones: OrderedDict[str, None] = field(default_factory=OrderedDict)
    max_tombstones: int = 10_000

    def apply(self, entry: Entry) -> dict[str, Any] | None:
        """The change ``entry`` makes (``{"status", "experiment", "active"}``), or None."""
        if entry.type not in STATUS_OF_TYPE or entry.run_id in self.tombstones:
            return None
        status, rank = STATUS_OF_TYPE[entry.type]
        member = self.members.get(entry.run_id)
        if member is None:
            if entry.type != "run.created" or entry.compute != self.compute:
                return None
            member = self.members[entry.run_id] = Member(status, rank, entry.seq, entry.experiment)
        elif (member.rank, member.seq) >= (rank, entry.seq):
            return None
        else:
            member.status, member.rank, member.seq = status, rank, entry.seq
        if rank >= TERMINAL_RANK:
            del self.members[entry.run_id]
            self.tombstones[entry.run_id] = None
            while len(self.tombstones) > self.max_tombstones:
                self.tombstones.popitem(last=False)
        return {"status": member.status, "experiment": member.experiment, "active": rank < TERMINAL_RANK}


class ComputeFeed(VectorFeed):
    kind = Kind.COMPUTE

    def __init__(
        self,
        sub: str,
        workspace: str,
        membership: Membership,
        positions: VectorCursor,
        max_rate: float | None,
    ) -> None:
        super().__init__(sub, workspace, positions, max_rate)
        self.membership = membership

    def matches(self, entry: Entry) -> bool:
        return entry.workspace == self.workspace and entry.type in STATUS_OF_TYPE

    def offer(self, entry: Entry, envelope: dict[str, Any] | None) -> bool:
        if not self._fresh(entry):
            return False
        change = self.membership.apply(entry)
        if change is None:
            return False
        self._pending(entry.run_id).update(change)
        return True
