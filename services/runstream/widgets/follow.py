"""Drive a ``RunDetailsModel`` from the live gateway with ``runstream.live`` (what widget.js does in JS)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from runstream.live.client import LiveClient, LiveSubscription
from runstream.live.messages import Event
from runstream.widgets.model import RunDetailsModel

CHILD_TYPES = ["run.*"]
CHILD_GRACE = 2.0
"""Seconds to wait, once the run ended, for its children's last statuses."""


async def follow_details(
    model: RunDetailsModel,
    client: LiveClient,
    *,
    workspace: str = "default",
    until: Callable[[RunDetailsModel], bool] | None = None,
    timeout: float | None = None,
) -> RunDetailsModel:
    """Apply the run's events (after ``model.cursor``) and its children's statuses to ``model``.

    Returns when the run reaches a terminal status (or ``until(model)`` holds),
    after unsubscribing; raises ``TimeoutError`` after ``timeout`` seconds and the
    subscription's error when the gateway refuses it. Calling it again with the
    same model resumes after the model's cursor: nothing is applied twice.
    """
    queue: asyncio.Queue[tuple[str | None, Event | BaseException | None]] = asyncio.Queue()
    subscriptions: list[LiveSubscription] = []
    tasks: list[asyncio.Task[None]] = []

    async def pump(child: str | None, subscription: LiveSubscription) -> None:
        try:
            async for message in subscription:
                if isinstance(message, Event):
                    await queue.put((child, message))
        except Exception as exc:  # noqa: BLE001 - raised by the caller below
            await queue.put((child, exc))
        else:
            await queue.put((child, None))

    def watch(child: str | None) -> None:
        if child is None:
            sub = client.subscribe_run(model.run_id, cursor=model.subscribe_cursor(), workspace=workspace)
        else:
            sub = client.subscribe_run(child, cursor=-1, workspace=workspace, types=CHILD_TYPES)
        subscriptions.append(sub)
        tasks.append(asyncio.create_task(pump(child, sub)))

    def done() -> bool:
        return model.finished or (until is not None and until(model))

    async def loop() -> None:
        watch(None)
        for known in list(model.children):
            watch(known)
        watched = set(model.children)
        while not done():
            child, item = await queue.get()
            if isinstance(item, BaseException):
                if child is None:
                    raise item
                continue  # a child that cannot be followed keeps its last status
            if item is None:
                if child is None:
                    return
                continue
            if child is not None:
                model.apply_child(child, item.event)
                continue
            model.apply(item.event, item.cursor)
            for linked in model.children.keys() - watched:
                watched.add(linked)
                watch(linked)
        # The run ended: its children's last statuses may still be on their way (they end first).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CHILD_GRACE):
                while any(not child.finished for child in model.children.values()):
                    child, item = await queue.get()
                    if child is not None and isinstance(item, Event):
                        model.apply_child(child, item.event)

    try:
        await asyncio.wait_for(loop(), timeout)
    finally:
        for sub in subscriptions:
            await sub.close()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return model
