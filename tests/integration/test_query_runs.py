"""Experiments, the runs table and run details, on the real engine, against brute force."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runstream.settings import Settings
from tests.integration.query_helpers import Summary, brute_summary, event, make_settings, post, same
from tests.support import running_server

pytestmark = pytest.mark.filterwarnings("error")


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


def random_runs(
    rng: random.Random, count: int, experiment: str = "exp"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Runs with random loss/acc series (NaN, infinities, relogged steps, a re-sent event)."""
    events: list[dict[str, Any]] = []
    truth: dict[str, Any] = {}
    for r in range(count):
        run_id = f"run-{r:03d}"
        status = rng.choice(["queued", "running", "completed", "failed"])
        seq = 0
        events.append(
            event(
                "run.created",
                run_id,
                {"name": f"n{r % 5}", "tags": {"team": f"t{r % 3}"}},
                seq=seq,
                experiment=experiment,
            )
        )
        lifecycle = {"queued": ["run.queued"], "running": ["run.queued", "run.started"]}.get(
            status, ["run.queued", "run.started", f"run.{status}"]
        )
        for kind in lifecycle:
            seq += 1
            events.append(event(kind, run_id, seq=seq, experiment=experiment))
        logged: dict[str, list[tuple[int, float, int, int]]] = {}
        metrics = ["loss", "acc"] if r % 7 else ["acc"]  # some runs never log loss
        for _ in range(rng.randint(1, 4)):
            seq += 1
            points = []
            for index in range(rng.randint(1, 30)):
                name = rng.choice(metrics)
                step = rng.randint(0, 40)
                value = rng.choice([rng.uniform(-5, 5)] * 8 + [math.nan, math.inf, -math.inf])
                wire: float | str = (
                    value
                    if math.isfinite(value)
                    else {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]
                )
                points.append({"name": name, "value": wire, "step": step})
                logged.setdefault(name, []).append((step, value, seq, index))
            batch = event("metrics.logged", run_id, {"points": points}, seq=seq, experiment=experiment)
            events.append(batch)
            if rng.random() < 0.2:
                events.append(batch)  # delivered twice: must change nothing
        truth[run_id] = {
            "status": status,
            "team": f"t{r % 3}",
            "summaries": {name: brute_summary(points) for name, points in logged.items()},
        }
    return events, truth


def expected_value(summary: Summary | None, aggregate: str) -> float | None:
    if summary is None:
        return None
    return float(
        {"last": summary.last, "min": summary.min, "max": summary.max, "count": summary.count}[aggregate]
    )


def sort_key(value: float | None, run_id: str, descending: bool) -> tuple[int, float, str]:
    """The documented order: runs with a value first (by value), then NaN, then no value; ties by run id."""
    if value is None:
        return (2, 0.0, run_id)
    if math.isnan(value):
        return (1, 0.0, run_id)
    return (0, value, run_id)


async def all_pages(http: httpx.AsyncClient, experiment: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = await http.get(
            f"/api/v1/experiments/{experiment}/runs",
            params={**params, **({"cursor": cursor} if cursor else {})},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        runs += body["runs"]
        cursor = body["next_cursor"]
        if cursor is None:
            return runs


async def test_runs_table_summaries_filters_and_order_match_brute_force(http: httpx.AsyncClient) -> None:
    rng = random.Random(7)
    events, truth = random_runs(rng, 40)
    await post(http, events)
    columns = "last(loss),min(loss),max(loss),count(loss),last(acc),min(acc)"

    for sort, descending in (("last(loss)", False), ("-min(acc)", True), ("-max(loss)", True)):
        spec = sort.lstrip("-")
        aggregate, metric = spec[:-1].split("(")
        runs = await all_pages(http, "exp", {"sort": sort, "columns": columns, "limit": 7})
        got = [r["run_id"] for r in runs]
        keys = {
            run_id: sort_key(expected_value(t["summaries"].get(metric), aggregate), run_id, descending)
            for run_id, t in truth.items()
        }
        expected = sorted(truth, key=lambda run_id: keys[run_id])
        if descending:  # values descending, NaN and missing still last, ties by run id descending
            expected = sorted(truth, key=lambda run_id: (keys[run_id][0], -keys[run_id][1], keys[run_id][2]))
            expected = [
                r
                for rank in (0, 1, 2)
                for r in sorted(
                    (x for x in truth if keys[x][0] == rank), key=lambda x: (keys[x][1], x), reverse=True
                )
            ]
        assert got == expected, sort
        for run in runs:
            summaries = truth[run["run_id"]]["summaries"]
            for column, value in run["columns"].items():
                agg, name = column[:-1].split("(")
                want = expected_value(summaries.get(name), agg)
                assert (value is None) == (want is None), (run["run_id"], column)
                if want is not None:
                    assert same(value, want), (run["run_id"], column, value, want)

    runs = await all_pages(
        http, "exp", {"where": "min(loss)<0,count(acc)>=5", "status": "running,completed", "tag": "team=t1"}
    )
    expected_ids = {
        run_id
        for run_id, t in truth.items()
        if "loss" in t["summaries"]
        and t["summaries"]["loss"].min < 0
        and "acc" in t["summaries"]
        and t["summaries"]["acc"].count >= 5
        and t["status"] in ("running", "completed")
        and t["team"] == "t1"
    }
    assert {r["run_id"] for r in runs} == expected_ids
    assert all(r["tags"] == {"team": "t1"} for r in runs)


async def test_paging_skips_and_repeats_no_run_while_new_runs_arrive(http: httpx.AsyncClient) -> None:
    events = []
    for r in range(20):
        events.append(event("run.created", f"old-{r:02d}", seq=0, ts=1_764_300_000_000 + r * 1000))
        events.append(
            event(
                "metrics.logged",
                f"old-{r:02d}",
                {"points": [{"name": "loss", "value": r % 4, "step": 0}]},
                seq=1,
            )
        )
    await post(http, events)
    for n, sort in enumerate(("-created_at", "created_at", "-last(loss)", "name")):
        seen: list[str] = []
        cursor = None
        page_no = 0
        while True:
            params: dict[str, Any] = {"sort": sort, "limit": 5}
            if cursor:
                params["cursor"] = cursor
            body = (await http.get("/api/v1/experiments/exp/runs", params=params)).json()
            seen += [r["run_id"] for r in body["runs"]]
            page_no += 1
            if page_no <= 3:  # new runs arrive between pages: before, among and after those seen
                new = [
                    event("run.created", f"new-{n}-{page_no}-{k}", seq=0, ts=1_764_300_000_000 + k * 7_000)
                    for k in range(3)
                ]
                new.append(
                    event(
                        "metrics.logged",
                        new[1]["run_id"],
                        {"points": [{"name": "loss", "value": 1.5, "step": 0}]},
                        seq=1,
                    )
                )
                await post(http, new)
            cursor = body["next_cursor"]
            if cursor is None:
                break
        old = [r for r in seen if r.startswith("old-")]
        assert len(seen) == len(set(seen)), f"{sort}: a run was repeated"
        assert sorted(old) == [f"old-{r:02d}" for r in range(20)], f"{sort}: a run was skipped"


async def test_bad_parameters_are_400_naming_them(http: httpx.AsyncClient) -> None:
    await post(
        http,
        [
            event("run.created", "r1", seq=0),
            event("run.created", "r2", seq=0),
            event("metrics.logged", "r1", {"points": [{"name": "loss", "value": 1, "step": 0}]}, seq=1),
        ],
    )
    cases = {
        "columns": {"columns": "last(nope)"},
        "where": {"where": "min(loss)<<1"},
        "sort": {"sort": "-median(loss)"},
        "limit": {"limit": "501"},
        "status": {"status": "sleeping"},
        "cursor": {"cursor": "not-a-cursor"},
        "workspace": {"workspace": "bad space"},
    }
    for parameter, params in cases.items():
        response = await http.get("/api/v1/experiments/exp/runs", params=params)
        assert response.status_code == 400, (parameter, response.text)
        body = response.json()
        assert body["error"] == "bad parameter" and body["parameter"] == parameter, body
    first = (await http.get("/api/v1/experiments/exp/runs", params={"limit": 1, "sort": "name"})).json()
    assert first["next_cursor"]
    other = await http.get(
        "/api/v1/experiments/exp/runs", params={"cursor": first["next_cursor"], "sort": "created_at"}
    )
    assert other.status_code == 400 and other.json()["parameter"] == "cursor"
    assert (await http.get("/api/v1/experiments/nothing-here/runs")).status_code == 404


async def test_experiments_and_run_details(http: httpx.AsyncClient) -> None:
    t0 = 1_764_300_000_000
    events = [
        event(
            "run.created",
            "parent",
            {"name": "sweep", "compute": "gpu", "tags": {"a": "1", "b": "x"}},
            seq=0,
            ts=t0,
        ),
        event("run.queued", "parent", seq=1, ts=t0 + 10),
        event("run.started", "parent", seq=2, ts=t0 + 1000),
        event("run.tags_set", "parent", {"tags": {"a": "2"}}, seq=3),
        event("run.tags_set", "parent", {"tags": {"a": "stale"}}, seq=1),  # an older seq loses
        event(
            "run.properties_set", "parent", {"properties": {"lr": 0.01, "arch": "resnet", "ok": True}}, seq=4
        ),
        event("run.child_linked", "parent", {"child_run_id": "child-1", "name": "trial 1"}, seq=5),
        event("run.created", "child-2", {"parent_run_id": "parent", "name": "trial 2"}, seq=0),
        event("run.created", "grandchild", {"parent_run_id": "child-2"}, seq=0),
        event("run.started", "child-2", seq=1),
        event(
            "metrics.logged",
            "parent",
            {"points": [{"name": "loss", "value": v, "step": i} for i, v in enumerate([3, 1, 2])]},
            seq=6,
        ),
        event("run.completed", "parent", seq=7, ts=t0 + 61_000),
        event("run.created", "other", seq=0, experiment="exp-2", ts=t0 + 5),
    ]
    await post(http, events)
    run = (await http.get("/api/v1/runs/parent")).json()
    assert run["status"] == "completed" and run["duration_ms"] == 60_000
    assert run["tags"] == {"a": "2", "b": "x"}
    assert run["properties"] == {"arch": "resnet", "lr": 0.01, "ok": True}
    assert run["metrics"]["loss"]["last"] == 2 and run["metrics"]["loss"]["min"] == 1
    assert run["metrics"]["loss"]["count"] == 3
    tree = {c["run_id"]: c for c in run["children"]}
    assert set(tree) == {"child-1", "child-2"} and tree["child-1"]["name"] == "trial 1"
    assert [g["run_id"] for g in tree["child-2"]["children"]] == ["grandchild"]
    assert tree["child-2"]["status"] == "running" and run["children_truncated"] is False

    body = (await http.get("/api/v1/experiments")).json()
    rows = {e["experiment"]: e for e in body["experiments"]}
    assert rows["exp"]["runs"] == 3 and rows["exp"]["active_runs"] == 1 and rows["exp-2"]["runs"] == 1
    assert rows["exp"]["last_activity"] == "2025-11-28T03:21:01.000Z"
    assert (await http.get("/api/v1/runs/nobody")).status_code == 404
