"""The logging surface against the real stack (both event-log adapters, real ClickHouse engine)."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import runstream
from runstream.sdk.client import Client
from runstream.settings import Settings
from tests.sdk.conftest import ThreadServer, run_events


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_series_logged_in_a_loop_read_back_in_step_order(sdk: Client) -> None:
    run = runstream.start_run("curves", capture_output=False, snapshot=False)
    expected = [sigmoid((i - 50) / 10) for i in range(100)]
    for value in expected:
        run.log("sigmoid", value)
    run.log("special", math.nan)
    run.log("special", math.inf)
    run.log("special", -math.inf)
    run.log("numpy", np.float32(0.5), step=3)
    run.log("numpy", np.int64(7), step=4)
    run.log("numpy", np.array(2.5), step=5)
    metrics = run.get_metrics()
    assert metrics["sigmoid"] == expected
    special = metrics["special"]
    assert math.isnan(special[0]) and special[1:] == [math.inf, -math.inf]
    assert metrics["numpy"] == [0.5, 7.0, 2.5]
    assert run.get_metrics("sigmoid") == {"sigmoid": expected}
    run.complete()


def test_steps_default_to_a_per_name_counter_and_relogging_a_step_replaces_it(sdk: Client) -> None:
    run = runstream.start_run("curves", capture_output=False, snapshot=False)
    run.log("a", 1.0)
    run.log("a", 2.0)
    run.log("b", 10.0, step=5)
    run.log("b", 11.0)  # step 6
    run.log("a", 3.0, step=1)  # replaces step 1
    run.log("b", 9.0, step=2)  # a lower step: stored, not dropped
    metrics = run.get_metrics()
    assert metrics["a"] == [1.0, 3.0]
    assert metrics["b"] == [9.0, 10.0, 11.0]


def test_bad_names_and_values_raise_at_the_call_and_send_nothing(sdk: Client, settings: Settings) -> None:
    run = runstream.start_run("curves", capture_output=False, snapshot=False)
    bad_calls: list[Callable[[], object]] = [
        lambda: run.log("", 1.0),
        lambda: run.log("lo\nss", 1.0),
        lambda: run.log("x" * 300, 1.0),
        lambda: run.log("loss", "0.5"),
        lambda: run.log("loss", None),
        lambda: run.log("loss", True),
        lambda: run.log("loss", [1.0]),
        lambda: run.log("loss", np.array([1.0, 2.0])),
        lambda: run.log("loss", 1.0, step=-1),
        lambda: run.log("loss", 1.0, step=1.5),  # type: ignore[arg-type]
        lambda: run.log("loss", 10**400),
        lambda: run.log_list("fib", "0112"),
        lambda: run.log_row("cos"),
        lambda: run.log_row("cos", **{"bad col!": 1.0}),
        lambda: run.log_table("sine", {"a": [1, 2], "b": [1]}),
        lambda: run.log_list("big", list(range(200_000))),
        lambda: run.set_properties(lr=math.nan),
        lambda: run.set_tags(**{"bad key!": "x"}),
    ]
    for call in bad_calls:
        with pytest.raises(runstream.LoggingError):
            call()
    huge_tags = {f"t{i}": "x" * 4096 for i in range(256)}  # each tag valid; over one event's limit
    with pytest.raises(runstream.LoggingError, match="850000-byte limit"):
        runstream.start_run("curves", tags=huge_tags, capture_output=False, snapshot=False)
    run.log("loss", 0.5)
    run.complete()
    assert run.flush(10)
    events = run_events(settings, run.run_id)
    points = [p for e in events if e["type"] == "metrics.logged" for p in e["payload"]["points"]]
    assert [(p["name"], p["value"]) for p in points] == [("loss", 0.5)]


def test_list_row_and_table_values(sdk: Client, settings: Settings) -> None:
    run = runstream.start_run("waves", capture_output=False, snapshot=False)
    fibonacci = [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]
    run.log_list("fibonacci", fibonacci)
    angles = [i * math.pi / 10 for i in range(21)]
    for angle in angles:
        run.log_row("cosine wave", angle=angle, cos=math.cos(angle))
    run.log_table("sine wave", {"angle": angles, "sine": [math.sin(a) for a in angles]})
    run.complete()
    assert run.flush(10)
    events = run_events(settings, run.run_id)
    by_type = {e["type"]: e for e in events}
    assert by_type["list.logged"]["payload"] == {"name": "fibonacci", "values": fibonacci}
    rows = [e["payload"] for e in events if e["type"] == "row.logged"]
    assert [r["index"] for r in rows] == list(range(21))
    assert [r["row"]["cos"] for r in rows] == [math.cos(a) for a in angles]
    assert by_type["table.logged"]["payload"]["columns"]["sine"] == [math.sin(a) for a in angles]


def test_tags_properties_and_child_runs(sdk: Client, settings: Settings) -> None:
    parent = runstream.start_run(
        "sweep",
        name="parent",
        compute="gpu-cluster",
        tags={"team": "vision"},
        capture_output=False,
        snapshot=False,
    )
    parent.set_tags(stage="search")
    parent.set_properties(lr=0.01, arch="resnet", pretrained=True)
    child = parent.child("fold-1")
    grandchild = child.child("seed-7")
    for run in (grandchild, child):
        run.log("acc", 0.9)
        run.complete()
    parent.complete()
    assert parent.flush(10)
    assert child.parent is parent and grandchild.parent is child
    child_created = next(e for e in run_events(settings, child.run_id) if e["type"] == "run.created")
    assert child_created["payload"]["parent_run_id"] == parent.run_id
    assert child_created["experiment"] == "sweep"
    linked = [e["payload"] for e in run_events(settings, parent.run_id) if e["type"] == "run.child_linked"]
    assert linked == [{"child_run_id": child.run_id, "name": "fold-1"}]
    details = grandchild.get_details()
    assert details["parent_run_id"] == child.run_id
    assert details["status"] == "completed"
    parent_events = run_events(settings, parent.run_id)
    assert [e["type"] for e in parent_events][:2] == ["run.created", "run.started"]
    assert {"run.tags_set", "run.properties_set"} <= {e["type"] for e in parent_events}


def test_every_status_transition(sdk: Client, settings: Settings) -> None:
    queued = runstream.start_run("life", queued=True, compute="cpu", capture_output=False, snapshot=False)
    assert queued.status == "queued"
    assert queued.get_details()["status"] == "queued"
    queued.start()
    assert queued.get_details()["status"] == "running"
    queued.complete()
    assert queued.get_details()["status"] == "completed"
    with pytest.raises(runstream.RunStateError, match="completed"):
        queued.log("loss", 1.0)
    with pytest.raises(runstream.RunStateError, match="cannot become canceled"):
        queued.cancel()

    failing = runstream.start_run("life", capture_output=False, snapshot=False)
    failing.fail("out of memory")
    details = failing.get_details()
    assert details["status"] == "failed" and details["error"] == "out of memory"

    canceled = runstream.start_run("life", queued=True, capture_output=False, snapshot=False)
    canceled.cancel()
    assert canceled.get_details()["status"] == "canceled"
    with pytest.raises(runstream.RunStateError):
        canceled.start()

    types = [e["type"] for e in run_events(settings, queued.run_id)]
    assert types == ["run.created", "run.queued", "run.started", "run.completed"]


def test_context_manager_completes_fails_and_cancels(sdk: Client, settings: Settings) -> None:
    with runstream.start_run("ctx", capture_output=False, snapshot=False) as ok:
        ok.log("x", 1)
    with (
        pytest.raises(ZeroDivisionError),
        runstream.start_run("ctx", capture_output=False, snapshot=False) as bad,
    ):
        _ = 1 / 0
    with (
        pytest.raises(KeyboardInterrupt),
        runstream.start_run("ctx", capture_output=False, snapshot=False) as stop,
    ):
        raise KeyboardInterrupt
    assert (ok.status, bad.status, stop.status) == ("completed", "failed", "canceled")
    failed = bad.get_details()
    assert "ZeroDivisionError" in failed["error"] and "Traceback" in failed["error"]
    assert stop.get_details()["status"] == "canceled"


def test_output_is_captured_line_by_line_and_still_printed(
    sdk: Client, settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    import sys

    run = runstream.start_run("output", snapshot=False)
    print("epoch 1: loss 0.5")
    print("epoch 2", end="")
    print(": loss 0.4")
    print("warning: slow", file=sys.stderr)
    sys.stdout.write("no newline at the end")
    run.complete()
    assert run.flush(10)
    out, err = capfd.readouterr()
    assert "epoch 1: loss 0.5" in out and "warning: slow" in err
    lines = [
        (line["stream"], line["line_no"], line["text"])
        for e in run_events(settings, run.run_id)
        if e["type"] == "logs.appended"
        for line in e["payload"]["lines"]
    ]
    assert lines == [
        ("stdout", 0, "epoch 1: loss 0.5"),
        ("stdout", 1, "epoch 2: loss 0.4"),
        ("stderr", 0, "warning: slow"),
        ("stdout", 2, "no newline at the end"),
    ]
    print("after the run")
    assert run.flush(10)
    assert len([e for e in run_events(settings, run.run_id) if e["type"] == "logs.appended"]) >= 1
    assert "after the run" not in str(run_events(settings, run.run_id))


def test_portal_url_points_at_the_studio_run_page(sdk: Client, server: ThreadServer) -> None:
    run = runstream.start_run("links", capture_output=False, snapshot=False)
    assert run.get_portal_url() == f"{server.base_url}/runs/{run.run_id}"
    run.complete()


def test_get_run_reads_a_run_started_elsewhere(sdk: Client) -> None:
    run = runstream.start_run("elsewhere", name="original", capture_output=False, snapshot=False)
    run.log("loss", 0.25)
    run.complete()
    run.get_details()
    again = runstream.get_run(run.run_id)
    assert again.experiment == "elsewhere" and again.status == "completed"
    assert again.get_metrics() == {"loss": [0.25]}


def test_snapshot_of_the_source_folder_is_uploaded(sdk: Client, settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "project"
    (source / "pkg").mkdir(parents=True)
    (source / "train.py").write_text("import pkg\n")
    (source / "pkg" / "__init__.py").write_text("")
    (source / "checkpoints").mkdir()
    (source / "checkpoints" / "last.pt").write_bytes(b"\0" * 100)
    (source / ".runstreamignore").write_text("checkpoints/\n")
    run = runstream.start_run("snap", capture_output=False, snapshot_dir=source)
    run.complete()
    assert run.flush(10)
    events = run_events(settings, run.run_id)
    uploaded = next(e["payload"] for e in events if e["type"] == "file.uploaded")
    chunks = sorted(
        (e["payload"]["index"], e["payload"]["data"])
        for e in events
        if e["type"] == "file.chunk" and e["payload"]["file_id"] == uploaded["file_id"]
    )
    data = b"".join(base64.b64decode(d) for _, d in chunks)
    assert uploaded["kind"] == "snapshot" and uploaded["path"] == "snapshot.zip"
    assert uploaded["size"] == len(data) and uploaded["sha256"] == hashlib.sha256(data).hexdigest()
    names = sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert names == [".runstreamignore", "pkg/__init__.py", "train.py"]


def test_oversized_snapshot_is_skipped_with_a_clear_message(
    sdk: Client, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "big.bin").write_bytes(b"\1" * 4096)
    run = runstream.start_run("snap", capture_output=False, snapshot_dir=tmp_path, snapshot_max_bytes=1024)
    run.complete()
    assert run.flush(10)
    assert "snapshot of" in capsys.readouterr().err
    assert not [e for e in run_events(settings, run.run_id) if e["type"].startswith("file.")]
