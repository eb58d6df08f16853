"""The observer page in headless Chromium against the real stack."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ARTIFACTS
from tests.integration.helpers import body, observe, status, submit, text_of, wait_status
from tests.proxy import CutProxy

pytestmark = pytest.mark.integration

LONG_PROMPT = "Write a very long essay about the history of the ocean."
SOME_TEXT = re.compile(r"\w{2}")


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 240) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def submit_form(page: Page, prompt: str, max_tokens: int) -> str:
    """Fill the form, submit, and return the id the viewer follows."""
    page.fill("#prompt", prompt)
    page.fill("#max-tokens", str(max_tokens))
    page.click("#submit")
    expect(page.locator("#message-id")).not_to_be_empty()
    return page.inner_text("#message-id")


def shown_text(page: Page) -> str:
    """The text blocks of the viewer, exactly as rendered into the page."""
    return "".join(page.locator("#output .block.text").all_text_contents())


def test_submit_streams_text_and_shows_metrics(live, page: Page):
    """A submitted prompt streams into the page; the end shows completed, the metrics and the stored text."""
    page.goto(live.api + "/")
    expect(page.locator("#model option")).to_contain_text(["default"])
    message_id = submit_form(page, "Tell me a short story about a cat.", 60)
    expect(page.locator("#output .block.text")).to_have_text(SOME_TEXT)
    expect(page.locator("#status")).to_have_text("completed")
    assert page.url.endswith(f"#{message_id}")
    assert shown_text(page) == text_of(observe(live.api, message_id))
    meta = status(live.api, message_id)["metadata"]
    for locator, value in (("#m-queue", meta["queue_wait_ms"]), ("#m-ttft", meta["ttft_ms"])):
        # The page rounds half up (Math.round), Python half to even: x.5 may differ by one.
        expect(page.locator(locator)).to_have_text(re.compile(r"^\d+ ms$"))
        shown = int(page.locator(locator).inner_text().split()[0])
        assert abs(shown - value) <= 0.5, (locator, shown, value)
    expect(page.locator("#m-rate")).to_have_text(f"{meta['tokens_per_second']:.1f}")
    expect(page.locator("#m-tokens")).to_have_text(str(meta["output_tokens"]))
    expect(page.locator("#m-stop")).to_have_text(meta["stop_reason"])
    expect(page.locator("#cancel")).to_be_disabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "observer.png"))


def test_follow_a_pasted_id(live, page: Page):
    """Pasting a finished message's id replays its whole stream."""
    message_id = submit(live.api, body("Name three colours.", max_tokens=24, seed=4))
    wait_status(live.api, message_id, {"completed"}, timeout=240)
    page.goto(live.api + "/")
    page.fill("#follow-id", message_id)
    page.click("#follow-form button")
    expect(page.locator("#status")).to_have_text("completed")
    expect(page.locator("#connection")).to_have_text("ended")
    assert shown_text(page) == text_of(observe(live.api, message_id))


def test_cancel_button_stops_the_generation(live, page: Page):
    """Cancel during generation ends the stream as cancelled, on the page and on the server."""
    page.goto(live.api + "/")
    message_id = submit_form(page, LONG_PROMPT, 3000)
    expect(page.locator("#output .block.text")).to_have_text(SOME_TEXT)
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text("cancelled")
    expect(page.locator("#m-stop")).to_have_text("cancelled")
    expect(page.locator("#connection")).to_have_text("ended")
    assert status(live.api, message_id)["status"] == "cancelled"
    assert shown_text(page) == text_of(observe(live.api, message_id))


def test_reload_mid_stream_continues_without_duplicates(live, page: Page):
    """Reloading while the text streams picks the message up again and shows its text exactly once."""
    page.goto(live.api + "/")
    message_id = submit_form(page, LONG_PROMPT, 3000)
    expect(page.locator("#output .block.text")).to_have_text(SOME_TEXT)
    before = shown_text(page)
    assert status(live.api, message_id)["status"] == "processing"
    page.reload()
    expect(page.locator("#message-id")).to_have_text(message_id)
    wait_until(lambda: len(shown_text(page)) > len(before), "the text to go on after the reload")
    assert shown_text(page).startswith(before)
    httpx.post(f"{live.api}/v1/messages/async/{message_id}/cancel", timeout=10)
    expect(page.locator("#status")).to_have_text("cancelled")
    expect(page.locator("#connection")).to_have_text("ended")
    assert shown_text(page) == text_of(observe(live.api, message_id))


def test_dropped_connection_resumes_with_last_event_id(live, page: Page):
    """A stream cut mid-frame resumes with Last-Event-ID: the page ends with the exact text."""
    port = urlsplit(live.api).port
    assert port is not None
    proxy = CutProxy(port, cut_after=1500).start()
    try:
        page.goto(proxy.url + "/")
        message_id = submit_form(page, LONG_PROMPT, 60)
        expect(page.locator("#status")).to_have_text("completed")
        expect(page.locator("#connection")).to_have_text("ended")
    finally:
        proxy.stop()
    frames = observe(live.api, message_id)
    assert proxy.cut_done == 1
    assert shown_text(page) == text_of(frames)
    first, second = proxy.stream_requests()[:2]
    assert "last-event-id" not in first.lower()
    cursor = next(
        line.split(":", 1)[1].strip()
        for line in second.split("\r\n")
        if line.lower().startswith("last-event-id:")
    )
    assert cursor in {f.id for f in frames[:-1]}


def test_delete_button_removes_the_message(live, page: Page):
    """Delete removes the message on the server and the page says so."""
    message_id = submit(live.api, body(max_tokens=8, seed=2))
    wait_status(live.api, message_id, {"completed"}, timeout=240)
    page.goto(f"{live.api}/#{message_id}")
    expect(page.locator("#status")).to_have_text("completed")
    page.click("#delete")
    expect(page.locator("#status")).to_have_text("deleted")
    expect(page.locator("#delete")).to_be_disabled()
    response = httpx.get(f"{live.api}/v1/messages/async/{message_id}/status", timeout=10)
    assert response.status_code == 404


def test_api_key_is_typed_once_and_sent_with_every_call(live, page: Page):
    """The key stays for the tab's session and goes out in both headers on API calls, never in a URL."""
    sent: list[tuple[str, dict[str, str]]] = []
    page.on("request", lambda request: sent.append((request.url, request.all_headers())))
    page.goto(live.api + "/")
    page.fill("#api-key", "page-secret-1")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-state")).to_have_text("key set for this tab")
    expect(page.locator("#api-key")).to_have_value("")
    submit_form(page, "Name three colours.", 8)
    expect(page.locator("#status")).to_have_text("completed")
    page.reload()
    expect(page.locator("#key-state")).to_have_text("key set for this tab")
    expect(page.locator("#status")).to_have_text("completed")
    api_calls = [(url, headers) for url, headers in sent if "/v1/messages/async" in url]
    assert any(url.endswith("/stream") for url, _ in api_calls)
    for url, headers in api_calls:
        assert headers.get("x-api-key") == "page-secret-1", url
        assert headers.get("authorization") == "Bearer page-secret-1", url
    assert not any("page-secret-1" in url for url, _ in sent)


def test_unknown_id_says_not_found(live, page: Page):
    """Following an id the API does not know shows 'not found' and the API's message."""
    page.goto(f"{live.api}/#no-such-message")
    expect(page.locator("#status")).to_have_text("not found")
    expect(page.locator("#viewer-error")).to_have_text(
        "404 not_found_error: Stream with message_id no-such-message not found"
    )
    expect(page.locator("#cancel")).to_be_disabled()
