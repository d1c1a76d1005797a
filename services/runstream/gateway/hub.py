"""Fan-out of the events topic to subscriptions: runs, experiments and compute targets.

Each gateway process tails the events topic itself (no consumer group: every
gateway sees every record) from the end, parses each record once, keeps the
latest ones in memory (``RecentRecords``) and offers each to the feeds of the
subscriptions it concerns. At start it reads the latest records back into that
memory (``warm_recent``), so that clients reconnecting after a restart resume
from memory rather than each from the log. Gateways share nothing: a cursor is a log position,
so a client reconnects to any of them.

A subscription starts (``catchup.start_subscription``) from a cursor or a
snapshot's position, catches up from memory, the log or ClickHouse, and is
registered for live records in the same step in which it has caught up with
the tail: nothing is missed, and a feed ignores what it already took, so
nothing comes twice.

Every connection has a bounded queue. When a live frame does not fit, the
connection's queue is emptied, it gets one ``resync`` per subscription carrying
the last cursor written to its socket, and its subscriptions end: memory stays
bounded and a slow client never delays the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from runstream.errors import RunstreamError
from runstream.eventlog.port import EventLog, LogConsumer, LogRecord, TopicPartition, stop_reading
from runstream.gateway.catchup import start_subscription
from runstream.gateway.connection import Connection
from runstream.gateway.feeds import (
    RANK_OF_STATUS,
    ComputeFeed,
    ExperimentFeed,
    Feed,
    Member,
    Membership,
    RunFeed,
)
from runstream.gateway.protocol import TARGET_FIELD, Kind, Subscribe, cursor_json
from runstream.gateway.recent import Entry, RecentRecords, entry_of
from runstream.gateway.snapshots import GatewayStore
from runstream.gateway.subscription import Subscription, SubscriptionState

log = logging.getLogger("runstream.gateway")

DEFAULT_RECENT_BYTES = 32 * 1024 * 1024
WARM_RECORDS = 20_000
"""Records per partition read back into memory at start (the byte budget keeps the latest)."""
WARM_SECONDS = 10.0
"""How long reading them back may take; a partition not read back in time starts empty."""


@dataclass
class _Routes:
    runs: dict[str, set[Subscription]] = field(default_factory=dict)
    experiments: dict[tuple[str, str], set[Subscription]] = field(default_factory=dict)
    computes: dict[str, set[Subscription]] = field(default_factory=dict)

    def index(self, sub: Subscription) -> tuple[dict[Any, set[Subscription]], Any]:
        request = sub.request
        if request.kind is Kind.RUN:
            return self.runs, request.target
        if request.kind is Kind.EXPERIMENT:
            return self.experiments, (request.workspace, request.target)
        return self.computes, request.workspace

    def add(self, sub: Subscription) -> None:
        table, key = self.index(sub)
        table.setdefault(key, set()).add(sub)

    def discard(self, sub: Subscription) -> None:
        table, key = self.index(sub)
        members = table.get(key)
        if members is not None:
            members.discard(sub)
            if not members:
                del table[key]


class LiveHub:
    """Tails the events topic and routes each record to the subscriptions it concerns."""

    def __init__(
        self,
        log: EventLog,
        events_topic: str,
        *,
        store: GatewayStore | None = None,
        recent_bytes: int = DEFAULT_RECENT_BYTES,
    ) -> None:
        self.log = log
        self.events_topic = events_topic
        self.store = store
        self.recent_bytes = recent_bytes
        self._consumer: LogConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._routes = _Routes()
        self._positions: dict[int, int] = {}
        """Per partition, the next offset the tail will read: everything before was dispatched."""
        self._recent: dict[int, RecentRecords] = {}
        self._partitions = 0
        self._touched: list[Subscription] = []
        self.delivered = 0
        self.resyncs = 0

    # -- the tail --------------------------------------------------------------------------
    async def start(self) -> None:
        await self.log.create_topic(self.events_topic, self.log.default_partitions)
        self._partitions = await self.log.partitions(self.events_topic)
        self.reset_positions(await self.log.end_offsets(self.events_topic))
        try:
            await self.warm_recent()
        except RunstreamError as exc:
            log.warning("gateway: could not read recent records back at start (%s); memory starts empty", exc)
            self.reset_positions(self._positions)
        consumer = self.log.consumer([self.events_topic], start_at="end")
        await consumer.start()
        for partition, offset in self._positions.items():
            await consumer.seek(TopicPartition(self.events_topic, partition), offset)
        self._consumer = consumer
        self._task = asyncio.create_task(self._tail(), name="runstream-gateway-tail")

    async def warm_recent(self) -> None:
        """Read the latest records before the tail's positions back into memory.

        A partition is only kept when every record from where the read began up to the
        tail's position was read (memory must hold every event of its window); one not
        read back within ``WARM_SECONDS`` keeps an empty window at the tail's position.
        """
        ends = dict(self._positions)
        begins = await self.log.begin_offsets(self.events_topic)
        starts = {p: max(begins.get(p, 0), end - WARM_RECORDS) for p, end in ends.items()}
        todo = {p for p, end in ends.items() if starts[p] < end}
        if not todo:
            return
        share = max(64 * 1024, self.recent_bytes // max(1, len(ends)))
        warmed = {p: RecentRecords(starts[p], share) for p in todo}
        consumer = self.log.consumer([self.events_topic], start_at="end")
        await consumer.start()
        deadline = asyncio.get_running_loop().time() + WARM_SECONDS
        try:
            for partition in todo:
                await consumer.seek(TopicPartition(self.events_topic, partition), starts[partition])
            while todo and asyncio.get_running_loop().time() < deadline:
                for record in await consumer.fetch(5000, timeout=0.5):
                    partition, offset = record.partition, record.offset
                    if partition not in todo or offset >= ends[partition]:
                        continue
                    parsed = entry_of(partition, offset, record.value)
                    warmed[partition].append(offset, parsed[0] if parsed else None)
                    if offset + 1 >= ends[partition]:
                        todo.discard(partition)
        finally:
            await consumer.close()
        for partition, recent in warmed.items():
            if partition not in todo and recent.end == ends[partition]:
                self._recent[partition] = recent

    def reset_positions(self, positions: dict[int, int]) -> None:
        self._partitions = max(self._partitions, len(positions))
        self._positions = dict(positions)
        share = max(64 * 1024, self.recent_bytes // max(1, len(positions)))
        self._recent = {p: RecentRecords(o, share) for p, o in positions.items()}

    @property
    def partitions(self) -> int:
        return self._partitions

    def position(self, partition: int) -> int:
        return self._positions.get(partition, 0)

    def positions(self) -> dict[int, int]:
        return dict(self._positions)

    def recent(self, partition: int) -> RecentRecords:
        recent = self._recent.get(partition)
        if recent is None:
            recent = self._recent[partition] = RecentRecords(self.position(partition), 64 * 1024)
        return recent

    async def close(self) -> None:
        task, self._task = self._task, None
        consumer, self._consumer = self._consumer, None
        await stop_reading(task, consumer)

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
        routes = self._routes
        for record in records:
            partition, offset = record.partition, record.offset
            if offset < self._positions.get(partition, 0):
                continue
            self._positions[partition] = offset + 1
            parsed = entry_of(partition, offset, record.value)
            self.recent(partition).append(offset, parsed[0] if parsed else None)
            if parsed is None:
                continue
            entry, envelope = parsed
            # Copies: an offer may resync a connection, which removes its subscriptions.
            for sub in tuple(routes.runs.get(entry.run_id, ())):
                self._offer(sub, entry, envelope)
            for sub in tuple(routes.experiments.get((entry.workspace, entry.experiment), ())):
                self._offer(sub, entry, envelope)
            for sub in tuple(routes.computes.get(entry.workspace, ())):
                self._offer(sub, entry, envelope)
        touched, self._touched = self._touched, []
        for sub in touched:
            sub.touched = False
            self.schedule(sub)

    def _offer(self, sub: Subscription, entry: Entry, envelope: dict[str, Any]) -> None:
        feed = sub.feed
        if feed is None or not feed.matches(entry) or not feed.offer(entry, envelope):
            return
        config = sub.connection.config
        if feed.gate.interval == 0 and feed.pending_bytes > config.max_frame_bytes:
            self.flush(sub)  # no rate to wait for: a burst goes out as it comes, bounded by the queue
        elif feed.pending_bytes > config.pending_bytes:
            self.resync(sub.connection, "client too slow: more is pending than its limit")
        elif not sub.touched:
            sub.touched = True
            self._touched.append(sub)

    # -- sending ---------------------------------------------------------------------------
    def schedule(self, sub: Subscription) -> None:
        """Flush ``sub`` now if its rate allows, else when it does."""
        if sub.state is not SubscriptionState.LIVE or sub.flush_handle is not None or sub.feed is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = sub.feed.due(now)
        if due is None:
            return
        if due <= now:
            self.flush(sub)
        else:
            sub.flush_handle = loop.call_at(due, self._flush_later, sub)

    def _flush_later(self, sub: Subscription) -> None:
        sub.flush_handle = None
        self.flush(sub)

    def flush(self, sub: Subscription) -> bool:
        """Queue everything ``sub`` holds; False when that overflowed its connection (resynced)."""
        feed = sub.feed
        if feed is None or sub.state is SubscriptionState.ENDED:
            return False
        if sub.state is SubscriptionState.LIVE:
            feed.advance(self._positions)
        frames = feed.take(sub.connection.config.max_frame_bytes)
        if frames:
            feed.gate.sent(asyncio.get_running_loop().time())
        for frame, cursor in frames:
            if not sub.connection.push(frame, sub, cursor):
                self.resync(sub.connection, "client too slow: its queue is full")
                return False
            self.delivered += 1
        return True

    def go_live(self, sub: Subscription) -> None:
        """Register ``sub`` for live records; it has offered everything before the tail's position."""
        sub.expect(SubscriptionState.CATCHING_UP)
        sub.state = SubscriptionState.LIVE
        self._routes.add(sub)
        self.schedule(sub)

    def resync(self, connection: Connection, reason: str) -> None:
        """The connection fell behind: drop its queue and tell each subscription where it stood."""
        connection.drop_queue()
        connection.resyncs += 1
        # The frame being written, if any, still reaches the client before the resync.
        self.resyncs += 1
        for sub in list(connection.subscriptions.values()):
            self.end(sub)
            frame: dict[str, Any] = {"type": "resync", "sub": sub.sub, "kind": sub.request.kind.value}
            frame[TARGET_FIELD[sub.request.kind]] = sub.request.target
            frame["workspace"] = sub.request.workspace
            if sub.partition is not None:
                frame["partition"] = sub.partition
            frame["cursor"] = cursor_json(connection.written_cursor(sub))
            frame["reason"] = f"{reason}; subscribe again with this cursor"
            connection.push_control(orjson.dumps(frame))

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, connection: Connection, request: Subscribe) -> Subscription:
        """Register a subscription and start it (snapshot or cursor, catch-up, then live)."""
        sub = Subscription(request, connection, sent_cursor=request.cursor)
        connection.subscriptions[request.sub] = sub
        sub.task = asyncio.create_task(start_subscription(self, sub), name=f"runstream-sub-{request.sub}")
        return sub

    def end(self, sub: Subscription) -> None:
        """End ``sub``: no more frames for it, and its name may be used again."""
        if sub.state is SubscriptionState.ENDED:
            return
        sub.state = SubscriptionState.ENDED
        if sub.connection.subscriptions.get(sub.sub) is sub:
            del sub.connection.subscriptions[sub.sub]
        self._routes.discard(sub)
        if sub.flush_handle is not None:
            sub.flush_handle.cancel()
            sub.flush_handle = None
        task = sub.task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
        sub.feed = None

    def unsubscribe(self, connection: Connection, sub_id: str) -> bool:
        sub = connection.subscriptions.get(sub_id)
        if sub is None:
            return False
        self.end(sub)
        return True

    def disconnect(self, connection: Connection) -> None:
        for sub in list(connection.subscriptions.values()):
            self.end(sub)
        connection.drop_queue()

    def new_feed(self, sub: Subscription, start: dict[int, int], members: dict[str, Any] | None) -> Feed:
        """The feed of ``sub``, having taken everything before ``start`` (next offsets)."""
        request = sub.request
        if request.kind is Kind.RUN:
            assert sub.partition is not None
            return RunFeed(
                request.sub,
                request.workspace,
                request.target,
                sub.partition,
                start[sub.partition] - 1,
                request.max_rate,
                None if request.types is None else request.wants,
            )
        vector = {p: o - 1 for p, o in start.items()}
        if request.kind is Kind.EXPERIMENT:
            return ExperimentFeed(request.sub, request.workspace, request.target, vector, request.max_rate)
        membership = Membership(request.target)
        for run_id, run in (members or {}).items():
            rank = RANK_OF_STATUS.get(run["status"], 0)
            membership.members[run_id] = Member(run["status"], rank, -1, run["experiment"])
        return ComputeFeed(request.sub, request.workspace, membership, vector, request.max_rate)
