"""Starting a subscription: its starting position, its snapshot, and catching up to live.

The starting position is a next offset per partition the subscription reads:

- with a cursor, the offsets after it;
- with a snapshot, the projector's applied position read *before* the snapshot
  (capped at the tail's position), so the snapshot holds at least everything
  before it;
- otherwise the tail's position at this instant (live from now).

Catching up reads, per partition, from the earliest source that has the
records: the hub's recent records (memory), the event log, then ClickHouse's
``raw_events`` for what retention removed from the log. Older sources are read
with backpressure (the client's queue is waited on, never overflowed). In the
one synchronous step in which every partition has reached the tail's position,
the subscription is registered for live records, so there is no gap; the feed
ignores anything at or before what it took, so there is no duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from runstream.errors import RunstreamError, StoreError
from runstream.eventlog.port import TopicPartition
from runstream.events.partitioning import partition_for_key
from runstream.gateway.feeds import Feed
from runstream.gateway.protocol import TARGET_FIELD, Cursor, ErrorCode, Kind, cursor_json, error_frame
from runstream.gateway.recent import RecentRecords, entry_of
from runstream.gateway.subscription import Subscription, SubscriptionState

if TYPE_CHECKING:
    from runstream.gateway.hub import LiveHub

log = logging.getLogger("runstream.gateway")

PROJECTOR_WAIT = 10.0
"""Seconds to wait for the projector to reach a range that only ClickHouse can still give."""


class CursorUnavailableError(RunstreamError):
    """The events after a cursor are neither on the log nor in ClickHouse."""


async def start_subscription(hub: LiveHub, sub: Subscription) -> None:
    """Snapshot or cursor, ``subscribed``, catch-up, then live; failures end it with an error frame."""
    try:
        start = await _begin(hub, sub)
        if sub.catching_up():
            await _catch_up(hub, sub, start)
    except asyncio.CancelledError:
        raise
    except CursorUnavailableError as exc:
        _fail(hub, sub, ErrorCode.CURSOR_UNAVAILABLE, str(exc))
    except RunstreamError as exc:
        log.warning("gateway: subscription %s ended: %s", sub.sub, exc)
        _fail(hub, sub, ErrorCode.UNAVAILABLE, f"cannot read the events of this subscription: {exc}")
    except Exception:
        log.exception("gateway: subscription %s failed", sub.sub)
        _fail(hub, sub, ErrorCode.UNAVAILABLE, "internal error of the gateway; subscribe again")


def _fail(hub: LiveHub, sub: Subscription, code: ErrorCode, detail: str) -> None:
    if sub.state is SubscriptionState.ENDED:
        return
    hub.end(sub)
    sub.connection.push_control(error_frame(detail, sub.sub, code))


async def _begin(hub: LiveHub, sub: Subscription) -> dict[int, int]:
    request = sub.request
    if request.kind is Kind.RUN:
        sub.partition = partition_for_key(request.target.encode(), hub.partitions)
        partitions = [sub.partition]
    else:
        partitions = list(range(hub.partitions))
    snapshot: dict[str, Any] | None = None
    detail: str | None = None
    if isinstance(request.cursor, int):
        start = {p: request.cursor + 1 for p in partitions}
    elif isinstance(request.cursor, dict):
        start = {p: request.cursor.get(p, -1) + 1 for p in partitions}
    elif request.snapshot and hub.store is not None:
        try:
            applied = await hub.store.applied_positions()
            snapshot = await hub.store.snapshot(request.kind, request.workspace, request.target)
        except StoreError as exc:
            log.warning("gateway: no snapshot for %s: %s", request.target, exc)
            detail = f"snapshot unavailable ({exc}); live from now"
            start = {p: hub.position(p) for p in partitions}
        else:
            start = {p: min(applied.get(p, 0), hub.position(p)) for p in partitions}
    else:
        if request.snapshot:
            detail = "snapshot unavailable: this gateway has no projection store; live from now"
        start = {p: hub.position(p) for p in partitions}
    if sub.state is SubscriptionState.ENDED:
        return start
    members = snapshot["runs"] if snapshot is not None and request.kind is Kind.COMPUTE else None
    sub.feed = hub.new_feed(sub, start, members)
    cursor: Cursor = (
        start[partitions[0]] - 1 if request.kind is Kind.RUN else {p: o - 1 for p, o in start.items()}
    )
    frame: dict[str, Any] = {
        "type": "subscribed",
        "sub": request.sub,
        "kind": request.kind.value,
        TARGET_FIELD[request.kind]: request.target,
        "workspace": request.workspace,
    }
    if sub.partition is not None:
        frame["partition"] = sub.partition
    frame["cursor"] = cursor_json(cursor)
    frame["snapshot"] = snapshot
    frame["max_rate"] = request.max_rate
    if detail is not None:
        frame["detail"] = detail
    sub.state = SubscriptionState.CATCHING_UP
    sub.connection.push_control(orjson.dumps(frame), sub, cursor)
    return start


async def _catch_up(hub: LiveHub, sub: Subscription, pos: dict[int, int]) -> None:
    connection = sub.connection
    while True:
        feed = sub.feed
        if feed is None or not sub.catching_up():
            return
        lagging: list[int] = []
        for partition in sorted(pos):
            head = hub.position(partition)
            if pos[partition] >= head:
                continue
            recent = hub.recent(partition)
            if pos[partition] >= recent.start:
                pos[partition] = _offer_recent(feed, recent, pos[partition], head, connection.room_bytes)
            if pos[partition] < head:
                lagging.append(partition)
        if not lagging:
            hub.go_live(sub)
            return
        feed.advance(pos)
        if not hub.flush(sub):
            return
        await connection.wait_room()
        for partition in lagging:
            recent_start = hub.recent(partition).start
            if pos[partition] < recent_start:
                pos[partition] = await _read_older(hub, sub, partition, pos[partition], recent_start)
            if not sub.catching_up():
                return


def _offer_recent(feed: Feed, recent: RecentRecords, start: int, head: int, budget: int) -> int:
    """Offer recent entries from ``start``; the next position (``head``, or short of it past ``budget``)."""
    for entry in recent.since(start):
        if entry.offset >= head:
            break
        if feed.matches(entry) and feed.offer(entry, None) and feed.pending_bytes > budget:
            return entry.offset + 1
    return head


async def _deliver(hub: LiveHub, sub: Subscription, partition: int, position: int) -> bool:
    """Queue what the feed holds (everything before ``position`` offered); wait for room."""
    feed = sub.feed
    if feed is None or not sub.catching_up():
        return False
    feed.advance({partition: position})
    if not hub.flush(sub):
        return False
    await sub.connection.wait_room()
    return sub.catching_up()


async def _read_older(hub: LiveHub, sub: Subscription, partition: int, start: int, stop: int) -> int:
    """Offer the subscription's records at ``[start, stop)`` from the log (ClickHouse below its
    first held offset); the position reached."""
    topic = hub.events_topic
    begin = (await hub.log.begin_offsets(topic)).get(partition, 0)
    if start < begin:
        start = await _read_clickhouse(hub, sub, partition, start, min(begin, stop))
        if start >= stop:
            return stop
    consumer = hub.log.consumer([topic], start_at="end")
    await consumer.start()
    tp = TopicPartition(topic, partition)
    expected = start
    try:
        await consumer.seek(tp, start)
        while expected < stop and sub.catching_up():
            records = await consumer.fetch(2000, timeout=1.0)
            if not records:
                begin = (await hub.log.begin_offsets(topic)).get(partition, 0)
                if begin > expected:  # retention removed what we were about to read
                    expected = await _read_clickhouse(hub, sub, partition, expected, min(begin, stop))
                    await consumer.seek(tp, expected)
                continue
            for record in records:
                if record.partition != partition or record.offset < expected:
                    continue
                if record.offset > expected:  # a gap on the log: ClickHouse has what it held
                    expected = await _read_clickhouse(hub, sub, partition, expected, min(record.offset, stop))
                if record.offset >= stop:
                    break
                expected = record.offset + 1
                parsed = entry_of(partition, record.offset, record.value)
                feed = sub.feed
                if parsed is not None and feed is not None and feed.matches(parsed[0]):
                    feed.offer(*parsed)
            if not await _deliver(hub, sub, partition, expected):
                break
    finally:
        await consumer.close()
    return expected


async def _read_clickhouse(hub: LiveHub, sub: Subscription, partition: int, start: int, stop: int) -> int:
    """Offer the subscription's events at ``[start, stop)`` from ``raw_events``; returns ``stop``."""
    where = f"events at offsets {start} to {stop - 1} of partition {partition} are no longer on the log"
    store = hub.store
    if store is None:
        raise CursorUnavailableError(f"{where}, and this gateway has no ClickHouse to read them from")
    try:
        if not await store.has_raw_events():
            raise CursorUnavailableError(f"{where}, and ClickHouse has no raw_events table")
    except StoreError as exc:
        raise CursorUnavailableError(f"{where}, and ClickHouse cannot be read: {exc}") from exc
    applied = await store.wait_applied(partition, stop, PROJECTOR_WAIT)
    if applied < stop:
        raise CursorUnavailableError(f"{where}, and ClickHouse holds that partition only before {applied}")
    try:
        first = await store.first_held_offset(partition)
    except StoreError as exc:
        raise CursorUnavailableError(f"{where}, and ClickHouse cannot be read: {exc}") from exc
    if first is None or first > start:
        held = "nothing of that partition" if first is None else f"that partition only from offset {first}"
        raise CursorUnavailableError(f"{where}, and ClickHouse holds {held}")
    request = sub.request
    async for page in store.raw_events(
        request.kind, request.workspace, request.target, partition, start, stop
    ):
        feed = sub.feed
        if feed is None:
            return stop
        for offset, value in page:
            parsed = entry_of(partition, offset, value)
            if parsed is not None and feed.matches(parsed[0]):
                feed.offer(*parsed)
        if not await _deliver(hub, sub, partition, page[-1][0] + 1):
            return stop
    return stop
