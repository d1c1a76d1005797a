"""The experiments list, an experiment's runs table (server-side sort), and comparing runs."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

import runstream
from runstream.sdk.client import Client
from tests.browser import seed
from tests.browser.conftest import Seeded, screenshot, wait_projected

ROWS = ".vwindow .vrow"


def displayed(page: Page, column: str) -> list[tuple[str, str]]:
    """(run id, text of ``column``) of every row drawn, top to bottom."""
    rows: list[tuple[str, str]] = page.locator(ROWS).evaluate_all(
        "(rows, column) => rows.map(r =>"
        " [r.dataset.runId, r.querySelector(`[data-column='${column}']`).textContent])",
        column,
    )
    return rows


def test_runs_table_sorts_by_min_loss(page: Page, seeded: Seeded) -> None:
    page.goto("/")
    experiments = page.locator(f'tr[data-experiment="{seed.EXPERIMENT}"]')
    expect(experiments).to_contain_text(seed.EXPERIMENT)
    screenshot(page, "experiments")

    experiments.get_by_role("link").click()
    expect(page).to_have_url(re.compile(f"/experiments/{seed.EXPERIMENT}"))
    loss = page.locator('.vhead [data-sort="last(loss)"]')
    expect(loss).to_be_visible()
    loss.locator("select").select_option("min")
    header = page.locator('.vhead [data-sort="min(loss)"]')
    header.locator(".th-label").click()
    expect(header).to_have_class(re.compile("sorted"))
    expect(page).to_have_url(re.compile(r"sort=min\(loss\)"))

    mine = seeded.experiment.runs
    ascending = sorted(mine, key=lambda name: seeded.experiment.min_loss[name])
    by_id = {run_id: name for name, run_id in mine.items()}

    def check(order: list[str]) -> None:
        ids = [mine[name] for name in order]
        page.wait_for_function(
            "ids => { const seen = [...document.querySelectorAll('.vwindow .vrow')]"
            ".map(r => r.dataset.runId).filter(id => ids.includes(id));"
            " return seen.length === ids.length && seen.every((id, i) => id === ids[i]); }",
            arg=ids,
        )
        rows = displayed(page, "min(loss)")
        assert [by_id[r] for r, _ in rows if r in by_id] == order
        values = [text for _, text in rows]
        with_value = [v for v in values if v != "—"]
        assert values[: len(with_value)] == with_value, "runs without a loss come last"
        for run_id, text in rows:
            if run_id in by_id:
                assert float(text) == pytest.approx(seeded.experiment.min_loss[by_id[run_id]], rel=1e-4)

    page.wait_for_function("() => document.querySelector('.vwindow .vrow [data-column=\"min(loss)\"]')")
    check(ascending)
    screenshot(page, "runs-table")

    header.locator(".th-label").click()
    expect(page).to_have_url(re.compile(r"sort=-min\(loss\)"))
    expect(header.locator(".arrow")).to_have_text(" ↓")
    check(list(reversed(ascending)))

    # Filtering happens on the server too.
    threshold = sorted(seeded.experiment.min_loss.values())[2]
    page.get_by_label("where").fill(f"min(loss)<{threshold}")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"where=min"))
    expect(page.locator(ROWS)).to_have_count(2)
    assert {by_id[r] for r, _ in displayed(page, "min(loss)")} == set(ascending[:2])


def test_the_runs_table_follows_status_and_values_live(page: Page, seeded: Seeded, sdk: Client) -> None:
    page.goto(f"/experiments/{seed.EXPERIMENT}?columns=min(loss),last(loss)&sort=-created_at")
    expect(page.locator(ROWS).first).to_be_visible()
    run = runstream.start_run(seed.EXPERIMENT, name="resnet18 lr=0.05", capture_output=False, snapshot=False)
    run.log("loss", 0.9)
    wait_projected(run)

    banner = page.locator(".banner")
    expect(banner).to_contain_text("1 new run")
    banner.click()
    row = page.locator(f'{ROWS}[data-run-id="{run.run_id}"]')
    expect(row.locator(".status")).to_have_attribute("data-status", "running")
    expect(row.locator('[data-column="min(loss)"]')).to_have_text("0.9")

    for loss in (0.4, 0.02, 0.3):
        run.log("loss", loss)
    run.complete()
    runstream.flush()
    expect(row.locator(".status")).to_have_attribute("data-status", "completed")
    expect(row.locator('[data-column="min(loss)"]')).to_have_text("0.02")
    expect(row.locator('[data-column="last(loss)"]')).to_have_text("0.3")


def test_selecting_two_runs_draws_a_compare_chart_with_two_series(page: Page, seeded: Seeded) -> None:
    page.goto(f"/experiments/{seed.EXPERIMENT}?columns=min(loss),last(accuracy)&sort=min(loss)")
    runs = seeded.experiment.runs
    chosen = ["resnet34 lr=0.03", "resnet18 lr=0.1", "resnet50 lr=0.3"]
    for name in chosen:
        page.locator(f'{ROWS}[data-run-id="{runs[name]}"] input[type="checkbox"]').check()
    compare = page.get_by_role("button", name="Compare 3 runs")
    compare.click()
    expect(page).to_have_url(re.compile(r"/compare\?runs="))
    for metric in ("loss", "accuracy"):
        page.wait_for_function(
            "key => { const d = window.__studio.chartData(key);"
            " return d && d.series.length === 3 && d.series.every(s => s.some(v => v !== null)); }",
            arg=f"compare:{metric}",
        )
    table = page.locator(".compare-table tbody tr")
    expect(table).to_have_count(3)
    for name in chosen:
        expect(page.locator(f'.compare-table tr[data-run-id="{runs[name]}"]')).to_contain_text(name)
    screenshot(page, "compare")

    # Down to two runs: one line each.
    page.locator(".chip", has_text="resnet50 lr=0.3").locator("button.remove").click()
    page.wait_for_function(
        "() => { const d = window.__studio.chartData('compare:loss');"
        " return d && d.series.length === 2 && d.series.every(s => s.some(v => v !== null)); }"
    )
    expect(table).to_have_count(2)
    data = page.evaluate("window.__studio.chartData('compare:loss')")
    assert data["labels"] == ["resnet34 lr=0.03", "resnet18 lr=0.1"]
    assert all(len([v for v in s if v is not None]) > 100 for s in data["series"])
