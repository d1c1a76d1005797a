"""The notebook widget's JavaScript in Chromium: it follows a running job over the gateway by itself.

``widget.js`` is loaded as an ES module by a plain page served from another
origin than Runstream's (as a notebook server is), and rendered with a minimal
stand-in for anywidget's model (``get``, ``set``, ``on``): the same calls
JupyterLab, Notebook and VS Code make.
"""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from runstream.widgets.widget import ESM
from tests.browser.conftest import SCREENSHOTS, TrainingJob
from tests.sdk.conftest import ThreadServer

VIEWPORT: ViewportSize = {"width": 900, "height": 600}
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>run widget</title></head>
<body style="margin: 12px; background: #fff">
<div id="cell"></div>
<script type="module">
import widget from "./widget.js";

const params = new URLSearchParams(location.search);
const values = Object.fromEntries(params);
values.max_lines = 200;
const handlers = {};
const model = {  // what anywidget hands render(): the widget's synced traitlets
  get: (name) => values[name],
  set: (name, value) => { values[name] = value; (handlers[`change:${name}`] || []).forEach((f) => f()); },
  on: (name, callback) => { (handlers[name] ??= []).push(callback); },
  off: () => {},
  save_changes: () => {},
  send: () => {},
};
window.__cleanup = widget.render({ model, el: document.getElementById("cell") });
window.__rendered = true;
</script>
</body></html>
"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def notebook_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test page and widget.js, served by a server of their own (another origin than Runstream)."""
    root = tmp_path_factory.mktemp("notebook")
    shutil.copy(ESM, root / "widget.js")
    (root / "index.html").write_text(PAGE)
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def widget_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light")
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_widget(page: Page, origin: str, api: str, token: str, run_id: str) -> None:
    query = urlencode(
        {
            "api_url": api,
            "token": token,
            "run_id": run_id,
            "workspace": "default",
            "portal_url": f"{api}/runs/{run_id}",
        }
    )
    page.goto(f"{origin}/index.html?{query}")
    page.wait_for_function("() => window.__rendered === true")


def chart_points(page: Page, metric: str) -> int:
    value = page.locator(f'.rs-chart[data-metric="{metric}"]').get_attribute("data-points")
    return int(value or 0)


def test_the_widget_chart_grows_and_its_log_follows_a_running_job(
    widget_page: Page, notebook_origin: str, studio_server: ThreadServer, training_job: TrainingJob
) -> None:
    run = training_job.start()
    page = widget_page
    open_widget(page, notebook_origin, studio_server.base_url, studio_server.token, run.run_id)
    expect(page.locator(".rs-head .rs-status")).to_have_attribute("data-status", "running")
    expect(page.locator(".rs-conn")).to_have_text("live")
    page.wait_for_function(
        "() => +document.querySelector('.rs-chart[data-metric=loss]')?.dataset.points > 10"
    )
    before = chart_points(page, "loss")

    # New points reach the chart without any reload; the polyline draws them.
    page.wait_for_function(
        "n => +document.querySelector('.rs-chart[data-metric=loss]').dataset.points >= n", arg=before + 15
    )
    assert chart_points(page, "loss") >= before + 15
    drawn = page.locator('.rs-chart[data-metric="loss"] polyline').get_attribute("data-points")
    assert int(drawn or 0) > before
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded
    # Charts by how values were logged: log_list over index, log_row/log_table as x against y.
    expect(page.locator('.rs-chart[data-metric="fibonacci"] .rs-chart-info')).to_contain_text("by index")
    expect(page.locator('.rs-chart[data-metric="cosine wave"] select')).to_have_value("angle")

    # The log pane follows lines printed after the widget was drawn.
    training_job.say("checkpoint saved: epoch-3.pt")
    expect(page.locator(".rs-line", has_text="checkpoint saved: epoch-3.pt")).to_be_visible()
    expect(page.locator(".rs-line.stderr", has_text="dataloader worker 3 is slow")).to_be_attached()
    expect(page.locator(".rs-head a")).to_have_attribute(
        "href", f"{studio_server.base_url}/runs/{run.run_id}"
    )
    SCREENSHOTS.mkdir(exist_ok=True)
    page.wait_for_timeout(150)
    page.screenshot(path=str(SCREENSHOTS / "widget.png"))

    # When the run ends, the widget says so and closes its socket.
    training_job.stop()
    expect(page.locator(".rs-head .rs-status")).to_have_attribute("data-status", "completed")
    expect(page.locator(".rs-conn")).to_have_text("run completed: live updates stopped")
    stopped_at = chart_points(page, "loss")
    page.wait_for_timeout(300)
    assert chart_points(page, "loss") == stopped_at


def test_the_widget_says_when_the_token_is_wrong_or_the_gateway_is_unreachable(
    widget_page: Page, notebook_origin: str, studio_server: ThreadServer
) -> None:
    page = widget_page
    open_widget(page, notebook_origin, studio_server.base_url, "wrong-token", "any-run")
    expect(page.locator(".rs-message")).to_contain_text("the token is probably wrong")
    open_widget(page, notebook_origin, "http://127.0.0.1:9", "t", "any-run")
    expect(page.locator(".rs-message")).to_contain_text("Cannot reach the gateway at http://127.0.0.1:9")
