"""The embedded event log: topics, partitions and consumer groups in one SQLite file.

Durable on disk (WAL journal, ``synchronous=FULL``: an append survives a killed
process and a power cut once it returns), with Kafka's semantics for what the
rest of Runstream sees: murmur2 key partitioning, per-partition offsets from 0,
committed group positions that survive restarts. Several processes may share
the file; consumers in this process are woken the moment a record is appended,
records appended by another process are seen within ``cross_process_poll``
seconds. A group here has one member: every consumer of a group reads every
partition, so run one consumer per group (as ``runstream up`` does).
``delete_records_before`` is its retention: the cut is remembered in
``log_starts``, so offsets never restart, even when a partition is emptied.
Consumers read through a second connection on a thread of its own (WAL lets a
reader run beside the writer), so a fetch never waits behind an append's fsync.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from runstream.errors import EventLogClosedError, EventLogError
from runstream.eventlog.port import (
    EventLog,
    LogConsumer,
    LogPosition,
    LogRecord,
    StartAt,
    TopicPartition,
)
from runstream.events.partitioning import partition_for_key

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_starts (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
"""


def _log_start(db: sqlite3.Connection, topic: str, partition: int) -> int:
    """First offset a partition may hold: 0, or where retention last cut it."""
    row = db.execute(
        'SELECT "offset" FROM log_starts WHERE topic = ? AND partition = ?', (topic, partition)
    ).fetchone()
    return 0 if row is None else int(row[0])


class LocalEventLog(EventLog):
    """The embedded, durable event log (see the module docstring)."""

    name = "local"

    def __init__(
        self,
        path: Path,
        *,
        default_partitions: int = 4,
        cross_process_poll: float = 0.1,
    ) -> None:
        self.path = path
        self.default_partitions = default_partitions
        self.cross_process_poll = cross_process_poll
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        # Consumers read through a connection and thread of their own: in WAL mode a
        # reader never waits for a writer, so a fetch is not queued behind an append's fsync.
        self._read_executor: ThreadPoolExecutor | None = None
        self._reader: sqlite3.Connection | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._partition_cache: dict[str, int] = {}

    # -- plumbing --------------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, reader: bool = False) -> T:
        db, executor = (self._reader, self._read_executor) if reader else (self._db, self._executor)
        if executor is None or db is None:
            raise EventLogClosedError(f"local event log {self.path} is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, fn, db)
        except sqlite3.Error as exc:
            raise EventLogError(f"local event log {self.path}: {exc}") from exc

    async def start(self) -> None:
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runstream-log")
        loop = asyncio.get_running_loop()

        def open_db() -> sqlite3.Connection:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            return db

        def open_reader() -> sqlite3.Connection:
            return sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)

        try:
            self._db = await loop.run_in_executor(self._executor, open_db)
            self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runstream-log-read")
            self._reader = await loop.run_in_executor(self._read_executor, open_reader)
        except sqlite3.Error as exc:
            for executor in (self._executor, self._read_executor):
                if executor is not None:
                    executor.shutdown(wait=False)
            if self._db is not None:
                self._db.close()
            self._executor = self._read_executor = None
            self._db = None
            raise EventLogError(f"cannot open local event log {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is None or self._executor is None:
            return
        db, executor = self._db, self._executor
        reader, read_executor = self._reader, self._read_executor
        loop = asyncio.get_running_loop()
        if reader is not None and read_executor is not None:
            await loop.run_in_executor(read_executor, reader.close)
        await loop.run_in_executor(executor, db.close)
        self._db = self._reader = None
        self._executor = self._read_executor = None
        executor.shutdown(wait=True)
        if read_executor is not None:
            read_executor.shutdown(wait=True)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _notify(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for_append(self, timeout: float) -> None:
        """Wait until this process appends a record, or ``timeout`` seconds pass."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)

    # -- topics ----------------------------------------------------------------------------
    async def create_topic(self, topic: str, partitions: int, *, compacted: bool = False) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")

        def create(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)", (topic, partitions))

        await self._run(create)

    async def partitions(self, topic: str) -> int:
        cached = self._partition_cache.get(topic)
        if cached:
            return cached

        def read(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
            return int(row[0]) if row else 0

        count = await self._run(read)
        if count:
            self._partition_cache[topic] = count
        return count

    async def append(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> list[LogPosition]:
        if not records:
            return []
        partitions = await self.partitions(topic)
        if partitions == 0:
            await self.create_topic(topic, self.default_partitions)
            partitions = await self.partitions(topic)
        now = int(time.time() * 1000)

        def write(db: sqlite3.Connection) -> list[LogPosition]:
            positions: list[LogPosition] = []
            next_offsets: dict[int, int] = {}
            db.execute("BEGIN IMMEDIATE")
            try:
                for key, value in records:
                    partition = partition_for_key(key, partitions)
                    offset = next_offsets.get(partition)
                    if offset is None:
                        row = db.execute(
                            'SELECT MAX("offset") FROM records WHERE topic = ? AND partition = ?',
                            (topic, partition),
                        ).fetchone()
                        offset = _log_start(db, topic, partition) if row[0] is None else int(row[0]) + 1
                    db.execute(
                        'INSERT INTO records (topic, partition, "offset", key, value, ts)'
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (topic, partition, offset, key, value, now),
                    )
                    next_offsets[partition] = offset + 1
                    positions.append(LogPosition(topic, partition, offset))
                db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (e.g. SQLITE_FULL): keep the real cause.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return positions

        positions = await self._run(write)
        self._notify()
        return positions

    async def end_offsets(self, topic: str) -> dict[int, int]:
        partitions = await self.partitions(topic)

        def read(db: sqlite3.Connection) -> dict[int, int]:
            return self._ends(db, topic, partitions)

        return await self._run(read)

    @staticmethod
    def _ends(db: sqlite3.Connection, topic: str, partitions: int) -> dict[int, int]:
        ends = dict.fromkeys(range(partitions), 0)
        for partition, start in db.execute(
            'SELECT partition, "offset" FROM log_starts WHERE topic = ?', (topic,)
        ):
            if int(partition) in ends:
                ends[int(partition)] = int(start)
        for partition, top in db.execute(
            'SELECT partition, MAX("offset") FROM records WHERE topic = ? GROUP BY partition',
            (topic,),
        ):
            ends[int(partition)] = int(top) + 1
        return ends

    async def begin_offsets(self, topic: str) -> dict[int, int]:
        partitions = await self.partitions(topic)

        def read(db: sqlite3.Connection) -> dict[int, int]:
            begins = self._ends(db, topic, partitions)
            for partition, low in db.execute(
                'SELECT partition, MIN("offset") FROM records WHERE topic = ? GROUP BY partition',
                (topic,),
            ):
                begins[int(partition)] = int(low)
            return begins

        return await self._run(read)

    async def delete_records_before(self, topic: str, offsets: Mapping[int, int]) -> None:
        partitions = await self.partitions(topic)

        def delete(db: sqlite3.Connection) -> None:
            ends = self._ends(db, topic, partitions)
            for partition, offset in offsets.items():
                if partition not in ends or not 0 <= offset <= ends[partition]:
                    raise EventLogError(
                        f"cannot delete records of {topic}/{partition} before {offset}: the partition "
                        f"ends at {ends.get(partition, 'no such partition')}"
                    )
            db.execute("BEGIN IMMEDIATE")
            try:
                for partition, offset in offsets.items():
                    if offset <= _log_start(db, topic, partition):
                        continue
                    db.execute(
                        'DELETE FROM records WHERE topic = ? AND partition = ? AND "offset" < ?',
                        (topic, partition, offset),
                    )
                    db.execute(
                        'INSERT INTO log_starts (topic, partition, "offset") VALUES (?, ?, ?)'
                        ' ON CONFLICT (topic, partition) DO UPDATE SET "offset" = excluded."offset"',
                        (topic, partition, offset),
                    )
                db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (e.g. SQLITE_FULL): keep the real cause.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

        await self._run(delete)

    def consumer(
        self,
        topics: Sequence[str],
        *,
        group: str | None = None,
        start_at: StartAt = "beginning",
    ) -> LogConsumer:
        return LocalLogConsumer(self, list(topics), group=group, start_at=start_at)

    # -- used by LocalLogConsumer ----------------------------------------------------------
    async def _read(self, positions: Mapping[TopicPartition, int], max_records: int) -> list[LogRecord]:
        def read(db: sqlite3.Connection) -> list[LogRecord]:
            out: list[LogRecord] = []
            for tp, offset in sorted(positions.items()):
                budget = max_records - len(out)
                if budget <= 0:
                    break
                for row in db.execute(
                    'SELECT "offset", key, value, ts FROM records'
                    ' WHERE topic = ? AND partition = ? AND "offset" >= ?'
                    ' ORDER BY "offset" LIMIT ?',
                    (tp.topic, tp.partition, offset, budget),
                ):
                    out.append(LogRecord(tp.topic, tp.partition, row[0], row[1], row[2], row[3]))
            return out

        return await self._run(read, reader=True)

    async def _commit(self, group: str, positions: Mapping[TopicPartition, int]) -> None:
        def write(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(
                    'INSERT INTO group_offsets (grp, topic, partition, "offset") VALUES (?, ?, ?, ?)'
                    ' ON CONFLICT (grp, topic, partition) DO UPDATE SET "offset" = excluded."offset"',
                    [(group, tp.topic, tp.partition, off) for tp, off in positions.items()],
                )

        await self._run(write)

    async def _committed(self, group: str, tp: TopicPartition) -> int | None:
        def read(db: sqlite3.Connection) -> int | None:
            row = db.execute(
                'SELECT "offset" FROM group_offsets WHERE grp = ? AND topic = ? AND partition = ?',
                (group, tp.topic, tp.partition),
            ).fetchone()
            return None if row is None else int(row[0])

        return await self._run(read)


class LocalLogConsumer(LogConsumer):
    """A consumer of the local log: every partition of its topics, one member per group."""

    def __init__(
        self, log: LocalEventLog, topics: list[str], *, group: str | None, start_at: StartAt
    ) -> None:
        self._log = log
        self._topics = topics
        self.group = group
        self._start_at = start_at
        self._positions: dict[TopicPartition, int] = {}
        self._started = False

    async def start(self) -> None:
        for topic in self._topics:
            partitions = await self._log.partitions(topic)
            if partitions == 0:
                await self._log.create_topic(topic, self._log.default_partitions)
                partitions = await self._log.partitions(topic)
            ends = await self._log.end_offsets(topic)
            for partition in range(partitions):
                tp = TopicPartition(topic, partition)
                committed = await self._log._committed(self.group, tp) if self.group else None
                if committed is not None:
                    self._positions[tp] = committed
                elif self._start_at == "end":
                    self._positions[tp] = ends.get(partition, 0)
                else:
                    self._positions[tp] = 0
        self._started = True

    async def close(self) -> None:
        self._started = False

    async def fetch(self, max_records: int = 1000, timeout: float = 1.0) -> list[LogRecord]:
        if not self._started:
            raise EventLogClosedError("consumer is not started")
        deadline = time.monotonic() + timeout
        while True:
            records = await self._log._read(self._positions, max_records)
            if records:
                for record in records:
                    self._positions[record.topic_partition] = record.offset + 1
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await self._log.wait_for_append(min(remaining, self._log.cross_process_poll))

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self._positions:
            raise ValueError(f"{tp} is not read by this consumer")
        self._positions[tp] = offset

    async def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        if self.group is None:
            raise ValueError("commit needs a consumer group")
        await self._log._commit(self.group, positions)

    async def committed(self, tp: TopicPartition) -> int | None:
        if self.group is None:
            return None
        return await self._log._committed(self.group, tp)
