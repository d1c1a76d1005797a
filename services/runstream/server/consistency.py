"""``GET /api/v1/projection/wait``: read-your-writes for clients that just logged.

``positions=P:O[,P:O...]`` names events by partition and offset (as ingest
answered them); the call returns ``{"ready": true}`` once the projector has
applied every one of them, or ``{"ready": false}`` after ``timeout`` seconds
(at most 30). It reads the positions the projector stores in ClickHouse, so it
works whether or not the projector runs in this process.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runstream.http import JSONResponse, error_response
from runstream.store.clickhouse import ProjectionStore

_APPLIED_SQL = """
SELECT partition, max(next_offset) FROM projector_offsets
WHERE grp = {grp:String} AND topic = {topic:String}
GROUP BY partition
"""


class ConsistencyService:
    def __init__(self, store: ProjectionStore, *, group: str, topic: str) -> None:
        self.store = store
        self.group = group
        self.topic = topic

    def routes(self) -> list[Route]:
        return [Route("/api/v1/projection/wait", self.wait, methods=["GET"])]

    async def wait(self, request: Request) -> Response:
        wanted: dict[int, int] = {}
        for part in filter(None, request.query_params.get("positions", "").split(",")):
            partition, _, offset = part.partition(":")
            if not (partition.isdigit() and offset.isdigit()):
                return error_response(
                    400,
                    "bad parameter",
                    f"positions: expected P:O[,P:O...]; got {part!r}",
                    parameter="positions",
                )
            wanted[int(partition)] = max(wanted.get(int(partition), 0), int(offset))
        try:
            timeout = min(float(request.query_params.get("timeout", "10")), 30.0)
        except ValueError:
            return error_response(400, "bad parameter", "timeout: expected seconds", parameter="timeout")
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.store.query(_APPLIED_SQL, {"grp": self.group, "topic": self.topic})
            applied = {int(p): int(o) for p, o in rows}
            if all(applied.get(p, 0) > o for p, o in wanted.items()):
                return JSONResponse({"ready": True})
            if time.monotonic() >= deadline:
                return JSONResponse({"ready": False, "applied": applied})
            await asyncio.sleep(0.02)
