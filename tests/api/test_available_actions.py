"""`availableActions` in GET /runs/{runId}: what this caller may do next and how, so a bot needs
no second call. Each caller is its own token: a reader, an operator without the gate's grant,
an approver, the run's requester holding the grant, another tenant's operator."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.packs import FAILING, GATED
from tests.api.support import (
    APPROVER,
    OPERATOR,
    READER,
    REQUESTER,
    TENANT_HEADER,
    bearer,
    create_run,
    in_tenant,
    run_url,
    status_is,
    wait_for_run,
)

GATE = "release-manager"


async def actions_of(http: httpx.AsyncClient, run_id: str, headers: dict[str, str]) -> list[Any]:
    response = await http.get(run_url(run_id), headers=headers)
    assert response.status_code == 200, response.text
    actions: list[Any] = response.json()["availableActions"]
    return actions


def named(actions: list[Any]) -> list[tuple[str, str | None]]:
    return [(a["action"], a.get("approvalId")) for a in actions]


class TestAvailableActions:
    async def test_each_caller_sees_what_it_may_do_and_the_approver_can_send_it_as_is(
        self, http: httpx.AsyncClient
    ) -> None:
        run_id = (await create_run(http, GATED))["runId"]
        state = await wait_for_run(http, run_id, status_is("awaiting-approval"))

        # A reader may do nothing; an operator without `packs.approve` may only cancel.
        assert await actions_of(http, run_id, READER) == []
        assert named(await actions_of(http, run_id, REQUESTER)) == [("cancel", None)]

        actions = await actions_of(http, run_id, APPROVER)
        assert named(actions) == [("approve", GATE), ("reject", GATE), ("cancel", None)]
        approve = actions[0]
        assert approve["method"] == "POST"
        assert approve["href"] == f"{run_url(run_id)}/approvals/{GATE}"
        assert approve["body"] == {"decision": "approved", "planHash": state["planHash"]}
        assert approve["headers"] == {TENANT_HEADER: "default"}
        assert approve["gateMessage"] == "Release the build?"
        assert approve["expiresAt"] == state["approvals"][0]["expiresAt"]
        assert actions[1]["body"] == {"decision": "rejected", "planHash": state["planHash"]}
        assert actions[2]["href"] == f"{run_url(run_id)}/cancel"

        # Another tenant's operator holding the grant does not see the run at all.
        other = in_tenant("other-tenant", OPERATOR, grants=["packs.approve"])
        assert (await http.get(run_url(run_id), headers=other)).status_code == 404

        # The approve action, sent exactly as offered, is accepted and the run goes on.
        sent = await http.request(
            approve["method"],
            approve["href"],
            json=approve["body"],
            headers={**APPROVER, **approve["headers"]},
        )
        assert sent.status_code == 200, sent.text
        await wait_for_run(http, run_id, status_is("succeeded"))
        assert await actions_of(http, run_id, APPROVER) == []  # nothing left to do

    async def test_the_requester_is_not_offered_its_own_gate(self, http: httpx.AsyncClient) -> None:
        # The requester holds the grant, but the gate does not take its requester's vote.
        requester = bearer(OPERATOR, sub="user:rita", grants=["packs.approve"])
        run_id = (await create_run(http, GATED, headers=requester))["runId"]
        await wait_for_run(http, run_id, status_is("awaiting-approval"))
        assert named(await actions_of(http, run_id, requester)) == [("cancel", None)]
        assert named(await actions_of(http, run_id, APPROVER))[:2] == [
            ("approve", GATE),
            ("reject", GATE),
        ]
        refused = await http.post(
            f"{run_url(run_id)}/approvals/{GATE}",
            json={
                "decision": "approved",
                "planHash": (await http.get(run_url(run_id), headers=READER)).json()["planHash"],
            },
            headers=requester,
        )
        assert refused.status_code in (403, 409), refused.text  # not offered, and refused

    async def test_a_voter_is_not_offered_the_same_gate_twice(
        self, http: httpx.AsyncClient
    ) -> None:
        two = GATED.replace("requiredApprovals: 1", "requiredApprovals: 2")
        run_id = (await create_run(http, two))["runId"]
        state = await wait_for_run(http, run_id, status_is("awaiting-approval"))
        body = {"decision": "approved", "planHash": state["planHash"]}
        voted = await http.post(f"{run_url(run_id)}/approvals/{GATE}", json=body, headers=APPROVER)
        assert voted.status_code == 200, voted.text
        assert named(await actions_of(http, run_id, APPROVER)) == [("cancel", None)]
        second = bearer(OPERATOR, sub="user:bob", grants=["packs.approve"])
        assert named(await actions_of(http, run_id, second))[:1] == [("approve", GATE)]

    async def test_a_failed_run_offers_a_redrive_to_operators_only(
        self, http: httpx.AsyncClient
    ) -> None:
        run_id = (await create_run(http, FAILING))["runId"]
        await wait_for_run(http, run_id, status_is("failed"))
        assert await actions_of(http, run_id, READER) == []
        actions = await actions_of(http, run_id, REQUESTER)
        assert named(actions) == [("redrive", None)]
        redrive = actions[0]
        sent = await http.request(
            redrive["method"],
            redrive["href"],
            json=redrive["body"],
            headers={**REQUESTER, **redrive["headers"]},
        )
        assert sent.status_code == 201, sent.text
