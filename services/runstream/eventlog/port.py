"""The event log port: topics of partitions of ordered records, and consumers that read them.

Two adapters implement it and pass one contract suite (``tests/contract``):
``kafka`` (Apache Kafka through aiokafka) and ``local`` (a durable SQLite file,
the embedded default). Semantics shared by both:

- ``append`` returns once the records are durable (Kafka: acks=all with the
  idempotent producer; local: committed with fsync). Records with the same key
  go to the same partition and keep their order.
- Offsets count from 0 per partition. A consumer's position is the offset of the
  next record it will read; ``commit`` stores that position for its group.
- A group consumer starts at its group's committed position, or at the beginning
  of each partition when nothing is committed. A reader (no group) starts where
  it is told: the beginning, the end, or explicit offsets.
- Retention removes a partition's oldest records (``delete_records_before``, as
  Kafka's DeleteRecords and its retention do): ``begin_offsets`` is then the
  first offset still held, offsets never restart, and a reader that seeks below
  the first held offset reads from it.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from runstream.errors import EventLogError

StartAt = Literal["beginning", "end"]


@dataclass(frozen=True, order=True)
class TopicPartition:
    """One partition of one topic."""

    topic: str
    """Name of the topic."""
    partition: int
    """Partition number, from 0."""


@dataclass(frozen=True)
class LogPosition:
    """Where an appended record landed."""

    topic: str
    partition: int
    offset: int


class AppendUnconfirmedError(EventLogError):
    """An append gave up waiting, but some of its records may still be written.

    ``pending`` holds, for each record handed to the log before it gave up (in
    order), a task that ends with the record's position once the log stored it, or
    with an error if it never will. Whoever sends the records again waits for these
    first, so that they are not written twice.
    """

    def __init__(self, message: str, pending: Sequence[asyncio.Future[LogPosition]]) -> None:
        super().__init__(message)
        self.pending = list(pending)


@dataclass(frozen=True)
class LogRecord:
    """A record read from the log."""

    topic: str
    partition: int
    offset: int
    """Offset of the record within its partition."""
    key: bytes | None
    value: bytes
    timestamp_ms: int
    """When the log stored it (milliseconds since the Unix epoch)."""

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class LogConsumer(abc.ABC):
    """Reads records from the partitions of some topics, in offset order per partition."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def fetch(self, max_records: int = 1000, timeout: float = 1.0) -> list[LogRecord]:
        """Records after the current position; waits up to ``timeout`` seconds for the first one."""

    @abc.abstractmethod
    async def seek(self, tp: TopicPartition, offset: int) -> None:
        """Make ``offset`` the next record read from ``tp``."""

    @abc.abstractmethod
    async def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        """Store the next offset to read per partition for this consumer's group."""

    @abc.abstractmethod
    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's stored position for ``tp``, or None."""

    async def __aenter__(self) -> LogConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class EventLog(abc.ABC):
    """A durable, partitioned, ordered log of records."""

    name: str = "eventlog"
    default_partitions: int = 4
    """Partitions of a topic this log creates on its own."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def create_topic(self, topic: str, partitions: int, *, compacted: bool = False) -> None:
        """Create ``topic`` if it does not exist yet; an existing topic is left as it is.

        ``compacted``: the log keeps at least the last record of each key forever
        (Kafka's ``cleanup.policy=compact``) instead of dropping old records by age.
        The local log never drops records on its own, so it is the same there."""

    @abc.abstractmethod
    async def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has (0 when it does not exist)."""

    @abc.abstractmethod
    async def append(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> list[LogPosition]:
        """Append ``(key, value)`` records; returns where each landed, once all are durable."""

    @abc.abstractmethod
    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next appended record will get."""

    @abc.abstractmethod
    async def begin_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the earliest offset still held (the end offset when it holds none)."""

    @abc.abstractmethod
    async def delete_records_before(self, topic: str, offsets: Mapping[int, int]) -> None:
        """Remove the records of each partition before its offset (retention); raises
        ``EventLogError`` for an offset past the partition's end."""

    @abc.abstractmethod
    def consumer(
        self,
        topics: Sequence[str],
        *,
        group: str | None = None,
        start_at: StartAt = "beginning",
    ) -> LogConsumer:
        """A consumer of every partition of ``topics``.

        With a ``group`` it starts at the group's committed positions (``start_at``
        where none is committed) and may commit; without, it starts at ``start_at``.
        """

    async def __aenter__(self) -> EventLog:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def stop_reading(task: asyncio.Task[None] | None, consumer: LogConsumer | None) -> None:
    """Cancel the task that follows a consumer, wait for it, then close the consumer."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if consumer is not None:
        await consumer.close()
