"""Every route the app serves (found in its own OpenAPI document) against every role: no token,
viewer, operator, admin (each with a token issued for the tenant it names), and a run of
another tenant (tests/api/test_tenancy.py holds the route by token-tenancy matrix). Each
route's designed minimum is in ROUTES; a route the table does not know fails the test until someone decides what it
needs. Below the minimum is 401 (no token) or 403; at or above it, never 401/403; a run of
another tenant is 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.packs import ECHO, GATED
from tests.api.support import OPERATOR, VIEWER, create_run, in_tenant, status_is, wait_for_run

ADMIN = "taskrunner.admin"
PREFIX = "/v1/task-runner"
TENANT = "sec-acme"
OTHER = "sec-globex"
PUBLIC = "public"
# The designed minimum role of each operation. `public` routes take no token at all.
ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/simulations"): VIEWER,
    ("POST", "/runs"): OPERATOR,
    ("GET", "/runs"): VIEWER,
    ("GET", "/runs/{runId}"): VIEWER,
    ("POST", "/runs/{runId}/cancel"): OPERATOR,
    ("GET", "/runs/{runId}/logs"): VIEWER,
    ("GET", "/runs/{runId}/artifacts"): VIEWER,
    ("GET", "/runs/{runId}/artifacts/{name}"): VIEWER,
    ("GET", "/runs/{runId}/evidence"): VIEWER,
    ("POST", "/runs/{runId}/redrive"): OPERATOR,
    ("POST", "/packs"): ADMIN,
    ("GET", "/packs"): VIEWER,
    ("GET", "/packs/{name}/versions/{version}"): VIEWER,
    ("POST", "/packs/{name}/versions/{version}/disable"): ADMIN,
    ("POST", "/packs/{name}/versions/{version}/enable"): ADMIN,
    ("POST", "/schedules"): OPERATOR,
    ("GET", "/schedules"): VIEWER,
    ("GET", "/schedules/{scheduleId}"): VIEWER,
    ("POST", "/schedules/{scheduleId}/pause"): OPERATOR,
    ("POST", "/schedules/{scheduleId}/unpause"): OPERATOR,
    ("POST", "/schedules/{scheduleId}/trigger"): OPERATOR,
    ("DELETE", "/schedules/{scheduleId}"): OPERATOR,
    ("POST", "/runs/{runId}/approvals/{approvalId}"): OPERATOR,
    ("GET", "/approvals/{token}"): PUBLIC,  # the link's page: shows, never decides
    ("POST", "/approvals/{token}"): PUBLIC,  # a signed link carries its own authority
    ("POST", "/webhooks"): ADMIN,
    ("GET", "/webhooks"): ADMIN,
    ("DELETE", "/webhooks/{webhookId}"): ADMIN,
    ("GET", "/.well-known/openapi"): PUBLIC,
    ("GET", "/.well-known/taskrunner/keys"): PUBLIC,  # a public key, for auditors without accounts
    ("GET", "/schemas/taskpack.json"): PUBLIC,  # the manifest format, for editors
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
}
RANK = {VIEWER: 1, OPERATOR: 2, ADMIN: 3}
ROLE_CLAIMS: dict[str, tuple[tuple[str, ...], dict[str, Any]] | None] = {
    "no token": None,
    "viewer": ((VIEWER,), {}),
    "operator": ((OPERATOR,), {"grants": ["packs.approve"]}),
    "admin": ((ADMIN,), {"grants": ["packs.approve"]}),
}
ROLES = list(ROLE_CLAIMS)


def as_role(role: str, tenant: str) -> dict[str, str]:
    """Headers of `role` acting in `tenant`, with a token issued for that tenant."""
    spec = ROLE_CLAIMS[role]
    if spec is None:
        return {"X-StellaOps-Tenant": tenant}
    scopes, claims = spec
    return in_tenant(tenant, *scopes, **claims)


ROLE_RANK = {"no token": 0, "viewer": 1, "operator": 2, "admin": 3}


def key(method: str, path: str) -> tuple[str, str]:
    return method, path.removeprefix(PREFIX)


def served_routes(document: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        key(method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    )


@dataclass
class World:
    """A run of TENANT waiting at its gate, and a webhook id to aim at."""

    run_id: str
    plan_hash: str


@pytest.fixture(scope="module")
async def world(stack: Any) -> AsyncIterator[World]:
    headers = as_role("operator", TENANT)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        created = await create_run(http, GATED, headers=headers)
        await wait_for_run(http, created["runId"], status_is("awaiting-approval"), headers=headers)
        yield World(created["runId"], created["planHash"])


def request_for(
    route: tuple[str, str], world: World, *, throwaway_run: str | None = None
) -> tuple[str, str, Any]:
    """(method, url, json body) for a call of `route` that, once authorised, changes nothing
    the other calls rely on: a wrong plan hash for decisions, a throwaway run for cancels."""
    method, template = route
    run_id = throwaway_run or world.run_id
    url = (
        PREFIX + template
        if template.startswith(("/runs", "/packs", "/schedules"))
        or template
        in (
            "/simulations",
            "/approvals/{token}",
            "/webhooks",
            "/webhooks/{webhookId}",
        )
        else template
    )
    url = (
        url.replace("{runId}", run_id)
        .replace("{name}", "no-such-artifact")
        .replace("{approvalId}", "release-manager")
        .replace("{token}", "not-a-link")
        .replace("{webhookId}", "wh-does-not-exist")
        .replace("{version}", "0.0.0")
        .replace("{scheduleId}", "no-such-schedule")
    )
    body: Any = None
    if route == ("POST", "/simulations") or route == ("POST", "/runs"):
        body = {"manifest": ECHO, "inputs": {"who": "x"}}
    elif route == ("POST", "/runs/{runId}/approvals/{approvalId}"):
        body = {"decision": "approved", "planHash": "sha256:" + "0" * 64}
    elif route == ("POST", "/approvals/{token}"):
        body = {"decision": "approved"}
    elif route == ("POST", "/packs"):
        body = {"manifest": ECHO}
    elif route == ("POST", "/schedules"):
        body = {"scheduleId": "sec", "pack": {"name": "no-such-pack"}, "cron": "0 * * * *"}
    elif route == ("POST", "/runs/{runId}/redrive"):
        body = {}
    elif route == ("POST", "/webhooks"):
        body = {"url": "http://127.0.0.1:9/hook", "events": ["run.completed"], "secret": "s" * 16}
    return method, url, body


class TestEveryRouteEveryRole:
    async def test_the_table_covers_every_served_route(self, http: httpx.AsyncClient) -> None:
        served = served_routes((await http.get("/openapi.json")).json())
        unknown = [r for r in served if r not in ROUTES]
        assert not unknown, f"classify these routes in ROUTES (their minimum role): {unknown}"
        gone = [r for r in ROUTES if r not in served]
        assert not gone, f"ROUTES names routes the app no longer serves: {gone}"

    async def test_the_document_declares_what_each_route_enforces(
        self, http: httpx.AsyncClient
    ) -> None:
        """The served document's security of each operation names the roles that may call it
        (any one of them): ROUTES' minimum and every role above it, which the tests below hold
        the routes to. `security: []` for the routes that take no token."""
        document = (await http.get("/openapi.json")).json()
        wrong = []
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                route = key(method.upper(), path)
                minimum = ROUTES.get(route)
                if minimum is None:
                    continue  # test_the_table_covers_every_served_route names it
                wanted = (
                    []
                    if minimum == PUBLIC
                    else [{"oauth2": [role]} for role in RANK if RANK[role] >= RANK[minimum]]
                )
                if operation.get("security") != wanted:
                    wrong.append((route, operation.get("security"), wanted))
        assert not wrong, f"declared security differs from what the route enforces: {wrong}"

    @pytest.mark.parametrize("role", ROLES)
    async def test_role_against_every_route(
        self, http: httpx.AsyncClient, world: World, role: str
    ) -> None:
        problems = []
        for route, minimum in ROUTES.items():
            throwaway = None
            allowed = minimum == PUBLIC or ROLE_RANK[role] >= RANK[minimum]
            if allowed and route == ("POST", "/runs/{runId}/cancel"):
                throwaway = (
                    await create_run(
                        http,
                        ECHO,
                        inputs={"who": "x"},
                        headers=as_role("operator", TENANT),
                    )
                )["runId"]
            method, url, body = request_for(route, world, throwaway_run=throwaway)
            headers = as_role(role, TENANT)
            response = await http.request(method, url, json=body, headers=headers)
            status = response.status_code
            if status >= 500:
                problems.append((route, status, response.text[:200]))
            elif not allowed:
                wanted = 401 if role == "no token" else 403
                if status != wanted:
                    problems.append((route, f"{status}, want {wanted}", response.text[:200]))
                elif (
                    wanted == 401
                    and "bearer" not in response.headers.get("www-authenticate", "").lower()
                ):
                    problems.append((route, "401 without a Bearer challenge"))
            elif status in (401, 403):
                problems.append((route, f"{status} for an allowed role", response.text[:200]))
            if allowed and route == ("POST", "/webhooks") and status == 201:
                await http.delete(f"{PREFIX}/webhooks/{response.json()['id']}", headers=headers)
        assert not problems, problems

    @pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
    async def test_another_tenants_run_is_404(
        self, http: httpx.AsyncClient, world: World, role: str
    ) -> None:
        problems = []
        for route, minimum in ROUTES.items():
            if "{runId}" not in route[1] or ROLE_RANK[role] < RANK[minimum]:
                continue
            method, url, body = request_for(route, world)
            headers = as_role(role, OTHER)
            response = await http.request(method, url, json=body, headers=headers)
            if response.status_code != 404 or response.json()["error"]["code"] != "run_not_found":
                problems.append((route, response.status_code, response.text[:200]))
        assert not problems, problems
        # Listing in the other tenant does not show the run either.
        listing = await http.get(f"{PREFIX}/runs", headers=as_role(role, OTHER))
        assert listing.status_code == 200
        assert world.run_id not in listing.text


class TestApprovalGrants:
    async def test_an_operator_without_the_gates_grants_is_403(
        self, http: httpx.AsyncClient, world: World
    ) -> None:
        decision = {"decision": "approved", "planHash": world.plan_hash}
        url = f"{PREFIX}/runs/{world.run_id}/approvals/release-manager"
        for headers in (
            in_tenant(TENANT, OPERATOR),
            in_tenant(TENANT, ADMIN),
            in_tenant(TENANT, OPERATOR, grants=["other"]),
        ):
            response = await http.post(url, json=decision, headers=headers)
            assert response.status_code == 403, response.text
            assert "packs.approve" in response.json()["error"]["message"]
        state = await http.get(
            f"{PREFIX}/runs/{world.run_id}",
            headers=as_role("viewer", TENANT),
        )
        assert state.json()["status"] == "awaiting-approval"  # none of them got through
