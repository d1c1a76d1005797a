"""Every HTTP and websocket endpoint needs the bearer token."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from runstream.auth.tokens import load_or_create_token
from runstream.server.app import create_app
from runstream.settings import Settings
from tests.support import running_server


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_requests_without_a_valid_token_get_401(settings: Settings) -> None:
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
            for method, path in (
                ("POST", "/api/v1/events"),
                ("GET", "/api/v1/runs/r1"),
                ("GET", "/api/v1/runs/r1/metrics"),
            ):
                r = await http.request(method, path, headers=headers, content=b"[]")
                assert r.status_code == 401, (method, path, headers)
                assert r.json()["error"] == "unauthorized"
                assert "token" in r.json()["detail"]
        assert (await http.get("/healthz")).status_code == 200
        ok = await http.get("/api/v1/runs/r1", headers=server.headers)
        assert ok.status_code == 404

        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"{server.ws_url}/api/v1/live"):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            async with websockets.connect(f"{server.ws_url}/api/v1/live?token=wrong"):
                pass
        async with websockets.connect(f"{server.ws_url}/api/v1/live?token={server.token}") as ws:
            await ws.send('{"op": "ping"}')
            assert await ws.recv() == '{"type":"pong"}'


def test_embedded_token_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "token"
    token, created = load_or_create_token(path)
    assert created and token.startswith("rs_") and len(token) > 30
    assert path.stat().st_mode & 0o777 == 0o600
    again, created_again = load_or_create_token(path)
    assert again == token and not created_again


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
def test_server_without_token_setting_uses_the_data_dir_token(settings: Settings) -> None:
    app = create_app(settings.with_changes(token=None))
    runtime = app.state.runtime
    assert runtime.token_created
    assert (settings.data_dir / "token").read_text().strip() == runtime.token
