"""The projector's row builders and step tracker: pure, no ClickHouse."""

from __future__ import annotations

import base64
import math
import uuid
from typing import Any

import pytest

from runstream.errors import EventValidationError
from runstream.events.validation import EventValidator
from runstream.projector.rows import TABLE_COLUMNS, ProjectionRows, decode_chunk, point_version
from runstream.projector.series import StepTracker
from runstream.types import Envelope

FILE_ID = "5f0c6b5e-1b1a-4b8e-9d5a-9f1d2a3b4c5e"


def envelope(kind: str, payload: dict[str, Any], *, run_id: str = "r1", seq: int = 0) -> Envelope:
    event: Envelope = {
        "event_id": str(uuid.uuid4()),
        "type": kind,
        "schema_version": 1,
        "workspace": "w",
        "experiment": "e",
        "run_id": run_id,
        "ts": 1_764_300_000_000 + seq,
        "seq": seq,
        "payload": payload,
    }
    return EventValidator().validate(event)


SAMPLES: dict[str, dict[str, Any]] = {
    "run.created": {"name": "a", "compute": "gpu", "parent_run_id": "p1", "tags": {"k": "v"}},
    "run.queued": {},
    "run.started": {},
    "run.completed": {},
    "run.failed": {"error": "boom"},
    "run.canceled": {},
    "run.child_linked": {"child_run_id": "c1", "name": "child"},
    "run.tags_set": {"tags": {"k": "v2", "x": "y"}},
    "run.properties_set": {"properties": {"lr": 0.1, "ok": True, "s": "t"}},
    "metrics.logged": {
        "points": [{"name": "loss", "value": "NaN", "step": 3}, {"name": "acc", "value": 1, "step": 0}]
    },
    "list.logged": {"name": "fib", "values": [0, 1, "Infinity"]},
    "row.logged": {"name": "cos", "index": 2, "row": {"angle": 0.5, "cos": "-Infinity"}},
    "table.logged": {"name": "sin", "columns": {"angle": [0, 1], "sine": [0.0, 0.84]}},
    "logs.appended": {
        "lines": [
            {"stream": "stdout", "line_no": 0, "text": "hi"},
            {"stream": "stderr", "line_no": 0, "text": "!"},
        ]
    },
    "file.chunk": {"file_id": FILE_ID, "index": 0, "data": base64.b64encode(b"hello").decode()},
    "file.uploaded": {
        "file_id": FILE_ID,
        "kind": "output",
        "path": "out/a.txt",
        "size": 5,
        "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        "chunks": 1,
    },
}
EXPECTED_TABLES = {
    "run.created": {"run_events": 1, "run_tags": 1, "run_links": 1},
    "run.queued": {"run_events": 1},
    "run.started": {"run_events": 1},
    "run.completed": {"run_events": 1},
    "run.failed": {"run_events": 1},
    "run.canceled": {"run_events": 1},
    "run.child_linked": {"run_links": 1},
    "run.tags_set": {"run_tags": 2},
    "run.properties_set": {"run_properties": 3},
    "metrics.logged": {"metric_points": 2},
    "list.logged": {"run_lists": 1},
    "row.logged": {"run_rows": 1},
    "table.logged": {"run_tables": 1},
    "logs.appended": {"run_logs": 2},
    "file.chunk": {"file_chunks": 1},
    "file.uploaded": {"files": 1},
}


def test_every_event_type_of_the_schemas_is_projected() -> None:
    assert sorted(SAMPLES) == EventValidator().event_types


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_each_event_type_makes_its_rows_and_a_raw_event(kind: str) -> None:
    rows = ProjectionRows()
    event = envelope(kind, SAMPLES[kind])
    rows.add(event, 2, 41, topic="t.events", raw=b"{}")
    made = {table: len(r) for table, r in rows.tables.items() if r}
    assert made == {**EXPECTED_TABLES[kind], "raw_events": 1}
    for table, table_rows in rows.tables.items():
        for row in table_rows:
            assert len(row) == len(TABLE_COLUMNS[table]), table
            if table != "raw_events":
                named = dict(zip(TABLE_COLUMNS[table], row, strict=True))
                assert (named["log_partition"], named["log_offset"]) == (2, 41)
    raw = dict(zip(TABLE_COLUMNS["raw_events"], rows.tables["raw_events"][0], strict=True))
    assert (raw["topic"], raw["partition"], raw["offset"], raw["type"]) == ("t.events", 2, 41, kind)
    assert raw["event_id"] == uuid.UUID(event["event_id"]).int and raw["value"] == b"{}"


def test_metric_values_keep_non_finite_numbers_and_versions_order_relogs() -> None:
    rows = ProjectionRows()
    rows.add(envelope("metrics.logged", SAMPLES["metrics.logged"], seq=7), 0, 0)
    first = dict(zip(TABLE_COLUMNS["metric_points"], rows.metric_points[0], strict=True))
    assert math.isnan(first["value"]) and first["step"] == 3 and first["relog"] == 0
    assert first["version"] == point_version(7, 0) < point_version(7, 1) < point_version(8, 0)
    assert first["ts"] == 1_764_300_000_007  # integer milliseconds: DateTime64(3) ticks


def test_values_tags_and_properties_rows() -> None:
    rows = ProjectionRows()
    for kind in ("list.logged", "row.logged", "table.logged", "run.properties_set"):
        rows.add(envelope(kind, SAMPLES[kind]), 0, 0)
    values = dict(zip(TABLE_COLUMNS["run_lists"], rows.tables["run_lists"][0], strict=True))["values"]
    assert values[:2] == [0.0, 1.0] and values[2] == math.inf
    cells = dict(zip(TABLE_COLUMNS["run_rows"], rows.tables["run_rows"][0], strict=True))
    assert cells["row_index"] == 2 and cells["cells"] == {"angle": 0.5, "cos": -math.inf}
    props = {r[3]: r[4] for r in rows.tables["run_properties"]}
    assert props == {"lr": "0.1", "ok": "true", "s": '"t"'}


def test_file_chunks_are_decoded_and_bad_base64_is_refused() -> None:
    assert decode_chunk(base64.b64encode(b"\x00\xffdata").decode()) == b"\x00\xffdata"
    with pytest.raises(EventValidationError) as caught:
        decode_chunk("not base64!")
    assert caught.value.field == "payload.data"


def _points(*steps: int, name: str = "loss", run_id: str = "r1") -> ProjectionRows:
    rows = ProjectionRows()
    points = [{"name": name, "value": float(s), "step": s} for s in steps]
    rows.add(envelope("metrics.logged", {"points": points}, run_id=run_id), 0, 0)
    return rows


def _flags(rows: ProjectionRows) -> list[int]:
    return [row[TABLE_COLUMNS["metric_points"].index("relog")] for row in rows.metric_points]


def test_step_tracker_flags_steps_not_above_the_highest_written() -> None:
    tracker = StepTracker()
    rows = _points(0, 1, 2, 2, 1, 5)
    highest = tracker.flag(rows, {})
    assert _flags(rows) == [0, 0, 0, 1, 1, 0]
    assert highest == {("w", "e", "r1", "loss"): 5}
    again = _points(3, 6)
    tracker.flag(again, {})
    assert _flags(again) == [0, 0], "nothing is remembered before commit"
    tracker.commit(highest)
    again = _points(3, 6)
    tracker.flag(again, {})
    assert _flags(again) == [1, 0]


def test_step_tracker_uses_the_store_for_series_it_does_not_remember() -> None:
    tracker = StepTracker(capacity=1)
    key = ("w", "e", "r1", "loss")
    rows = _points(4, 9)
    assert tracker.unknown(rows.metric_series()) == [key]
    tracker.flag(rows, {key: 4})
    assert _flags(rows) == [1, 0]
    tracker.commit({key: 9, ("w", "e", "r2", "loss"): 1})
    assert len(tracker) == 1 and tracker.unknown([key]) == [key], "the least recently used is forgotten"
