"""The gateway hub's routing, catch-up and slow-client handling, without a network or a log."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream.eventlog.local import LocalEventLog
from runstream.eventlog.port import LogRecord
from runstream.events.partitioning import partition_for_key
from runstream.gateway.connection import Connection, GatewayConfig
from runstream.gateway.hub import LiveHub
from runstream.gateway.protocol import Kind, Subscribe
from runstream.gateway.subscription import SubscriptionState

PARTITIONS = 2


class Offsets:
    """Hands out offsets per partition as a log would."""

    def __init__(self) -> None:
        self.next = dict.fromkeys(range(PARTITIONS), 0)

    def record(self, run_id: str, n: int, **fields: Any) -> LogRecord:
        partition = partition_for_key(run_id.encode(), PARTITIONS)
        offset = self.next[partition]
        self.next[partition] += 1
        event = {
            "run_id": run_id,
            "workspace": fields.get("workspace", "default"),
            "experiment": fields.get("experiment", "exp"),
            "type": fields.get("type", "metrics.logged"),
            "seq": n,
            "ts": 1000 + n,
            "payload": fields.get("payload", {"points": [{"name": "x", "value": n, "step": n}]}),
        }
        return LogRecord("t", partition, offset, run_id.encode(), orjson.dumps(event), 0)


def new_hub(tmp_path: Path, recent_bytes: int = 1 << 20) -> LiveHub:
    hub = LiveHub(LocalEventLog(tmp_path / "log.sqlite3"), "t", recent_bytes=recent_bytes)
    hub.reset_positions(dict.fromkeys(range(PARTITIONS), 0))
    return hub


def request(sub: str, run_id: str, cursor: int | None = None, **kw: Any) -> Subscribe:
    return Subscribe(sub, Kind.RUN, run_id, kw.get("workspace", "default"), cursor, False, kw.get("max_rate"))


def drain(connection: Connection) -> list[dict[str, Any]]:
    """What the sender would write: every queued frame, recording sent cursors."""
    out = []
    while connection.frames:
        frame, sub, cursor = connection.frames.popleft()
        connection.queued_bytes -= len(frame)
        if sub is not None and cursor is not None:
            sub.sent_cursor = cursor
        out.append(orjson.loads(frame))
    return out


def events_of(frames: list[dict[str, Any]]) -> list[tuple[int, int]]:
    out = []
    for frame in frames:
        if frame["type"] == "event":
            out.append((frame["cursor"], frame["event"]["seq"]))
        elif frame["type"] == "events":
            out += [(c, e["seq"]) for c, e in zip(frame["cursors"], frame["events"], strict=True)]
    return out


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_records_go_only_to_their_runs_subscribers(tmp_path: Path) -> None:
    hub, log = new_hub(tmp_path), Offsets()
    a, b = Connection(), Connection()
    hub.subscribe(a, request("s", "run-a"))
    hub.subscribe(b, request("s", "run-b"))
    await settle()
    assert [f["type"] for f in drain(a)] == ["subscribed"]
    drain(b)
    hub.dispatch([log.record("run-a", 0), log.record("run-b", 0), log.record("run-a", 1)])
    assert [seq for _, seq in events_of(drain(a))] == [0, 1]
    assert [seq for _, seq in events_of(drain(b))] == [0]


async def test_another_workspace_with_the_same_run_id_is_not_delivered(tmp_path: Path) -> None:
    hub, log = new_hub(tmp_path), Offsets()
    connection = Connection()
    hub.subscribe(connection, request("s", "run-a", workspace="team-1"))
    await settle()
    drain(connection)
    hub.dispatch([log.record("run-a", 0, workspace="team-2"), log.record("run-a", 1, workspace="team-1")])
    assert [seq for _, seq in events_of(drain(connection))] == [1]


async def test_a_cursor_in_recent_records_resumes_exactly_then_goes_live(tmp_path: Path) -> None:
    hub, log = new_hub(tmp_path), Offsets()
    hub.dispatch([log.record("run-a", i) for i in range(5)] + [log.record("run-b", 9)])
    connection = Connection()
    sub = hub.subscribe(connection, request("s", "run-a", cursor=1))
    await settle()
    assert sub.state is SubscriptionState.LIVE
    hub.dispatch([log.record("run-a", 5)])
    frames = drain(connection)
    assert frames[0]["type"] == "subscribed" and frames[0]["cursor"] == 1
    assert [seq for _, seq in events_of(frames)] == [2, 3, 4, 5]


async def test_slow_client_gets_resync_and_others_are_unaffected(tmp_path: Path) -> None:
    hub, log = new_hub(tmp_path), Offsets()
    slow = Connection(GatewayConfig(queue_frames=5))
    fast = Connection()
    hub.subscribe(slow, request("s", "run-a"))
    hub.subscribe(fast, request("f", "run-a"))
    await settle()
    drain(fast)
    hub.dispatch([log.record("run-a", i) for i in range(2)])
    for _ in range(3):  # the socket took "subscribed" and two events
        frame, sub, cursor = slow.frames.popleft()
        slow.queued_bytes -= len(frame)
        assert sub is not None
        sub.sent_cursor = cursor
    hub.dispatch([log.record("run-a", i) for i in range(2, 20)])
    assert len(events_of(drain(fast))) == 20
    frames = drain(slow)
    assert [f["type"] for f in frames] == ["resync"]
    # The last cursor written to the socket: frames still queued were dropped and
    # come again when the client subscribes from here.
    assert frames[0]["cursor"] == 1 and frames[0]["run_id"] == "run-a"
    assert slow.subscriptions == {} and slow.resyncs == 1
    hub.dispatch([log.record("run-a", 21)])
    assert not slow.frames  # once resynced, nothing more is buffered for it


async def test_rate_limited_subscription_batches_every_event(tmp_path: Path) -> None:
    hub, log = new_hub(tmp_path), Offsets()
    connection = Connection()
    hub.subscribe(connection, request("s", "run-a", max_rate=20))
    await settle()
    drain(connection)
    hub.dispatch([log.record("run-a", 0)])  # the first goes at once
    hub.dispatch([log.record("run-a", i) for i in range(1, 30)])
    first = drain(connection)
    assert [f["type"] for f in first] == ["events"] and len(first[0]["events"]) == 1
    await asyncio.sleep(0.1)
    later = drain(connection)
    assert [seq for _, seq in events_of(first + later)] == list(range(30))
    assert len(later) == 1  # the rest in one frame, once the interval passed


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=40,
    ),
    st.integers(2048, 65536),
)
def test_reconnecting_anywhere_from_recent_records_loses_and_repeats_nothing(
    tmp_path_factory: Any, steps: list[tuple[str, int, bool]], recent_bytes: int
) -> None:
    """Records arrive in bursts; the watcher of run "a" drops and resubscribes with its cursor
    between bursts (while records may have gone out of the recent window)."""

    async def scenario() -> None:
        hub, log = new_hub(tmp_path_factory.mktemp("hub"), recent_bytes), Offsets()
        connection = Connection()
        hub.subscribe(connection, request("s", "a", cursor=-1))
        await settle()
        produced: list[int] = []
        received: list[tuple[int, int]] = []
        n = 0
        for run_id, burst, reconnect in steps:
            records = []
            for _ in range(burst):
                records.append(log.record(run_id, n))
                if run_id == "a":
                    produced.append(n)
                n += 1
            hub.dispatch(records)
            received += events_of(drain(connection))
            if reconnect:
                hub.disconnect(connection)
                connection = Connection()
                cursor = received[-1][0] if received else -1
                if cursor + 1 < hub.recent(partition_for_key(b"a", PARTITIONS)).start:
                    # Fell out of memory: the log serves the rest (tests/integration).
                    assert [seq for _, seq in received] == produced[: len(received)]
                    return
                hub.subscribe(connection, request("s", "a", cursor=cursor))
                await settle()
        received += events_of(drain(connection))
        assert [seq for _, seq in received] == produced

    asyncio.run(scenario())


async def test_a_burst_of_one_run_is_not_taken_for_a_slow_client(tmp_path: Path) -> None:
    hub, log = new_hub(tmp_path), Offsets()
    connection = Connection(GatewayConfig(pending_bytes=2000, max_frame_bytes=1000))
    hub.subscribe(connection, request("s", "run-a"))
    await settle()
    drain(connection)
    hub.dispatch([log.record("run-a", i) for i in range(100)])  # ~20 KB of events in one batch
    assert connection.resyncs == 0
    assert [seq for _, seq in events_of(drain(connection))] == list(range(100))


async def test_a_resync_in_the_middle_of_a_batch_ends_only_that_connection(tmp_path: Path) -> None:
    hub, log = new_hub(tmp_path), Offsets()
    small = GatewayConfig(queue_frames=3, max_frame_bytes=10)  # flushes at every event, fills at once
    slow = [Connection(small) for _ in range(3)]
    fast = Connection()
    for i, connection in enumerate([*slow, fast]):
        hub.subscribe(connection, request(f"s{i}", "run-a"))
    await settle()
    for connection in slow:
        while connection.frames:  # "subscribed" was written
            _, sub, cursor = connection.frames.popleft()
            if sub is not None:
                sub.sent_cursor = cursor
        connection.queued_bytes = 0
    drain(fast)
    hub.dispatch([log.record("run-a", i) for i in range(10)])
    assert all(c.resyncs == 1 and not c.subscriptions for c in slow)
    assert [seq for _, seq in events_of(drain(fast))] == list(range(10))
