"""The live gateway against the real stack (embedded log and Kafka, real ClickHouse engine),
through the package's own client: a running job's events in order, snapshots, experiment and
compute subscriptions, several subscriptions on one socket, reconnects, wait_for_completion."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import orjson

from runstream.live import Event, LiveClient, LiveSubscription, RunState, Subscribed, Update
from runstream.live.state import RunsState
from runstream.live.sync import wait_for_completion
from runstream.settings import Settings
from tests.conftest import unique
from tests.support import RunningServer, event, eventually, points, running_server


async def post(http: httpx.AsyncClient, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await http.post("/api/v1/events", content=orjson.dumps(events))
    assert response.status_code == 200, response.text
    accepted: list[dict[str, Any]] = response.json()["accepted"]
    return accepted


async def take(subscription: LiveSubscription, count: int, timeout: float = 20.0) -> list[Any]:
    out: list[Any] = []

    async def collect() -> None:
        async for message in subscription:
            out.append(message)
            if len(out) == count:
                return

    await asyncio.wait_for(collect(), timeout)
    return out


async def projected(server: RunningServer, accepted: list[dict[str, Any]]) -> None:
    """Wait until the projector applied every accepted event."""
    store = server.app.state.runtime.hub.store
    wanted: dict[int, int] = {}
    for a in accepted:
        wanted[a["partition"]] = max(wanted.get(a["partition"], 0), a["offset"] + 1)

    async def done() -> bool:
        applied = await store.applied_positions()
        return all(applied.get(p, 0) >= o for p, o in wanted.items())

    await eventually(done)


def job(run_id: str, experiment: str = "mnist", compute: str = "gpu-1") -> list[list[dict[str, Any]]]:
    """A training job's events in the batches it would send them."""
    return [
        [event("run.created", run_id, {"name": "job", "compute": compute}, seq=0, experiment=experiment)],
        [event("run.queued", run_id, seq=1, experiment=experiment)],
        [
            event("run.started", run_id, seq=2, experiment=experiment),
            event("metrics.logged", run_id, points("loss", [0.9, 0.7]), seq=3, experiment=experiment),
        ],
        [
            event(
                "logs.appended",
                run_id,
                {"lines": [{"stream": "stdout", "line_no": 0, "text": "epoch 1"}]},
                seq=4,
                experiment=experiment,
            ),
            event(
                "metrics.logged", run_id, points("loss", [0.5], start_step=2), seq=5, experiment=experiment
            ),
            event(
                "logs.appended",
                run_id,
                {"lines": [{"stream": "stderr", "line_no": 0, "text": "warning: slow"}]},
                seq=6,
                experiment=experiment,
            ),
        ],
        [event("run.completed", run_id, seq=7, experiment=experiment)],
    ]


async def test_a_running_job_streams_points_logs_and_status_in_order(settings: Settings) -> None:
    run_id = unique("run")
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
        LiveClient(server.base_url, server.token) as client,
    ):
        everything = client.subscribe_run(run_id)
        lifecycle = client.subscribe_run(run_id, types=["run.*"], max_rate=20, snapshot=False)
        first = await take(everything, 1)
        assert isinstance(first[0], Subscribed) and first[0].snapshot == {"run": None, "metrics": {}}
        await take(lifecycle, 1)
        sent: list[dict[str, Any]] = []
        for batch in job(run_id):
            await post(http, batch)
            sent += batch
            await asyncio.sleep(0.02)
        got = await take(everything, len(sent))
        assert [m.event["event_id"] for m in got] == [e["event_id"] for e in sent]
        assert [m.cursor for m in got] == sorted({m.cursor for m in got})
        statuses = await take(lifecycle, 4)
        assert [m.status for m in statuses] == ["created", "queued", "running", "completed"]
        assert client.connections == 1  # both subscriptions on one socket


async def test_snapshot_then_events_after_its_cursor_give_the_current_state(settings: Settings) -> None:
    run_id = unique("run")
    batches = job(run_id)
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
        LiveClient(server.base_url, server.token) as client,
    ):
        accepted = []
        for batch in batches[:4]:
            accepted += await post(http, batch)
        await projected(server, accepted)
        subscription = client.subscribe_run(run_id)
        [subscribed] = await take(subscription, 1)
        assert isinstance(subscribed, Subscribed)
        snapshot = subscribed.snapshot
        assert snapshot is not None and snapshot["run"]["status"] == "running"
        assert snapshot["run"]["compute"] == "gpu-1"
        assert snapshot["metrics"]["loss"]["step"] == 2 and snapshot["metrics"]["loss"]["value"] == 0.5
        assert subscribed.cursor == max(a["offset"] for a in accepted)  # the projector had all of them
        state = RunState(run_id)
        state.apply_snapshot(snapshot, int(subscribed.cursor))  # type: ignore[arg-type]
        [done] = await post(http, batches[4])
        [completed] = await take(subscription, 1)
        assert isinstance(completed, Event) and completed.cursor == done["offset"]
        state.apply(completed.event, completed.cursor)
        assert state.status == "completed" and state.metrics["loss"].value == 0.5


async def test_experiment_subscription_gets_statuses_and_latest_values(settings: Settings) -> None:
    experiment, before, after = unique("exp"), unique("run"), unique("run")
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
        LiveClient(server.base_url, server.token) as client,
    ):
        accepted = []
        for batch in job(before, experiment)[:3]:
            accepted += await post(http, batch)
        await post(http, [event("run.created", unique("other"), experiment=unique("exp"))])
        await projected(server, accepted)
        subscription = client.subscribe_experiment(experiment, max_rate=50)
        [subscribed] = await take(subscription, 1)
        assert isinstance(subscribed, Subscribed) and subscribed.snapshot is not None
        state = RunsState()
        state.apply_snapshot(subscribed.snapshot, subscribed.cursor)  # type: ignore[arg-type]
        assert state.runs[before].status == "running" and state.runs[before].metrics["loss"].step == 1
        for batch in job(before, experiment)[3:] + job(after, experiment)[:3]:
            await post(http, batch)

        async def caught_up() -> bool:
            message = await asyncio.wait_for(anext(subscription), 20)
            assert isinstance(message, Update)
            state.apply(message)
            return (
                state.runs[before].status == "completed"
                and after in state.runs
                and (state.runs[after].status == "running" and "loss" in state.runs[after].metrics)
            )

        await eventually(caught_up, interval=0)
        assert (
            state.runs[before].metrics["loss"].step == 2 and state.runs[before].metrics["loss"].value == 0.5
        )
        assert state.runs[after].metrics["loss"].value == 0.7
        assert set(state.runs) == {before, after}


async def test_compute_subscription_tracks_queued_and_active_runs(settings: Settings) -> None:
    compute, old, new, elsewhere = unique("gpu"), unique("run"), unique("run"), unique("run")
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
        LiveClient(server.base_url, server.token) as client,
    ):
        accepted = []
        for batch in job(old, compute=compute)[:3]:
            accepted += await post(http, batch)
        await projected(server, accepted)
        subscription = client.subscribe_compute(compute)
        [subscribed] = await take(subscription, 1)
        assert isinstance(subscribed, Subscribed) and subscribed.snapshot is not None
        assert subscribed.snapshot["runs"] == {old: {"status": "running", "experiment": "mnist"}}
        state = RunsState()
        state.apply_snapshot(subscribed.snapshot, subscribed.cursor)  # type: ignore[arg-type]
        await post(http, job(elsewhere, compute="cpu")[0] + job(new, compute=compute)[0])
        await post(http, job(new, compute=compute)[1] + job(old, compute=compute)[4])
        changes: dict[str, list[Any]] = {}
        while set(state.runs) != {new} or state.runs[new].status != "queued":
            message = await asyncio.wait_for(anext(subscription), 20)
            assert isinstance(message, Update)
            state.apply(message)
            for run_id, change in message.runs.items():
                changes.setdefault(run_id, []).append((change["status"], change["active"]))
        assert elsewhere not in changes
        assert changes[old] == [("completed", False)]
        assert changes[new][-1] == ("queued", True)


async def test_the_client_reconnects_with_its_cursor_when_the_socket_drops(settings: Settings) -> None:
    run_id = unique("run")
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
        LiveClient(server.base_url, server.token, reconnect_delay=0.05) as client,
    ):
        subscription = client.subscribe_run(run_id, cursor=-1)
        sent = [event("metrics.logged", run_id, points("x", [i]), seq=i) for i in range(30)]
        await post(http, sent[:10])
        subscribed, *got = await take(subscription, 6)
        assert isinstance(subscribed, Subscribed) and subscribed.cursor == -1
        assert client._ws is not None
        client._ws.transport.abort()  # the network drops the connection
        await post(http, sent[10:20])
        got += await take(subscription, 10)
        await post(http, sent[20:])
        got += await take(subscription, 15)
        assert client.connections >= 2
        assert [m.event["event_id"] for m in got] == [e["event_id"] for e in sent]


async def test_wait_for_completion_prints_the_output_of_a_run_until_it_ends(settings: Settings) -> None:
    run_id = unique("run")
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as http,
    ):
        batches = job(run_id)
        for batch in batches[:3]:
            await post(http, batch)
        out, err = io.StringIO(), io.StringIO()
        waiting = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: wait_for_completion(server.base_url, server.token, run_id, out=out, err=err, timeout=30),
        )
        await asyncio.sleep(0.3)
        for batch in batches[3:]:
            await post(http, batch)
        assert await waiting == "completed"
        assert out.getvalue().splitlines() == [
            f"[runstream] {run_id}: created",
            f"[runstream] {run_id}: queued",
            f"[runstream] {run_id}: running",
            "epoch 1",
            f"[runstream] {run_id}: completed",
        ]
        assert err.getvalue() == "warning: slow\n"
