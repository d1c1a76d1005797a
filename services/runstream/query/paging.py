"""Cursors of the runs table, buckets of downsampled series, pages of log lines. Pure.

A runs-table cursor is the sort position of the last run of a page, ``(rank, number,
text, run_id)``, with a fingerprint of the query it belongs to, as URL-safe base64 of
JSON: opaque to clients. The next page starts strictly after it (keyset paging), so
runs that arrive between two pages never shift a page: none is skipped or repeated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import orjson

from runstream.events.codec import from_wire_float, to_wire_float
from runstream.query.params import BadParameterError

CURSOR_VERSION = 1


@dataclass(frozen=True)
class SortPosition:
    """Where a run sits in a runs table's order."""

    rank: int
    """0: has a value; 1: NaN; 2: no value. Always ascending."""
    number: float
    text: str
    run_id: str


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(orjson.dumps([str(p) for p in parts])).hexdigest()[:16]


def encode_cursor(position: SortPosition, query: str) -> str:
    data = {
        "v": CURSOR_VERSION,
        "q": query,
        "r": position.rank,
        "n": to_wire_float(position.number),
        "t": position.text,
        "id": position.run_id,
    }
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode("ascii").rstrip("=")


def decode_cursor(raw: str, query: str) -> SortPosition:
    try:
        data: Any = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        version = data.get("v") if isinstance(data, dict) else None
        position = SortPosition(int(data["r"]), from_wire_float(data["n"]), str(data["t"]), str(data["id"]))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, orjson.JSONDecodeError):
        raise BadParameterError("cursor", "not a cursor this API handed out") from None
    if version != CURSOR_VERSION:
        raise BadParameterError("cursor", "not a cursor this API handed out")
    if data["q"] != query:
        raise BadParameterError(
            "cursor", "belongs to another query: keep experiment, sort, status, tag and where as they were"
        )
    if position.rank not in (0, 1, 2) or math.isnan(position.number):
        raise BadParameterError("cursor", "not a cursor this API handed out")
    return position


ROLLUP_LEVELS = (15, 12, 9, 6)
"""Bucket widths kept by ``metric_rollups``: 2^15, 2^12, 2^9 and 2^6 steps."""


@dataclass(frozen=True)
class Buckets:
    """Fixed-width step buckets: bucket ``i`` holds steps ``base + i*width`` to ``base + (i+1)*width - 1``.

    ``level`` > 0: read from ``metric_rollups`` at that level (``width`` and ``base`` are
    multiples of ``2**level``, so every output bucket is a union of whole rollup buckets);
    0: read from the points.
    """

    level: int
    base: int
    width: int

    def count(self, last_step: int) -> int:
        return (last_step - self.base) // self.width + 1


def plan_buckets(
    first_step: int, last_step: int, max_points: int, levels: tuple[int, ...] = ROLLUP_LEVELS
) -> Buckets:
    """At most ``max_points`` buckets over ``[first_step, last_step]``, from the coarsest rollup that fits.

    The width is the narrowest that keeps within ``max_points``, rounded up to whole
    rollup buckets; without a rollup narrow enough, buckets of points.
    """
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    if last_step < first_step:
        raise ValueError("last_step must not be below first_step")
    for level in sorted(levels, reverse=True):
        size = 1 << level
        base = (first_step >> level) << level
        needed = -(-(last_step - base + 1) // max_points)
        if size <= needed:
            return Buckets(level, base, -(-needed // size) * size)
    return Buckets(0, first_step, max(-(-(last_step - first_step + 1) // max_points), 1))


def trim_log_page(lines: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Cut lines ordered by (line_no, stream) to a page that never splits one line_no.

    ``lines`` holds up to ``limit + 2`` lines after the requested position. Returns the
    page and the ``after_line`` of the next page (None when this page is the last).
    """
    if len(lines) <= limit:
        return lines, None
    page = lines[:limit]
    cut = lines[limit]["line_no"]
    if page[-1]["line_no"] == cut:
        whole = [line for line in page if line["line_no"] != cut]
        page = whole or [line for line in lines if line["line_no"] == cut]
    return page, int(page[-1]["line_no"])
