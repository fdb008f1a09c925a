"""Webhook deliveries: activities of the run, signed, retried while the receiver is down."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from tests.helpers import logs_of, result_of, start_pack, steps_by_id, unique, wait_for, worker_for
from workflows.contract.names import UPDATE_DECIDE_APPROVAL
from workflows.contract.signing import encrypt_secret, verify_token
from workflows.contract.state import ApprovalOutcome, ApprovalSignal, WebhookRef
from workflows.settings import WorkerSettings

KEY = "webhook-test-signing-key"
SECRET = "receiver-shared-secret-123"

GATED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: hooks, version: 1.0.0}
spec:
  approvals: [{id: ship, grants: [deploy.prod], message: "Ship to prod?"}]
  steps:
    - {id: build, run: {uses: "builtin:noop"}}
    - {id: gate, gate: {approval: {id: ship}}}
    - {id: deploy, run: {uses: "builtin:noop"}}
"""


class Receiver:
    """A webhook receiver on loopback that records what it was sent."""

    def __init__(self, port: int, fail_first: int = 0) -> None:
        self.port = port
        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                # The first `fail_first` requests are answered 503, so they are retried.
                self.send_response(503 if len(received) <= fail_first else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def receiver(port: int, fail_first: int = 0) -> Iterator[Receiver]:
    rec = Receiver(port, fail_first)
    try:
        yield rec
    finally:
        rec.close()


def hook(port: int, events: list[str]) -> WebhookRef:
    return WebhookRef(
        id="bot",
        url=f"http://127.0.0.1:{port}/hook",
        events=events,
        secretCiphertext=encrypt_secret(KEY.encode(), SECRET),
    )


def settings() -> WorkerSettings:
    # The receivers are on loopback: the operator's opt-in to internal webhook targets.
    return WorkerSettings(
        signing_key=KEY, public_url="http://taskrunner.test", webhook_allow_private_targets=True
    )


async def until(predicate: Any, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


class TestDeliveries:
    async def test_signed_gate_awaiting_then_run_completed(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        port = free_port()
        with receiver(port) as rec:
            async with worker_for(client, tmp_path, tq, settings=settings()):
                handle = await start_pack(
                    client, tq, GATED, webhooks=[hook(port, ["gate.awaiting", "run.completed"])]
                )
                await until(lambda: len(rec.received) >= 1)
                headers, body = rec.received[0]
                stamp = headers["x-taskrunner-timestamp"]
                expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256)
                assert headers["x-taskrunner-signature"] == f"sha256={expected.hexdigest()}"
                event = json.loads(body)
                state = await wait_for(handle, lambda s: s.status == "awaiting-approval")
                assert event["eventType"] == "gate.awaiting"
                assert (event["approvalId"], event["planHash"]) == ("ship", state.planHash)
                assert event["gateMessage"] == "Ship to prod?"
                assert event["requiredGrants"] == ["deploy.prod"]
                assert (event["missing"], event["allowRequester"]) == (["1 more approver"], False)
                approve = event["links"]["approve"]
                assert approve.startswith("http://taskrunner.test/v1/task-runner/approvals/")
                token = verify_token(KEY.encode(), approve.rsplit("/", 1)[1], now=0)
                assert (token.runId, token.decision) == (state.runId, "approved")
                # The page for people: the approve link with its reject sibling.
                reject = event["links"]["reject"].rsplit("/", 1)[1]
                assert event["links"]["review"] == f"{approve}?other={reject}"
                await handle.execute_update(
                    UPDATE_DECIDE_APPROVAL,
                    ApprovalSignal(
                        approvalId="ship", decision="approved", planHash=state.planHash, actorId="a"
                    ),
                    result_type=ApprovalOutcome,
                )
                assert (await result_of(handle)).status == "succeeded"
                # The run waits for its deliveries before it ends.
                assert [e["eventType"] for e in rec.events()] == ["gate.awaiting", "run.completed"]
                logs = await logs_of(handle)
                delivered = [e for e in logs if e.eventType == "webhook.delivered"]
                assert len(delivered) == 2, "\n".join(
                    f"{e.eventType} {e.message} {e.metadata}" for e in logs
                )
                # The secret itself is nowhere in the run's history.
                history = (await handle.fetch_history()).to_json()
                assert SECRET not in history

    async def test_receiver_down_is_retried_until_it_answers(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        port = free_port()  # nothing listens there yet: connections are refused
        async with worker_for(client, tmp_path, tq, settings=settings()):
            handle = await start_pack(
                client,
                tq,
                GATED.replace("    - {id: gate, gate: {approval: {id: ship}}}\n", ""),
                webhooks=[hook(port, ["run.completed"])],
            )
            await wait_for(handle, lambda s: steps_by_id(s)["deploy"].status == "Succeeded")
            await asyncio.sleep(2.5)  # a couple of refused attempts
            with receiver(port) as rec:
                result = await asyncio.wait_for(result_of(handle), timeout=60)
                assert result.status == "succeeded"
                assert [e["eventType"] for e in rec.events()] == ["run.completed"]
            delivered = [e for e in await logs_of(handle) if e.eventType == "webhook.delivered"]
            assert int(delivered[0].metadata["attempts"]) >= 2

    async def test_retries_carry_the_same_links_minted_for_the_webhook(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        # Issue #10 (b): each retry minted fresh links, and each fresh link was another vote.
        client = dev_env.client
        tq = unique("tq")
        port = free_port()
        with receiver(port, fail_first=2) as rec:
            async with worker_for(client, tmp_path, tq, settings=settings()):
                handle = await start_pack(
                    client, tq, GATED, webhooks=[hook(port, ["gate.awaiting"])]
                )
                await until(lambda: len(rec.received) >= 3)
                attempts = [e["links"] for e in rec.events()]
                assert len(attempts) == 3 and attempts[0] == attempts[1] == attempts[2]
                for verb, decision in (("approve", "approved"), ("reject", "rejected")):
                    token = verify_token(KEY.encode(), attempts[0][verb].rsplit("/", 1)[1], now=0)
                    assert (token.decision, token.identity) == (decision, "webhook:bot")
                await handle.cancel()
