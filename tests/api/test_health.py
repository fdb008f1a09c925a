"""Liveness, readiness, metrics; and the API with Temporal out of reach."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.settings import ApiSettings
from tests.api.packs import ECHO
from tests.api.support import (
    RUNS,
    bearer,
    create_run,
    error_code,
    in_tenant,
    run_url,
    serve,
    status_is,
    wait_for_run,
)
from tests.helpers import unique


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def unreachable_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API whose Temporal is not there, with auth off, and a route that fails unexpectedly."""
    settings = ApiSettings(
        temporal_address=f"127.0.0.1:{closed_port()}",
        data_dir=tmp_path_factory.mktemp("unreachable"),
        auth_enabled=False,
    )
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    with serve(app) as url:
        yield url


@pytest.fixture
async def unreachable(unreachable_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=unreachable_url, timeout=30) as client:
        yield client


class TestHealth:
    async def test_healthz(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/healthz")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})

    async def test_readyz_when_temporal_answers(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/readyz")
        assert (response.status_code, response.json()) == (200, {"status": "ready"})

    async def test_metrics_count_runs_and_requests(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, ECHO, inputs={"who": "x"})
        await wait_for_run(http, created["runId"], status_is("succeeded"))
        response = await http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        # No tenant names unless the operator opts in (TestTenantLabelledMetrics).
        assert "taskrunner_runs_started_total " in text and "tenant=" not in text
        assert 'taskrunner_runs_finished_total{status="succeeded"}' in text
        assert "# TYPE taskrunner_approvals_decided_total counter" in text
        assert (
            'taskrunner_http_request_duration_seconds_count{method="POST",'
            'route="/v1/task-runner/runs",status="201"}'
        ) in text


class TestWithoutTemporal:
    async def test_live_but_not_ready(self, unreachable: httpx.AsyncClient) -> None:
        assert (await unreachable.get("/healthz")).status_code == 200
        response = await unreachable.get("/readyz")
        assert response.status_code == 503
        assert error_code(response) == "temporal_unavailable"

    async def test_run_operations_are_503(self, unreachable: httpx.AsyncClient) -> None:
        # Auth is off here, so no token is needed; Temporal is what is missing.
        response = await unreachable.get(run_url("any"))
        assert response.status_code == 503
        assert error_code(response) == "temporal_unavailable"
        response = await unreachable.post(RUNS, json={"manifest": ECHO, "inputs": {"who": "x"}})
        assert response.status_code == 503

    async def test_simulation_needs_no_temporal(self, unreachable: httpx.AsyncClient) -> None:
        response = await unreachable.post(
            "/v1/task-runner/simulations", json={"manifest": ECHO, "inputs": {"who": "x"}}
        )
        assert response.status_code == 200

    async def test_unexpected_failure_is_500_without_internals(
        self, unreachable: httpx.AsyncClient
    ) -> None:
        response = await unreachable.get("/boom")
        assert response.status_code == 500
        assert error_code(response) == "internal_error"
        assert "secret" not in response.text and "Traceback" not in response.text


class TestTenantLabelledMetrics:
    async def test_opted_in_metrics_name_tenants_and_need_a_token(
        self, stack: Any, api_settings: Any
    ) -> None:
        settings = api_settings.model_copy(update={"metrics_tenant_labels": True})
        with serve(create_app(settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                tenant = unique("metrics")
                headers = in_tenant(tenant, "taskrunner.operator")
                response = await http.post(
                    RUNS, json={"manifest": ECHO, "inputs": {"who": "x"}}, headers=headers
                )
                assert response.status_code == 201, response.text
                assert (await http.get("/metrics")).status_code == 401
                # The document says so: the scraper's scope, or an admin's (a platform admin's,
                # which scopes cannot say).
                document = (await http.get("/openapi.json")).json()
                assert document["paths"]["/metrics"]["get"]["security"] == [
                    {"oauth2": ["taskrunner.metrics"]},
                    {"oauth2": ["taskrunner.admin"]},
                ]
                flow = document["components"]["securitySchemes"]["oauth2"]["flows"]
                assert "taskrunner.metrics" in flow["clientCredentials"]["scopes"]
                # A tenant's own admin may not read every tenant's name.
                for refused in (headers, bearer("taskrunner.admin", tenant=tenant)):
                    response = await http.get("/metrics", headers=refused)
                    assert response.status_code == 403, response.text
                    assert error_code(response) == "insufficient_scope"
                scraper = bearer("taskrunner.metrics", sub="svc:prometheus", tenant=None)
                platform = bearer("taskrunner.admin", sub="svc:platform", tenant="*")
                for allowed in (scraper, platform):
                    response = await http.get("/metrics", headers=allowed)
                    assert response.status_code == 200
                    assert (
                        f'taskrunner_runs_started_total{{tenant="{tenant}"}} 1.0' in response.text
                    )
                # The scraper's token opens nothing else.
                response = await http.get(RUNS, headers=scraper)
                assert response.status_code == 403
