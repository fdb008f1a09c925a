"""Approvals count people, through REST: refusals are a 4xx with a code naming the reason, the
refusal is in the run's log, and the run is untouched. Distinct tokens for distinct people."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.api.packs import GATED, replaced
from tests.api.support import (
    APPROVER,
    OPERATOR,
    READER,
    REQUESTER,
    bearer,
    create_run,
    error_code,
    run_url,
    status_is,
    wait_for_run,
)

GATE = "release-manager"
ON_EXPIRY_APPROVE_2 = replaced(
    replaced(GATED, "requiredApprovals: 1", "requiredApprovals: 2"),
    "onExpiry: reject",
    "onExpiry: approve",
)
SRE_AND_SECURITY = replaced(
    GATED,
    "requiredApprovals: 1",
    "quorum: [{grant: sre.approve}, {grant: security.approve}]",
)
SELF_SERVICE = replaced(GATED, "requiredApprovals: 1", "allowRequester: true")


def url(run_id: str) -> str:
    return f"{run_url(run_id)}/approvals/{GATE}"


def person(sub: str, *grants: str) -> dict[str, str]:
    return bearer(OPERATOR, sub=sub, grants=["packs.approve", *grants])


async def refusals(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"{run_url(run_id)}/logs", headers=READER)
    entries = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    return [e for e in entries if e["eventType"] == "gate.decision-refused"]


async def waiting(http: httpx.AsyncClient, manifest: str) -> dict[str, Any]:
    created = await create_run(http, manifest)
    return await wait_for_run(http, created["runId"], status_is("awaiting-approval"))


class TestExpired:
    async def test_expired_from_a_person_is_409_logged_and_changes_nothing(
        self, http: httpx.AsyncClient
    ) -> None:
        # Issue #10 (a): on a 2-of-2 gate with onExpiry: approve, one operator's `expired` passed
        # the gate with no approver, and the answer said resumed: false.
        state = await waiting(http, ON_EXPIRY_APPROVE_2)
        run_id = state["runId"]
        body = {"decision": "expired", "planHash": state["planHash"]}
        response = await http.post(url(run_id), json=body, headers=APPROVER)
        assert response.status_code == 409, response.text
        assert error_code(response) == "expired_by_person"
        assert response.json()["error"]["traceId"]
        refused = await refusals(http, run_id)
        assert [(e["metadata"]["actorId"], e["metadata"]["via"]) for e in refused] == [
            ("user:alice", "rest")
        ]
        assert refused[0]["metadata"]["error"] == "ExpiredByPerson"
        still = await wait_for_run(http, run_id, status_is("awaiting-approval"))
        assert still["approvals"][0]["decisions"] == []
        assert still["approvals"][0]["missing"] == ["2 more approvers"]

        approve = {"decision": "approved", "planHash": state["planHash"]}
        first = await http.post(url(run_id), json=approve, headers=APPROVER)
        assert first.json()["resumed"] is False
        second = await http.post(url(run_id), json=approve, headers=person("user:bob"))
        assert (second.json()["status"], second.json()["resumed"]) == ("approved", True)
        await wait_for_run(http, run_id, status_is("succeeded"))


class TestRequester:
    async def test_the_requester_is_refused_by_default_and_logged(
        self, http: httpx.AsyncClient
    ) -> None:
        state = await waiting(http, GATED)  # started by user:rita (REQUESTER)
        run_id = state["runId"]
        rita = person("user:rita")
        for decision in ("approved", "rejected"):
            body = {"decision": decision, "planHash": state["planHash"]}
            response = await http.post(url(run_id), json=body, headers=rita)
            assert response.status_code == 403, response.text
            assert error_code(response) == "requester_not_allowed"
        assert [e["metadata"]["error"] for e in await refusals(http, run_id)] == [
            "RequesterNotAllowed",
            "RequesterNotAllowed",
        ]
        still = await wait_for_run(http, run_id, status_is("awaiting-approval"))
        assert still["approvals"][0]["allowRequester"] is False
        assert still["approvals"][0]["decisions"] == []

    async def test_a_pack_may_let_its_requester_decide(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, SELF_SERVICE, headers=APPROVER)
        await wait_for_run(http, created["runId"], status_is("awaiting-approval"))
        body = {"decision": "approved", "planHash": created["planHash"]}
        response = await http.post(url(created["runId"]), json=body, headers=APPROVER)
        assert response.status_code == 200, response.text
        assert response.json()["resumed"] is True


class TestGroupQuorum:
    async def test_one_holder_of_each_grant_each_a_distinct_person(
        self, http: httpx.AsyncClient
    ) -> None:
        simulated = await http.post(
            "/v1/task-runner/simulations", json={"manifest": SRE_AND_SECURITY}, headers=REQUESTER
        )
        assert simulated.status_code == 200, simulated.text
        assert simulated.json()["approvals"][0]["missing"] == [
            "1 holder of sre.approve",
            "1 holder of security.approve",
        ]
        state = await waiting(http, SRE_AND_SECURITY)
        run_id = state["runId"]
        body = {"decision": "approved", "planHash": state["planHash"]}
        # Neither grant: no say at all on a gate whose every seat is reserved.
        nobody = await http.post(url(run_id), json=body, headers=person("user:ned"))
        assert (nobody.status_code, error_code(nobody)) == (403, "forbidden")
        refused = await refusals(http, run_id)
        assert [(e["metadata"]["actorId"], e["metadata"]["error"]) for e in refused] == [
            ("user:ned", "forbidden")
        ]
        assert "needs one of the grants: sre.approve, security.approve" in refused[0]["message"]
        both = person("user:alice", "sre.approve", "security.approve")
        first = await http.post(url(run_id), json=body, headers=both)
        assert first.status_code == 200, first.text
        assert (first.json()["approvals"], first.json()["requiredApprovals"]) == (1, 2)
        assert first.json()["missing"] in (
            ["1 holder of sre.approve"],
            ["1 holder of security.approve"],
        )
        again = await http.post(url(run_id), json=body, headers=both)
        assert (again.status_code, error_code(again)) == (409, "duplicate_approver")
        waiting_state = await wait_for_run(http, run_id, status_is("awaiting-approval"))
        assert waiting_state["approvals"][0]["missing"] == first.json()["missing"]
        # bob holds sre only: the matching moves alice to security's seat, and bob completes it.
        bob = await http.post(url(run_id), json=body, headers=person("user:bob", "sre.approve"))
        assert bob.json()["resumed"] is True, bob.text
        done = await wait_for_run(http, run_id, status_is("succeeded"))
        decisions = done["approvals"][0]["decisions"]
        assert {d["actorId"]: d["seat"] for d in decisions} == {
            "user:alice": "security.approve",
            "user:bob": "sre.approve",
        }
        assert {d["via"] for d in decisions} == {"rest"}

    async def test_a_second_holder_of_a_filled_seat_is_409(self, http: httpx.AsyncClient) -> None:
        state = await waiting(http, SRE_AND_SECURITY)
        run_id = state["runId"]
        body = {"decision": "approved", "planHash": state["planHash"]}
        sre = await http.post(url(run_id), json=body, headers=person("user:sam", "sre.approve"))
        assert sre.status_code == 200, sre.text
        other = await http.post(url(run_id), json=body, headers=person("user:sue", "sre.approve"))
        assert (other.status_code, error_code(other)) == (409, "no_open_seat")
        assert "1 holder of security.approve" in other.json()["error"]["message"]
        assert [e["metadata"]["error"] for e in await refusals(http, run_id)] == ["NoOpenSeat"]


class TestWrongPerson:
    async def test_a_refusal_by_the_api_is_in_the_run_log_too(
        self, http: httpx.AsyncClient
    ) -> None:
        state = await waiting(http, GATED)
        run_id = state["runId"]
        body = {"decision": "approved", "planHash": state["planHash"]}
        no_grant = bearer(OPERATOR, sub="user:olga")
        response = await http.post(url(run_id), json=body, headers=no_grant)
        assert response.status_code == 403, response.text
        as_someone = {**body, "actorId": "user:bob"}
        response = await http.post(url(run_id), json=as_someone, headers=person("user:olga"))
        assert response.status_code == 403, response.text
        refused = await refusals(http, run_id)
        assert [(e["metadata"]["actorId"], e["metadata"]["via"]) for e in refused] == [
            ("user:olga", "rest"),
            ("user:olga", "rest"),
        ]
        assert refused[1]["metadata"]["statedActorId"] == "user:bob"
        assert all(e["timestamp"] and e["metadata"]["reason"] for e in refused)
        still = await wait_for_run(http, run_id, status_is("awaiting-approval"))
        assert still["approvals"][0]["decisions"] == []
