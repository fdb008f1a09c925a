"""Helpers for the API tests: tokens, serving an app over real HTTP, and REST-caller shortcuts."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import jwt
import uvicorn
from fastapi import FastAPI

from tests.helpers import unique
from workflows.contract.service_key import generate_private_pem, parse_private_pem

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
SIGNING_KEY = "test-signing-key-for-links-and-webhook-secrets-0123"
# The service's Ed25519 key (evidence bundles), made fresh for the session.
SERVICE_KEY = generate_private_pem().decode()
# A pack publisher's key that the test service trusts (TASKRUNNER_PACK_TRUSTED_KEYS_FILE).
PACK_SIGNER = parse_private_pem(generate_private_pem(), "the test pack signer")
VIEWER = "taskrunner.viewer"
OPERATOR = "taskrunner.operator"
RUNS = "/v1/task-runner/runs"


DEFAULT_TENANT = "default"
TENANT_HEADER = "X-StellaOps-Tenant"


def token(
    *scopes: str,
    sub: str = "user:alice",
    secret: str = SECRET,
    tenant: str | None = DEFAULT_TENANT,
    **claims: Any,
) -> str:
    """A token of `sub` holding `scopes`, for the one `tenant` (None: no `tenant` claim; pass
    `tenants=[...]` for several)."""
    payload = {"sub": sub, "exp": int(time.time()) + 600, "scope": " ".join(scopes), **claims}
    if tenant is not None:
        payload["tenant"] = tenant
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(*scopes: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(*scopes, **claims)}"}


def in_tenant(tenant: str, /, *scopes: str, **claims: Any) -> dict[str, str]:
    """Headers of a caller naming `tenant` in the header, with a token issued for that tenant
    alone (unless `claims` say otherwise, e.g. `tenant=None, tenants=[...]`)."""
    claims.setdefault("tenant", tenant)
    return {TENANT_HEADER: tenant, **bearer(*scopes, **claims)}


# Operators who may pass the example packs' gates (grant `packs.approve`).
APPROVER = bearer(OPERATOR, grants=["packs.approve"])
READER = bearer(VIEWER)
# Who starts runs: another person than APPROVER, since an approval's requester may not decide it.
REQUESTER = bearer(OPERATOR, sub="user:rita")


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on an ephemeral port in a thread of its own; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def run_url(run_id: str) -> str:
    return f"{RUNS}/{run_id}"


async def create_run(
    http: httpx.AsyncClient,
    manifest: str,
    *,
    inputs: dict[str, Any] | None = None,
    run_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"manifest": manifest, "runId": run_id or unique("run")}
    if inputs is not None:
        body["inputs"] = inputs
    response = await http.post(RUNS, json=body, headers=headers or REQUESTER)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def wait_for_run(
    http: httpx.AsyncClient,
    run_id: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    """Poll GET /runs/{runId} until `predicate(state)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get(run_url(run_id), headers=headers or READER)
        assert response.status_code == 200, response.text
        state: dict[str, Any] = response.json()
        if predicate(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} never reached the state wanted; last: {state}")
        await asyncio.sleep(0.1)


def status_is(*statuses: str) -> Callable[[dict[str, Any]], bool]:
    return lambda state: state["status"] in statuses


def error_code(response: httpx.Response) -> str:
    """The envelope's code, after checking the envelope has the contract's shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "traceId"}, body
    assert body["error"]["traceId"] == response.headers["x-trace-id"]
    code: str = body["error"]["code"]
    return code
