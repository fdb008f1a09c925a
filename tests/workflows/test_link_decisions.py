"""Decisions through signed approval links: a link (its token id) decides once, whoever sends it."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from tests.helpers import start_pack, state_of, unique, wait_for, worker_for
from workflows.contract.names import UPDATE_DECIDE_APPROVAL
from workflows.contract.state import ApprovalOutcome, ApprovalSignal

QUORUM = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: linked, version: 1.0.0}
spec:
  approvals:
    - {id: review, grants: [packs.approve], requiredApprovals: 2}
  steps:
    - id: approve
      gate: {approval: {id: review}}
    - {id: deploy, run: {uses: "builtin:noop"}}
"""


class TestLinkDecisions:
    async def test_a_token_decides_once_even_under_another_actor(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, QUORUM)
            state = await wait_for(handle, lambda s: s.status == "awaiting-approval")

            def vote(actor: str, token: str) -> ApprovalSignal:
                return ApprovalSignal(
                    approvalId="review",
                    decision="approved",
                    planHash=state.planHash,
                    actorId=actor,
                    tokenId=token,
                )

            first = await handle.execute_update(
                UPDATE_DECIDE_APPROVAL, vote("link:t1", "t1"), result_type=ApprovalOutcome
            )
            assert (first.approvals, first.resumed) == (1, False)
            with pytest.raises(WorkflowUpdateFailedError) as reused:
                await handle.execute_update(UPDATE_DECIDE_APPROVAL, vote("user:bob", "t1"))
            assert isinstance(reused.value.cause, ApplicationError)
            assert reused.value.cause.type == "TokenAlreadyUsed"

            second = await handle.execute_update(
                UPDATE_DECIDE_APPROVAL, vote("user:bob", "t2"), result_type=ApprovalOutcome
            )
            assert second.resumed is True
            done = await wait_for(handle, lambda s: s.status == "succeeded")
            assert [d.tokenId for d in done.approvals[0].decisions] == ["t1", "t2"]
            assert (await state_of(handle)).approvals[0].status == "approved"
