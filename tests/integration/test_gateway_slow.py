"""A client that stops reading gets resync; a fast client on the same gateway gets everything.

The slow client's socket has a tiny receive buffer and is not read: the kernel,
then uvicorn's write buffer, then the gateway's bounded queue fill up. The fast
client, subscribed to the same run on the same gateway, must receive every
event meanwhile. Both adapters, real stack; no timing assertions.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from typing import Any

import httpx
import orjson
import websockets

from runstream.gateway.connection import GatewayConfig
from runstream.settings import Settings
from tests.conftest import unique
from tests.support import event, running_server


def line() -> str:
    """8,000 characters that permessage-deflate cannot shrink much."""
    return base64.b64encode(os.urandom(6000)).decode()


async def recv(ws: websockets.ClientConnection, timeout: float = 20.0) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def test_a_slow_client_gets_resync_while_a_fast_one_keeps_receiving(settings: Settings) -> None:
    run_id = unique("run")
    count = 160  # about 6.5 MB of log lines
    sent = [
        event(
            "logs.appended",
            run_id,
            {"lines": [{"stream": "stdout", "line_no": i * 5 + j, "text": line()} for j in range(5)]},
            seq=i,
        )
        for i in range(count)
    ]
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60) as http,
    ):
        server.app.state.runtime.gateway.config = GatewayConfig(queue_frames=200, queue_bytes=1024 * 1024)
        host, port = server.base_url.removeprefix("http://").split(":")
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect((host, int(port)))
        subscribe = {"op": "subscribe", "sub": "s", "run_id": run_id, "snapshot": False}
        async with (
            websockets.connect(
                f"{server.ws_url}/api/v1/live",
                additional_headers=server.headers,
                sock=raw,
                max_queue=1,
                max_size=None,
            ) as slow,
            websockets.connect(
                f"{server.ws_url}/api/v1/live", additional_headers=server.headers, max_size=None
            ) as fast,
        ):
            for ws in (slow, fast):
                await ws.send(orjson.dumps(subscribe).decode())
            subscribed = await recv(slow)  # the last frame the slow client reads for a while
            assert subscribed["type"] == "subscribed"
            assert (await recv(fast))["type"] == "subscribed"
            fast_got: list[str] = []
            for start in range(0, count, 10):  # bursts the fast client reads as they come
                r = await http.post("/api/v1/events", content=orjson.dumps(sent[start : start + 10]))
                assert r.status_code == 200
                while len(fast_got) < start + 10:
                    frame = await recv(fast)
                    assert frame["type"] == "event", frame
                    fast_got.append(frame["event"]["event_id"])
            assert fast_got == [e["event_id"] for e in sent]
            assert server.app.state.runtime.hub.resyncs >= 1

            # Now the slow client reads: what was written before the resync, then the resync.
            slow_got: list[tuple[int, str]] = []
            while True:
                frame = await recv(slow)
                if frame["type"] == "resync":
                    break
                if frame["type"] == "event":
                    slow_got.append((frame["cursor"], frame["event"]["event_id"]))
            assert frame["sub"] == "s" and frame["run_id"] == run_id
            # The last cursor the socket was written: everything up to it was received.
            assert frame["cursor"] == (slow_got[-1][0] if slow_got else subscribed["cursor"])
            assert len(slow_got) < count
            resume = {"op": "subscribe", "sub": "s", "run_id": run_id, "cursor": frame["cursor"]}
            await slow.send(orjson.dumps(resume).decode())
            assert (await recv(slow))["type"] == "subscribed"
            while len(slow_got) < count:
                frame = await recv(slow)
                assert frame["type"] == "event", frame
                slow_got.append((frame["cursor"], frame["event"]["event_id"]))
            assert [e for _, e in slow_got] == [e["event_id"] for e in sent]
