"""The query API: read endpoints over the projections, under ``/api/v1``.

Every input is bound as a query parameter, never spliced into SQL. Every endpoint
takes ``workspace`` (default ``default``); a token scoped to another workspace gets
403. A bad parameter is answered with 400 and
``{"error": "bad parameter", "parameter": name, "detail": why}``; what the path names
and does not exist with 404. Timestamps are ISO 8601 in UTC; metric values are
numbers or, when not finite, the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"``. The OpenAPI 3.1 document of every route is served at
``/api/v1/openapi.json`` (``query.openapi``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.datastructures import MultiDict
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from runstream.auth.grants import ForbiddenError
from runstream.auth.middleware import principal_of
from runstream.errors import StoreError
from runstream.http import BodyTooLargeError, JSONResponse, error_response, read_capped_body
from runstream.query import params
from runstream.query.artifacts import ArtifactQueries, CorruptFileError, StoredFile, file_path
from runstream.query.compute import ComputeQueries
from runstream.query.openapi import openapi_document
from runstream.query.params import BadParameterError, NotFoundError
from runstream.query.runs import RunsQueries
from runstream.query.series import SeriesQueries
from runstream.store.clickhouse import ProjectionStore

log = logging.getLogger("runstream.query")

MAX_COMPARE_BODY = 64 * 1024
Endpoint = Callable[[Request], Awaitable[Response]]


def scoped_workspace(request: Request, query: Mapping[str, str]) -> str:
    """The workspace a request names (``workspace``, default ``default``), if its token may read it."""
    workspace = params.workspace(query)
    principal_of(request.scope).require_workspace(workspace)
    return workspace


def answers(handler: Endpoint) -> Endpoint:
    """Turn the query errors into their HTTP answers."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except BadParameterError as exc:
            return error_response(400, "bad parameter", exc.detail, parameter=exc.parameter)
        except NotFoundError as exc:
            return error_response(404, "not found", str(exc))
        except ForbiddenError as exc:
            return error_response(403, "forbidden", str(exc))
        except CorruptFileError as exc:
            log.error("query: stored file is corrupt: %s", exc)
            return error_response(500, "corrupt file", str(exc))
        except StoreError as exc:
            log.warning("query: %s", exc)
            return error_response(503, "store unavailable", str(exc), retriable=True)

    return endpoint


class QueryService:
    def __init__(self, store: ProjectionStore) -> None:
        self.store = store
        self.run_queries = RunsQueries(store)
        self.series = SeriesQueries(store, self.run_queries)
        self.artifacts = ArtifactQueries(store)
        self.compute = ComputeQueries(store, self.run_queries)

    def routes(self) -> list[Route]:
        r = answers
        return [
            Route("/api/v1/openapi.json", r(self.get_openapi), methods=["GET"]),
            Route("/api/v1/experiments", r(self.get_experiments), methods=["GET"]),
            Route("/api/v1/experiments/{experiment:path}/runs", r(self.get_runs_table), methods=["GET"]),
            Route("/api/v1/runs/{run_id}", r(self.get_run), methods=["GET"]),
            Route("/api/v1/runs/{run_id}/metrics", r(self.get_metrics), methods=["GET"]),
            Route("/api/v1/runs/{run_id}/metrics/{name:path}", r(self.get_series), methods=["GET"]),
            Route("/api/v1/runs/{run_id}/values", r(self.get_values), methods=["GET"]),
            Route("/api/v1/runs/{run_id}/logs", r(self.get_logs), methods=["GET"]),
            Route("/api/v1/runs/{run_id}/files", r(self.get_files), methods=["GET"]),
            Route("/api/v1/runs/{run_id}/files/{path:path}", r(self.get_file), methods=["GET"]),
            Route("/api/v1/runs/{run_id}/snapshot", r(self.get_snapshot), methods=["GET"]),
            Route("/api/v1/compare", r(self.compare), methods=["GET", "POST"]),
            Route("/api/v1/compute", r(self.get_compute), methods=["GET"]),
            Route("/api/v1/compute/{name}", r(self.get_compute_target), methods=["GET"]),
        ]

    @staticmethod
    def _run(request: Request) -> tuple[str, str]:
        return scoped_workspace(request, request.query_params), params.run_id(request.path_params["run_id"])

    async def get_openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def get_experiments(self, request: Request) -> Response:
        ws = scoped_workspace(request, request.query_params)
        return JSONResponse({"workspace": ws, "experiments": await self.run_queries.experiments(ws)})

    async def get_runs_table(self, request: Request) -> Response:
        ws = scoped_workspace(request, request.query_params)
        experiment = request.path_params["experiment"]
        return JSONResponse(await self.run_queries.runs_table(ws, experiment, request.query_params))

    async def get_run(self, request: Request) -> Response:
        ws, run_id = self._run(request)
        return JSONResponse(await self.run_queries.run(ws, run_id))

    async def get_metrics(self, request: Request) -> Response:
        ws, run_id = self._run(request)
        return JSONResponse(await self.series.all_points(ws, run_id))

    async def get_series(self, request: Request) -> Response:
        ws, run_id = self._run(request)
        name = params.metric_name(request.path_params["name"], "name")
        return JSONResponse(await self.series.series(ws, run_id, name, request.query_params))

    async def get_values(self, request: Request) -> Response:
        ws, run_id = self._run(request)
        return JSONResponse(await self.artifacts.values(ws, run_id))

    async def get_logs(self, request: Request) -> Response:
        ws, run_id = self._run(request)
        return JSONResponse(await self.artifacts.logs(ws, run_id, request.query_params))

    async def get_files(self, request: Request) -> Response:
        ws, run_id = self._run(request)
        return JSONResponse(await self.artifacts.listing(ws, run_id, request.query_params))

    async def get_file(self, request: Request) -> Response:
        ws, run_id = self._run(request)
        stored = await self.artifacts.find(ws, run_id, path=file_path(request.path_params["path"]))
        return await self._download(ws, run_id, stored)

    async def get_snapshot(self, request: Request) -> Response:
        ws, run_id = self._run(request)
        return await self._download(ws, run_id, await self.artifacts.find(ws, run_id, kind="snapshot"))

    async def _download(self, ws: str, run_id: str, stored: StoredFile) -> Response:
        headers = {"Content-Disposition": stored.disposition, "X-Content-SHA256": stored.sha256}
        whole = await self.artifacts.verify(ws, run_id, stored)
        if whole is not None:
            return Response(whole, media_type=stored.media_type, headers=headers)
        headers["Content-Length"] = str(stored.size)
        return StreamingResponse(
            self.artifacts.stream(ws, run_id, stored), media_type=stored.media_type, headers=headers
        )

    async def compare(self, request: Request) -> Response:
        query: Any = request.query_params
        if request.method == "POST":
            query = await self._compare_body(request)
        ws = scoped_workspace(request, query)
        return JSONResponse(await self.series.compare(ws, query))

    @staticmethod
    async def _compare_body(request: Request) -> MultiDict:
        try:
            body = orjson.loads(await read_capped_body(request, MAX_COMPARE_BODY) or b"{}")
        except BodyTooLargeError:
            raise BadParameterError(
                "body", f"a compare body holds at most {MAX_COMPARE_BODY} bytes"
            ) from None
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise BadParameterError("body", f"not a JSON object: {exc}") from None
        if not isinstance(body, dict):
            raise BadParameterError("body", "expected a JSON object with runs, metrics and max_points")
        merged = dict(request.query_params)
        for key in ("runs", "metrics"):
            value = body.get(key)
            if isinstance(value, list):
                if not all(isinstance(v, str) and "," not in v for v in value):
                    raise BadParameterError(key, "expected a list of names")
                merged[key] = ",".join(value)
            elif value is not None:
                raise BadParameterError(key, "expected a list of names")
        for key in ("max_points", "workspace"):
            if key in body:
                merged[key] = str(body[key])
        return MultiDict(merged)

    async def get_compute(self, request: Request) -> Response:
        ws = scoped_workspace(request, request.query_params)
        return JSONResponse({"workspace": ws, "targets": await self.compute.targets(ws)})

    async def get_compute_target(self, request: Request) -> Response:
        ws = scoped_workspace(request, request.query_params)
        return JSONResponse((await self.compute.targets(ws, only=request.path_params["name"]))[0])
