"""The little languages of the runs table: summary columns, predicates, sort keys, tags. Pure.

- summary column: ``AGG(metric)`` with AGG one of ``last min max count last_step``
  (``last(loss)``, ``min(val/acc)``); metric names never hold ``(``, ``)`` or ``,``.
- predicate (``where``): ``AGG(metric) OP number`` with OP one of
  ``< <= > >= = !=``; several are joined with ``,`` or given as repeated parameters,
  and all must hold. A run without the metric fails every predicate on it; NaN
  compares as IEEE 754 says (only ``!=`` holds).
- sort: a summary column or a run attribute (``SORT_ATTRIBUTES``), ``-`` in front
  for descending. Runs without a value (no such metric, a NaN, no such timestamp)
  come last in both directions; ties are broken by run id.
- tag filter: ``key=value`` or ``key:value`` (the first ``=``, else the first
  ``:`` separates; keys never hold ``=``), or just ``key`` for "has the tag".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from runstream.query.params import BadParameterError, metric_name

AGGREGATES = ("last", "min", "max", "count", "last_step")
OPERATORS = ("<", "<=", ">", ">=", "=", "!=")
SORT_ATTRIBUTES = (
    "created_at", "queued_at", "started_at", "ended_at", "last_event_at", "duration_ms",
    "name", "status", "compute", "run_id",
)  # fmt: skip
STRING_ATTRIBUTES = frozenset({"name", "status", "compute", "run_id"})
STATUSES = ("created", "queued", "running", "completed", "failed", "canceled")

MAX_COLUMNS = 20
MAX_PREDICATES = 10
MAX_TAG_FILTERS = 10

_SPEC = re.compile(r"^\s*([a-z_]+)\(([^(),]+)\)\s*$")
_PREDICATE = re.compile(r"^\s*([a-z_]+)\(([^(),]+)\)\s*(<=|>=|!=|=|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True, order=True)
class SummarySpec:
    """One summary of one metric: ``last(loss)``."""

    aggregate: str
    metric: str

    def __str__(self) -> str:
        return f"{self.aggregate}({self.metric})"


@dataclass(frozen=True)
class Predicate:
    spec: SummarySpec
    operator: str
    value: float

    def __str__(self) -> str:
        return f"{self.spec}{self.operator}{self.value!r}"


@dataclass(frozen=True)
class SortKey:
    """A summary column or a run attribute, ascending or descending."""

    spec: SummarySpec | None
    attribute: str | None
    descending: bool

    @property
    def is_string(self) -> bool:
        return self.attribute in STRING_ATTRIBUTES

    def __str__(self) -> str:
        return ("-" if self.descending else "") + (str(self.spec) if self.spec else str(self.attribute))


@dataclass(frozen=True)
class TagFilter:
    key: str
    value: str | None
    """None: the run has the tag, whatever its value."""


def _aggregate(name: str, parameter: str) -> str:
    if name not in AGGREGATES:
        raise BadParameterError(
            parameter, f"unknown summary {name!r}; expected one of {', '.join(AGGREGATES)}"
        )
    return name


def parse_spec(text: str, parameter: str) -> SummarySpec:
    match = _SPEC.match(text)
    if not match:
        raise BadParameterError(parameter, f"expected AGG(metric) such as last(loss); got {text[:80]!r}")
    return SummarySpec(_aggregate(match[1], parameter), metric_name(match[2], parameter))


def parse_columns(raw: str | None) -> list[SummarySpec]:
    specs: list[SummarySpec] = []
    for part in (raw or "").split(","):
        if part.strip():
            spec = parse_spec(part, "columns")
            if spec not in specs:
                specs.append(spec)
    if len(specs) > MAX_COLUMNS:
        raise BadParameterError("columns", f"at most {MAX_COLUMNS} summary columns; got {len(specs)}")
    return specs


def parse_predicates(raws: list[str]) -> list[Predicate]:
    out: list[Predicate] = []
    for raw in raws:
        for part in raw.split(","):
            if not part.strip():
                continue
            match = _PREDICATE.match(part)
            if not match:
                raise BadParameterError(
                    "where", f"expected AGG(metric) OP number such as min(loss)<0.2; got {part[:80]!r}"
                )
            spec = SummarySpec(_aggregate(match[1], "where"), metric_name(match[2], "where"))
            try:
                value = float(match[4])
            except ValueError:
                raise BadParameterError(
                    "where", f"not a number: {match[4][:40]!r} in {part[:80]!r}"
                ) from None
            if math.isnan(value):
                raise BadParameterError("where", "NaN compares false to everything; compare with a number")
            out.append(Predicate(spec, match[3], value))
    if len(out) > MAX_PREDICATES:
        raise BadParameterError("where", f"at most {MAX_PREDICATES} predicates; got {len(out)}")
    return out


def parse_sort(raw: str | None, default: str = "-created_at") -> SortKey:
    text = (raw or default).strip()
    descending = text.startswith("-")
    body = text[1:] if descending or text.startswith("+") else text
    if body in SORT_ATTRIBUTES:
        return SortKey(None, body, descending)
    if "(" in body:
        return SortKey(parse_spec(body, "sort"), None, descending)
    raise BadParameterError(
        "sort",
        f"expected AGG(metric) or one of {', '.join(SORT_ATTRIBUTES)}, optionally after -; got {text[:80]!r}",
    )


def parse_statuses(raw: str | None) -> list[str]:
    out: list[str] = []
    for part in (raw or "").split(","):
        status = part.strip()
        if not status:
            continue
        if status not in STATUSES:
            raise BadParameterError(
                "status", f"unknown status {status[:40]!r}; expected {', '.join(STATUSES)}"
            )
        out.append(status)
    return out


def parse_tag(raw: str) -> TagFilter:
    value: str | None
    if "=" in raw:
        key, _, value = raw.partition("=")
    elif ":" in raw:
        key, _, value = raw.partition(":")
    else:
        key, value = raw, None
    if not re.match(r"^[A-Za-z0-9_.:/-]{1,128}\Z", key):
        raise BadParameterError("tag", f"expected key=value, key:value or key; got {raw[:80]!r}")
    return TagFilter(key, value)


def parse_tags(raws: list[str]) -> list[TagFilter]:
    tags = [parse_tag(raw) for raw in raws if raw]
    if len(tags) > MAX_TAG_FILTERS:
        raise BadParameterError("tag", f"at most {MAX_TAG_FILTERS} tag filters; got {len(tags)}")
    return tags
