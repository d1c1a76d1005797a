"""The studio reads the workspace the address names, with a token scoped to it."""

from __future__ import annotations

import time

import httpx
from playwright.sync_api import Browser, expect

from runstream.events.validation import new_event_id
from tests.browser.conftest import VIEWPORT, screenshot
from tests.conftest import unique
from tests.sdk.conftest import ThreadServer


def test_a_scoped_token_sees_its_workspace_from_the_address(
    browser: Browser, studio_server: ThreadServer
) -> None:
    workspace, experiment = unique("vision").replace("_", "-"), unique("segmentation")
    admin = {"Authorization": f"Bearer {studio_server.token}"}
    with httpx.Client(base_url=studio_server.base_url, headers=admin, timeout=30) as http:
        scoped = http.post("/api/v1/tokens", json={"workspace": workspace, "role": "read"})
        assert scoped.status_code == 201, scoped.text
        created = {
            "event_id": new_event_id(), "type": "run.created", "schema_version": 1, "workspace": workspace,
            "experiment": experiment, "run_id": unique("run"), "ts": int(time.time() * 1000), "seq": 0,
            "payload": {"name": "r"},
        }  # fmt: skip
        assert http.post("/api/v1/events", json=[created]).status_code == 200
    context = browser.new_context(viewport=VIEWPORT, base_url=studio_server.base_url)
    try:
        page = context.new_page()
        page.goto(f"/?workspace={workspace}#token={scoped.json()['token']}")
        expect(page.locator(f'tr[data-experiment="{experiment}"]')).to_be_visible(timeout=20_000)
        screenshot(page, "workspace")
        page.goto("/")  # remembered without the parameter
        expect(page.locator(f'tr[data-experiment="{experiment}"]')).to_be_visible(timeout=20_000)
        page.goto("/?workspace=default")  # a workspace the token may not read: the page says so
        expect(page.locator("body")).to_contain_text(workspace, timeout=20_000)
        expect(page.locator(f'tr[data-experiment="{experiment}"]')).to_have_count(0)
    finally:
        context.close()
