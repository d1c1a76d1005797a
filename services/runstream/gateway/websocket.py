"""``/api/v1/live``: the websocket endpoint of the gateway.

Client messages (JSON text frames):

- ``{"op": "subscribe", "sub": "s1", "run_id": "r1"}``, optionally with
  ``"cursor": N`` (the last cursor received) to resume after it;
- ``{"op": "unsubscribe", "sub": "s1"}``;
- ``{"op": "ping"}``.

Server messages: ``subscribed`` (with the partition and the cursor live delivery
starts after), ``event`` (``sub``, ``partition``, ``cursor``, ``event``: the
event as on the log), ``unsubscribed``, ``resync`` (the client fell behind: its
subscription ended at ``cursor``; subscribe again with it), ``pong`` and
``error`` (``detail`` names the problem; the socket stays open).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import orjson
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from runstream.gateway.hub import Connection, LiveHub

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_SUB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
MAX_SUBSCRIPTIONS = 256


def error_frame(detail: str, sub: object = None) -> bytes:
    return orjson.dumps({"type": "error", "sub": sub if isinstance(sub, str) else None, "detail": detail})


class GatewayService:
    def __init__(self, hub: LiveHub, *, queue_size: int = 1000) -> None:
        self.hub = hub
        self.queue_size = queue_size

    def routes(self) -> list[WebSocketRoute]:
        return [WebSocketRoute("/api/v1/live", self.live)]

    async def live(self, websocket: WebSocket) -> None:
        await websocket.accept()
        connection = Connection(self.queue_size)
        sender = asyncio.create_task(self._send_loop(websocket, connection))
        try:
            while True:
                text = await websocket.receive_text()
                await self._handle(connection, text)
        except WebSocketDisconnect:
            pass
        finally:
            self.hub.disconnect(connection)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    @staticmethod
    async def _send_loop(websocket: WebSocket, connection: Connection) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                frame, sub_id, cursor = await connection.queue.get()
                await websocket.send_text(frame.decode("utf-8"))
                connection.mark_sent(sub_id, cursor)

    async def _handle(self, connection: Connection, text: str) -> None:
        try:
            message: Any = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            connection.send(error_frame(f"message is not valid JSON: {exc.msg} at byte {exc.pos}"))
            return
        if not isinstance(message, dict):
            connection.send(error_frame("message must be a JSON object"))
            return
        op = message.get("op")
        sub = message.get("sub")
        if op == "ping":
            connection.send(b'{"type":"pong"}')
        elif op == "subscribe":
            await self._subscribe(connection, message)
        elif op == "unsubscribe":
            if not isinstance(sub, str) or sub not in connection.subscriptions:
                connection.send(error_frame(f"sub: no subscription {sub!r}", sub))
                return
            self.hub.unsubscribe(connection, sub)
            connection.send(orjson.dumps({"type": "unsubscribed", "sub": sub}))
        else:
            connection.send(
                error_frame(f"op: unknown operation {op!r}; expected subscribe, unsubscribe or ping")
            )

    async def _subscribe(self, connection: Connection, message: dict[str, Any]) -> None:
        sub, run_id, cursor = message.get("sub"), message.get("run_id"), message.get("cursor")
        if not isinstance(sub, str) or not _SUB_ID.match(sub):
            connection.send(error_frame(f"sub: must be 1-64 of A-Z a-z 0-9 _ . : -; got {sub!r}"))
        elif sub in connection.subscriptions:
            connection.send(error_frame(f"sub: {sub!r} is already subscribed", sub))
        elif len(connection.subscriptions) >= MAX_SUBSCRIPTIONS:
            connection.send(error_frame(f"sub: at most {MAX_SUBSCRIPTIONS} per socket", sub))
        elif not isinstance(run_id, str) or not _RUN_ID.match(run_id):
            connection.send(error_frame(f"run_id: must be a run id; got {run_id!r}", sub))
        elif cursor is not None and (not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < -1):
            connection.send(error_frame(f"cursor: must be an integer >= -1; got {cursor!r}", sub))
        else:
            await self.hub.subscribe(connection, sub, run_id, cursor)
