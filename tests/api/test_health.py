"""Liveness, readiness, metrics; and the API with Temporal out of reach."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.settings import ApiSettings
from tests.api.packs import ECHO, GATED
from tests.api.support import (
    APPROVER,
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
from tests.api.test_reads_live import api, settings_for
from tests.helpers import unique, worker_for


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

    async def test_readyz_when_temporal_answers(self, http: httpx.AsyncClient, stack: Any) -> None:
        response = await http.get("/readyz")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready" and "warnings" not in body
        # The stack's worker polls the runs' task queue; nothing waits for it.
        queue = body["taskQueue"]
        assert queue["name"] == stack.settings.task_queue
        for kind in ("workflowTasks", "activityTasks"):
            assert queue[kind]["pollers"] >= 1, body
            assert queue[kind]["backlog"] >= 0

    async def test_readyz_reports_a_backlog_no_worker_takes(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        # An API whose task queue no worker polls: the runs it starts pile up there.
        settings = settings_for(dev_env, tmp_path)
        async with api(settings) as http:
            for _ in range(3):
                await create_run(http, ECHO, inputs={"who": "x"})
            body: dict[str, Any] = {}
            for _ in range(50):  # the server's stats are approximate, and catch up quickly
                response = await http.get("/readyz")
                assert response.status_code == 200, response.text
                body = response.json()
                if body["taskQueue"]["workflowTasks"]["backlog"] >= 3:
                    break
                await asyncio.sleep(0.2)
        queue = body["taskQueue"]
        assert queue["name"] == settings.task_queue
        assert queue["workflowTasks"]["backlog"] == 3, body
        assert queue["workflowTasks"]["pollers"] == 0
        assert queue["activityTasks"]["pollers"] == 0
        assert body["warnings"] == [
            f"no worker polls task queue {settings.task_queue!r} for workflow tasks: "
            "runs do not move",
            f"no worker polls task queue {settings.task_queue!r} for activity tasks: "
            "runs do not move",
        ]

    async def test_metrics_count_runs_in_flight_by_status_and_approval_waits(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        # An API and a worker of their own queue: the counts are this queue's runs alone.
        settings = settings_for(dev_env, tmp_path)
        async with worker_for(dev_env.client, tmp_path, settings.task_queue), api(settings) as http:
            gated = [(await create_run(http, GATED))["runId"] for _ in range(2)]
            done = (await create_run(http, ECHO, inputs={"who": "x"}))["runId"]
            states = [await wait_for_run(http, r, status_is("awaiting-approval")) for r in gated]
            await wait_for_run(http, done, status_is("succeeded"))
            text = await metrics_when(http, lambda t: in_flight(t, "awaiting-approval") == 2)
            assert in_flight(text, "running") == 0 and in_flight(text, "pending") == 0
            assert "taskrunner_approval_wait_seconds_count" not in text  # no decision yet

            decided = await http.post(
                f"{run_url(gated[0])}/approvals/release-manager",
                json={"decision": "approved", "planHash": states[0]["planHash"]},
                headers=APPROVER,
            )
            assert decided.status_code == 200, decided.text
            await wait_for_run(http, gated[0], status_is("succeeded"))
            text = await metrics_when(http, lambda t: in_flight(t, "awaiting-approval") == 1)
        assert 'taskrunner_approval_wait_seconds_count{decision="approved"} 1.0' in text
        # It waited seconds, not minutes: in the first bucket, which is 10 s.
        assert 'taskrunner_approval_wait_seconds_bucket{decision="approved",le="10.0"} 1.0' in text

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

    async def test_anonymous_callers_cannot_grow_the_metrics(self, http: httpx.AsyncClient) -> None:
        """HTTP lets a request name any method: each made-up one was a series of its own in the
        latency histogram, so anyone could grow /metrics (and the API's memory) without end."""
        methods = [f"X{unique('m').replace('-', '').upper()}" for _ in range(20)]
        for method in methods:
            answer = await http.request(method, "/healthz")
            assert answer.status_code == 405
        text = (await http.get("/metrics")).text
        assert not any(method in text for method in methods)
        assert 'method="other",route="/healthz",status="405"' in text


class TestWithoutTemporal:
    async def test_live_but_not_ready(self, unreachable: httpx.AsyncClient) -> None:
        assert (await unreachable.get("/healthz")).status_code == 200
        response = await unreachable.get("/readyz")
        assert response.status_code == 503
        assert error_code(response) == "temporal_unavailable"
        # /readyz needs no token: it says what is out of reach, not where it lives (the API's
        # log has the address and the error).
        assert "Temporal" in response.text
        assert "127.0.0.1" not in response.text, response.text

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


def in_flight(text: str, status: str) -> float:
    """`taskrunner_runs_in_flight{status=...}` in a scrape, or -1 when the series is absent."""
    found = re.search(rf'^taskrunner_runs_in_flight{{status="{status}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else -1.0


async def metrics_when(http: httpx.AsyncClient, ready: Callable[[str], bool]) -> str:
    """A scrape once `ready` holds of it (visibility catches up with a run in a moment)."""
    text = ""
    for _ in range(50):
        response = await http.get("/metrics")
        assert response.status_code == 200, response.text
        text = response.text
        if ready(text):
            return text
        await asyncio.sleep(0.2)
    raise AssertionError(f"the metrics never showed what was wanted:\n{text}")


async def test_callers_without_a_token_cannot_multiply_temporal_queries(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz and /metrics need no token, and each asked Temporal anew (two DescribeTaskQueue,
    three visibility counts): anyone could turn a flood of cheap GETs into as many queries on
    Temporal's visibility store. Concurrent and close callers share one answer."""
    from temporalio.service import WorkflowService

    queue = unique("probe-tq")
    asked: list[str] = []
    for name in ("describe_task_queue", "count_workflow_executions"):
        original = getattr(WorkflowService, name)

        def counting(self: Any, req: Any, *args: Any, _o: Any = original, **kw: Any) -> Any:
            if queue in str(req):
                asked.append(type(req).__name__)
            return _o(self, req, *args, **kw)

        monkeypatch.setattr(WorkflowService, name, counting)
    app = create_app(stack.settings.model_copy(update={"task_queue": queue}))
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answers = await asyncio.gather(
                *(http.get(path) for path in ("/readyz", "/metrics") * 30)
            )
    assert {a.status_code for a in answers} == {200}
    assert all(a.json()["taskQueue"]["name"] == queue for a in answers[::2])
    assert 'taskrunner_runs_in_flight{status="pending"} 0.0' in answers[1].text
    # One describe of each kind and one count per status, twice at most (a second round when
    # the figures' few seconds ran out mid-test): not 60 callers' worth.
    assert asked.count("DescribeTaskQueueRequest") <= 4, asked
    assert asked.count("CountWorkflowExecutionsRequest") <= 6, asked
