"""An injection corpus through every parameter of every query endpoint finds nothing.

The endpoints and their parameters come from the served OpenAPI document, so a new
route is covered as soon as it is documented (and the OpenAPI test makes sure every
route is). Each payload, sent with a read token of workspace ``default``, must be answered as
data — 200, 400 or 404 (403 for the workspace parameter), never a 5xx — must never
bring back the data of another workspace, and the store must be intact
afterwards. The same payloads also travel as data (names, tags, log lines) through
ingest and the projections and come back byte for byte.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from runstream.auth.grants import Role
from runstream.settings import Settings
from tests.support import event, eventually, points, running_server

VICTIM_SECRET = "victim-secret-5b2c"

CORPUS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    '" OR ""="',
    "'; DROP TABLE runs; --",
    "1; DROP DATABASE runstream",
    "') UNION ALL SELECT name, name FROM system.tables --",
    "loss' UNION SELECT * FROM runs --",
    "{workspace:String}",
    "{ws:String}",
    "%s",
    "%(workspace)s",
    "`runs`",
    "\\' OR 1=1 --",
    "' AND sleep(3) --",
    "'||(SELECT name FROM runs LIMIT 1)||'",
    "min(loss) < 0.2 OR 1=1",
    "loss) OR (1=1",
    "*/ OR 1=1 /*",
    "%27%20OR%201%3D1",
    "\u02bc OR 1=1 --",
    "\n; SELECT 1",
    "a' FORMAT JSON SETTINGS readonly=0 --",
    "victim",
    "'" * 300,
]

VALID = {
    "workspace": "default",
    "experiment": "exp",
    "run_id": "run-1",
    "name": "loss",
    "path": "snapshot.zip",
    "token_id": "0000000000000000",
}
"""A good value for each path parameter, so each payload is tried in one place at a time."""


async def seed(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    batch = [
        event("run.created", "run-1", {"name": "one", "tags": {"team": "a"}}, experiment="exp"),
        event("metrics.logged", "run-1", points("loss", [0.9, 0.5, 0.2]), seq=1, experiment="exp"),
        event(
            "run.created",
            "run-v",
            {"name": VICTIM_SECRET, "tags": {"secret": VICTIM_SECRET}},
            workspace="victim",
            experiment="exp",
        ),
        event("metrics.logged", "run-v", points("loss", [0.1]), seq=1, workspace="victim", experiment="exp"),
    ]
    assert (await http.post("/api/v1/events", json=batch, headers=headers)).status_code == 200

    async def projected() -> bool:
        r = await http.get("/api/v1/experiments/exp/runs?workspace=victim", headers=headers)
        ok = await http.get("/api/v1/runs/run-1/metrics/loss", headers=headers)
        return r.status_code == 200 and len(r.json()["runs"]) == 1 and ok.status_code == 200

    await eventually(projected, timeout=30)


def attempts(document: dict[str, Any]) -> list[tuple[str, str, dict[str, str], dict[str, Any] | None]]:
    """``(method, path, query, json_body)`` for each payload in each parameter of each read route."""
    out: list[tuple[str, str, dict[str, str], dict[str, Any] | None]] = []
    for template, item in document["paths"].items():
        for method, operation in item.items():
            if template.startswith(("/api/v1/events", "/api/v1/tokens")):
                continue  # writes: covered below (events) and by the token tests
            slots = [(p["name"], p["in"]) for p in operation.get("parameters", [])]
            if method == "post" and template == "/api/v1/compare":
                slots += [("runs", "body"), ("metrics", "body")]
            for name, where in slots:
                for payload in CORPUS:
                    path = template
                    for key, value in VALID.items():
                        filled = payload if (where == "path" and key == name) else value
                        path = path.replace("{" + key + "}", quote(filled, safe=""))
                    query = {name: payload} if where == "query" else {}
                    body = None
                    if method == "post":
                        body = {"runs": ["run-1"], "metrics": ["loss"]}
                        if where == "body":
                            body[name] = [payload]
                    out.append((method.upper(), path, query, body))
    return out


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_an_injection_corpus_through_every_query_parameter_finds_nothing(settings: Settings) -> None:
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        await seed(http, server.headers)
        before_runs = (await http.get("/api/v1/experiments/exp/runs", headers=server.headers)).json()
        before_loss = (await http.get("/api/v1/runs/run-1/metrics/loss", headers=server.headers)).json()
        document = (await http.get("/api/v1/openapi.json", headers=server.headers)).json()
        tries = attempts(document)
        _, token = await server.app.state.runtime.tokens.issue("default", Role.READ)
        reader = {"Authorization": f"Bearer {token}"}
        assert len(tries) > 40 * len(CORPUS)  # every documented read parameter, not a handful

        gate = asyncio.Semaphore(16)

        async def ask(method: str, path: str, query: dict[str, str], body: Any) -> tuple[str, httpx.Response]:
            async with gate:
                r = await http.request(method, path, params=query, json=body, headers=reader)
                scope_refusal = r.status_code == 403 and set(query) == {"workspace"}
                return ("" if scope_refusal else f"{method} {path} {query} {body}"), r

        answers = await asyncio.gather(*(ask(*t) for t in tries))
        failures = [
            f"{what} -> {r.status_code} {r.text[:160]}"
            for what, r in answers
            if (what and r.status_code not in (200, 400, 404)) or VICTIM_SECRET in r.text
        ]
        assert not failures, failures[:10]
        refused = sum(r.status_code == 400 for _, r in answers)
        assert refused > len(answers) // 4, "most payloads are refused by validation, by name"

        after_runs = (await http.get("/api/v1/experiments/exp/runs", headers=server.headers)).json()
        after_loss = (await http.get("/api/v1/runs/run-1/metrics/loss", headers=server.headers)).json()
        assert after_runs == before_runs and after_loss == before_loss
        victim = await http.get("/api/v1/runs/run-v?workspace=victim", headers=server.headers)
        assert victim.status_code == 200 and VICTIM_SECRET in victim.text


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_injection_payloads_logged_as_data_come_back_byte_for_byte(settings: Settings) -> None:
    """Names, tags and log lines holding SQL travel through the log and ClickHouse unchanged."""
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        texts = [p for p in CORPUS if len(p) <= 256]
        batch = [
            event("run.created", "run-x", {"name": texts[0]}, experiment="exp"),
            event(
                "logs.appended",
                "run-x",
                {"lines": [{"stream": "stdout", "line_no": i, "text": t} for i, t in enumerate(texts)]},
                seq=1,
                experiment="exp",
            ),
            event("run.tags_set", "run-x", {"tags": {f"t{i}": t for i, t in enumerate(texts)}}, seq=2),
        ]
        answer = await http.post("/api/v1/events", json=batch, headers=server.headers)
        assert answer.status_code == 200, answer.text

        async def logged() -> list[str] | None:
            r = await http.get("/api/v1/runs/run-x/logs", headers=server.headers)
            lines = [line["text"] for line in r.json().get("lines", [])] if r.status_code == 200 else []
            return lines if len(lines) == len(texts) else None

        assert await eventually(logged, timeout=30) == texts
        run = (await http.get("/api/v1/runs/run-x", headers=server.headers)).json()
        assert run["name"] == texts[0]
        assert run["tags"] == {f"t{i}": t for i, t in enumerate(texts)}
