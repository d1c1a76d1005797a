"""Fan-out of the events topic to websocket connections, per run.

Each gateway process tails the events topic itself (no consumer group: every
gateway sees every record) from the end, and hands each record to the
connections subscribed to its run. A record's cursor is its offset in its
partition; all of a run's events are in one partition, so a run's cursors
increase. A subscription given a cursor first replays the run's records after
it from the log, then continues live: replayed and live records meet at the
offset the tailer had reached when the subscription was registered, so none is
missed or sent twice.

Every connection has a bounded queue. When it is full the connection's queue
is emptied, it gets one ``resync`` message per subscription carrying the last
cursor it was sent, and its subscriptions end: memory stays bounded and a slow
client never delays the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from runstream.eventlog.port import EventLog, LogConsumer, LogRecord, TopicPartition
from runstream.events.partitioning import partition_for_key

log = logging.getLogger("runstream.gateway")


def event_frame(sub_id: str, record: LogRecord) -> bytes:
    """The ``event`` message for one record; the record's bytes are spliced in unparsed."""
    return b"".join(
        (
            b'{"type":"event","sub":',
            orjson.dumps(sub_id),
            b',"partition":',
            str(record.partition).encode(),
            b',"cursor":',
            str(record.offset).encode(),
            b',"event":',
            record.value,
            b"}",
        )
    )


@dataclass(eq=False)
class Subscription:
    sub_id: str
    run_id: str
    partition: int
    last_cursor: int | None
    """Cursor of the last event queued for this subscription."""
    holding: list[LogRecord] | None = None
    """Live records kept back while the subscription replays older ones."""


Outgoing = tuple[bytes, str | None, int | None]
"""A queued frame, with the subscription and cursor it carries (for event frames)."""


@dataclass(eq=False)
class Connection:
    """One websocket's outgoing side: a bounded queue of encoded frames.

    ``sent_cursors`` holds, per subscription, the cursor of the last event frame
    actually written to the socket: what a resync reports, so that frames
    dropped from the queue are sent again after the client resubscribes.
    """

    queue_size: int = 1000
    queue: asyncio.Queue[Outgoing] = field(init=False)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    sent_cursors: dict[str, int | None] = field(default_factory=dict)
    resyncs: int = 0

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.queue_size)

    def send(self, frame: bytes, sub_id: str | None = None, cursor: int | None = None) -> bool:
        try:
            self.queue.put_nowait((frame, sub_id, cursor))
        except asyncio.QueueFull:
            return False
        return True

    def mark_sent(self, sub_id: str | None, cursor: int | None) -> None:
        if sub_id is not None and cursor is not None and sub_id in self.sent_cursors:
            self.sent_cursors[sub_id] = cursor


class LiveHub:
    """Tails the events topic and routes each record to the subscriptions of its run."""

    def __init__(self, log: EventLog, events_topic: str) -> None:
        self._log = log
        self.events_topic = events_topic
        self._consumer: LogConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._by_run: dict[str, set[tuple[Connection, Subscription]]] = {}
        self._positions: dict[int, int] = {}
        self._partitions = 0
        self.delivered = 0

    async def start(self) -> None:
        await self._log.create_topic(self.events_topic, self._log.default_partitions)
        self._partitions = await self._log.partitions(self.events_topic)
        self._positions = await self._log.end_offsets(self.events_topic)
        consumer = self._log.consumer([self.events_topic], start_at="end")
        await consumer.start()
        for partition, offset in self._positions.items():
            await consumer.seek(TopicPartition(self.events_topic, partition), offset)
        self._consumer = consumer
        self._task = asyncio.create_task(self._tail(), name="runstream-gateway-tail")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.close()

    async def _tail(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                records = await self._consumer.fetch(5000, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway: reading the events topic failed; retrying")
                await asyncio.sleep(0.5)
                continue
            self.dispatch(records)

    def dispatch(self, records: Iterable[LogRecord]) -> None:
        for record in records:
            self._positions[record.partition] = record.offset + 1
            if not self._by_run:
                continue
            run_id = _run_id_of(record)
            members = self._by_run.get(run_id) if run_id is not None else None
            if not members or not _is_json(record):
                continue
            for connection, subscription in list(members):
                if subscription.holding is not None:
                    subscription.holding.append(record)
                else:
                    self._deliver(connection, subscription, record)

    def _deliver(self, connection: Connection, subscription: Subscription, record: LogRecord) -> None:
        if subscription.sub_id not in connection.subscriptions:
            return
        if connection.send(event_frame(subscription.sub_id, record), subscription.sub_id, record.offset):
            subscription.last_cursor = record.offset
            self.delivered += 1
        else:
            self._resync(connection)

    def _resync(self, connection: Connection) -> None:
        """The connection fell behind: drop its queue and tell each subscription where it stood."""
        while not connection.queue.empty():
            connection.queue.get_nowait()
        connection.resyncs += 1
        for subscription in list(connection.subscriptions.values()):
            sent = connection.sent_cursors.get(subscription.sub_id)
            self.unsubscribe(connection, subscription.sub_id)
            connection.send(
                orjson.dumps(
                    {
                        "type": "resync",
                        "sub": subscription.sub_id,
                        "run_id": subscription.run_id,
                        "partition": subscription.partition,
                        "cursor": sent,
                        "reason": "client too slow: queue full; subscribe again with this cursor",
                    }
                )
            )

    async def subscribe(
        self, connection: Connection, sub_id: str, run_id: str, cursor: int | None
    ) -> Subscription:
        """Register a subscription; with ``cursor``, first replay the run's records after it."""
        partition = partition_for_key(run_id.encode(), self._partitions)
        live_from = self._positions.get(partition, 0)
        subscription = Subscription(sub_id, run_id, partition, last_cursor=live_from - 1)
        replay = cursor is not None and cursor + 1 < live_from
        if replay:
            subscription.holding = []
            subscription.last_cursor = cursor
        connection.subscriptions[sub_id] = subscription
        connection.sent_cursors[sub_id] = subscription.last_cursor
        self._by_run.setdefault(run_id, set()).add((connection, subscription))
        connection.send(
            orjson.dumps(
                {
                    "type": "subscribed",
                    "sub": sub_id,
                    "run_id": run_id,
                    "partition": partition,
                    "cursor": cursor if replay else live_from - 1,
                }
            )
        )
        if replay and cursor is not None:
            try:
                await self._replay(connection, subscription, cursor + 1, live_from)
            finally:
                held, subscription.holding = subscription.holding or [], None
            for record in held:
                self._deliver(connection, subscription, record)
        return subscription

    async def _replay(
        self, connection: Connection, subscription: Subscription, start: int, stop: int
    ) -> None:
        tp = TopicPartition(self.events_topic, subscription.partition)
        consumer = self._log.consumer([self.events_topic], start_at="end")
        await consumer.start()
        try:
            await consumer.seek(tp, start)
            position = start
            while position < stop:
                records = await consumer.fetch(5000, timeout=1.0)
                for record in records:
                    if record.partition != subscription.partition or record.offset >= stop:
                        continue
                    position = record.offset + 1
                    if _run_id_of(record) == subscription.run_id and _is_json(record):
                        self._deliver(connection, subscription, record)
                        if subscription.sub_id not in connection.subscriptions:
                            return
        finally:
            await consumer.close()

    def unsubscribe(self, connection: Connection, sub_id: str) -> None:
        subscription = connection.subscriptions.pop(sub_id, None)
        connection.sent_cursors.pop(sub_id, None)
        if subscription is None:
            return
        members = self._by_run.get(subscription.run_id)
        if members is not None:
            members.discard((connection, subscription))
            if not members:
                del self._by_run[subscription.run_id]

    def disconnect(self, connection: Connection) -> None:
        for sub_id in list(connection.subscriptions):
            self.unsubscribe(connection, sub_id)


def _run_id_of(record: LogRecord) -> str | None:
    if record.key:
        try:
            return record.key.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        value = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None
    run_id = value.get("run_id") if isinstance(value, dict) else None
    return run_id if isinstance(run_id, str) else None


def _is_json(record: LogRecord) -> bool:
    try:
        orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return False
    return True
