"""The live protocol's edges: malformed or unauthorized messages get an error frame naming the
problem and the socket stays usable; oversized and binary frames, and silence, close it with
their code; heartbeats."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from runstream.auth.grants import Role
from runstream.gateway.connection import GatewayConfig
from runstream.settings import Settings
from tests.support import running_server


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_bad_messages_get_error_frames(settings: Settings) -> None:
    async with (
        running_server(settings) as server,
        websockets.connect(f"{server.ws_url}/api/v1/live", additional_headers=server.headers) as ws,
    ):
        cases = [
            ("{oops", "not valid JSON"),
            ("[1, 2]", "JSON object"),
            ('{"op": "dance"}', "op: unknown operation"),
            ('{"op": "subscribe", "run_id": "r1"}', "sub:"),
            ('{"op": "subscribe", "sub": "a", "run_id": "bad id!"}', "run_id:"),
            ('{"op": "subscribe", "sub": "a", "run_id": "r1", "cursor": "x"}', "cursor:"),
            ('{"op": "unsubscribe", "sub": "zzz"}', "no subscription"),
        ]
        for text, expected in cases:
            await ws.send(text)
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply["type"] == "error", text
            assert expected in reply["detail"], (text, reply)
        await ws.send('{"op": "subscribe", "sub": "a", "run_id": "r1"}')
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        await ws.send('{"op": "subscribe", "sub": "a", "run_id": "r1"}')
        assert "already subscribed" in orjson.loads(await ws.recv())["detail"]
        await ws.send('{"op": "unsubscribe", "sub": "a"}')
        assert orjson.loads(await ws.recv()) == {"type": "unsubscribed", "sub": "a"}


async def recv(ws: websockets.ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def test_a_subscribe_the_token_may_not_read_is_refused_and_the_socket_stays_usable(
    settings: Settings,
) -> None:
    async with running_server(settings) as server:
        _, token = await server.app.state.runtime.tokens.issue("default", Role.READ)
        async with websockets.connect(
            f"{server.ws_url}/api/v1/live", additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await ws.send('{"op": "subscribe", "sub": "a", "run_id": "r1", "workspace": "secret"}')
            refused = await recv(ws)
            assert refused["type"] == "error" and refused["code"] == "forbidden" and refused["sub"] == "a"
            assert "workspace" in refused["detail"] and "secret" in refused["detail"]
            await ws.send('{"op": "subscribe", "sub": "a", "run_id": "r1", "snapshot": false}')
            assert (await recv(ws))["type"] == "subscribed"


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_oversized_and_binary_messages_close_the_socket_with_their_code(settings: Settings) -> None:
    async with running_server(settings) as server:
        url = f"{server.ws_url}/api/v1/live?token={server.token}"
        async with websockets.connect(url) as ws:
            await ws.send('{"op": "ping", "id": "' + "x" * 70_000 + '"}')
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        async with websockets.connect(url) as ws:
            await ws.send(b'{"op": "ping"}')
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
            assert "text" in closed.value.rcvd.reason
        async with websockets.connect(url) as ws:  # the gateway is still up
            await ws.send('{"op": "ping", "id": 3}')
            assert await recv(ws) == {"type": "pong", "id": 3}


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_heartbeats_keep_a_client_that_answers_and_close_a_silent_one(settings: Settings) -> None:
    async with running_server(settings) as server:
        server.app.state.runtime.gateway.config = GatewayConfig(heartbeat_interval=0.1, idle_timeout=0.6)
        await asyncio.sleep(1.1)  # the watchdog's current sleep (1 s at most) ends: it uses the new timers
        url = f"{server.ws_url}/api/v1/live?token={server.token}"
        async with websockets.connect(url) as answering, websockets.connect(url) as silent:
            beats = 0
            while beats < 10:  # about a second: longer than the idle timeout
                message = await recv(answering)
                assert message["type"] == "heartbeat" and message["idle_timeout"] == 0.6
                await answering.send('{"op": "pong"}')
                beats += 1
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    assert (await recv(silent))["type"] == "heartbeat"
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
            assert "idle timeout" in closed.value.rcvd.reason
            await answering.send('{"op": "ping"}')
            while (message := await recv(answering))["type"] == "heartbeat":
                pass
            assert message == {"type": "pong"}


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_the_subscription_limit_is_an_error_not_a_close(settings: Settings) -> None:
    async with running_server(settings) as server:
        server.app.state.runtime.gateway.config = GatewayConfig(max_subscriptions=2)
        async with websockets.connect(
            f"{server.ws_url}/api/v1/live", additional_headers=server.headers
        ) as ws:
            for sub in ("a", "b", "c"):
                await ws.send(
                    orjson.dumps({"op": "subscribe", "sub": sub, "run_id": "r", "snapshot": False}).decode()
                )
            # Frames of different subscriptions may come in any order.
            replies = sorted([await recv(ws) for _ in range(3)], key=lambda r: str(r["sub"]))
            assert [r["type"] for r in replies] == ["subscribed", "subscribed", "error"]
            assert replies[2]["code"] == "limit"
            await ws.send('{"op": "unsubscribe", "sub": "a"}')
            assert await recv(ws) == {"type": "unsubscribed", "sub": "a"}
            await ws.send('{"op": "subscribe", "sub": "c", "run_id": "r", "snapshot": false}')
            assert (await recv(ws))["type"] == "subscribed"
