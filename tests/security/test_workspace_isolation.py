"""A token of workspace A can neither write to, read nor subscribe to any other name (1,000 fuzzed)."""

from __future__ import annotations

import asyncio
import random
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import websockets

from runstream.auth.grants import Role
from runstream.auth.registry import TokenRegistry
from runstream.settings import Settings
from tests.support import event, eventually, points, running_server

HOME = "team-a"
CANARIES = ("team-b", "Team-a", "team-aa", "default")
"""Workspaces that hold data the team-a token must never see."""
SECRET = "canary-0d5e1f"


def fuzzed_names(count: int = 1000, seed: int = 7) -> list[str]:
    """Names near ``team-a`` (case, affixes, separators, look-alikes, encodings) and random ones."""
    near = [
        *CANARIES, "TEAM-A", "team-A", "team-a ", " team-a", "team-a\n", "team-a\t", "team-a\x00",
        "team-a/", "/team-a", "team-a/../team-b", "team-a%00", "team-a*", "*", "", ".", "..", "team_a",
        "team-a.", "team-", "team", "t", "t\u0435am-a", "team-a\u200b", "\u200bteam-a", "%2A",
        "team-a,team-b", "team-a;team-b", "team-a' OR '1'='1", "team-a\\", "team-a\r\n",
        "team-a" * 11, "a" * 64, "a" * 65,
        "team-a\u0301", "\uff54\uff45\uff41\uff4d-\uff41", "team-a#",
        "team-a?workspace=team-a", "team-a&workspace=team-a",
        "TeAm-A", "team-b ", "team-b\x00", "team-a.team-b", "-team-a", "_team-a", "team--a",
    ]  # fmt: skip
    rng = random.Random(seed)
    valid = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
    names = list(dict.fromkeys(near))
    while len(names) < count:
        kind = rng.random()
        if kind < 0.5:
            name = rng.choice(valid[:62]) + "".join(rng.choice(valid) for _ in range(rng.randint(0, 63)))
        elif kind < 0.75:
            cut = rng.randint(0, len(HOME))
            name = HOME[:cut] + rng.choice(valid + " /%*\\'\"\x7f") + HOME[cut:]
        else:
            name = "".join(
                chr(rng.choice([rng.randint(32, 126), rng.randint(0xA0, 0x2FFF)])) for _ in range(8)
            )
        if name != HOME and name not in names:
            names.append(name)
    return names[:count]


async def seed(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    batch: list[dict[str, Any]] = []
    for workspace in (HOME, *CANARIES):
        run_id = run_of(workspace)
        batch += [
            event(
                "run.created",
                run_id,
                {"name": f"{SECRET}-{workspace}"},
                workspace=workspace,
                experiment="exp",
            ),
            event(
                "metrics.logged", run_id, points("loss", [0.5]), seq=1, workspace=workspace, experiment="exp"
            ),
        ]
    answer = await http.post("/api/v1/events", json=batch, headers=admin)
    assert answer.status_code == 200, answer.text

    async def projected() -> bool:
        r = await http.get("/api/v1/experiments/exp/runs?workspace=team-b", headers=admin)
        return r.status_code == 200 and len(r.json()["runs"]) == 1

    await eventually(projected, timeout=30)


def run_of(workspace: str) -> str:
    return f"run-{[HOME, *CANARIES].index(workspace)}"


def home_run() -> str:
    return run_of(HOME)


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_a_workspace_token_reaches_nothing_outside_its_workspace(settings: Settings) -> None:
    names = fuzzed_names()
    assert len(names) == 1000 and HOME not in names
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        await seed(http, server.headers)
        registry: TokenRegistry = server.app.state.runtime.tokens
        _, token = await registry.issue(HOME, Role.INGEST)
        mine = {"Authorization": f"Bearer {token}"}
        canary_runs = [run_of(w) for w in CANARIES]

        # Writes: one batch with an event for every name; only the event of team-a is taken.
        batch = [event("run.tags_set", "r1", {"tags": {"k": "v"}}, workspace=n) for n in names]
        batch.append(event("run.tags_set", home_run(), {"tags": {"fuzz": "done"}}, workspace=HOME))
        answer = await http.post("/api/v1/events", content=orjson.dumps(batch), headers=mine)
        assert answer.status_code == 207, answer.text
        assert [a["index"] for a in answer.json()["accepted"]] == [len(names)]
        rejected = answer.json()["rejected"]
        assert len(rejected) == len(names)
        assert all(r["field"] == "workspace" for r in rejected), [
            r for r in rejected if r["field"] != "workspace"
        ]

        # Reads: every query route with every name is refused (403, or 400 for a malformed name).
        requests: list[tuple[str, str, dict[str, Any] | None]] = []
        for name in names:
            ws = quote(name, safe="")
            requests += [
                ("GET", f"/api/v1/experiments?workspace={ws}", None),
                ("GET", f"/api/v1/experiments/exp/runs?workspace={ws}", None),
                ("GET", f"/api/v1/runs/{canary_runs[0]}?workspace={ws}", None),
                ("GET", f"/api/v1/runs/{canary_runs[0]}/metrics?workspace={ws}", None),
                ("GET", f"/api/v1/compute?workspace={ws}", None),
                ("POST", "/api/v1/compare", {"workspace": name, "runs": canary_runs[:1]}),
            ]
        gate = asyncio.Semaphore(16)

        async def ask(method: str, path: str, body: dict[str, Any] | None) -> tuple[str, httpx.Response]:
            async with gate:
                return f"{method} {path} {body}", await http.request(method, path, json=body, headers=mine)

        answers = await asyncio.gather(*(ask(*r) for r in requests))
        leaks = [
            f"{what} -> {r.status_code} {r.text[:120]}"
            for what, r in answers
            if r.status_code not in (400, 403) or SECRET in r.text
        ]
        assert not leaks, leaks[:10]
        refused_for_scope = sum(1 for _, r in answers if r.status_code == 403)
        assert refused_for_scope > 2000, refused_for_scope  # most names are well-formed: refused for scope

        # Subscriptions: every name is refused on one socket, which stays usable.
        async with websockets.connect(f"{server.ws_url}/api/v1/live", additional_headers=mine) as live:
            sent = 0
            for i, name in enumerate(names):
                for target in ({"run_id": canary_runs[i % len(canary_runs)]}, {"experiment": "exp"}):
                    request = {"op": "subscribe", "sub": f"s{i}", "workspace": name, **target}
                    await live.send(orjson.dumps(request).decode())
                    sent += 1
            for _ in range(sent):
                frame = orjson.loads(await asyncio.wait_for(live.recv(), 10))
                assert frame["type"] == "error" and frame["code"] in ("forbidden", "bad_request"), frame
                assert SECRET not in orjson.dumps(frame).decode()
            # The same socket and token do reach their own workspace (so the refusals above mean something).
            request = {"op": "subscribe", "sub": "own", "workspace": HOME, "run_id": home_run()}
            await live.send(orjson.dumps(request).decode())
            frame = orjson.loads(await asyncio.wait_for(live.recv(), 10))
            assert frame["type"] == "subscribed", frame

        own = await http.get(f"/api/v1/runs/{home_run()}?workspace={HOME}", headers=mine)
        assert own.status_code == 200 and f"{SECRET}-{HOME}" in own.text
