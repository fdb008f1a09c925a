"""POST /runs/{runId}/approvals/{approvalId}: decisions on approval gates, through REST alone."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.api.packs import GATED, replaced
from tests.api.support import (
    APPROVER,
    READER,
    bearer,
    create_run,
    error_code,
    run_url,
    status_is,
    wait_for_run,
)

QUORUM = replaced(GATED, "requiredApprovals: 1", "requiredApprovals: 2")
LATE_GATE = replaced(
    GATED,
    "uses: builtin:echo\n        with: {artifact: app-1.0.0.tar.gz}",
    "uses: builtin:sleep\n        with: {seconds: 60}",
)
SLOW_AFTER_GATE = replaced(
    GATED,
    'uses: builtin:echo\n        with: {released: "{{ steps.build.outputs.artifact }}"}',
    "uses: builtin:sleep\n        with: {seconds: 60}",
)
GATE = "release-manager"


def decide_url(run_id: str, approval_id: str = GATE) -> str:
    return f"{run_url(run_id)}/approvals/{approval_id}"


async def waiting_run(http: httpx.AsyncClient, manifest: str = GATED) -> dict[str, Any]:
    created = await create_run(http, manifest)
    return await wait_for_run(http, created["runId"], status_is("awaiting-approval"))


class TestApplyApprovalDecision:
    async def test_approval_flow_through_rest_alone(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        run_id = state["runId"]
        gate = next(s for s in state["steps"] if s["kind"] == "GateApproval")
        assert (gate["status"], gate["statusReason"]) == ("Pending", "awaiting-approval")
        approval = state["approvals"][0]
        assert (approval["approvalId"], approval["status"], approval["grants"]) == (
            GATE,
            "pending",
            ["packs.approve"],
        )

        body = {"decision": "approved", "planHash": state["planHash"], "summary": "ship it"}
        response = await http.post(decide_url(run_id), json=body, headers=APPROVER)
        assert response.status_code == 200, response.text
        assert {"status": "approved", "resumed": True}.items() <= response.json().items()

        done = await wait_for_run(http, run_id, status_is("succeeded"))
        assert [s["status"] for s in done["steps"]] == ["Succeeded", "Succeeded", "Succeeded"]
        decision = done["approvals"][0]["decisions"][0]
        assert (decision["actorId"], decision["decision"], decision["summary"]) == (
            "user:alice",
            "approved",
            "ship it",
        )
        logs = await http.get(f"{run_url(run_id)}/logs", headers=READER)
        events = [json.loads(line)["eventType"] for line in logs.text.splitlines()]
        assert (
            events.index("gate.awaiting")
            < events.index("gate.approved")
            < events.index("run.completed")
        )

    async def test_rejection_fails_the_gate(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        body = {
            "decision": "rejected",
            "planHash": state["planHash"],
            "actorId": "user:bob@example.com",
        }
        bob = bearer("taskrunner.operator", sub="user:bob@example.com", grants=["packs.approve"])
        response = await http.post(decide_url(state["runId"]), json=body, headers=bob)
        assert response.status_code == 200, response.text
        assert {"status": "rejected", "resumed": False}.items() <= response.json().items()
        done = await wait_for_run(http, state["runId"], status_is("failed"))
        gate = next(s for s in done["steps"] if s["kind"] == "GateApproval")
        assert (gate["status"], gate["statusReason"]) == ("Failed", "approval-rejected")
        assert done["approvals"][0]["decisions"][0]["actorId"] == "user:bob@example.com"

    async def test_quorum_counts_distinct_approvers(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http, QUORUM)
        body = {"decision": "approved", "planHash": state["planHash"]}
        first = await http.post(decide_url(state["runId"]), json=body, headers=APPROVER)
        assert first.json() == {
            "status": "approved",
            "resumed": False,
            "approvals": 1,
            "requiredApprovals": 2,
            "missing": ["1 more approver"],
        }
        again = await http.post(decide_url(state["runId"]), json=body, headers=APPROVER)
        assert again.status_code == 409
        assert error_code(again) == "duplicate_approver"
        carol = bearer("taskrunner.operator", sub="user:carol", grants="packs.approve")
        second = await http.post(decide_url(state["runId"]), json=body, headers=carol)
        assert second.json()["resumed"] is True
        await wait_for_run(http, state["runId"], status_is("succeeded"))

    async def test_without_the_gates_grants_is_403(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        body = {"decision": "approved", "planHash": state["planHash"]}
        for headers in (
            bearer("taskrunner.operator"),
            bearer("taskrunner.admin", grants=["other"]),
        ):
            response = await http.post(decide_url(state["runId"]), json=body, headers=headers)
            assert response.status_code == 403
            assert "packs.approve" in response.json()["error"]["message"]
        # A grant may also come as a scope.
        scoped = bearer("taskrunner.operator", "packs.approve")
        assert (
            await http.post(decide_url(state["runId"]), json=body, headers=scoped)
        ).status_code == 200

    async def test_only_an_admin_may_decide_for_someone_else(self, http: httpx.AsyncClient) -> None:
        # Else one operator could fill a quorum alone, under made-up names.
        state = await waiting_run(http, QUORUM)
        body = {"decision": "approved", "planHash": state["planHash"], "actorId": "user:mallory"}
        response = await http.post(decide_url(state["runId"]), json=body, headers=APPROVER)
        assert response.status_code == 403
        assert "taskrunner.admin" in response.json()["error"]["message"]
        relay = bearer("taskrunner.admin", sub="svc:chatbot", grants=["packs.approve"])
        response = await http.post(
            decide_url(state["runId"]), json={**body, "actorId": "user:carol"}, headers=relay
        )
        assert response.status_code == 200, response.text
        done = await wait_for_run(
            http, state["runId"], lambda s: s["approvals"][0]["decisions"] != []
        )
        assert done["approvals"][0]["decisions"][0]["actorId"] == "user:carol"

    async def test_viewer_cannot_decide(self, http: httpx.AsyncClient) -> None:
        body = {"decision": "approved", "planHash": "sha256:" + "0" * 64}
        response = await http.post(
            decide_url("any-run"),
            json=body,
            headers=bearer("taskrunner.viewer", grants=["packs.approve"]),
        )
        assert response.status_code == 403

    async def test_invalid_decision_or_plan_hash_is_400(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        url = decide_url(state["runId"])
        for body, field in (
            ({"decision": "maybe", "planHash": state["planHash"]}, "decision"),
            ({"decision": "approved", "planHash": "md5:abc"}, "planHash"),
            ({"decision": "approved"}, "planHash"),
            ({"decision": "approved", "planHash": state["planHash"], "approver": "x"}, "approver"),
        ):
            response = await http.post(url, json=body, headers=APPROVER)
            assert response.status_code == 400, body
            assert error_code(response) == "invalid_request"
            assert field in response.json()["error"]["message"]

    async def test_unknown_run_or_approval_is_404(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        body = {"decision": "approved", "planHash": state["planHash"]}
        response = await http.post(decide_url("no-such-run"), json=body, headers=APPROVER)
        assert response.status_code == 404
        assert error_code(response) == "run_not_found"
        response = await http.post(
            decide_url(state["runId"], "no-such-gate"), json=body, headers=APPROVER
        )
        assert response.status_code == 404
        assert error_code(response) == "approval_not_found"

    async def test_stale_plan_hash_is_409(self, http: httpx.AsyncClient) -> None:
        state = await waiting_run(http)
        body = {"decision": "approved", "planHash": "sha256:" + "0" * 64}
        response = await http.post(decide_url(state["runId"]), json=body, headers=APPROVER)
        assert response.status_code == 409
        assert error_code(response) == "plan_hash_mismatch"
        still = await wait_for_run(http, state["runId"], status_is("awaiting-approval"))
        assert still["approvals"][0]["decisions"] == []

    async def test_decided_gate_is_409_and_so_is_a_finished_run(
        self, http: httpx.AsyncClient
    ) -> None:
        state = await waiting_run(http, SLOW_AFTER_GATE)
        run_id = state["runId"]
        body = {"decision": "approved", "planHash": state["planHash"]}
        assert (await http.post(decide_url(run_id), json=body, headers=APPROVER)).status_code == 200
        dan = bearer("taskrunner.operator", sub="user:dan", grants=["packs.approve"])
        response = await http.post(decide_url(run_id), json=body, headers=dan)
        assert response.status_code == 409
        assert error_code(response) == "approval_already_decided"
        assert (await http.post(f"{run_url(run_id)}/cancel", headers=APPROVER)).status_code == 202
        await wait_for_run(http, run_id, status_is("cancelled"))
        response = await http.post(decide_url(run_id), json=body, headers=dan)
        assert response.status_code == 409
        assert error_code(response) == "run_finished"

    async def test_gate_not_reached_yet_is_409(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, LATE_GATE)
        run_id = created["runId"]
        body = {"decision": "approved", "planHash": created["planHash"]}
        response = await http.post(decide_url(run_id), json=body, headers=APPROVER)
        assert response.status_code == 409
        assert error_code(response) == "approval_not_pending"
        assert (await http.post(f"{run_url(run_id)}/cancel", headers=APPROVER)).status_code == 202
        await wait_for_run(http, run_id, status_is("cancelled"))
