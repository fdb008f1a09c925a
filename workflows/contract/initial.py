"""A run's state before anything ran, built from its plan: one pure function for both sides.

The workflow starts from it (and registers map and loop iterations with `step_states` as they
begin); the API answers with it when a run just started has not run its first workflow task yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import assert_never

from compiler import plan as p
from compiler.quorum import count_seats
from workflows.contract.state import (
    ApprovalState,
    QuorumSeats,
    RunMeta,
    RunStateSnapshot,
    StepState,
)


def step_state(
    step: p.PlanStep, runtime_id: str, *, parent_id: str | None, template_id: str | None
) -> StepState:
    """A step as a run first shows it: Pending, with what its kind adds."""
    state = StepState(
        stepId=runtime_id,
        kind=p.CONTRACT_KIND[step.kind],
        continueOnError=step.continueOnError,
        parentId=parent_id,
        templateId=template_id,
    )
    match step:
        case p.ParallelStep() | p.MapStep():
            state.maxParallel = step.maxParallel
        case p.ApprovalGateStep():
            state.approvalId = step.approvalId
            state.gateMessage = step.message
        case p.PolicyGateStep():
            state.approvalId = step.approvalId
        case p.RunStep() | p.LoopStep() | p.ConditionalStep():
            pass
        case _:
            assert_never(step)
    return state


def step_states(
    steps: Iterable[p.PlanStep], prefix: str, parent_id: str | None, *, templated: bool
) -> Iterator[StepState]:
    """A subtree's steps in tree order, each before what it holds.

    Map and loop bodies are left out: a run registers them per iteration, when they start.
    """
    for step in steps:
        rid = prefix + step.id
        yield step_state(step, rid, parent_id=parent_id, template_id=step.id if templated else None)
        if not isinstance(step, p.MapStep | p.LoopStep):
            yield from step_states(p.children(step), prefix, rid, templated=templated)


def approval_states(plan: p.Plan) -> list[ApprovalState]:
    """Each approval the pack declares, waiting for a gate to ask for it."""
    return [
        ApprovalState(
            approvalId=a.id,
            grants=list(a.grants),
            requiredApprovals=a.requiredApprovals,
            message=a.message,
            allowRequester=a.allowRequester,
            quorum=[
                QuorumSeats(grant=g.grant, requiredApprovals=g.requiredApprovals) for g in a.quorum
            ],
            missing=count_seats(a, ()).describe_missing(),
        )
        for a in plan.approvals
    ]


def initial_state(plan: p.Plan, plan_hash: str, meta: RunMeta) -> RunStateSnapshot:
    """The `state` query's answer for a run that has not started yet."""
    steps = list(step_states(plan.steps, "", None, templated=False))
    return RunStateSnapshot(
        runId=meta.runId,
        tenant=meta.tenant,
        pack=plan.pack.name,
        packVersion=plan.pack.version,
        planHash=plan_hash,
        status="pending",
        failurePolicy=plan.failure,
        createdAt=meta.requestedAt,
        updatedAt=meta.requestedAt,
        steps=steps,
        totalSteps=len(steps),
        approvals=approval_states(plan),
    )
