"""The delivery checker itself, on hand-made inputs: each kind of fault is seen, a clean run is clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runstream.live.messages import Event
from runstream.sdk.transport.port import Delivery, Transport, TransportError
from tests.reliability.checker import DeliveryLedger, RecordingTransport, StoredEvent
from tests.support import event, points


def run_of(count: int, run_id: str = "run-1") -> list[dict[str, Any]]:
    return [
        event("metrics.logged", run_id, points("loss", [float(i)], start_step=i), seq=i) for i in range(count)
    ]


def stored(events: list[dict[str, Any]]) -> list[StoredEvent]:
    return [StoredEvent.of(e, (0, offset)) for offset, e in enumerate(events)]


def ledger_of(events: list[dict[str, Any]], writer: str = "") -> DeliveryLedger:
    ledger = DeliveryLedger()
    ledger.acknowledge_all(events, writer)
    return ledger


def test_everything_stored_once_in_order_is_clean() -> None:
    events = run_of(10)
    report = ledger_of(events).report_events(stored(events), "log")
    assert report.figures() == {"total": 10, "lost": 0, "duplicated": 0, "unseen": 0, "out_of_order": 0}
    report.assert_clean()


def test_a_missing_event_is_lost_and_named() -> None:
    events = run_of(10)
    report = ledger_of(events).report_events(stored(events[:4] + events[5:]), "log")
    assert (report.lost, report.duplicated, report.out_of_order) == (1, 0, 0)
    with pytest.raises(AssertionError, match=events[4]["event_id"]):
        report.assert_clean()


def test_an_event_stored_twice_is_duplicated() -> None:
    events = run_of(10)
    report = ledger_of(events).report_events(stored([*events, events[3]]), "log")
    assert (report.lost, report.duplicated, report.out_of_order) == (0, 1, 0)
    with pytest.raises(AssertionError, match="duplicated=1"):
        report.assert_clean()


def test_a_swapped_pair_is_out_of_order() -> None:
    events = run_of(10)
    swapped = [*events[:3], events[4], events[3], *events[5:]]
    report = ledger_of(events).report_events(stored(swapped), "log")
    assert (report.lost, report.duplicated, report.out_of_order) == (0, 0, 1)
    with pytest.raises(AssertionError, match="out_of_order=1"):
        report.assert_clean()


def test_order_is_kept_per_writer_and_run_only() -> None:
    """Two writers of one run (a restarted process counts its seq again) may interleave."""
    first, second = run_of(5), run_of(5)
    ledger = ledger_of(first, "first")
    ledger.acknowledge_all(second, "second")
    other_run = run_of(3, "run-2")
    ledger.acknowledge_all(other_run, "first")
    interleaved = [first[0], second[0], other_run[2], first[1], second[1], *first[2:], *second[2:]]
    interleaved += other_run[:2]
    report = ledger.report_events(stored(interleaved), "log")
    assert (report.lost, report.duplicated, report.out_of_order) == (0, 0, 2)


def test_unseen_events_fail_unless_allowed() -> None:
    events = run_of(5)
    report = ledger_of(events[:4]).report_events(stored(events), "log")
    assert report.unseen == 1
    report.assert_clean(allow_unseen=True)
    with pytest.raises(AssertionError, match="unseen=1"):
        report.assert_clean()


def test_events_of_other_runs_are_left_out() -> None:
    events = run_of(5)
    foreign = run_of(2, "someone-else")
    report = ledger_of(events).report_events(stored(events + foreign), "log")
    report.assert_clean()


def test_points_lost_duplicated_and_unseen() -> None:
    ledger = ledger_of(run_of(4))
    rows = [("run-1", "loss", 0), ("run-1", "loss", 1), ("run-1", "loss", 1), ("run-1", "loss", 9)]
    report = ledger.report_points(rows, "points")
    assert report.total == 4
    assert (report.lost, report.duplicated, report.unseen) == (2, 1, 1)
    assert report.samples["lost"] == ["run-1/loss@2", "run-1/loss@3"]


def test_stream_frames_of_both_shapes_and_live_events() -> None:
    events = run_of(6)
    frames: list[Any] = [
        {"type": "subscribed", "sub": "s", "cursor": -1},
        {"type": "event", "sub": "s", "partition": 1, "cursor": 0, "event": events[0]},
        {"type": "events", "sub": "s", "partition": 1, "cursor": 2, "cursors": [1, 2], "events": events[1:3]},
        {"type": "heartbeat", "ts": 1, "idle_timeout": 30},
        Event(3, 1, events[3]),
        Event(4, 1, events[4]),
        Event(5, 1, events[4]),
    ]
    report = ledger_of(events).report_stream(frames)
    assert (report.lost, report.duplicated, report.unseen, report.out_of_order) == (1, 1, 0, 0)
    assert report.samples["lost"][0].startswith(events[5]["event_id"])


class FakeIngest(Transport):
    """Accepts every batch but refuses its second event, or fails when told to."""

    def __init__(self) -> None:
        self.down = False

    def deliver(self, body: bytes, events: list[dict[str, Any]]) -> Delivery:
        if self.down:
            raise TransportError("down")
        return Delivery(
            positions=[(e["run_id"], 0, i) for i, e in enumerate(events) if i != 1],
            rejected=[{"index": 1, "message": "refused"}],
        )


def test_recording_transport_acknowledges_only_delivered_accepted_events(tmp_path: Path) -> None:
    events = run_of(3)
    inner = FakeIngest()
    journal = tmp_path / "acks.jsonl"
    transport = RecordingTransport(inner, journal=journal, writer="w")
    inner.down = True
    with pytest.raises(TransportError):
        transport.deliver(b"", events)
    assert transport.ledger.events == []
    inner.down = False
    transport.deliver(b"", events)
    assert [e.event_id for e in transport.ledger.events] == [events[0]["event_id"], events[2]["event_id"]]
    with journal.open("ab") as cut:
        cut.write(b'{"event_id": "half a li')  # a kill in the middle of a line
    again = DeliveryLedger.from_journal(journal, tmp_path / "never-written.jsonl")
    assert again.events == transport.ledger.events
    assert again.points() == {("run-1", "loss", 0), ("run-1", "loss", 2)}


def test_order_is_the_order_of_acknowledgement() -> None:
    """A process that resent a dead one's batches before its own (seq counted again) is in order."""
    dead, restarted = run_of(10)[5:], run_of(3)
    ledger = ledger_of(dead + restarted, "restarted")
    ledger.report_events(stored(dead + restarted), "log").assert_clean()
    report = ledger.report_events(stored(restarted + dead), "log")
    assert report.out_of_order == 5
