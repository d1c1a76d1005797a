"""The Apache Kafka event log, through aiokafka.

The producer is idempotent (which forces acks=all), so a record acknowledged by
``append`` is on every in-sync replica and a retried send is never written
twice. aiokafka keeps retrying an idempotent batch past ``request_timeout_ms``,
so every append is bounded by ``send_timeout`` of our own. Consumers never
auto-commit: the owner commits positions after its work is done.

aiokafka errors are translated to ``EventLogError`` here and go no further.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.errors import KafkaError

from runstream.errors import EventLogClosedError, EventLogError
from runstream.eventlog.port import (
    AppendUnconfirmedError,
    EventLog,
    LogConsumer,
    LogPosition,
    LogRecord,
    StartAt,
    TopicPartition,
)

_TOPIC_ALREADY_EXISTS = 36


class KafkaEventLog(EventLog):
    """The event log on an Apache Kafka cluster."""

    name = "kafka"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        default_partitions: int = 4,
        replication_factor: int = 1,
        send_timeout: float = 30.0,
        client_id: str = "runstream",
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.default_partitions = default_partitions
        self.replication_factor = replication_factor
        self.send_timeout = send_timeout
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=256 * 1024,
            request_timeout_ms=int(self.send_timeout * 1000),
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id)
        try:
            await asyncio.wait_for(producer.start(), self.send_timeout)
            await asyncio.wait_for(admin.start(), self.send_timeout)
        except (KafkaError, TimeoutError, OSError) as exc:
            await producer.stop()
            await admin.close()
            raise EventLogError(f"cannot reach Kafka at {self.bootstrap_servers}: {exc}") from exc
        self._producer, self._admin = producer, admin

    async def close(self) -> None:
        producer, admin = self._producer, self._admin
        self._producer = self._admin = None
        if producer is not None:
            await producer.stop()
        if admin is not None:
            await admin.close()

    def _require(self) -> tuple[AIOKafkaProducer, AIOKafkaAdminClient]:
        if self._producer is None or self._admin is None:
            raise EventLogClosedError("Kafka event log is not started")
        return self._producer, self._admin

    async def create_topic(self, topic: str, partitions: int, *, compacted: bool = False) -> None:
        _, admin = self._require()
        configs = {"cleanup.policy": "compact"} if compacted else {}
        try:
            response = await admin.create_topics(
                [NewTopic(topic, partitions, self.replication_factor, topic_configs=configs)]
            )
        except KafkaError as exc:
            raise EventLogError(f"cannot create topic {topic}: {exc}") from exc
        for name, code, *rest in getattr(response, "topic_errors", []):
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise EventLogError(f"cannot create topic {name}: error {code} {rest}")
        await self._wait_for_topic(topic)

    async def _wait_for_topic(self, topic: str, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while await self.partitions(topic) == 0:
            if asyncio.get_running_loop().time() > deadline:
                raise EventLogError(f"topic {topic} did not appear within {timeout} s")
            await asyncio.sleep(0.1)

    async def partitions(self, topic: str) -> int:
        _, admin = self._require()
        try:
            topics: list[dict[str, Any]] = await admin.describe_topics([topic])
        except KafkaError as exc:
            raise EventLogError(f"cannot describe topic {topic}: {exc}") from exc
        for entry in topics:
            if entry.get("topic") == topic and not entry.get("error_code"):
                return len(entry.get("partitions", []))
        return 0

    async def append(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> list[LogPosition]:
        producer, _ = self._require()
        if not records:
            return []

        # The producer keeps a record it was handed until the broker stores it or it gives up,
        # even when this call stops waiting: each record's position is a task that outlives it.
        pending: list[asyncio.Future[LogPosition]] = []
        try:
            async with asyncio.timeout(self.send_timeout):
                for key, value in records:
                    sent = await producer.send(topic, value, key=key)
                    pending.append(_position_of(topic, sent))
                return list(await asyncio.gather(*(asyncio.shield(p) for p in pending)))
        except TimeoutError as exc:
            raise AppendUnconfirmedError(
                f"Kafka at {self.bootstrap_servers} did not acknowledge {len(records)} records "
                f"to {topic} within {self.send_timeout} s",
                pending,
            ) from exc
        except KafkaError as exc:
            raise AppendUnconfirmedError(f"cannot append to {topic}: {exc}", pending) from exc

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return await self._watermarks(topic, "end")

    async def begin_offsets(self, topic: str) -> dict[int, int]:
        return await self._watermarks(topic, "begin")

    async def _watermarks(self, topic: str, which: str) -> dict[int, int]:
        partitions = await self.partitions(topic)
        if partitions == 0:
            return {}  # no such topic (yet): nothing on it
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False)
        try:
            await consumer.start()
            tps = [KafkaTopicPartition(topic, p) for p in range(partitions)]
            if which == "end":
                offsets = await consumer.end_offsets(tps)
            else:
                offsets = await consumer.beginning_offsets(tps)
        except KafkaError as exc:
            raise EventLogError(f"cannot read {which} offsets of {topic}: {exc}") from exc
        finally:
            await consumer.stop()
        return {tp.partition: int(offset) for tp, offset in offsets.items()}

    async def delete_records_before(self, topic: str, offsets: Mapping[int, int]) -> None:
        _, admin = self._require()
        request = {
            KafkaTopicPartition(topic, partition): RecordsToDelete(before_offset=offset)
            for partition, offset in offsets.items()
        }
        try:
            await admin.delete_records(request, timeout_ms=int(self.send_timeout * 1000))
        except KafkaError as exc:
            raise EventLogError(f"cannot delete records of {topic} before {dict(offsets)}: {exc}") from exc

    def consumer(
        self,
        topics: Sequence[str],
        *,
        group: str | None = None,
        start_at: StartAt = "beginning",
    ) -> LogConsumer:
        return KafkaLogConsumer(self, list(topics), group=group, start_at=start_at)


def _position_of(topic: str, sent: asyncio.Future[Any]) -> asyncio.Future[LogPosition]:
    """A task ending with the position of the record behind the producer's future ``sent``."""

    async def position() -> LogPosition:
        metadata = await sent
        return LogPosition(topic, metadata.partition, metadata.offset)

    task = asyncio.ensure_future(position())
    task.add_done_callback(_retrieve)
    return task


def _retrieve(task: asyncio.Future[LogPosition]) -> None:
    """Mark a position task's error as seen: nobody may wait for it any more."""
    if not task.cancelled():
        task.exception()


class KafkaLogConsumer(LogConsumer):
    """A Kafka consumer of every partition of its topics.

    Partitions are assigned explicitly (no group rebalancing); a group is used
    for committed positions only, so run one consumer per group and scale out by
    giving each projector process its own share of partitions later.
    """

    def __init__(
        self, log: KafkaEventLog, topics: list[str], *, group: str | None, start_at: StartAt
    ) -> None:
        self._log = log
        self._topics = topics
        self.group = group
        self._start_at = start_at
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._log.bootstrap_servers,
            client_id=self._log.client_id,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self._start_at == "beginning" else "latest",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        try:
            await consumer.start()
            assigned: list[KafkaTopicPartition] = []
            for topic in self._topics:
                count = await self._log.partitions(topic)
                if count == 0:
                    await self._log.create_topic(topic, self._log.default_partitions)
                    count = await self._log.partitions(topic)
                assigned += [KafkaTopicPartition(topic, p) for p in range(count)]
            consumer.assign(assigned)
            for tp in assigned:
                committed = await consumer.committed(tp) if self.group else None
                if committed is not None and committed >= 0:
                    consumer.seek(tp, committed)
                elif self._start_at == "end":
                    await consumer.seek_to_end(tp)
                else:
                    await consumer.seek_to_beginning(tp)
        except KafkaError as exc:
            await consumer.stop()
            raise EventLogError(f"cannot start consumer of {self._topics}: {exc}") from exc
        except BaseException:  # cancelled while starting: leave no connection behind
            await asyncio.shield(consumer.stop())
            raise
        self._consumer = consumer

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise EventLogClosedError("consumer is not started")
        return self._consumer

    async def fetch(self, max_records: int = 1000, timeout: float = 1.0) -> list[LogRecord]:
        consumer = self._require()
        try:
            batches = await consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        except KafkaError as exc:
            raise EventLogError(f"cannot fetch from {self._topics}: {exc}") from exc
        out: list[LogRecord] = []
        for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
            out += [
                LogRecord(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in batches[tp]
            ]
        return out

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        self._require().seek(KafkaTopicPartition(tp.topic, tp.partition), offset)

    async def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        if self.group is None:
            raise ValueError("commit needs a consumer group")
        consumer = self._require()
        try:
            await consumer.commit(
                {KafkaTopicPartition(tp.topic, tp.partition): off for tp, off in positions.items()}
            )
        except KafkaError as exc:
            raise EventLogError(f"cannot commit positions of group {self.group}: {exc}") from exc

    async def committed(self, tp: TopicPartition) -> int | None:
        if self.group is None:
            return None
        try:
            value = await self._require().committed(KafkaTopicPartition(tp.topic, tp.partition))
        except KafkaError as exc:
            raise EventLogError(f"cannot read committed position: {exc}") from exc
        return None if value is None or value < 0 else int(value)
