"""Load: many jobs logging at once, many live watchers, some of them slow; lag, delivery and memory.

The load of issue 7: ``--jobs`` (50) concurrent training jobs, each a run with an SDK
client of its own (``runstream.start_run`` + ``run.log``, HTTP to the ingest service,
the SDK's default 0.2 s flush interval), logging ``--metrics`` (20) metrics at ``--hz``
(10) steps per second for ``--duration`` (300) seconds: 10,000 points/s in all, from
``--job-processes`` (5) processes. ``--subscribers`` (200) websocket subscribers watch
the runs on the live gateway, of which ``--slow-fraction`` (10 %) read slowly.

It prints:

- **points logged per second**, per second of the load, against the target: on this
  2-core machine the load generator, the services and the watchers share the CPU, so
  the figure says what was achieved, not what was asked;
- **ingest -> ClickHouse lag**: from ``run.log`` of a point (SDK process, wall clock) to
  the point being visible in ClickHouse, read through the query API's runs table
  (``last_step`` of the last metric of every run, polled every ``--poll-interval`` s;
  a step became visible between two polls: the midpoint is taken, so the resolution
  is about half the interval). It includes the SDK's flush interval;
- **delivery to fast subscribers** without and with the slow ones: from ``run.log`` of
  the newest point of an event (its envelope ``ts``) to the subscriber process reading
  the frame holding it (``data_received``; same wall clock, one machine), one sample per
  (subscriber, event); the same from the event's oldest point (which waited for the
  SDK's flush); and what the slow subscribers themselves saw. The first half of the
  load runs with the fast subscribers alone; at half time the slow ones connect.
- **memory (RSS) of every service process** every ``--sample-interval`` s, printed as a
  series, with its flatness: the median of the last window over the median of the
  first (a window is a fifth of the load, at most 60 s; 1.0 is flat);
- the query API's runs-table latency under the load, and how long the projection
  took to catch up once the load stopped; whether every point logged is in ClickHouse.

Fast subscribers watch one run each (spread over the runs, ``snapshot: false``, every
event). A slow subscriber is a dashboard over ``--slow-runs`` (20) runs reading at most
``--slow-bytes-per-s`` (64 KiB/s, about a quarter of what those runs send) through a
16 KiB receive buffer. Its backlog fills the kernel's socket buffers (a few MB on
loopback), then the gateway's queue for it (2,000 frames or 4 MiB), and the gateway
must then tell it to ``resync`` rather than hold more memory or slow the others. The
client reads that ``resync`` only after the backlog the kernel still holds (tens of
seconds at its rate), then subscribes again with its cursor, as the protocol says; a
subscriber whose connection is closed connects again and resubscribes with its cursors
(as ``runstream.live`` does). Every resync, close and reconnect is counted, and per
subscription the events missing between the first and last ``seq`` received, and the
duplicates.

Topologies (``--adapter``; ``both`` runs Kafka first, then embedded):

- ``kafka``: a real Apache Kafka broker (``infra/kafka/broker.py``, started by the
  benchmark on ``--kafka-port`` unless ``--kafka HOST:PORT`` names one), and three
  service processes: ``runstream ingest``; the projector with the query API (one
  process: the embedded ClickHouse folder is opened by one process at a time); and
  ``runstream gateway`` (reading Kafka itself; its subscribers ask for no snapshot, so
  it reads no projection; it is given a ClickHouse folder of its own).
- ``local``: ``runstream up``: every service in one process on the embedded event log
  and ClickHouse, as a single machine runs it by default.

One full run (both topologies, 5 minutes each) takes about 13 minutes.

    PYTHONPATH=. .venv/bin/python tests/bench/bench_load.py [--quick] [--duration 300] [--adapter both]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402

from tests.bench import report  # noqa: E402
from tests.bench.load_figures import LoadResult, figures_of, print_headlines  # noqa: E402
from tests.bench.load_processes import metric_names, run_ids  # noqa: E402

TOKEN = "bench-load-token"
PROCESSES = Path(__file__).resolve().parent / "load_processes.py"


# -- processes ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(argv: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen[str]:
    """A child process; a service writes to ``log``, a load process talks over stdin/stdout."""
    if log is not None:
        with log.open("w") as out:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, text=True, env=env
            )
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def expect(proc: subprocess.Popen[str], word: str) -> list[str]:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process {proc.args!r} ended (exit {proc.wait()}) before {word}")
        if line.startswith(word):
            return line.split()[1:]


def send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def stop_process(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the services ------------------------------------------------------------------------------
@dataclass
class Topology:
    """Running Runstream services: where to reach them, and their processes by service name."""

    adapter: str
    ingest_url: str
    query_url: str
    gateway_port: int
    services: dict[str, subprocess.Popen[str]]
    logs: dict[str, Path]
    infra: dict[str, int] = field(default_factory=dict)
    """Other processes whose memory is sampled too (the Kafka broker), by name."""

    def pids(self) -> dict[str, int]:
        return {**{name: proc.pid for name, proc in self.services.items()}, **self.infra}

    def stop(self) -> None:
        for proc in self.services.values():
            stop_process(proc)


def service_env(work: Path, kafka: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update(
        PYTHONPATH=str(ROOT),
        RUNSTREAM_TOKEN=TOKEN,
        RUNSTREAM_TOPIC_PREFIX=f"load{os.getpid()}-{work.name}",
        RUNSTREAM_HOST="127.0.0.1",
    )
    if kafka:
        env["RUNSTREAM_KAFKA"] = kafka
    return env


def start_service(
    name: str, argv: list[str], port: int, data: Path, env: dict[str, str], work: Path
) -> tuple[subprocess.Popen[str], Path]:
    data.mkdir(parents=True)
    log = work / f"{name.replace(' ', '_').replace('+', '_')}.log"
    own = {**env, "RUNSTREAM_PORT": str(port), "RUNSTREAM_DATA_DIR": str(data)}
    return spawn([sys.executable, *argv], own, log), log


def cli(command: str) -> list[str]:
    return ["-m", "runstream.cli.main", command]


def start_topology(adapter: str, work: Path, kafka: str | None) -> Topology:
    env = service_env(work, kafka if adapter == "kafka" else None)
    services: dict[str, subprocess.Popen[str]] = {}
    logs: dict[str, Path] = {}
    ports: dict[str, int] = {}
    if adapter == "local":
        plan = {"runstream up": cli("up")}
    else:
        plan = {
            "ingest": cli("ingest"),
            "projector+query": [str(PROCESSES), "serve", "--services", "projector,query"],
            "gateway": cli("gateway"),
        }
    for name, argv in plan.items():
        ports[name] = free_port()
        data = work / name.replace(" ", "_").replace("+", "_")
        services[name], logs[name] = start_service(name, argv, ports[name], data, env, work)
    topology = Topology(
        adapter=adapter,
        ingest_url=f"http://127.0.0.1:{ports['runstream up' if adapter == 'local' else 'ingest']}",
        query_url=f"http://127.0.0.1:{ports['runstream up' if adapter == 'local' else 'projector+query']}",
        gateway_port=ports["runstream up" if adapter == "local" else "gateway"],
        services=services,
        logs=logs,
    )
    try:
        for name, port in ports.items():
            wait_healthy(name, port, services[name], logs[name])
    except BaseException:
        topology.stop()
        raise
    return topology


def wait_healthy(name: str, port: int, proc: subprocess.Popen[str], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{name} not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def load_broker_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runstream_kafka_broker", ROOT / "infra/kafka/broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def kafka_broker(args: argparse.Namespace, work: Path) -> Iterator[tuple[str, int | None]]:
    """The broker named by ``--kafka``, or one of the benchmark's own (stopped at the end)."""
    if args.kafka:
        yield args.kafka, None
        return
    broker = load_broker_module()
    data = work / "kafka"
    port = args.kafka_port or free_port()
    controller = args.kafka_controller_port or free_port()
    bootstrap = broker.start(port=port, controller_port=controller, data_dir=data, quiet=True)
    try:
        pid = int((data / broker.PID_FILE).read_text().strip())
        yield bootstrap, pid
    finally:
        broker.stop(port=port, data_dir=data, quiet=True)


# -- sampling while the load runs --------------------------------------------------------------
class Sampler(threading.Thread):
    """RSS of every process every ``interval`` seconds, and CPU seconds at start and stop."""

    def __init__(self, pids: dict[str, int], interval: float) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.samples: list[tuple[float, dict[str, int | None]]] = []
        self.cpu_start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.cpu_end: dict[str, float] = {}
        self.started_at = time.time()
        self.stopped_at = self.started_at
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append((time.time(), {name: rss_kib(pid) for name, pid in self.pids.items()}))
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.stopped_at = time.time()
        self.cpu_end = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def cpu_cores(self) -> dict[str, float]:
        seconds = max(self.stopped_at - self.started_at, 1e-9)
        return {name: (self.cpu_end[name] - self.cpu_start[name]) / seconds for name in self.pids}


class Poller(threading.Thread):
    """Polls the runs table for the last visible step of the last metric of every run."""

    def __init__(self, topology: Topology, experiment: str, metric: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url = f"{topology.query_url}/api/v1/experiments/{experiment}/runs"
        self.column = f"last_step({metric})"
        self.interval = interval
        self.polls: list[tuple[float, float, dict[str, int]]] = []
        self.failures = 0
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
            while not self.halt.is_set():
                sent = time.time()
                try:
                    response = client.get(self.url, params={"columns": self.column, "limit": 500})
                except httpx.HTTPError:
                    self.failures += 1
                    self.halt.wait(self.interval)
                    continue
                done = time.time()
                if response.status_code == 200:
                    steps = {
                        run["run_id"]: int(run["columns"][self.column])
                        for run in response.json()["runs"]
                        if run["columns"].get(self.column) is not None
                    }
                    with self.lock:
                        self.polls.append((sent, done, steps))
                self.halt.wait(max(0.0, self.interval - (done - sent)))

    def latest(self) -> dict[str, int]:
        with self.lock:
            return dict(self.polls[-1][2]) if self.polls else {}

    def stop(self) -> None:
        self.halt.set()
        self.join()


# -- one load ----------------------------------------------------------------------------------
Plan = list[dict[str, Any]]
"""Subscribers of one process: ``{"index": i, "runs": [run ids]}`` each."""


def subscriber_plans(runs: list[str], args: argparse.Namespace) -> tuple[list[Plan], Plan]:
    """Fast subscribers (one run each, spread), split over processes; slow ones over ``slow_runs``."""
    slow_count = round(args.subscribers * args.slow_fraction)
    fast_count = args.subscribers - slow_count
    fast = [{"index": i, "runs": [runs[i % len(runs)]]} for i in range(fast_count)]
    processes = max(1, min(args.subscriber_processes, fast_count))
    fast_plans = [fast[p::processes] for p in range(processes)] if fast else []
    per_slow = min(args.slow_runs, len(runs))
    slow = [
        {"index": fast_count + j, "runs": [runs[(j * per_slow + k) % len(runs)] for k in range(per_slow)]}
        for j in range(slow_count)
    ]
    return fast_plans, slow


def subscribers_process(
    plan: Plan, topology: Topology, work: Path, name: str, args: argparse.Namespace, *, slow: bool
) -> subprocess.Popen[str]:
    path = work / f"{name}-plan.json"
    path.write_bytes(orjson.dumps(plan))
    argv = [
        sys.executable, str(PROCESSES), "subscribers", "--port", str(topology.gateway_port),
        "--token", TOKEN, "--plan", str(path), "--out", str(work / f"{name}-received.json"),
        "--slow-bytes-per-s", str(args.slow_bytes_per_s),
    ] + (["--slow"] if slow else [])  # fmt: skip
    return spawn(argv, {**os.environ, "PYTHONPATH": str(ROOT)})


def job_processes(
    topology: Topology, experiment: str, work: Path, args: argparse.Namespace
) -> list[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update(
        PYTHONPATH=str(ROOT),
        RUNSTREAM_URI=topology.ingest_url,
        RUNSTREAM_API=topology.query_url,
        RUNSTREAM_TOKEN=TOKEN,
        RUNSTREAM_DATA_DIR=str(work / "sdk"),
    )
    count = max(1, min(args.job_processes, args.jobs))
    share = [args.jobs // count + (1 if i < args.jobs % count else 0) for i in range(count)]
    procs, first = [], 0
    for i, runs in enumerate(share):
        procs.append(
            spawn(
                [sys.executable, str(PROCESSES), "jobs", "--experiment", experiment, "--first", str(first),
                 "--runs", str(runs), "--metrics", str(args.metrics), "--hz", str(args.hz),
                 "--duration", str(args.duration), "--spool-dir", str(work / "spool"),
                 "--out", str(work / f"jobs-{i}.json")],
                env,
            )
        )  # fmt: skip
        first += runs
    return procs


def collect(proc: subprocess.Popen[str], stop: bool = False) -> dict[str, Any]:
    if stop:
        send(proc, "STOP")
    result: dict[str, Any] = orjson.loads(Path(expect(proc, "DONE")[0]).read_bytes())
    proc.wait(60)
    return result


def stored_points(topology: Topology, experiment: str, metrics: list[str]) -> int | None:
    """Points of the load in ClickHouse, counted through the runs table (at most 20 metrics)."""
    columns = [f"count({m})" for m in metrics[:20]]
    response = httpx.get(
        f"{topology.query_url}/api/v1/experiments/{experiment}/runs",
        params={"columns": ",".join(columns), "limit": 500},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=120,
    )
    if response.status_code != 200:
        return None
    return sum(int(run["columns"][c] or 0) for run in response.json()["runs"] for c in columns)


def run_load(topology: Topology, args: argparse.Namespace, work: Path) -> LoadResult:
    experiment = f"load-{topology.adapter}-{int(time.time())}"
    runs = run_ids(experiment, args.jobs)
    metrics = metric_names(args.metrics)
    fast_plans, slow_plan = subscriber_plans(runs, args)
    children: list[subprocess.Popen[str]] = []
    try:
        fast_procs = [
            subscribers_process(plan, topology, work, f"fast{i}", args, slow=False)
            for i, plan in enumerate(fast_plans)
        ]
        children += fast_procs
        for proc in fast_procs:
            expect(proc, "SUBSCRIBED")
        jobs = job_processes(topology, experiment, work, args)
        children += jobs
        for proc in jobs:
            expect(proc, "READY")
        sampler = Sampler(topology.pids(), args.sample_interval)
        poller = Poller(topology, experiment, metrics[-1], args.poll_interval)
        sampler.start()
        poller.start()
        start = time.time() + 1.0
        for proc in jobs:
            send(proc, f"GO {start}")
        slow_joined = start + args.duration * 0.5
        time.sleep(max(0.0, slow_joined - time.time()))
        slow_proc = None
        if slow_plan:
            slow_joined = time.time()
            slow_proc = subscribers_process(slow_plan, topology, work, "slow", args, slow=True)
            children.append(slow_proc)
            expect(slow_proc, "SUBSCRIBED")
        job_results = [collect(proc) for proc in jobs]
        end = start + args.duration
        steps = {run: len(times) for job in job_results for run, times in job["logged"].items()}
        drained = None
        deadline = time.time() + args.drain_timeout
        while time.time() < deadline:
            latest = poller.latest()
            if all(latest.get(run, -1) >= count - 1 for run, count in steps.items()):
                drained = poller.polls[-1][1]
                break
            time.sleep(args.poll_interval)
        poller.stop()
        sampler.stop()
        fast = [collect(proc, stop=True) for proc in fast_procs]
        slow = collect(slow_proc, stop=True) if slow_proc is not None else None
        stored = stored_points(topology, experiment, metrics)
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return LoadResult(
        adapter=topology.adapter,
        start=start,
        slow_joined=slow_joined,
        end=end,
        drained=drained,
        jobs=job_results,
        polls=poller.polls,
        fast=fast,
        slow=slow,
        memory=sampler.samples,
        cpu=sampler.cpu_cores(),
        stored_points=stored,
        poll_failures=poller.failures,
    )


# -- main --------------------------------------------------------------------------------------
def topology_description(adapter: str) -> str:
    if adapter == "local":
        return "runstream up: ingest, projector, query, gateway in one process; embedded log and ClickHouse"
    return (
        "Kafka broker + 3 processes: runstream ingest | projector with query API (embedded ClickHouse) "
        "| runstream gateway (tails Kafka; no snapshots asked)"
    )


def main() -> None:
    parser = report.common_parser(__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--jobs", type=int, default=50, help="concurrent training jobs (runs)")
    parser.add_argument("--metrics", type=int, default=20, help="metrics per job")
    parser.add_argument("--hz", type=float, default=10.0, help="steps per second per job")
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--slow-fraction", type=float, default=0.1)
    parser.add_argument("--slow-runs", type=int, default=20, help="runs each slow subscriber watches")
    parser.add_argument("--slow-bytes-per-s", type=float, default=64 * 1024)
    parser.add_argument("--adapter", choices=["kafka", "local", "both"], default="both")
    parser.add_argument("--kafka", default=None, help="HOST:PORT of a running broker (else one is started)")
    parser.add_argument("--kafka-port", type=int, default=None, help="port of the broker started (free one)")
    parser.add_argument("--kafka-controller-port", type=int, default=None)
    parser.add_argument("--job-processes", type=int, default=5)
    parser.add_argument("--subscriber-processes", type=int, default=2, help="processes of fast subscribers")
    parser.add_argument("--warmup", type=float, default=5.0, help="first seconds not counted in latencies")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--sample-interval", type=float, default=2.0)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--work-dir", default=None, help="keep data and logs here (default: a temp dir)")
    args = report.parse_args(parser)
    if args.quick:
        args.duration, args.jobs, args.subscribers, args.warmup = 20.0, 10, 40, 3.0
    repeats = args.repeats or 1
    adapters = ["kafka", "local"] if args.adapter == "both" else [args.adapter]
    figures: list[Any] = []
    summaries: list[Any] = []
    began = time.monotonic()
    with contextlib.ExitStack() as keep:
        if args.work_dir:
            work = Path(args.work_dir)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(keep.enter_context(tempfile.TemporaryDirectory(prefix="bench-load-")))
        for adapter in adapters:
            prefix = f"{adapter}: " if len(adapters) > 1 else ""
            results = []
            with contextlib.ExitStack() as stack:
                kafka, broker_pid = None, None
                if adapter == "kafka":
                    kafka, broker_pid = stack.enter_context(kafka_broker(args, work))
                for i in range(repeats):
                    load_dir = work / f"{adapter}-{i}"
                    load_dir.mkdir()
                    topology = start_topology(adapter, load_dir, kafka)
                    if adapter == "kafka" and broker_pid is not None:
                        topology.infra["kafka broker (JVM)"] = broker_pid
                    try:
                        what = topology_description(adapter)
                        print(f"{adapter}: load {i + 1}/{repeats}: {what}", flush=True)
                        results.append(run_load(topology, args, load_dir))
                    finally:
                        topology.stop()
            adapter_figures, adapter_summaries = figures_of(results, args, prefix)
            print_headlines(adapter_figures, adapter_summaries)  # now: the next topology takes minutes
            figures += adapter_figures
            summaries += adapter_summaries
    extra = {
        "machine": report.machine(),
        "scale": {
            "jobs": args.jobs, "metrics": args.metrics, "hz": args.hz, "duration_s": args.duration,
            "subscribers": args.subscribers, "slow_fraction": args.slow_fraction,
            "slow_runs": args.slow_runs, "slow_bytes_per_s": args.slow_bytes_per_s,
            "repeats": repeats, "warmup_s": args.warmup,
        },
        "topologies": {a: topology_description(a) for a in adapters},
        "loads": summaries,
        "wall_s": round(time.monotonic() - began, 1),
    }  # fmt: skip
    report.emit("load", figures, extra)


if __name__ == "__main__":
    main()
