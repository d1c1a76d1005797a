"""The client's merge rules: a snapshot that is ahead of its cursor never makes a state wrong."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runstream.live.messages import Update
from runstream.live.state import Point, RunsState, RunState

LIFECYCLE = ["run.created", "run.queued", "run.started", "run.completed"]


def metrics_event(seq: int, *steps: tuple[str, int, float]) -> dict[str, Any]:
    points = [{"name": n, "step": s, "value": v} for n, s, v in steps]
    return {"type": "metrics.logged", "seq": seq, "ts": seq, "payload": {"points": points}}


@st.composite
def runs(draw: st.DrawFn) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    lifecycle = iter(LIFECYCLE)
    for seq in range(draw(st.integers(1, 16))):
        if draw(st.booleans()):
            kind = next(lifecycle, None)
            if kind is not None:
                events.append({"type": kind, "seq": seq, "payload": {}})
                continue
        steps = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["loss", "acc"]), st.integers(0, 8), st.sampled_from([0.0, 0.5, 1.0])
                ),
                min_size=1,
                max_size=4,
            )
        )
        events.append(metrics_event(seq, *steps))
    return events


def snapshot_of(state: RunState) -> dict[str, Any]:
    """What the gateway would send for this state (its run row and latest points)."""
    return {
        "run": None if state.status is None else {"status": state.status},
        "metrics": {
            n: {"step": p.step, "value": p.value, "ts": p.ts, "seq": p.seq, "index": p.index}
            for n, p in state.metrics.items()
        },
    }


@settings(max_examples=80, deadline=None)
@given(runs(), st.data())
def test_snapshot_ahead_of_its_cursor_then_the_events_after_it_equals_the_whole_run(
    events: list[dict[str, Any]], data: st.DataObject
) -> None:
    cursor = data.draw(st.integers(0, len(events)))
    ahead = data.draw(st.integers(cursor, len(events)))
    everything = RunState("r")
    for event in events:
        everything.apply(event)
    projected = RunState("r")
    for event in events[:ahead]:  # the projection may have applied past the cursor
        projected.apply(event)
    client = RunState("r")
    client.apply_snapshot(snapshot_of(projected), cursor - 1)
    for offset, event in enumerate(events[cursor:], start=cursor):
        client.apply(event, offset)
    assert client.metrics == everything.metrics
    assert client.status == everything.status


def test_a_relogged_step_keeps_the_later_value() -> None:
    state = RunState("r")
    state.apply(metrics_event(1, ("loss", 3, 0.5)))
    state.apply(metrics_event(2, ("loss", 3, 0.7)))
    state.apply(metrics_event(1, ("loss", 3, 0.5)))  # the older one again
    assert state.metrics["loss"] == Point(3, 2, 0, 0.7, 2)


def test_runs_state_follows_compute_membership() -> None:
    state = RunsState()
    state.apply_snapshot({"runs": {"a": {"status": "running", "experiment": "e"}}}, {0: 3})
    state.apply(Update({0: 5}, {"b": {"status": "queued", "experiment": "e", "active": True}}))
    state.apply(Update({0: 6}, {"a": {"status": "completed", "experiment": "e", "active": False}}))
    assert set(state.runs) == {"b"} and state.runs["b"].status == "queued"
    assert state.cursor == {0: 6}
