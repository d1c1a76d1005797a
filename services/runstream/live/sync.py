"""The live client from plain (non-async) code: a background thread runs the asyncio client.

for event in follow_run("http://127.0.0.1:8555", token, "run-1"):
    print(event.type)

status = wait_for_completion("http://127.0.0.1:8555", token, "run-1", show_output=True)
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from runstream.live.client import LiveClient
from runstream.live.messages import TERMINAL_STATUSES, Event, LiveError, LiveMessage

_END = object()
OUTPUT_TYPES = ["run.*", "logs.appended"]
"""What ``wait_for_completion`` needs of a run: its status changes and its log lines."""


class _Pump:
    """Runs one run subscription in a thread; the caller's thread takes its messages from a queue."""

    def __init__(self, base_url: str, token: str | None, run_id: str, options: dict[str, Any]) -> None:
        self.base_url, self.token, self.run_id, self.options = base_url, token, run_id, options
        self.messages: queue.Queue[Any] = queue.Queue(1000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: LiveClient | None = None
        self._stopping = False
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="runstream-live", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def _main(self) -> None:
        asyncio.run(self._pump())

    async def _pump(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = self._client = LiveClient(self.base_url, self.token)
        try:
            subscription = client.subscribe_run(self.run_id, **self.options)
            self._started.set()
            async for message in subscription:
                await self._put(message)
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
            await self._put(exc)
        finally:
            self._started.set()
            await client.close()
            await self._put(_END)

    async def _put(self, item: object) -> None:
        while not self._stopping:
            try:
                self.messages.put_nowait(item)
            except queue.Full:
                await asyncio.sleep(0.02)
            else:
                return

    def get(self, timeout: float | None) -> object:
        return self.messages.get(timeout=timeout)

    def stop(self) -> None:
        self._stopping = True
        loop, client = self._loop, self._client
        if loop is not None and client is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError, TimeoutError, asyncio.CancelledError):
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(5.0)
        self._thread.join(5.0)


def follow_run(
    base_url: str,
    token: str | None,
    run_id: str,
    *,
    workspace: str = "default",
    cursor: int | None = -1,
    types: list[str] | None = None,
    timeout: float | None = None,
) -> Iterator[LiveMessage]:
    """A run's messages (from its first event by default), reconnecting by itself, until closed.

    Raises ``TimeoutError`` when ``timeout`` seconds pass, and the subscription's
    error (``SubscriptionError``, ``AuthError``) when the gateway refuses it.
    """
    options: dict[str, Any] = {"workspace": workspace, "cursor": cursor, "types": types}
    pump = _Pump(base_url, token, run_id, options)
    pump.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"run {run_id}: nothing more within {timeout} s")
            try:
                item = pump.get(remaining)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        pump.stop()


def wait_for_completion(
    base_url: str,
    token: str | None,
    run_id: str,
    *,
    workspace: str = "default",
    show_output: bool = True,
    timeout: float | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> str:
    """Block until the run completes, fails or is canceled; returns that status.

    With ``show_output``, print its log lines (stdout to ``out``, stderr to
    ``err``) and its status changes as they reach the log, from its first one.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    for message in follow_run(
        base_url, token, run_id, workspace=workspace, types=OUTPUT_TYPES, timeout=timeout
    ):
        if not isinstance(message, Event):
            continue
        if show_output:
            print_event(message, run_id, out, err)
        if message.status in TERMINAL_STATUSES:
            return message.status
    raise LiveError(f"run {run_id}: the subscription ended before the run did")


def print_event(message: Event, run_id: str, out: TextIO, err: TextIO) -> None:
    """One event as ``wait_for_completion`` shows it: log lines as they are, statuses on a line."""
    if message.type == "logs.appended":
        for line in message.event["payload"]["lines"]:
            print(line["text"], file=err if line["stream"] == "stderr" else out, flush=True)
    elif message.status is not None:
        print(f"[runstream] {run_id}: {message.status}", file=out, flush=True)
