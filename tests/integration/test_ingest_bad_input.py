"""Bad input at the ingest API: each rejection names the field and the rule; good events are kept."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from runstream.settings import Settings
from tests.conftest import unique
from tests.support import event, eventually, points, running_server


def with_field(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``base`` with ``path`` (dotted; ``-`` deletes) set to ``value``."""
    copy: dict[str, Any] = orjson.loads(orjson.dumps(base))
    node: Any = copy
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return copy


DELETE = object()

# (case id, path, value, expected field, expected rule)
BAD_EVENTS = [
    ("missing run_id", "run_id", DELETE, "run_id", "required"),
    ("missing payload", "payload", DELETE, "payload", "required"),
    ("ts as string", "ts", "yesterday", "ts", "type"),
    ("negative seq", "seq", -1, "seq", "minimum"),
    ("unknown type", "type", "run.exploded", "type", "enum"),
    ("future schema_version", "schema_version", 99, "schema_version", "maximum"),
    ("event_id not a uuid", "event_id", "abc", "event_id", "pattern"),
    ("run_id with newline", "run_id", "run\n", "run_id", "pattern"),
    ("unexpected top-level field", "colour", "blue", "colour", "additionalProperties"),
    ("value as string", "payload.points.0.value", "high", "payload.points[0].value", "anyOf"),
    ("value as null", "payload.points.0.value", None, "payload.points[0].value", "anyOf"),
    ("value as boolean", "payload.points.0.value", True, "payload.points[0].value", "anyOf"),
    ("value as object", "payload.points.0.value", {"v": 1}, "payload.points[0].value", "anyOf"),
    ("negative step", "payload.points.0.step", -3, "payload.points[0].step", "minimum"),
    ("fractional step", "payload.points.0.step", 1.5, "payload.points[0].step", "type"),
    ("huge step", "payload.points.0.step", 2**60, "payload.points[0].step", "maximum"),
    ("empty metric name", "payload.points.0.name", "", "payload.points[0].name", "pattern"),
    ("control char in name", "payload.points.0.name", "lo\x07ss", "payload.points[0].name", "pattern"),
    ("over-long name", "payload.points.0.name", "l" * 300, "payload.points[0].name", "pattern"),
    ("no points", "payload.points", [], "payload.points", "minItems"),
]


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_each_bad_event_is_named_and_good_ones_are_stored(settings: Settings) -> None:
    run_id = unique("run")
    template = event("metrics.logged", run_id, points("loss", [0.5]))
    batch: list[Any] = []
    expected: dict[int, tuple[str, str]] = {}
    good_ids: list[str] = []
    for step, (_, path, value, field, rule) in enumerate(BAD_EVENTS):
        good = event("metrics.logged", run_id, points("loss", [float(step)], start_step=step), seq=step)
        batch.append(good)
        good_ids.append(good["event_id"])
        expected[len(batch)] = (field, rule)
        batch.append(with_field(template, path, value))
    expected[len(batch)] = ("event", "type")
    batch.append("not an object")
    expected[len(batch)] = ("event", "maxBytes")
    big = event("run.failed", run_id, {"error": "x" * 60_000})
    batch.append(big)

    async with (
        running_server(settings.with_changes(max_event_bytes=50_000)) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        response = await http.post("/api/v1/events", content=orjson.dumps(batch))
        assert response.status_code == 207
        body = response.json()
        rejected = {r["index"]: (r["field"], r["rule"]) for r in body["rejected"]}
        assert rejected == expected
        for r in body["rejected"]:
            assert r["field"].split(".")[0].split("[")[0] in r["message"] or r["field"] == "event"
        assert [a["event_id"] for a in body["accepted"]] == good_ids

        async def all_good() -> list[Any] | None:
            r = await http.get(f"/api/v1/runs/{run_id}/metrics")
            loss: list[Any] = r.json()["metrics"].get("loss", []) if r.status_code == 200 else []
            return loss if len(loss) == len(BAD_EVENTS) else None

        loss = await eventually(all_good)
        assert [p["value"] for p in loss] == [float(i) for i in range(len(BAD_EVENTS))]


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_malformed_requests(settings: Settings) -> None:
    async with (
        running_server(settings.with_changes(max_body_bytes=10_000)) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        truncated = orjson.dumps([event("run.created", "r1")])[:-7]
        r = await http.post("/api/v1/events", content=truncated)
        assert r.status_code == 400
        assert r.json()["position"] == len(truncated) - 0 or "byte" in r.json()["detail"]
        assert "byte" in r.json()["detail"]

        r = await http.post("/api/v1/events", content=b'{"type": "run.created"}')
        assert r.status_code == 400 and "JSON array" in r.json()["detail"]

        r = await http.post("/api/v1/events", content=b"\xff\xfe not utf-8")
        assert r.status_code == 400

        r = await http.post("/api/v1/events", content=b"[" + b" " * 20_000 + b"]")
        assert r.status_code == 413

        async def chunks() -> Any:
            for _ in range(100):
                yield b" " * 1000

        r = await http.post("/api/v1/events", content=chunks())
        assert r.status_code == 413

        only_bad = [with_field(event("run.created", "r1"), "run_id", DELETE)]
        r = await http.post("/api/v1/events", content=orjson.dumps(only_bad))
        assert r.status_code == 422
        assert r.json()["rejected"][0]["field"] == "run_id"

        r = await http.post("/api/v1/events", content=b"[]")
        assert r.status_code == 200 and r.json() == {"accepted": [], "rejected": []}


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_gzip_bodies(settings: Settings) -> None:
    import gzip

    run_id = unique("run")
    async with (
        running_server(settings.with_changes(max_body_bytes=100_000)) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        body = gzip.compress(orjson.dumps([event("run.created", run_id)]))
        r = await http.post("/api/v1/events", content=body, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 200 and len(r.json()["accepted"]) == 1

        bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")
        assert len(bomb) < 100_000
        r = await http.post("/api/v1/events", content=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413

        r = await http.post("/api/v1/events", content=b"not gzip", headers={"Content-Encoding": "gzip"})
        assert r.status_code == 400 and "gzip" in r.json()["detail"]

        r = await http.post("/api/v1/events", content=b"[]", headers={"Content-Encoding": "br"})
        assert r.status_code == 400 and "Content-Encoding" in r.json()["detail"]
