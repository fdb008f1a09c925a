"""Refusals of approval links, remembered so a link's repeats do not reach its run again.

A link needs no token, and every use of it the run refuses is written to the run's log (and its
Temporal history): a holder sending a used link over and over grew a waiting run's history
without end, up to Temporal's limits, which end the run. The first refusal of a link goes to the
run and is logged there; the same link sent again gets the same answer from here. Only refusals
that cannot turn into a success later are remembered (a link used, a vote cast, a gate decided,
a deadline passed, a plan changed); a gate not yet open is asked again. Each API process keeps
its own memory, so a run hears each refusal at most once per process.
"""

from __future__ import annotations

from collections import OrderedDict

from api import errors
from workflows.contract.signing import ApprovalToken

FINAL = (
    errors.LinkAlreadyUsed,
    errors.DuplicateApprover,
    errors.ApprovalAlreadyDecided,
    errors.ApprovalExpired,
    errors.PlanHashMismatch,
    errors.NoOpenSeat,
)
"""Refusals that stay refusals: a link refused so is refused so again."""

LIMIT = 10_000
"""Links remembered; the oldest are forgotten first (a forgotten one reaches its run once more)."""


class RefusedLinks:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._refused: OrderedDict[tuple[str, str, str], tuple[type[errors.ApiError], str]] = (
            OrderedDict()
        )

    @staticmethod
    def _key(claims: ApprovalToken) -> tuple[str, str, str]:
        return claims.tenant, claims.runId, claims.token_id

    def recall(self, claims: ApprovalToken) -> errors.ApiError | None:
        """The refusal this link had before, if it is one that stands (a new exception each
        time: one raised again and again would gather every raise's traceback)."""
        found = self._refused.get(self._key(claims))
        return found[0](found[1]) if found is not None else None

    def remember(self, claims: ApprovalToken, refusal: errors.ApiError) -> None:
        if not isinstance(refusal, FINAL):
            return
        key = self._key(claims)
        self._refused[key] = (type(refusal), refusal.message)
        self._refused.move_to_end(key)
        while len(self._refused) > self.limit:
            self._refused.popitem(last=False)
