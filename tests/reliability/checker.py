"""The delivery checker of the reliability suite: nothing lost, nothing duplicated, nothing reordered.

A ``DeliveryLedger`` records every event a producer had *acknowledged* (the ingest
API or Kafka said it was stored), then compares that record with what a consumer
holds: the ClickHouse projections (``raw_events`` and ``metric_points``) or the
events a websocket subscriber received. Each comparison gives a ``DeliveryReport``:

- **lost**: acknowledged, but not there;
- **duplicated**: there more than once (for events: the same ``event_id`` at two
  positions of the log or in two frames; for points: a (run, metric, step) counted
  twice by the summaries queries read);
- **unseen**: there, but never acknowledged (allowed only where a test says so, e.g.
  a response cut after the server stored the request);
- **out_of_order**: within one writer of a run, an event placed after one that was
  acknowledged later. One SDK process sends a run's events oldest first (its spool
  is a queue), so its acknowledgements come in ``seq`` order, and the batches of a
  dead process it adopted before its own; the order of acknowledgement is the
  order the consumer must keep.

Acknowledgements come from ``RecordingTransport``, a wrapper around the SDK's real
transport (``Client(config, transport=RecordingTransport(...))``): it records the
events of a batch once ``deliver`` returned, i.e. exactly when the SDK removes the
batch from its spool. A child process writes them to a journal file instead
(``DeliveryLedger.from_journal`` reads it back, a line cut by a kill included).
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from runstream.live.messages import Event
from runstream.sdk.transport.port import Delivery, Transport
from runstream.settings import Settings
from runstream.store.clickhouse import ProjectionStore

SAMPLES = 5
"""How many offending ids a report keeps per kind (enough to start looking)."""

PointKey = tuple[str, str, int]
"""(run_id, metric name, step)."""


@dataclass(frozen=True)
class AckedEvent:
    """One acknowledged event: what the checker needs to find it again and to order it."""

    event_id: str
    run_id: str
    seq: int
    type: str
    writer: str = ""
    """Which producer sent it (a process, a fork): order is checked among the events of one writer."""
    points: tuple[tuple[str, int], ...] = ()
    """(metric name, step) of each point of a ``metrics.logged`` event."""

    @classmethod
    def of(cls, event: Mapping[str, Any], writer: str = "") -> AckedEvent:
        points: tuple[tuple[str, int], ...] = ()
        if event.get("type") == "metrics.logged":
            points = tuple((str(p["name"]), int(p["step"])) for p in event["payload"]["points"])
        return cls(
            event_id=str(event["event_id"]),
            run_id=str(event["run_id"]),
            seq=int(event["seq"]),
            type=str(event["type"]),
            writer=writer,
            points=points,
        )


@dataclass(frozen=True)
class StoredEvent:
    """An event as a consumer holds it, in the consumer's order."""

    event_id: str
    run_id: str
    seq: int
    position: tuple[int, int] | None = None
    """(partition, offset) on the log, when known."""

    @classmethod
    def of(cls, event: Mapping[str, Any], position: tuple[int, int] | None = None) -> StoredEvent:
        return cls(str(event["event_id"]), str(event["run_id"]), int(event["seq"]), position)


@dataclass
class DeliveryReport:
    """Counts of what went wrong between acknowledgement and consumer, with a few examples of each."""

    where: str
    total: int
    """Acknowledged items the comparison covered (events, or points)."""
    lost: int = 0
    duplicated: int = 0
    unseen: int = 0
    out_of_order: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, item: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        examples = self.samples.setdefault(kind, [])
        if len(examples) < SAMPLES:
            examples.append(item)

    def merged(self, other: DeliveryReport) -> DeliveryReport:
        """Both comparisons in one report (figures added up, examples kept)."""
        out = DeliveryReport(f"{self.where} + {other.where}", self.total + other.total)
        for kind in ("lost", "duplicated", "unseen", "out_of_order"):
            setattr(out, kind, getattr(self, kind) + getattr(other, kind))
            out.samples[kind] = (self.samples.get(kind, []) + other.samples.get(kind, []))[:SAMPLES]
        return out

    def figures(self) -> dict[str, int]:
        return {
            "total": self.total,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unseen": self.unseen,
            "out_of_order": self.out_of_order,
        }

    def __str__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.figures().items())
        examples = "; ".join(f"{k}: {', '.join(v)}" for k, v in self.samples.items() if v)
        return f"{self.where}: {counts}" + (f" (e.g. {examples})" if examples else "")

    def assert_clean(self, *, allow_unseen: bool = False) -> None:
        """Fail unless nothing was lost, duplicated or reordered (and nothing unexpected appeared)."""
        bad = self.lost or self.duplicated or self.out_of_order or (self.unseen and not allow_unseen)
        if bad:
            raise AssertionError(f"delivery check failed: {self}")


class DeliveryLedger:
    """Every acknowledged event of a test, in the order the acknowledgements came. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, AckedEvent] = {}
        self._order: dict[str, int] = {}
        self.acknowledgements = 0
        """How many acknowledgements came in (an event acknowledged twice counts twice)."""

    # -- recording ----------------------------------------------------------------------
    def acknowledge(self, event: Mapping[str, Any] | AckedEvent, writer: str = "") -> None:
        acked = event if isinstance(event, AckedEvent) else AckedEvent.of(event, writer)
        with self._lock:
            self.acknowledgements += 1
            if acked.event_id not in self._events:
                self._events[acked.event_id] = acked
                self._order[acked.event_id] = len(self._order)

    def acknowledge_all(self, events: Iterable[Mapping[str, Any] | AckedEvent], writer: str = "") -> None:
        for event in events:
            self.acknowledge(event, writer)

    @classmethod
    def from_journal(cls, *paths: Path) -> DeliveryLedger:
        """A ledger of the acknowledgements journaled by ``RecordingTransport`` (in other processes)."""
        ledger = cls()
        for path in paths:
            if not path.exists():
                continue
            for line in path.read_bytes().splitlines():
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # the last line of a process killed while writing it
                ledger.acknowledge(
                    AckedEvent(
                        event_id=data["event_id"],
                        run_id=data["run_id"],
                        seq=data["seq"],
                        type=data["type"],
                        writer=data["writer"],
                        points=tuple((name, step) for name, step in data["points"]),
                    )
                )
        return ledger

    # -- what was recorded -----------------------------------------------------------------
    @property
    def events(self) -> list[AckedEvent]:
        with self._lock:
            return list(self._events.values())

    @property
    def run_ids(self) -> list[str]:
        return sorted({e.run_id for e in self.events})

    def points(self, run_ids: Iterable[str] | None = None) -> set[PointKey]:
        wanted = None if run_ids is None else set(run_ids)
        return {
            (e.run_id, name, step)
            for e in self.events
            if wanted is None or e.run_id in wanted
            for name, step in e.points
        }

    # -- comparisons ----------------------------------------------------------------------
    def report_events(
        self, stored: Iterable[StoredEvent], where: str, run_ids: Iterable[str] | None = None
    ) -> DeliveryReport:
        """Compare ``stored`` (in the consumer's order) with the acknowledged events of ``run_ids``."""
        runs = set(self.run_ids if run_ids is None else run_ids)
        expected = {e.event_id: e for e in self.events if e.run_id in runs}
        report = DeliveryReport(where, len(expected))
        seen: Counter[str] = Counter()
        highest: dict[tuple[str, str], tuple[int, AckedEvent]] = {}
        for item in stored:
            if item.run_id not in runs:
                continue
            seen[item.event_id] += 1
            if seen[item.event_id] > 1:
                at = f" at {item.position}" if item.position else ""
                report.note("duplicated", f"{item.event_id}{at}")
                continue
            acked = expected.get(item.event_id)
            if acked is None:
                report.note("unseen", f"{item.event_id} (run {item.run_id}, seq {item.seq})")
                continue
            key = (item.run_id, acked.writer)
            order = self._order[item.event_id]
            before = highest.get(key)
            if before is not None and order < before[0]:
                after = f"seq {item.seq} after seq {before[1].seq} ({before[1].event_id})"
                report.note("out_of_order", f"{item.event_id} {after}")
            else:
                highest[key] = (order, acked)
        for event_id, acked in expected.items():
            if not seen[event_id]:
                report.note("lost", f"{event_id} (run {acked.run_id}, seq {acked.seq}, {acked.type})")
        return report

    def report_points(
        self,
        stored: Iterable[PointKey],
        where: str,
        run_ids: Iterable[str] | None = None,
    ) -> DeliveryReport:
        """Compare stored (run, metric, step) keys, one per stored row, with the acknowledged points."""
        runs = set(self.run_ids if run_ids is None else run_ids)
        expected = self.points(runs)
        report = DeliveryReport(where, len(expected))
        counts = Counter(key for key in stored if key[0] in runs)
        for key, count in sorted(counts.items()):
            for _ in range(count - 1):
                report.note("duplicated", _point(key))
            if key not in expected:
                report.note("unseen", _point(key))
        for key in sorted(expected - counts.keys()):
            report.note("lost", _point(key))
        return report

    def report_stream(self, frames: Iterable[Any], run_ids: Iterable[str] | None = None) -> DeliveryReport:
        """Compare what a websocket subscriber received (frames as JSON dicts, or ``live.Event``s)."""
        return self.report_events(stream_events(frames), "websocket stream", run_ids)

    async def report_clickhouse(
        self, store: ProjectionStore, run_ids: Iterable[str] | None = None
    ) -> DeliveryReport:
        """Compare ``raw_events`` (every event by log position) and the points queries read.

        Points: ``metric_points FINAL`` (one row per (run, metric, step) in force, as
        the query API reads it) for lost and unseen points, and the ``points`` count of
        ``analytics_metric_summaries`` against the distinct steps stored, for points
        counted twice.
        """
        runs = sorted(self.run_ids if run_ids is None else set(run_ids))
        rows = await store.query(
            "SELECT partition, offset, event_id, run_id, value FROM raw_events FINAL "
            "WHERE run_id IN {runs:Array(String)} ORDER BY partition, offset",
            {"runs": runs},
        )
        stored = [
            StoredEvent(str(event_id), run_id, int(orjson.loads(value)["seq"]), (int(p), int(o)))
            for p, o, event_id, run_id, value in rows
        ]
        events = self.report_events(stored, "clickhouse raw_events", runs)
        point_rows = await store.query(
            "SELECT run_id, name, step FROM metric_points FINAL WHERE run_id IN {runs:Array(String)}",
            {"runs": runs},
        )
        points = self.report_points(
            [(r, n, int(s)) for r, n, s in point_rows], "clickhouse metric_points", runs
        )
        steps = Counter((r, n) for r, n, _ in point_rows)
        summaries = await store.query(
            "SELECT run_id, name, points FROM analytics_metric_summaries "
            "WHERE run_id IN {runs:Array(String)}",
            {"runs": runs},
        )
        for run_id, name, counted in summaries:
            for _ in range(int(counted) - steps[(run_id, name)]):
                points.note("duplicated", f"{run_id}/{name}: summary counts {counted}")
        return events.merged(points)


def stream_events(frames: Iterable[Any]) -> list[StoredEvent]:
    """The events in websocket frames (``event`` / ``events`` frames, or ``live.Event``), in order."""
    out: list[StoredEvent] = []
    for frame in frames:
        if isinstance(frame, Event):
            out.append(StoredEvent.of(frame.event, (frame.partition, frame.cursor)))
            continue
        if isinstance(frame, str | bytes):
            frame = orjson.loads(frame)
        if not isinstance(frame, Mapping):
            continue
        if frame.get("type") == "event":
            out.append(StoredEvent.of(frame["event"], (frame["partition"], frame["cursor"])))
        elif frame.get("type") == "events":
            for event, cursor in zip(frame["events"], frame["cursors"], strict=True):
                out.append(StoredEvent.of(event, (frame["partition"], cursor)))
    return out


def clickhouse_report(
    ledger: DeliveryLedger, settings: Settings, run_ids: Iterable[str] | None = None
) -> DeliveryReport:
    """``ledger.report_clickhouse`` from synchronous code: a store of its own on the settings' database."""

    async def compare() -> DeliveryReport:
        store = ProjectionStore(settings.resolved_clickhouse_dsn, settings.clickhouse_database)
        await store.start()
        try:
            return await ledger.report_clickhouse(store, run_ids)
        finally:
            await store.close()

    return asyncio.run(compare())


class RecordingTransport(Transport):
    """The SDK's transport, recording each event of a batch once the batch was acknowledged.

    Events the server refused (``Delivery.rejected``) are not acknowledged. With a
    ``journal`` file, each acknowledgement is also appended to it as a JSON line
    (written before ``deliver`` returns, so it survives a SIGKILL of the process).
    """

    def __init__(
        self,
        inner: Transport,
        ledger: DeliveryLedger | None = None,
        *,
        journal: Path | None = None,
        writer: str | None = None,
    ) -> None:
        self.inner = inner
        self.ledger = ledger if ledger is not None else DeliveryLedger()
        self.journal = journal
        self.writer = writer if writer is not None else f"pid-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.deliveries = 0
        self.failures = 0

    def deliver(self, body: bytes, events: list[dict[str, Any]]) -> Delivery:
        try:
            delivery = self.inner.deliver(body, events)
        except Exception:
            self.failures += 1
            raise
        self.deliveries += 1
        refused = {int(r["index"]) for r in delivery.rejected if "index" in r}
        acked = [AckedEvent.of(e, self.writer) for i, e in enumerate(events) if i not in refused]
        if self.journal is not None:
            self._write_journal(acked)
        self.ledger.acknowledge_all(acked)
        return delivery

    def _write_journal(self, acked: Sequence[AckedEvent]) -> None:
        assert self.journal is not None
        lines = b"".join(
            orjson.dumps(
                {
                    "event_id": a.event_id,
                    "run_id": a.run_id,
                    "seq": a.seq,
                    "type": a.type,
                    "writer": a.writer,
                    "points": a.points,
                }
            )
            + b"\n"
            for a in acked
        )
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.inner.close()


def _point(key: PointKey) -> str:
    return f"{key[0]}/{key[1]}@{key[2]}"
