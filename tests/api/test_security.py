"""Bearer tokens and scopes, and tenants: another tenant's run does not exist."""

from __future__ import annotations

import time

import httpx
import jwt

from tests.api.packs import ECHO, GATED
from tests.api.support import (
    APPROVER,
    READER,
    RUNS,
    SECRET,
    bearer,
    create_run,
    error_code,
    in_tenant,
    run_url,
    status_is,
    token,
    wait_for_run,
)


def authorization(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


class TestAuthentication:
    async def test_no_token_is_401_with_a_challenge(self, http: httpx.AsyncClient) -> None:
        response = await http.get(run_url("any"))
        assert response.status_code == 401
        assert error_code(response) == "unauthenticated"
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_bad_tokens_are_401(self, http: httpx.AsyncClient) -> None:
        now = int(time.time())
        claims = {"sub": "user:mallory", "scope": "taskrunner.admin"}
        bad = {
            "garbage": "not-a-jwt",
            "wrong secret": token(
                "taskrunner.admin", secret="another-secret-that-is-long-enough-000000"
            ),
            "expired": jwt.encode({**claims, "exp": now - 3600}, SECRET, algorithm="HS256"),
            "no exp": jwt.encode(claims, SECRET, algorithm="HS256"),
            "no sub": jwt.encode(
                {"scope": "taskrunner.admin", "exp": now + 60}, SECRET, algorithm="HS256"
            ),
            "alg none": jwt.encode({**claims, "exp": now + 60}, None, algorithm="none"),
            "HS512": jwt.encode({**claims, "exp": now + 60}, SECRET + SECRET, algorithm="HS512"),
        }
        for name, value in bad.items():
            response = await http.get(run_url("any"), headers=authorization(value))
            assert response.status_code == 401, name
            assert 'error="invalid_token"' in response.headers["www-authenticate"], name

    async def test_basic_auth_is_not_a_bearer_token(self, http: httpx.AsyncClient) -> None:
        response = await http.get(run_url("any"), headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert response.status_code == 401


class TestScopes:
    async def test_viewer_reads_but_does_not_create(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, ECHO, inputs={"who": "x"})
        assert (await http.get(run_url(created["runId"]), headers=READER)).status_code == 200
        response = await http.post(
            RUNS, json={"manifest": ECHO, "inputs": {"who": "x"}}, headers=READER
        )
        assert response.status_code == 403
        assert "taskrunner.operator" in response.json()["error"]["message"]

    async def test_scp_list_and_admin(self, http: httpx.AsyncClient) -> None:
        scp = authorization(
            jwt.encode(
                {
                    "sub": "svc:bot",
                    "exp": int(time.time()) + 60,
                    "scp": ["taskrunner.operator"],
                    "tenant": "default",
                },
                SECRET,
                algorithm="HS256",
            )
        )
        for headers in (scp, bearer("taskrunner.admin")):
            response = await http.post(
                RUNS, json={"manifest": ECHO, "inputs": {"who": "x"}}, headers=headers
            )
            assert response.status_code == 201, response.text

    async def test_actor_is_the_token_subject(self, http: httpx.AsyncClient) -> None:
        created = await create_run(
            http, ECHO, inputs={"who": "x"}, headers=bearer("taskrunner.operator", sub="svc:ci")
        )
        logs = await http.get(f"{run_url(created['runId'])}/logs", headers=READER)
        assert '"actor":"svc:ci"' in logs.text.splitlines()[0]


class TestTenancy:
    async def test_another_tenants_run_is_not_found(self, http: httpx.AsyncClient) -> None:
        # Each tenant's operator holds a token issued for that tenant alone.
        acme = in_tenant("acme", "taskrunner.operator", grants=["packs.approve"])
        globex = in_tenant(
            "globex", "taskrunner.operator", sub="user:gus", grants=["packs.approve"]
        )
        # Another person of acme starts it: a run's requester may not decide its gate.
        requester = in_tenant("acme", "taskrunner.operator", sub="user:rita")
        created = await create_run(http, GATED, headers=requester)
        run_id = created["runId"]
        assert created["tenant"] == "acme"
        state = await wait_for_run(http, run_id, status_is("awaiting-approval"), headers=acme)

        decision = {"decision": "approved", "planHash": state["planHash"]}
        for method, suffix, body in (
            ("GET", "", None),
            ("GET", "/logs", None),
            ("GET", "/artifacts", None),
            ("POST", "/approvals/release-manager", decision),
            ("POST", "/cancel", None),
        ):
            for headers in (globex, APPROVER):  # another tenant, and the default one
                response = await http.request(
                    method, run_url(run_id) + suffix, json=body, headers=headers
                )
                assert response.status_code == 404, (
                    method,
                    suffix,
                    headers.get("X-StellaOps-Tenant"),
                )
                assert error_code(response) == "run_not_found"

        # The same run id is free in another tenant.
        other = await create_run(http, ECHO, inputs={"who": "x"}, run_id=run_id, headers=globex)
        assert other["tenant"] == "globex"
        # Decided by another acme operator than the run's requester (allowRequester: false).
        acme_approver = in_tenant(
            "acme", "taskrunner.operator", sub="user:amy", grants=["packs.approve"]
        )
        response = await http.post(
            run_url(run_id) + "/approvals/release-manager", json=decision, headers=acme_approver
        )
        assert response.status_code == 200
        await wait_for_run(http, run_id, status_is("succeeded"), headers=acme)

    async def test_invalid_tenant_is_400(self, http: httpx.AsyncClient) -> None:
        for tenant in ("../etc", "a b", "-leading", "x" * 64):
            response = await http.get(
                run_url("any"), headers={"X-StellaOps-Tenant": tenant, **READER}
            )
            assert response.status_code == 400, tenant
            assert error_code(response) == "invalid_tenant"
