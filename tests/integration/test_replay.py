"""``runstream replay``: rebuild every projection from the log, switch, and answer the same."""

from __future__ import annotations

import httpx

from runstream.cli.main import _replay
from runstream.eventlog.factory import open_event_log
from runstream.projector.replay import replay
from runstream.settings import Settings
from runstream.store.clickhouse import ProjectionStore
from tests.integration.query_helpers import answers, event, post, rich_events
from tests.support import eventually, running_server


async def test_replay_rebuilds_switches_and_answers_the_same(settings: Settings) -> None:
    async with (
        running_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60) as http,
    ):
        runtime = server.app.state.runtime
        await post(http, rich_events())
        await post(http, [event("run.created", "late", seq=0, experiment="exp-2")])
        before = await answers(http)
        first = runtime.store.generation

        # The replay runs beside the live services, with its own log client and store.
        event_log = open_event_log(settings)
        store = ProjectionStore(settings.resolved_clickhouse_dsn, settings.clickhouse_database)
        await event_log.start()
        await store.start()
        try:
            result = await replay(settings, event_log, store)
        finally:
            await store.close()
            await event_log.close()
        assert result.previous == first and result.generation.number == first.number + 1
        assert result.events == sum((await runtime.log.end_offsets(settings.events_topic)).values())

        async def switched() -> bool:
            return bool(runtime.store.generation == result.generation)

        await eventually(switched)
        assert await answers(http) == before

        # The live projector follows the new generation: later events land in it.
        await post(
            http, [event("run.created", "after-switch", seq=0), event("run.started", "after-switch", seq=1)]
        )
        run = (await http.get("/api/v1/runs/after-switch")).json()
        assert run["status"] == "running"
        rows = await runtime.store.query(
            "SELECT count() FROM {front:Identifier}.analytics_runs WHERE run_id = 'after-switch'",
            {"front": settings.clickhouse_database},
        )
        assert rows == [(1,)], "the analysts' views read the generation in use"

        # `runstream replay --drop-previous`, as the command runs it.
        assert await _replay(settings, drop_previous=True) == 0
        await eventually(lambda: _generation(runtime.store, result.generation.number + 1))
        databases = await runtime.store.query(
            "SELECT name FROM system.databases WHERE name = {db:String}", {"db": result.generation.database}
        )
        assert databases == [], "the previous generation was dropped"
        assert (await http.get("/api/v1/runs/after-switch")).json()["status"] == "running"
        again = await answers(http)
        unchanged = [k for k in before if "/experiments" not in k and "/compute" not in k]
        assert [again[k] for k in unchanged] == [before[k] for k in unchanged]


async def _generation(store: ProjectionStore, number: int) -> bool:
    return store.generation is not None and store.generation.number == number
