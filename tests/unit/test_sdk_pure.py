"""The SDK's pure parts: value and name checks, lifecycle rules, batching, ignore rules."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runstream.events.validation import EventValidator
from runstream.sdk.batching import EVENT, LINE, POINT, Record, RunRef, build_events, split_event
from runstream.sdk.ignore import IgnoreRules
from runstream.sdk.lifecycle import RunStateError, RunStatus, check_open, check_transition
from runstream.sdk.snapshot import SnapshotTooLargeError, collect_files
from runstream.sdk.values import LoggingError, check_name, check_step, to_float, wire


class TensorLike:
    """What torch.Tensor offers for a scalar: numel() and item()."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def numel(self) -> int:
        return len(self.values)

    def item(self) -> float:
        if len(self.values) != 1:
            raise RuntimeError("a Tensor with 2 elements cannot be converted to Scalar")
        return self.values[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1.0),
        (0.25, 0.25),
        (np.float16(0.5), 0.5),
        (np.float64(1e300), 1e300),
        (np.int32(-3), -3.0),
        (np.array(4.0), 4.0),
        (TensorLike([2.5]), 2.5),
        (Fraction(1, 4), 0.25),
        (Decimal("1.5"), 1.5),
    ],
)
def test_numbers_and_scalars_are_accepted(value: Any, expected: float) -> None:
    assert to_float(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "1.0",
        None,
        True,
        np.bool_(True),
        [1.0],
        {"v": 1},
        np.array([1.0, 2.0]),
        TensorLike([1, 2]),
        1 + 2j,
    ],
)
def test_non_numbers_are_refused_with_the_type(value: Any) -> None:
    with pytest.raises(LoggingError, match="must be"):
        to_float(value)


def test_non_finite_values_keep_their_identity() -> None:
    assert wire(math.nan) == "NaN" and wire(math.inf) == "Infinity" and wire(-math.inf) == "-Infinity"
    assert wire(np.float32("nan").item()) == "NaN"


@pytest.mark.parametrize("name", ["loss", "Loss", "val/acc", "lr 1e-3", "a" * 256, "9lives"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", " loss", "loss\n", "a" * 257, "lo\tss", "/abs", "naïve", 3])
def test_bad_names(name: Any) -> None:
    with pytest.raises(LoggingError):
        check_name(name)


def test_steps() -> None:
    assert check_step(np.int64(5)) == 5
    for bad in (-1, 2**53, 1.0, True, "3"):
        with pytest.raises(LoggingError):
            check_step(bad)


def test_lifecycle_rules() -> None:
    check_transition("r", RunStatus.CREATED, RunStatus.QUEUED)
    check_transition("r", RunStatus.QUEUED, RunStatus.RUNNING)
    check_transition("r", RunStatus.RUNNING, RunStatus.COMPLETED)
    check_transition("r", RunStatus.QUEUED, RunStatus.CANCELED)
    with pytest.raises(RunStateError, match="it is running, expected created"):
        check_transition("r", RunStatus.RUNNING, RunStatus.QUEUED)
    with pytest.raises(RunStateError, match="it is created, expected running"):
        check_transition("r", RunStatus.CREATED, RunStatus.COMPLETED)
    for terminal in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED):
        with pytest.raises(RunStateError):
            check_open("r", terminal)
        for target in RunStatus:
            if target is not RunStatus.CREATED:
                with pytest.raises(RunStateError):
                    check_transition("r", terminal, target)


def test_batching_keeps_call_order_per_run_and_valid_events() -> None:
    a, b = RunRef("run-a", "exp", "default"), RunRef("run-b", "exp", "default")
    records: list[Record] = [
        (EVENT, a, "run.created", {}, 1),
        (POINT, a, "loss", 0.5, 0, 2),
        (POINT, b, "loss", math.nan, 0, 2),
        (POINT, a, "loss", 0.4, 1, 3),
        (LINE, a, "stdout", 0, "hello", 4),
        (POINT, a, "loss", 0.3, 2, 5),
        (EVENT, a, "run.completed", {}, 6),
    ]
    events = build_events(records)
    of_a = [e for ref, e in events if ref is a]
    assert [e["type"] for e in of_a] == [
        "run.created",
        "metrics.logged",
        "logs.appended",
        "metrics.logged",
        "run.completed",
    ]
    assert [e["seq"] for e in of_a] == [0, 1, 2, 3, 4]
    assert of_a[1]["payload"]["points"] == [
        {"name": "loss", "value": 0.5, "step": 0, "ts": 2},
        {"name": "loss", "value": 0.4, "step": 1, "ts": 3},
    ]
    of_b = [e for ref, e in events if ref is b]
    assert of_b[0]["payload"]["points"][0]["value"] == "NaN"
    validator = EventValidator()
    for _, event in events:
        validator.validate(event)


def test_batching_splits_long_series() -> None:
    ref = RunRef("run-a", "exp", "default")
    events = build_events([(POINT, ref, "x", float(i), i, 0) for i in range(4500)])
    assert [len(e["payload"]["points"]) for _, e in events] == [2000, 2000, 500]


def test_ignore_rules() -> None:
    rules = IgnoreRules.from_lines(
        ["# comment", "*.ckpt", "data/", "/build", "logs/**/*.txt", "!keep.ckpt", "a?c", "[xy].tmp"]
    )
    assert rules.ignored("model.ckpt", False)
    assert rules.ignored("deep/model.ckpt", False)
    assert not rules.ignored("keep.ckpt", False)
    assert rules.ignored("data", True) and not rules.ignored("data", False)
    assert rules.ignored("build", True) and not rules.ignored("src/build", True)
    assert rules.ignored("logs/a/b/c.txt", False) and rules.ignored("logs/c.txt", False)
    assert rules.ignored("abc", False) and not rules.ignored("abbc", False)
    assert rules.ignored("x.tmp", False) and not rules.ignored("z.tmp", False)
    assert not rules.ignored("train.py", False)


def test_snapshot_respects_ignore_files_and_the_cap(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text("x = 1")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"\0" * 1000)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "weights.ckpt").write_bytes(b"\0" * 10)
    (tmp_path / ".gitignore").write_text("data/\n")
    (tmp_path / ".runstreamignore").write_text("*.ckpt\n")
    names = [name for _, name in collect_files(tmp_path)]
    assert names == [".gitignore", ".runstreamignore", "train.py", "src/model.py"]
    (tmp_path / "large.txt").write_bytes(b"x" * 5000)
    with pytest.raises(SnapshotTooLargeError, match=r"over the cap.*\.runstreamignore"):
        collect_files(tmp_path, max_bytes=4000)


def test_an_event_splits_into_halves_with_ids_that_do_not_change() -> None:
    event: dict[str, Any] = {
        "event_id": "0b7d7a4e-9a51-4d0e-9c55-3a3c1b7f2d10",
        "type": "metrics.logged",
        "payload": {"points": [{"name": "x", "value": float(i), "step": i} for i in range(5)]},
    }
    first, second = split_event(event) or []
    assert [p["step"] for p in first["payload"]["points"]] == [0, 1]
    assert [p["step"] for p in second["payload"]["points"]] == [2, 3, 4]
    assert len({event["event_id"], first["event_id"], second["event_id"]}) == 3
    assert [e["event_id"] for e in split_event(event) or []] == [first["event_id"], second["event_id"]]
    assert split_event({**event, "payload": {"points": event["payload"]["points"][:1]}}) is None
    assert split_event({**event, "type": "list.logged", "payload": {"name": "l", "values": [1, 2]}}) is None
