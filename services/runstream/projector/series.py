"""Which metric points may replace an earlier one: the projector's step tracker. Pure.

Metric summaries are kept by a materialized view that only ever sees new rows, so
it cannot take a replaced value back out of a min or max. The projector therefore
flags (``relog`` = 1) every point whose step is not above the highest step it has
already written for its series: a step logged again, an event delivered twice, or
a step that arrives out of order. A series with no flagged point has exactly one
row per step, so its summary is exact and its points can be read without FINAL;
readers recompute the summaries of flagged series from the points. A false flag
costs only a slower read, never a wrong answer.

The tracker remembers the highest step per series for the series it saw last
(bounded), and asks the store (``metric_summaries.last_step``) about the others.
All of a run's events are on one partition, read in order by one projector, so
what it remembers is what the store holds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from runstream.projector.rows import ProjectionRows, SeriesKey


class StepTracker:
    """Highest step written per metric series, for the most recently used series."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._highest: OrderedDict[SeriesKey, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._highest)

    def unknown(self, keys: Iterable[SeriesKey]) -> list[SeriesKey]:
        """Series whose highest step is not remembered (to look up in the store)."""
        return sorted(key for key in keys if key not in self._highest)

    def flag(self, rows: ProjectionRows, stored: Mapping[SeriesKey, int]) -> dict[SeriesKey, int]:
        """Flag the points of ``rows`` that may replace another; returns the new highest steps.

        ``stored`` holds the highest step in the store of series not remembered. Nothing
        is remembered until ``commit``: a batch that fails to be written is flagged the
        same way when it is tried again.
        """
        highest: dict[SeriesKey, int] = {}
        for key, row in rows.iter_points():
            top = highest.get(key)
            if top is None:
                top = self._highest.get(key, stored.get(key, -1))
            step = rows.step_of(row)
            if step <= top:
                rows.flag_relog(row)
            else:
                top = step
            highest[key] = top
        return highest

    def commit(self, highest: Mapping[SeriesKey, int]) -> None:
        """Remember the highest steps of a batch that was written."""
        for key, step in highest.items():
            self._highest[key] = step
            self._highest.move_to_end(key)
        while len(self._highest) > self.capacity:
            self._highest.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (the store moved to another generation)."""
        self._highest.clear()
