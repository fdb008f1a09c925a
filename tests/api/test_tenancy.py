"""Tenants bound to the token, against the real stack (API, worker, dev server).

A token names its tenants (`tenant`, or `tenants` as a list; `*` with taskrunner.admin for a
platform admin). The matrix below sends every tenant-scoped route, for a run of ACME, with five
distinct tokens (one subject each, never one token wearing two tenants' headers):

- `own`: issued for ACME alone;
- `other`: issued for GLOBEX alone (user:mallory@globex);
- `multi`: issued for ACME and GLOBEX;
- `star`: a platform admin's (`*` and taskrunner.admin);
- `none`: no tenant claim at all;

each once naming ACME in X-StellaOps-Tenant and once naming no tenant. Each token holds the
route's minimum role, so every refusal seen is about the tenant, not the scope.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.packs import ECHO, GATED
from tests.api.support import (
    OPERATOR,
    SIGNING_KEY,
    TENANT_HEADER,
    VIEWER,
    bearer,
    create_run,
    error_code,
    run_url,
    status_is,
    wait_for_run,
)
from tests.helpers import unique
from workflows.contract.signing import ApprovalToken, mint_token

ADMIN = "taskrunner.admin"
PREFIX = "/v1/task-runner"
ACME = "tn-acme"
GLOBEX = "tn-globex"
GRANTS = {"grants": ["packs.approve"]}
WRONG_HASH = "sha256:" + "0" * 64
KINDS = ("own", "other", "multi", "star", "none")


def requester() -> dict[str, str]:
    """ACME's person who starts the runs (a run's requester may not decide its gates)."""
    return {TENANT_HEADER: ACME, **bearer(OPERATOR, sub=f"user:rita@{ACME}", tenant=ACME)}


def token_for(kind: str, role: str) -> dict[str, str]:
    """The bearer header of token `kind` holding `role` (and the example gates' grant)."""
    if kind == "own":
        return bearer(role, sub=f"user:alice@{ACME}", tenant=ACME, **GRANTS)
    if kind == "other":
        return bearer(role, sub=f"user:mallory@{GLOBEX}", tenant=GLOBEX, **GRANTS)
    if kind == "multi":
        return bearer(role, sub="user:mia@both", tenant=None, tenants=[ACME, GLOBEX], **GRANTS)
    if kind == "star":  # a platform admin: `*` is honoured only with taskrunner.admin
        return bearer(ADMIN, sub="svc:platform", tenant="*", **GRANTS)
    assert kind == "none"
    return bearer(role, sub="user:nobody", tenant=None, **GRANTS)


@dataclass
class World:
    """ACME's runs the matrix aims at: one waiting at its gate, one finished."""

    waiting: str
    finished: str


@pytest.fixture(scope="module")
async def world(stack: Any) -> AsyncIterator[World]:
    own = {TENANT_HEADER: ACME, **token_for("own", OPERATOR)}
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        gated = await create_run(http, GATED, headers=requester())
        echo = await create_run(http, ECHO, inputs={"who": "x"}, headers=requester())
        await wait_for_run(http, gated["runId"], status_is("awaiting-approval"), headers=own)
        await wait_for_run(http, echo["runId"], status_is("succeeded"), headers=own)
        # Visibility trails a run by a moment: the listing must show both before the matrix.
        deadline = time.monotonic() + 30
        while True:
            listed = (await http.get(f"{PREFIX}/runs", headers=own)).text
            if gated["runId"] in listed and echo["runId"] in listed:
                break
            assert time.monotonic() < deadline, "the runs never showed in the listing"
            await asyncio.sleep(0.2)
        yield World(gated["runId"], echo["runId"])


@dataclass(frozen=True)
class Route:
    """A tenant-scoped call on ACME's runs, and what proves it reached ACME's data."""

    name: str
    role: str
    method: str
    path: str  # {waiting} and {finished} are ACME's runs
    body: Any = None
    # Status (and envelope code, if an error) of a call that acted in ACME.
    reached: tuple[int, str | None] = (200, None)


ROUTES = [
    Route("simulate", VIEWER, "POST", "/simulations", {"manifest": ECHO, "inputs": {"who": "x"}}),
    Route(
        "create run",
        OPERATOR,
        "POST",
        "/runs",
        {"manifest": ECHO, "inputs": {"who": "x"}},
        (201, None),
    ),
    Route("list runs", VIEWER, "GET", "/runs"),
    Route("run state", VIEWER, "GET", "/runs/{waiting}"),
    Route("logs", VIEWER, "GET", "/runs/{waiting}/logs"),
    Route("logs follow", VIEWER, "GET", "/runs/{finished}/logs?follow=true"),
    Route("artifacts", VIEWER, "GET", "/runs/{finished}/artifacts"),
    Route("evidence", VIEWER, "GET", "/runs/{finished}/evidence"),
    Route(
        "artifact file",
        VIEWER,
        "GET",
        "/runs/{finished}/artifacts/nothing.txt",
        reached=(404, "artifact_not_found"),
    ),
    Route(
        "approve",
        OPERATOR,
        "POST",
        "/runs/{waiting}/approvals/release-manager",
        {"decision": "approved", "planHash": WRONG_HASH},  # reaches the gate, decides nothing
        (409, "plan_hash_mismatch"),
    ),
    Route("cancel", OPERATOR, "POST", "/runs/{finished}/cancel", reached=(409, "run_finished")),
    Route(
        "register webhook",
        ADMIN,
        "POST",
        "/webhooks",
        {"url": "https://hooks.example.com/tn", "events": ["run.completed"], "secret": "s" * 16},
        (201, None),
    ),
    Route("list webhooks", ADMIN, "GET", "/webhooks"),
    Route(
        "redrive",
        OPERATOR,
        "POST",
        "/runs/{finished}/redrive",
        {},
        (409, "run_not_redrivable"),
    ),
    Route(
        "publish pack",
        ADMIN,
        "POST",
        "/packs",
        {"manifest": ECHO, "signature": {"payload": "x"}},  # refused before anything is stored
        (400, "invalid_pack_signature"),
    ),
    Route("list packs", VIEWER, "GET", "/packs"),
    Route(
        "create schedule",
        OPERATOR,
        "POST",
        "/schedules",
        {"scheduleId": "tn", "pack": {"name": "no-pack"}, "cron": "0 * * * *"},
        (404, "pack_not_found"),
    ),
    Route("list schedules", VIEWER, "GET", "/schedules"),
    Route("schedule", VIEWER, "GET", "/schedules/no-schedule", reached=(404, "schedule_not_found")),
    *(
        Route(
            f"{action} schedule",
            OPERATOR,
            "POST",
            f"/schedules/no-schedule/{action}",
            reached=(404, "schedule_not_found"),
        )
        for action in ("pause", "unpause", "trigger")
    ),
    Route(
        "delete schedule",
        OPERATOR,
        "DELETE",
        "/schedules/no-schedule",
        reached=(404, "schedule_not_found"),
    ),
    Route(
        "pack version",
        VIEWER,
        "GET",
        "/packs/no-pack/versions/0.0.0",
        reached=(404, "pack_not_found"),
    ),
    Route(
        "disable pack",
        ADMIN,
        "POST",
        "/packs/no-pack/versions/0.0.0/disable",
        reached=(404, "pack_not_found"),
    ),
    Route(
        "enable pack",
        ADMIN,
        "POST",
        "/packs/no-pack/versions/0.0.0/enable",
        reached=(404, "pack_not_found"),
    ),
    Route(
        "delete webhook",
        ADMIN,
        "DELETE",
        "/webhooks/wh-0123456789abcdef",
        reached=(404, "webhook_not_found"),
    ),
]
RUN_ROUTES = {r.name for r in ROUTES if "{" in r.path}

# What each token gets when the request names ACME, and when it names no tenant.
NAMING_ACME = {
    "own": "reached",
    "other": (403, "tenant_forbidden"),
    "multi": "reached",
    "star": "reached",
    "none": (403, "tenant_claim_missing"),
}
NAMING_NONE = {
    "own": "reached",
    "other": "own tenant",  # acts in GLOBEX: ACME's runs are not found there
    "multi": (400, "tenant_required"),
    "star": (400, "tenant_required"),
    "none": (403, "tenant_claim_missing"),
}


async def call(
    http: httpx.AsyncClient, route: Route, world: World, headers: dict[str, str]
) -> httpx.Response:
    path = route.path.format(waiting=world.waiting, finished=world.finished)
    return await http.request(route.method, PREFIX + path, json=route.body, headers=headers)


def outcome(response: httpx.Response) -> tuple[int, str | None]:
    if response.status_code >= 400:
        return response.status_code, error_code(response)
    return response.status_code, None


async def check(
    http: httpx.AsyncClient, route: Route, world: World, kind: str, expected: Any, named: bool
) -> str | None:
    """None when `route` called with token `kind` did what `expected` says, else the problem."""
    headers = token_for(kind, route.role)
    if named:
        headers = {TENANT_HEADER: ACME, **headers}
    response = await call(http, route, world, headers)
    got = outcome(response)
    if response.status_code == 201 and route.name == "register webhook":
        await http.delete(f"{PREFIX}/webhooks/{response.json()['id']}", headers=headers)
    if expected == "reached":
        want = route.reached
    elif expected == "own tenant":
        # GLOBEX's token acting in GLOBEX: ACME's runs do not exist there, and what it lists
        # or creates is GLOBEX's.
        want = (404, "run_not_found") if route.name in RUN_ROUTES else route.reached
    else:
        want = expected
    if got != want:
        return f"{route.name} / {kind} / {'ACME' if named else 'no header'}: {got}, want {want}"
    if route.name == "list runs" and response.status_code == 200:
        shows_acme = world.waiting in response.text and world.finished in response.text
        if shows_acme != (expected == "reached"):
            return f"list runs / {kind}: listing shows ACME's runs: {shows_acme}"
    if route.name == "create run" and response.status_code == 201:
        made_in = response.json()["tenant"]
        if made_in != (GLOBEX if expected == "own tenant" else ACME):
            return f"create run / {kind}: created in {made_in}"
    return None


class TestRouteByTokenMatrix:
    @pytest.mark.parametrize("named", [True, False], ids=["naming ACME", "no header"])
    @pytest.mark.parametrize("kind", KINDS)
    async def test_every_tenant_scoped_route(
        self, http: httpx.AsyncClient, world: World, kind: str, named: bool
    ) -> None:
        expected = (NAMING_ACME if named else NAMING_NONE)[kind]
        problems = [await check(http, route, world, kind, expected, named) for route in ROUTES]
        assert not [p for p in problems if p], problems
        # Whatever was tried, ACME's gate is still waiting for its approver.
        state = await http.get(
            run_url(world.waiting), headers={TENANT_HEADER: ACME, **token_for("own", VIEWER)}
        )
        assert state.json()["status"] == "awaiting-approval"

    async def test_the_matrix_covers_every_tenant_scoped_route(
        self, http: httpx.AsyncClient
    ) -> None:
        # Every served operation that names the tenant header is in ROUTES (the signed-link
        # route takes its tenant from the link: see TestSignedLinks).
        document = (await http.get("/openapi.json")).json()
        scoped = {
            (method.upper(), path.removeprefix(PREFIX))
            for path, operations in document["paths"].items()
            for method, operation in operations.items()
            if any(p.get("name") == TENANT_HEADER for p in operation.get("parameters", []))
        }
        templates = {
            (r.method, _template(r.path)) for r in ROUTES if not r.path.endswith("follow=true")
        }
        missing = scoped - templates
        assert not missing, (
            f"tenant-scoped routes the matrix does not try: {sorted(missing)}; add each to "
            "ROUTES in tests/api/test_tenancy.py with what proves it reached the tenant's data"
        )
        assert not templates - scoped, f"ROUTES names routes not served: {templates - scoped}"


def _template(path: str) -> str:
    path = path.split("?")[0]
    for concrete, template in (
        ("{waiting}", "{runId}"),
        ("{finished}", "{runId}"),
        ("release-manager", "{approvalId}"),
        ("nothing.txt", "{name}"),
        ("wh-0123456789abcdef", "{webhookId}"),
        ("no-pack", "{name}"),
        ("no-schedule", "{scheduleId}"),
        ("0.0.0", "{version}"),
    ):
        path = path.replace(concrete, template)
    return path


class TestTheGlobexBypass:
    async def test_mallory_of_globex_cannot_read_list_or_approve_an_acme_run(
        self, http: httpx.AsyncClient
    ) -> None:
        acme = {TENANT_HEADER: ACME, **token_for("own", OPERATOR)}
        created = await create_run(http, GATED, headers=requester())
        run_id = created["runId"]
        await wait_for_run(http, run_id, status_is("awaiting-approval"), headers=acme)
        # Mallory holds a genuine operator token with the gate's grant, for GLOBEX only, and
        # names ACME in the header.
        mallory = {TENANT_HEADER: ACME, **token_for("other", OPERATOR)}
        read = await http.get(run_url(run_id), headers=mallory)
        listed = await http.get(f"{PREFIX}/runs", headers=mallory)
        approved = await http.post(
            f"{run_url(run_id)}/approvals/release-manager",
            json={"decision": "approved", "planHash": created["planHash"]},
            headers=mallory,
        )
        for response in (read, listed, approved):
            assert response.status_code == 403, response.text
            assert error_code(response) == "tenant_forbidden"
            assert run_id not in response.text
        state = await http.get(run_url(run_id), headers=acme)
        assert state.json()["status"] == "awaiting-approval"
        assert state.json()["approvals"][0]["status"] == "pending"


class TestTokensTenantClaims:
    async def test_a_star_without_admin_is_refused(self, http: httpx.AsyncClient) -> None:
        for role in (VIEWER, OPERATOR):
            star = bearer(role, sub="user:eve", tenant="*")
            response = await http.get(f"{PREFIX}/runs", headers={TENANT_HEADER: ACME, **star})
            assert response.status_code == 403
            assert error_code(response) == "tenant_forbidden"
            assert "platform admins" in response.json()["error"]["message"]

    async def test_tenants_as_a_list_and_the_body_tenant(self, http: httpx.AsyncClient) -> None:
        multi = token_for("multi", OPERATOR)
        # The body's tenantId names one of the token's tenants: no header needed.
        response = await http.post(
            f"{PREFIX}/runs",
            json={"manifest": ECHO, "inputs": {"who": "x"}, "tenantId": GLOBEX},
            headers=multi,
        )
        assert response.status_code == 201, response.text
        assert response.json()["tenant"] == GLOBEX
        # A body naming a tenant the token does not hold is refused like the header.
        response = await http.post(
            f"{PREFIX}/runs",
            json={"manifest": ECHO, "inputs": {"who": "x"}, "tenantId": "tn-initech"},
            headers=multi,
        )
        assert response.status_code == 403
        assert error_code(response) == "tenant_forbidden"


class TestIdempotencyKeysPerTenant:
    async def test_another_tenants_key_never_replays_this_tenants_answer(
        self, http: httpx.AsyncClient
    ) -> None:
        key = unique("key")
        body = {"manifest": ECHO, "inputs": {"who": "x"}}
        acme = {TENANT_HEADER: ACME, "Idempotency-Key": key, **token_for("own", OPERATOR)}
        first = await http.post(f"{PREFIX}/runs", json=body, headers=acme)
        assert first.status_code == 201
        # Mallory sends the same key and body naming ACME: refused, not ACME's answer.
        mallory = {TENANT_HEADER: ACME, "Idempotency-Key": key, **token_for("other", OPERATOR)}
        response = await http.post(f"{PREFIX}/runs", json=body, headers=mallory)
        assert response.status_code == 403 and "idempotent-replay" not in response.headers
        assert first.json()["runId"] not in response.text
        # In her own tenant the key is hers: a run of GLOBEX, not a replay of ACME's.
        del mallory[TENANT_HEADER]
        response = await http.post(f"{PREFIX}/runs", json=body, headers=mallory)
        assert response.status_code == 201 and "idempotent-replay" not in response.headers
        assert response.json()["tenant"] == GLOBEX
        assert response.json()["runId"] != first.json()["runId"]
        # The multi-tenant token in ACME is another identity: its request under the key is
        # not ACME's first request, so it is no replay either.
        mia = {TENANT_HEADER: ACME, "Idempotency-Key": key, **token_for("multi", OPERATOR)}
        response = await http.post(f"{PREFIX}/runs", json=body, headers=mia)
        assert "idempotent-replay" not in response.headers
        assert first.json()["runId"] not in response.text


class TestSignedLinks:
    async def test_a_link_decides_only_in_the_tenant_it_was_minted_for(
        self, http: httpx.AsyncClient
    ) -> None:
        # The same run id waits at its gate in ACME and in GLOBEX.
        run_id = unique("run")
        acme = {TENANT_HEADER: ACME, **token_for("own", OPERATOR)}
        globex = {TENANT_HEADER: GLOBEX, **token_for("other", OPERATOR)}
        ours = await create_run(http, GATED, run_id=run_id, headers=requester())
        await create_run(
            http,
            GATED,
            run_id=run_id,
            headers={TENANT_HEADER: GLOBEX, **bearer(OPERATOR, sub="user:gil", tenant=GLOBEX)},
        )
        for headers in (acme, globex):
            await wait_for_run(http, run_id, status_is("awaiting-approval"), headers=headers)
        link = mint_token(
            SIGNING_KEY.encode(),
            ApprovalToken(
                tenant=ACME,
                runId=run_id,
                approvalId="release-manager",
                planHash=ours["planHash"],
                decision="approved",
                expiresAt=int(time.time()) + 600,
                nonce=secrets.token_hex(8),
            ),
        )
        # Sent by GLOBEX's operator naming GLOBEX: the link still acts in ACME only.
        response = await http.post(f"{PREFIX}/approvals/{link}", json={}, headers=globex)
        assert response.status_code == 200, response.text
        await wait_for_run(http, run_id, status_is("succeeded"), headers=acme)
        theirs = await http.get(run_url(run_id), headers=globex)
        assert theirs.json()["status"] == "awaiting-approval"
        await http.post(f"{run_url(run_id)}/cancel", headers=globex)
