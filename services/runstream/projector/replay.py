"""``runstream replay``: rebuild every projection from the start of the log, then switch to it.

1. Make the next generation database (``<db>_g<N>``, see ``store.generations``) and
   apply the migrations to it.
2. Project the events topic into it from offset 0, with a consumer group of its own
   (``<group>.replay.g<N>``), recording positions under the projector's group name,
   until it has applied everything the log held when the replay started; then catch
   up with what arrived meanwhile (a few rounds, until the rest is small).
3. Switch: the front database's analytics views now read the new generation, and a
   row in ``generation_switches`` names it. Every running service notices within
   ``GENERATION_CHECK_SECONDS`` (``ProjectionStore.refresh``); a running projector
   then continues from the positions the replay recorded, so nothing is missed.

The previous generation is kept (``--drop-previous`` drops it once the switch is
made). A replay refuses to switch when the log no longer starts at offset 0 (Kafka
deleted old segments): the rebuilt projections would miss those events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from runstream.errors import RunstreamError
from runstream.eventlog.port import EventLog, TopicPartition
from runstream.projector.projector import Projector
from runstream.settings import Settings
from runstream.store.clickhouse import ProjectionStore
from runstream.store.generations import GENERATION_CHECK_SECONDS, Generation

log = logging.getLogger("runstream.replay")

CATCH_UP_ROUNDS = 5
SMALL_REST = 1000


class ReplayError(RunstreamError):
    """A replay could not complete; nothing was switched."""


@dataclass(frozen=True)
class ReplayResult:
    previous: Generation | None
    generation: Generation
    events: int
    seconds: float


async def _wait_until(
    projector: Projector, task: asyncio.Task[None], targets: dict[int, int], topic: str
) -> None:
    async with projector.positions_changed:
        while True:
            applied = projector.applied_positions
            if all(applied.get(TopicPartition(topic, p), 0) >= end for p, end in targets.items() if end > 0):
                return
            if task.done():
                task.result()
                raise ReplayError("the replay projector stopped before reaching the end of the log")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(projector.positions_changed.wait(), 1.0)


def _check_complete(projector: Projector) -> None:
    late = {tp: first for tp, first in projector.first_offsets.items() if first > 0}
    if late:
        tp, first = min(late.items())
        raise ReplayError(
            f"the log no longer starts at offset 0 (partition {tp.partition} starts at {first}): "
            "a replay would lose the deleted events; nothing was switched"
        )


async def replay(
    settings: Settings,
    event_log: EventLog,
    store: ProjectionStore,
    *,
    drop_previous: bool = False,
    progress: Callable[[str], None] = log.info,
) -> ReplayResult:
    """Rebuild the projections of ``store`` (a started store following the generation in use)."""
    started = time.monotonic()
    previous = store.generation
    fresh = await store.new_generation()
    generation = fresh.generation
    assert generation is not None  # a started store has one
    progress(f"replay: building generation {generation.number} in {generation.database}")
    projector = Projector(
        event_log,
        fresh,
        events_topic=settings.events_topic,
        deadletter_topic=None,
        group=settings.projector_group,
        consumer_group=f"{settings.projector_group}.replay.g{generation.number}",
    )
    task = asyncio.create_task(projector.run(), name="replay-projector")
    try:
        targets = await event_log.end_offsets(settings.events_topic)
        total = sum(targets.values())
        progress(f"replay: {total} records on {settings.events_topic}")
        for _ in range(CATCH_UP_ROUNDS):
            await _wait_until(projector, task, targets, settings.events_topic)
            ends = await event_log.end_offsets(settings.events_topic)
            rest = sum(max(end - targets.get(p, 0), 0) for p, end in ends.items())
            targets = ends
            if rest <= SMALL_REST:
                break
        await _wait_until(projector, task, targets, settings.events_topic)
        _check_complete(projector)
    except BaseException:
        projector.stop()
        with contextlib.suppress(Exception):
            await task
        await fresh.close()
        raise
    events = sum(targets.values())
    await fresh.activate(reason=f"replay of {events} records")
    projector.stop()
    await task
    await fresh.close()
    progress(f"replay: switched to generation {generation.number} ({events} records)")
    if drop_previous and previous is not None:
        await asyncio.sleep(2 * GENERATION_CHECK_SECONDS)  # running services move over first
        await store.refresh()
        await store.drop_generation(previous)
        progress(f"replay: dropped generation {previous.number} ({previous.database})")
    return ReplayResult(previous, generation, events, time.monotonic() - started)
