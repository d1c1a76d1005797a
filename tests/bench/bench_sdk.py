"""The producer SDK against MLflow's client: cost on the training loop, and points/s end to end.

Prints, in one run:

- the cost of ``run.log()`` on the calling thread (median and p99, ns per call, timer
  included), against MLflow's ``log_metric`` (one HTTP call per point) from the same
  machine: the cost an MLflow training loop pays per point;
- sustained end-to-end points/s from the SDK until the query API has projected every
  point (``/api/v1/projection/wait`` answers ready, then the count is checked), on the
  embedded defaults (local log, in-process ClickHouse) and on a real Kafka broker
  (``kafka://`` transport straight to the broker), against MLflow ``log_batch`` of
  1,000 points until ``get_metric_history`` returns them all.

Runstream runs as a separate ``runstream up`` process, as a user would run it; the
SDK runs in this process. MLflow runs in its own virtualenv (``mlflow_baseline``).

    .venv/bin/python tests/bench/bench_sdk.py            # default scale
    .venv/bin/python tests/bench/bench_sdk.py --quick    # smoke run
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

import runstream  # noqa: E402
from runstream.sdk.client import Client, set_client  # noqa: E402
from runstream.sdk.config import ClientConfig  # noqa: E402
from tests.bench import mlflow_baseline, report  # noqa: E402
from tests.conftest import load_broker_module  # noqa: E402

TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def runstream_server(data_dir: Path, kafka: str | None = None) -> Iterator[str]:
    """``runstream up`` in a process of its own; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "RUNSTREAM_DATA_DIR": str(data_dir),
        "RUNSTREAM_TOKEN": TOKEN,
        "RUNSTREAM_PORT": str(port),
        "RUNSTREAM_TOPIC_PREFIX": f"bench{port}",
    }
    if kafka:
        env["RUNSTREAM_KAFKA"] = kafka
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/runstream"), "up"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"runstream up did not start: {(data_dir / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def client_for(base: str, spool: Path, uri: str | None = None, topic_prefix: str = "runstream") -> Client:
    config = ClientConfig(
        uri=uri or base, api=base, token=TOKEN, spool_dir=spool, topic_prefix=topic_prefix, flush_interval=0.2
    )
    return Client(config)


def log_cost(base: str, spool: Path, calls: int, repeats: int) -> tuple[list[float], list[float]]:
    """Per repeat: median and p99 ns of one ``run.log()`` call (perf_counter_ns around each)."""
    client = client_for(base, spool)
    old = set_client(client)
    medians: list[float] = []
    p99s: list[float] = []
    try:
        for r in range(repeats):
            run = runstream.start_run("bench-log-cost", capture_output=False, snapshot=False)
            samples = [0] * calls
            clock = time.perf_counter_ns
            log = run.log
            for i in range(calls):
                t0 = clock()
                log("loss", 0.5, i)
                samples[i] = clock() - t0
            run.complete()
            assert run.flush(120), client.last_error
            stats = report.Stats.of(samples)
            medians.append(stats.median)
            p99s.append(stats.p99)
            print(
                f"  run.log() repeat {r + 1}: median {stats.median:.0f} ns, p99 {stats.p99:.0f} ns",
                flush=True,
            )
    finally:
        client.close(timeout=60)
        set_client(old)
    return medians, p99s


def end_to_end(
    base: str, spool: Path, points: int, repeats: int, uri: str | None, prefix: str
) -> list[float]:
    """Points/s from the first ``run.log()`` until the query API has every point projected."""
    client = client_for(base, spool, uri, prefix)
    old = set_client(client)
    rates: list[float] = []
    try:
        for r in range(repeats):
            run = runstream.start_run("bench-e2e", capture_output=False, snapshot=False)
            t0 = time.perf_counter()
            for i in range(points):
                run.log("loss", 1.0 / (i + 1), i)
            assert run.flush(300), client.last_error
            assert client.reader().wait_projected(dict(run._ref.acked), 300), "projection did not catch up"
            elapsed = time.perf_counter() - t0
            got = httpx.get(
                f"{base}/api/v1/runs/{run.run_id}/metrics",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=120,
            ).json()["metrics"]["loss"]
            if len(got) != points:
                raise RuntimeError(f"expected {points} points in the query API, found {len(got)}")
            rates.append(points / elapsed)
            print(
                f"  end to end repeat {r + 1}: {points} points in {elapsed:.2f} s"
                f" = {points / elapsed:,.0f}/s",
                flush=True,
            )
            run.complete()
    finally:
        client.close(timeout=60)
        set_client(old)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = report.common_parser(__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000, help="points per end-to-end repeat")
    parser.add_argument("--calls", type=int, default=200_000, help="run.log() calls per cost repeat")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--no-kafka", action="store_true")
    args = report.parse_args(parser, argv)
    repeats = args.repeats or (2 if args.quick else 5)
    points = 20_000 if args.quick else args.points
    calls = 20_000 if args.quick else args.calls
    figures: list[dict[str, Any]] = []
    extra: dict[str, Any] = {
        "machine": report.machine(),
        "points_per_repeat": points,
        "calls_per_repeat": calls,
    }

    mlflow_latency: list[float] | None = None
    mlflow_batch: list[float] | None = None
    if not args.no_mlflow:
        print("MLflow: starting its tracking server (SQLite store)", flush=True)
        with mlflow_baseline.MlflowServer() as server:
            single = mlflow_baseline.measure_log_metric(server, 300 if args.quick else 2000)
            mlflow_latency = [float(ns) for ns in single["latency_ns"]]
            batch = mlflow_baseline.measure_log_batch(
                server, 20_000 if args.quick else 100_000, batch=1000, repeats=repeats
            )
            mlflow_batch = batch["points_per_s"]
            extra["mlflow_version"] = mlflow_baseline.mlflow_version(server)
        print(
            f"  MLflow log_metric median {report.Stats.of(mlflow_latency).median / 1e6:.2f} ms per point",
            flush=True,
        )
        print(f"  MLflow log_batch median {report.Stats.of(mlflow_batch).median:,.0f} points/s", flush=True)

    with tempfile.TemporaryDirectory(prefix="rs-bench-sdk-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "embedded").mkdir()
        with runstream_server(tmp_path / "embedded") as base:
            print("Runstream embedded: run.log() cost", flush=True)
            medians, p99s = log_cost(base, tmp_path / "spool-cost", calls, repeats)
            print("Runstream embedded: end to end", flush=True)
            embedded = end_to_end(base, tmp_path / "spool-e2e", points, repeats, None, "runstream")
        base_kw: dict[str, Any] = {}
        if mlflow_latency is not None:
            base_kw = {"baseline_name": "mlflow log_metric (per call)", "baseline_samples": mlflow_latency}
        figures.append(report.figure("run.log() median", "ns", medians, higher_is_better=False, **base_kw))
        figures.append(
            report.figure(
                "run.log() p99",
                "ns",
                p99s,
                higher_is_better=False,
                note="per repeat p99 of per-call times; baseline: MLflow log_metric per-call latencies",
                **base_kw,
            )
        )
        batch_kw: dict[str, Any] = {}
        if mlflow_batch is not None:
            batch_kw = {"baseline_name": "mlflow log_batch(1000)", "baseline_samples": mlflow_batch}
        figures.append(
            report.figure("end to end, embedded", "points/s", embedded, higher_is_better=True, **batch_kw)
        )

        if not args.no_kafka:
            broker = load_broker_module()
            port = free_port()
            data_dir = tmp_path / "kafka"
            bootstrap = broker.start(port=port, controller_port=free_port(), data_dir=data_dir, quiet=True)
            try:
                (tmp_path / "on-kafka").mkdir()
                with runstream_server(tmp_path / "on-kafka", kafka=bootstrap) as base:
                    print("Runstream on Kafka (kafka:// transport): end to end", flush=True)
                    prefix = f"bench{base.rsplit(':', 1)[1]}"
                    on_kafka = end_to_end(
                        base, tmp_path / "spool-kafka", points, repeats, f"kafka://{bootstrap}", prefix
                    )
            finally:
                broker.stop(data_dir=data_dir, quiet=True)
            figures.append(
                report.figure("end to end, Kafka", "points/s", on_kafka, higher_is_better=True, **batch_kw)
            )

    report.emit("sdk", figures, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
