"""What the run widget shows, as plain state built from the gateway's messages. Pure: no I/O.

``widget.js`` keeps the same state in the browser from the same messages; this
class is its reference and is what the Python tests drive through
``runstream.live``. Series follow the studio's chart rules: ``log`` over step,
``log_list`` over index, ``log_row`` and ``log_table`` as one column against another.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from runstream.events.codec import from_wire_float
from runstream.live.messages import STATUS_OF_TYPE, TERMINAL_STATUSES, Event, LiveMessage, Subscribed
from runstream.live.state import merge_status

MAX_LINES = 200
"""Log lines the widget keeps (the latest ones)."""
TIMESTAMP_OF_STATUS = {"created": "created_at", "queued": "queued_at", "running": "started_at"}


@dataclass
class Series:
    """One chart: ``kind`` is ``step`` (log), ``index`` (log_list) or ``columns`` (log_row, log_table)."""

    kind: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    columns: dict[str, list[float]] = field(default_factory=dict)

    @property
    def points(self) -> int:
        if self.kind == "columns":
            return max((len(v) for v in self.columns.values()), default=0)
        return len(self.x)


@dataclass
class Child:
    run_id: str
    name: str | None = None
    status: str | None = None
    status_seq: int = -1

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass
class RunDetailsModel:
    """A run as the widget shows it: status, timestamps, one series per metric, log tail, children."""

    run_id: str
    status: str | None = None
    status_seq: int = -1
    experiment: str | None = None
    error: str | None = None
    timestamps: dict[str, int] = field(default_factory=dict)
    """``created_at``, ``queued_at``, ``started_at``, ``ended_at``: ms since the epoch."""
    series: dict[str, Series] = field(default_factory=dict)
    lines: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=MAX_LINES))
    """(stream, text) of the latest log lines."""
    children: dict[str, Child] = field(default_factory=dict)
    cursor: int | None = None
    """The last cursor applied: what a resubscription after a drop starts after."""
    _steps: dict[str, dict[int, int]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def subscribe_cursor(self) -> int:
        """The cursor to subscribe with: -1 the first time (every event), then the last one applied."""
        return -1 if self.cursor is None else self.cursor

    def apply_message(self, message: LiveMessage) -> bool:
        """Apply a message of the run's subscription; True when the state changed."""
        if isinstance(message, Subscribed):
            if isinstance(message.cursor, int) and self.cursor is None and message.snapshot is not None:
                self.cursor = message.cursor
            return False
        if isinstance(message, Event):
            return self.apply(message.event, message.cursor)
        return False

    def apply(self, event: dict[str, Any], cursor: int | None = None) -> bool:
        """Apply one event of the run; an event at or before the held cursor is ignored (no duplicates)."""
        if cursor is not None:
            if self.cursor is not None and cursor <= self.cursor:
                return False
            self.cursor = cursor
        kind = str(event.get("type"))
        payload: dict[str, Any] = event.get("payload") or {}
        ts = int(event.get("ts", 0))
        if kind in STATUS_OF_TYPE:
            return self._status(kind, payload, int(event.get("seq", 0)), ts, event)
        if kind == "metrics.logged":
            for point in payload["points"]:
                self._point(point["name"], int(point["step"]), from_wire_float(point["value"]))
            return True
        if kind == "list.logged":
            series = self.series.setdefault(payload["name"], Series("index"))
            for value in payload["values"]:
                series.x.append(len(series.x))
                series.y.append(from_wire_float(value))
            return True
        if kind == "row.logged":
            self._columns(payload["name"], {k: [v] for k, v in payload["row"].items()})
            return True
        if kind == "table.logged":
            self._columns(payload["name"], payload["columns"])
            return True
        if kind == "logs.appended":
            self.lines.extend((line["stream"], line["text"]) for line in payload["lines"])
            return True
        if kind == "run.child_linked":
            child = self.children.setdefault(payload["child_run_id"], Child(payload["child_run_id"]))
            child.name = payload.get("name", child.name)
            return True
        return False

    def apply_child(self, child_id: str, event: dict[str, Any]) -> bool:
        """A lifecycle event of a child run (from its own subscription)."""
        status = STATUS_OF_TYPE.get(str(event.get("type")))
        if status is None:
            return False
        child = self.children.setdefault(child_id, Child(child_id))
        if event.get("type") == "run.created":
            child.name = (event.get("payload") or {}).get("name", child.name)
        current = None if child.status is None else (child.status, child.status_seq)
        merged = merge_status(current, status, int(event.get("seq", 0)))
        if merged is None:
            return False
        child.status, child.status_seq = merged
        return True

    def _status(self, kind: str, payload: dict[str, Any], seq: int, ts: int, event: dict[str, Any]) -> bool:
        status = STATUS_OF_TYPE[kind]
        if kind == "run.created":
            self.experiment = event.get("experiment", self.experiment)
        stamp = TIMESTAMP_OF_STATUS.get(status, "ended_at")
        self.timestamps.setdefault(stamp, ts)
        if kind == "run.failed" and payload.get("error"):
            self.error = str(payload["error"])
        current = None if self.status is None else (self.status, self.status_seq)
        merged = merge_status(current, status, seq)
        if merged is None:
            return False
        self.status, self.status_seq = merged
        return True

    def _point(self, name: str, step: int, value: float) -> None:
        series = self.series.setdefault(name, Series("step"))
        at = self._steps.setdefault(name, {})
        if step in at:  # a step logged again keeps the latest value
            series.y[at[step]] = value
            return
        if series.x and step < series.x[-1]:  # an earlier step: keep the series in step order
            series.x.append(step)
            series.y.append(value)
            order = sorted(range(len(series.x)), key=lambda i: series.x[i])
            series.x = [series.x[i] for i in order]
            series.y = [series.y[i] for i in order]
            self._steps[name] = {int(s): i for i, s in enumerate(series.x)}
            return
        at[step] = len(series.x)
        series.x.append(step)
        series.y.append(value)

    def _columns(self, name: str, columns: dict[str, list[Any]]) -> None:
        series = self.series.setdefault(name, Series("columns"))
        length = series.points
        for key in series.columns.keys() | columns.keys():
            held = series.columns.setdefault(key, [])
            held.extend([float("nan")] * (length - len(held)))
            held.extend(from_wire_float(v) for v in columns.get(key, []))
        width = series.points
        for held in series.columns.values():
            held.extend([float("nan")] * (width - len(held)))
