"""The projector: consumes the events topic and writes the ClickHouse projections.

For each batch: validate every record (a malformed one goes to the dead-letter
topic with its reason, and never stops the others), write the rows, record the
batch's end positions in ``projector_offsets``, then commit them on the log.
Nothing is committed before the write succeeded; a failed write is retried
with backoff, forever, without crashing. Records at positions already recorded
in ClickHouse are skipped, and every table is keyed so that a record applied
twice changes nothing.

A batch is written with one insert per table (``rows.TABLE_COLUMNS``; the
materialized views of ``metric_summaries``, ``metric_rollups``, ``run_state`` and
``experiment_activity`` follow each insert), each with a deduplication token derived
from the batch's positions, so a retried batch is dropped whole. Metric points that
may replace or repeat a step are flagged first (``series.StepTracker``). When a
replay switched the store to a newer generation, the projector continues from the
positions the replay recorded there (``_follow_generation``).
"""

from __future__ import annotations

import asyncio
import base64
import enum
import functools
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import orjson

from runstream.errors import EventValidationError, RunstreamError
from runstream.eventlog.port import EventLog, LogConsumer, LogRecord, TopicPartition
from runstream.events.codec import decode_event_bytes
from runstream.events.validation import EventValidator
from runstream.projector.rows import TABLE_COLUMNS, ProjectionRows, SeriesKey
from runstream.projector.series import StepTracker
from runstream.store.clickhouse import ProjectionStore

log = logging.getLogger("runstream.projector")

_LOOKUP_CHUNK = 5000
_STORED_STEPS_SQL = """
SELECT workspace, experiment, run_id, name, max(last_step)
FROM metric_summaries
WHERE (workspace, experiment, run_id, name) IN {keys:Array(Tuple(String, String, String, String))}
GROUP BY workspace, experiment, run_id, name
"""


class ProjectorState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


def dead_letter(record: LogRecord, error: EventValidationError | str) -> bytes:
    """The dead-letter record for a malformed event: where it was, why, and its bytes."""
    reason = error.as_dict() if isinstance(error, EventValidationError) else {"message": error}
    try:
        value: str = record.value.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        value = base64.b64encode(record.value).decode("ascii")
        encoding = "base64"
    return orjson.dumps(
        {
            "reason": reason,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "value": value,
            "value_encoding": encoding,
        }
    )


class Projector:
    """Keeps the ClickHouse projections up to date with the events topic."""

    def __init__(
        self,
        log: EventLog,
        store: ProjectionStore,
        *,
        events_topic: str,
        deadletter_topic: str | None,
        group: str,
        consumer_group: str | None = None,
        validator: EventValidator | None = None,
        max_batch: int = 20_000,
        linger: float = 0.05,
    ) -> None:
        self._log = log
        self._store = store
        self.events_topic = events_topic
        self.deadletter_topic = deadletter_topic
        """Where malformed records go; None (a replay) drops them with a warning."""
        self.group = group
        """Name the positions are recorded under in ``projector_offsets``."""
        self.consumer_group = consumer_group or group
        """The consumer group on the log (a replay reads with a fresh one)."""
        self.steps = StepTracker()
        self.first_offsets: dict[TopicPartition, int] = {}
        """Offset of the first record this projector read, per partition."""
        self._generation = store.generation
        self._validator = validator or EventValidator()
        self.max_batch = max_batch
        self.linger = linger
        self.state = ProjectorState.NEW
        self._applied: dict[TopicPartition, int] = {}
        self.skipped: dict[TopicPartition, int] = {}
        """Records the log deleted (retention) before they were projected, per partition."""
        self._stop = asyncio.Event()
        self.on_batch: Callable[[Sequence[LogRecord]], Awaitable[None]] | None = None
        self.positions_changed = asyncio.Condition()

    @property
    def applied_positions(self) -> dict[TopicPartition, int]:
        """Next offset to apply, per partition, as recorded in ClickHouse."""
        return dict(self._applied)

    async def _load_applied(self) -> None:
        rows = await self._store.query(
            "SELECT topic, partition, max(next_offset) FROM projector_offsets"
            " WHERE grp = {grp:String} AND topic = {topic:String} GROUP BY topic, partition",
            {"grp": self.group, "topic": self.events_topic},
        )
        self._applied = {TopicPartition(t, int(p)): int(o) for t, p, o in rows}

    async def run(self) -> None:
        """Consume until ``stop()``; survives store and log failures by backing off."""
        if self.state is not ProjectorState.NEW:
            raise RuntimeError(f"expected projector state NEW, got {self.state.name}")
        self.state = ProjectorState.RUNNING
        await self._log.create_topic(self.events_topic, self._log.default_partitions)
        if self.deadletter_topic is not None:
            await self._log.create_topic(self.deadletter_topic, self._log.default_partitions)
        await self._retrying(self._load_applied)
        self._generation = self._store.generation
        consumer = self._log.consumer([self.events_topic], group=self.consumer_group)
        await consumer.start()
        try:
            for tp, offset in self._applied.items():
                committed = await consumer.committed(tp)
                if committed is None or committed < offset:
                    log.info(
                        "projector: %s/%d resumes at offset %d recorded in ClickHouse"
                        " (committed on the log: %s)",
                        tp.topic,
                        tp.partition,
                        offset,
                        committed,
                    )
                    await consumer.seek(tp, offset)
            while not self._stop.is_set():
                if self._store.generation != self._generation:
                    await self._follow_generation(consumer)
                records = await self._fetch_batch(consumer)
                if records:
                    await self._retrying(functools.partial(self.apply, records))
                    await self._commit(consumer, records)
        finally:
            await consumer.close()
            self.state = ProjectorState.STOPPED

    def stop(self) -> None:
        self._stop.set()

    async def _follow_generation(self, consumer: LogConsumer) -> None:
        """The store moved to a generation a replay built: continue from where the replay stopped."""
        async with self._store.switch_lock:
            self._generation = self._store.generation
            self.steps.clear()
            self._applied = {}
            await self._retrying(self._load_applied)
            ends = await self._log.end_offsets(self.events_topic)
            for partition in ends:
                tp = TopicPartition(self.events_topic, partition)
                await consumer.seek(tp, self._applied.get(tp, 0))
        log.info("projector: now writing generation %s", self._generation)

    async def _fetch_batch(self, consumer: LogConsumer) -> list[LogRecord]:
        records = await consumer.fetch(self.max_batch, timeout=0.25)
        if not records:
            return records
        deadline = time.monotonic() + self.linger
        while len(records) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            more = await consumer.fetch(self.max_batch - len(records), timeout=remaining)
            if not more:
                break
            records += more
        return records

    async def _retrying(self, action: Callable[[], Awaitable[None]]) -> None:
        delay = 0.1
        while True:
            try:
                await action()
            except RunstreamError as exc:
                if not exc.retriable or self._stop.is_set():
                    raise
                log.warning("projector: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 5.0)
            else:
                return

    async def _commit(self, consumer: LogConsumer, records: Sequence[LogRecord]) -> None:
        positions = self._ends(records)
        try:
            await consumer.commit(positions)
        except RunstreamError as exc:
            # The positions are already in ClickHouse; the next commit covers these too.
            log.warning("projector: commit failed (%s); positions kept in ClickHouse", exc)

    @staticmethod
    def _ends(records: Sequence[LogRecord]) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = {}
        for record in records:
            tp = record.topic_partition
            ends[tp] = max(ends.get(tp, 0), record.offset + 1)
        return ends

    async def apply(self, records: Sequence[LogRecord]) -> None:
        """Write the projections of ``records`` (idempotent), dead-letter the malformed ones."""
        async with self._store.switch_lock:
            fresh = await self._apply(records)
        if self.on_batch is not None:
            await self.on_batch(fresh)
        async with self.positions_changed:
            self.positions_changed.notify_all()

    async def _apply(self, records: Sequence[LogRecord]) -> list[LogRecord]:
        rows = ProjectionRows()
        dead: list[tuple[bytes, bytes]] = []
        fresh = [r for r in records if r.offset >= self._applied.get(r.topic_partition, 0)]
        self._note_skipped(fresh)
        for record in fresh:
            self.first_offsets.setdefault(record.topic_partition, record.offset)
            try:
                event = self._validator.validate(decode_event_bytes(record.value))
                rows.add(event, record.partition, record.offset, topic=record.topic, raw=record.value)
            except EventValidationError as exc:
                dead.append((record.key or b"", dead_letter(record, exc)))
            except orjson.JSONDecodeError as exc:
                dead.append((record.key or b"", dead_letter(record, f"invalid JSON: {exc}")))
        if dead and self.deadletter_topic is not None:
            log.warning("projector: %d malformed events sent to %s", len(dead), self.deadletter_topic)
            await self._log.append(self.deadletter_topic, dead)
        elif dead:
            log.warning("projector: %d malformed events skipped", len(dead))
        highest = self.steps.flag(rows, await self._stored_steps(rows))
        token = self._dedup_token(fresh)
        for table, table_rows in rows.tables.items():
            await self._store.insert(table, table_rows, TABLE_COLUMNS[table], dedup_token=f"{token}:{table}")
        ends = self._ends(records)
        now = datetime.now(UTC)
        await self._store.insert(
            "projector_offsets",
            [[self.group, tp.topic, tp.partition, off, now] for tp, off in ends.items()],
            ("grp", "topic", "partition", "next_offset", "updated_at"),
        )
        for tp, off in ends.items():
            self._applied[tp] = max(self._applied.get(tp, 0), off)
        self.steps.commit(highest)
        return fresh

    def _note_skipped(self, records: Sequence[LogRecord]) -> None:
        """Say so, loudly, when the log deleted records before they were projected: the
        events topic is neither compacted nor transactional, so a jump in offsets past
        the next one to apply is records lost to retention, never a silent gap."""
        expected = dict(self._applied)
        for record in records:
            tp = record.topic_partition
            want = expected.get(tp)
            if want is not None and record.offset > want:
                lost = record.offset - want
                self.skipped[tp] = self.skipped.get(tp, 0) + lost
                log.error(
                    "projector: %s/%d offsets %d..%d (%d records) were deleted by the log's retention "
                    "before they were projected; raise the events topic's retention above the "
                    "projector's longest outage",
                    tp.topic, tp.partition, want, record.offset - 1, lost,
                )  # fmt: skip
            expected[tp] = record.offset + 1

    async def _stored_steps(self, rows: ProjectionRows) -> dict[SeriesKey, int]:
        """Highest stored step of the batch's series the step tracker does not remember."""
        unknown = self.steps.unknown(rows.metric_series())
        stored: dict[SeriesKey, int] = {}
        for start in range(0, len(unknown), _LOOKUP_CHUNK):
            found = await self._store.query(
                _STORED_STEPS_SQL, {"keys": unknown[start : start + _LOOKUP_CHUNK]}
            )
            stored.update({(w, e, r, n): int(step) for w, e, r, n, step in found})
        return stored

    def _dedup_token(self, records: Sequence[LogRecord]) -> str:
        spans: dict[TopicPartition, tuple[int, int]] = {}
        for r in records:
            lo, hi = spans.get(r.topic_partition, (r.offset, r.offset))
            spans[r.topic_partition] = (min(lo, r.offset), max(hi, r.offset))
        text = ";".join(f"{tp.topic}/{tp.partition}:{lo}-{hi}" for tp, (lo, hi) in sorted(spans.items()))
        return f"{self.group}:" + hashlib.sha256(text.encode()).hexdigest()
