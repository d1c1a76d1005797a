"""Turning validated events into projection rows. Pure: no I/O.

``TABLE_COLUMNS`` and the DDL in ``schemas/clickhouse`` describe the same tables.
Timestamps are written as integer milliseconds (the ticks of ``DateTime64(3)``) and
event ids as integers, which clickhouse-connect writes without converting each value.
Every row ends with the position of the event it came from (``log_partition``,
``log_offset``); ``raw_events`` gets one row per event, whatever its type.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from runstream.errors import EventValidationError
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

_POSITION = ("log_partition", "log_offset")
RUN_EVENT_COLUMNS = (
    "workspace", "experiment", "run_id", "event_id", "type", "status", "status_rank", "ts", "seq",
    "name", "compute", "parent_run_id", "error", *_POSITION,
)  # fmt: skip
METRIC_POINT_COLUMNS = (
    "workspace", "experiment", "run_id", "name", "step", "value", "ts", "version", "relog", "event_id",
    *_POSITION,
)  # fmt: skip
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "run_events": RUN_EVENT_COLUMNS,
    "metric_points": METRIC_POINT_COLUMNS,
    "run_tags": ("workspace", "experiment", "run_id", "key", "value", "seq", "event_id", *_POSITION),
    "run_properties": (
        "workspace", "experiment", "run_id", "key", "value_json", "seq", "event_id", *_POSITION,
    ),
    "run_links": (
        "workspace", "experiment", "parent_run_id", "child_run_id", "name", "seq", "event_id", *_POSITION,
    ),
    "run_lists": ("workspace", "experiment", "run_id", "name", "values", "seq", "ts", "event_id", *_POSITION),
    "run_rows": (
        "workspace", "experiment", "run_id", "name", "row_index", "cells", "seq", "ts", "event_id",
        *_POSITION,
    ),
    "run_tables": (
        "workspace", "experiment", "run_id", "name", "columns", "seq", "ts", "event_id", *_POSITION,
    ),
    "run_logs": (
        "workspace", "experiment", "run_id", "stream", "line_no", "text", "ts", "version", "event_id",
        *_POSITION,
    ),
    "files": (
        "workspace", "experiment", "run_id", "file_id", "kind", "path", "size", "sha256", "chunks",
        "content_type", "seq", "ts", "event_id", *_POSITION,
    ),
    "file_chunks": (
        "workspace", "experiment", "run_id", "file_id", "chunk_index", "data", "event_id", *_POSITION,
    ),
    "raw_events": (
        "workspace", "run_id", "experiment", "topic", "partition", "offset", "event_id", "type", "ts",
        "value",
    ),
}  # fmt: skip
"""Columns of every table the projector writes, in the order rows list them."""

STATUS_OF_TYPE: dict[str, tuple[str, int]] = {
    RUN_CREATED: ("created", 0),
    RUN_QUEUED: ("queued", 1),
    RUN_STARTED: ("running", 2),
    RUN_COMPLETED: ("completed", 3),
    RUN_FAILED: ("failed", 3),
    RUN_CANCELED: ("canceled", 3),
}

# A point's version is (producer seq, place in its batch): a later log of the same
# step wins. Batches hold at most 10,000 points or lines (schema), well under 2**20.
_INDEX_BITS = 20
_METRIC_RELOG = METRIC_POINT_COLUMNS.index("relog")
_METRIC_STEP = METRIC_POINT_COLUMNS.index("step")

SeriesKey = tuple[str, str, str, str]
"""A metric series: (workspace, experiment, run_id, name)."""


def point_version(seq: int, index: int) -> int:
    return (seq << _INDEX_BITS) | index


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def event_uuid(event_id: str) -> int:
    """An event id as the integer clickhouse-connect writes to a UUID column without parsing."""
    return uuid.UUID(event_id).int


def eid(event: Envelope) -> int:
    return event_uuid(event["event_id"])


def _floats(values: list[Any]) -> list[float]:
    return [from_wire_float(v) for v in values]


@dataclass
class ProjectionRows:
    """Rows for each table, from one batch of events (in log order)."""

    tables: dict[str, list[list[Any]]] = field(default_factory=lambda: {t: [] for t in TABLE_COLUMNS})

    @property
    def run_events(self) -> list[list[Any]]:
        return self.tables["run_events"]

    @property
    def metric_points(self) -> list[list[Any]]:
        return self.tables["metric_points"]

    def add(
        self,
        event: Envelope,
        partition: int,
        offset: int,
        *,
        topic: str | None = None,
        raw: bytes | None = None,
    ) -> None:
        """The rows of one event; with ``topic`` and ``raw``, its ``raw_events`` row too."""
        kind = event["type"]
        handler = _HANDLERS.get(kind)
        head = [event["workspace"], event["experiment"], event["run_id"]]
        pos = [partition, offset]
        if handler is not None:
            handler(self.tables, event, head, pos)
        if topic is not None and raw is not None:
            self.tables["raw_events"].append(
                [
                    event["workspace"], event["run_id"], event["experiment"], topic, partition, offset,
                    eid(event), kind, event["ts"], raw,
                ]
            )  # fmt: skip

    def metric_series(self) -> set[SeriesKey]:
        return {(r[0], r[1], r[2], r[3]) for r in self.metric_points}

    def iter_points(self) -> Iterator[tuple[SeriesKey, list[Any]]]:
        for row in self.metric_points:
            yield (row[0], row[1], row[2], row[3]), row

    @staticmethod
    def flag_relog(row: list[Any]) -> None:
        row[_METRIC_RELOG] = 1

    @staticmethod
    def step_of(row: list[Any]) -> int:
        step: int = row[_METRIC_STEP]
        return step


Handler = Callable[[dict[str, list[list[Any]]], Envelope, list[Any], list[int]], None]


def _lifecycle(tables: dict[str, list[list[Any]]], event: Envelope, head: list[Any], pos: list[int]) -> None:
    payload = event["payload"]
    status, rank = STATUS_OF_TYPE[event["type"]]
    tables["run_events"].append(
        [
            *head, eid(event), event["type"], status, rank, event["ts"],
            event["seq"], payload.get("name", ""), payload.get("compute", ""),
            payload.get("parent_run_id", ""), payload.get("error", ""), *pos,
        ]
    )  # fmt: skip
    if event["type"] == RUN_CREATED:
        for key, value in (payload.get("tags") or {}).items():
            tables["run_tags"].append([*head, key, value, event["seq"], eid(event), *pos])
        parent = payload.get("parent_run_id")
        if parent:
            tables["run_links"].append(
                [head[0], head[1], parent, head[2], payload.get("name", ""), event["seq"], eid(event), *pos]
            )


def _metrics(tables: dict[str, list[list[Any]]], event: Envelope, head: list[Any], pos: list[int]) -> None:
    rows = tables["metric_points"]
    seq, event_id, default_ts = event["seq"], eid(event), event["ts"]
    for index, point in enumerate(event["payload"]["points"]):
        ts = point.get("ts", default_ts)
        value = point["value"]
        rows.append(
            [
                *head, point["name"], point["step"],
                float(value) if not isinstance(value, str) else from_wire_float(value), ts,
                (seq << _INDEX_BITS) | index, 0, event_id, *pos,
            ]
        )  # fmt: skip


def _tags(tables: dict[str, list[list[Any]]], event: Envelope, head: list[Any], pos: list[int]) -> None:
    for key, value in event["payload"]["tags"].items():
        tables["run_tags"].append([*head, key, value, event["seq"], eid(event), *pos])


def _properties(tables: dict[str, list[list[Any]]], event: Envelope, head: list[Any], pos: list[int]) -> None:
    for key, value in event["payload"]["properties"].items():
        tables["run_properties"].append(
            [*head, key, orjson.dumps(value).decode(), event["seq"], eid(event), *pos]
        )


def _child(tables: dict[str, list[list[Any]]], event: Envelope, head: list[Any], pos: list[int]) -> None:
    payload = event["payload"]
    tables["run_links"].append(
        [
            head[0], head[1], head[2], payload["child_run_id"], payload.get("name", ""), event["seq"],
            eid(event), *pos,
        ]
    )  # fmt: skip


def _list(tables: dict[str, list[list[Any]]], event: Envelope, head: list[Any], pos: list[int]) -> None:
    payload = event["payload"]
    tables["run_lists"].append(
        [
            *head, payload["name"], _floats(payload["values"]), event["seq"], event["ts"],
            eid(event), *pos,
        ]
    )  # fmt: skip


def _row(tables: dict[str, list[list[Any]]], event: Envelope, head: list[Any], pos: list[int]) -> None:
    payload = event["payload"]
    cells = {key: from_wire_float(value) for key, value in payload["row"].items()}
    tables["run_rows"].append(
        [
            *head, payload["name"], payload["index"], cells, event["seq"], event["ts"],
            eid(event), *pos,
        ]
    )  # fmt: skip


def _table(tables: dict[str, list[list[Any]]], event: Envelope, head: list[Any], pos: list[int]) -> None:
    payload = event["payload"]
    columns = {key: _floats(values) for key, values in payload["columns"].items()}
    tables["run_tables"].append(
        [
            *head, payload["name"], columns, event["seq"], event["ts"], eid(event),
            *pos,
        ]
    )  # fmt: skip


def _logs(tables: dict[str, list[list[Any]]], event: Envelope, head: list[Any], pos: list[int]) -> None:
    rows = tables["run_logs"]
    seq = event["seq"]
    for index, line in enumerate(event["payload"]["lines"]):
        rows.append(
            [
                *head, line["stream"], line["line_no"], line["text"],
                line.get("ts", event["ts"]), (seq << _INDEX_BITS) | index,
                eid(event), *pos,
            ]
        )  # fmt: skip


def _file(tables: dict[str, list[list[Any]]], event: Envelope, head: list[Any], pos: list[int]) -> None:
    p = event["payload"]
    tables["files"].append(
        [
            *head, p["file_id"], p["kind"], p["path"], p["size"], p["sha256"], p["chunks"],
            p.get("content_type", ""), event["seq"], event["ts"], eid(event), *pos,
        ]
    )  # fmt: skip


def decode_chunk(data: str) -> bytes:
    """The bytes of a ``file.chunk``; raises ``EventValidationError`` when ``data`` is not base64."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise EventValidationError(
            "payload.data", "contentEncoding", "payload.data is not valid base64", data[:80]
        ) from None


def _chunk(tables: dict[str, list[list[Any]]], event: Envelope, head: list[Any], pos: list[int]) -> None:
    p = event["payload"]
    tables["file_chunks"].append([*head, p["file_id"], p["index"], decode_chunk(p["data"]), eid(event), *pos])


_HANDLERS: dict[str, Handler] = {
    **dict.fromkeys(STATUS_OF_TYPE, _lifecycle),
    METRICS_LOGGED: _metrics,
    "run.tags_set": _tags,
    "run.properties_set": _properties,
    "run.child_linked": _child,
    "list.logged": _list,
    "row.logged": _row,
    "table.logged": _table,
    "logs.appended": _logs,
    "file.uploaded": _file,
    "file.chunk": _chunk,
}
"""Every event type of ``schemas/events/v1`` and the rows it makes."""
