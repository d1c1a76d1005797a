"""The per-subscription feeds: batching, rate control, coalescing, compute membership. Pure."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream.gateway.feeds import ComputeFeed, ExperimentFeed, Membership, RateGate, RunFeed
from runstream.gateway.recent import Entry, RecentRecords, entry_of


def entry(offset: int, type_: str = "metrics.logged", run_id: str = "r1", **fields: Any) -> Entry:
    event = {
        "run_id": run_id,
        "workspace": fields.get("workspace", "default"),
        "experiment": fields.get("experiment", "exp"),
        "type": type_,
        "seq": fields.get("seq", offset),
        "ts": 5,
        "payload": fields.get("payload", {}),
    }
    parsed = entry_of(fields.get("partition", 0), offset, orjson.dumps(event))
    assert parsed is not None
    return parsed[0]


def points(*steps: tuple[str, int, float]) -> dict[str, Any]:
    return {"points": [{"name": n, "step": s, "value": v} for n, s, v in steps]}


def test_rate_gate_sends_the_first_at_once_and_the_next_when_the_interval_ends() -> None:
    gate = RateGate(0.1)
    assert gate.due(10.0) == 10.0
    gate.sent(10.0)
    assert gate.due(10.03) == 10.1
    assert gate.due(10.5) == 10.5
    assert RateGate().due(3.0) == 3.0


def test_run_feed_ignores_what_it_already_took() -> None:
    feed = RunFeed("s", "default", "r1", 0, after=1, max_rate=None)
    assert not feed.offer(entry(1), None)
    assert feed.offer(entry(2), None) and feed.offer(entry(3), None)
    assert not feed.offer(entry(2), None)
    frames = feed.take(1 << 20)
    assert [cursor for _, cursor in frames] == [2, 3]
    assert [orjson.loads(f)["type"] for f, _ in frames] == ["event", "event"]
    assert not feed.has_pending and feed.take(1 << 20) == []


def test_batched_run_feed_cuts_big_batches_without_dropping_any() -> None:
    feed = RunFeed("s", "default", "r1", 0, after=-1, max_rate=10)
    for offset in range(50):
        feed.offer(entry(offset, payload=points(("loss", offset, 0.5))), None)
    frames = feed.take(max_frame_bytes=2000)
    assert len(frames) > 1
    decoded = [orjson.loads(f) for f, _ in frames]
    assert [c for d in decoded for c in d["cursors"]] == list(range(50))
    assert [d["cursor"] for d in decoded] == [c for _, c in frames]
    assert all(d["cursor"] == d["cursors"][-1] for d in decoded)


def test_run_feed_filters_by_type() -> None:
    feed = RunFeed("s", "default", "r1", 0, -1, None, types=lambda t: t.startswith("run."))
    assert feed.matches(entry(0, "run.started"))
    assert not feed.matches(entry(1, "metrics.logged"))
    assert not feed.matches(entry(2, "run.started", run_id="r2"))


def test_experiment_feed_coalesces_to_the_latest_value_and_status() -> None:
    feed = ExperimentFeed("e", "default", "exp", {0: -1}, max_rate=5)
    feed.offer(entry(0, "run.created", payload={"compute": "gpu", "name": "first"}), None)
    feed.offer(entry(1, "run.started"), None)
    feed.offer(entry(2, payload=points(("loss", 0, 0.9), ("loss", 1, 0.5), ("acc", 0, 0.1))), None)
    feed.offer(entry(3, payload=points(("loss", 2, 0.4))), None)
    feed.offer(entry(4, payload=points(("loss", 1, 7.0))), None)  # an older step logged again: not latest
    feed.advance({0: 9})
    [(frame, cursor)] = feed.take(1 << 20)
    update = orjson.loads(frame)
    assert cursor == {0: 8} and update["cursor"] == {"0": 8}
    run = update["runs"]["r1"]
    assert run["status"] == "running" and run["compute"] == "gpu" and run["name"] == "first"
    assert run["metrics"]["loss"] == {"step": 2, "value": 0.4, "ts": 5, "seq": 3, "index": 0}
    assert run["metrics"]["acc"]["value"] == 0.1
    assert not feed.offer(entry(4, payload=points(("loss", 9, 1.0))), None)  # before its cursor


def test_experiment_feed_keeps_the_furthest_status_between_frames() -> None:
    feed = ExperimentFeed("e", "default", "exp", {0: -1}, None)
    feed.offer(entry(0, "run.completed", seq=5), None)
    feed.offer(entry(1, "run.started", seq=3), None)
    [(frame, _)] = feed.take(1 << 20)
    assert orjson.loads(frame)["runs"]["r1"]["status"] == "completed"
    assert not feed.matches(entry(2, experiment="other"))


def test_compute_membership_joins_moves_and_leaves() -> None:
    members = Membership("gpu")
    assert members.apply(entry(0, "run.started", run_id="x")) is None  # not one of ours
    assert members.apply(entry(1, "run.created", run_id="a", payload={"compute": "cpu"})) is None
    joined = members.apply(entry(2, "run.created", run_id="b", payload={"compute": "gpu"}, seq=0))
    assert joined == {"status": "created", "experiment": "exp", "active": True}
    assert members.apply(entry(3, "run.queued", run_id="b", seq=1)) == {
        "status": "queued",
        "experiment": "exp",
        "active": True,
    }
    assert members.apply(entry(4, "run.created", run_id="b", payload={"compute": "gpu"}, seq=0)) is None
    left = members.apply(entry(5, "run.failed", run_id="b", seq=2))
    assert left == {"status": "failed", "experiment": "exp", "active": False}
    assert "b" not in members.members
    # Seen again (a snapshot ahead of the stream): an ended run never comes back.
    assert members.apply(entry(6, "run.created", run_id="b", payload={"compute": "gpu"}, seq=0)) is None


def test_compute_feed_coalesces_a_join_and_a_leave() -> None:
    feed = ComputeFeed("c", "default", Membership("gpu"), {0: -1}, max_rate=1)
    feed.offer(entry(0, "run.created", run_id="b", payload={"compute": "gpu"}), None)
    feed.offer(entry(1, "run.started", run_id="b"), None)
    feed.offer(entry(2, "run.completed", run_id="b"), None)
    [(frame, _)] = feed.take(1 << 20)
    assert orjson.loads(frame)["runs"] == {"b": {"status": "completed", "experiment": "exp", "active": False}}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3000), max_size=200), st.integers(1000, 20_000))
def test_recent_records_hold_exactly_a_suffix_within_budget(sizes: list[int], budget: int) -> None:
    recent = RecentRecords(start=0, budget=budget)
    for offset, size in enumerate(sizes):
        recent.append(offset, entry(offset, payload={"pad": "x" * size}) if size % 7 else None)
    held = list(recent.since(recent.start))
    assert recent.bytes <= budget or len(held) <= 1
    assert recent.end == len(sizes)
    expected = [o for o in range(recent.start, len(sizes)) if sizes[o] % 7]
    assert [e.offset for e in held] == expected
