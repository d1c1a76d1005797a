"""Widget and terminal tests: the real server in a thread (local event log), the SDK logging to it."""

from __future__ import annotations

import pytest

from tests.sdk.conftest import sdk, server

__all__ = ["sdk", "server"]  # the SDK tests' fixtures: the real server in a thread, a client for it


@pytest.fixture(params=["local"])
def adapter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
