"""The observer page lists a batch's requests and opens any of them live (headless Chromium)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from deploy.probes import wait_for
from tests.integration.stacks import ScriptedStack, hostname, scripted_stack, wait_workers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def page_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedStack]:
    """Scripted models and one local worker."""
    running = scripted_stack(tmp_path_factory.mktemp("batch-page"), SLUICE_BATCH_FEED_INTERVAL_SECONDS="0.1")
    name = hostname("batchpage")
    running.stack.start_worker(name, queues="sluice.local", concurrency=1, pool="prefork")
    wait_workers(running.api, [name])
    yield running
    running.stop()


def test_a_batch_lists_its_requests_and_opens_one(page_stack, page: Page):
    """Show a batch: one row per request with its state; Open follows that request's message."""
    requests = [
        {
            "custom_id": f"c{i}",
            "params": {"model": "quick", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        }
        for i in range(3)
    ]
    batch = httpx.post(
        f"{page_stack.api}/v1/messages/batches", json={"requests": requests}, timeout=10
    ).json()
    page.goto(page_stack.api + "/")
    page.fill("#batch-id", batch["id"])
    page.click("#batch-form button[type=submit]")
    rows = page.locator("#batch-requests li")
    expect(rows).to_have_count(3)
    expect(rows.locator("code")).to_have_text(["c0", "c1", "c2"])
    url = f"{page_stack.api}/v1/messages/batches/{batch['id']}"
    wait_for(lambda: httpx.get(url, timeout=10).json()["processing_status"] == "ended", 60, "the batch's end")
    page.click("#batch-form button[type=submit]")  # again, now that every request has run
    expect(page.locator("#batch-state")).to_have_text("ended: succeeded 3")
    expect(rows.locator(".badge")).to_have_text(["succeeded"] * 3)
    rows.nth(1).locator("button").click()
    expect(page.locator("#message-id")).to_have_text(f"{batch['id']}.c1")
    expect(page.locator("#status")).to_have_text("completed")
    expect(page.locator("#output .block.text")).to_have_text("one two three")
