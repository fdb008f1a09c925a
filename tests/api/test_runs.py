"""Runs: POST /runs (create), GET /runs/{runId} (state), POST /runs/{runId}/cancel."""

from __future__ import annotations

import re

import httpx

from tests.api.packs import ECHO, MAP, SLOW, contract_example
from tests.api.support import (
    APPROVER,
    READER,
    RUNS,
    bearer,
    create_run,
    error_code,
    in_tenant,
    run_url,
    status_is,
    wait_for_run,
)
from tests.helpers import unique

OPERATOR_ONLY = bearer("taskrunner.operator")


class TestCreateRun:
    async def test_created_with_location_and_state(self, http: httpx.AsyncClient) -> None:
        run_id = unique("run")
        response = await http.post(
            RUNS,
            json={"runId": run_id, "manifest": ECHO, "inputs": {"who": "ada"}},
            headers=OPERATOR_ONLY,
        )
        assert response.status_code == 201, response.text
        assert response.headers["location"] == f"{RUNS}/{run_id}"
        state = response.json()
        assert state["runId"] == run_id
        assert re.fullmatch(r"sha256:[a-f0-9]{64}", state["planHash"])
        assert state["failurePolicy"] == {
            "maxAttempts": 1,
            "backoffSeconds": 0,
            "continueOnError": False,
        }
        assert state["status"] in {"pending", "running", "succeeded"}
        assert state["tenant"] == "default"
        assert [s["stepId"] for s in state["steps"]] == ["hello", "done"]
        for step in state["steps"]:
            assert {"stepId", "kind", "enabled", "continueOnError", "status", "attempts"} <= set(
                step
            )
        assert state["createdAt"].endswith("Z") and state["updatedAt"].endswith("Z")
        done = await wait_for_run(http, run_id, status_is("succeeded"))
        assert [s["status"] for s in done["steps"]] == ["Succeeded", "Succeeded"]

    async def test_run_id_is_generated_when_absent(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            RUNS, json={"manifest": ECHO, "inputs": {"who": "x"}}, headers=OPERATOR_ONLY
        )
        assert response.status_code == 201, response.text
        run_id = response.json()["runId"]
        assert re.fullmatch(r"run-\d{8}-[0-9a-f]{8}", run_id)
        assert response.headers["location"].endswith(f"/runs/{run_id}")

    async def test_contract_example_is_refused_without_its_executors(
        self, http: httpx.AsyncClient
    ) -> None:
        body = contract_example(RUNS, "create-run")
        prod = bearer("taskrunner.operator", tenant="tenant-prod")
        response = await http.post(RUNS, json=body, headers=prod)
        assert response.status_code == 400, response.text
        paths = [e["path"] for e in response.json()["errors"]]
        assert "spec.steps[0].run.uses" in paths  # builtin:build, before anything runs

    async def test_contract_example_fails_at_an_executor_the_worker_lacks(
        self, http: httpx.AsyncClient, contract_http: httpx.AsyncClient
    ) -> None:
        # The API's catalog names builtin:build but this worker has no such executor: the run
        # is created, and fails at that step saying why. Its tenant comes from the body.
        body = contract_example(RUNS, "create-run")
        prod = bearer("taskrunner.operator", tenant="tenant-prod")
        response = await contract_http.post(RUNS, json=body, headers=prod)
        assert response.status_code == 201, response.text
        assert response.json()["tenant"] == "tenant-prod"
        tenant = in_tenant("tenant-prod", "taskrunner.viewer")
        state = await wait_for_run(http, body["runId"], status_is("failed"), headers=tenant)
        steps = {s["stepId"]: s for s in state["steps"]}
        assert steps["build"]["status"] == "Failed"
        assert steps["approval"]["status"] == "Skipped"
        assert steps["deploy"]["status"] == "Skipped"
        logs = await http.get(f"{RUNS}/{body['runId']}/logs", headers=tenant)
        failed = [line for line in logs.text.splitlines() if '"step.failed"' in line]
        assert failed and "builtin:build" in failed[0], logs.text

    async def test_invalid_manifest_is_400_plan_errors(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            RUNS, json={"manifest": ECHO.replace("TaskPack", "Pack")}, headers=OPERATOR_ONLY
        )
        assert response.status_code == 400
        paths = [e["path"] for e in response.json()["errors"]]
        assert "kind" in paths

    async def test_bad_run_id_is_400(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            RUNS,
            json={"runId": "no spaces/or slashes", "manifest": ECHO, "inputs": {"who": "x"}},
            headers=OPERATOR_ONLY,
        )
        assert response.status_code == 400
        assert error_code(response) == "invalid_request"
        assert "runId" in response.json()["error"]["message"]

    async def test_existing_run_id_is_409(self, http: httpx.AsyncClient) -> None:
        run_id = unique("run")
        await create_run(http, ECHO, inputs={"who": "x"}, run_id=run_id)
        await wait_for_run(http, run_id, status_is("succeeded"))
        again = await http.post(
            RUNS,
            json={"runId": run_id, "manifest": ECHO, "inputs": {"who": "y"}},
            headers=OPERATOR_ONLY,
        )
        assert again.status_code == 409
        assert error_code(again) == "run_exists"

    async def test_body_tenant_must_match_header(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            RUNS,
            json={"manifest": ECHO, "inputs": {"who": "x"}, "tenantId": "acme"},
            headers=in_tenant(
                "globex", "taskrunner.operator", tenant=None, tenants=["acme", "globex"]
            ),
        )
        assert response.status_code == 400
        assert error_code(response) == "invalid_tenant"

    async def test_viewer_cannot_create(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            RUNS, json={"manifest": ECHO, "inputs": {"who": "x"}}, headers=READER
        )
        assert response.status_code == 403
        assert error_code(response) == "insufficient_scope"


class TestGetRunState:
    async def test_state_of_a_run(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, ECHO, inputs={"who": "ada"})
        state = await wait_for_run(http, created["runId"], status_is("succeeded"))
        assert state["runId"] == created["runId"]
        assert state["planHash"] == created["planHash"]
        assert state["pack"] == "api-echo" and state["packVersion"] == "1.0.0"
        hello = state["steps"][0]
        assert hello["attempts"] == 1 and hello["lastTransitionAt"].endswith("Z")

    async def test_steps_come_a_page_at_a_time(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, MAP, inputs={"items": list(range(30))})
        run_id = created["runId"]
        await wait_for_run(http, run_id, status_is("succeeded"))
        steps: list[str] = []
        while True:
            page = await http.get(
                run_url(run_id), params={"stepsOffset": len(steps), "stepsLimit": 8}, headers=READER
            )
            body = page.json()
            assert body["totalSteps"] == 31 and len(body["steps"]) <= 8
            steps += [s["stepId"] for s in body["steps"]]
            if len(steps) >= body["totalSteps"]:
                break
        assert steps == ["each"] + [f"each[{i}]::one" for i in range(30)]
        for limit in (0, 2001):
            response = await http.get(run_url(run_id), params={"stepsLimit": limit}, headers=READER)
            assert response.status_code == 400
            assert "stepsLimit" in response.json()["error"]["message"]

    async def test_unknown_run_is_404(self, http: httpx.AsyncClient) -> None:
        response = await http.get(run_url("no-such-run"), headers=READER)
        assert response.status_code == 404
        assert error_code(response) == "run_not_found"


class TestCancelRun:
    async def test_cancel_is_accepted_and_the_run_ends_cancelled(
        self, http: httpx.AsyncClient
    ) -> None:
        created = await create_run(http, SLOW)
        run_id = created["runId"]
        await wait_for_run(http, run_id, lambda s: s["steps"][0]["status"] == "Running")
        response = await http.post(f"{run_url(run_id)}/cancel", headers=OPERATOR_ONLY)
        assert response.status_code == 202, response.text
        assert response.json() == {"status": "cancelled"}
        assert response.headers["location"] == run_url(run_id)
        state = await wait_for_run(http, run_id, status_is("cancelled"))
        after = state["steps"][1]
        assert (after["status"], after["statusReason"]) == ("Skipped", "cancelled")
        logs = await http.get(f"{run_url(run_id)}/logs", headers=READER)
        events = [line for line in logs.text.splitlines() if "run.cancel" in line]
        assert '"run.cancel-requested"' in events[0] and '"run.cancelled"' in events[-1]
        assert '"actor":"user:alice"' in events[0]

    async def test_unknown_run_is_404(self, http: httpx.AsyncClient) -> None:
        response = await http.post(f"{run_url('no-such-run')}/cancel", headers=OPERATOR_ONLY)
        assert response.status_code == 404
        assert error_code(response) == "run_not_found"

    async def test_finished_run_is_409(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, ECHO, inputs={"who": "x"})
        await wait_for_run(http, created["runId"], status_is("succeeded"))
        response = await http.post(f"{run_url(created['runId'])}/cancel", headers=APPROVER)
        assert response.status_code == 409
        assert error_code(response) == "run_finished"

    async def test_viewer_cannot_cancel(self, http: httpx.AsyncClient) -> None:
        response = await http.post(f"{run_url('whatever')}/cancel", headers=READER)
        assert response.status_code == 403


class TestStepOutputs:
    async def test_outputs_only_on_request(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, ECHO, inputs={"who": "ada"})
        await wait_for_run(http, created["runId"], status_is("succeeded"))
        plain = (await http.get(run_url(created["runId"]), headers=READER)).json()
        assert all("outputs" not in s for s in plain["steps"])
        response = await http.get(
            run_url(created["runId"]), params={"include": "outputs"}, headers=READER
        )
        assert response.status_code == 200, response.text
        steps = {s["stepId"]: s for s in response.json()["steps"]}
        assert steps["hello"]["outputs"] == {"greeting": "hello ada"}

    async def test_unknown_include_is_400(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, ECHO, inputs={"who": "ada"})
        response = await http.get(
            run_url(created["runId"]), params={"include": "secrets"}, headers=READER
        )
        assert response.status_code == 400
