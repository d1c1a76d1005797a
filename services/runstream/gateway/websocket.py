"""``/api/v1/live``: the websocket endpoint of the gateway (the protocol is in ``PROTOCOL.md``).

The bearer token is checked at the handshake by ``BearerAuthMiddleware``; each
subscribe is then checked against the token's workspace (a token of workspace A
gets a ``forbidden`` error frame for anything of B, and the socket stays usable),
and when a token is revoked its sockets are closed with 1008. One task reads the
client's messages, one writes the connection's queue to the socket; a watchdog sends every connection a
heartbeat each ``heartbeat_interval`` and closes the ones that sent nothing
(not even the ``pong`` answering a heartbeat) for ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from runstream.auth.grants import Principal
from runstream.auth.middleware import PRINCIPAL_KEY
from runstream.gateway.connection import Connection, ConnectionState, GatewayConfig
from runstream.gateway.hub import LiveHub
from runstream.gateway.protocol import (
    CloseCode,
    ErrorCode,
    LiveRequestError,
    Ping,
    Pong,
    Subscribe,
    Unsubscribe,
    error_frame,
    heartbeat_frame,
    parse_request,
    pong_frame,
)

log = logging.getLogger("runstream.gateway")

Authorizer = Callable[[Principal | None, str], Awaitable[bool]]
"""``(principal, workspace) -> allowed``: whether a connection may read a workspace."""


async def allow_the_tokens_workspace(principal: Principal | None, workspace: str) -> bool:
    """A token reads its own workspace (or every one, for ``*``)."""
    return principal is not None and principal.may_access(workspace)


class GatewayService:
    def __init__(
        self,
        hub: LiveHub,
        *,
        config: GatewayConfig | None = None,
        authorizer: Authorizer = allow_the_tokens_workspace,
    ) -> None:
        self.hub = hub
        self.config = config or GatewayConfig()
        self.authorizer = authorizer
        self.connections: set[Connection] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def routes(self) -> list[WebSocketRoute]:
        # An ASGI callable, not a function: Starlette routes it without wrapping every
        # message in its WebSocket and exception-handling layers (a cost paid per frame).
        return [WebSocketRoute("/api/v1/live", _LiveEndpoint(self))]

    async def start(self) -> None:
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch(), name="runstream-gateway-watchdog")

    def token_revoked(self, token_id: str) -> None:
        """Close every socket of a token that was just revoked."""
        for connection in list(self.connections):
            if connection.principal is not None and connection.principal.token_id == token_id:
                connection.close(CloseCode.POLICY_VIOLATION, f"token {token_id} was revoked")

    async def close(self) -> None:
        for connection in list(self.connections):
            connection.close(CloseCode.GOING_AWAY, "gateway shutting down; reconnect with your cursors")
        task, self._watchdog = self._watchdog, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def live(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        principal = scope.get(PRINCIPAL_KEY)
        connection = Connection(self.config, principal if isinstance(principal, Principal) else None)
        self.connections.add(connection)
        sender = asyncio.create_task(self._send_loop(send, connection))
        try:
            while connection.state is ConnectionState.OPEN:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                connection.last_received = time.monotonic()
                text = message.get("text")
                if text is None:
                    connection.close(
                        CloseCode.UNSUPPORTED_DATA,
                        "binary frames are not part of the protocol; send JSON text",
                    )
                elif len(text) > connection.config.max_message_bytes or (
                    len(text.encode("utf-8")) > connection.config.max_message_bytes
                ):
                    connection.close(
                        CloseCode.MESSAGE_TOO_BIG,
                        f"message larger than {connection.config.max_message_bytes} bytes",
                    )
                else:
                    await self._handle(connection, text)
        finally:
            self.connections.discard(connection)
            self.hub.disconnect(connection)
            if connection.state is ConnectionState.CLOSING:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(sender), 5.0)
            connection.state = ConnectionState.CLOSED
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send_loop(self, send: Send, connection: Connection) -> None:
        # OSError: uvicorn's ClientDisconnected; RuntimeError: sending after the close.
        with contextlib.suppress(RuntimeError, OSError):
            while True:
                item = await connection.next_frame()
                if item is None:
                    if connection.state is ConnectionState.CLOSING:
                        code, reason = connection.close_code, connection.close_reason
                        await send({"type": "websocket.close", "code": code, "reason": reason})
                    return
                frame, sub, cursor = item
                connection.in_flight = item
                await send({"type": "websocket.send", "text": frame.decode("utf-8")})
                connection.in_flight = None
                if sub is not None and cursor is not None:
                    sub.sent_cursor = cursor

    async def _handle(self, connection: Connection, text: str) -> None:
        try:
            request = parse_request(text)
        except LiveRequestError as exc:
            connection.push_control(error_frame(exc.detail, exc.sub, exc.code))
            return
        if isinstance(request, Ping):
            connection.push_control(pong_frame(request.id))
        elif isinstance(request, Pong):
            return
        elif isinstance(request, Unsubscribe):
            if not self.hub.unsubscribe(connection, request.sub):
                connection.push_control(error_frame(f"sub: no subscription {request.sub!r}", request.sub))
                return
            connection.push_control(orjson.dumps({"type": "unsubscribed", "sub": request.sub}))
        else:
            await self._subscribe(connection, request)

    async def _subscribe(self, connection: Connection, request: Subscribe) -> None:
        sub = request.sub
        if sub in connection.subscriptions:
            connection.push_control(error_frame(f"sub: {sub!r} is already subscribed", sub))
            return
        if len(connection.subscriptions) >= connection.config.max_subscriptions:
            connection.push_control(
                error_frame(
                    f"sub: at most {connection.config.max_subscriptions} subscriptions per socket",
                    sub,
                    ErrorCode.LIMIT,
                )
            )
            return
        if not await self.authorizer(connection.principal, request.workspace):
            connection.push_control(
                error_frame(
                    f"workspace: this token may not read workspace {request.workspace!r}",
                    sub,
                    ErrorCode.FORBIDDEN,
                )
            )
            return
        if connection.state is ConnectionState.OPEN:
            self.hub.subscribe(connection, request)

    async def _watch(self) -> None:
        """A heartbeat to every connection each interval; close the ones that went silent."""
        while True:
            config = self.config
            tick = min(config.heartbeat_interval, config.idle_timeout) / 4
            await asyncio.sleep(min(1.0, max(0.02, tick)))
            now = time.monotonic()
            for connection in list(self.connections):
                idle = connection.config.idle_timeout
                if now - connection.last_received > idle:
                    connection.close(
                        CloseCode.IDLE_TIMEOUT,
                        f'idle timeout: no message for {idle:g} s; answer heartbeats with {{"op":"pong"}}',
                    )
                elif now - connection.last_heartbeat >= connection.config.heartbeat_interval:
                    connection.last_heartbeat = now
                    connection.push_control(heartbeat_frame(int(time.time() * 1000), idle))


class _LiveEndpoint:
    def __init__(self, service: GatewayService) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.service.live(scope, receive, send)
