"""One contract for every event-log adapter: the local log and real Apache Kafka."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from runstream.errors import EventLogError
from runstream.eventlog.factory import open_event_log
from runstream.eventlog.port import EventLog, LogRecord, TopicPartition
from runstream.events.partitioning import partition_for_key
from runstream.settings import Settings
from tests.conftest import ROOT, unique


async def read_all(log: EventLog, topic: str, count: int, *, group: str | None = None) -> list[LogRecord]:
    consumer = log.consumer([topic], group=group)
    await consumer.start()
    out: list[LogRecord] = []
    try:
        for _ in range(100):
            if len(out) >= count:
                break
            out += await consumer.fetch(1000, timeout=0.5)
    finally:
        await consumer.close()
    return out


async def test_create_topic_is_idempotent(event_log: EventLog) -> None:
    topic = unique("topic")
    assert await event_log.partitions(topic) == 0
    await event_log.create_topic(topic, 3)
    await event_log.create_topic(topic, 5)
    assert await event_log.partitions(topic) == 3


async def test_offsets_count_from_zero_per_partition(event_log: EventLog) -> None:
    topic = unique("topic")
    await event_log.create_topic(topic, 1)
    first = await event_log.append(topic, [(b"k", b"a"), (b"k", b"b")])
    second = await event_log.append(topic, [(b"k", b"c")])
    assert [p.offset for p in first + second] == [0, 1, 2]
    assert await event_log.end_offsets(topic) == {0: 3}


async def test_one_key_keeps_its_order_on_the_partition_kafka_would_pick(event_log: EventLog) -> None:
    topic = unique("topic")
    await event_log.create_topic(topic, 3)
    keys = [f"run-{i}".encode() for i in range(6)]
    records = [(keys[i % 6], f"{keys[i % 6].decode()}:{i}".encode()) for i in range(120)]
    positions = await event_log.append(topic, records)
    for (key, _), position in zip(records, positions, strict=True):
        assert position.partition == partition_for_key(key, 3)
    read = await read_all(event_log, topic, len(records))
    assert len(read) == len(records)
    for key in keys:
        values = [r.value for r in sorted(read, key=lambda r: r.offset) if r.key == key]
        assert values == [v for k, v in records if k == key]


async def test_group_resumes_from_committed_position_after_restart(
    event_log: EventLog, settings: Settings
) -> None:
    topic, group = unique("topic"), unique("group")
    await event_log.create_topic(topic, 1)
    await event_log.append(topic, [(b"k", str(i).encode()) for i in range(10)])
    consumer = event_log.consumer([topic], group=group)
    await consumer.start()
    got: list[LogRecord] = []
    while len(got) < 10:
        got += await consumer.fetch(100, timeout=1.0)
    tp = TopicPartition(topic, 0)
    await consumer.commit({tp: 6})
    assert await consumer.committed(tp) == 6
    await consumer.close()
    await event_log.close()

    reopened = open_event_log(settings)
    await reopened.start()
    try:
        rest = await read_all(reopened, topic, 4, group=group)
    finally:
        await reopened.close()
    assert [r.value for r in rest] == [b"6", b"7", b"8", b"9"]
    assert [r.offset for r in rest] == [6, 7, 8, 9]


async def test_group_without_commit_starts_at_the_beginning(event_log: EventLog) -> None:
    topic = unique("topic")
    await event_log.create_topic(topic, 2)
    await event_log.append(topic, [(f"k{i}".encode(), b"x") for i in range(8)])
    assert len(await read_all(event_log, topic, 8, group=unique("group"))) == 8


async def test_start_at_end_sees_only_new_records(event_log: EventLog) -> None:
    topic = unique("topic")
    await event_log.create_topic(topic, 2)
    await event_log.append(topic, [(b"a", b"old"), (b"b", b"old")])
    consumer = event_log.consumer([topic], start_at="end")
    await consumer.start()
    try:
        assert await consumer.fetch(100, timeout=0.3) == []
        await event_log.append(topic, [(b"a", b"new"), (b"b", b"new")])
        got: list[LogRecord] = []
        for _ in range(20):
            got += await consumer.fetch(100, timeout=0.5)
            if len(got) >= 2:
                break
        assert [r.value for r in got] == [b"new", b"new"]
    finally:
        await consumer.close()


async def test_seek_rereads_from_an_offset(event_log: EventLog) -> None:
    topic = unique("topic")
    await event_log.create_topic(topic, 1)
    await event_log.append(topic, [(b"k", str(i).encode()) for i in range(5)])
    consumer = event_log.consumer([topic])
    await consumer.start()
    try:
        got: list[LogRecord] = []
        while len(got) < 5:
            got += await consumer.fetch(100, timeout=1.0)
        await consumer.seek(TopicPartition(topic, 0), 3)
        again: list[LogRecord] = []
        while len(again) < 2:
            again += await consumer.fetch(100, timeout=1.0)
        assert [r.value for r in again] == [b"3", b"4"]
    finally:
        await consumer.close()


async def test_waiting_fetch_wakes_up_on_append(event_log: EventLog) -> None:
    topic = unique("topic")
    await event_log.create_topic(topic, 1)
    consumer = event_log.consumer([topic], start_at="end")
    await consumer.start()
    try:
        waiting = asyncio.create_task(consumer.fetch(10, timeout=10.0))
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        await event_log.append(topic, [(b"k", b"hello")])
        records = await waiting
        assert [r.value for r in records] == [b"hello"]
        assert asyncio.get_running_loop().time() - started < 9.0
    finally:
        await consumer.close()


@pytest.mark.parametrize("commit_upto", [0, 3])
async def test_no_loss_when_process_is_killed_between_append_and_commit(
    event_log: EventLog, settings: Settings, commit_upto: int
) -> None:
    topic, group = unique("topic"), unique("group")
    location = settings.kafka_bootstrap or str(settings.data_dir / "eventlog" / "log.sqlite3")
    adapter = "kafka" if settings.kafka_bootstrap else "local"
    worker = ROOT / "tests" / "contract" / "kill_worker.py"
    proc = subprocess.Popen(  # noqa: ASYNC220 - the test drives a process it will SIGKILL
        [sys.executable, str(worker), adapter, location, topic, group, "7", str(commit_upto)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        loop = asyncio.get_running_loop()
        while not any(line.startswith("READ") for line in lines):
            line = (await loop.run_in_executor(None, proc.stdout.readline)).decode()
            assert line, f"worker ended early: {lines}"
            lines.append(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    rest = await read_all(event_log, topic, 7 - commit_upto, group=group)
    assert [r.value for r in rest] == [f"record-{i}".encode() for i in range(commit_upto, 7)]


async def test_begin_offsets_start_at_zero_and_follow_retention(event_log: EventLog) -> None:
    topic = unique("topic")
    await event_log.create_topic(topic, 2)
    assert await event_log.begin_offsets(topic) == {0: 0, 1: 0}
    key = next(f"k{i}".encode() for i in range(100) if partition_for_key(f"k{i}".encode(), 2) == 0)
    await event_log.append(topic, [(key, str(i).encode()) for i in range(6)])
    assert await event_log.begin_offsets(topic) == {0: 0, 1: 0}
    await event_log.delete_records_before(topic, {0: 4})
    assert await event_log.begin_offsets(topic) == {0: 4, 1: 0}
    assert await event_log.end_offsets(topic) == {0: 6, 1: 0}


async def test_a_reader_below_the_first_held_offset_reads_from_it(event_log: EventLog) -> None:
    topic = unique("topic")
    await event_log.create_topic(topic, 1)
    await event_log.append(topic, [(b"k", str(i).encode()) for i in range(5)])
    await event_log.delete_records_before(topic, {0: 3})
    got = await read_all(event_log, topic, 2)
    assert [(r.offset, r.value) for r in got] == [(3, b"3"), (4, b"4")]


async def test_offsets_never_restart_after_a_partition_is_emptied(event_log: EventLog) -> None:
    topic = unique("topic")
    await event_log.create_topic(topic, 1)
    await event_log.append(topic, [(b"k", b"a"), (b"k", b"b")])
    await event_log.delete_records_before(topic, {0: 2})
    assert await event_log.begin_offsets(topic) == {0: 2}
    assert await event_log.end_offsets(topic) == {0: 2}
    positions = await event_log.append(topic, [(b"k", b"c")])
    assert [p.offset for p in positions] == [2]
    assert await event_log.begin_offsets(topic) == {0: 2}


async def test_deleting_past_the_end_is_refused(event_log: EventLog) -> None:
    topic = unique("topic")
    await event_log.create_topic(topic, 1)
    await event_log.append(topic, [(b"k", b"a")])
    with pytest.raises(EventLogError):
        await event_log.delete_records_before(topic, {0: 5})
    assert await event_log.begin_offsets(topic) == {0: 0}
