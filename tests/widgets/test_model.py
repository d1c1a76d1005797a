"""The widget's model fed by the gateway through ``runstream.live``: state, resume after a drop, run end."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import runstream
from runstream.live.client import LiveClient
from runstream.sdk.client import Client
from runstream.widgets import RunDetailsModel, follow_details
from tests.sdk.conftest import ThreadServer


def test_the_model_shows_everything_a_run_logged_and_stops_at_its_end(
    sdk: Client, server: ThreadServer
) -> None:
    with runstream.start_run("widget", name="everything", snapshot=False) as run:
        for step in range(5):
            run.log("loss", 1.0 / (step + 1))
        run.log("loss", 0.125, step=2)  # a step logged again keeps the latest value
        run.log("nan-metric", float("nan"))
        run.log_list("fibonacci", [0, 1, 1, 2, 3])
        run.log_row("cosine", angle=0.0, cos=1.0)
        run.log_row("cosine", angle=0.5, cos=0.8776)
        run.log_table("sine", {"angle": [0.0, 1.0], "sine": [0.0, 0.8415]})
        print("hello from the job", flush=True)
        child = run.child("fold-1")
        child.complete()
        run_id = run.run_id
    run.flush(timeout=10)

    async def follow() -> tuple[RunDetailsModel, int]:
        async with LiveClient(server.base_url, server.token) as client:
            model = await follow_details(RunDetailsModel(run_id), client, timeout=20)
            return model, len(client._subs)

    model, left = asyncio.run(follow())
    assert model.finished and model.status == "completed"
    assert left == 0, "every subscription ended with the run"
    assert set(model.timestamps) == {"created_at", "started_at", "ended_at"}
    assert model.experiment == "widget"
    loss = model.series["loss"]
    assert loss.kind == "step" and loss.x == [0, 1, 2, 3, 4]
    assert loss.y == [1.0, 0.5, 0.125, 0.25, 0.2]
    assert math.isnan(model.series["nan-metric"].y[0])
    assert model.series["fibonacci"].kind == "index"
    assert model.series["fibonacci"].x == [0, 1, 2, 3, 4] and model.series["fibonacci"].y == [0, 1, 1, 2, 3]
    assert model.series["cosine"].columns == {"angle": [0.0, 0.5], "cos": [1.0, 0.8776]}
    assert model.series["sine"].columns == {"angle": [0.0, 1.0], "sine": [0.0, 0.8415]}
    assert ("stdout", "hello from the job") in model.lines
    assert {c.run_id: (c.name, c.status) for c in model.children.values()} == {
        child.run_id: ("fold-1", "completed")
    }


def points(model: RunDetailsModel) -> int:
    series = model.series.get("loss")
    return 0 if series is None else series.points


def test_the_model_resumes_from_its_cursor_after_a_drop_without_gap_or_duplicate(
    sdk: Client, server: ThreadServer
) -> None:
    run = runstream.start_run("widget", name="live", snapshot=False, capture_output=False)
    steps = 80
    go = threading.Event()

    def job() -> None:
        go.wait(10)
        for step in range(steps):
            run.log("loss", 1.0 / (step + 1))
            run.flush(timeout=10)
            time.sleep(0.01)
        run.complete()
        run.flush(timeout=10)

    worker = threading.Thread(target=job, daemon=True)
    worker.start()

    async def follow() -> tuple[RunDetailsModel, int | None, int]:
        model = RunDetailsModel(run.run_id)
        go.set()
        # A first watcher leaves after some points (a closed notebook tab, a kernel restart) ...
        async with LiveClient(server.base_url, server.token) as first:
            await follow_details(model, first, until=lambda m: points(m) >= 10)
        left_at = model.cursor
        # ... and comes back with its cursor; its socket then drops mid-stream and reconnects.
        async with LiveClient(server.base_url, server.token, reconnect_delay=0.05) as second:
            task = asyncio.create_task(follow_details(model, second, timeout=30))
            while points(model) < 40 and not task.done():  # noqa: ASYNC110 - the model has no event to wait on
                await asyncio.sleep(0.01)
            ws = second._ws
            assert ws is not None
            await ws.close()  # the network drop
            await task
            return model, left_at, second.connections

    model, left_at, connections = asyncio.run(follow())
    worker.join(10)
    assert left_at is not None
    assert connections >= 2, "the second client reconnected after the drop"
    assert model.finished and model.status == "completed"
    assert model.series["loss"].x == list(range(steps)), "every point exactly once, in order"
    assert model.series["loss"].y == [1.0 / (s + 1) for s in range(steps)]


def test_the_notebook_widget_hands_the_browser_what_it_needs(sdk: Client, server: ThreadServer) -> None:
    from runstream.widgets import RunDetails
    from runstream.widgets.widget import ESM

    run = runstream.start_run("widget", snapshot=False, capture_output=False)
    run.get_details()
    widget = RunDetails(runstream.get_run(run.run_id))
    run.complete()
    assert (widget.run_id, widget.workspace) == (run.run_id, "default")
    assert (widget.api_url, widget.token) == (server.base_url, server.token)
    assert widget.portal_url == run.get_portal_url()
    assert ESM.read_text().count("export default { render }") == 1
    bundle = widget._repr_mimebundle_()
    assert bundle is not None and "application/vnd.jupyter.widget-view+json" in bundle[0]
    widget.close()
