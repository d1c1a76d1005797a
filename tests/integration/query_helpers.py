"""Helpers for the query and replay tests: posting events, waiting for them, brute-force answers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from runstream.events.codec import from_wire_float
from runstream.settings import Settings
from tests.conftest import isolated_settings

T0 = 1_764_300_000_000


async def post(
    http: httpx.AsyncClient, events: Sequence[dict[str, Any]], *, wait: bool = True
) -> dict[int, int]:
    """POST events to ingest; with ``wait``, return once the projector applied all of them."""
    positions: dict[int, int] = {}
    for start in range(0, len(events), 2000):
        response = await http.post("/api/v1/events", content=orjson.dumps(list(events[start : start + 2000])))
        assert response.status_code == 200, response.text
        for accepted in response.json()["accepted"]:
            positions[accepted["partition"]] = max(
                positions.get(accepted["partition"], -1), accepted["offset"]
            )
    if wait and positions:
        await settle(http, positions)
    return positions


async def settle(http: httpx.AsyncClient, positions: dict[int, int]) -> None:
    spec = ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))
    for _ in range(10):
        response = await http.get("/api/v1/projection/wait", params={"positions": spec, "timeout": 10})
        if response.json().get("ready"):
            return
    raise AssertionError(f"events at {spec} were not projected")


@dataclass(frozen=True)
class Summary:
    last: float
    min: float
    max: float
    count: int
    first_step: int
    last_step: int


def brute_summary(logged: Iterable[tuple[int, float, int, int]]) -> Summary:
    """From (step, value, seq, index) as logged: one value per step (highest (seq, index) wins), then
    last at the highest step, min and max ignoring NaN unless every value is NaN, and the count."""
    final: dict[int, tuple[tuple[int, int], float]] = {}
    for step, value, seq, index in logged:
        if step not in final or (seq, index) > final[step][0]:
            final[step] = ((seq, index), value)
    values = [final[s][1] for s in sorted(final)]
    finite = [v for v in values if not math.isnan(v)]
    top = max(final)
    return Summary(
        last=final[top][1],
        min=min(finite) if finite else math.nan,
        max=max(finite) if finite else math.nan,
        count=len(final),
        first_step=min(final),
        last_step=top,
    )


def same(api_value: Any, expected: float) -> bool:
    """An API number (or its NaN/Infinity string) equals ``expected`` (NaN equals NaN)."""
    got = from_wire_float(api_value)
    return (math.isnan(got) and math.isnan(expected)) or got == expected


def event(
    kind: str,
    run_id: str,
    payload: dict[str, Any] | None = None,
    *,
    seq: int,
    experiment: str = "exp",
    workspace: str = "default",
    ts: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    import uuid

    return {
        "event_id": event_id or str(uuid.uuid4()),
        "type": kind,
        "schema_version": 1,
        "workspace": workspace,
        "experiment": experiment,
        "run_id": run_id,
        "ts": T0 + seq if ts is None else ts,
        "seq": seq,
        "payload": payload or {},
    }


def make_settings(tmp_path: Path, chdb_path: Path, *, kafka: str | None = None) -> Settings:
    """Settings for one test on the local log (the query tests do not depend on the log)."""
    return isolated_settings(tmp_path / "data", chdb_path, kafka_bootstrap=kafka)


FILE_ID = "0f0c6b5e-1b1a-4b8e-9d5a-9f1d2a3b4c5e"


def rich_events(experiment: str = "exp") -> list[dict[str, Any]]:
    """One of every event type, with relogged steps, non-finite values and a child run."""
    import base64
    import hashlib

    data = b"weights" * 100
    chunks = [data[i : i + 300] for i in range(0, len(data), 300)]
    out = [
        event(
            "run.created",
            "main",
            {"name": "main", "compute": "gpu", "tags": {"a": "1"}},
            seq=0,
            experiment=experiment,
        ),
        event("run.queued", "main", seq=1, experiment=experiment),
        event("run.started", "main", seq=2, experiment=experiment),
        event("run.tags_set", "main", {"tags": {"a": "2", "b": "3"}}, seq=3, experiment=experiment),
        event("run.properties_set", "main", {"properties": {"lr": 0.1}}, seq=4, experiment=experiment),
        event("run.child_linked", "main", {"child_run_id": "kid"}, seq=5, experiment=experiment),
        event("run.created", "kid", {"parent_run_id": "main"}, seq=0, experiment=experiment),
        event("run.failed", "kid", {"error": "boom"}, seq=1, experiment=experiment),
        event("list.logged", "main", {"name": "l", "values": [1, "NaN"]}, seq=6, experiment=experiment),
        event("row.logged", "main", {"name": "r", "index": 0, "row": {"x": 1}}, seq=7, experiment=experiment),
        event("table.logged", "main", {"name": "t", "columns": {"x": [1, 2]}}, seq=8, experiment=experiment),
        event(
            "logs.appended",
            "main",
            {"lines": [{"stream": "stdout", "line_no": n, "text": f"l{n}"} for n in range(5)]},
            seq=9,
            experiment=experiment,
        ),
    ]
    seq = 10
    for index, chunk in enumerate(chunks):
        out.append(
            event(
                "file.chunk",
                "main",
                {"file_id": FILE_ID, "index": index, "data": base64.b64encode(chunk).decode()},
                seq=seq,
                experiment=experiment,
            )
        )
        seq += 1
    out.append(
        event(
            "file.uploaded",
            "main",
            {
                "file_id": FILE_ID,
                "kind": "output",
                "path": "w.bin",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "chunks": len(chunks),
            },
            seq=seq,
            experiment=experiment,
        )
    )
    for k in range(3):  # a long-ish series, then steps logged again with other values
        points = [
            {"name": "loss", "value": (s % 17) / 3 if s % 97 else "Infinity", "step": s}
            for s in range(k * 3000, (k + 1) * 3000)
        ]
        out.append(event("metrics.logged", "main", {"points": points}, seq=100 + k, experiment=experiment))
    out.append(
        event(
            "metrics.logged",
            "main",
            {
                "points": [
                    {"name": "loss", "value": -9, "step": 5},
                    {"name": "acc", "value": "NaN", "step": 0},
                ]
            },
            seq=200,
            experiment=experiment,
        )
    )
    out.append(event("run.completed", "main", seq=300, experiment=experiment))
    return out


async def answers(http: httpx.AsyncClient, experiment: str = "exp") -> dict[str, Any]:
    """Every query endpoint's answer about the runs of ``rich_events``."""
    paths: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/experiments", {}),
        (
            f"/api/v1/experiments/{experiment}/runs",
            {"columns": "last(loss),min(loss),max(loss),count(loss),max(acc)", "sort": "-last(loss)"},
        ),
        ("/api/v1/runs/main", {}),
        ("/api/v1/runs/kid", {}),
        ("/api/v1/runs/main/metrics", {}),
        ("/api/v1/runs/main/metrics/loss", {"max_points": 50}),
        ("/api/v1/runs/main/metrics/loss", {"max_points": 2000}),
        ("/api/v1/runs/main/values", {}),
        ("/api/v1/runs/main/logs", {"limit": 3}),
        ("/api/v1/runs/main/files", {}),
        ("/api/v1/compare", {"runs": "main,kid", "metrics": "loss,acc"}),
        ("/api/v1/compute", {}),
    ]
    out: dict[str, Any] = {}
    for path, params in paths:
        response = await http.get(path, params=params)
        assert response.status_code == 200, (path, response.text)
        out[f"{path}?{sorted(params.items())}"] = response.json()
    download = await http.get("/api/v1/runs/main/files/w.bin")
    assert download.status_code == 200
    out["download"] = download.content
    return out
