"""SDK tests: the real server runs in a thread of its own; the SDK is used as a script would."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn

from runstream.eventlog.factory import open_event_log
from runstream.eventlog.port import LogRecord
from runstream.sdk.client import Client, set_client
from runstream.sdk.config import ClientConfig
from runstream.server.app import create_app
from runstream.settings import Settings


@dataclass
class ThreadServer:
    """uvicorn serving the whole application on 127.0.0.1 in a background thread."""

    settings: Settings
    base_url: str = ""
    token: str = ""
    app: Any = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def start(self) -> ThreadServer:
        self.app = create_app(self.settings)
        self.token = self.app.state.runtime.token
        port = self.settings.port
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("server thread stopped while starting")
            threading.Event().wait(0.02)
        bound = self._server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{bound}"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
            self._server = None


def run_events(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    """Every event of ``run_id`` on the events topic, in log order (read with a log client of our own)."""

    async def read() -> list[dict[str, Any]]:
        log = open_event_log(settings)
        await log.start()
        try:
            ends = await log.end_offsets(settings.events_topic)
            consumer = log.consumer([settings.events_topic])
            await consumer.start()
            out: list[LogRecord] = []
            try:
                while sum(1 for _ in out) < sum(ends.values()):
                    batch = await consumer.fetch(10_000, timeout=1.0)
                    if not batch:
                        break
                    out += batch
            finally:
                await consumer.close()
        finally:
            await log.close()
        events = [orjson.loads(r.value) for r in sorted(out, key=lambda r: (r.partition, r.offset))]
        return [e for e in events if e.get("run_id") == run_id]

    return asyncio.run(read())


@pytest.fixture
def server(settings: Settings) -> Iterator[ThreadServer]:
    running = ThreadServer(settings).start()
    try:
        yield running
    finally:
        running.stop()


def make_client(server: ThreadServer, tmp_path: Path, **overrides: Any) -> Client:
    config = ClientConfig(
        uri=overrides.pop("uri", server.base_url),
        api=server.base_url,
        token=server.token,
        spool_dir=tmp_path / "spool",
        topic_prefix=server.settings.topic_prefix,
        flush_interval=overrides.pop("flush_interval", 0.05),
        **overrides,
    )
    return Client(config)


@pytest.fixture
def sdk(server: ThreadServer, tmp_path: Path) -> Iterator[Client]:
    client = make_client(server, tmp_path)
    old = set_client(client)
    try:
        yield client
    finally:
        client.close(timeout=10)
        set_client(old)
