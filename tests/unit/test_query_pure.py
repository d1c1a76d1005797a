"""The query API's pure parts: grammar, cursors, bucket plans, log pages."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstream.query import grammar
from runstream.query.grammar import SummarySpec
from runstream.query.paging import (
    ROLLUP_LEVELS,
    SortPosition,
    decode_cursor,
    encode_cursor,
    plan_buckets,
    trim_log_page,
)
from runstream.query.params import BadParameterError


def bad(parameter: str) -> pytest.RaisesExc[BadParameterError]:
    return pytest.raises(BadParameterError, match=f"^{parameter}: ")


def test_summary_columns_and_predicates() -> None:
    assert grammar.parse_columns("last(loss), min(val/acc 1),last(loss)") == [
        SummarySpec("last", "loss"),
        SummarySpec("min", "val/acc 1"),
    ]
    predicates = grammar.parse_predicates(["min(loss)<0.2,count(acc) >= 10", "max(x)!=-Infinity"])
    assert [(str(p.spec), p.operator, p.value) for p in predicates] == [
        ("min(loss)", "<", 0.2),
        ("count(acc)", ">=", 10.0),
        ("max(x)", "!=", -math.inf),
    ]


@pytest.mark.parametrize(
    ("parameter", "call"),
    [
        ("columns", lambda: grammar.parse_columns("median(loss)")),
        ("columns", lambda: grammar.parse_columns("last(loss")),
        ("columns", lambda: grammar.parse_columns(",".join(f"last(m{i})" for i in range(21)))),
        ("where", lambda: grammar.parse_predicates(["min(loss) < abc"])),
        ("where", lambda: grammar.parse_predicates(["min(loss) ~ 1"])),
        ("where", lambda: grammar.parse_predicates(["min(loss) < NaN"])),
        ("where", lambda: grammar.parse_predicates(["min(-bad) < 1"])),
        ("sort", lambda: grammar.parse_sort("-size")),
        ("status", lambda: grammar.parse_statuses("running,done")),
        ("tag", lambda: grammar.parse_tag("bad key=1")),
    ],
)
def test_malformed_parameters_are_named(parameter: str, call: object) -> None:
    with bad(parameter):
        call()  # type: ignore[operator]


def test_sort_keys_and_tags() -> None:
    assert str(grammar.parse_sort(None)) == "-created_at"
    key = grammar.parse_sort("-last(loss)")
    assert key.descending and key.spec == SummarySpec("last", "loss") and key.attribute is None
    assert grammar.parse_sort("name").is_string
    assert grammar.parse_tag("team=ml:vision") == grammar.TagFilter("team", "ml:vision")
    assert grammar.parse_tag("team:ml") == grammar.TagFilter("team", "ml")
    assert grammar.parse_tag("team") == grammar.TagFilter("team", None)


@given(
    rank=st.sampled_from([0, 1, 2]),
    number=st.floats(allow_nan=False),
    text=st.text(max_size=20),
    run_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True),
)
def test_cursor_round_trips(rank: int, number: float, text: str, run_id: str) -> None:
    position = SortPosition(rank, number, text, run_id)
    assert decode_cursor(encode_cursor(position, "q1"), "q1") == position


def test_cursor_of_another_query_or_garbage_is_refused() -> None:
    cursor = encode_cursor(SortPosition(0, 1.5, "", "r1"), "q1")
    with bad("cursor"):
        decode_cursor(cursor, "q2")
    for garbage in ("", "!!!", "eyJ2IjoyfQ", cursor[:-3]):
        with bad("cursor"):
            decode_cursor(garbage, "q1")


@given(
    first=st.integers(0, 2**40),
    span=st.integers(0, 2**30),
    max_points=st.integers(1, 5000),
    rollups=st.booleans(),
)
def test_bucket_plans_keep_within_max_points_and_align_with_rollups(
    first: int, span: int, max_points: int, rollups: bool
) -> None:
    last = first + span
    plan = plan_buckets(first, last, max_points, ROLLUP_LEVELS if rollups else ())
    assert plan.base <= first and plan.count(last) <= max_points
    if plan.level:
        size = 1 << plan.level
        assert plan.base % size == 0 and plan.width % size == 0
        assert plan.width <= 2 * -(-(last - plan.base + 1) // max_points) + size, "not much wider than needed"
    else:
        assert plan.base == first
        assert plan.width == max(-(-(span + 1) // max_points), 1)


def test_bucket_plans_use_the_coarsest_rollup_that_fits() -> None:
    assert plan_buckets(0, 999_999, 1000).level == 9  # width 1000 needed: 512-step buckets, 1024 wide
    assert plan_buckets(0, 999_999, 1000).width == 1024
    assert plan_buckets(0, 9_999, 1000).level == 0  # width 10: from the points
    assert plan_buckets(0, 199, 1000).width == 1


def test_log_pages_never_split_a_line_number() -> None:
    lines = [{"line_no": n, "stream": s} for n in range(4) for s in ("stderr", "stdout")]
    page, after = trim_log_page(lines[:5], 3)
    assert [(x["line_no"], x["stream"]) for x in page] == [(0, "stderr"), (0, "stdout")] and after == 0
    page, after = trim_log_page(lines[:3], 1)
    assert len(page) == 2 and after == 0, "a line number's both streams, even past the limit"
    page, after = trim_log_page(lines[:4], 4)
    assert len(page) == 4 and after is None
