"""The example chat bot, run as a real process: it gets the webhook and approves by signal."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.helpers import logs_of, start_pack, state_of, unique, worker_for
from workflows.contract.signing import encrypt_secret
from workflows.contract.state import WebhookRef
from workflows.settings import WorkerSettings

BOT = Path(__file__).resolve().parents[2] / "examples" / "chatbot" / "bot.py"
KEY = "chatbot-test-signing-key"
SECRET = "chatbot-shared-secret-0123"

PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: chat, version: 1.0.0}
spec:
  approvals: [{id: ship, grants: [deploy], message: "Deploy to prod?"}]
  steps:
    - {id: gate, gate: {approval: {id: ship}}}
    - {id: deploy, run: {uses: "builtin:echo", with: {done: true}}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_bot_approves_a_gate_by_signal(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "bot.log"
    with log.open("w") as out:
        bot = subprocess.Popen(
            [
                # As under `nohup`/`&`: the bot starts with SIGINT ignored, and must still stop.
                "/bin/sh",
                "-c",
                'trap "" INT; exec "$0" "$@"',
                sys.executable,
                str(BOT),
                "--port",
                str(port),
                "--secret",
                SECRET,
                "--approve-as",
                "bot:chat",
            ],
            env={
                **os.environ,
                "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(100):  # until it listens
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.1)
        tq = unique("tq")
        settings = WorkerSettings(signing_key=KEY, webhook_allow_private_targets=True)
        async with worker_for(dev_env.client, tmp_path / "data", tq, settings=settings):
            hook = WebhookRef(
                id="chat",
                url=f"http://127.0.0.1:{port}/hook",
                events=["gate.awaiting", "run.completed"],
                secretCiphertext=encrypt_secret(KEY.encode(), SECRET),
            )
            handle = await start_pack(dev_env.client, tq, PACK, webhooks=[hook])
            result = await asyncio.wait_for(handle.result(), timeout=60)
            assert result.status == "succeeded"
            state = await state_of(handle)
            decisions = state.approvals[0].decisions
            assert [(d.actorId, d.decision) for d in decisions] == [("bot:chat", "approved")]
            events = [e.eventType for e in await logs_of(handle)]
            assert events.index("gate.awaiting") < events.index("gate.approved")
    finally:
        # SIGTERM, not SIGINT: a background `make test` (nohup, &, some CI runners) starts us
        # with SIGINT ignored, and the bot inherits that. Killed if it does not stop in time.
        bot.send_signal(signal.SIGTERM)
        try:
            bot.wait(timeout=10)
        except subprocess.TimeoutExpired:
            bot.kill()
            bot.wait()
    shown = log.read_text()
    assert "chat bot stopped" in shown  # it stopped on the signal, not by the kill
    assert "waits for approval *ship*: Deploy to prod?" in shown
    assert "sent approval signal: approved as bot:chat" in shown
    assert "run.completed" in shown
