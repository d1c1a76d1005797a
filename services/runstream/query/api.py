"""Read endpoints over the projections. Every input is bound as a query parameter.

- ``GET /api/v1/runs/{run_id}``: the run's state, status and lifecycle timestamps.
- ``GET /api/v1/runs/{run_id}/metrics``: every metric with its points in step order.

Timestamps are ISO 8601 in UTC; metric values are numbers or, when not finite,
the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runstream.events.codec import to_wire_float
from runstream.http import JSONResponse, error_response
from runstream.store.clickhouse import ProjectionStore

DEFAULT_WORKSPACE = "default"

_RUN_SQL = """
SELECT run_id, workspace, experiment, name, status, compute, parent_run_id, tags,
       created_at, queued_at, started_at, ended_at, error,
       has_created, has_queued, has_started, has_ended, last_event_at
FROM runs
WHERE workspace = {workspace:String} AND run_id = {run_id:String}
"""

_POINTS_SQL = """
SELECT name, step, value, ts
FROM metric_points FINAL
WHERE workspace = {workspace:String} AND run_id = {run_id:String}
ORDER BY name, step
"""


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # clickhouse-connect returns DateTime64(3, 'UTC') naive, in UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_document(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": row["run_id"],
        "workspace": row["workspace"],
        "experiment": row["experiment"],
        "name": row["name"] or None,
        "status": row["status"],
        "compute": row["compute"] or None,
        "parent_run_id": row["parent_run_id"] or None,
        "tags": dict(row["tags"] or {}),
        "created_at": iso(row["created_at"]) if row["has_created"] else None,
        "queued_at": iso(row["queued_at"]) if row["has_queued"] else None,
        "started_at": iso(row["started_at"]) if row["has_started"] else None,
        "ended_at": iso(row["ended_at"]) if row["has_ended"] else None,
        "error": row["error"] or None,
        "last_event_at": iso(row["last_event_at"]),
    }


class QueryService:
    def __init__(self, store: ProjectionStore) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/runs/{run_id}", self.get_run, methods=["GET"]),
            Route("/api/v1/runs/{run_id}/metrics", self.get_metrics, methods=["GET"]),
        ]

    @staticmethod
    def _scope(request: Request) -> dict[str, str]:
        return {
            "workspace": request.query_params.get("workspace", DEFAULT_WORKSPACE),
            "run_id": request.path_params["run_id"],
        }

    async def get_run(self, request: Request) -> Response:
        params = self._scope(request)
        rows = await self.store.query_dicts(_RUN_SQL, params)
        if not rows:
            return error_response(404, "not found", f"no run {params['run_id']!r}")
        return JSONResponse(run_document(rows[0]))

    async def get_metrics(self, request: Request) -> Response:
        params = self._scope(request)
        points = await self.store.query(_POINTS_SQL, params)
        if not points and not await self.store.query_dicts(_RUN_SQL, params):
            return error_response(404, "not found", f"no run {params['run_id']!r}")
        metrics: dict[str, list[dict[str, Any]]] = {}
        for name, step, value, ts in points:
            metrics.setdefault(name, []).append({"step": step, "value": to_wire_float(value), "ts": iso(ts)})
        return JSONResponse({"run_id": params["run_id"], "metrics": metrics})
