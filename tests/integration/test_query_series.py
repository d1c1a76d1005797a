"""One metric series (downsampled in SQL), every metric of a run, and compare, against brute force."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runstream.events.codec import from_wire_float, to_wire_float
from runstream.query import series as series_module
from runstream.settings import Settings
from tests.integration.query_helpers import brute_summary, event, make_settings, post, same
from tests.support import running_server


@pytest.fixture
def settings(tmp_path: Path, chdb_path: Path) -> Settings:
    return make_settings(tmp_path, chdb_path)


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60) as client,
    ):
        yield client


def spiky(n: int, seed: int) -> dict[int, float]:
    rng = random.Random(seed)
    values = {step: math.sin(step / 50) + rng.uniform(-0.01, 0.01) for step in range(n)}
    values[n // 3] = 40.0  # a spike up
    values[2 * n // 3] = -40.0  # and one down
    return values


async def log_series(
    http: httpx.AsyncClient, run_id: str, values: dict[int, float], *, seq0: int = 1
) -> None:
    events = [event("run.created", run_id, seq=0)]
    steps = sorted(values)
    for k, start in enumerate(range(0, len(steps), 5000)):
        points = [
            {"name": "loss", "value": to_wire_float(values[s]), "step": s}
            for s in steps[start : start + 5000]
        ]
        events.append(event("metrics.logged", run_id, {"points": points}, seq=seq0 + k))
    await post(http, events)


def check_buckets(
    buckets: list[dict[str, Any]], values: dict[int, float], width: int, max_points: int
) -> None:
    assert 0 < len(buckets) <= max_points
    covered = 0
    for bucket in buckets:
        inside = {s: v for s, v in values.items() if bucket["step_min"] <= s <= bucket["step_max"]}
        assert bucket["step_max"] - bucket["step_min"] < width
        assert bucket["count"] == len(inside)
        finite = [v for v in inside.values() if not math.isnan(v)]
        assert same(bucket["min"], min(finite)) and same(bucket["max"], max(finite))
        assert same(bucket["last"], inside[max(inside)])
        covered += bucket["count"]
    assert covered == len(values)


@pytest.mark.parametrize("n", [5000, 70_000])  # from the points; from the rollups (level 6)
async def test_downsampled_series_keeps_each_buckets_min_max_and_last(
    http: httpx.AsyncClient, n: int
) -> None:
    values = spiky(n, seed=n)
    await log_series(http, "long", values)
    body = (await http.get("/api/v1/runs/long/metrics/loss", params={"max_points": 100})).json()
    assert body["downsampled"] is True
    check_buckets(body["buckets"], values, body["bucket_width"], 100)
    assert max(from_wire_float(b["max"]) for b in body["buckets"]) == 40.0, "the spike survives"
    assert min(from_wire_float(b["min"]) for b in body["buckets"]) == -40.0
    summary = brute_summary((s, v, 1, 0) for s, v in values.items())
    assert body["summary"]["count"] == summary.count and same(body["summary"]["last"], summary.last)


async def test_short_series_and_full_resolution_come_back_as_points(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {s: (math.nan if s == 3 else float(s)) for s in range(0, 400, 2)}
    await log_series(http, "r1", values)
    body = (await http.get("/api/v1/runs/r1/metrics/loss")).json()
    assert body["downsampled"] is False and [p["step"] for p in body["points"]] == sorted(values)
    full = (await http.get("/api/v1/runs/r1/metrics/loss", params={"max_points": 10, "full": "true"})).json()
    assert len(full["points"]) == 200
    small = (await http.get("/api/v1/runs/r1/metrics/loss", params={"max_points": 10})).json()
    check_buckets(small["buckets"], values, small["bucket_width"], 10)
    monkeypatch.setattr(series_module, "FULL_LIMIT", 100)
    refused = await http.get("/api/v1/runs/r1/metrics/loss", params={"full": "true"})
    assert refused.status_code == 400 and refused.json()["parameter"] == "full"
    for params, parameter in (({"max_points": 0}, "max_points"), ({"max_points": 10_001}, "max_points")):
        response = await http.get("/api/v1/runs/r1/metrics/loss", params=params)
        assert response.status_code == 400 and response.json()["parameter"] == parameter
    assert (await http.get("/api/v1/runs/r1/metrics/nope")).status_code == 404
    assert (await http.get("/api/v1/runs/nobody/metrics/loss")).status_code == 404


async def test_relogged_series_are_exact_in_summaries_points_and_buckets(http: httpx.AsyncClient) -> None:
    """A step logged again replaces its value everywhere: min and max forget the old one."""
    values = {s: float(s % 10) for s in range(3000)}
    await log_series(http, "r1", {**values, 1500: 1000.0, 1501: -1000.0})
    relog = [{"name": "loss", "value": values[s], "step": s} for s in (1500, 1501)]
    await post(http, [event("metrics.logged", "r1", {"points": relog}, seq=50)])
    body = (await http.get("/api/v1/runs/r1/metrics/loss", params={"max_points": 30})).json()
    check_buckets(body["buckets"], values, body["bucket_width"], 30)
    assert (
        body["summary"]["max"] == 9.0 and body["summary"]["min"] == 0.0 and body["summary"]["count"] == 3000
    )
    run = (await http.get("/api/v1/runs/r1")).json()
    assert run["metrics"]["loss"]["max"] == 9.0
    full = (await http.get("/api/v1/runs/r1/metrics")).json()["metrics"]["loss"]
    assert [p["value"] for p in full] == [values[s] for s in range(3000)]


async def test_compare_runs_by_metrics_in_one_call(http: httpx.AsyncClient) -> None:
    rng = random.Random(3)
    truth: dict[tuple[str, str], list[tuple[int, float, int, int]]] = {}
    events = []
    for r in range(4):
        run_id = f"r{r}"
        events.append(event("run.created", run_id, {"name": f"trial {r}"}, seq=0, experiment=f"e{r % 2}"))
        for seq in range(1, 4):
            points = []
            for index in range(50):
                name = rng.choice(["loss", "acc"] if r != 3 else ["acc"])
                value = rng.choice([rng.random(), rng.random(), math.nan])
                step = rng.randint(0, 300 if r else 3000)
                points.append({"name": name, "value": to_wire_float(value), "step": step})
                truth.setdefault((run_id, name), []).append((step, value, seq, index))
            events.append(
                event("metrics.logged", run_id, {"points": points}, seq=seq, experiment=f"e{r % 2}")
            )
    await post(http, events)
    for method in ("GET", "POST"):
        if method == "GET":
            response = await http.get(
                "/api/v1/compare", params={"runs": "r0,r1,r2,r3", "metrics": "loss,acc", "max_points": 50}
            )
        else:
            response = await http.post(
                "/api/v1/compare",
                json={"runs": ["r0", "r1", "r2", "r3"], "metrics": ["loss", "acc"], "max_points": 50},
            )
        assert response.status_code == 200, response.text
        body = response.json()
        assert [r["run_id"] for r in body["runs"]] == ["r0", "r1", "r2", "r3"]
        for run in body["runs"]:
            assert run["name"] == f"trial {run['run_id'][1]}"
            for name in ("loss", "acc"):
                logged = truth.get((run["run_id"], name))
                if logged is None:
                    assert name not in run["metrics"]
                    continue
                got = run["metrics"][name]
                want = brute_summary(logged)
                assert same(got["summary"]["last"], want.last) and same(got["summary"]["min"], want.min)
                assert same(got["summary"]["max"], want.max) and got["summary"]["count"] == want.count
                if got["downsampled"]:
                    assert len(got["buckets"]) <= 50 and sum(b["count"] for b in got["buckets"]) == want.count
                else:
                    assert len(got["points"]) == want.count
    cases = [
        ({"runs": "r0,nobody", "metrics": "loss"}, "runs"),
        ({"runs": "r0", "metrics": "nothing"}, "metrics"),
        ({"runs": "", "metrics": "loss"}, "runs"),
        ({"runs": ",".join(f"r{i}" for i in range(51)), "metrics": "loss"}, "runs"),
        ({"runs": "r0", "metrics": "loss", "max_points": "many"}, "max_points"),
    ]
    for params, parameter in cases:
        response = await http.get("/api/v1/compare", params=params)
        assert response.status_code == 400 and response.json()["parameter"] == parameter, (
            params,
            response.text,
        )


async def test_min_and_max_ignore_nan_unless_every_value_is_nan(http: httpx.AsyncClient) -> None:
    """The documented NaN rule, pinned: ClickHouse's min and max skip NaN; an all-NaN series is NaN."""
    series: dict[str, list[str | int]] = {
        "mixed": ["NaN", 2, "NaN", -1, "NaN"],
        "all_nan": ["NaN", "NaN"],
        "infinite": ["-Infinity", 0, "Infinity", "NaN"],
    }
    events = [event("run.created", "r1", seq=0)]
    events.append(
        event(
            "metrics.logged",
            "r1",
            {
                "points": [
                    {"name": n, "value": v, "step": s} for n, vs in series.items() for s, v in enumerate(vs)
                ]
            },
            seq=1,
        )
    )
    await post(http, events)
    got = (await http.get("/api/v1/runs/r1")).json()["metrics"]
    assert (got["mixed"]["min"], got["mixed"]["max"], got["mixed"]["last"]) == (-1, 2, "NaN")
    assert (got["all_nan"]["min"], got["all_nan"]["max"]) == ("NaN", "NaN")
    assert (got["infinite"]["min"], got["infinite"]["max"]) == ("-Infinity", "Infinity")
    table = (
        await http.get("/api/v1/experiments/exp/runs", params={"columns": "min(mixed),max(all_nan)"})
    ).json()
    assert table["runs"][0]["columns"] == {"min(mixed)": -1, "max(all_nan)": "NaN"}
    buckets = (await http.get("/api/v1/runs/r1/metrics/mixed", params={"max_points": 1})).json()["buckets"]
    assert (buckets[0]["min"], buckets[0]["max"], buckets[0]["last"]) == (-1, 2, "NaN")
