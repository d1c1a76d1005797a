"""Helpers for tests: a real uvicorn server on a free loopback port, event builders."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette

from runstream.events.validation import new_event_id
from runstream.server.app import ALL_SERVICES, Service, create_app
from runstream.settings import Settings

T = TypeVar("T")


@dataclass
class RunningServer:
    app: Starlette
    base_url: str
    ws_url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextlib.asynccontextmanager
async def running_server(
    settings: Settings, services: frozenset[Service] = ALL_SERVICES
) -> AsyncIterator[RunningServer]:
    """The real application served by uvicorn on 127.0.0.1 (a free port), in this event loop."""
    app = create_app(settings, services)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped while starting")
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield RunningServer(
            app,
            f"http://127.0.0.1:{port}",
            f"ws://127.0.0.1:{port}",
            app.state.runtime.token,
        )
    finally:
        server.should_exit = True
        await task


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout: float = 20.0, interval: float = 0.05
) -> T:
    """The first truthy result of ``probe``, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last result {last!r}")


def event(
    type_: str,
    run_id: str,
    payload: dict[str, Any] | None = None,
    *,
    seq: int = 0,
    experiment: str = "mnist",
    workspace: str = "default",
    ts: int | None = None,
) -> dict[str, Any]:
    return {
        "event_id": new_event_id(),
        "type": type_,
        "schema_version": 1,
        "workspace": workspace,
        "experiment": experiment,
        "run_id": run_id,
        "ts": int(time.time() * 1000) if ts is None else ts,
        "seq": seq,
        "payload": payload or {},
    }


def points(name: str, values: list[Any], start_step: int = 0) -> dict[str, Any]:
    return {"points": [{"name": name, "value": v, "step": start_step + i} for i, v in enumerate(values)]}
