"""A small chat bot: receives TaskRunner's webhooks, shows each gate, and approves by signal.

It stands in for a Slack or Teams bot. On `gate.awaiting` it prints the gate the way a chat
message would show it (run, approval, message, required grants, the signed links), then decides
and sends the PackRun workflow's `approval` signal through Temporal, exactly as a bot with
access to Temporal would. Deliveries are checked with the `standardwebhooks` verifier (the
Standard Webhooks headers TaskRunner sends): a bad signature, or a delivery more than five
minutes old, is refused with 401.

    python examples/chatbot/bot.py --port 9000 --secret "$WEBHOOK_SECRET" --approve-as bot:chat

`--secret` is the webhook's secret: the `whsec_...` one the registration answered, or the text
given when registering.

Register it for a tenant with `POST /v1/task-runner/webhooks` (url http://127.0.0.1:9000/hook,
events [gate.awaiting, run.completed, run.failed]). Environment: TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError
from temporalio.client import Client


def verifier(secret: str) -> Webhook:
    """A `whsec_` secret is base64 of the key; a secret registered as plain text is the key's
    own bytes."""
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


def signature_ok(webhook: Webhook, headers: Any, body: bytes) -> bool:
    try:
        webhook.verify(body, dict(headers.items()), json_parse=False)
    except WebhookVerificationError:
        return False
    return True


def show(event: dict[str, Any]) -> str:
    """The chat message a person would see."""
    if event["eventType"] == "gate.awaiting":
        grants = ", ".join(event.get("requiredGrants") or []) or "none"
        links = event.get("links", {})
        return (
            f":hourglass: {event['pack']} run {event['runId']} waits for approval "
            f"*{event['approvalId']}*: {event.get('gateMessage') or '(no message)'}\n"
            f"    needs grants: {grants}; review and decide: {links.get('review', '-')}"
        )
    return f":information_source: {event['pack']} run {event['runId']}: {event['eventType']}"


class Bot:
    def __init__(self, client: Client, secret: str, actor: str, approve: bool) -> None:
        self.client = client
        self.webhook = verifier(secret)
        self.actor = actor
        self.approve = approve
        self.loop = asyncio.get_running_loop()

    async def decide(self, event: dict[str, Any]) -> None:
        # The PackRun workflow id is the tenant-scoped run id; see README "Operating".
        workflow_id = f"taskrunner/{event['tenant']}/{event['runId']}"
        decision = "approved" if self.approve else "rejected"
        await self.client.get_workflow_handle(workflow_id).signal(
            "approval",
            {
                "approvalId": event["approvalId"],
                "decision": decision,
                "planHash": event["planHash"],
                "actorId": self.actor,
                "summary": f"{decision} from chat by {self.actor}",
            },
        )
        print(f"-> sent approval signal: {decision} as {self.actor}", flush=True)

    def handle(self, headers: Any, body: bytes) -> int:
        if not signature_ok(self.webhook, headers, body):
            print("refused a delivery with a bad signature", flush=True)
            return 401
        event = json.loads(body)
        print(show(event), flush=True)
        if event["eventType"] == "gate.awaiting":
            asyncio.run_coroutine_threadsafe(self.decide(event), self.loop).result(timeout=30)
        return 204


def serve(bot: Bot, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(bot.handle(self.headers, body))
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    return server


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", default=os.environ.get("WEBHOOK_SECRET", ""))
    parser.add_argument("--approve-as", default="bot:chat", help="the actor id decisions carry")
    parser.add_argument("--reject", action="store_true", help="reject instead of approve")
    args = parser.parse_args(argv)
    if len(args.secret) < 16:
        sys.exit("give the webhook's secret (16+ characters) with --secret or WEBHOOK_SECRET")
    client = await Client.connect(
        os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233"),
        namespace=os.environ.get("TEMPORAL_NAMESPACE", "default"),
    )
    server = serve(Bot(client, args.secret, args.approve_as, not args.reject), args.port)
    print(f"chat bot listening on http://127.0.0.1:{args.port}/hook", flush=True)
    # Ctrl-C or `kill` (SIGTERM) stops it cleanly; under `nohup` or `&` SIGINT is ignored, so
    # SIGTERM is the signal supervisors and scripts send.
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        server.shutdown()
    print("chat bot stopped", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
