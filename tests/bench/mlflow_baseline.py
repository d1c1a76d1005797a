"""MLflow as the baseline: its own venv, a real tracking server, client-side measurements.

MLflow never enters Runstream's venv. :func:`ensure_mlflow_venv` installs a pinned
MLflow into ``.cache/bench/mlflow-venv`` (once; a marker file records it),
:class:`MlflowServer` runs ``mlflow server`` on SQLite with one worker on a free
loopback port, and the measurements run in ``mlflow_worker.py`` under the MLflow venv's
interpreter (:func:`run_worker`), which answers with JSON. Typical use from a
``bench_*.py``::

    from tests.bench.mlflow_baseline import MlflowServer, measure_log_metric

    with MlflowServer() as mlflow:
        base = measure_log_metric(mlflow, n=1000, repeats=3)
    figure("log one point", "ms", runstream_ms, higher_is_better=False,
           baseline_name="mlflow", baseline_samples=latency_ms(base))

Run alone, it measures MLflow at a small scale and prints the figures::

    .venv/bin/python tests/bench/mlflow_baseline.py [--quick] [--fraction 0.1] [--runs N] ...
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, cast

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # run as a script: make `tests.bench` importable
    sys.path.insert(0, str(ROOT))

from tests.bench.report import common_parser, emit, figure, machine, parse_args  # noqa: E402

MLFLOW_VERSION = "3.17.2"  # 3.18.0 needs mlflow-skinny==3.18.0, which the index here lacks
MLFLOW_VENV = ROOT / ".cache" / "bench" / "mlflow-venv"
WORKER = Path(__file__).resolve().with_name("mlflow_worker.py")
# No telemetry (there is no route out anyway) and no job runner: MLflow 3's server
# otherwise starts a huey job runner with seven consumer processes (GenAI jobs) that a
# tracking benchmark never uses and that would compete for the same two cores.
MLFLOW_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


def _log(message: str) -> None:
    print(f"[mlflow-baseline] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- venv


def mlflow_python(venv: Path = MLFLOW_VENV) -> Path:
    return venv / "bin" / "python"


def ensure_mlflow_venv(venv: Path = MLFLOW_VENV, version: str = MLFLOW_VERSION) -> Path:
    """Create ``venv`` with ``mlflow==version`` unless a marker says it is there already."""
    marker = venv / f".installed-mlflow-{version}"
    if marker.exists() and mlflow_python(venv).exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two benchmarks started at once install once
        if marker.exists() and mlflow_python(venv).exists():
            return venv
        started = time.perf_counter()
        _log(f"installing mlflow=={version} into {venv} (once; about 1.5 minutes, 850 MB)")
        if not mlflow_python(venv).exists():
            base = os.environ.get("PYTHON", "python3")
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(mlflow_python(venv)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"mlflow=={version}",
            ],
            check=True,
        )
        seconds = time.perf_counter() - started
        marker.write_text(json.dumps({"mlflow": version, "install_seconds": round(seconds, 1)}) + "\n")
        _log(f"mlflow=={version} installed in {seconds:.0f}s")
    return venv


# ---------------------------------------------------------------------------- worker


def run_worker(
    command: Mapping[str, Any], *, venv: Path | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Run one ``mlflow_worker.py`` command under the MLflow venv; its JSON answer.

    The worker's progress goes to this process's stderr; its stdout's last line is the
    answer. Raises ``RuntimeError`` when the worker fails.
    """
    python = mlflow_python(venv if venv is not None else ensure_mlflow_venv())
    proc = subprocess.run(
        [str(python), "-P", str(WORKER)],
        input=json.dumps(dict(command)),
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **MLFLOW_ENV},
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mlflow worker {command.get('cmd')!r} exited with {proc.returncode}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"mlflow worker {command.get('cmd')!r} printed no result")
    result = json.loads(lines[-1])
    if not isinstance(result, dict):
        raise TypeError(f"mlflow worker {command.get('cmd')!r} answered {result!r}")
    return result


# ---------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MlflowServer:
    """``mlflow server`` on SQLite in a temporary directory, for one ``with`` block.

    Started in a process group of its own (the CLI forks uvicorn) and stopped as a group:
    SIGTERM, then SIGKILL after ``stop_timeout`` seconds.
    """

    def __init__(
        self,
        *,
        workers: int = 1,
        port: int | None = None,
        data_dir: Path | None = None,
        venv: Path | None = None,
        startup_timeout: float = 180.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.workers = workers
        self.port = port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._venv = venv
        self._given_dir = data_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.data_dir: Path | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the MLflow server is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def venv(self) -> Path:
        if self._venv is None:
            self._venv = ensure_mlflow_venv()
        return self._venv

    def start(self) -> None:
        venv = self.venv
        if self._given_dir is not None:
            self.data_dir = self._given_dir
            self.data_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="runstream-bench-mlflow-")
            self.data_dir = Path(self._tmp.name)
        if self.port is None:
            self.port = free_port()
        command = [
            str(venv / "bin" / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.data_dir / 'mlflow.db'}",
            "--default-artifact-root",
            str(self.data_dir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        self._log_file = open(self.data_dir / "server.log", "wb")  # noqa: SIM115 (closed in stop)
        started = time.perf_counter()
        self._proc = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.data_dir,
            env={**os.environ, **MLFLOW_ENV},
            start_new_session=True,
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - started
        _log(f"mlflow server up at {self.url} in {self.startup_seconds:.1f}s (workers={self.workers})")

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"mlflow server not healthy after {self.startup_timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self.data_dir is None or not (self.data_dir / "server.log").exists():
            return ""
        text = (self.data_dir / "server.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            pgid = proc.pid  # start_new_session: the CLI leads its own group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.stop_timeout)
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(pgid):
                _log("mlflow server did not stop on SIGTERM; killing its process group")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def worker(self, command: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """:func:`run_worker` against this server."""
        return run_worker({**command, "tracking_uri": self.url}, venv=self.venv, timeout=timeout)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit inside the block, so ``with MlflowServer()`` cleans up."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------- measurements


class LogMetricResult(TypedDict):
    n: int
    repeats: int
    warmup: int
    latency_ns: list[int]  # one per call, every repeat
    points_per_s: list[float]  # one per repeat


class LogBatchResult(TypedDict):
    n: int
    batch: int
    repeats: int
    seconds: list[float]  # end to end: first log_batch until get_metric_history has all n
    write_seconds: list[float]  # the log_batch calls alone
    points_per_s: list[float]  # n / seconds


class Scale(TypedDict):
    runs: int
    metrics: int
    points: int
    series: int


class LoadResult(TypedDict):
    experiment_id: str
    series_run_id: str | None
    run_ids_sample: list[str]  # the first 10 runs, for the compare query
    requested: Scale
    loaded: Scale  # less than requested when max_seconds stopped the load
    complete: bool
    metric_names: list[str]
    batch: int
    concurrency: int
    log_batch_calls: int
    seconds: float
    series_seconds: float
    runs_seconds: float
    points_total: int
    points_per_s: float


class QueryTiming(TypedDict):
    samples_ms: list[float]
    cold_ms: float | None  # the first call, before any warm-up (None without one)
    rows: int


class QueriesResult(TypedDict):
    repeats: int
    warmup: int
    # search_runs, history_long_series, history_sampled, compare (those that applied)
    queries: dict[str, QueryTiming]


@dataclass(frozen=True)
class LoadScale:
    """R runs x M metrics x P points, plus one run with one ``loss`` series of S points."""

    runs: int
    metrics: int = 5
    points: int = 200
    series: int = 0
    batch: int = 1000
    concurrency: int = 1  # client threads; more helps only with several server workers
    max_seconds: float | None = None  # stop starting runs after this; the result says how far it got

    def fraction(self, f: float) -> LoadScale:
        """This scale with runs and the long series multiplied by ``f``."""
        return replace(self, runs=max(1, round(self.runs * f)), series=round(self.series * f))


FULL_SCALE = LoadScale(runs=10_000, metrics=5, points=200, series=1_000_000)


def measure_log_metric(
    server: MlflowServer, n: int, *, repeats: int = 1, warmup: int = 20
) -> LogMetricResult:
    """``n`` single ``log_metric`` calls per repeat, each on a new run."""
    command = {"cmd": "log_metric", "n": n, "repeats": repeats, "warmup": warmup}
    return cast(LogMetricResult, server.worker(command))


def measure_log_batch(server: MlflowServer, n: int, *, batch: int = 1000, repeats: int = 3) -> LogBatchResult:
    """``n`` points in ``log_batch`` calls of ``batch``, read back in full, per repeat."""
    command = {"cmd": "log_batch", "n": n, "batch": batch, "repeats": repeats}
    return cast(LogBatchResult, server.worker(command))


def load_dataset(server: MlflowServer, scale: LoadScale) -> LoadResult:
    """Load ``scale`` into one new experiment with ``log_batch``; how long it took."""
    return cast(LoadResult, server.worker({"cmd": "load", **asdict(scale)}))


def measure_queries(
    server: MlflowServer,
    load: LoadResult,
    *,
    repeats: int = 5,
    warmup: int = 1,
    compare_runs: int = 10,
    compare_metrics: int = 3,
    sampled_points: int = 1000,
    history_repeats: int | None = None,
) -> QueriesResult:
    """Time the read paths on a loaded dataset (samples in ms):

    - ``search_runs``: ``search_runs([experiment], order_by=["metrics.loss ASC"],
      max_results=100)`` (MLflow orders by each run's latest value),
    - ``history_long_series``: ``get_metric_history`` of the S-point series (MLflow's
      client pages through it 25,000 points a request),
    - ``history_sampled``: MLflow's chart endpoint ``get-history-bulk-interval`` on that
      series with ``max_results=sampled_points`` (its downsampled read),
    - ``compare``: ``get_metric_history`` for ``compare_runs`` runs x ``compare_metrics``.

    ``history_repeats`` (default ``repeats``) for the full history of the long series
    alone: it takes minutes per call at 1,000,000 points.
    """
    command = {
        "cmd": "queries",
        "experiment_id": load["experiment_id"],
        "series_run_id": load["series_run_id"],
        "compare_run_ids": load["run_ids_sample"][:compare_runs],
        "compare_metrics": load["metric_names"][:compare_metrics],
        "repeats": repeats,
        "warmup": warmup,
        "sampled_points": sampled_points,
        "history_repeats": history_repeats,
    }
    return cast(QueriesResult, server.worker(command))


def latency_ms(result: LogMetricResult) -> list[float]:
    """Per-call ``log_metric`` latencies in ms."""
    return [ns / 1e6 for ns in result["latency_ns"]]


def mlflow_version(server: MlflowServer) -> str:
    return str(server.worker({"cmd": "version"})["mlflow"])


# ---------------------------------------------------------------------------- __main__

QUERY_LABELS = {
    "search_runs": "search_runs top 100 by loss",
    "history_long_series": "metric history of the long series",
    "history_sampled": "downsampled history of the long series",
    "compare": "compare: history of runs x metrics",
}


def mlflow_figures(
    log_metric: LogMetricResult, log_batch: LogBatchResult, load: LoadResult, queries: QueriesResult
) -> list[dict[str, Any]]:
    """MLflow's own figures (``system="mlflow"``, no baseline)."""
    figures = [
        figure("log_metric latency", "ms", latency_ms(log_metric), higher_is_better=False, system="mlflow"),
        figure(
            "log_metric throughput",
            "points/s",
            log_metric["points_per_s"],
            higher_is_better=True,
            system="mlflow",
        ),
        figure(
            f"log_batch {log_batch['n']} points end to end",
            "points/s",
            log_batch["points_per_s"],
            higher_is_better=True,
            system="mlflow",
        ),
        figure(
            "load dataset",
            "s",
            [load["seconds"]],
            higher_is_better=False,
            system="mlflow",
            note="{runs} runs x {metrics} metrics x {points} points + {series}-point series".format(
                **load["loaded"]
            ),
        ),
        figure("load throughput", "points/s", [load["points_per_s"]], higher_is_better=True, system="mlflow"),
    ]
    for key, timing in queries["queries"].items():
        figures.append(
            figure(
                QUERY_LABELS.get(key, key),
                "ms",
                timing["samples_ms"],
                higher_is_better=False,
                system="mlflow",
                note=f"{timing['rows']} rows; cold call {timing['cold_ms']:.1f} ms"
                if timing["cold_ms"] is not None
                else f"{timing['rows']} rows",
            )
        )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = common_parser("Measure MLflow's tracking server (the baseline) and print its figures.")
    parser.add_argument("--log-metric-n", type=int, default=300, help="log_metric calls per repeat")
    parser.add_argument("--log-batch-n", type=int, default=20_000, help="points per log_batch repeat")
    parser.add_argument("--runs", type=int, default=100, help="runs to load")
    parser.add_argument("--metrics", type=int, default=5, help="metrics per run")
    parser.add_argument("--points", type=int, default=200, help="points per metric")
    parser.add_argument("--series", type=int, default=50_000, help="points of the long series")
    parser.add_argument("--fraction", type=float, default=None, help="load this fraction of the full scale")
    parser.add_argument("--workers", type=int, default=1, help="mlflow server --workers")
    parser.add_argument("--concurrency", type=int, default=1, help="client threads while loading")
    parser.add_argument("--max-load-seconds", type=float, default=None, help="stop loading runs after this")
    args = parse_args(parser, argv)
    repeats: int = args.repeats or (2 if args.quick else 3)
    if args.fraction is not None:
        scale = FULL_SCALE.fraction(args.fraction)
    elif args.quick:
        scale = LoadScale(runs=20, series=5_000)
    else:
        scale = LoadScale(runs=args.runs, metrics=args.metrics, points=args.points, series=args.series)
    scale = replace(scale, concurrency=args.concurrency, max_seconds=args.max_load_seconds)
    log_metric_n = 50 if args.quick else args.log_metric_n
    log_batch_n = 2_000 if args.quick else args.log_batch_n

    with stop_on_sigterm():
        started = time.perf_counter()
        venv = ensure_mlflow_venv()
        with MlflowServer(workers=args.workers, venv=venv) as server:
            version = mlflow_version(server)
            lm = measure_log_metric(server, log_metric_n, repeats=repeats)
            lb = measure_log_batch(server, log_batch_n, repeats=repeats)
            _log(f"loading {scale}")
            load = load_dataset(server, scale)
            _log(f"loaded {load['loaded']} in {load['seconds']:.1f}s")
            queries = measure_queries(server, load, repeats=max(repeats, 3))
            startup = server.startup_seconds
    emit(
        "mlflow_baseline",
        mlflow_figures(lm, lb, load, queries),
        extra={
            "mlflow": {
                "version": version,
                "backend": "sqlite",
                "workers": args.workers,
                "server_startup_s": round(startup or 0.0, 2),
            },
            "scale": {
                "requested": load["requested"],
                "loaded": load["loaded"],
                "complete": load["complete"],
                "load_seconds": round(load["seconds"], 2),
                "series_seconds": round(load["series_seconds"], 2),
                "runs_seconds": round(load["runs_seconds"], 2),
                "concurrency": load["concurrency"],
            },
            "repeats": repeats,
            "log_metric_calls": log_metric_n,
            "log_batch_points": log_batch_n,
            "machine": machine(),
            "wall_seconds": round(time.perf_counter() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
