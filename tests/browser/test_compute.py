"""The compute page follows the runs queued and active on each compute target, live."""

from __future__ import annotations

from playwright.sync_api import Page, expect

import runstream
from runstream.sdk.client import Client
from tests.browser import seed
from tests.browser.conftest import Seeded, screenshot


def test_compute_page_shows_queued_and_active_runs_and_drops_a_run_when_it_completes(
    page: Page, seeded: Seeded, sdk: Client
) -> None:
    page.goto("/compute")
    cluster = page.locator(f'[data-target="{seed.CLUSTER}"]')
    expect(cluster.locator('tr[data-status="running"]').first).to_be_visible()

    # Runs submitted while the page is open appear on it without a reload.
    queued = runstream.start_run(
        seed.EXPERIMENT,
        name="efficientnet-b0",
        compute=seed.CLUSTER,
        queued=True,
        capture_output=False,
        snapshot=False,
    )
    active = runstream.start_run(
        seed.EXPERIMENT,
        name="mobilenet-v3 baseline",
        compute=seed.CLUSTER,
        capture_output=False,
        snapshot=False,
    )
    runstream.flush()
    queued_row = cluster.locator(f'tr[data-run-id="{queued.run_id}"]')
    active_row = cluster.locator(f'tr[data-run-id="{active.run_id}"]')
    expect(queued_row).to_have_attribute("data-status", "queued")
    expect(active_row).to_have_attribute("data-status", "running")
    expect(active_row).to_contain_text("mobilenet-v3 baseline")
    expect(active_row.locator(f'a[href="/runs/{active.run_id}"]')).to_be_visible()
    expect(active_row.locator(f'a[href="/experiments/{seed.EXPERIMENT}"]')).to_be_visible()

    # The sweep's trials (child runs on their parent's target) are nested under it, collapsibly.
    sweep = cluster.locator('tr[data-depth="0"]', has_text="lr sweep")
    expect(cluster.locator('tr[data-depth="1"]')).to_have_count(3)
    screenshot(page, "compute")
    sweep.locator("button.tree-toggle").click()
    expect(cluster.locator('tr[data-depth="1"]')).to_have_count(0)
    cluster.locator('tr[data-depth="0"]', has_text="lr sweep").locator("button.tree-toggle").click()
    expect(cluster.locator('tr[data-depth="1"]')).to_have_count(3)

    active.log("loss", 0.5)
    active.complete()
    runstream.flush()
    expect(active_row).to_have_count(0)

    queued.start()
    runstream.flush()
    expect(queued_row).to_have_attribute("data-status", "running")
    queued.cancel()
    runstream.flush()
    expect(queued_row).to_have_count(0)
