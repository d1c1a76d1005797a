from __future__ import annotations

import math
from typing import Any

import pytest

from runstream.errors import EventValidationError
from runstream.events.codec import from_wire_float, to_wire_float
from runstream.events.schemas import load_schema_set, schemas_root
from runstream.events.validation import EventValidator, check_size, new_event_id


def envelope(type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": new_event_id(),
        "type": type_,
        "schema_version": 1,
        "workspace": "default",
        "experiment": "mnist",
        "run_id": "run-1",
        "ts": 1_700_000_000_000,
        "seq": 0,
        "payload": payload,
    }


GOOD = [
    ("run.created", {"name": "n", "compute": "gpu-cluster", "parent_run_id": "p1", "tags": {"a": "b"}}),
    ("run.created", {}),
    ("run.queued", {}),
    ("run.started", {}),
    ("run.completed", {}),
    ("run.failed", {"error": "Traceback ..."}),
    ("run.canceled", {}),
    ("metrics.logged", {"points": [{"name": "loss", "value": 0.1, "step": 0, "ts": 1}]}),
    ("metrics.logged", {"points": [{"name": "a/b c.d-e_f", "value": "NaN", "step": 3}]}),
    ("run.child_linked", {"child_run_id": "child-1", "name": "fold 1"}),
    ("run.tags_set", {"tags": {"team": "vision"}}),
    ("run.properties_set", {"properties": {"lr": 0.01, "arch": "resnet", "pretrained": True}}),
    ("list.logged", {"name": "fibonacci", "values": [0, 1, 1, 2, 3, "Infinity"]}),
    ("row.logged", {"name": "cosine wave", "index": 0, "row": {"angle": 0.5, "cos": 0.877}}),
    ("table.logged", {"name": "sine wave", "columns": {"angle": [0.0, 0.5], "sine": [0.0, 0.479]}}),
    ("logs.appended", {"lines": [{"stream": "stdout", "line_no": 0, "text": "epoch 1", "ts": 5}]}),
    (
        "file.uploaded",
        {
            "file_id": "5f0c6b5e-1b1a-4b8e-9d5a-9f1d2a3b4c5d",
            "kind": "snapshot",
            "path": "snapshot.zip",
            "size": 3,
            "sha256": "a" * 64,
            "chunks": 1,
        },
    ),
    ("file.chunk", {"file_id": "5f0c6b5e-1b1a-4b8e-9d5a-9f1d2a3b4c5d", "index": 0, "data": "AAEC"}),
]


def test_every_schema_file_is_compiled() -> None:
    files = {p.stem for p in (schemas_root() / "events" / "v1").glob("*.json")}
    compiled = set(load_schema_set(1).payloads) | {"envelope"}
    assert files == compiled
    assert {"run.created", "run.started", "run.completed", "run.failed", "run.canceled"} <= compiled
    assert "metrics.logged" in compiled


@pytest.mark.parametrize(("type_", "payload"), GOOD)
def test_good_events_pass(type_: str, payload: dict[str, Any]) -> None:
    event = envelope(type_, payload)
    assert EventValidator().validate(event) == event


@pytest.mark.parametrize(
    ("type_", "payload", "field", "rule"),
    [
        ("run.created", {"tags": {"a": 1}}, "payload.tags.a", "type"),
        ("run.created", {"compute": "bad name!"}, "payload.compute", "pattern"),
        ("run.started", {"x": 1}, "payload.x", "additionalProperties"),
        ("metrics.logged", {}, "payload.points", "required"),
        (
            "metrics.logged",
            {"points": [{"name": "l", "value": "nan", "step": 0}]},
            "payload.points[0].value",
            "anyOf",
        ),
        ("metrics.logged", {"points": [{"name": "l", "value": 1}]}, "payload.points[0].step", "required"),
    ],
)
def test_bad_payloads_name_field_and_rule(type_: str, payload: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        EventValidator().validate(envelope(type_, payload))
    assert (caught.value.field, caught.value.rule) == (field, rule)
    assert field in caught.value.message


def test_trailing_newline_does_not_pass_a_pattern() -> None:
    with pytest.raises(EventValidationError) as caught:
        EventValidator().validate({**envelope("run.started", {}), "experiment": "mnist\n"})
    assert caught.value.field == "experiment"
    assert "\\Z" not in caught.value.message


def test_not_an_object() -> None:
    with pytest.raises(EventValidationError) as caught:
        EventValidator().validate([1, 2])
    assert caught.value.field == "event"


def test_size_check_names_the_limit() -> None:
    check_size("event", 10, 10)
    with pytest.raises(EventValidationError, match=r"11 bytes.*limit is 10"):
        check_size("event", 11, 10)


@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, 1e308, -1e-308, math.inf, -math.inf])
def test_floats_round_trip_through_the_wire_encoding(value: float) -> None:
    assert from_wire_float(to_wire_float(value)) == value


def test_nan_round_trips() -> None:
    assert to_wire_float(math.nan) == "NaN"
    assert math.isnan(from_wire_float("NaN"))
    assert to_wire_float(math.inf) == "Infinity" and to_wire_float(-math.inf) == "-Infinity"


def test_table_columns_must_have_equal_length() -> None:
    good = envelope("table.logged", {"name": "sine wave", "columns": {"angle": [0, 1], "sine": [0, 0.84]}})
    EventValidator().validate(good)
    bad = envelope("table.logged", {"name": "sine wave", "columns": {"angle": [0, 1], "sine": [0]}})
    with pytest.raises(EventValidationError) as caught:
        EventValidator().validate(bad)
    assert (caught.value.field, caught.value.rule) == ("payload.columns.sine", "equalLength")
