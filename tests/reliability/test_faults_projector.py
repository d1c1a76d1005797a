"""Projector and storage faults (issue 7: F3, F4, F5, F10), with real processes.

The projector runs as ``runstream projector`` in a child process with an embedded
ClickHouse folder of its own; events are appended to the real event log (the local
SQLite log or the real Kafka broker) by the test, and each is acknowledged in the
shared ``DeliveryLedger`` once the log said it is durable. After the fault, the
projector must drain: its group's lag (end offsets minus committed offsets) goes
back to 0, and the checker finds every acknowledged event once in ClickHouse.
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import orjson
import pytest

import runstream
from runstream.errors import EventLogError
from runstream.eventlog.factory import open_event_log
from runstream.eventlog.port import EventLog, LogConsumer, LogRecord
from runstream.sdk.client import Client, set_client
from runstream.sdk.config import ClientConfig
from runstream.sdk.transport.port import open_transport
from runstream.settings import Settings
from tests.conftest import isolated_settings
from tests.reliability.checker import DeliveryLedger, RecordingTransport, StoredEvent
from tests.reliability.projector_harness import (
    EventFeeder,
    ProjectorProcess,
    ReadOnlyCover,
    Tmpfs,
    committed_positions,
    fill,
    group_lag,
    ingest_server,
    integrity,
    kill_on_positions_write,
    probe_clickhouse,
)
from tests.sdk.conftest import run_events
from tests.support import eventually

KILLS = 20
PAUSE_SECONDS = 30
FAIL_SECONDS = 20
RESUME_LINE = "resumes at offset"
RETRY_LINE = "retrying in"
STEPS_BEFORE = 200
STEPS_TOTAL = 20_000


@pytest.fixture
def fault_settings(adapter: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings of one test, with an embedded ClickHouse folder its projector process owns."""
    kafka = request.getfixturevalue("kafka_bootstrap") if adapter == "kafka" else None
    return isolated_settings(tmp_path / "data", tmp_path / "clickhouse", kafka_bootstrap=kafka)


@pytest.fixture
async def event_log(fault_settings: Settings) -> AsyncIterator[EventLog]:
    log = open_event_log(fault_settings)
    await log.start()
    await log.create_topic(fault_settings.events_topic, fault_settings.partitions)
    try:
        yield log
    finally:
        await log.close()


@pytest.fixture
async def group(event_log: EventLog, fault_settings: Settings) -> AsyncIterator[LogConsumer]:
    """A consumer of the projector's group, used only to read its committed offsets."""
    consumer = event_log.consumer([fault_settings.events_topic], group=fault_settings.projector_group)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.close()


async def drained(log: EventLog, group: LogConsumer, settings: Settings, timeout: float = 180.0) -> float:
    """Seconds until the projector group's lag is 0."""
    started = time.monotonic()

    async def caught_up() -> bool:
        return await group_lag(log, group, settings.events_topic) == 0

    await eventually(caught_up, timeout=timeout, interval=0.2)
    return time.monotonic() - started


async def test_projector_killed_at_random_points(
    fault_settings: Settings,
    event_log: EventLog,
    group: LogConsumer,
    tmp_path: Path,
) -> None:
    """F3: SIGKILL the projector 20 times while events flow; nothing lost or duplicated, lag back to 0.

    Every other kill comes at a random moment once the projector is busy (it
    committed since its start; the seed is printed). The others come the moment a
    batch's positions land in ClickHouse (``kill_on_positions_write`` watches the
    table's folder), which a random kill rarely hits: between that write and the
    offset commit. A kill in that window leaves ClickHouse ahead of the committed
    offsets, which the next start reports where it resumes; the test counts those
    starts and requires at least one.
    """
    settings = fault_settings
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ledger = DeliveryLedger()
    feeder = EventFeeder(event_log, settings.events_topic, ledger)
    stop_feeding = asyncio.Event()
    feeding = asyncio.create_task(feeder.run(stop_feeding))
    projector = ProjectorProcess(settings, tmp_path / "projector.log")
    triggered = 0
    try:
        for kill in range(KILLS):
            before = await committed_positions(group, settings.events_topic, settings.partitions)
            projector.start()
            await projector.wait_ready()
            if kill % 2:
                await kill_on_positions_write(projector)
                triggered += 1
            else:
                await _progressed(group, settings, before)
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                projector.kill()
        stop_feeding.set()
        await feeding
        projector.start()
        await projector.wait_ready()
        recovery = await drained(event_log, group, settings)
    finally:
        stop_feeding.set()
        projector.stop()
    committed = await committed_positions(group, settings.events_topic, settings.partitions)
    found = await probe_clickhouse(settings, ledger, tmp_path)
    # The start after kill k found ClickHouse ahead of the committed offsets: kill k hit the window.
    hits = [RESUME_LINE in out for out in projector.outputs()[1:]]
    window_hits = sum(hits)
    random_hits = sum(hits[0::2])
    print(
        f"\nF3 [{_path(settings)}] seed={seed}: {feeder.appended} events, "
        f"{KILLS} kills ({triggered} on a positions write), {window_hits} between the ClickHouse write "
        f"and the commit ({random_hits} of the random ones); "
        f"a start took {statistics.mean(projector.ready_seconds):.1f} s on average; "
        f"lag back to 0 in {recovery:.1f} s "
        f"after the last start; {found.text}"
    )
    assert found.positions == {p: offset for p, offset in committed.items() if offset}
    _assert_clean(found.figures, feeder)
    assert window_hits >= 1, "no kill landed between the ClickHouse write and the offset commit"


async def _progressed(group: LogConsumer, settings: Settings, before: dict[int, int]) -> None:
    """Until the projector committed past ``before`` on some partition: it is busy projecting."""

    async def moved() -> bool:
        now = await committed_positions(group, settings.events_topic, settings.partitions)
        return now != before

    await eventually(moved, timeout=120, interval=0.02)


async def _backlog_drained(group: LogConsumer, settings: Settings, ends: dict[int, int]) -> None:
    """Until the group committed at least ``ends`` on every partition."""

    async def reached() -> bool:
        now = await committed_positions(group, settings.events_topic, settings.partitions)
        return all(now[p] >= end for p, end in ends.items())

    await eventually(reached, timeout=180, interval=0.1)


async def test_projector_paused_and_continued(
    fault_settings: Settings,
    event_log: EventLog,
    group: LogConsumer,
    tmp_path: Path,
) -> None:
    """F4: SIGSTOP the projector for 30 s while events flow, then SIGCONT.

    The same process continues (no restart), commits nothing while stopped, drains
    what piled up, and the group's lag goes back to 0; nothing lost or duplicated.
    """
    settings = fault_settings
    ledger = DeliveryLedger()
    feeder = EventFeeder(event_log, settings.events_topic, ledger)
    stop_feeding = asyncio.Event()
    feeding = asyncio.create_task(feeder.run(stop_feeding))
    projector = ProjectorProcess(settings, tmp_path / "projector.log")
    try:
        before = await committed_positions(group, settings.events_topic, settings.partitions)
        projector.start()
        await projector.wait_ready()
        await _progressed(group, settings, before)
        projector.signal(signal.SIGSTOP)
        paused_at = await committed_positions(group, settings.events_topic, settings.partitions)
        await asyncio.sleep(PAUSE_SECONDS)
        during = await committed_positions(group, settings.events_topic, settings.partitions)
        lag_at_continue = await group_lag(event_log, group, settings.events_topic)
        ends = await event_log.end_offsets(settings.events_topic)
        projector.signal(signal.SIGCONT)
        continued = time.monotonic()
        await _backlog_drained(group, settings, ends)
        backlog_seconds = time.monotonic() - continued
        stop_feeding.set()
        await feeding
        recovery = await drained(event_log, group, settings)
        assert projector.running(), "the projector died after SIGCONT"
        assert projector.starts == 1
    finally:
        stop_feeding.set()
        projector.stop()
    found = await probe_clickhouse(settings, ledger, tmp_path)
    print(
        f"\nF4 [{_path(settings)}]: {feeder.appended} events, paused {PAUSE_SECONDS} s with lag "
        f"{lag_at_continue} at SIGCONT; that backlog drained in {backlog_seconds:.1f} s, lag 0 "
        f"{recovery:.1f} s after the feed stopped; {found.text}"
    )
    assert during == paused_at, "offsets were committed while the projector was stopped"
    assert lag_at_continue > 0
    _assert_clean(found.figures, feeder)


async def test_clickhouse_storage_unwritable_for_a_while(
    adapter: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """F5 (embedded engine): the ClickHouse folder is unwritable for 20 s while events flow.

    The folder gets a read-only bind mount of itself (``ReadOnlyCover``), so every
    insert of chdb fails (EROFS); root bypasses permission bits, so chmod would not.
    The projector keeps running in the same process, retries with backoff (its
    retry warnings are counted: a handful, not a hot loop), commits no offsets while
    failing, and drains everything once the folder is writable again: lost = 0,
    duplicated = 0. Server mode (ClickHouse unreachable) needs a ClickHouse server,
    which is not installed here.
    """
    kafka = request.getfixturevalue("kafka_bootstrap") if adapter == "kafka" else None
    settings = isolated_settings(tmp_path / "data", tmp_path / "clickhouse", kafka_bootstrap=kafka)
    storage = ReadOnlyCover(tmp_path / "clickhouse")
    log = open_event_log(settings)
    await log.start()
    await log.create_topic(settings.events_topic, settings.partitions)
    group = log.consumer([settings.events_topic], group=settings.projector_group)
    await group.start()
    ledger = DeliveryLedger()
    feeder = EventFeeder(log, settings.events_topic, ledger)
    stop_feeding = asyncio.Event()
    feeding = asyncio.create_task(feeder.run(stop_feeding))
    projector = ProjectorProcess(settings, tmp_path / "projector.log")
    try:
        before = await committed_positions(group, settings.events_topic, settings.partitions)
        projector.start()
        await projector.wait_ready()
        await _progressed(group, settings, before)
        storage.cover()
        failing_since = time.monotonic()
        await eventually(lambda: _async(RETRY_LINE in projector.output()), timeout=60, interval=0.1)
        first_failure = time.monotonic() - failing_since
        frozen = await committed_positions(group, settings.events_topic, settings.partitions)
        retries_before = projector.output().count(RETRY_LINE)
        await asyncio.sleep(FAIL_SECONDS)
        retries = projector.output().count(RETRY_LINE) - retries_before
        still = await committed_positions(group, settings.events_topic, settings.partitions)
        lag_at_return = await group_lag(log, group, settings.events_topic)
        storage.lift()
        returned = time.monotonic()
        ends = await log.end_offsets(settings.events_topic)
        await _backlog_drained(group, settings, ends)
        backlog_seconds = time.monotonic() - returned
        stop_feeding.set()
        await feeding
        recovery = await drained(log, group, settings)
        assert projector.running(), f"the projector process exited:\n{projector.output()[-3000:]}"
        assert projector.starts == 1
        assert "cannot retry" not in projector.output(), projector.output()[-3000:]
    finally:
        stop_feeding.set()
        projector.stop()
        await group.close()
        await log.close()
        storage.lift()
    found = await probe_clickhouse(settings, ledger, tmp_path)
    print(
        f"\nF5 [{_path(settings)}]: {feeder.appended} events; writes failed {first_failure:.1f} s after "
        f"the folder turned read-only; {retries} retries in {FAIL_SECONDS} s read-only; "
        f"lag {lag_at_return} when writable again, that backlog drained in {backlog_seconds:.1f} s, "
        f"lag 0 {recovery:.1f} s after the feed stopped; {found.text}"
    )
    assert still == frozen, "offsets were committed while ClickHouse writes were failing"
    assert 1 <= retries <= FAIL_SECONDS, f"{retries} retries in {FAIL_SECONDS} s: not backing off"
    assert lag_at_return > 0
    _assert_clean(found.figures, feeder)


async def _async(value: bool) -> bool:
    return value


def _path(settings: Settings) -> str:
    return "kafka" if settings.kafka_bootstrap else "local"


def _assert_clean(figures: dict[str, int], feeder: EventFeeder) -> None:
    assert figures["total"] == feeder.appended + feeder.points
    assert figures["lost"] == 0
    assert figures["duplicated"] == 0
    assert figures["unseen"] == 0
    assert figures["out_of_order"] == 0


async def test_local_event_log_disk_full(tmp_path: Path) -> None:
    """F10 (local event log): its disk fills up while events are appended and projected.

    The event log's folder is a small tmpfs, filled to the last byte. An append then
    fails with ``EventLogError`` naming the log file and SQLite's cause ("database or
    disk is full"), and is not acknowledged; ingest answers 503 "event log
    unavailable" (retriable) with the same cause. The file passes SQLite's integrity
    check and still holds every event acknowledged before. Once space returns, the
    same log instance and ingest take events again, and the projector (running all
    along) lands every acknowledged event in ClickHouse once.
    """
    settings = isolated_settings(tmp_path / "data", tmp_path / "clickhouse")
    disk = Tmpfs(settings.data_dir / "eventlog", "16m")
    disk.mount()
    log = open_event_log(settings)
    projector = ProjectorProcess(settings, tmp_path / "projector.log")
    try:
        await log.start()
        await log.create_topic(settings.events_topic, settings.partitions)
        group = log.consumer([settings.events_topic], group=settings.projector_group)
        await group.start()
        ledger = DeliveryLedger()
        feeder = EventFeeder(log, settings.events_topic, ledger)
        projector.start()
        await projector.wait_ready()
        for _ in range(50):
            await feeder.append_once()
        before_full = feeder.appended
        filler = fill(disk.path)
        error: EventLogError | None = None
        for _ in range(5000):
            try:
                await feeder.append_once()
            except EventLogError as exc:
                error = exc
                break
        assert error is not None, "appends kept succeeding on a full disk"
        refused_after = feeder.appended
        log_file = disk.path / "log.sqlite3"
        check = integrity(log_file)
        held = await _log_events(log, settings)
        on_full = ledger.report_events(held, "local event log, disk full")
        with ingest_server(settings) as (url, token):
            refused = await _post_events(url, token, feeder)
            assert refused.status_code == 503, refused.text
            filler.unlink()
            accepted = await _post_events(url, token, feeder)
            assert accepted.status_code == 200, accepted.text
        for _ in range(50):
            await feeder.append_once()
        recovered = time.monotonic()
        recovery = await drained(log, group, settings)
        await group.close()
    finally:
        projector.stop()
        await log.close()
        disk.unmount()
    found = await probe_clickhouse(settings, ledger, tmp_path)
    print(
        f"\nF10 [local event log]: {before_full} events before the disk filled, "
        f"{refused_after - before_full} more appended into the last free pages, then: {error}; "
        f"ingest answered {refused.status_code} {refused.json()}; "
        f"integrity_check: {check}; {on_full}; after space returned lag 0 in "
        f"{time.monotonic() - recovered:.1f} s ({recovery:.1f} s wait); {found.text}"
    )
    assert str(log_file) in str(error)
    assert "disk is full" in str(error)
    assert error.retriable
    assert refused.json()["error"] == "event log unavailable"
    assert refused.json()["retriable"] is True
    assert str(log_file) in refused.json()["detail"] and "disk is full" in refused.json()["detail"]
    assert check == "ok"
    on_full.assert_clean()
    _assert_clean(found.figures, feeder)
    assert "cannot retry" not in projector.output()


async def _post_events(url: str, token: str, feeder: EventFeeder) -> httpx.Response:
    """POST one batch of the feeder's events to ingest; acknowledged in its ledger when stored (200)."""
    events = feeder.next_events()
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(
            f"{url}/api/v1/events", content=orjson.dumps(events), headers={"Authorization": f"Bearer {token}"}
        )
    if response.status_code == 200:
        feeder.acknowledge(events)
    return response


async def _log_events(log: EventLog, settings: Settings) -> list[StoredEvent]:
    """Every event on the events topic, read from the beginning (partition, offset order)."""
    ends = await log.end_offsets(settings.events_topic)
    reader = log.consumer([settings.events_topic])
    await reader.start()
    records: list[LogRecord] = []
    try:
        while len(records) < sum(ends.values()):
            batch = await reader.fetch(10_000, timeout=2.0)
            if not batch:
                break
            records += batch
    finally:
        await reader.close()
    records.sort(key=lambda r: (r.partition, r.offset))
    return [StoredEvent.of(orjson.loads(r.value), (r.partition, r.offset)) for r in records]


def test_sdk_spool_disk_full(adapter: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """F10 (SDK spool): the spool's disk fills up while a training loop logs.

    The spool folder is a small tmpfs, filled to the last byte. Logging calls go on
    without blocking; the SDK reports ``SpoolError`` naming the spool file and the
    cause ("database or disk is full") in ``last_error`` and its log, and keeps the
    points in memory (nothing dropped). The spool file passes SQLite's integrity
    check. Once space returns, everything logged lands on the log once: every step
    of the metric is there exactly once, and every acknowledged event once.
    """
    kafka = request.getfixturevalue("kafka_bootstrap") if adapter == "kafka" else None
    settings = isolated_settings(tmp_path / "data", tmp_path / "clickhouse", kafka_bootstrap=kafka)
    disk = Tmpfs(tmp_path / "spool", "8m")
    disk.mount()
    ledger = DeliveryLedger()
    try:
        with ingest_server(settings) as (url, token):
            uri = f"kafka://{kafka}" if kafka else url
            config = ClientConfig(
                uri=uri,
                api=url,
                token=token,
                spool_dir=disk.path,
                topic_prefix=settings.topic_prefix,
                flush_interval=0.05,
            )
            transport = RecordingTransport(
                open_transport(uri, token, topic_prefix=settings.topic_prefix), ledger
            )
            client = Client(config, transport=transport)
            old = set_client(client)
            try:
                run = runstream.start_run("disk-full", capture_output=False, snapshot=False)
                for step in range(STEPS_BEFORE):
                    run.log("loss", step * 0.5)
                assert client.flush(60)
                filler = fill(disk.path)
                logging_started = time.monotonic()
                for step in range(STEPS_BEFORE, STEPS_TOTAL):
                    run.log("loss", step * 0.5)
                logging_seconds = time.monotonic() - logging_started
                error = _wait_for(lambda: client.last_error if "full" in (client.last_error or "") else None)
                spool_files = sorted(disk.path.glob("spool-*.sqlite3"))
                checks = [integrity(path) for path in spool_files]
                filler.unlink()
                space_back = time.monotonic()
                assert client.flush(120), f"not delivered after space returned: {client.last_error}"
                delivered_in = time.monotonic() - space_back
                run.complete()
                assert client.flush(60)
            finally:
                client.close(timeout=30)
                set_client(old)
    finally:
        disk.unmount()
    events = run_events(settings, run.run_id)
    report = ledger.report_events([StoredEvent.of(e) for e in events], "event log", [run.run_id])
    steps = Counter(
        p["step"] for e in events if e["type"] == "metrics.logged" for p in e["payload"]["points"]
    )
    print(
        f"\nF10 [SDK spool, {_path(settings)}]: {STEPS_TOTAL} points logged, {STEPS_TOTAL - STEPS_BEFORE} "
        f"of them in {logging_seconds:.3f} s on a full disk; error: {error}; integrity_check: {checks}; "
        f"delivered {delivered_in:.1f} s after space returned; {report}"
    )
    assert spool_files and all(path.name in error for path in spool_files[:1])
    assert "disk is full" in error
    assert checks == ["ok"] * len(spool_files)
    report.assert_clean()
    assert sorted(steps) == list(range(STEPS_TOTAL))
    assert set(steps.values()) == {1}


def _wait_for(probe: Callable[[], str | None], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")
