"""What a caller may do next with a run (`availableActions` in its state), and the one rule for
who may decide an approval, which the approvals route enforces and the actions only announce.

An action is offered only when this caller's request would be accepted as far as the API can tell
beforehand: its scopes (operator for every action), the gate's grants and quorum seats, the
run's requester rule, a decision already cast. The run keeps the last word (a deadline passing
between the read and the decision, say), so an offered action can still be refused; an action not
offered would be. The caller's tenant is the run's (a run is read in its tenant only), and each
action names it in `headers` so a bot can send the request as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from api.auth import OPERATOR, TENANT_HEADER, Principal
from api.errors import Forbidden
from api.schemas import AvailableAction
from compiler.plan import ApprovalSpec, QuorumGroup
from compiler.quorum import Voter, count_seats
from workflows.contract.state import TERMINAL_RUN_STATUSES, ApprovalState, RunStateSnapshot

REDRIVABLE = frozenset({"failed", "cancelled"})
"""Run statuses a redrive accepts."""


def decision_forbidden(principal: Principal, approval: ApprovalState) -> str | None:
    """Why this caller may not decide `approval` at all (its grants, its quorum seats), or None.

    The approvals route refuses with this reason; the run checks the rest (the deadline, the
    requester, a second vote, a seat still open)."""
    missing = principal.missing_grants(approval.grants)
    if missing:
        return f"deciding {approval.approvalId!r} needs the grants: {', '.join(missing)}"
    seat_grants = [g.grant for g in approval.quorum]
    open_seats = approval.requiredApprovals - sum(g.requiredApprovals for g in approval.quorum)
    if seat_grants and not seat_grants_held(principal, approval) and open_seats <= 0:
        # Every seat is reserved for a grant: someone holding none of them has no say at all.
        return f"deciding {approval.approvalId!r} needs one of the grants: {', '.join(seat_grants)}"
    return None


def seat_grants_held(principal: Principal, approval: ApprovalState) -> list[str]:
    """The quorum grants this caller holds: which seats its vote can fill."""
    return [g.grant for g in approval.quorum if not principal.missing_grants([g.grant])]


def check_decision(principal: Principal, approval: ApprovalState) -> None:
    reason = decision_forbidden(principal, approval)
    if reason is not None:
        raise Forbidden(reason)


def _fills_a_seat(principal: Principal, approval: ApprovalState) -> bool:
    """Whether an approval by this caller would fill a seat no one holds yet."""
    if not approval.quorum:
        return True
    spec = ApprovalSpec(
        id=approval.approvalId,
        requiredApprovals=approval.requiredApprovals,
        quorum=tuple(
            QuorumGroup(grant=g.grant, requiredApprovals=g.requiredApprovals)
            for g in approval.quorum
        ),
    )
    voters = [
        Voter(d.actorId, frozenset(d.grants))
        for d in approval.decisions
        if d.decision == "approved"
    ]
    before = count_seats(spec, voters).filled
    me = Voter(principal.subject, frozenset(seat_grants_held(principal, approval)))
    return count_seats(spec, [*voters, me]).filled > before


def available_actions(
    principal: Principal,
    state: RunStateSnapshot,
    run_url: str,
    *,
    requester: str | None = None,
) -> list[AvailableAction]:
    """The actions `principal` may take on the run in `state` (at `run_url`).

    `requester`: who started the run, needed only when an open gate refuses its requester
    (`allowRequester: false`); None leaves such gates offered and the run to refuse."""
    if not principal.has_scope(OPERATOR):
        return []
    headers = {TENANT_HEADER: state.tenant}
    actions: list[AvailableAction] = []
    if state.status not in TERMINAL_RUN_STATUSES:
        for approval in state.approvals:
            actions += _decisions(principal, state, approval, run_url, headers, requester)
        actions.append(
            AvailableAction(action="cancel", href=f"{run_url}/cancel", headers=headers, body=None)
        )
    elif state.status in REDRIVABLE:
        actions.append(
            AvailableAction(action="redrive", href=f"{run_url}/redrive", headers=headers, body={})
        )
    return actions


def _decisions(
    principal: Principal,
    state: RunStateSnapshot,
    approval: ApprovalState,
    run_url: str,
    headers: dict[str, str],
    requester: str | None,
) -> Sequence[AvailableAction]:
    if approval.status != "pending" or decision_forbidden(principal, approval) is not None:
        return []
    if (
        approval.allowRequester is False
        and requester is not None
        and requester == principal.subject
    ):
        return []
    if any(d.actorId == principal.subject for d in approval.decisions):
        return []
    offered: list[AvailableAction] = []
    for action, decision in (("approve", "approved"), ("reject", "rejected")):
        if action == "approve" and not _fills_a_seat(principal, approval):
            continue
        offered.append(
            AvailableAction(
                action=action,
                href=f"{run_url}/approvals/{approval.approvalId}",
                headers=headers,
                body={"decision": decision, "planHash": state.planHash},
                approvalId=approval.approvalId,
                gateMessage=approval.message,
                expiresAt=approval.expiresAt,
            )
        )
    return offered
