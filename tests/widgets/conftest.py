"""Widget and terminal tests: the real server in a thread (local event log), the SDK logging to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runstream.sdk.client import Client, set_client
from runstream.settings import Settings
from tests.sdk.conftest import ThreadServer, make_client


@pytest.fixture(params=["local"])
def adapter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def server(settings: Settings) -> Iterator[ThreadServer]:
    running = ThreadServer(settings).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def sdk(server: ThreadServer, tmp_path: Path) -> Iterator[Client]:
    client = make_client(server, tmp_path)
    old = set_client(client)
    try:
        yield client
    finally:
        client.close(timeout=10)
        set_client(old)
