"""An asyncio client of the live protocol, reconnecting by itself with each subscription's cursor.

    async with LiveClient("http://127.0.0.1:8555", token) as client:
        async for message in client.subscribe_run("run-1", cursor=-1):
            ...

One websocket carries every subscription of a client. When it drops (network,
gateway restart, idle timeout) the client connects again, to the same URL or
any gateway behind it, and subscribes again with each subscription's last
cursor: the iterators go on with exactly the events after it. A ``resync``
(the client read too slowly) is handled the same way on the open socket. A
subscription's queue is bounded: when the code iterating it falls behind, the
client stops reading the socket, and the gateway, not this process, holds the
difference (up to its own bound, then a resync).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from runstream.errors import AuthError
from runstream.gateway.protocol import TARGET_FIELD, CloseCode, Cursor, ErrorCode, Kind, parse_cursor
from runstream.live.messages import Event, LiveError, LiveMessage, Subscribed, SubscriptionError, Update

log = logging.getLogger("runstream.live")

FATAL_CLOSE_CODES = frozenset({CloseCode.UNSUPPORTED_DATA, CloseCode.MESSAGE_TOO_BIG})
"""Close codes that connecting again would only repeat."""
_END = object()


def live_url(base_url: str) -> str:
    """The websocket URL of the live endpoint for a server's base URL (http(s):// or ws(s)://)."""
    base = base_url.rstrip("/")
    if base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    elif base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    return base if base.endswith("/api/v1/live") else base + "/api/v1/live"


class LiveSubscription:
    """One subscription: an async iterator of ``Subscribed``, ``Event`` and ``Update`` messages."""

    def __init__(
        self,
        client: LiveClient,
        sub: str,
        kind: Kind,
        target: str,
        *,
        workspace: str,
        cursor: Cursor | None,
        snapshot: bool,
        max_rate: float | None,
        max_queue: int,
        types: tuple[str, ...] | None = None,
    ) -> None:
        self.client = client
        self.sub = sub
        self.kind = kind
        self.target = target
        self.workspace = workspace
        self.cursor = cursor
        """The last cursor received: what a reconnect subscribes with."""
        self.snapshot = snapshot
        self.max_rate = max_rate
        self.types = types
        self.started = False
        self.closed = False
        self.queue: asyncio.Queue[Any] = asyncio.Queue(max_queue)

    def subscribe_message(self) -> str:
        message: dict[str, Any] = {"op": "subscribe", "sub": self.sub, TARGET_FIELD[self.kind]: self.target}
        message["workspace"] = self.workspace
        if self.cursor is not None:
            message["cursor"] = (
                self.cursor if isinstance(self.cursor, int) else {str(p): o for p, o in self.cursor.items()}
            )
        else:
            message["snapshot"] = self.snapshot
        if self.max_rate is not None:
            message["max_rate"] = self.max_rate
        if self.types is not None:
            message["types"] = list(self.types)
        return orjson.dumps(message).decode()

    def __aiter__(self) -> AsyncIterator[LiveMessage]:
        return self

    async def __anext__(self) -> LiveMessage:
        if self.closed and self.queue.empty():
            raise StopAsyncIteration
        item = await self.queue.get()
        if item is _END:
            self.closed = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self.closed = True
            raise item
        message: LiveMessage = item
        return message

    async def close(self) -> None:
        """Unsubscribe; the iterator ends."""
        await self.client._unsubscribe(self)


class LiveClient:
    """A client of ``/api/v1/live`` (see ``runstream/gateway/PROTOCOL.md``)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        open_timeout: float = 10.0,
        max_queue: int = 10_000,
    ) -> None:
        self.url = live_url(base_url)
        self.token = token
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.open_timeout = open_timeout
        self.max_queue = max_queue
        self.connections = 0
        """How many times a socket was opened (1 + reconnects)."""
        self._subs: dict[str, LiveSubscription] = {}
        self._ws: websockets.ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._closed = False
        self._count = 0

    async def __aenter__(self) -> LiveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def subscribe_run(
        self,
        run_id: str,
        *,
        cursor: int | None = None,
        workspace: str = "default",
        snapshot: bool = True,
        max_rate: float | None = None,
        types: list[str] | None = None,
    ) -> LiveSubscription:
        """A run's events after ``cursor`` (-1: all of them), or its snapshot and then its events.

        ``types`` keeps only those event types (``"run.*"`` names every lifecycle event).
        """
        return self._subscribe(Kind.RUN, run_id, workspace, cursor, snapshot, max_rate, types)

    def subscribe_experiment(
        self,
        experiment: str,
        *,
        cursor: dict[int, int] | None = None,
        workspace: str = "default",
        snapshot: bool = True,
        max_rate: float | None = None,
    ) -> LiveSubscription:
        """An experiment's runs: status and latest metric values, as ``Update`` messages."""
        return self._subscribe(Kind.EXPERIMENT, experiment, workspace, cursor, snapshot, max_rate)

    def subscribe_compute(
        self,
        compute: str,
        *,
        cursor: dict[int, int] | None = None,
        workspace: str = "default",
        snapshot: bool = True,
        max_rate: float | None = None,
    ) -> LiveSubscription:
        """The runs queued or active on a compute target, as ``Update`` messages (``active``)."""
        return self._subscribe(Kind.COMPUTE, compute, workspace, cursor, snapshot, max_rate)

    def _subscribe(
        self,
        kind: Kind,
        target: str,
        workspace: str,
        cursor: Cursor | None,
        snapshot: bool,
        max_rate: float | None,
        types: list[str] | None = None,
    ) -> LiveSubscription:
        if self._closed:
            raise LiveError("the live client is closed")
        self._count += 1
        sub = LiveSubscription(
            self,
            f"{kind.value}-{self._count}",
            kind,
            target,
            workspace=workspace,
            cursor=parse_cursor(kind, cursor),
            snapshot=snapshot,
            max_rate=max_rate,
            max_queue=self.max_queue,
            types=None if types is None else tuple(types),
        )
        self._subs[sub.sub] = sub
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="runstream-live-client")
        else:
            self._send_soon(sub.subscribe_message())
        return sub

    async def _unsubscribe(self, sub: LiveSubscription) -> None:
        if self._subs.pop(sub.sub, None) is not None:
            self._send_soon(orjson.dumps({"op": "unsubscribe", "sub": sub.sub}).decode())
        self._end(sub, _END)

    def _end(self, sub: LiveSubscription, item: object) -> None:
        self._subs.pop(sub.sub, None)
        if sub.closed:
            return
        sub.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            sub.queue.put_nowait(item)
        if sub.queue.full() and item is not _END:  # the iterator must still see why it ended
            sub.queue.get_nowait()
            sub.queue.put_nowait(item)

    def _send_soon(self, text: str) -> None:
        ws = self._ws
        if ws is not None:
            task = asyncio.create_task(self._send(ws, text))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    @staticmethod
    async def _send(ws: websockets.ClientConnection, text: str) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            await ws.send(text)

    async def close(self) -> None:
        """End every subscription and close the socket; returns once the connection task ended."""
        self._closed = True
        for sub in list(self._subs.values()):
            self._end(sub, _END)
        ws = self._ws
        if ws is not None:  # ends the connection task's read loop with a closing handshake
            with contextlib.suppress(ConnectionClosed, OSError):
                await ws.close()
        task = self._task
        if task is not None:
            if not task.done() and ws is None:  # sleeping before a reconnect, or connecting
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._task = None

    async def _run(self) -> None:
        delay = self.reconnect_delay
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        while not self._closed:
            try:
                async with websockets.connect(
                    self.url,
                    additional_headers=headers,
                    max_size=None,
                    open_timeout=self.open_timeout,
                    close_timeout=2.0,
                ) as ws:
                    self._ws = ws
                    self.connections += 1
                    delay = self.reconnect_delay
                    for sub in list(self._subs.values()):
                        await ws.send(sub.subscribe_message())
                    async for frame in ws:
                        await self._dispatch(ws, frame)
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    self._fail_all(AuthError(f"the live gateway refused the token: {exc}"))
                    return
                log.warning("live: %s; connecting again", exc)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code in FATAL_CLOSE_CODES:
                    self._fail_all(LiveError(f"the live gateway closed the socket: {exc}"))
                    return
                log.info("live: socket closed (%s); connecting again", exc)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                log.info("live: cannot reach %s (%s); connecting again", self.url, exc)
            finally:
                self._ws = None
            if not self._subs or self._closed:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.max_reconnect_delay)

    def _fail_all(self, error: BaseException) -> None:
        for sub in list(self._subs.values()):
            self._end(sub, error)

    async def _dispatch(self, ws: websockets.ClientConnection, frame: str | bytes) -> None:
        message: dict[str, Any] = orjson.loads(frame)
        kind = message.get("type")
        if kind == "heartbeat":
            await ws.send('{"op":"pong"}')
            return
        sub = self._subs.get(message.get("sub") or "")
        if sub is None:
            return
        if kind == "event":
            await self._event(sub, message["cursor"], message["partition"], message["event"])
        elif kind == "events":
            for cursor, event in zip(message["cursors"], message["events"], strict=True):
                await self._event(sub, cursor, message["partition"], event)
        elif kind == "update":
            cursor = parse_cursor(sub.kind, message["cursor"])
            assert isinstance(cursor, dict)
            sub.cursor = cursor
            await sub.queue.put(Update(cursor, message["runs"]))
        elif kind == "subscribed":
            cursor = parse_cursor(sub.kind, message["cursor"])
            assert cursor is not None
            first = not sub.started
            sub.started, sub.cursor = True, cursor
            if first or message.get("snapshot") is not None:
                await sub.queue.put(Subscribed(message["kind"], cursor, message.get("snapshot")))
        elif kind == "resync":
            log.info("live: %s resynced at %s: %s", sub.sub, message.get("cursor"), message.get("reason"))
            if sub.started:
                sub.cursor = parse_cursor(sub.kind, message.get("cursor"))
            await ws.send(sub.subscribe_message())
        elif kind == "error":
            code, detail = str(message.get("code")), str(message.get("detail"))
            if code == ErrorCode.UNAVAILABLE:
                log.warning("live: %s unavailable (%s); subscribing again", sub.sub, detail)
                await asyncio.sleep(self.reconnect_delay)
                await ws.send(sub.subscribe_message())
            else:
                self._end(sub, SubscriptionError(code, detail))

    async def _event(self, sub: LiveSubscription, cursor: int, partition: int, event: dict[str, Any]) -> None:
        if isinstance(sub.cursor, int) and cursor <= sub.cursor:
            return  # already received (never expected; kept as a safety net)
        sub.cursor = cursor
        await sub.queue.put(Event(cursor, partition, event))
