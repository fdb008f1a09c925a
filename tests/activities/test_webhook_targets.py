"""Webhook targets under the operator's policy: the worker sends webhooks from inside the
operator's network, so loopback, link-local and private receivers are refused unless the operator
allows internal targets, and the Temporal frontend is refused always."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.netpolicy import TargetPolicy
from activities.webhooks import WebhookActivities
from workflows.contract.activities import WebhookDelivery
from workflows.contract.addresses import is_internal
from workflows.contract.signing import encrypt_secret

KEY = "target-policy-signing-key"


@pytest.fixture
def receiver() -> Iterator[tuple[int, list[bytes]]]:
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


def delivery(url: str) -> WebhookDelivery:
    return WebhookDelivery(
        deliveryId="d-1",
        webhookId="w-1",
        url=url,
        secretCiphertext=encrypt_secret(KEY.encode(), "receiver-secret"),
        event={"eventType": "run.completed", "runId": "r"},
    )


async def deliver(policy: TargetPolicy | None, url: str) -> Any:
    hooks = WebhookActivities(KEY, None, targets=policy)
    return await ActivityEnvironment().run(hooks.deliver_webhook, delivery(url))


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254", "10.1.2.3", "[::ffff:127.0.0.1]"]
)
async def test_internal_targets_are_refused_by_default(
    receiver: tuple[int, list[bytes]], host: str
) -> None:
    port, received = receiver
    with pytest.raises(ApplicationError) as caught:
        await deliver(None, f"http://{host}:{port}/hook")
    assert caught.value.non_retryable
    assert "webhook target refused" in caught.value.message
    assert "internal address" in caught.value.message
    assert received == []


async def test_the_operator_may_allow_internal_targets(receiver: tuple[int, list[bytes]]) -> None:
    port, received = receiver
    result = await deliver(TargetPolicy(allow_internal=True), f"http://localhost:{port}/hook")
    assert result.status == 204
    assert len(received) == 1


async def test_the_temporal_frontend_is_refused_even_when_internal_is_allowed(
    receiver: tuple[int, list[bytes]],
) -> None:
    port, received = receiver
    policy = TargetPolicy.build(True, [f"127.0.0.1:{port}"])
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(ApplicationError, match="cluster's own service"):
            await deliver(policy, f"http://{host}:{port}/hook")
    assert received == []


@pytest.mark.parametrize(
    ("address", "internal"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.16.5.4", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("0.0.0.0", True),
        ("::1", True),
        ("fd00::1", True),
        ("fe80::1", True),
        ("::ffff:10.0.0.1", True),
        ("93.184.216.34", False),
        ("2606:4700::1111", False),
    ],
)
def test_internal_addresses(address: str, internal: bool) -> None:
    assert is_internal(ipaddress.ip_address(address)) is internal


async def test_a_failed_delivery_does_not_name_the_urls_secret_parts() -> None:
    """Receivers often put their credential in the URL's path or query (a chat service's
    incoming-webhook URL): only an admin lists webhooks, but a delivery's failure is the reason of
    the run log's `webhook.failed`, which every viewer of the tenant reads. It names the origin."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T0001/B0002/xoxb-path-secret?token=query-secret#frag"
    with pytest.raises(ApplicationError) as caught:
        await deliver(TargetPolicy(allow_internal=True), url)
    message = caught.value.message
    assert not caught.value.non_retryable  # the receiver may come back
    assert f"http://127.0.0.1:{port}" in message
    assert "path-secret" not in message and "query-secret" not in message, message
