"""Metric series: every point of a run, one series downsampled in SQL, and compare.

Downsampling cuts a series' step range into at most ``max_points`` buckets of equal
width (``paging.buckets_for``) and returns, per bucket, its step range, min, max, the
last value (at its highest step) and the point count: a spike survives as its
bucket's min or max, whatever the bucket width. A series with at most ``max_points``
points, or asked with ``full=true`` (up to ``FULL_LIMIT`` points), comes back as its
points. Series never relogged (see ``projector.series``) are read without FINAL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from runstream.events.codec import to_wire_float
from runstream.query import params
from runstream.query.paging import ROLLUP_LEVELS, Buckets, plan_buckets
from runstream.query.params import BadParameterError, NotFoundError
from runstream.query.runs import RunsQueries, gather_or_raise, iso, wire
from runstream.store.clickhouse import ProjectionStore

DEFAULT_MAX_POINTS = 1000
MAX_POINTS = 10_000
FULL_LIMIT = 100_000
MAX_COMPARE_RUNS = 50
MAX_COMPARE_METRICS = 20

# The runs' experiments, and which of the metrics each logged (relogged or not). A run
# without metrics but with lifecycle events has one row with an empty name.
SERIES_INDEX_SQL = """
SELECT run_id, any(experiment), name, max(relogged) FROM
(
    SELECT run_id, experiment, '' AS name, toUInt8(0) AS relogged FROM run_state
    WHERE workspace = {ws:String} AND run_id IN {run_ids:Array(String)}
    UNION ALL
    SELECT run_id, experiment, name, relogged FROM metric_summaries
    WHERE workspace = {ws:String} AND run_id IN {run_ids:Array(String)} AND name IN {metrics:Array(String)}
)
GROUP BY run_id, name
"""

ALL_POINTS_SQL = """
SELECT name, step, value, ts
FROM metric_points FINAL
WHERE workspace = {ws:String} AND run_id = {run_id:String}
ORDER BY name, step
"""

_POINTS = """
SELECT run_id, name, step, value, ts
FROM metric_points
"""
_POINTS_WHERE = """
WHERE workspace = {ws:String} AND (run_id, name) IN {series:Array(Tuple(String, String))}
ORDER BY run_id, name, step
"""
_PLANS = """
INNER JOIN
(
    SELECT t.1 AS run_id, t.2 AS name, t.3 AS level, t.4 AS base, t.5 AS width
    FROM (SELECT arrayJoin({plans:Array(Tuple(String, String, UInt8, UInt64, UInt64))}) AS t)
) AS b ON b.run_id = p.run_id AND b.name = p.name
"""
_BUCKETS = """
SELECT p.run_id AS run_id, p.name AS name, intDiv(p.step - b.base, b.width) AS bucket,
       min(p.step) AS step_min, max(p.step) AS step_max, min(p.value) AS min_value,
       max(p.value) AS max_value, argMax(p.value, p.step) AS last_value, count() AS points
FROM
(
    SELECT run_id, name, step, value FROM metric_points
"""
_BUCKETS_WHERE = """
    WHERE workspace = {ws:String} AND (run_id, name) IN {series:Array(Tuple(String, String))}
) AS p
"""
_BUCKETS_TAIL = """
GROUP BY run_id, name, bucket
ORDER BY run_id, name, bucket
"""
ROLLUP_BUCKETS_SQL = """
SELECT p.run_id AS run_id, p.name AS name,
       intDiv(bitShiftLeft(p.bucket, p.level) - b.base, b.width) AS out_bucket,
       min(p.first_step) AS step_min, max(p.last_step) AS step_max, min(p.min_value) AS min_value,
       max(p.max_value) AS max_value, max(p.last_point).3 AS last_value, sum(p.points) AS points
FROM metric_rollups AS p
INNER JOIN
(
    SELECT t.1 AS run_id, t.2 AS name, t.3 AS level, t.4 AS base, t.5 AS width
    FROM (SELECT arrayJoin({plans:Array(Tuple(String, String, UInt8, UInt64, UInt64))}) AS t)
) AS b ON b.run_id = p.run_id AND b.name = p.name AND b.level = p.level
WHERE p.workspace = {ws:String} AND (p.run_id, p.name, p.level) IN {keys:Array(Tuple(String, String, UInt8))}
GROUP BY run_id, name, out_bucket
ORDER BY run_id, name, out_bucket
"""
POINTS_SQL = "".join((_POINTS, _POINTS_WHERE))
POINTS_FINAL_SQL = "".join((_POINTS, " FINAL ", _POINTS_WHERE))
BUCKETS_SQL = "".join((_BUCKETS, _BUCKETS_WHERE, _PLANS, _BUCKETS_TAIL))
BUCKETS_FINAL_SQL = "".join((_BUCKETS, " FINAL ", _BUCKETS_WHERE, _PLANS, _BUCKETS_TAIL))

Key = tuple[str, str]


def max_points_param(query: Mapping[str, str]) -> int:
    return params.integer(query, "max_points", DEFAULT_MAX_POINTS, minimum=1, maximum=MAX_POINTS)


class SeriesQueries:
    def __init__(self, store: ProjectionStore, runs: RunsQueries) -> None:
        self.store = store
        self.runs = runs

    async def index(
        self, ws: str, run_ids: Sequence[str], metrics: Sequence[str]
    ) -> tuple[dict[str, str], set[Key], set[Key]]:
        """The runs' experiments, the (run, metric) series that exist, and the relogged ones."""
        rows = await self.store.query(
            SERIES_INDEX_SQL, {"ws": ws, "run_ids": list(run_ids), "metrics": list(metrics)}
        )
        experiments = {str(r): str(e) for r, e, _, _ in rows}
        series = {(str(r), str(n)) for r, _, n, _ in rows if n}
        relogged = {(str(r), str(n)) for r, _, n, flag in rows if n and flag}
        return experiments, series, relogged

    async def all_points(self, ws: str, run_id: str) -> dict[str, Any]:
        """``GET /runs/{run_id}/metrics``: every metric with its points in step order."""
        points = await self.store.query(ALL_POINTS_SQL, {"ws": ws, "run_id": run_id})
        if not points and not (await self.index(ws, [run_id], []))[0]:
            raise NotFoundError(f"no run {run_id!r} in workspace {ws!r}")
        metrics: dict[str, list[dict[str, Any]]] = {}
        for name, step, value, ts in points:
            metrics.setdefault(name, []).append({"step": step, "value": to_wire_float(value), "ts": iso(ts)})
        return {"run_id": run_id, "metrics": metrics}

    async def read(
        self,
        ws: str,
        summaries: Mapping[Key, dict[str, Any]],
        relogged: set[Key],
        max_points: int,
        full: bool,
    ) -> dict[Key, dict[str, Any]]:
        """Each series of ``summaries`` as its points or as buckets (a few queries, whatever the count)."""
        out: dict[Key, dict[str, Any]] = {}
        raw = [k for k, s in summaries.items() if full or s["count"] <= max_points]
        for final in (True, False):
            chosen = [k for k in raw if (k in relogged) == final]
            if chosen:
                sql = POINTS_FINAL_SQL if final else POINTS_SQL
                for run_id, name, step, value, ts in await self.store.query(
                    sql, {"ws": ws, "series": chosen}
                ):
                    series = out.setdefault(
                        (run_id, name), {"downsampled": False, "bucket_width": None, "points": []}
                    )
                    series["points"].append({"step": step, "value": to_wire_float(value), "ts": iso(ts)})
        plans = {
            key: plan_buckets(
                s["first_step"], s["last_step"], max_points, () if key in relogged else ROLLUP_LEVELS
            )
            for key, s in summaries.items()
            if key not in set(raw)
        }
        rolled = {k: p for k, p in plans.items() if p.level > 0}
        if rolled:
            bound = {
                "ws": ws,
                "keys": [(r, n, p.level) for (r, n), p in rolled.items()],
                "plans": [(r, n, p.level, p.base, p.width) for (r, n), p in rolled.items()],
            }
            self._buckets(out, plans, await self.store.query(ROLLUP_BUCKETS_SQL, bound))
        for final in (True, False):
            chosen = [k for k, p in plans.items() if p.level == 0 and (k in relogged) == final]
            if chosen:
                bound = {
                    "ws": ws,
                    "series": chosen,
                    "plans": [(r, n, 0, plans[(r, n)].base, plans[(r, n)].width) for r, n in chosen],
                }
                self._buckets(
                    out, plans, await self.store.query(BUCKETS_FINAL_SQL if final else BUCKETS_SQL, bound)
                )
        for key in summaries:  # a series whose points are gone (a replay between two reads)
            out.setdefault(key, {"downsampled": False, "bucket_width": None, "points": []})
        return out

    @staticmethod
    def _buckets(
        out: dict[Key, dict[str, Any]], plans: Mapping[Key, Buckets], rows: list[tuple[Any, ...]]
    ) -> None:
        for run_id, name, _, step_min, step_max, low, high, last, points in rows:
            key = (run_id, name)
            series = out.setdefault(
                key, {"downsampled": True, "bucket_width": plans[key].width, "buckets": []}
            )
            series["buckets"].append(
                {
                    "step_min": step_min,
                    "step_max": step_max,
                    "min": wire(low),
                    "max": wire(high),
                    "last": wire(last),
                    "count": points,
                }
            )

    async def summaries_of(
        self, ws: str, runs: Mapping[str, str], metrics: Sequence[str], relogged: set[Key]
    ) -> dict[Key, dict[str, Any]]:
        pairs = [(e, r) for r, e in runs.items()]
        return await self.runs.stats(ws, pairs, metrics, relogged=bool(relogged))

    async def series(self, ws: str, run_id: str, name: str, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /runs/{run_id}/metrics/{name}``: one series, downsampled unless short or ``full``."""
        max_points = max_points_param(query)
        full = params.boolean(query, "full")
        # Summaries are read as if the series were not relogged while it is checked.
        (experiments, existing, relogged), summaries = await gather_or_raise(
            self.index(ws, [run_id], [name]), self.runs.stats_of_runs(ws, [run_id], [name], relogged=False)
        )
        if run_id not in experiments:
            raise NotFoundError(f"no run {run_id!r} in workspace {ws!r}")
        if (run_id, name) not in existing:
            raise NotFoundError(f"run {run_id!r} has no metric {name!r}")
        if relogged:
            summaries = await self.summaries_of(ws, experiments, [name], relogged)
        summary = summaries[(run_id, name)]
        if full and summary["count"] > FULL_LIMIT:
            raise BadParameterError(
                "full", f"the series has {summary['count']} points; full resolution goes up to {FULL_LIMIT}"
            )
        series = (await self.read(ws, summaries, relogged, max_points, full))[(run_id, name)]
        return {"run_id": run_id, "name": name, "summary": summary, "max_points": max_points, **series}

    async def compare(self, ws: str, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET|POST /compare``: several runs x several metrics, summaries and series in one answer."""
        run_ids = list(dict.fromkeys(params.run_id(r.strip(), "runs") for r in params.csv(query.get("runs"))))
        metrics = list(
            dict.fromkeys(params.metric_name(m, "metrics") for m in params.csv(query.get("metrics")))
        )
        if not run_ids:
            raise BadParameterError("runs", "name at least one run: runs=a,b")
        if len(run_ids) > MAX_COMPARE_RUNS:
            raise BadParameterError("runs", f"at most {MAX_COMPARE_RUNS} runs; got {len(run_ids)}")
        if not metrics:
            raise BadParameterError("metrics", "name at least one metric: metrics=loss,acc")
        if len(metrics) > MAX_COMPARE_METRICS:
            raise BadParameterError("metrics", f"at most {MAX_COMPARE_METRICS} metrics; got {len(metrics)}")
        max_points = max_points_param(query)
        (experiments, existing, relogged), states, summaries = await asyncio.gather(
            self.index(ws, run_ids, metrics),
            self.runs.runs(ws, run_ids),
            self.runs.stats_of_runs(ws, run_ids, metrics, relogged=False),
        )
        missing = [r for r in run_ids if r not in experiments]
        if missing:
            raise BadParameterError("runs", f"no run {missing[0]!r} in workspace {ws!r}")
        unknown = [m for m in metrics if not any((r, m) in existing for r in run_ids)]
        if unknown:
            raise BadParameterError("metrics", f"none of the runs logged metric {unknown[0]!r}")
        if relogged:
            summaries = await self.summaries_of(ws, experiments, metrics, relogged)
        series = await self.read(ws, summaries, relogged, max_points, full=False)
        out = []
        for run_id in run_ids:
            state = states.get(run_id, {})
            out.append(
                {
                    "run_id": run_id,
                    "experiment": experiments[run_id],
                    "name": state.get("name"),
                    "status": state.get("status"),
                    "metrics": {
                        m: {"summary": summaries[(run_id, m)], **series[(run_id, m)]}
                        for m in metrics
                        if (run_id, m) in summaries
                    },
                }
            )
        return {"max_points": max_points, "metrics": metrics, "runs": out}
