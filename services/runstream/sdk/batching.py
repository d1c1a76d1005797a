"""Turning buffered logging records into events. Pure: no I/O, no threads.

The logging calls append small tuples (cheap on the training loop's thread); the
sender thread turns them into events here: consecutive points of one run become
one ``metrics.logged`` event, consecutive output lines one ``logs.appended`` (at
most 1,000 lines or 512 KiB of text, so no event nears Kafka's message limit),
everything else one event each. Per run, events keep the order of the calls and
get increasing ``seq`` numbers.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from runstream.sdk.values import wire

POINT = 0
LINE = 1
EVENT = 2

MAX_POINTS_PER_EVENT = 2000
MAX_LINES_PER_EVENT = 1000
MAX_LINE_BYTES_PER_EVENT = 512 * 1024
"""Encoded text one ``logs.appended`` event holds at most: far below Kafka's 1 MiB message limit."""

Record = tuple[Any, ...]
"""(POINT, ref, name, value, step, ts), (LINE, ref, stream, line_no, text, ts)
or (EVENT, ref, type, payload, ts)."""


@dataclass(eq=False)
class RunRef:
    """What every event of a run carries; ``seq`` is advanced by the sender thread only."""

    run_id: str
    experiment: str
    workspace: str
    seq: int = 0
    acked: dict[int, int] = field(default_factory=dict)
    """Highest acknowledged log offset per partition (read-your-writes)."""

    def next_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq


def envelope(ref: RunRef, type_: str, payload: dict[str, Any], ts: int | None = None) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": type_,
        "schema_version": 1,
        "workspace": ref.workspace,
        "experiment": ref.experiment,
        "run_id": ref.run_id,
        "ts": int(time.time() * 1000) if ts is None else ts,
        "seq": ref.next_seq(),
        "payload": payload,
    }


def build_events(records: list[Record]) -> list[tuple[RunRef, dict[str, Any]]]:
    """Events for ``records``, in call order per run."""
    out: list[tuple[RunRef, dict[str, Any]]] = []
    open_points: dict[int, list[dict[str, Any]]] = {}
    open_lines: dict[int, list[dict[str, Any]]] = {}
    line_bytes: dict[int, int] = {}
    refs: dict[int, RunRef] = {}

    def close(key: int) -> None:
        ref = refs[key]
        points = open_points.pop(key, None)
        if points:
            out.append((ref, envelope(ref, "metrics.logged", {"points": points}, points[-1]["ts"])))
        lines = open_lines.pop(key, None)
        line_bytes.pop(key, None)
        if lines:
            out.append((ref, envelope(ref, "logs.appended", {"lines": lines}, lines[-1]["ts"])))

    group: list[dict[str, Any]] | None = None
    group_key = -1
    for record in records:
        kind, ref = record[0], record[1]
        key = id(ref)
        if kind == POINT:
            # The hot path: consecutive points of one run go straight into the open group.
            if key != group_key or group is None:
                refs[key] = ref
                if key in open_lines:
                    close(key)
                group = open_points.setdefault(key, [])
                group_key = key
            value = record[3]
            group.append(
                {
                    "name": record[2],
                    "value": value if value - value == 0.0 else wire(value),
                    "step": record[4],
                    "ts": record[5],
                }
            )
            if len(group) >= MAX_POINTS_PER_EVENT:
                close(key)
                group = None
            continue
        group = None
        group_key = -1
        refs[key] = ref
        if kind == LINE:
            if key in open_points:
                close(key)
            size = len(orjson.dumps(record[4])) + 80
            if line_bytes.get(key, 0) + size > MAX_LINE_BYTES_PER_EVENT:
                close(key)
            lines = open_lines.setdefault(key, [])
            lines.append({"stream": record[2], "line_no": record[3], "text": record[4], "ts": record[5]})
            line_bytes[key] = line_bytes.get(key, 0) + size
            if len(lines) >= MAX_LINES_PER_EVENT:
                close(key)
        else:
            close(key)
            out.append((ref, envelope(ref, record[2], record[3], record[4])))
    for key in list(refs):
        close(key)
    return out


_SPLIT_NAMESPACE = uuid.UUID("5f0d3c1e-8a4b-4c1f-9a57-2b6d1e0c7a93")
_SPLITTABLE = {"metrics.logged": "points", "logs.appended": "lines"}


def split_event(event: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Two events holding the halves of ``event``'s points or lines, in order; None when it
    cannot be split (another type, or one item).

    The halves' ids derive from the event's id, so splitting the same event again (after
    a crash, from the spool) gives the same ids and the server's deduplication holds.
    """
    key = _SPLITTABLE.get(event["type"])
    items = event["payload"].get(key) if key else None
    if not isinstance(items, list) or len(items) < 2 or key is None:
        return None
    half = len(items) // 2
    return [
        {
            **event,
            "event_id": str(uuid.uuid5(_SPLIT_NAMESPACE, f"{event['event_id']}/{index}")),
            "payload": {**event["payload"], key: part},
        }
        for index, part in enumerate((items[:half], items[half:]))
    ]
