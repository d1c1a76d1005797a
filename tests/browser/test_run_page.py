"""The run page: charts and the log follow a running job; values drawn by how they were logged."""

from __future__ import annotations

import math
import time
from urllib.parse import urlsplit

from playwright.sync_api import Page, expect

import runstream
from runstream.sdk.client import Client
from tests.browser import seed
from tests.browser.conftest import TrainingJob, screenshot, wait_projected

HAS_STEP = "([key, step]) => { const d = window.__studio.chartData(key); return !!d && d.x.includes(step); }"


def test_new_points_appear_within_one_second_and_the_log_follows(
    page: Page, training_job: TrainingJob
) -> None:
    run = training_job.start()
    url = run.get_portal_url()
    assert urlsplit(url).path == f"/runs/{run.run_id}"
    page.goto(url)
    expect(page.locator(".run-title h1")).to_have_text("resnet18 live")
    expect(page.locator(".run-title .status")).to_have_attribute("data-status", "running")
    page.wait_for_function("() => (window.__studio.chartData('metric:loss')?.x.length ?? 0) > 10")
    loaded = page.evaluate("window.__studio.chartData('metric:loss').x.length")

    # A point logged after the page loaded is in the chart within 1 s of its flush, without a reload.
    step, flushed_at = training_job.flushed_after(time.monotonic())
    remaining_ms = 1000 - (time.monotonic() - flushed_at) * 1000
    page.wait_for_function(HAS_STEP, arg=["metric:loss", step], timeout=max(remaining_ms, 1))
    assert page.evaluate("window.__studio.chartData('metric:loss').x.length") > loaded

    # The log viewer shows lines printed after the page loaded.
    training_job.say("checkpoint saved: epoch-3.pt")
    expect(page.locator(".log-line", has_text="checkpoint saved: epoch-3.pt")).to_be_visible()
    expect(page.locator(".log-line", has_text="epoch 0: loss=").first).to_be_attached()
    expect(page.locator(".log-line.stderr", has_text="dataloader worker 3 is slow")).to_be_attached()

    # Every metric has its chart; tags, properties and the snapshot are there.
    expect(page.locator('.chart-card[data-metric="accuracy"] .chart')).to_be_visible()
    expect(page.locator(".kv-row", has_text="batch_size")).to_contain_text("128")
    expect(page.locator(".kv-row", has_text="arch")).to_contain_text("resnet18")
    expect(page.get_by_role("button", name="⤓ Snapshot")).to_be_enabled()
    page.wait_for_function("() => window.__studio.chartData('metric:loss').x.length > 60")  # more curve
    screenshot(page, "run")
    page.locator(".log-card").scroll_into_view_if_needed()
    screenshot(page, "run-values-and-log")

    with page.expect_download() as download:
        page.get_by_role("button", name="⤓ Snapshot").click()
    assert download.value.suggested_filename == "snapshot.zip"

    training_job.stop()
    expect(page.locator(".run-title .status")).to_have_attribute("data-status", "completed")


def test_after_a_network_drop_the_page_resumes_from_its_cursor(page: Page, training_job: TrainingJob) -> None:
    run = training_job.start()
    page.goto(f"/runs/{run.run_id}")
    page.wait_for_function("() => (window.__studio.chartData('metric:loss')?.x.length ?? 0) > 10")
    page.evaluate("window.__studio.live()[0].drop()")
    dropped_at = time.monotonic()
    step, _ = training_job.flushed_after(dropped_at + 0.3)  # logged while the page was reconnecting
    page.wait_for_function(
        "() => window.__studio.live()[0].reconnects >= 1 && window.__studio.live()[0].state === 'live'"
    )
    page.wait_for_function(HAS_STEP, arg=["metric:loss", step])
    later, _ = training_job.flushed_after(time.monotonic())
    page.wait_for_function(HAS_STEP, arg=["metric:loss", later])
    training_job.stop()
    logged = [s for s, _ in training_job.logged]
    page.wait_for_function(HAS_STEP, arg=["metric:loss", logged[-1]])
    data = page.evaluate("window.__studio.chartData('metric:loss')")
    # no gap and no duplicate: every step once, in order (the series is short enough not to be downsampled)
    assert data["x"] == logged
    assert page.locator(".run-title .status").get_attribute("data-status") == "completed"


def test_lists_rows_and_tables_are_drawn_by_how_they_were_logged(page: Page, sdk: Client) -> None:
    run = runstream.start_run(seed.EXPERIMENT, name="values", capture_output=False, snapshot=False)
    seed.log_values(run)
    run.complete()
    wait_projected(run)
    page.goto(f"/runs/{run.run_id}")

    table = page.locator('.chart-card[data-kind="table"][data-metric="sine wave"]')
    expect(table.locator(".chart")).to_have_attribute("data-x", "angle")
    expect(table.locator(".chart")).to_have_attribute("data-y", "sine")
    angles = [i * 2 * math.pi / 100 for i in range(101)]
    page.wait_for_function("() => window.__studio.chartData('table:sine wave')?.x.length === 101")
    data = page.evaluate("window.__studio.chartData('table:sine wave')")
    assert data["x"] == angles
    assert data["series"][0] == [math.sin(a) for a in angles]

    table.get_by_label("y of sine wave").select_option("cosine")
    page.wait_for_function("() => window.__studio.chartData('table:sine wave')?.labels[0] === 'cosine'")
    assert page.evaluate("window.__studio.chartData('table:sine wave').series[0]") == [
        math.cos(a) for a in angles
    ]
    table.get_by_label("x of sine wave").select_option("")  # by row index
    page.wait_for_function("() => window.__studio.chartData('table:sine wave')?.x[100] === 100")

    rows = page.locator('.chart-card[data-kind="row"][data-metric="cosine wave"]')
    expect(rows.locator(".chart")).to_have_attribute("data-x", "angle")
    expect(rows.locator(".chart")).to_have_attribute("data-y", "cos")
    data = page.evaluate("window.__studio.chartData('row:cosine wave')")
    assert data["x"] == [i * math.pi / 20 for i in range(40)]
    assert data["series"][0] == [math.cos(i * math.pi / 20) for i in range(40)]

    page.wait_for_function("() => window.__studio.chartData('list:fibonacci')?.x.length === 12")
    data = page.evaluate("window.__studio.chartData('list:fibonacci')")
    assert data["x"] == list(range(12))
    assert data["series"][0] == [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
