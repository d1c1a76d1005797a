"""MLflow client-side measurements, run with the MLflow venv's interpreter.

MLflow is not importable from Runstream's venv, so ``mlflow_baseline.py`` runs this file
with ``.cache/bench/mlflow-venv/bin/python -P`` and hands it one JSON command (argv[1],
or stdin when there is no argument). The result is printed as ONE JSON line on stdout;
progress and MLflow's own chatter go to stderr. Standard library + MLflow only: this
file never imports Runstream or anything from the tests.

Commands (every one needs ``tracking_uri``):

- ``{"cmd": "log_metric", "n": N, "repeats": K, "warmup": W}``: per repeat, a new run and
  N calls of ``MlflowClient().log_metric(run_id, "loss", v, step=i)``. Returns every
  call's latency (ns) and the points/s of each repeat.
- ``{"cmd": "log_batch", "n": N, "batch": 1000, "repeats": K}``: per repeat, a new run,
  N points in ``log_batch`` calls of ``batch`` Metric objects, then
  ``get_metric_history`` until all N are back. Returns end-to-end seconds and points/s.
- ``{"cmd": "load", "runs": R, "metrics": M, "points": P, "series": S, "batch": 1000,
  "max_seconds": T}``: one experiment, one run with one ``loss`` series of S points
  (when S > 0), then R runs x M metrics x P points, all with ``log_batch``. Stops
  starting new runs after T seconds (when given) and reports the scale it reached.
- ``{"cmd": "queries", "experiment_id": ..., "series_run_id": ..., "compare_run_ids":
  [...], "compare_metrics": [...], "repeats": K, "warmup": W, "sampled_points": B,
  "history_repeats": H}``:
  times ``search_runs`` ordered by ``metrics.loss``, ``get_metric_history`` of the long
  series, the compare proxy (history of every compare run x metric) and MLflow's
  downsampled chart endpoint (``get-history-bulk-interval``) on the long series.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

METRIC_NAMES = ["loss", "accuracy", "lr", "grad_norm", "val_loss", "throughput", "memory", "epoch_time"]


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient  # type: ignore[import-not-found]

    return MlflowClient(tracking_uri=tracking_uri)


def _metric(key: str, value: float, timestamp: int, step: int) -> Any:
    from mlflow.entities import Metric  # type: ignore[import-not-found]

    return Metric(key, value, timestamp, step)


def _progress(message: str) -> None:
    print(f"[mlflow-worker] {message}", file=sys.stderr, flush=True)


def _value(name: str, base: float, step: int, rng: random.Random) -> float:
    """A plausible training curve: losses fall, accuracies rise, the rest wander."""
    if name in ("loss", "val_loss"):
        return base * math.exp(-step / 60.0) + 0.01 * rng.random()
    if name == "accuracy":
        return 1.0 - 0.9 * math.exp(-step / 40.0) * base
    if name == "lr":
        return 0.001 * 0.99**step
    return base * 10.0 + rng.random()


def _new_experiment(client: Any, prefix: str) -> str:
    experiment_id: str = client.create_experiment(f"{prefix}-{uuid.uuid4().hex[:12]}")
    return experiment_id


def _new_run(client: Any, experiment_id: str, name: str) -> str:
    run = client.create_run(experiment_id, run_name=name)
    run_id: str = run.info.run_id
    return run_id


def _log_points(client: Any, run_id: str, points: list[Any], batch: int) -> int:
    calls = 0
    for start in range(0, len(points), batch):
        client.log_batch(run_id, metrics=points[start : start + batch])
        calls += 1
    return calls


def _series(name: str, count: int, seed: int, t0_ms: int) -> list[Any]:
    rng = random.Random(seed)
    base = 0.5 + rng.random()
    return [_metric(name, _value(name, base, step, rng), t0_ms + step, step) for step in range(count)]


def cmd_log_metric(command: dict[str, Any]) -> dict[str, Any]:
    client = _client(command["tracking_uri"])
    n = int(command["n"])
    repeats = int(command.get("repeats", 1))
    warmup = int(command.get("warmup", 20))
    experiment_id = _new_experiment(client, "bench-log-metric")
    latencies: list[int] = []
    rates: list[float] = []
    for repeat in range(repeats):
        run_id = _new_run(client, experiment_id, f"log-metric-{repeat}")
        for i in range(warmup):  # connection and server caches, on a metric of its own
            client.log_metric(run_id, "warmup", float(i), step=i)
        rng = random.Random(repeat)
        started = time.perf_counter_ns()
        for i in range(n):
            value = _value("loss", 1.0, i, rng)
            t0 = time.perf_counter_ns()
            client.log_metric(run_id, "loss", value, step=i)
            latencies.append(time.perf_counter_ns() - t0)
        elapsed = (time.perf_counter_ns() - started) / 1e9
        rates.append(n / elapsed)
        _progress(f"log_metric repeat {repeat + 1}/{repeats}: {n / elapsed:.0f} points/s")
    return {"n": n, "repeats": repeats, "warmup": warmup, "latency_ns": latencies, "points_per_s": rates}


def cmd_log_batch(command: dict[str, Any]) -> dict[str, Any]:
    client = _client(command["tracking_uri"])
    n = int(command["n"])
    batch = int(command.get("batch", 1000))
    repeats = int(command.get("repeats", 1))
    experiment_id = _new_experiment(client, "bench-log-batch")
    totals: list[float] = []
    writes: list[float] = []
    rates: list[float] = []
    for repeat in range(repeats):
        run_id = _new_run(client, experiment_id, f"log-batch-{repeat}")
        points = _series("loss", n, repeat, int(time.time() * 1000))
        started = time.perf_counter()
        calls = _log_points(client, run_id, points, batch)
        written = time.perf_counter()
        while True:
            got = len(client.get_metric_history(run_id, "loss"))
            if got >= n:
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        totals.append(elapsed)
        writes.append(written - started)
        rates.append(n / elapsed)
        _progress(f"log_batch repeat {repeat + 1}/{repeats}: {calls} calls, {n / elapsed:.0f} points/s")
    return {
        "n": n,
        "batch": batch,
        "repeats": repeats,
        "seconds": totals,
        "write_seconds": writes,
        "points_per_s": rates,
    }


def _run_points(names: list[str], points: int, seed: int, t0_ms: int) -> list[Any]:
    rng = random.Random(seed)
    run_points: list[Any] = []
    for name in names:
        base = 0.5 + rng.random()
        run_points.extend(
            _metric(name, _value(name, base, step, rng), t0_ms + step, step) for step in range(points)
        )
    return run_points


def cmd_load(command: dict[str, Any]) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    client = _client(command["tracking_uri"])
    runs = int(command["runs"])
    metrics = int(command.get("metrics", 5))
    points = int(command.get("points", 200))
    series = int(command.get("series", 0))
    batch = int(command.get("batch", 1000))
    concurrency = int(command.get("concurrency", 1))
    max_seconds = command.get("max_seconds")
    if metrics > len(METRIC_NAMES):
        raise ValueError(f"metrics: at most {len(METRIC_NAMES)}")
    names = METRIC_NAMES[:metrics]
    started = time.perf_counter()
    experiment_id = _new_experiment(client, "bench-load")
    t0_ms = int(time.time() * 1000)
    pool = ThreadPoolExecutor(max_workers=concurrency)

    series_run_id: str | None = None
    series_seconds = 0.0
    calls = 0
    if series > 0:
        s_started = time.perf_counter()
        long_run_id = series_run_id = _new_run(client, experiment_id, "long-series")

        def series_chunk(start: int) -> int:
            chunk = [
                _metric("loss", 1.0 / (1.0 + step / 1000.0), t0_ms + step, step)
                for step in range(start, min(start + batch, series))
            ]
            client.log_batch(long_run_id, metrics=chunk)
            return 1

        for done, _ in enumerate(pool.map(series_chunk, range(0, series, batch)), start=1):
            calls += 1
            if done % 100 == 0:
                _progress(f"long series: {done * batch} points, {time.perf_counter() - s_started:.1f}s")
        series_seconds = time.perf_counter() - s_started
        _progress(f"long series of {series} points in {series_seconds:.1f}s")

    r_started = time.perf_counter()

    def load_run(r: int) -> tuple[str, int] | None:
        if max_seconds is not None and time.perf_counter() - started > float(max_seconds):
            return None
        run_id = _new_run(client, experiment_id, f"run-{r:05d}")
        return run_id, _log_points(client, run_id, _run_points(names, points, r, t0_ms), batch)

    run_ids: list[str] = []
    for r, loaded in enumerate(pool.map(load_run, range(runs))):
        if loaded is None:
            continue
        run_ids.append(loaded[0])
        calls += loaded[1]
        if r % 500 == 499:
            spent = time.perf_counter() - r_started
            _progress(f"{r + 1}/{runs} runs in {spent:.1f}s ({(r + 1) / spent:.1f} runs/s)")
    pool.shutdown()
    if len(run_ids) < runs:
        _progress(f"stopped after {len(run_ids)} runs: max_seconds={max_seconds} reached")
    runs_seconds = time.perf_counter() - r_started
    total = time.perf_counter() - started
    loaded_points = len(run_ids) * metrics * points + series
    return {
        "experiment_id": experiment_id,
        "series_run_id": series_run_id,
        "run_ids_sample": run_ids[:10],
        "requested": {"runs": runs, "metrics": metrics, "points": points, "series": series},
        "loaded": {"runs": len(run_ids), "metrics": metrics, "points": points, "series": series},
        "complete": len(run_ids) == runs,
        "metric_names": names,
        "batch": batch,
        "concurrency": concurrency,
        "log_batch_calls": calls,
        "seconds": total,
        "series_seconds": series_seconds,
        "runs_seconds": runs_seconds,
        "points_total": loaded_points,
        "points_per_s": loaded_points / total if total > 0 else 0.0,
    }


def _timed(fn: Callable[[], int], repeats: int, warmup: int) -> dict[str, Any]:
    cold: float | None = None
    samples: list[float] = []
    rows = 0
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        rows = fn()
        ms = (time.perf_counter() - t0) * 1000.0
        if i == 0:
            cold = ms
        if i >= warmup:
            samples.append(ms)
    return {"samples_ms": samples, "cold_ms": cold, "rows": rows}


def cmd_queries(command: dict[str, Any]) -> dict[str, Any]:
    import http.client
    import urllib.parse

    uri: str = command["tracking_uri"]
    client = _client(uri)
    repeats = int(command.get("repeats", 5))
    warmup = int(command.get("warmup", 1))
    experiment_id = str(command["experiment_id"])
    series_run_id: str | None = command.get("series_run_id")
    compare_run_ids: list[str] = list(command.get("compare_run_ids", []))
    compare_metrics: list[str] = list(command.get("compare_metrics", ["loss", "accuracy", "lr"]))
    sampled_points = int(command.get("sampled_points", 1000))
    history_repeats = int(command.get("history_repeats") or repeats)  # the long series is slow
    results: dict[str, Any] = {}

    def search() -> int:
        found = client.search_runs(
            experiment_ids=[experiment_id], order_by=["metrics.loss ASC"], max_results=100
        )
        return len(found)

    results["search_runs"] = _timed(search, repeats, warmup)
    _progress(f"search_runs: {results['search_runs']['samples_ms']}")

    if series_run_id is not None:
        run_id = series_run_id

        def history() -> int:
            return len(client.get_metric_history(run_id, "loss"))

        results["history_long_series"] = _timed(history, history_repeats, min(warmup, 1))
        _progress(f"history of the long series: {results['history_long_series']['samples_ms']}")

        parsed = urllib.parse.urlsplit(uri)
        connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=600)
        query = urllib.parse.urlencode(
            {"run_ids": run_id, "metric_key": "loss", "max_results": sampled_points}
        )

        def sampled() -> int:  # MLflow's chart read: downsampled on the server
            connection.request("GET", f"/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?{query}")
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"get-history-bulk-interval answered {response.status}: {body[:200]!r}")
            return len(json.loads(body).get("metrics", []))

        results["history_sampled"] = _timed(sampled, repeats, warmup)
        _progress(f"sampled history: {results['history_sampled']['samples_ms']}")

    if compare_run_ids:

        def compare() -> int:
            return sum(
                len(client.get_metric_history(run_id, name))
                for run_id in compare_run_ids
                for name in compare_metrics
            )

        results["compare"] = _timed(compare, repeats, warmup)
        _progress(f"compare: {results['compare']['samples_ms']}")
    return {"repeats": repeats, "warmup": warmup, "queries": results}


def cmd_version(command: dict[str, Any]) -> dict[str, Any]:
    import mlflow  # type: ignore[import-not-found]

    version: str = mlflow.__version__
    return {"mlflow": version, "python": sys.version.split()[0]}


COMMANDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "log_metric": cmd_log_metric,
    "log_batch": cmd_log_batch,
    "load": cmd_load,
    "queries": cmd_queries,
    "version": cmd_version,
}


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Keep stdout for the one result line, whatever MLflow prints."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def main(argv: list[str]) -> int:
    raw = argv[1] if len(argv) > 1 else sys.stdin.read()
    command = json.loads(raw)
    if not isinstance(command, dict) or command.get("cmd") not in COMMANDS:
        print(f"unknown command; expected cmd in {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    with _stdout_to_stderr():
        result = COMMANDS[command["cmd"]](command)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
