"""The load benchmark's figures (``bench_load.py``): lag, delivery, memory, from one load's raw outcome."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from typing import Any

from tests.bench import report


@dataclass
class LoadResult:
    """The raw outcome of one load against one topology."""

    adapter: str
    start: float
    slow_joined: float
    end: float
    drained: float | None
    jobs: list[dict[str, Any]]
    polls: list[tuple[float, float, dict[str, int]]]
    fast: list[dict[str, Any]]
    slow: dict[str, Any] | None
    memory: list[tuple[float, dict[str, int | None]]]
    cpu: dict[str, float]
    stored_points: int | None
    poll_failures: int


# -- figures -----------------------------------------------------------------------------------
def lag_samples_ms(result: LoadResult, since: float) -> list[float]:
    """Per (run, step) logged after ``since``: visible in ClickHouse (poll midpoint) - logged."""
    logged = {run: times for job in result.jobs for run, times in job["logged"].items()}
    visible: dict[str, int] = {}
    lags: list[float] = []
    previous: float | None = None
    for sent, done, steps in result.polls:
        now = (sent + done) / 2
        for run, last in steps.items():
            times = logged.get(run)
            if times is None:
                continue
            for step in range(visible.get(run, -1) + 1, min(last, len(times) - 1) + 1):
                if times[step] >= since:
                    earliest = times[step] if previous is None else max(previous, times[step])
                    lags.append(((earliest + now) / 2 - times[step]) * 1000.0)
            visible[run] = max(visible.get(run, -1), last)
        previous = now
    return lags


def delivery_ms(received: list[dict[str, Any]], since: float, until: float, *, field: str) -> list[float]:
    """recv - logged (``newest_ms`` or ``oldest_ms``) for events whose newest point is in [since, until)."""
    lo, hi = since * 1000.0, until * 1000.0
    out: list[float] = []
    for part in received:
        for at, newest, logged in zip(part["received_ms"], part["newest_ms"], part[field], strict=True):
            if lo <= newest < hi:
                out.append(at - logged)
    return out


def logged_per_second(result: LoadResult, metrics: int) -> list[float]:
    seconds = int(result.end - result.start)
    counts = [0] * max(seconds, 1)
    for job in result.jobs:
        for times in job["logged"].values():
            for t in times:
                second = int(t - result.start)
                if 0 <= second < len(counts):
                    counts[second] += metrics
    return [float(c) for c in counts]


def memory_series(result: LoadResult) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for at, values in result.memory:
        for name, kib in values.items():
            if kib is not None:
                series.setdefault(name, []).append((at - result.start, kib / 1024.0))
    return series


def flatness(points: list[tuple[float, float]], start: float, end: float, window: float) -> dict[str, float]:
    first = [mib for t, mib in points if start <= t < start + window]
    last = [mib for t, mib in points if end - window <= t <= end]
    if not first or not last:
        return {}
    a, b = statistics.median(first), statistics.median(last)
    return {"first_mib": round(a, 1), "last_mib": round(b, 1), "ratio": round(b / a, 3), "window_s": window}


def print_memory(series: dict[str, list[tuple[float, float]]], every: float) -> None:
    names = list(series)
    print(f"\nRSS (MiB) over time, every {every:g} s (t = seconds since the load started)")
    print("t".rjust(7) + "".join(n[:22].rjust(24) for n in names))
    rows: dict[int, dict[str, float]] = {}
    for name, points in series.items():
        for t, mib in points:
            rows.setdefault(int(t // every), {}).setdefault(name, mib)
    for bucket in sorted(rows):
        cells = "".join((f"{rows[bucket][n]:.1f}" if n in rows[bucket] else "-").rjust(24) for n in names)
        print(f"{bucket * every:7.0f}{cells}")


def figures_of(results: list[LoadResult], args: argparse.Namespace, prefix: str) -> tuple[list[Any], Any]:
    """Figures pooled over the repeats of one topology, and a summary of each load."""
    warm = args.warmup
    target = args.jobs * args.metrics * args.hz
    per_second = [x for r in results for x in logged_per_second(r, args.metrics)]
    lags = [x for r in results for x in lag_samples_ms(r, r.start + warm)]

    def deliveries(phase: str, field: str) -> list[float]:
        out: list[float] = []
        for r in results:
            since, until = (r.start + warm, r.slow_joined) if phase == "alone" else (r.slow_joined, r.end)
            out += delivery_ms(r.fast, since, until, field=field)
        return out

    figures = [
        report.figure(
            f"{prefix}points logged per second", "points/s", per_second, higher_is_better=True,
            note=f"target {target:,.0f} points/s "
            f"({args.jobs} jobs x {args.metrics} metrics x {args.hz:g} Hz)",
        ),
        report.figure(
            f"{prefix}ingest -> ClickHouse lag", "ms", lags, higher_is_better=False,
            note=f"run.log -> visible in the runs table; polled every {args.poll_interval:g} s "
            "(midpoint between polls); includes the SDK flush interval (0.2 s)",
        ),
    ]  # fmt: skip
    for phase, label in (("alone", "without slow subscribers"), ("with", "with slow subscribers")):
        newest, oldest = deliveries(phase, "newest_ms"), deliveries(phase, "oldest_ms")
        if newest:
            figures.append(
                report.figure(
                    f"{prefix}delivery to fast subscribers, {label}", "ms", newest, higher_is_better=False,
                    note="run.log of the event's newest point -> frame read by the subscriber",
                )
            )  # fmt: skip
            figures.append(
                report.figure(
                    f"{prefix}delivery to fast subscribers, {label}, from the oldest point", "ms", oldest,
                    higher_is_better=False,
                    note="run.log of the event's oldest point (it waited for the SDK flush) -> frame read",
                )
            )  # fmt: skip
    slow_parts = [r.slow for r in results if r.slow is not None]
    slow_lat = [
        x
        for r in results
        if r.slow is not None
        for x in delivery_ms([r.slow], r.slow_joined, r.end + 600, field="newest_ms")
    ]
    if slow_lat:
        figures.append(
            report.figure(
                f"{prefix}delivery to slow subscribers", "ms", slow_lat, higher_is_better=False,
                note=f"resyncs {sum(p['resyncs'] for p in slow_parts)}; they read at most "
                f"{args.slow_bytes_per_s:g} bytes/s",
            )
        )  # fmt: skip
    polls_ms = [
        (done - sent) * 1000.0 for r in results for sent, done, _ in r.polls if r.start <= sent < r.end
    ]
    if polls_ms:
        figures.append(
            report.figure(
                f"{prefix}runs table query under load", "ms", polls_ms, higher_is_better=False,
                note=f"GET /experiments/{{e}}/runs?columns=last_step(m) over {args.jobs} runs",
            )
        )  # fmt: skip
    drains = [r.drained - r.end for r in results if r.drained is not None]
    if drains:
        figures.append(
            report.figure(
                f"{prefix}projection caught up after the load stopped", "s", drains, higher_is_better=False
            )
        )
    summaries = []
    for n, r in enumerate(results):
        series = memory_series(r)
        window = min(60.0, args.duration / 5)
        flat = {name: flatness(points, warm, args.duration, window) for name, points in series.items()}
        load = f" (load {n + 1})" if len(results) > 1 else ""
        for name, points in series.items():
            mib = [m for t, m in points if 0 <= t <= args.duration]
            if not mib:
                continue
            figures.append(
                report.figure(
                    f"{prefix}RSS {name}{load}", "MiB", mib, higher_is_better=False,
                    note=f"sampled every {args.sample_interval:g} s during the load",
                )
            )  # fmt: skip
            if flat[name]:
                f = flat[name]
                figures.append(
                    report.figure(
                        f"{prefix}RSS {name}{load}, last {window:g} s / first {window:g} s", "ratio",
                        [f["ratio"]], higher_is_better=False,
                        note=f"medians {f['first_mib']} -> {f['last_mib']} MiB; 1.0 is flat "
                        f"(first window after the {warm:g} s warmup)",
                    )
                )  # fmt: skip
        print_memory(series, max(args.sample_interval, 10.0) if args.duration > 60 else args.sample_interval)
        logged = sum(job["points"] for job in r.jobs)
        fast_frames = sum(len(p["received_ms"]) for p in r.fast)
        summaries.append(
            {
                "adapter": r.adapter,
                "points_logged": logged,
                "points_in_clickhouse": r.stored_points,
                "points_per_s_achieved": round(logged / args.duration, 1),
                "points_per_s_target": target,
                "late_ticks": sum(job["late_ticks"] for job in r.jobs),
                "max_tick_late_s": round(max(job["max_late_s"] for job in r.jobs), 3),
                "sdk_flushed_after_s": round(max(job["flushed"] for job in r.jobs) - r.end, 2),
                "sdk_undelivered_runs": sum(len(job["undelivered"]) for job in r.jobs),
                "sdk_errors": sorted({e for job in r.jobs for e in job["errors"]}),
                "drained_after_s": None if r.drained is None else round(r.drained - r.end, 2),
                "lag_p50_ms": _pct(lag_samples_ms(r, r.start + warm), 50),
                "lag_p99_ms": _pct(lag_samples_ms(r, r.start + warm), 99),
                "slow_joined_at_s": round(r.slow_joined - r.start, 1),
                "fast_frames": fast_frames,
                "fast_resyncs": sum(p["resyncs"] for p in r.fast),
                "fast_duplicates": sum(p["duplicates"] for p in r.fast),
                "fast_errors": _merge([p["errors"] for p in r.fast]),
                "slow_frames": len(r.slow["received_ms"]) if r.slow else 0,
                "slow_resyncs": r.slow["resyncs"] if r.slow else 0,
                "slow_errors": r.slow["errors"] if r.slow else {},
                "fast_incidents": _incidents([i for p in r.fast for i in p["incidents"]]),
                "slow_incidents": _incidents(r.slow["incidents"] if r.slow else []),
                "slow_first_incident_after_join_s": _first_incidents(r),
                "fast_streams": _merge([p["streams"] for p in r.fast]),
                "slow_streams": r.slow["streams"] if r.slow else {},
                "poll_failures": r.poll_failures,
                "cpu_cores": {name: round(c, 2) for name, c in r.cpu.items()},
                "load_generator_cpu_cores": {
                    "jobs": round(sum(job["cpu_s"] for job in r.jobs) / args.duration, 2),
                    "fast subscribers": round(sum(p["cpu_s"] for p in r.fast) / (r.end - r.start), 2),
                    "slow subscribers": round(r.slow["cpu_s"] / (r.end - r.slow_joined), 2) if r.slow else 0,
                },
                "memory_flatness": flat,
                "memory_mib_every_10s": {
                    name: [[round(t), round(m, 1)] for t, m in _every(points, 10.0)]
                    for name, points in series.items()
                },
            }
        )
    return figures, summaries


def _pct(samples: list[float], q: float) -> float | None:
    return round(report.percentile(samples, q), 1) if samples else None


def _merge(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def _incidents(incidents: list[list[Any]]) -> dict[str, int]:
    """How many of each kind (resync, close <code> <reason>, connection lost, reconnect)."""
    out: dict[str, int] = {}
    for _, _, what in incidents:
        out[what] = out.get(what, 0) + 1
    return out


def _first_incidents(result: LoadResult) -> list[list[Any]]:
    """Per slow subscriber, seconds after the slow ones joined to its first incident, and what."""
    first: dict[int, list[Any]] = {}
    for at, index, what in result.slow["incidents"] if result.slow else []:
        if index not in first:
            first[index] = [round(at - result.slow_joined, 1), what]
    return sorted(first.values(), key=lambda x: float(x[0]))


def _every(points: list[tuple[float, float]], step: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for t, m in points:
        if not out or t >= out[-1][0] + step:
            out.append((t, m))
    return out


def print_headlines(figures: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> None:
    """The answers the issue asks for, one line each (the table shows no p99)."""
    by_name = {f["name"]: f for f in figures}

    def p50_p99(name: str) -> str:
        f = by_name.get(name)
        return "-" if f is None else f"p50 {f['median']:.0f} / p99 {f['p99']:.0f} ms"

    print()
    for s in summaries:
        a = s["adapter"]
        prefix = next((n.split(": ")[0] + ": " for n in by_name if n.startswith(f"{a}: ")), "")
        print(
            f"{a}: points logged {s['points_logged']:,} ({s['points_per_s_achieved']:,.0f}/s of "
            f"{s['points_per_s_target']:,.0f}/s asked); in ClickHouse {s['points_in_clickhouse']:,}"
        )
        print(
            f"{a}: ingest -> ClickHouse lag {p50_p99(prefix + 'ingest -> ClickHouse lag')}; "
            f"caught up {s['drained_after_s']} s after the load stopped"
        )
        alone = p50_p99(prefix + "delivery to fast subscribers, without slow subscribers")
        with_slow = p50_p99(prefix + "delivery to fast subscribers, with slow subscribers")
        print(f"{a}: delivery to fast subscribers: alone {alone}; with the slow ones {with_slow}")
        fast, slow = s["fast_streams"], s["slow_streams"]
        print(
            f"{a}: fast subscribers: {fast.get('events', 0):,} events, missing {fast.get('missing', 0)}, "
            f"duplicates {s['fast_duplicates']} (same seq again {fast.get('same_seq_again', 0)}), "
            f"incidents {s['fast_incidents'] or 'none'}"
        )
        print(
            f"{a}: slow subscribers: {slow.get('events', 0):,} events, missing {slow.get('missing', 0)}, "
            f"same seq again {slow.get('same_seq_again', 0)}, "
            f"incidents {s['slow_incidents'] or 'none'}"
        )
        flat = ", ".join(f"{name} {f.get('ratio')}" for name, f in s["memory_flatness"].items())
        print(f"{a}: memory, median of the last window / first window: {flat}")
