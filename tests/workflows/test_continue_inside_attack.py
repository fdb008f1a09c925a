"""Hostile cases of continue-as-new inside steps: the same pack run in one history and continued
as new every few events (so the boundaries fall at many different places: inside a nested loop,
inside a branch, after an inline map, after a retried step) shows a reader the same steps,
outputs and log, entry for entry, and runs each shell step once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.faults.support import trail
from tests.helpers import result_of, start_pack, unique, wait_for, whole_log, worker_for
from tests.workflows.test_continue_inside_steps import (
    carried_states,
    gateway,
    what_a_reader_sees,
)
from workflows.contract.names import SIGNAL_APPROVAL
from workflows.contract.state import ApprovalSignal

NESTED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: nested-loops, version: 1.0.0}
spec:
  inputs: [{name: env, type: string, default: prod}]
  steps:
    - {id: first, run: {uses: "builtin:echo", with: {list: [10, 20, 30], n: 7}}}
    - id: outer
      when: "{{ inputs.env == 'prod' }}"
      loop:
        items: {expression: "steps.first.outputs.list"}
        iterator: o
        index: oi
        aggregation: collect
        steps:
          - {id: a, run: {uses: "builtin:shell", with: {command: "echo a{{ oi }} >> trail.txt"}}}
          - id: inner
            loop:
              items: {range: {start: 3, end: 0, step: -1}}
              iterator: j
              index: ji
              aggregation: first
              steps:
                - {id: b, run: {uses: "builtin:shell", with: {command: "echo b{{ oi }}.{{ ji }} >> trail.txt"}}}
                - id: pick
                  conditional:
                    outputUnion: true
                    branches:
                      - condition: "{{ j == `2` }}"
                        steps:
                          - {id: d, run: {uses: "builtin:shell", with: {command: "echo d{{ oi }}.{{ ji }} >> trail.txt"}}}
                          - {id: e, run: {uses: "builtin:echo", with: {e: "{{ o }}-{{ j }}"}}}
                    else:
                      - {id: f, when: "{{ j == `1` }}", run: {uses: "builtin:echo", with: {f: "{{ j }}"}}}
                - {id: g, run: {uses: "builtin:echo", with: {g: "{{ steps.pick.outputs }}", top: "{{ steps.first.outputs.n }}"}}}
          - id: m
            map: {items: "steps.first.outputs.list", maxParallel: 1, step: {id: one, run: {uses: "builtin:echo", with: {v: "{{ item }}"}}}}
          - id: last
            run:
              uses: builtin:echo
              with: {inner: "{{ steps.inner.outputs }}", m: "{{ steps.m.outputs.results[*].v }}", a: "{{ steps.a.status }}"}
    - {id: tail, run: {uses: "builtin:echo", with: {seen: "{{ steps.outer.outputs }}"}}}
"""


async def run_both(
    dev_env: WorkflowEnvironment, tmp_path: Path, manifest: str, everies: list[int | None]
) -> list[tuple[Any, ...]]:
    client = dev_env.client
    tq = unique("tq")
    seen = []
    async with worker_for(client, tmp_path, tq):
        for every in everies:
            handle = await start_pack(client, tq, manifest, continueAsNewAfterEvents=every)
            result = await result_of(handle)
            run_id = handle.id.split("/")[-1]
            state = await gateway(client, tmp_path).state_with_outputs("default", run_id)
            entries = await whole_log(client, tmp_path, run_id)
            carried = await carried_states(client, handle)
            seen.append(
                (
                    result.status,
                    result.error,
                    *what_a_reader_sees(state, entries),
                    trail(tmp_path, "default", run_id),
                    len(carried),
                )
            )
    return seen


@pytest.mark.parametrize("every", [21])
async def test_nested_loops_branches_and_a_map_read_alike(
    dev_env: WorkflowEnvironment, tmp_path: Path, every: int
) -> None:
    plain, continued = await run_both(dev_env, tmp_path, NESTED, [None, every])
    assert plain[-1] == 0 and continued[-1] >= 3, continued[-1]
    assert plain[:2] == continued[:2]
    assert plain[2] == continued[2]
    assert plain[3] == continued[3]
    assert plain[4] == continued[4]


FAILING = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: failing-loop, version: 1.0.0}
spec:
  steps:
    - {id: first, run: {uses: "builtin:echo", with: {n: 1}}}
    - id: each
      loop:
        items: {range: {end: 9}}
        aggregation: last
        steps:
          - id: flaky
            run:
              uses: builtin:shell
              with: {command: "echo f{{ item }} >> trail.txt; test -f ok{{ item }} || { touch ok{{ item }}; exit 3; }"}
              retries: {maxAttempts: 2, backoffSeconds: 1}
          - {id: soft, continueOnError: true, when: "{{ item == `2` }}", run: {uses: "builtin:fail", with: {message: "soft {{ item }}"}}}
          - {id: hard, when: "{{ item == `6` }}", run: {uses: "builtin:fail", with: {message: "hard {{ item }}"}}}
          - {id: z, run: {uses: "builtin:echo", with: {z: "{{ item }}", soft: "{{ steps.soft.status }}"}}}
    - {id: tail, run: {uses: "builtin:echo", with: {seen: "{{ steps.each.outputs }}"}}}
"""


@pytest.mark.parametrize("every", [17])
async def test_retries_soft_and_hard_failures_in_a_loop_read_alike(
    dev_env: WorkflowEnvironment, tmp_path: Path, every: int
) -> None:
    plain, continued = await run_both(dev_env, tmp_path, FAILING, [None, every])
    assert plain[-1] == 0 and continued[-1] >= 3, continued[-1]
    assert plain[0] == "failed"
    assert plain[:2] == continued[:2]
    assert plain[2] == continued[2]
    assert plain[3] == continued[3]
    assert plain[4] == continued[4]


GATED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: gated-loop, version: 1.0.0}
spec:
  approvals:
    - {id: review, requiredApprovals: 2}
  steps:
    - {id: first, run: {uses: "builtin:echo", with: {n: 1}}}
    - id: each
      loop:
        items: {range: {end: 10}}
        steps:
          - {id: s, run: {uses: "builtin:shell", with: {command: "echo s{{ item }} >> trail.txt"}}}
          - {id: gate, when: "{{ item == `4` || item == `8` }}", gate: {approval: {id: review}}}
          - {id: z, run: {uses: "builtin:echo", with: {z: "{{ item }}", gate: "{{ steps.gate.status }}"}}}
    - {id: tail, run: {uses: "builtin:echo", with: {seen: "{{ steps.each.outputs.results[*].z }}"}}}
"""


async def test_an_approval_gate_inside_a_loop_is_decided_across_continue_as_new(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    tq = unique("tq")
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(client, tq, GATED, continueAsNewAfterEvents=20)
        latest = client.get_workflow_handle(handle.id)
        state = await wait_for(latest, lambda s: s.status == "awaiting-approval", timeout=60)
        for actor in ("user:alice", "user:bob"):
            await latest.signal(
                SIGNAL_APPROVAL,
                ApprovalSignal.model_validate(
                    {
                        "approvalId": "review",
                        "decision": "approved",
                        "planHash": state.planHash,
                        "actorId": actor,
                    }
                ),
            )
        result = await result_of(handle)
        assert result.status == "succeeded", result.error
        run_id = handle.id.split("/")[-1]
        final = await gateway(client, tmp_path).state_with_outputs("default", run_id)
        carried = await carried_states(client, handle)
    steps = {s.stepId: s for s in final.steps}
    assert steps["each[4]::gate"].status == "Succeeded"
    assert steps["each[8]::gate"].status == "Succeeded"
    assert steps["each[3]::gate"].statusReason == "condition-false"
    assert steps["tail"].outputs == {"seen": list(range(10))}
    assert [a.status for a in final.approvals] == ["approved"]
    assert trail(tmp_path, "default", run_id) == [f"s{i}" for i in range(10)]
    # It continued as new inside the loop both before and after the decision.
    inside = [c for c in carried if "each" in c.progress]
    assert any(c.progress["each"].nextIteration < 4 for c in inside)
    assert any(c.progress["each"].nextIteration > 4 for c in inside)


INNER_REFERENCES = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: inner-references, version: 1.0.0}
spec:
  steps:
    - id: each
      loop:
        items: {range: {end: 6}}
        steps:
          - id: pick
            conditional:
              branches:
                - condition: "{{ item >= `0` }}"
                  steps: [{id: a, run: {uses: "builtin:echo", with: {x: "{{ item }}"}}}]
                - condition: "{{ item < `0` }}"
                  steps: [{id: n, run: {uses: "builtin:noop"}}]
          - id: both
            parallel:
              steps: [{id: p1, run: {uses: "builtin:echo", with: {p: "{{ item }}"}}}]
          - {id: b, run: {uses: "builtin:echo", with: {x: "{{ steps.a.outputs.x }}", p: "{{ steps.p1.outputs.p }}", n: "{{ steps.n.status }}"}}}
    - {id: tail, run: {uses: "builtin:echo", with: {seen: "{{ steps.each.outputs.results }}"}}}
"""


@pytest.mark.parametrize("every", [12, 14, 17, 20, 23])
async def test_steps_inside_a_finished_branch_or_parallel_block_stay_readable_after_resuming(
    dev_env: WorkflowEnvironment, tmp_path: Path, every: int
) -> None:
    """The run continued as new right after a conditional (or parallel block) inside an
    iteration ended: the next history passes the block, and the step after it still reads the
    outputs of the steps inside it."""
    client = dev_env.client
    tq = unique("tq")
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(client, tq, INNER_REFERENCES, continueAsNewAfterEvents=every)
        result = await result_of(handle)
        run_id = handle.id.split("/")[-1]
        state = await gateway(client, tmp_path).state_with_outputs("default", run_id)
        carried = await carried_states(client, handle)
    assert sum(1 for c in carried if "each" in c.progress) >= 2, len(carried)
    assert result.status == "succeeded", result.error
    tail = next(s for s in state.steps if s.stepId == "tail")
    assert tail.outputs == {"seen": [{"x": i, "p": i, "n": "Skipped"} for i in range(6)]}


POLICIES = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: policy-loop, version: 1.0.0}
spec:
  policies:
    - {id: even, condition: "{{ contains(`[0, 2, 4, 6]`, steps.a.outputs.v) }}"}
  steps:
    - id: each
      loop:
        items: {range: {end: 7}}
        aggregation: merge
        steps:
          - {id: a, run: {uses: "builtin:echo", with: {v: "{{ item }}"}}}
          - id: check
            gate:
              policy:
                policy: even
                failureAction: branch
                else:
                  - {id: odd, run: {uses: "builtin:echo", with: {odd: "{{ item }}"}}}
                  - {id: odd2, run: {uses: "builtin:shell", with: {command: "echo o{{ item }} >> trail.txt"}}}
          - id: z
            run:
              uses: builtin:echo
              with: {"k{{ item }}": "{{ steps.check.outputs.passed }}/{{ steps.odd.status }}/{{ steps.odd.outputs.odd }}"}
    - {id: tail, run: {uses: "builtin:echo", with: {seen: "{{ steps.each.outputs }}"}}}
"""


@pytest.mark.parametrize("every", [13, 19])
async def test_a_policy_gate_branch_in_a_loop_reads_alike(
    dev_env: WorkflowEnvironment, tmp_path: Path, every: int
) -> None:
    plain, continued = await run_both(dev_env, tmp_path, POLICIES, [None, every])
    assert plain[-1] == 0 and continued[-1] >= 2, continued[-1]
    assert plain[:2] == continued[:2]
    assert plain[2] == continued[2]
    assert plain[3] == continued[3]
    assert plain[4] == continued[4]
