"""Faults on the producer side (issue 7: 1, 2, 6, 7, 11): every acknowledged event lands exactly once.

Each test logs through the real SDK, with its transport wrapped by the delivery
checker's ``RecordingTransport``, breaks something real (a Kafka broker of its own
killed with SIGKILL, the ingest server stopped, a training process killed, responses
cut by a loopback proxy, skewed clocks), and then compares what was acknowledged with
what ClickHouse holds (and, where it says so, what a websocket subscriber received).
Figures are printed (``pytest -s`` shows them) as ``F<n> [path]: ...``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import runstream
from runstream.eventlog.kafka import KafkaEventLog
from runstream.eventlog.port import AppendUnconfirmedError, LogRecord
from runstream.sdk.client import Client, set_client
from runstream.sdk.transport.kafka import KafkaTransport
from runstream.sdk.transport.port import Delivery, TransportError
from runstream.settings import Settings
from tests.conftest import ROOT, isolated_settings, unique
from tests.reliability.checker import DeliveryLedger, DeliveryReport
from tests.reliability.sdk_faults import (
    CuttingProxy,
    OwnBroker,
    active_client,
    clickhouse_probe,
    own_broker,
    recording_client,
    start_run,
    stream_of,
)
from tests.sdk.conftest import ThreadServer
from tests.support import event, points

pytestmark = pytest.mark.kafka

LOG_CALL_LIMIT = 0.2
"""Seconds a ``run.log`` call may take while the destination is down: it appends to memory, so
anything near this means the training loop waited for the network."""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    """A broker of this module's own; each test finds it running and may kill it."""
    own = own_broker(tmp_path_factory.mktemp("own-broker"))
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def up_broker(broker: OwnBroker) -> OwnBroker:
    broker.start()
    return broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Logger:
    """The training loop: logs ``x`` to a run as fast as a loop with a short sleep can, in a thread."""

    def __init__(self, run: runstream.Run, pause: float = 0.002) -> None:
        self.run = run
        self.pause = pause
        self.logged = 0
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            self.run.log("x", float(self.logged))
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.logged += 1
            time.sleep(self.pause)

    def __enter__(self) -> Logger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def start_run_on(client: Client, experiment: str) -> runstream.Run:
    """A run logging through ``client`` (the process's client is left as it was)."""
    old = set_client(client)
    try:
        return start_run(experiment)
    finally:
        set_client(old)


def figures(fault: str, path: str, report: DeliveryReport, **more: Any) -> None:
    extra = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in more.items())
    print(f"\n{fault} [{path}]: {report}; {extra}")


def assert_all_points(ledger: DeliveryLedger, run_id: str, name: str, count: int) -> None:
    """Every point the loop logged was acknowledged (so the checker covered all of them)."""
    steps = sorted(step for run, metric, step in ledger.points([run_id]) if metric == name)
    assert steps == list(range(count))


# -- F1: broker killed (SIGKILL) and restarted during logging, 3 times --------------------------------


@pytest.mark.parametrize("route", ["kafka", "ingest"])
def test_broker_killed_three_times_during_logging_loses_and_duplicates_nothing(
    route: str, up_broker: OwnBroker, tmp_path: Path, settings_factory: Any
) -> None:
    """The SDK writes straight to Kafka (``kafka``) or through the ingest API to it (``ingest``).

    The broker is SIGKILLed three times while a loop logs; each time it comes back
    after 2 s. Every acknowledged event is in ClickHouse once, in order.
    """
    settings = settings_factory(kafka_bootstrap=up_broker.bootstrap)
    server = ThreadServer(settings).start()
    ledger = DeliveryLedger()
    uri = f"kafka://{up_broker.bootstrap}" if route == "kafka" else None
    recoveries: list[float] = []
    try:
        with (
            active_client(recording_client(server, tmp_path / "spool", ledger, uri=uri)) as client,
            clickhouse_probe(settings) as probe,
        ):
            run = start_run("broker-kills")
            with Logger(run) as loop:
                for _ in range(3):
                    time.sleep(1.5)
                    up_broker.kill()
                    time.sleep(2.0)
                    up_broker.start()
                    back = time.monotonic()
                    assert client.flush(120)
                    recoveries.append(time.monotonic() - back)
            run.complete()
            assert run.flush(120)
            report, landed = probe.wait_landed(ledger, [run.run_id])
            figures(
                "F1",
                route,
                report,
                logged=loop.logged,
                kills=3,
                spool_drained_s=max(recoveries),
                clickhouse_s=landed,
            )
            report.assert_clean()
            assert_all_points(ledger, run.run_id, "x", loop.logged)
    finally:
        server.stop()


def test_kafka_transport_does_not_write_a_batch_twice_when_its_answer_was_lost(
    up_broker: OwnBroker, tmp_path: Path
) -> None:
    """The broker dies while a batch is being sent: the send fails, but the producer that held the
    batch may still write it once the broker is back. The retry writes only what is not on the log."""
    topic = f"{unique('rs')}.events"
    asyncio.run(create_topic(up_broker.bootstrap, topic))
    transport = KafkaTransport(up_broker.bootstrap, topic=topic, send_timeout=5.0)
    run_id = unique("lost-answer")
    created = event("run.created", run_id)
    batch = [event("metrics.logged", run_id, points("x", [float(i)], start_step=i), seq=i) for i in range(6)]
    try:
        transport.deliver(b"", [created])
        up_broker.kill()
        with pytest.raises(TransportError):
            transport.deliver(b"", batch)  # no answer: for all the SDK knows, the batch was written
        up_broker.start()
        retry_until_delivered(transport, batch)
        on_log = list(asyncio.run(event_ids_at(up_broker.bootstrap, topic)).values())
        assert sorted(on_log) == sorted(e["event_id"] for e in [created, *batch])  # each once
    finally:
        transport.close()


async def test_an_append_that_gave_up_still_says_where_its_records_landed(up_broker: OwnBroker) -> None:
    """The broker dies under an append, which gives up waiting (``AppendUnconfirmedError``); once it
    is back, each pending task says where its record landed (it is there) or that it never will
    (it is not there). This is what lets ingest answer a retry without writing the events twice."""
    topic, run_id = f"{unique('rs')}.events", unique("gave-up")
    await create_topic(up_broker.bootstrap, topic)
    log = KafkaEventLog(up_broker.bootstrap, send_timeout=3.0)
    await log.start()
    batch = [event("metrics.logged", run_id, points("x", [float(i)], start_step=i), seq=i) for i in range(5)]
    try:
        await log.append(topic, [(run_id.encode(), orjson.dumps(event("run.created", run_id)))])
        await asyncio.to_thread(up_broker.kill)
        with pytest.raises(AppendUnconfirmedError) as raised:
            await log.append(topic, [(run_id.encode(), orjson.dumps(e)) for e in batch])
        pending = raised.value.pending
        assert pending and not any(p.done() for p in pending)
        await asyncio.to_thread(up_broker.start)
        await asyncio.wait(pending, timeout=120)
        assert all(p.done() for p in pending)
    finally:
        await log.close()
    on_log = await event_ids_at(up_broker.bootstrap, topic)
    for sent, position in zip(batch, pending, strict=False):
        if position.exception() is None:
            assert on_log[(position.result().partition, position.result().offset)] == sent["event_id"]
        else:
            assert sent["event_id"] not in on_log.values()
    landed = sum(p.exception() is None for p in pending)
    print(f"\nunconfirmed append: {landed} of {len(pending)} records landed after the append gave up")


async def event_ids_at(bootstrap: str, topic: str) -> dict[tuple[int, int], str]:
    log = KafkaEventLog(bootstrap)
    await log.start()
    try:
        total = sum((await log.end_offsets(topic)).values())
        consumer = log.consumer([topic])
        await consumer.start()
        records: list[LogRecord] = []
        try:
            while len(records) < total:
                records += await consumer.fetch(1000, timeout=1.0)
        finally:
            await consumer.close()
    finally:
        await log.close()
    return {(r.partition, r.offset): orjson.loads(r.value)["event_id"] for r in records}


async def create_topic(bootstrap: str, topic: str) -> None:
    log = KafkaEventLog(bootstrap)
    await log.start()
    try:
        await log.create_topic(topic, 3)
    finally:
        await log.close()


def retry_until_delivered(transport: KafkaTransport, events: list[dict[str, Any]]) -> Delivery:
    deadline = time.monotonic() + 120
    while True:
        try:
            return transport.deliver(b"", events)
        except TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# -- F2: destination down for 60 s: spooled, loop not blocked, lands once -----------------------------


OUTAGE = 60.0


def test_destination_down_for_a_minute_spools_without_blocking_and_lands_once(
    up_broker: OwnBroker, tmp_path: Path, settings_factory: Any, chdb_path: Path
) -> None:
    """Two runs at once: one over ``kafka://`` while its broker is down for 60 s, one over HTTP to an
    embedded-log server that is stopped for the same 60 s.

    The loop keeps logging to both; no ``run.log`` call waits for the network; after
    both come back everything acknowledged is in ClickHouse once, in order.
    """
    kafka_settings = settings_factory(kafka_bootstrap=up_broker.bootstrap)
    local_settings = isolated_settings(tmp_path / "local", chdb_path, port=free_port())
    kafka_server = ThreadServer(kafka_settings).start()
    local_server = ThreadServer(local_settings).start()
    kafka_ledger, local_ledger = DeliveryLedger(), DeliveryLedger()
    kafka_client = recording_client(
        kafka_server, tmp_path / "kafka-spool", kafka_ledger, uri=f"kafka://{up_broker.bootstrap}"
    )
    local_client = recording_client(local_server, tmp_path / "local-spool", local_ledger)
    try:
        kafka_run = start_run_on(kafka_client, "outage")
        local_run = start_run_on(local_client, "outage")
        runs = {"kafka": kafka_run, "local": local_run}
        assert kafka_run.flush(60) and local_run.flush(60)
        up_broker.kill()
        local_server.stop()
        down = time.monotonic()
        loops = {path: Logger(run, pause=0.01) for path, run in runs.items()}
        with loops["kafka"], loops["local"]:
            time.sleep(OUTAGE)
        spooled = {"kafka": kafka_client.flush(0.1), "local": local_client.flush(0.1)}
        up_broker.start()
        local_server = ThreadServer(local_settings).start()
        back = time.monotonic()
        outage = back - down
        for run in runs.values():
            run.complete()
        drained_s = drain_times({"kafka": kafka_client, "local": local_client}, back)
        for path, settings, ledger in (
            ("kafka", kafka_settings, kafka_ledger),
            ("local", local_settings, local_ledger),
        ):
            with clickhouse_probe(settings) as probe:
                report, landed = probe.wait_landed(ledger, [runs[path].run_id])
            figures(
                "F2",
                path,
                report,
                outage_s=outage,
                logged=loops[path].logged,
                slowest_log_call_ms=loops[path].slowest * 1000,
                spool_drained_s=drained_s[path],
                clickhouse_s=drained_s[path] + landed,
            )
            assert spooled[path] is False  # the events waited in the spool during the outage
            report.assert_clean()
            assert_all_points(ledger, runs[path].run_id, "x", loops[path].logged)
            assert loops[path].slowest < LOG_CALL_LIMIT
    finally:
        kafka_client.close(timeout=10)
        local_client.close(timeout=10)
        kafka_server.stop()
        local_server.stop()


def drain_times(clients: dict[str, Client], since: float, timeout: float = 240.0) -> dict[str, float]:
    """Seconds from ``since`` until each client had every event acknowledged (fails after ``timeout``)."""
    done: dict[str, float] = {}
    while len(done) < len(clients):
        for path, client in clients.items():
            if path not in done and client.flush(0.05):
                done[path] = time.monotonic() - since
        assert time.monotonic() - since < timeout, f"spools not drained within {timeout} s: {done}"
    return done


# -- F6: training process killed mid-run, restarted with the same run --------------------------------


JOB = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import runstream
    from runstream.sdk.client import Client, set_client
    from runstream.sdk.config import ClientConfig
    from runstream.sdk.transport import open_transport
    from tests.reliability.checker import RecordingTransport

    run_id, mode, journal = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    config = ClientConfig.from_env()
    inner = open_transport(config.uri, config.token, topic_prefix=config.topic_prefix)
    client = Client(config, transport=RecordingTransport(inner, journal=journal, writer=mode))
    set_client(client)
    run = runstream.start_run("jobs", run_id=run_id, snapshot=False, capture_output=False)
    if mode == "killed":
        for i in range(200):
            run.log("m", float(i))
        assert runstream.flush(60)
        print("FLUSHED", flush=True)
        sys.stdin.readline()
        for i in range(200, 400):
            run.log("m", float(i))
        time.sleep(1.0)
        print("SPOOLED", flush=True)
        time.sleep(120)
    else:
        for i in range(300, 400):
            run.log("m", -float(i), step=i)  # resumed from its checkpoint at step 300
        assert runstream.flush(120)
        run.complete()
        client.close(timeout=120)
    """
)


def start_job(
    tmp_path: Path, uri: str, server: ThreadServer, run_id: str, mode: str, source: str = JOB
) -> subprocess.Popen[bytes]:
    """``source`` run as a training job in a process of its own; it journals its acknowledgements."""
    script = tmp_path / f"job-{mode}.py"
    script.write_text(source)
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'services'}{os.pathsep}{ROOT}",
        "RUNSTREAM_URI": uri,
        "RUNSTREAM_API": server.base_url,
        "RUNSTREAM_TOKEN": server.token,
        "RUNSTREAM_SPOOL_DIR": str(tmp_path / "job-spool"),
        "RUNSTREAM_FLUSH_INTERVAL": "0.05",
        "RUNSTREAM_TOPIC_PREFIX": server.settings.topic_prefix,
    }
    journal = tmp_path / f"acks-{mode}.jsonl"
    return subprocess.Popen(
        [sys.executable, str(script), run_id, mode, str(journal)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=tmp_path,
    )


def read_line(job: subprocess.Popen[bytes]) -> bytes:
    assert job.stdout is not None
    return job.stdout.readline().strip()


@pytest.mark.parametrize("route", ["kafka", "ingest"])
def test_killed_training_process_is_resent_by_its_restart_once_per_step(
    route: str, up_broker: OwnBroker, tmp_path: Path, settings_factory: Any
) -> None:
    """A job logs 200 points (acknowledged), loses its destination, logs 200 more (spooled) and is
    SIGKILLed; the destination comes back and the job is started again with the same run, from its
    checkpoint at step 300: it logs steps 300-399 again, with new values.

    ``kafka``: the job writes straight to a broker of the test's own, which is killed.
    ``ingest``: the job writes over HTTP to a server on the embedded log, which is stopped.
    The restarted job resends the spool: all 400 points, one row per step, and the steps it
    logged again hold its values, not the dead process's (they come later, though the new
    process counts its sequence again).
    """
    if route == "kafka":
        settings = settings_factory(kafka_bootstrap=up_broker.bootstrap)
    else:
        settings = settings_factory(kafka_bootstrap=None, port=free_port())
    server = ThreadServer(settings).start()
    uri = f"kafka://{up_broker.bootstrap}" if route == "kafka" else server.base_url
    run_id = unique("job")
    job = start_job(tmp_path, uri, server, run_id, "killed")
    try:
        assert read_line(job) == b"FLUSHED"
        if route == "kafka":
            up_broker.kill()
        else:
            server.stop()
        assert job.stdin is not None
        job.stdin.write(b"go\n")
        job.stdin.flush()
        assert read_line(job) == b"SPOOLED"
        job.send_signal(signal.SIGKILL)
        assert job.wait(30) == -signal.SIGKILL
    finally:
        if job.poll() is None:
            job.kill()
        job.communicate(timeout=30)
    if route == "kafka":
        up_broker.start()
    else:
        server = ThreadServer(settings).start()
    back = time.monotonic()
    try:
        again = start_job(tmp_path, uri, server, run_id, "resume")
        assert again.wait(180) == 0
        again.communicate(timeout=30)
        resent = time.monotonic() - back
        ledger = DeliveryLedger.from_journal(tmp_path / "acks-killed.jsonl", tmp_path / "acks-resume.jsonl")
        with clickhouse_probe(settings) as probe:
            report, landed = probe.wait_landed(ledger, [run_id])
        figures("F6", route, report, resent_s=resent, clickhouse_s=resent + landed)
        report.assert_clean()
        assert_all_points(ledger, run_id, "m", 400)
        series = series_of(server, run_id, "m")
        assert [p["step"] for p in series["points"]] == list(range(400))
        relogged = [float(i) if i < 300 else -float(i) for i in range(400)]
        assert [p["value"] for p in series["points"]] == relogged
        assert series["summary"]["count"] == 400
    finally:
        server.stop()


# -- F7: ingest response cut after the server accepted the request -----------------------------------


@pytest.mark.parametrize("adapter", ["local", "kafka"], indirect=True)
def test_response_cut_after_acceptance_is_stored_once(settings: Settings, tmp_path: Path) -> None:
    """A proxy between SDK and ingest drops every third response after the server handled the request;
    the SDK sends the batch again. Each event is stored once in ClickHouse and streamed once."""
    server = ThreadServer(settings).start()
    proxy = CuttingProxy(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])), cut_every=3).start()
    ledger = DeliveryLedger()
    try:
        with (
            active_client(recording_client(server, tmp_path / "spool", ledger, uri=proxy.url)),
            clickhouse_probe(settings) as probe,
        ):
            run = start_run("cut-responses")
            for i in range(40):
                for j in range(25):
                    run.log("x", float(i * 25 + j))
                assert run.flush(60)
            run.complete()
            assert run.flush(60)
            report, landed = probe.wait_landed(ledger, [run.run_id])
            stored = probe.raw_event_count(run.run_id)
            streamed = ledger.report_stream(stream_of(server, run.run_id, stored), [run.run_id])
            path = "kafka" if settings.kafka_bootstrap else "local"
            figures("F7", path, report, requests=proxy.responses, cut=proxy.cut, clickhouse_s=landed)
            figures("F7", path, streamed)
            assert proxy.cut >= 10  # the fault really happened, many times
            report.assert_clean()
            streamed.assert_clean()
            assert_all_points(ledger, run.run_id, "x", 1000)
            series = series_of(server, run.run_id, "x")
            assert [p["step"] for p in series["points"]] == list(range(1000))
            assert series["summary"]["count"] == 1000
    finally:
        proxy.close()
        server.stop()


def series_of(server: ThreadServer, run_id: str, name: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.base_url}/api/v1/runs/{run_id}/metrics/{name}",
        params={"full": "true"},
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


# -- F11: producer clocks skewed by +-5 minutes ------------------------------------------------------


SKEW = 300.0

SKEWED_JOB = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import runstream
    from runstream.sdk.client import Client, set_client
    from runstream.sdk.config import ClientConfig
    from runstream.sdk.transport import open_transport
    from tests.reliability.checker import RecordingTransport

    run_id, mode, journal = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    real_time = time.time
    skew = [0.0]
    time.time = lambda: real_time() + skew[0]  # this process's clock, as the SDK reads it
    config = ClientConfig.from_env()
    inner = open_transport(config.uri, config.token, topic_prefix=config.topic_prefix)
    client = Client(config, transport=RecordingTransport(inner, journal=journal, writer=mode))
    set_client(client)
    if mode == "ahead":
        skew[0] = 300.0
        run = runstream.start_run("skewed", run_id=run_id, snapshot=False, capture_output=False)
        for step in range(50):
            run.log("loss", 1000.0 + step, step=step)
        assert runstream.flush(60)
        skew[0] = -300.0  # the clock is set back ten minutes in the middle of the run
        for step in range(50, 100):
            run.log("loss", 1000.0 + step, step=step)
        run.log("loss", -1.0, step=10)  # logged again later, with a clock ten minutes behind
    else:
        skew[0] = -300.0
        run = runstream.get_run(run_id)
        for step in range(100, 150):
            run.log("loss", 1000.0 + step, step=step)
        run.complete()
    assert runstream.flush(60)
    client.close(timeout=60)
    """
)


@pytest.mark.parametrize("adapter", ["local", "kafka"], indirect=True)
def test_skewed_producer_clocks_order_series_by_step_and_sequence(settings: Settings, tmp_path: Path) -> None:
    """Two writers of one run, their clocks 5 minutes ahead and behind (one is set back mid-run).

    The series reads in step order, a step logged again keeps its later value although
    its timestamp is ten minutes older, and the last value is the highest step's,
    although that writer's clock is behind: order comes from step and sequence only.
    """
    server = ThreadServer(settings).start()
    uri = f"kafka://{settings.kafka_bootstrap}" if settings.kafka_bootstrap else server.base_url
    run_id = unique("skew")
    try:
        for mode in ("ahead", "behind"):
            job = start_job(tmp_path, uri, server, run_id, mode, SKEWED_JOB)
            job.communicate(timeout=180)
            assert job.returncode == 0
        ledger = DeliveryLedger.from_journal(tmp_path / "acks-ahead.jsonl", tmp_path / "acks-behind.jsonl")
        with clickhouse_probe(settings) as probe:
            report, landed = probe.wait_landed(ledger, [run_id])
        series = series_of(server, run_id, "loss")
        points = series["points"]
        ts = {p["step"]: p["ts"] for p in points}
        path = "kafka" if settings.kafka_bootstrap else "local"
        figures("F11", path, report, skew_s=SKEW, clickhouse_s=landed)
        report.assert_clean()
        assert ts[0] > ts[60] and ts[0] > ts[120]  # the clocks really were skewed
        assert [p["step"] for p in points] == list(range(150))
        expected = [1000.0 + step for step in range(150)]
        expected[10] = -1.0
        assert [p["value"] for p in points] == expected
        assert series["summary"]["last"] == 1149.0
        assert series["summary"]["count"] == 150
    finally:
        server.stop()
