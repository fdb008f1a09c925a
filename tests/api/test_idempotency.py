"""Idempotency-Key on POST /runs, approvals, cancel and webhooks: a retry gets the first answer
again (Idempotent-Replay: true) and does nothing; another request under the key is a 409."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from api.idempotency import fingerprint
from cli.settings import DevSettings
from tests.api.packs import ECHO, GATED, SLOW
from tests.api.support import (
    APPROVER,
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
from workflows.contract.ledger import (
    LEDGER_WORKFLOW_TYPE,
    UPDATE_REMEMBER,
    IdempotencyRecord,
    LedgerInput,
    ledger_workflow_id,
)
from workflows.run_book import iso

REPLAY = "idempotent-replay"
APPROVER_ROLE = ("taskrunner.operator",)


def keyed(key: str, headers: dict[str, str] = APPROVER, **more: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **headers, **more}


def same_answer(first: httpx.Response, second: httpx.Response) -> None:
    assert REPLAY not in first.headers
    assert second.headers[REPLAY] == "true"
    assert second.status_code == first.status_code
    assert second.content == first.content
    for header in ("location", "content-type"):
        assert second.headers.get(header) == first.headers.get(header), header


class TestCreateRun:
    async def test_a_retry_replays_the_first_answer_and_starts_nothing(
        self, http: httpx.AsyncClient
    ) -> None:
        key = unique("key")
        body = {"manifest": ECHO, "inputs": {"who": "x"}}  # no runId: each create makes one up
        first = await http.post(RUNS, json=body, headers=keyed(key))
        assert first.status_code == 201, first.text
        second = await http.post(RUNS, json=body, headers=keyed(key))
        same_answer(first, second)
        # Key order and spacing are not part of the request.
        reordered = await http.post(
            RUNS,
            content='{"inputs": {"who": "x"},  "manifest": ' + json.dumps(ECHO) + "}",
            headers=keyed(key, **{"Content-Type": "application/json"}),
        )
        same_answer(first, reordered)
        await wait_for_run(http, first.json()["runId"], status_is("succeeded"))

    async def test_same_key_another_request_is_409(self, http: httpx.AsyncClient) -> None:
        key = unique("key")
        first = await http.post(
            RUNS, json={"manifest": ECHO, "inputs": {"who": "x"}}, headers=keyed(key)
        )
        assert first.status_code == 201
        other = await http.post(
            RUNS, json={"manifest": ECHO, "inputs": {"who": "y"}}, headers=keyed(key)
        )
        assert other.status_code == 409
        assert error_code(other) == "idempotency_conflict"
        # Another caller's identical request is another request too.
        carol = bearer("taskrunner.operator", sub="user:carol")
        theirs = await http.post(
            RUNS, json={"manifest": ECHO, "inputs": {"who": "x"}}, headers=keyed(key, carol)
        )
        assert theirs.status_code == 409

    async def test_keys_are_scoped_by_tenant(self, http: httpx.AsyncClient) -> None:
        key = unique("key")
        body = {"manifest": ECHO, "inputs": {"who": "x"}}
        ids = set()
        for tenant in (unique("acme"), unique("globex")):
            response = await http.post(
                RUNS,
                json=body,
                headers=keyed(key, in_tenant(tenant, *APPROVER_ROLE, grants=["packs.approve"])),
            )
            assert response.status_code == 201 and REPLAY not in response.headers
            ids.add(response.json()["runId"])
        assert len(ids) == 2

    async def test_a_final_refusal_is_replayed_too(self, http: httpx.AsyncClient) -> None:
        existing = await create_run(http, ECHO, inputs={"who": "x"})
        key = unique("key")
        body = {"runId": existing["runId"], "manifest": ECHO, "inputs": {"who": "x"}}
        first = await http.post(RUNS, json=body, headers=keyed(key))
        assert (first.status_code, error_code(first)) == (409, "run_exists")
        same_answer(first, await http.post(RUNS, json=body, headers=keyed(key)))
        invalid = {"manifest": ECHO.replace("TaskPack", "Pack")}
        key = unique("key")
        first = await http.post(RUNS, json=invalid, headers=keyed(key))
        assert first.status_code == 400
        same_answer(first, await http.post(RUNS, json=invalid, headers=keyed(key)))

    async def test_auth_failures_are_not_recorded(self, http: httpx.AsyncClient) -> None:
        key = unique("key")
        body = {"manifest": ECHO, "inputs": {"who": "x"}}
        viewer = await http.post(RUNS, json=body, headers=keyed(key, bearer("taskrunner.viewer")))
        assert viewer.status_code == 403
        operator = await http.post(RUNS, json=body, headers=keyed(key))
        assert operator.status_code == 201 and REPLAY not in operator.headers

    async def test_bad_keys_are_400(self, http: httpx.AsyncClient) -> None:
        body = {"manifest": ECHO, "inputs": {"who": "x"}}
        for key in ("has space", "x" * 256, ""):
            response = await http.post(RUNS, json=body, headers=keyed(key))
            assert response.status_code == 400, key
            assert "Idempotency-Key" in response.json()["error"]["message"]

    async def test_a_body_too_deep_to_parse_is_refused_as_without_a_key(
        self, http: httpx.AsyncClient
    ) -> None:
        deep = '{"manifest": "x", "inputs": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
        headers = {"Content-Type": "application/json"}
        plain = await http.post(RUNS, content=deep, headers={**APPROVER, **headers})
        keyed_ = await http.post(RUNS, content=deep, headers=keyed(unique("key"), **headers))
        assert plain.status_code == keyed_.status_code == 400, keyed_.text[:300]

    async def test_a_key_in_use_is_409_in_progress(
        self, http: httpx.AsyncClient, dev_env: WorkflowEnvironment, api_settings: DevSettings
    ) -> None:
        # Plant what a request still being served leaves in the ledger: its claim.
        tenant, key = unique("busy"), unique("key")
        body = b'{"manifest": "x"}'
        now = datetime.now(UTC)
        claim = IdempotencyRecord(
            key=key,
            fingerprint=fingerprint("POST", RUNS, tenant, "user:alice", body),
            expiresAt=iso(now + timedelta(hours=24)),
            holder="another-request",
            lockedUntil=iso(now + timedelta(minutes=5)),
        )
        await dev_env.client.execute_update_with_start_workflow(
            UPDATE_REMEMBER,
            claim,
            start_workflow_operation=WithStartWorkflowOperation(
                LEDGER_WORKFLOW_TYPE,
                LedgerInput(tenant=tenant),
                id=ledger_workflow_id(tenant),
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                task_queue=api_settings.task_queue,
            ),
            result_type=IdempotencyRecord,
        )
        response = await http.post(
            RUNS,
            content=body,
            headers=keyed(
                key,
                in_tenant(tenant, *APPROVER_ROLE, grants=["packs.approve"]),
                **{"Content-Type": "application/json"},
            ),
        )
        assert response.status_code == 409
        assert error_code(response) == "idempotency_in_progress"
        assert response.headers["retry-after"] == "1"


class TestApproveAndCancel:
    async def test_approval_retry_is_replayed_not_refused(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, GATED)
        state = await wait_for_run(http, created["runId"], status_is("awaiting-approval"))
        url = f"{run_url(state['runId'])}/approvals/release-manager"
        body = {"decision": "approved", "planHash": state["planHash"]}
        key = unique("key")
        first = await http.post(url, json=body, headers=keyed(key))
        assert first.status_code == 200, first.text
        # Without the key the second POST would be a 409 (a repeat approver).
        second = await http.post(url, json=body, headers=keyed(key))
        same_answer(first, second)
        unkeyed = await http.post(url, json=body, headers=APPROVER)
        assert unkeyed.status_code == 409
        conflict = await http.post(
            url, json={**body, "summary": "changed my mind"}, headers=keyed(key)
        )
        assert (conflict.status_code, error_code(conflict)) == (409, "idempotency_conflict")
        await wait_for_run(http, state["runId"], status_is("succeeded"))

    async def test_cancel_retry_is_replayed(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, SLOW)
        url = f"{run_url(created['runId'])}/cancel"
        key = unique("key")
        first = await http.post(url, headers=keyed(key))
        assert first.status_code == 202
        same_answer(first, await http.post(url, headers=keyed(key)))
        other = await http.post(f"{run_url(unique('run'))}/cancel", headers=keyed(key))
        assert (other.status_code, error_code(other)) == (409, "idempotency_conflict")
        await wait_for_run(http, created["runId"], status_is("cancelled"))

    async def test_a_not_found_is_not_recorded(self, http: httpx.AsyncClient) -> None:
        key = unique("key")
        url = f"{run_url(unique('run'))}/cancel"
        for _ in range(2):
            response = await http.post(url, headers=keyed(key))
            assert response.status_code == 404 and REPLAY not in response.headers


class TestRegisterWebhook:
    async def test_registration_retry_registers_once(self, http: httpx.AsyncClient) -> None:
        admin = in_tenant(unique("hooks"), "taskrunner.admin")
        body: dict[str, Any] = {
            "url": "https://hooks.example.com/x",
            "events": ["run.completed"],
            "secret": "s" * 20,
        }
        key = unique("key")
        first = await http.post("/v1/task-runner/webhooks", json=body, headers=keyed(key, admin))
        assert first.status_code == 201
        same_answer(
            first, await http.post("/v1/task-runner/webhooks", json=body, headers=keyed(key, admin))
        )
        listed = await http.get("/v1/task-runner/webhooks", headers=admin)
        assert [w["id"] for w in listed.json()["webhooks"]] == [first.json()["id"]]
