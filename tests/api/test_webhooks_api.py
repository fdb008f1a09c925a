"""POST/GET/DELETE /webhooks: a tenant's registrations in the database (SQLite and PostgreSQL),
secrets encrypted in the database and in every run's history, and runs taking the registrations
of the moment they start."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from cli.settings import DevSettings
from tests.api.packs import ECHO
from tests.api.support import (
    bearer,
    create_run,
    error_code,
    in_tenant,
    serve,
    status_is,
    wait_for_run,
)
from tests.helpers import result_of, unique
from workflows.contract.names import workflow_id

if TYPE_CHECKING:
    from tests.api.conftest import Stack

WEBHOOKS = "/v1/task-runner/webhooks"
ADMIN = bearer("taskrunner.admin")
SECRET = "a-receivers-secret-" + "z" * 12


ROLES: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "admin": (("taskrunner.admin",), {}),
    "approver": (("taskrunner.operator",), {"grants": ["packs.approve"]}),
    "reader": (("taskrunner.viewer",), {}),
}


def as_tenant(tenant: str, role: str) -> dict[str, str]:
    """Headers of `role` acting in `tenant`, with a token issued for that tenant."""
    scopes, claims = ROLES[role]
    return in_tenant(tenant, *scopes, **claims)


def registration(url: str = "https://hooks.example.com/taskrunner", **overrides: Any) -> Any:
    return {"url": url, "events": ["run.completed", "gate.awaiting"], "secret": SECRET, **overrides}


def payload_texts(history_json: str) -> list[str]:
    """The history as JSON, and every payload in it decoded (payload data is base64 there)."""
    texts = [history_json]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, str) and "metadata" in node:
                texts.append(base64.b64decode(data).decode("utf-8", "replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return texts


class Receiver:
    """An HTTP endpoint on 127.0.0.1 recording what is POSTed to it."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tenant() -> Iterator[str]:
    # Every test registers in a tenant of its own, so no other test's runs deliver anywhere.
    yield unique("hooks")


class TestRegisterWebhook:
    async def test_register_list_delete(self, any_http: httpx.AsyncClient, tenant: str) -> None:
        http = any_http
        headers = as_tenant(tenant, "admin")
        assert (await http.get(WEBHOOKS, headers=headers)).json() == {"webhooks": []}
        response = await http.post(WEBHOOKS, json=registration(), headers=headers)
        assert response.status_code == 201, response.text
        hook = response.json()
        assert set(hook) == {"id", "url", "events", "createdAt"}
        assert hook["url"] == "https://hooks.example.com/taskrunner"
        assert hook["events"] == ["run.completed", "gate.awaiting"]
        assert SECRET not in response.text

        listed = await http.get(WEBHOOKS, headers=headers)
        assert listed.json() == {"webhooks": [hook]}
        assert SECRET not in listed.text
        # Another tenant has its own (empty) list.
        other = await http.get(WEBHOOKS, headers=as_tenant(unique("other"), "admin"))
        assert other.json() == {"webhooks": []}

        gone = await http.delete(f"{WEBHOOKS}/{hook['id']}", headers=headers)
        assert gone.status_code == 204 and gone.content == b""
        again = await http.delete(f"{WEBHOOKS}/{hook['id']}", headers=headers)
        assert again.status_code == 404
        assert error_code(again) == "webhook_not_found"
        assert (await http.get(WEBHOOKS, headers=headers)).json() == {"webhooks": []}

    async def test_deleting_in_a_tenant_without_webhooks_is_404(
        self, http: httpx.AsyncClient, tenant: str
    ) -> None:
        response = await http.delete(
            f"{WEBHOOKS}/wh-0123456789abcdef", headers=as_tenant(tenant, "admin")
        )
        assert response.status_code == 404
        assert error_code(response) == "webhook_not_found"

    async def test_invalid_registrations_are_400(
        self, http: httpx.AsyncClient, tenant: str
    ) -> None:
        headers = as_tenant(tenant, "admin")
        for body, field in (
            (registration(url="ftp://hooks.example.com/x"), "url"),
            (registration(url="https:///no-host"), "url"),
            (registration(url="http://[::1/x"), "url"),
            (registration(url="https://user:pw@hooks.example.com/"), "url"),
            (registration(events=["run.exploded"]), "events"),
            (registration(events=[]), "events"),
            (registration(events=["webhook.delivered"]), "events"),
            (registration(secret="too-short"), "secret"),
            ({"url": "https://hooks.example.com/"}, "events"),
            (registration(extra=True), "extra"),
        ):
            response = await http.post(WEBHOOKS, json=body, headers=headers)
            assert response.status_code == 400, body
            assert field in response.json()["error"]["message"], body
        assert (await http.get(WEBHOOKS, headers=headers)).json() == {"webhooks": []}

    async def test_admins_only(self, http: httpx.AsyncClient, tenant: str) -> None:
        for role in ("approver", "reader"):
            scoped = as_tenant(tenant, role)
            assert (
                await http.post(WEBHOOKS, json=registration(), headers=scoped)
            ).status_code == 403
            assert (await http.get(WEBHOOKS, headers=scoped)).status_code == 403
            assert (
                await http.delete(f"{WEBHOOKS}/wh-0123456789abcdef", headers=scoped)
            ).status_code == 403
        assert (await http.get(WEBHOOKS)).status_code == 401

    async def test_without_a_signing_key_webhooks_are_503(
        self, api_settings: DevSettings, stack: Any
    ) -> None:
        keyless = api_settings.model_copy(update={"signing_key": None})
        with serve(create_app(keyless)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                response = await client.post(WEBHOOKS, json=registration(), headers=ADMIN)
        assert response.status_code == 503
        assert error_code(response) == "signing_key_missing"
        assert "TASKRUNNER_SIGNING_KEY" in response.json()["error"]["message"]


class TestSecretsAtRest:
    async def test_the_secret_is_neither_in_the_database_nor_in_a_history_as_plaintext(
        self, any_stack: Stack, tenant: str, dev_env: WorkflowEnvironment
    ) -> None:
        from sqlalchemy import text

        from db.engine import Database
        from workflows.contract.signing import decrypt_secret

        headers = as_tenant(tenant, "admin")
        # An event this run never has: nothing is delivered (to a host that is not there).
        body = registration(events=["run.failed"])
        async with httpx.AsyncClient(base_url=any_stack.url, timeout=30) as http:
            hook = (await http.post(WEBHOOKS, json=body, headers=headers)).json()
            run = await create_run(
                http, ECHO, inputs={"who": "x"}, headers=as_tenant(tenant, "approver")
            )
            assert any_stack.settings.database_url is not None
            database = Database(any_stack.settings.database_url)
            try:
                async with database.engine.connect() as conn:
                    rows = (
                        await conn.execute(
                            text("SELECT * FROM webhooks WHERE tenant = :t"), {"t": tenant}
                        )
                    ).all()
            finally:
                await database.dispose()
            assert len(rows) == 1 and rows[0].id == hook["id"]
            assert not any(SECRET in str(value) for value in rows[0])
            key = (any_stack.settings.signing_key or "").encode()
            assert decrypt_secret(key, rows[0].secret_ciphertext) == SECRET

        handle = dev_env.client.get_workflow_handle(workflow_id(tenant, run["runId"]))
        run_texts = payload_texts((await handle.fetch_history()).to_json())
        assert any(hook["id"] in text and "secretCiphertext" in text for text in run_texts)
        assert not any(SECRET in text for text in run_texts)


class TestRunsTakeTheWebhooksOfTheirStart:
    async def test_deliveries_reach_the_receiver_signed_with_the_secret(
        self, http: httpx.AsyncClient, tenant: str, dev_env: WorkflowEnvironment
    ) -> None:
        with Receiver() as receiver:
            headers = as_tenant(tenant, "admin")
            before = await create_run(
                http, ECHO, inputs={"who": "x"}, headers=as_tenant(tenant, "approver")
            )
            await wait_for_run(
                http, before["runId"], status_is("succeeded"), headers=as_tenant(tenant, "reader")
            )
            body = registration(url=receiver.url, events=["run.completed"])
            hook = (await http.post(WEBHOOKS, json=body, headers=headers)).json()
            after = await create_run(
                http, ECHO, inputs={"who": "y"}, headers=as_tenant(tenant, "approver")
            )
            await wait_for_run(
                http, after["runId"], status_is("succeeded"), headers=as_tenant(tenant, "reader")
            )
            handle = dev_env.client.get_workflow_handle(workflow_id(tenant, after["runId"]))
            await result_of(handle)  # the run ends once its deliveries are done

        # Only the run started after the registration delivered, and only what it asked for.
        assert len(receiver.requests) == 1, receiver.requests
        sent, raw = receiver.requests[0]
        event = json.loads(raw)
        assert (event["eventType"], event["runId"]) == ("run.completed", after["runId"])
        mac = hmac.new(
            SECRET.encode(), sent["x-taskrunner-timestamp"].encode() + b"." + raw, hashlib.sha256
        ).hexdigest()
        assert sent["x-taskrunner-signature"] == f"sha256={mac}"
        # A secret registered as plain text (before whsec_ secrets) is the key of the Standard
        # Webhooks signature too, as bytes: receivers verify with the stock verifier.
        assert Webhook(SECRET.encode()).verify(raw, sent) == event
        await http.delete(f"{WEBHOOKS}/{hook['id']}", headers=headers)


async def _one_delivery(
    http: httpx.AsyncClient, tenant: str, dev_env: WorkflowEnvironment, **registered: Any
) -> tuple[dict[str, Any], tuple[dict[str, str], bytes]]:
    """Register a webhook for run.completed, run one pack, and return the registration's answer
    and the one request the receiver got."""
    with Receiver() as receiver:
        body = {"url": receiver.url, "events": ["run.completed"], **registered}
        created = await http.post(WEBHOOKS, json=body, headers=as_tenant(tenant, "admin"))
        assert created.status_code == 201, created.text
        run = await create_run(
            http, ECHO, inputs={"who": "x"}, headers=as_tenant(tenant, "approver")
        )
        await dev_env.client.get_workflow_handle(workflow_id(tenant, run["runId"])).result()
    assert len(receiver.requests) == 1, receiver.requests
    return created.json(), receiver.requests[0]


class TestStandardWebhooks:
    async def test_a_secret_made_by_the_service_verifies_with_the_stock_verifier(
        self, http: httpx.AsyncClient, tenant: str, dev_env: WorkflowEnvironment
    ) -> None:
        hook, (sent, raw) = await _one_delivery(http, tenant, dev_env)
        secret = hook["secret"]
        assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
        event = Webhook(secret).verify(raw, sent)
        assert event["eventType"] == "run.completed"
        assert sent["webhook-id"] == sent["x-taskrunner-delivery"]
        assert sent["webhook-timestamp"] == sent["x-taskrunner-timestamp"]
        # Shown once: never listed, and another secret does not verify, nor an altered body.
        listed = await http.get(WEBHOOKS, headers=as_tenant(tenant, "admin"))
        assert secret not in listed.text and "secret" not in listed.json()["webhooks"][0]
        other = "whsec_" + base64.b64encode(b"x" * 32).decode()
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(raw, sent)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(raw.replace(b"completed", b"failed"), sent)

    async def test_a_whsec_secret_given_verifies(
        self, http: httpx.AsyncClient, tenant: str, dev_env: WorkflowEnvironment
    ) -> None:
        secret = "whsec_" + base64.b64encode(bytes(range(24))).decode()
        hook, (sent, raw) = await _one_delivery(http, tenant, dev_env, secret=secret)
        assert "secret" not in hook  # the caller's own: not echoed
        assert Webhook(secret).verify(raw, sent)["eventType"] == "run.completed"
        # The deprecated header is still there, keyed with the secret's text as before.
        stamp = sent["x-taskrunner-timestamp"].encode()
        mac = hmac.new(secret.encode(), stamp + b"." + raw, hashlib.sha256).hexdigest()
        assert sent["x-taskrunner-signature"] == f"sha256={mac}"

    async def test_malformed_whsec_secrets_are_400(
        self, http: httpx.AsyncClient, tenant: str
    ) -> None:
        headers = as_tenant(tenant, "admin")
        for secret in (
            "whsec_" + "!" * 40,  # not base64
            "whsec_" + base64.b64encode(b"k" * 16).decode(),  # too short a key
            "whsec_" + base64.b64encode(b"k" * 65).decode(),  # too long
        ):
            response = await http.post(WEBHOOKS, json=registration(secret=secret), headers=headers)
            assert response.status_code == 400, secret
            assert response.json()["error"]["message"].startswith("secret"), response.text
        # A made secret would be recorded with the Idempotency-Key's answer: one must be sent.
        keyed = {**headers, "Idempotency-Key": unique("key")}
        body = {"url": "https://hooks.example.com/x", "events": ["run.completed"]}
        response = await http.post(WEBHOOKS, json=body, headers=keyed)
        assert response.status_code == 400 and "Idempotency-Key" in response.text
        assert (await http.get(WEBHOOKS, headers=headers)).json() == {"webhooks": []}
