"""Read paths at scale: Runstream's query API against an MLflow tracking server, same data.

Loads R runs x 5 metrics x 200 points plus one run with a 1,000,000-point ``loss``
series (full scale: 10,000 runs, 11 million points) and times, through the real HTTP
API on the embedded engine (chdb):

- the runs table of the experiment sorted by ``last(loss)`` with 5 summary columns;
- the long series downsampled to 1,000 points (min, max and last per bucket);
- compare of 10 runs x 3 metrics (series and summaries in one call);

and the same questions asked of ``mlflow server`` (SQLite store, its own venv, started
here): ``search_runs`` ordered by ``metrics.loss``, ``get-history-bulk-interval`` (its
downsampled chart read) and ``get_metric_history`` of the long series, and
``get_metric_history`` of 10 runs x 3 metrics.

Loading: the dataset is generated as the events an SDK would send (``run.created``,
``run.started``, ``metrics.logged`` with every point of a run, ``run.completed``),
turned into rows by the projector's own row builders (``ProjectionRows``, with the step
tracker's relog flags) and inserted through ``ProjectionStore.insert`` in batches of
about 500,000 points, one insert per table per batch, as the projector does: the same
tables and materialized views, without the log and the per-record JSON validation.
Values come from ``mlflow_worker._value`` with the same seeds, so both systems hold the
same numbers. MLflow logs about 4,000 points/s, so it loads a fraction of the scale
(``--mlflow-fraction``, 0.1 by default); Runstream is measured at that same scale for
the ratios, and at the full scale (``--scale``) for its absolute times.

    .venv/bin/python tests/bench/bench_queries.py                 # full scale, MLflow at 10%
    .venv/bin/python tests/bench/bench_queries.py --scale 0.05    # a quick check
    .venv/bin/python tests/bench/bench_queries.py --no-mlflow     # Runstream alone
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # run as a script: make `tests.bench` importable
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from runstream.projector.rows import TABLE_COLUMNS, ProjectionRows  # noqa: E402
from runstream.projector.series import StepTracker  # noqa: E402
from runstream.server.app import Service  # noqa: E402
from runstream.settings import Settings  # noqa: E402
from runstream.store.clickhouse import ProjectionStore  # noqa: E402
from runstream.types import Envelope  # noqa: E402
from tests.bench import report  # noqa: E402
from tests.bench.mlflow_worker import METRIC_NAMES, _value  # noqa: E402
from tests.support import running_server  # noqa: E402

EXPERIMENT = "bench"
WORKSPACE = "default"
SERIES_RUN = "long-series"
COMPUTES = ("gpu-a100", "gpu-h100", "cpu-pool", "tpu-v5")
T0_MS = 1_764_300_000_000
POINTS_PER_INSERT = 500_000


@dataclass(frozen=True)
class Scale:
    runs: int
    metrics: int = 5
    points: int = 200
    series: int = 1_000_000

    def times(self, f: float) -> Scale:
        return Scale(
            max(10, round(self.runs * f)), self.metrics, self.points, max(1000, round(self.series * f))
        )

    @property
    def total_points(self) -> int:
        return self.runs * self.metrics * self.points + self.series


FULL = Scale(runs=10_000)


def _event(kind: str, run_id: str, payload: dict[str, Any], seq: int, ts: int) -> Envelope:
    return {
        "event_id": str(uuid.UUID(int=random.getrandbits(128), version=4)),
        "type": kind,
        "schema_version": 1,
        "workspace": WORKSPACE,
        "experiment": EXPERIMENT,
        "run_id": run_id,
        "ts": ts,
        "seq": seq,
        "payload": payload,
    }


def run_events(r: int, scale: Scale) -> list[Envelope]:
    """The events of run ``r``: the values ``mlflow_worker`` logs for its run ``r``."""
    run_id = f"run-{r:05d}"
    rng = random.Random(r)
    points: list[dict[str, Any]] = []
    for name in METRIC_NAMES[: scale.metrics]:
        base = 0.5 + rng.random()
        points += [
            {"name": name, "value": _value(name, base, step, rng), "step": step, "ts": T0_MS + step}
            for step in range(scale.points)
        ]
    created = {"name": run_id, "compute": COMPUTES[r % len(COMPUTES)], "tags": {"team": f"t{r % 7}"}}
    events = [
        _event("run.created", run_id, created, 0, T0_MS + r),
        _event("run.started", run_id, {}, 1, T0_MS + r + 10),
    ]
    for start in range(0, len(points), 10_000):  # the schema's batch limit
        events.append(
            _event("metrics.logged", run_id, {"points": points[start : start + 10_000]}, 2, T0_MS + r)
        )
    if r % 10:  # one run in ten is still running
        events.append(_event("run.completed", run_id, {}, 3, T0_MS + r + 500_000))
    return events


def series_events(scale: Scale) -> Iterator[Envelope]:
    yield _event("run.created", SERIES_RUN, {"name": SERIES_RUN, "compute": COMPUTES[0]}, 0, T0_MS)
    yield _event("run.started", SERIES_RUN, {}, 1, T0_MS)
    for k, start in enumerate(range(0, scale.series, 10_000)):
        steps = range(start, min(start + 10_000, scale.series))
        points = [
            {"name": "loss", "value": 1.0 / (1.0 + s / 1000.0), "step": s, "ts": T0_MS + s} for s in steps
        ]
        yield _event("metrics.logged", SERIES_RUN, {"points": points}, 2 + k, T0_MS + start)


async def load(store: ProjectionStore, scale: Scale) -> float:
    """Load ``scale`` through the row builders and the store; returns the seconds it took."""
    random.seed(1)
    started = time.perf_counter()
    tracker = StepTracker()
    rows = ProjectionRows()

    async def flush() -> None:
        nonlocal rows
        tracker.commit(tracker.flag(rows, {}))
        for table, table_rows in rows.tables.items():
            await store.insert(table, table_rows, TABLE_COLUMNS[table])
        rows = ProjectionRows()

    def events() -> Iterator[Envelope]:
        yield from series_events(scale)
        for r in range(scale.runs):
            yield from run_events(r, scale)

    for offset, event in enumerate(events()):
        rows.add(event, 0, offset)
        if len(rows.metric_points) >= POINTS_PER_INSERT:
            await flush()
    await flush()
    return time.perf_counter() - started


@dataclass
class Timings:
    runs_table: list[float]
    series: list[float]
    compare: list[float]
    series_points: int
    runs_rows: int


def _settings(path: Path, database: str) -> Settings:
    return Settings(
        data_dir=path / "data",
        clickhouse_dsn=f"chdb://{path / 'clickhouse'}",
        clickhouse_database=database,
        topic_prefix="bench",
        token="bench-token",
        port=0,
    )


async def measure(
    path: Path, database: str, scale: Scale, *, repeats: int, fresh: bool
) -> tuple[float | None, Timings]:
    """Load ``scale`` (unless already there) and time the three questions over HTTP."""
    settings = _settings(path, database)
    load_seconds = None
    if fresh:
        store = ProjectionStore(settings.resolved_clickhouse_dsn, database)
        await store.start()
        try:
            load_seconds = await load(store, scale)
        finally:
            await store.close()
    compare_runs = ",".join(f"run-{r:05d}" for r in range(10))
    columns = "last(loss),min(loss),last(accuracy),max(accuracy),last(val_loss)"
    async with (
        running_server(settings, frozenset({Service.QUERY})) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=120) as http,
    ):

        async def timed(path: str, params: dict[str, Any]) -> tuple[list[float], Any]:
            samples = []
            body = None
            for i in range(repeats + 1):
                started = time.perf_counter()
                response = await http.get(path, params=params)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
                body = response.json()
                if i:  # the first call warms the caches, as MLflow's warm-up call does
                    samples.append(elapsed)
            return samples, body

        table, body = await timed(
            f"/api/v1/experiments/{EXPERIMENT}/runs", {"sort": "last(loss)", "columns": columns, "limit": 100}
        )
        rows = len(body["runs"])
        series, body = await timed(f"/api/v1/runs/{SERIES_RUN}/metrics/loss", {"max_points": 1000})
        buckets = len(body.get("buckets") or body.get("points") or [])
        compare, _ = await timed(
            "/api/v1/compare", {"runs": compare_runs, "metrics": "loss,accuracy,lr", "max_points": 1000}
        )
    return load_seconds, Timings(table, series, compare, buckets, rows)


def main(argv: list[str] | None = None) -> int:
    parser = report.common_parser(__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full scale for Runstream")
    parser.add_argument(
        "--mlflow-fraction", type=float, default=0.1, help="fraction of the full scale MLflow loads"
    )
    parser.add_argument("--no-mlflow", action="store_true", help="measure Runstream alone")
    parser.add_argument(
        "--keep", type=Path, help="keep the loaded data in this folder and reuse it next time"
    )
    args = report.parse_args(parser, argv)
    repeats = args.repeats or (3 if args.quick else 7)
    scale = FULL.times(0.01 if args.quick else args.scale) if args.quick or args.scale != 1 else FULL
    mlflow_scale = FULL.times(0.01 if args.quick else args.mlflow_fraction)
    return asyncio.run(run(args, scale, mlflow_scale, repeats))


async def run(args: Any, scale: Scale, mlflow_scale: Scale, repeats: int) -> int:
    figures: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"machine": report.machine(), "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="runstream-bench-") as tmp:
        root = args.keep or Path(tmp)
        marker = root / f"loaded-{scale.runs}-{scale.series}"
        load_seconds, full = await measure(
            root, "bench_full", scale, repeats=repeats, fresh=not marker.exists()
        )
        marker.touch()
        extra["runstream_scale"] = {**scale.__dict__, "points_total": scale.total_points}
        if load_seconds is not None:
            figures.append(
                report.figure(
                    "load dataset (row builders + store inserts)",
                    "s",
                    [load_seconds],
                    higher_is_better=False,
                    note=f"{scale.total_points} points",
                )
            )
        labels = {
            "runs_table": f"runs table: {scale.runs} runs by last(loss), 5 summary columns, page of 100",
            "series": f"{scale.series}-point series downsampled to 1,000 buckets",
            "compare": "compare 10 runs x 3 metrics (series + summaries)",
        }
        for key, label in labels.items():
            figures.append(
                report.figure(f"{label} [Runstream alone]", "ms", getattr(full, key), higher_is_better=False)
            )
        if not args.no_mlflow:
            figures += await compare_with_mlflow(root, mlflow_scale, repeats, extra)
    report.emit("queries", figures, extra)
    return 0


async def compare_with_mlflow(
    root: Path, scale: Scale, repeats: int, extra: dict[str, Any]
) -> list[dict[str, Any]]:
    from tests.bench.mlflow_baseline import (
        LoadScale,
        MlflowServer,
        load_dataset,
        measure_queries,
        mlflow_version,
    )

    marker = root / f"loaded-{scale.runs}-{scale.series}"
    _, same = await measure(root, f"bench_{scale.runs}", scale, repeats=repeats, fresh=not marker.exists())
    marker.touch()
    with MlflowServer() as mlflow:
        loaded = await asyncio.to_thread(
            load_dataset,
            mlflow,
            LoadScale(runs=scale.runs, metrics=scale.metrics, points=scale.points, series=scale.series),
        )
        queries = await asyncio.to_thread(measure_queries, mlflow, loaded, repeats=repeats, warmup=1)
        extra["mlflow"] = {
            "version": await asyncio.to_thread(mlflow_version, mlflow),
            "loaded": loaded["loaded"],
        }
    extra["compared_scale"] = {**scale.__dict__, "points_total": scale.total_points}
    timings = queries["queries"]
    pairs = [
        ("runs table vs search_runs ordered by metrics.loss", same.runs_table, "search_runs"),
        ("downsampled long series vs get-history-bulk-interval", same.series, "history_sampled"),
        ("downsampled long series vs get_metric_history", same.series, "history_long_series"),
        ("compare 10 runs x 3 metrics vs get_metric_history each", same.compare, "compare"),
    ]
    figures = []
    for label, samples, key in pairs:
        if key in timings:
            figures.append(
                report.figure(
                    f"{label} [{scale.runs} runs, {scale.series}-point series]",
                    "ms",
                    samples,
                    higher_is_better=False,
                    baseline_name="mlflow",
                    baseline_samples=timings[key]["samples_ms"],
                )
            )
    return figures


if __name__ == "__main__":
    sys.exit(main())
