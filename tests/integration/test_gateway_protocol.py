"""Malformed websocket messages get an error frame naming the problem; the socket stays usable."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import websockets

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
