"""Delivery: direct Kafka transport, outages, hard kills, other processes, forks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import runstream
from runstream.sdk.client import Client, set_client
from runstream.settings import Settings
from tests.conftest import KAFKA_PORT, ROOT, load_broker_module, unique
from tests.sdk.conftest import ThreadServer, make_client, run_events


def points_of(settings: Settings, run_id: str, name: str) -> list[tuple[int, float]]:
    return [
        (p["step"], p["value"])
        for e in run_events(settings, run_id)
        if e["type"] == "metrics.logged"
        for p in e["payload"]["points"]
        if p["name"] == name
    ]


@pytest.mark.parametrize("adapter", ["kafka"], indirect=True)
def test_kafka_transport_writes_straight_to_the_topic(server: ThreadServer, tmp_path: Path) -> None:
    client = make_client(server, tmp_path, uri=f"kafka://{server.settings.kafka_bootstrap}")
    old = set_client(client)
    try:
        run = runstream.start_run("direct", capture_output=False, snapshot=False)
        for i in range(500):
            run.log("loss", 1 / (i + 1))
        run.complete()
        assert run.get_metrics()["loss"] == [1 / (i + 1) for i in range(500)]
        assert run.get_details()["status"] == "completed"
    finally:
        client.close(timeout=10)
        set_client(old)


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
def test_ingest_outage_loses_nothing_and_keeps_order(settings: Settings, tmp_path: Path) -> None:
    """The server goes away mid-run; logging goes on; everything lands once, in order, when it returns."""
    pinned = settings.with_changes(port=_free_port())
    server = ThreadServer(pinned).start()
    client = make_client(server, tmp_path)
    old = set_client(client)
    try:
        run = runstream.start_run("outage", capture_output=False, snapshot=False)
        for i in range(300):
            run.log("x", float(i))
        assert run.flush(10)
        server.stop()
        started = time.perf_counter()
        for i in range(300, 1300):
            run.log("x", float(i))
        logging_time = time.perf_counter() - started
        time.sleep(1.0)
        assert client.last_error is not None and "unreachable" in client.last_error
        assert client.flush(timeout=0.5) is False
        server = ThreadServer(pinned).start()
        run.complete()
        assert run.flush(30)
        assert run.get_metrics()["x"] == [float(i) for i in range(1300)]
        steps = [s for s, _ in points_of(pinned, run.run_id, "x")]
        assert steps == list(range(1300))  # on the log exactly once each, in order
        assert logging_time < 5.0  # the loop was never held up by the outage
    finally:
        client.close(timeout=10)
        set_client(old)
        server.stop()


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
def test_batches_too_large_for_the_server_go_in_halves_and_an_event_it_never_takes_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    """A server with a small body limit: big batches are split in order, nothing is lost, and one
    event over the limit is refused on its own instead of holding up the spool."""
    server = ThreadServer(settings.with_changes(max_body_bytes=64 * 1024)).start()
    client = make_client(server, tmp_path)
    old = set_client(client)
    try:
        run = runstream.start_run("small-bodies", capture_output=False, snapshot=False)
        run.log_list("too big", [float(i) for i in range(20_000)])  # ~400 KB: one event over 64 KiB
        for i in range(5000):
            run.log("x", i / 7)
        run.complete()
        assert run.flush(60)
        assert run.get_metrics()["x"] == [i / 7 for i in range(5000)]
        [refused] = client.rejected
        assert "413" in refused["message"] and refused["event_id"]
        types = [e["type"] for e in run_events(settings, run.run_id)]
        assert "list.logged" not in types and types[-1] == "run.completed"
    finally:
        client.close(timeout=10)
        set_client(old)
        server.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


JOB = textwrap.dedent(
    """
    import os, sys, time
    import runstream
    run = runstream.start_run("jobs", run_id=sys.argv[1], snapshot=False)
    mode = sys.argv[2]
    if mode == "lines":
        time.sleep(1.0)
        for i in range(8):
            print(f"line {i}", flush=True)
            time.sleep(0.3)
        run.complete()
    elif mode == "killed":
        for i in range(200):
            run.log("m", float(i))
        runstream.flush(30)
        for i in range(200, 400):
            run.log("m", float(i))
        time.sleep(0.5)
        print("SPOOLED", flush=True)
        time.sleep(60)
    elif mode == "resume":
        runstream.flush(30)
        run.complete()
    elif mode == "fork":
        pids = []
        for worker in range(3):
            pid = os.fork()
            if pid == 0:
                for i in range(100):
                    run.log(f"worker{worker}", float(i))
                runstream.flush(30)
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        run.log("parent", 1.0)
        run.complete()
    """
)


def job_env(server: ThreadServer, spool: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "services"),
        "RUNSTREAM_URI": server.base_url,
        "RUNSTREAM_TOKEN": server.token,
        "RUNSTREAM_SPOOL_DIR": str(spool),
        "RUNSTREAM_FLUSH_INTERVAL": "0.05",
        "RUNSTREAM_TOPIC_PREFIX": server.settings.topic_prefix,
    }


def start_job(
    tmp_path: Path, server: ThreadServer, run_id: str, mode: str, spool: Path
) -> subprocess.Popen[bytes]:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    return subprocess.Popen(
        [sys.executable, str(script), run_id, mode], env=job_env(server, spool), stdout=subprocess.PIPE
    )


def test_wait_for_completion_prints_lines_of_another_process_as_they_come(
    sdk: Client, server: ThreadServer, tmp_path: Path
) -> None:
    run_id = unique("job")
    job = start_job(tmp_path, server, run_id, "lines", tmp_path / "job-spool")
    try:
        handle = _wait_for_run(run_id)
        arrivals: list[tuple[float, str]] = []

        class Recorder:
            def write(self, text: str) -> int:
                if text.strip():
                    arrivals.append((time.monotonic(), text.strip()))
                return len(text)

            def flush(self) -> None:
                pass

        real = sys.stdout
        sys.stdout = Recorder()
        try:
            status = handle.wait_for_completion(show_output=True, timeout=60)
        finally:
            sys.stdout = real
        assert status == "completed"
        lines = [text for _, text in arrivals if text.startswith("line ")]
        assert lines == [f"line {i}" for i in range(8)]
        first, last = arrivals[0][0], arrivals[-1][0]
        assert last - first > 1.0  # shown while the job ran, not all at the end
        assert any("completed" in text for _, text in arrivals)
    finally:
        job.wait(30)
        if job.stdout:
            job.stdout.close()


def _wait_for_run(run_id: str) -> runstream.Run:
    deadline = time.monotonic() + 30
    while True:
        try:
            return runstream.get_run(run_id)
        except runstream.LoggingError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_wait_for_completion_times_out(sdk: Client) -> None:
    run = runstream.start_run("waiting", capture_output=False, snapshot=False)
    with pytest.raises(TimeoutError):
        run.wait_for_completion(timeout=0.5)
    run.complete()
    assert run.wait_for_completion(timeout=10) == "completed"


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
def test_hard_killed_job_is_resent_by_the_restarted_process(settings: Settings, tmp_path: Path) -> None:
    """Points spooled but not sent when the process is SIGKILLed arrive once the job restarts."""
    pinned = settings.with_changes(port=_free_port())
    server = ThreadServer(pinned).start()
    run_id = unique("job")
    spool = tmp_path / "job-spool"
    job = start_job(tmp_path, server, run_id, "killed", spool)
    try:
        assert job.stdout is not None
        server_stopped = threading.Event()

        def stop_when_flushed() -> None:
            # Wait for the first 200 points to be acknowledged, then take the server away.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(points_of(pinned, run_id, "m")) < 200:
                time.sleep(0.05)
            server.stop()
            server_stopped.set()

        stopper = threading.Thread(target=stop_when_flushed)
        stopper.start()
        stopper.join(40)
        assert server_stopped.is_set()
        assert job.stdout.readline().strip() == b"SPOOLED"
        job.send_signal(signal.SIGKILL)
        job.wait(10)
    finally:
        if job.poll() is None:
            job.kill()
        if job.stdout:
            job.stdout.close()
    server = ThreadServer(pinned).start()
    try:
        again = start_job(tmp_path, server, run_id, "resume", spool)
        assert again.wait(60) == 0
        if again.stdout:
            again.stdout.close()
        steps = [s for s, _ in points_of(pinned, run_id, "m")]
        assert sorted(steps) == list(range(400))
        assert len(steps) == 400
    finally:
        server.stop()


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
def test_forked_workers_log_to_the_same_run(server: ThreadServer, tmp_path: Path) -> None:
    run_id = unique("job")
    job = start_job(tmp_path, server, run_id, "fork", tmp_path / "job-spool")
    assert job.wait(60) == 0
    if job.stdout:
        job.stdout.close()
    for worker in range(3):
        assert [v for _, v in points_of(server.settings, run_id, f"worker{worker}")] == [
            float(i) for i in range(100)
        ]
    types = [e["type"] for e in run_events(server.settings, run_id)]
    assert types[-1] == "run.completed"


def test_kafka_broker_restart_during_logging_loses_nothing(tmp_path: Path, settings_factory: Any) -> None:
    """A broker of its own is stopped for a while and started again while a job logs over kafka://."""
    broker = load_broker_module()
    port = KAFKA_PORT + 50  # an extra broker stays within the session port + 10 .. + 90
    data_dir = tmp_path / "broker"
    bootstrap = broker.start(port=port, controller_port=port + 1, data_dir=data_dir, quiet=True)
    try:
        settings = settings_factory(kafka_bootstrap=bootstrap)
        server = ThreadServer(settings).start()
        client = make_client(server, tmp_path, uri=f"kafka://{bootstrap}")
        old = set_client(client)
        try:
            run = runstream.start_run("broker-restart", capture_output=False, snapshot=False)
            for i in range(200):
                run.log("x", float(i))
            assert run.flush(30)
            broker.stop(data_dir=data_dir, quiet=True)
            for i in range(200, 700):
                run.log("x", float(i))
                if i % 100 == 0:
                    time.sleep(0.2)
            broker.start(port=port, controller_port=port + 1, data_dir=data_dir, quiet=True)
            run.complete()
            assert run.flush(90)
            assert run.get_metrics()["x"] == [float(i) for i in range(700)]
            steps = [s for s, _ in points_of(settings, run.run_id, "x")]
            assert sorted(set(steps)) == list(range(700))
            assert len(steps) == len(set(steps))
        finally:
            client.close(timeout=10)
            set_client(old)
            server.stop()
    finally:
        broker.stop(data_dir=data_dir, quiet=True)
