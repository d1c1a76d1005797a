"""The gateway hub's routing and slow-client handling, without a network."""

from __future__ import annotations

import orjson

from runstream.eventlog.local import LocalEventLog
from runstream.eventlog.port import LogRecord
from runstream.events.partitioning import partition_for_key
from runstream.gateway.hub import Connection, LiveHub


def record(run_id: str, offset: int) -> LogRecord:
    partition = partition_for_key(run_id.encode(), 2)
    value = orjson.dumps({"run_id": run_id, "n": offset})
    return LogRecord("t", partition, offset, run_id.encode(), value, 0)


def hub_with_partitions(tmp_path: object) -> LiveHub:
    hub = LiveHub(LocalEventLog(tmp_path / "log.sqlite3"), "t")  # type: ignore[operator]
    hub._partitions = 2
    hub._positions = {0: 0, 1: 0}
    return hub


async def test_records_go_only_to_their_runs_subscribers(tmp_path: object) -> None:
    hub = hub_with_partitions(tmp_path)
    a, b = Connection(), Connection()
    await hub.subscribe(a, "s", "run-a", None)
    await hub.subscribe(b, "s", "run-b", None)
    for conn in (a, b):
        conn.queue.get_nowait()  # the "subscribed" message
    hub.dispatch([record("run-a", 0), record("run-b", 0), record("run-a", 1)])
    got_a = [orjson.loads(a.queue.get_nowait()[0]) for _ in range(a.queue.qsize())]
    got_b = [orjson.loads(b.queue.get_nowait()[0]) for _ in range(b.queue.qsize())]
    assert [m["event"]["n"] for m in got_a] == [0, 1]
    assert [m["event"]["n"] for m in got_b] == [0]
    assert got_a[1]["cursor"] == 1


async def test_slow_client_gets_resync_and_others_are_unaffected(tmp_path: object) -> None:
    hub = hub_with_partitions(tmp_path)
    slow, fast = Connection(queue_size=5), Connection(queue_size=1000)
    await hub.subscribe(slow, "s", "run-a", None)
    await hub.subscribe(fast, "f", "run-a", None)
    slow.queue.get_nowait()
    fast.queue.get_nowait()
    hub.dispatch([record("run-a", i) for i in range(2)])
    for _ in range(2):  # the socket took two frames
        _, sub_id, cursor = slow.queue.get_nowait()
        slow.mark_sent(sub_id, cursor)
    hub.dispatch([record("run-a", i) for i in range(2, 20)])
    assert fast.queue.qsize() == 20
    frames = [orjson.loads(slow.queue.get_nowait()[0]) for _ in range(slow.queue.qsize())]
    assert frames[0]["type"] == "resync"
    # The last cursor written to the socket: frames still queued were dropped and
    # come again when the client resubscribes from here.
    assert frames[0]["cursor"] == 1
    assert slow.subscriptions == {}
    assert slow.resyncs == 1
    # Once resynced, nothing more is buffered for it.
    hub.dispatch([record("run-a", 21)])
    assert slow.queue.qsize() == len(frames) - 1
