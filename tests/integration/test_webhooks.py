"""Webhooks against a real stack: signed per Standard Webhooks, retried with the same id, state visible."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
import standardwebhooks

from deploy.probes import wait_for
from tests.integration.helpers import body, submit
from tests.integration.stacks import ScriptedStack, hostname, scripted_stack, wait_workers

pytestmark = pytest.mark.integration


@dataclass
class Receiver:
    """An HTTP endpoint on loopback that records every POST and fails the first ``fail`` of them."""

    fail: int = 0
    #: When set, the first POST is held (not answered) until the event is set.
    hold_first: threading.Event | None = None
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, data))
                    failing = len(receiver.received) <= receiver.fail
                    first = len(receiver.received) == 1
                if first and receiver.hold_first is not None:
                    receiver.hold_first.wait(60)
                self.send_response(500 if failing else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


@pytest.fixture(scope="module")
def hook_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedStack]:
    """Scripted models, a local and a webhook worker; private targets allowed (the receiver is local)."""
    running = scripted_stack(
        tmp_path_factory.mktemp("webhooks"),
        SLUICE_WEBHOOK_ALLOW_PRIVATE="true",
        SLUICE_WEBHOOK_RETRY_SCHEDULE="1,1",
        # A lost delivery is sent again after 3 x timeout + 5 s (workers/webhooks.claim_lease).
        SLUICE_WEBHOOK_TIMEOUT_SECONDS="3",
        SLUICE_BATCH_FEED_INTERVAL_SECONDS="0.1",
    )
    local, hooks = hostname("hooklocal"), hostname("hooks")
    running.stack.start_worker(local, queues="sluice.local", concurrency=1, pool="prefork")
    running.stack.start_worker(hooks, queues="sluice.webhooks", concurrency=4, pool="threads")
    wait_workers(running.api, [local, hooks])
    yield running
    running.stop()


@pytest.fixture
def receiver(hook_stack: ScriptedStack) -> Iterator[tuple[Receiver, str, dict[str, object]]]:
    """A receiver registered as an endpoint of the stack; removed afterwards."""
    found = Receiver()
    server, url = found.serve()
    response = httpx.post(f"{hook_stack.api}/v1/webhook_endpoints", json={"url": url}, timeout=10)
    assert response.status_code == 200, response.text
    endpoint = response.json()
    yield found, url, endpoint
    httpx.delete(f"{hook_stack.api}/v1/webhook_endpoints/{endpoint['id']}", timeout=10)
    server.shutdown()


def test_completed_message_is_delivered_and_verifies_with_both_libraries(hook_stack, receiver):
    """message.completed arrives signed; standardwebhooks and the OpenAI SDK's unwrap both accept it."""
    got, _, endpoint = receiver
    message_id = submit(hook_stack.api, body(model="quick", max_tokens=3))
    wait_for(lambda: got.received, 60, "a webhook delivery")
    headers, data = got.received[0]
    secret = str(endpoint["secret"])
    payload = standardwebhooks.Webhook(secret).verify(data, headers)
    assert payload["type"] == "message.completed" and payload["data"] == {"id": message_id}
    assert payload["id"] == headers["webhook-id"]
    event = openai.OpenAI(api_key="unused").webhooks.unwrap(data.decode(), headers, secret=secret)
    assert event.id == headers["webhook-id"]
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(data + b" ", headers)


def test_a_failing_endpoint_is_retried_with_the_same_id_and_its_state_is_shown(hook_stack, receiver):
    """A 500 is retried after the schedule's delay with the same webhook-id; GET shows both attempts."""
    got, _, endpoint = receiver
    got.fail = 1
    submit(hook_stack.api, body(model="quick", max_tokens=3))
    wait_for(lambda: len(got.received) >= 2, 60, "a retried delivery")
    first, second = got.received[0][0], got.received[1][0]
    assert first["webhook-id"] == second["webhook-id"]
    listed = httpx.get(f"{hook_stack.api}/v1/webhook_endpoints", timeout=10).json()["data"]
    mine = next(e for e in listed if e["id"] == endpoint["id"])
    assert "secret" not in mine

    def settled() -> bool:
        state = next(
            e
            for e in httpx.get(f"{hook_stack.api}/v1/webhook_endpoints", timeout=10).json()["data"]
            if e["id"] == endpoint["id"]
        )["delivery"]
        return state["attempts"] == 2 and state["failed"] == 1 and state["last_status"] == "204"

    wait_for(settled, 30, "the endpoint's delivery state")


def test_batch_ended_is_delivered(hook_stack, receiver):
    """A batch's end sends batch.ended besides its messages' own events.

    Both are queued in that order but delivered by independent tasks, so they may arrive in either
    order (docs/BATCHES.md); the test waits for both."""
    got, _, _ = receiver
    request = {
        "custom_id": "one",
        "params": {"model": "quick", "max_tokens": 3, "messages": [{"role": "user", "content": "x"}]},
    }
    created = httpx.post(
        f"{hook_stack.api}/v1/messages/batches", json={"requests": [request]}, timeout=10
    ).json()

    def types() -> list[str]:
        return [json.loads(data)["type"] for _, data in list(got.received)]

    wait_for(lambda: {"batch.ended", "message.completed"} <= set(types()), 60, "both events")
    ended = [json.loads(d) for _, d in list(got.received) if json.loads(d)["type"] == "batch.ended"]
    assert [e["data"] for e in ended] == [{"id": created["id"]}]


def test_a_cancelled_pending_message_sends_message_cancelled(hook_stack, receiver):
    """A message cancelled before any worker started it still sends its event."""
    got, _, _ = receiver
    blocker = submit(hook_stack.api, body(model="blocker", max_tokens=100000))
    waiting = submit(hook_stack.api, body(model="quick", max_tokens=3))
    httpx.post(f"{hook_stack.api}/v1/messages/async/{waiting}/cancel", timeout=10)
    httpx.post(f"{hook_stack.api}/v1/messages/async/{blocker}/cancel", timeout=10)

    def events() -> dict[str, str]:
        return {json.loads(d)["data"]["id"]: json.loads(d)["type"] for _, d in list(got.received)}

    wait_for(lambda: events().get(waiting) == "message.cancelled", 60, "message.cancelled")


def test_private_targets_are_refused_at_registration_unless_allowed(tmp_path):
    """Without SLUICE_WEBHOOK_ALLOW_PRIVATE, a loopback or link-local URL is a 400 on ``url``."""
    from api.app import create_app
    from shared.settings import Settings

    app = create_app(Settings(redis_url="redis://127.0.0.1:9/0"))
    test_client = app.test_client()
    for url in ("http://127.0.0.1:8080/hook", "http://169.254.169.254/", "ftp://example.com/"):
        response = test_client.post("/v1/webhook_endpoints", json={"url": url})
        assert response.status_code == 400, response.text
        assert response.get_json()["detail"][0]["loc"] == ["url"]


def test_a_key_may_register_at_most_twenty_endpoints(hook_stack):
    """The 21st endpoint of a key is a 400; deleting one makes room again."""
    hooks = f"{hook_stack.api}/v1/webhook_endpoints"
    made = [httpx.post(hooks, json={"url": f"https://93.184.215.14/{i}"}, timeout=10) for i in range(20)]
    try:
        assert [r.status_code for r in made] == [200] * 20
        assert httpx.post(hooks, json={"url": "https://93.184.215.14/x"}, timeout=10).status_code == 400
        httpx.delete(f"{hooks}/{made[0].json()['id']}", timeout=10)
        again = httpx.post(hooks, json={"url": "https://93.184.215.14/y"}, timeout=10)
        assert again.status_code == 200
        made.append(again)
    finally:
        for response in made[1:]:
            httpx.delete(f"{hooks}/{response.json()['id']}", timeout=10)


def test_a_delivery_whose_worker_is_killed_mid_request_is_sent_again(hook_stack, receiver):
    """SIGKILL of the webhook worker during a POST loses nothing: another worker sends the same webhook-id."""
    got, _, endpoint = receiver
    got.hold_first = threading.Event()
    submit(hook_stack.api, body(model="quick", max_tokens=3))
    wait_for(lambda: got.received, 60, "the first (held) delivery")
    doomed = next(p for p in hook_stack.stack.processes if p.name == f"worker-{hostname('hooks')}")
    doomed.signal(signal.SIGKILL)
    doomed.popen.wait(10)
    replacement = hostname("hooks2")
    hook_stack.stack.start_worker(replacement, queues="sluice.webhooks", concurrency=4, pool="threads")
    got.hold_first.set()
    wait_for(lambda: len(got.received) >= 2, 60, "the delivery sent again")
    assert got.received[0][0]["webhook-id"] == got.received[1][0]["webhook-id"]
    listed = httpx.get(f"{hook_stack.api}/v1/webhook_endpoints", timeout=10).json()["data"]
    state = next(e for e in listed if e["id"] == endpoint["id"])["delivery"]
    assert (state["attempts"], state["succeeded"]) == (1, 1), state
