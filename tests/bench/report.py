"""Figures and the report every benchmark prints.

A benchmark measures samples (several runs of the same thing), turns each measured
quantity into a figure with :func:`figure` (Runstream's samples, and MLflow's as the
baseline when there is one), and ends with :func:`emit`: a human-readable table, then
ONE JSON line, the last line of its output::

    {"benchmark": "sdk", "figures": [{"name": ..., "unit": ..., "min": ..., "median": ...,
     "max": ..., "runs": ..., "baseline": {...} | null, "ratio": ... | null, ...}], ...}

No figure is ever asserted on: benchmarks report, they do not pass or fail on speed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "Stats",
    "common_parser",
    "emit",
    "figure",
    "machine",
    "parse_args",
    "percentile",
    "rates",
    "time_repeated",
    "time_repeated_async",
    "time_repeated_ms",
]


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least ``q``% of them at or below it."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile q must be in (0, 100], got {q}")
    ordered = sorted(samples)
    rank = math.ceil(q / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True)
class Stats:
    """Summary of a list of samples (p99 by nearest rank)."""

    n: int
    min: float
    median: float
    max: float
    p99: float
    mean: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if not samples:
            raise ValueError("Stats of no samples")
        values = [float(s) for s in samples]
        return cls(
            n=len(values),
            min=min(values),
            median=statistics.median(values),
            max=max(values),
            p99=percentile(values, 99),
            mean=statistics.fmean(values),
        )

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            key: _clean(value) if isinstance(value, float) else value for key, value in asdict(self).items()
        }


def time_repeated(fn: Callable[[], object], repeats: int, *, warmup: int = 0) -> list[float]:
    """Call ``fn`` ``warmup`` times unmeasured, then ``repeats`` times: each call's seconds."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def time_repeated_ms(fn: Callable[[], object], repeats: int, *, warmup: int = 0) -> list[float]:
    """:func:`time_repeated` in milliseconds."""
    return [s * 1000.0 for s in time_repeated(fn, repeats, warmup=warmup)]


async def time_repeated_async(
    fn: Callable[[], Awaitable[object]], repeats: int, *, warmup: int = 0
) -> list[float]:
    """:func:`time_repeated` for a coroutine function: each awaited call's seconds."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        await fn()
    samples: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    return samples


def rates(count: float, seconds: Sequence[float]) -> list[float]:
    """Throughput samples (``count`` per second) from duration samples in seconds."""
    return [count / s if s > 0 else math.inf for s in seconds]


def _clean(value: float) -> float | None:
    """Six significant digits; NaN and infinities (not JSON) become null."""
    if math.isnan(value) or math.isinf(value):
        return None
    return float(f"{value:.6g}")


def figure(
    name: str,
    unit: str,
    samples: Sequence[float],
    *,
    higher_is_better: bool,
    baseline_name: str | None = None,
    baseline_samples: Sequence[float] | None = None,
    system: str = "runstream",
    note: str | None = None,
) -> dict[str, Any]:
    """One measured quantity: ``system``'s samples, optionally against a baseline's.

    ``ratio`` compares medians and is oriented so that >1 means ``system`` (Runstream)
    is better: system/baseline when higher is better (throughput), baseline/system when
    lower is better (latency, durations). ``ratio_meaning`` spells it out.
    """
    stats = Stats.of(samples)
    result: dict[str, Any] = {
        "name": name,
        "unit": unit,
        "system": system,
        "higher_is_better": higher_is_better,
        **{k: v for k, v in stats.as_dict().items() if k != "n"},
        "runs": stats.n,
        "baseline": None,
        "ratio": None,
        "ratio_meaning": None,
    }
    if (baseline_name is None) != (baseline_samples is None):
        raise ValueError("baseline_name and baseline_samples go together")
    if baseline_name is not None and baseline_samples is not None:
        base = Stats.of(baseline_samples)
        result["baseline"] = {"name": baseline_name, **{k: v for k, v in base.as_dict().items() if k != "n"}}
        result["baseline"]["runs"] = base.n
        if higher_is_better:
            num, den = stats.median, base.median
            meaning = f"{system} median / {baseline_name} median ({unit}, higher is better)"
        else:
            num, den = base.median, stats.median
            meaning = f"{baseline_name} median / {system} median ({unit}, lower is better)"
        result["ratio"] = _clean(num / den) if den != 0 else None
        result["ratio_meaning"] = f"{meaning}: >1 means {system} is better"
    if note is not None:
        result["note"] = note
    return result


def machine() -> dict[str, Any]:
    """What the figures were measured on, for the report's ``extra``.

    ``loadavg`` (1, 5, 15 minutes) when it is called: figures taken on a busy machine
    say so.
    """
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return str(value)


def _table(figures: Sequence[dict[str, Any]]) -> str:
    header = ["figure", "unit", "runs", "min", "median", "max", "baseline", "base median", "ratio"]
    rows = [header]
    for fig in figures:
        base = fig.get("baseline") or {}
        rows.append(
            [
                f"{fig['name']} ({fig.get('system', 'runstream')})",
                str(fig["unit"]),
                _fmt(fig["runs"]),
                _fmt(fig["min"]),
                _fmt(fig["median"]),
                _fmt(fig["max"]),
                _fmt(base.get("name")),
                _fmt(base.get("median")),
                _fmt(fig.get("ratio")),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(benchmark_name: str, figures: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
    """Print the table, then the report as ONE JSON line: the last line of the output."""
    report: dict[str, Any] = {"benchmark": benchmark_name, "figures": figures}
    for key, value in (extra or {}).items():
        if key in report:
            raise ValueError(f"extra may not replace {key!r}")
        report[key] = value
    line = json.dumps(report, allow_nan=False, separators=(",", ":"), default=str)
    sys.stdout.write(f"\n== {benchmark_name}\n{_table(figures)}\n")
    for fig in figures:
        if fig.get("ratio_meaning"):
            sys.stdout.write(f"  ratio of {fig['name']}: {fig['ratio_meaning']}\n")
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def common_parser(description: str) -> argparse.ArgumentParser:
    """The flags every benchmark accepts (``scripts/bench`` passes its arguments to all).

    ``--quick``: the smallest scale that still exercises every path (smoke runs);
    ``--repeats N``: how many measured runs per figure (each benchmark has its default).
    Benchmarks add their own flags on top.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smallest scale, for a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="measured runs per figure")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse known flags; flags meant for other benchmarks are reported and ignored."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"{parser.prog}: ignoring arguments it does not know: {' '.join(unknown)}", file=sys.stderr)
    return args
