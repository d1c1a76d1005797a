"""Tokens are scoped to a workspace and a role, stored hashed, expire and can be revoked."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from runstream.auth.grants import Grant, Role
from runstream.auth.registry import TokenRegistry
from runstream.eventlog.factory import open_event_log
from runstream.settings import Settings
from tests.support import RunningServer, event, eventually, points, running_server


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def issue(http: httpx.AsyncClient, server: RunningServer, **spec: Any) -> dict[str, Any]:
    response = await http.post("/api/v1/tokens", json=spec, headers=server.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_each_role_may_do_what_it_names_and_no_more(settings: Settings) -> None:
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        reader = (await issue(http, server, workspace="vision", role="read"))["token"]
        writer = (await issue(http, server, workspace="vision", role="ingest"))["token"]
        admin = (await issue(http, server, workspace="vision", role="admin"))["token"]

        batch = [event("run.created", run_id="r1", workspace="vision", payload={"name": "r1"})]
        refused = await http.post("/api/v1/events", json=batch, headers=bearer(reader))
        assert refused.status_code == 403
        assert "role is read" in refused.json()["detail"] and "ingest" in refused.json()["detail"]
        accepted = await http.post("/api/v1/events", json=batch, headers=bearer(writer))
        assert accepted.status_code == 200, accepted.text

        for token in (reader, writer, admin):
            experiments = await http.get("/api/v1/experiments?workspace=vision", headers=bearer(token))
            assert experiments.status_code == 200
        for token in (reader, writer):
            listing = await http.get("/api/v1/tokens", headers=bearer(token))
            assert listing.status_code == 403
        listing = await http.get("/api/v1/tokens", headers=bearer(admin))
        assert listing.status_code == 200
        shown = listing.json()["tokens"]
        assert {g["workspace"] for g in shown} == {"vision"}, "a workspace admin sees its own tokens only"
        assert len(shown) == 3

        cross = await http.post(
            "/api/v1/tokens", json={"workspace": "audio", "role": "read"}, headers=bearer(admin)
        )
        assert cross.status_code == 403 and "vision" in cross.json()["detail"]
        for bad, field in (
            ({"workspace": "vision", "role": "owner"}, "role"),
            ({"workspace": "no spaces", "role": "read"}, "workspace"),
            ({"workspace": "vision", "role": "read", "expires_in": -1}, "expires_in"),
            ({"workspace": "vision", "role": "read", "scope": "x"}, "scope"),
            ({"role": "read"}, "workspace"),
        ):
            answer = await http.post("/api/v1/tokens", json=bad, headers=server.headers)
            assert answer.status_code == 400 and answer.json()["parameter"] == field, (bad, answer.text)


async def test_an_ingest_token_writes_its_own_workspace_only_and_keeps_the_good_events(
    settings: Settings,
) -> None:
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        writer = (await issue(http, server, workspace="vision", role="ingest"))["token"]
        mine = event("run.created", run_id="mine", workspace="vision", payload={"name": "mine"})
        theirs = event("run.created", run_id="theirs", workspace="audio", payload={"name": "theirs"})
        also_mine = event("metrics.logged", run_id="mine", workspace="vision", payload=points("loss", [1.0]))
        answer = await http.post("/api/v1/events", json=[mine, theirs, also_mine], headers=bearer(writer))
        assert answer.status_code == 207
        [rejected] = answer.json()["rejected"]
        assert rejected["index"] == 1 and rejected["field"] == "workspace"
        assert "'vision'" in rejected["message"] and "'audio'" in rejected["message"]
        assert [a["index"] for a in answer.json()["accepted"]] == [0, 2]

        async def stored() -> bool:
            r = await http.get("/api/v1/runs/mine?workspace=vision", headers=server.headers)
            return r.status_code == 200

        await eventually(stored, timeout=30)
        missing = await http.get("/api/v1/runs/theirs?workspace=audio", headers=server.headers)
        assert missing.status_code == 404


async def test_revoked_and_expired_tokens_get_401_and_revoked_sockets_are_closed(settings: Settings) -> None:
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        grant = await issue(http, server, workspace="vision", role="read", name="dashboard")
        token = grant["token"]
        assert (
            await http.get("/api/v1/experiments?workspace=vision", headers=bearer(token))
        ).status_code == 200
        async with websockets.connect(f"{server.ws_url}/api/v1/live?token={token}") as ws:
            await ws.send('{"op": "subscribe", "sub": "a", "run_id": "r1", "workspace": "vision"}')
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
            revoked = await http.delete(f"/api/v1/tokens/{grant['token_id']}", headers=server.headers)
            assert revoked.status_code == 200 and revoked.json()["revoked_ms"] is not None
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert "revoked" in closed.value.rcvd.reason
        answer = await http.get("/api/v1/experiments?workspace=vision", headers=bearer(token))
        assert answer.status_code == 401 and "revoked" in answer.json()["detail"]
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"{server.ws_url}/api/v1/live?token={token}"):
                pass
        assert refused.value.response.status_code == 401
        unknown = await http.delete("/api/v1/tokens/0000000000000000", headers=server.headers)
        assert unknown.status_code == 404

        short = await issue(http, server, workspace="vision", role="read", expires_in=0.5)
        assert short["expires_ms"] - short["created_ms"] == 500
        await asyncio.sleep(0.6)
        answer = await http.get("/api/v1/experiments?workspace=vision", headers=bearer(short["token"]))
        assert answer.status_code == 401 and "expired" in answer.json()["detail"]

        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        answer = await http.get("/api/v1/experiments?workspace=vision", headers=bearer(forged))
        assert answer.status_code == 401 and answer.json()["detail"] == "invalid bearer token"


async def test_tokens_are_kept_as_digests_and_reach_every_process_through_the_log(
    settings: Settings,
) -> None:
    """A second registry on the same log (another process, in a cluster) learns grants and revocations."""
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        grant = await issue(http, server, workspace="vision", role="ingest")
        token = grant["token"]
        listing = (await http.get("/api/v1/tokens", headers=server.headers)).json()["tokens"]
        assert token not in orjson.dumps(listing).decode() and all("digest" not in g for g in listing)

        log = open_event_log(settings)
        await log.start()
        other = TokenRegistry("another-server-token", log, settings.tokens_topic)
        try:
            await other.start()
            assert other.authenticate(token).workspace == "vision"
            records = await read_topic(log, settings.tokens_topic)
            raw = b"".join(r.value for r in records)
            assert token.encode() not in raw and token.split("_")[-1].encode() not in raw
            [stored] = [Grant.decode(r.value) for r in records if r.key == grant["token_id"].encode()]
            assert stored.digest == hashlib.sha256(token.encode()).hexdigest()

            await http.delete(f"/api/v1/tokens/{grant['token_id']}", headers=server.headers)

            async def revoked_there() -> bool:
                return other.grant(grant["token_id"]) is not None and (
                    other.grant(grant["token_id"]).revoked_ms is not None  # type: ignore[union-attr]
                )

            await eventually(revoked_there, timeout=15)
        finally:
            await other.close()
            await log.close()


async def read_topic(log: Any, topic: str) -> list[Any]:
    ends = await log.end_offsets(topic)
    consumer = log.consumer([topic])
    await consumer.start()
    try:
        records: list[Any] = []
        deadline = time.monotonic() + 15
        while len(records) < sum(ends.values()) and time.monotonic() < deadline:
            records += await consumer.fetch(1000, timeout=1.0)
        return records
    finally:
        await consumer.close()


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_grants_survive_a_restart(settings: Settings) -> None:
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        token = (await issue(http, server, workspace="vision", role="read"))["token"]
        gone = await issue(http, server, workspace="vision", role="read")
        await http.delete(f"/api/v1/tokens/{gone['token_id']}", headers=server.headers)
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        assert (
            await http.get("/api/v1/experiments?workspace=vision", headers=bearer(token))
        ).status_code == 200
        again = await http.get("/api/v1/experiments?workspace=vision", headers=bearer(gone["token"]))
        assert again.status_code == 401


@pytest.mark.parametrize("adapter", ["local"], indirect=True)
async def test_live_connections_per_token_are_capped(settings: Settings) -> None:
    async with running_server(settings.with_changes(max_sockets_per_token=3)) as server:
        registry: TokenRegistry = server.app.state.runtime.tokens
        _, token = await registry.issue("vision", Role.READ)
        url = f"{server.ws_url}/api/v1/live?token={token}"
        held = [await websockets.connect(url) for _ in range(3)]
        try:
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(url):
                    pass
            assert refused.value.response.status_code == 429
            assert b"3 live connections" in refused.value.response.body
            async with websockets.connect(f"{server.ws_url}/api/v1/live?token={server.token}") as other:
                await other.send('{"op": "ping"}')
                assert await other.recv() == '{"type":"pong"}'
            await held.pop().close()

            async def slot_freed() -> bool:
                try:
                    async with websockets.connect(url) as ws:
                        await ws.send('{"op": "ping"}')
                        return await ws.recv() == '{"type":"pong"}'
                except InvalidStatus:
                    return False

            await eventually(slot_freed, timeout=10)
        finally:
            for ws in held:
                await ws.close()
