"""Why a run refuses an approval decision: the codes the workflow raises and the API maps.

The workflow logs every refusal (`error=<code>`), and its update handler then raises
`ApplicationError(type=<code>)`; the API turns each code into its HTTP error. One enum, so a code
added on one side is a type error on the other until it is handled.
"""

from __future__ import annotations

from enum import StrEnum


class Refusal(StrEnum):
    PLAN_HASH_MISMATCH = "PlanHashMismatch"
    APPROVAL_NOT_FOUND = "ApprovalNotFound"
    TOKEN_ALREADY_USED = "TokenAlreadyUsed"
    APPROVAL_ALREADY_DECIDED = "ApprovalAlreadyDecided"
    APPROVAL_NOT_PENDING = "ApprovalNotPending"
    DUPLICATE_APPROVER = "DuplicateApprover"
    APPROVAL_EXPIRED = "ApprovalExpired"
    """Decided at or after the approval's `expiresAt`: the deadline's outcome stands."""
    EXPIRED_BY_PERSON = "ExpiredByPerson"
    """`expired` sent as a decision: only the deadline's timer says that."""
    REQUESTER_NOT_ALLOWED = "RequesterNotAllowed"
    """The run's requester, on an approval with `allowRequester: false`."""
    NO_OPEN_SEAT = "NoOpenSeat"
    """An approval vote that fills no seat: the open ones need grants the voter lacks."""


REFUSAL_CODES = frozenset(code.value for code in Refusal)
