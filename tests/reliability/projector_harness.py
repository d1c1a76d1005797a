"""Real processes for the projector fault tests: a projector subprocess, a feeder, lag and a probe.

- ``ProjectorProcess`` runs ``python -m runstream.cli.main projector`` on test
  settings (its own embedded ClickHouse folder: chdb lets one process at a time
  open a data folder), with its output in a log file, and can kill, pause and
  continue it.
- ``EventFeeder`` appends ``metrics.logged`` events straight to the event log
  (keyed by run, as ingest does) and acknowledges each in a ``DeliveryLedger``
  once ``append`` returned: the log said it is durable.
- ``group_lag`` is the projector group's lag: end offsets minus committed offsets.
- ``probe_clickhouse`` runs ``clickhouse_probe`` in a subprocess once the projector
  is stopped, and returns the checker's report and the positions recorded in ClickHouse.
- ``kill_on_positions_write`` SIGKILLs the projector the moment it recorded a batch's
  positions in ClickHouse (``kill_on_write``), before it commits them on the log.
- Storage faults (root only): ``ReadOnlyCover`` makes a folder unwritable, ``Tmpfs``
  plus ``fill`` a disk that is full; ``integrity`` runs SQLite's integrity check.
- ``ingest_server`` serves the ingest service alone, for the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from runstream.eventlog.port import EventLog, LogConsumer, TopicPartition
from runstream.settings import Settings
from tests.reliability.checker import DeliveryLedger
from tests.support import event

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "Application startup complete"


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that makes ``runstream`` run on ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update(
        {
            "RUNSTREAM_DATA_DIR": str(settings.data_dir),
            "RUNSTREAM_CLICKHOUSE": settings.resolved_clickhouse_dsn,
            "RUNSTREAM_CLICKHOUSE_DATABASE": settings.clickhouse_database,
            "RUNSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "RUNSTREAM_PARTITIONS": str(settings.partitions),
            "RUNSTREAM_TOKEN": settings.token or "test-token",
            "RUNSTREAM_HOST": "127.0.0.1",
            "RUNSTREAM_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if settings.kafka_bootstrap:
        env["RUNSTREAM_KAFKA"] = settings.kafka_bootstrap
    return env


@dataclass
class ProjectorProcess:
    """``runstream projector`` as a child process; its output goes to ``log_path``."""

    settings: Settings
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    start_offsets: list[int] = field(default_factory=list)
    """Where each start's output begins in the log file."""
    ready_seconds: list[float] = field(default_factory=list)
    """How long each start took until the application was up."""
    _started_at: float = 0.0

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"projector already running as pid {self.process.pid}")
        self.start_offsets.append(self.log_path.stat().st_size if self.log_path.exists() else 0)
        self._started_at = time.monotonic()
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runstream.cli.main", "projector"],
                cwd=ROOT,
                env=service_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("projector not started")
        return self.process.pid

    @property
    def starts(self) -> int:
        return len(self.start_offsets)

    def output(self, *, this_start: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()
        begin = self.start_offsets[-1] if this_start and self.start_offsets else 0
        return data[begin:].decode(errors="replace")

    def outputs(self) -> list[str]:
        """The output of each start, in order."""
        data = self.log_path.read_bytes() if self.log_path.exists() else b""
        bounds = [*self.start_offsets, len(data)]
        return [data[a:b].decode(errors="replace") for a, b in itertools.pairwise(bounds)]

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the projector's application started (its projector task is running)."""
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.output(this_start=True):
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"projector exited with {self.process.returncode}:\n{self.output()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"projector not ready within {timeout} s:\n{self.output()[-4000:]}")
            await asyncio.sleep(0.05)
        self.ready_seconds.append(time.monotonic() - self._started_at)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=30)

    def reap(self, timeout: float = 30.0) -> int:
        """Wait for the process to end (killed by someone else); its exit status."""
        if self.process is None:
            raise RuntimeError("projector not started")
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it does not exit within 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def positions_folder(settings: Settings) -> Path:
    """The folder of the ``projector_offsets`` table in the projector's embedded ClickHouse."""
    root = Path(settings.resolved_clickhouse_dsn.removeprefix("chdb://"))
    found = sorted(root.glob(f"data/{settings.clickhouse_database}_g*/projector_offsets"))
    if not found:
        raise AssertionError(f"no projector_offsets table under {root}")
    return found[-1].resolve()


async def kill_on_positions_write(projector: ProjectorProcess, timeout: float = 60.0) -> str:
    """SIGKILL the projector as soon as it writes a batch's positions to ClickHouse; the part written."""
    watcher = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.reliability.kill_on_write",
        str(positions_folder(projector.settings)),
        str(projector.pid),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert watcher.stdout is not None
    try:
        armed = await asyncio.wait_for(watcher.stdout.readline(), 30)
        if armed.strip() != b"ARMED":
            raise AssertionError(f"watcher did not arm: {armed!r}")
        line = await asyncio.wait_for(watcher.stdout.readline(), timeout + 5)
    finally:
        if watcher.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                watcher.kill()
        await watcher.wait()
    if not line.startswith(b"KILLED"):
        raise AssertionError(f"projector wrote no positions within {timeout} s: {line!r}")
    projector.reap()
    return line.decode().split()[-1]


@contextlib.asynccontextmanager
async def projector_process(settings: Settings, log_path: Path) -> AsyncIterator[ProjectorProcess]:
    """A started, ready projector process; stopped on the way out, whatever happened."""
    projector = ProjectorProcess(settings, log_path)
    projector.start()
    try:
        await projector.wait_ready()
        yield projector
    finally:
        projector.stop()


@dataclass
class EventFeeder:
    """Appends ``metrics.logged`` events of a few runs to the log, acknowledging each in ``ledger``."""

    log: EventLog
    topic: str
    ledger: DeliveryLedger
    runs: list[str] = field(default_factory=lambda: [f"run-{uuid.uuid4().hex[:10]}" for _ in range(6)])
    events_per_append: int = 6
    interval: float = 0.05
    appended: int = 0
    """Events acknowledged."""
    points: int = 0
    """Metric points in the acknowledged events."""
    _seq: dict[str, int] = field(default_factory=dict)

    def next_events(self) -> list[dict[str, Any]]:
        """The next events to append (seq numbers taken); not acknowledged until ``acknowledge``."""
        out = []
        for i in range(self.events_per_append):
            run_id = self.runs[i % len(self.runs)]
            seq = self._seq.get(run_id, 0)
            self._seq[run_id] = seq + 1
            points = [{"name": name, "value": seq * 0.5, "step": seq} for name in ("loss", "accuracy")]
            out.append(event("metrics.logged", run_id, {"points": points}, seq=seq, experiment="faults"))
        return out

    def acknowledge(self, events: list[dict[str, Any]]) -> None:
        """Record ``events`` as stored (the log or ingest said so)."""
        self.ledger.acknowledge_all(events, writer="feeder")
        self.appended += len(events)
        self.points += sum(len(e["payload"]["points"]) for e in events)

    async def append_once(self) -> None:
        events = self.next_events()
        await self.log.append(self.topic, [(e["run_id"].encode(), orjson.dumps(e)) for e in events])
        self.acknowledge(events)

    async def run(self, stop: asyncio.Event) -> None:
        """Append until ``stop`` is set; an append that fails is not acknowledged and is not retried."""
        while not stop.is_set():
            await self.append_once()
            await asyncio.sleep(self.interval)


async def group_lag(log: EventLog, consumer: LogConsumer, topic: str) -> int:
    """End offsets minus the group's committed offsets, summed over the topic's partitions."""
    lag = 0
    for partition, end in (await log.end_offsets(topic)).items():
        committed = await consumer.committed(TopicPartition(topic, partition)) or 0
        lag += end - committed
    return lag


async def committed_positions(consumer: LogConsumer, topic: str, partitions: int) -> dict[int, int]:
    out = {}
    for partition in range(partitions):
        out[partition] = await consumer.committed(TopicPartition(topic, partition)) or 0
    return out


def write_journal(ledger: DeliveryLedger, path: Path) -> None:
    """The ledger as a journal (the format ``DeliveryLedger.from_journal`` reads)."""
    lines = [
        orjson.dumps(
            {
                "event_id": e.event_id,
                "run_id": e.run_id,
                "seq": e.seq,
                "type": e.type,
                "writer": e.writer,
                "points": e.points,
            }
        )
        for e in ledger.events
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")


@dataclass(frozen=True)
class ProbeResult:
    """What ``clickhouse_probe`` found in the projector's ClickHouse."""

    figures: dict[str, int]
    text: str
    positions: dict[int, int]
    """next_offset per partition recorded in ``projector_offsets``."""


async def probe_clickhouse(settings: Settings, ledger: DeliveryLedger, work: Path) -> ProbeResult:
    """The checker's ClickHouse report, from a subprocess that opens the (stopped) projector's store."""
    journal = work / f"acked-{uuid.uuid4().hex[:8]}.jsonl"
    write_journal(ledger, journal)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.reliability.clickhouse_probe",
        settings.resolved_clickhouse_dsn,
        settings.clickhouse_database,
        str(journal),
        settings.projector_group,
        settings.events_topic,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0:
        raise AssertionError(f"clickhouse probe failed ({proc.returncode}): {err.decode()[-3000:]}")
    data = orjson.loads(out.splitlines()[-1])
    return ProbeResult(
        figures=data["figures"],
        text=data["text"],
        positions={int(k): int(v) for k, v in data["positions"].items()},
    )


class Tmpfs:
    """A tmpfs of a set size mounted on ``path`` (needs root): a disk that can be filled up."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.mounted = False

    def _mount(self, *args: str) -> None:
        result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise AssertionError(f"mount {' '.join(args)} failed (this test needs root): {result.stderr}")

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path))
        self.mounted = True

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.mounted = False


@contextlib.contextmanager
def ingest_server(settings: Settings) -> Iterator[tuple[str, str]]:
    """The ingest service alone (no ClickHouse) served by uvicorn in a thread: (base URL, token)."""
    from runstream.server.app import Service, create_app

    app = create_app(settings, [Service.INGEST])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="ingest-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("ingest server stopped while starting")
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", app.state.runtime.token
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until its filesystem is full (ENOSPC); the file, to delete later."""
    filler = folder / "filler.bin"
    chunk = b"\0" * (64 * 1024)
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        small = b"\0" * 512
        try:
            while True:
                out.write(small)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def integrity(path: Path) -> str:
    """SQLite's ``PRAGMA integrity_check`` of the database file at ``path`` ("ok" when sound)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
    finally:
        db.close()


class ReadOnlyCover:
    """A read-only bind mount of a folder over itself (needs root): new writes there fail with EROFS.

    Root ignores permission bits (chmod makes nothing unwritable for it), and a
    filesystem with files open for writing refuses ``remount,ro``; a read-only bind
    mount refuses every write through a path while it is in place (files already
    open keep working), and a lazy unmount lifts it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.covered = False

    def cover(self) -> None:
        run = functools.partial(subprocess.run, capture_output=True, text=True, check=False)
        for args in (["--bind", str(self.path), str(self.path)], ["-o", "remount,bind,ro", str(self.path)]):
            result = run(["mount", *args])
            if result.returncode != 0:
                self.lift()
                raise AssertionError(f"mount {' '.join(args)} failed (this test needs root): {result.stderr}")
            self.covered = True

    def lift(self) -> None:
        if self.covered:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.covered = False
