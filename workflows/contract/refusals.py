"""Why a run refuses an approval decision: the codes the workflow raises and the API maps.

The workflow's update validator raises `ApplicationError(type=<code>)` and its signal handler
logs `error=<code>`; the API turns each code into its HTTP error. One enum, so a code added on
one side is a type error on the other until it is handled.
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


REFUSAL_CODES = frozenset(code.value for code in Refusal)
