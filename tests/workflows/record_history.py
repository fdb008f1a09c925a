"""Record the history of a representative run for the replay test.

Run it after a deliberate, replay-safe change to the workflow's commands, and commit the result:

    .venv/bin/python -m tests.workflows.record_history

A change that makes the committed history fail to replay would break running workflows: put it
behind `workflow.patched()` instead of re-recording.
"""

from __future__ import annotations

import asyncio
import sysconfig
import tempfile
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.helpers import start_pack, unique, wait_for, worker_for
from workflows.contract.names import SEARCH_ATTRIBUTES, UPDATE_DECIDE_APPROVAL
from workflows.contract.state import ApprovalOutcome, ApprovalSignal

HISTORY = Path(__file__).parent / "histories" / "representative.json"

PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: representative, version: 1.0.0}
spec:
  inputs:
    - {name: hosts, type: array, default: [a, b, c]}
    - {name: env, type: string, default: prod}
  approvals: [{id: release, grants: [deploy], requiredApprovals: 1}]
  policies: [{id: small, version: "1", condition: "length(inputs.hosts) < `10`"}]
  failure: {maxAttempts: 2, backoffSeconds: 1}
  steps:
    - {id: build, run: {uses: "builtin:shell", with: {command: "echo built"}}}
    - id: checks
      parallel:
        steps:
          - {id: lint, run: {uses: "builtin:echo", with: {ok: true}}}
          - {id: policy, gate: {policy: {policy: small, failureAction: abort}}}
    - id: ping
      map: {items: "inputs.hosts", maxParallel: 2, step: {id: one, run: {uses: "builtin:echo", with: {host: "{{ item }}"}}}}
    - id: rounds
      loop: {items: {range: {end: 2}}, steps: [{id: r, run: {uses: "builtin:noop"}}]}
    - id: route
      conditional:
        branches: [{condition: "inputs.env == 'prod'", steps: [{id: approve, gate: {approval: {id: release}}}]}]
        else: [{id: skip, run: {uses: "builtin:noop"}}]
    - {id: flaky, continueOnError: true, run: {uses: "builtin:fail", with: {message: expected}}}
    - {id: deploy, run: {uses: "builtin:echo", with: {hosts: "{{ steps.ping.outputs.results[*].host }}"}}}
"""


async def record() -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(scripts / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    try:
        tq = unique("tq")
        async with worker_for(env.client, Path(tempfile.mkdtemp()), tq):
            handle = await start_pack(env.client, tq, PACK, run_id="representative")
            state = await wait_for(handle, lambda s: s.status == "awaiting-approval")
            await handle.execute_update(
                UPDATE_DECIDE_APPROVAL,
                ApprovalSignal(
                    approvalId="release",
                    decision="approved",
                    planHash=state.planHash,
                    actorId="ops",
                ),
                result_type=ApprovalOutcome,
            )
            result = await handle.result()
            assert result.status == "succeeded", result
            history = await handle.fetch_history()
        HISTORY.write_text(history.to_json())
        print(f"wrote {HISTORY} ({len(history.events)} events)")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record())
