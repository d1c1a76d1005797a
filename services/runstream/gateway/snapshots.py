"""Every ClickHouse read of the gateway: positions, snapshots and events older than the log.

A handful of small queries, kept here so that a change to the projections is
adapted in one place. They read:

- ``projector_offsets``: how far the projector applied each partition;
- ``runs`` (workspace, run_id, experiment, status, compute, parent_run_id);
- ``metric_summaries`` (the highest step of each run's metric) and
  ``metric_points`` (FINAL: one value per run, metric and step; ``version`` is
  the producer's seq shifted left 20 bits plus the point's index in its batch);
- ``raw_events`` (workspace, run_id, experiment, topic, partition, offset,
  event_id, type, ts, value): every valid event with its log position, for a
  cursor older than what the log still holds.

Values are always bound parameters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from runstream.errors import StoreError
from runstream.events.codec import to_wire_float
from runstream.gateway.protocol import Kind
from runstream.store.clickhouse import ProjectionStore

_VERSION_INDEX_BITS = 20
LIFECYCLE_TYPES = ["run.created", "run.queued", "run.started", "run.completed", "run.failed", "run.canceled"]
ACTIVE_STATUSES = ["created", "queued", "running"]
MAX_SNAPSHOT_RUNS = 10_000

_APPLIED = """
SELECT partition, max(next_offset) FROM projector_offsets
WHERE grp = {grp:String} AND topic = {topic:String}
GROUP BY partition
"""
_RUN = """
SELECT run_id, experiment, status, compute, parent_run_id FROM runs
WHERE workspace = {workspace:String} AND run_id = {target:String}
"""
_EXPERIMENT_RUNS = """
SELECT run_id, experiment, status, compute, parent_run_id FROM runs
WHERE workspace = {workspace:String} AND experiment = {target:String}
ORDER BY run_id LIMIT {limit:UInt32}
"""
_COMPUTE_RUNS = """
SELECT run_id, experiment, status, compute, parent_run_id FROM runs
WHERE workspace = {workspace:String} AND compute = {target:String} AND status IN {active:Array(String)}
ORDER BY run_id LIMIT {limit:UInt32}
"""
# The latest point of each metric: its highest step from metric_summaries, then that
# step's row (its latest version) from metric_points, read by primary key.
_RUN_METRICS = """
SELECT run_id, name, step, value, toUnixTimestamp64Milli(ts), version FROM metric_points FINAL
WHERE workspace = {workspace:String} AND run_id = {target:String}
  AND (name, step) IN (
    SELECT name, max(last_step) FROM metric_summaries
    WHERE workspace = {workspace:String} AND run_id = {target:String} GROUP BY name)
ORDER BY run_id, name, version DESC LIMIT 1 BY run_id, name
"""
_EXPERIMENT_METRICS = """
SELECT run_id, name, step, value, toUnixTimestamp64Milli(ts), version FROM metric_points FINAL
WHERE workspace = {workspace:String} AND experiment = {target:String}
  AND (run_id, name, step) IN (
    SELECT run_id, name, max(last_step) FROM metric_summaries
    WHERE workspace = {workspace:String} AND experiment = {target:String} GROUP BY run_id, name)
ORDER BY run_id, name, version DESC LIMIT 1 BY run_id, name
"""
_HAS_RAW_EVENTS = "EXISTS TABLE raw_events"
_RAW_SELECT = """
SELECT `offset`, value FROM raw_events
WHERE topic = {topic:String} AND `partition` = {partition:UInt32}
  AND `offset` >= {start:UInt64} AND `offset` < {stop:UInt64} AND workspace = {workspace:String}
"""
_RAW_PAGE = "ORDER BY `offset` LIMIT 1 BY `offset` LIMIT {limit:UInt32}"
_FIRST_HELD = """
SELECT min(`offset`), count() FROM raw_events
WHERE topic = {topic:String} AND `partition` = {partition:UInt32}
"""
_RAW_EVENTS = {
    Kind.RUN: _RAW_SELECT + " AND run_id = {target:String} " + _RAW_PAGE,
    Kind.EXPERIMENT: _RAW_SELECT + " AND experiment = {target:String} " + _RAW_PAGE,
    Kind.COMPUTE: _RAW_SELECT + " AND type IN {lifecycle:Array(String)} " + _RAW_PAGE,
}


def _run_document(row: tuple[Any, ...]) -> dict[str, Any]:
    run_id, experiment, status, compute, parent = row[:5]
    return {
        "run_id": run_id,
        "experiment": experiment,
        "status": status,
        "compute": compute or None,
        "parent_run_id": parent or None,
    }


def _point(row: tuple[Any, ...]) -> dict[str, Any]:
    _, _, step, value, ts, version = row
    version = int(version)
    return {
        "step": int(step),
        "value": to_wire_float(float(value)),
        "ts": int(ts),
        "seq": version >> _VERSION_INDEX_BITS,
        "index": version & ((1 << _VERSION_INDEX_BITS) - 1),
    }


class GatewayStore:
    """The gateway's view of the projections."""

    def __init__(self, store: ProjectionStore, *, group: str, topic: str) -> None:
        self.store = store
        self.group = group
        self.topic = topic
        self._raw_events = False

    async def applied_positions(self) -> dict[int, int]:
        """Per partition, the next offset the projector will apply (everything before is projected)."""
        rows = await self.store.query(_APPLIED, {"grp": self.group, "topic": self.topic})
        return {int(p): int(o) for p, o in rows}

    async def wait_applied(self, partition: int, offset: int, timeout: float) -> int:
        """Wait until the projector applied ``partition`` up to ``offset`` (exclusive); its position."""
        deadline = time.monotonic() + timeout
        while True:
            applied = (await self.applied_positions()).get(partition, 0)
            if applied >= offset or time.monotonic() >= deadline:
                return applied
            await asyncio.sleep(0.2)

    async def snapshot(self, kind: Kind, workspace: str, target: str) -> dict[str, Any]:
        """The current state a subscription starts from (see PROTOCOL.md, "Snapshots")."""
        params = {"workspace": workspace, "target": target, "limit": MAX_SNAPSHOT_RUNS}
        if kind is Kind.RUN:
            runs = await self.store.query(_RUN, params)
            metrics: dict[str, Any] = {}
            for row in await self.store.query(_RUN_METRICS, params):
                metrics[row[1]] = _point(row)
            return {"run": _run_document(runs[0]) if runs else None, "metrics": metrics}
        if kind is Kind.COMPUTE:
            rows = await self.store.query(_COMPUTE_RUNS, {**params, "active": ACTIVE_STATUSES})
            return {"runs": {row[0]: {"status": row[2], "experiment": row[1]} for row in rows}}
        documents: dict[str, dict[str, Any]] = {}
        for row in await self.store.query(_EXPERIMENT_RUNS, params):
            document = _run_document(row)
            del document["run_id"], document["experiment"]
            documents[row[0]] = {**document, "metrics": {}}
        for row in await self.store.query(_EXPERIMENT_METRICS, params):
            run = documents.get(row[0])
            if run is not None:
                run["metrics"][row[1]] = _point(row)
        return {"runs": documents}

    async def has_raw_events(self) -> bool:
        if not self._raw_events:
            rows = await self.store.query(_HAS_RAW_EVENTS)
            self._raw_events = bool(rows and rows[0][0])
        return self._raw_events

    async def first_held_offset(self, partition: int) -> int | None:
        """The oldest offset of ``partition`` that ``raw_events`` still holds (None: nothing).

        Below it, ClickHouse cannot give a subscription its events: they were never
        projected into this generation (a replay after the log's retention) or its own
        retention removed them.
        """
        rows = await self.store.query(_FIRST_HELD, {"topic": self.topic, "partition": partition})
        if not rows or not int(rows[0][1]):
            return None
        return int(rows[0][0])

    async def raw_events(
        self, kind: Kind, workspace: str, target: str, partition: int, start: int, stop: int, page: int = 2000
    ) -> AsyncIterator[list[tuple[int, bytes]]]:
        """Pages of ``(offset, event bytes)`` of the subscription's events at ``[start, stop)``."""
        if not await self.has_raw_events():
            raise StoreError("ClickHouse has no raw_events table")
        params: dict[str, Any] = {
            "topic": self.topic,
            "partition": partition,
            "workspace": workspace,
            "target": target,
            "lifecycle": LIFECYCLE_TYPES,
            "limit": page,
            "stop": stop,
        }
        while start < stop:
            rows = await self.store.query(_RAW_EVENTS[kind], {**params, "start": start})
            if not rows:
                return
            yield [(int(o), v.encode() if isinstance(v, str) else bytes(v)) for o, v in rows]
            if len(rows) < page:
                return
            start = int(rows[-1][0]) + 1
