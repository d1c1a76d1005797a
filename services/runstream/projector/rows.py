"""Turning validated events into projection rows. Pure: no I/O.

Column lists here and the DDL in ``schemas/clickhouse`` describe the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runstream.events.codec import from_wire_float
from runstream.types import (
    METRICS_LOGGED,
    RUN_CANCELED,
    RUN_COMPLETED,
    RUN_CREATED,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_STARTED,
    Envelope,
)

RUN_EVENT_COLUMNS = (
    "workspace",
    "experiment",
    "run_id",
    "event_id",
    "type",
    "status",
    "status_rank",
    "ts",
    "seq",
    "name",
    "compute",
    "parent_run_id",
    "tags",
    "error",
    "log_partition",
    "log_offset",
)
METRIC_POINT_COLUMNS = (
    "workspace",
    "experiment",
    "run_id",
    "name",
    "step",
    "value",
    "ts",
    "version",
    "event_id",
)

STATUS_OF_TYPE: dict[str, tuple[str, int]] = {
    RUN_CREATED: ("created", 0),
    RUN_QUEUED: ("queued", 1),
    RUN_STARTED: ("running", 2),
    RUN_COMPLETED: ("completed", 3),
    RUN_FAILED: ("failed", 3),
    RUN_CANCELED: ("canceled", 3),
}

# A point's version is (producer seq, place in its batch): a later log of the same
# step wins. Batches hold at most 10,000 points (schema), well under 2**20.
_INDEX_BITS = 20


def point_version(seq: int, index: int) -> int:
    return (seq << _INDEX_BITS) | index


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass
class ProjectionRows:
    """Rows for each table, from one batch of events."""

    run_events: list[list[Any]] = field(default_factory=list)
    metric_points: list[list[Any]] = field(default_factory=list)

    def add(self, event: Envelope, partition: int, offset: int) -> None:
        kind = event["type"]
        payload = event["payload"]
        if kind in STATUS_OF_TYPE:
            status, rank = STATUS_OF_TYPE[kind]
            self.run_events.append(
                [
                    event["workspace"],
                    event["experiment"],
                    event["run_id"],
                    event["event_id"],
                    kind,
                    status,
                    rank,
                    ms_to_datetime(event["ts"]),
                    event["seq"],
                    payload.get("name", ""),
                    payload.get("compute", ""),
                    payload.get("parent_run_id", ""),
                    payload.get("tags", {}),
                    payload.get("error", ""),
                    partition,
                    offset,
                ]
            )
        elif kind == METRICS_LOGGED:
            for index, point in enumerate(payload["points"]):
                self.metric_points.append(
                    [
                        event["workspace"],
                        event["experiment"],
                        event["run_id"],
                        point["name"],
                        point["step"],
                        from_wire_float(point["value"]),
                        ms_to_datetime(point.get("ts", event["ts"])),
                        point_version(event["seq"], index),
                        event["event_id"],
                    ]
                )
