"""Who fills which seat of an approval: the one counting rule of quorums.

An approval needs `requiredApprovals` distinct people. A `quorum` reserves some of those seats for
holders of a grant (one `sre.approve`, one `security.approve`); the rest are open to any approver.
One person fills at most one seat, so a person holding both grants counts once. Seats are assigned
by a maximum bipartite matching, so the order in which people vote never strands a seat that an
earlier voter could have filled elsewhere.

Pure: the simulation, the workflow and the API all count with this.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from compiler.plan import ApprovalSpec


@dataclass(frozen=True)
class Voter:
    actor: str
    grants: frozenset[str]


@dataclass(frozen=True)
class Seats:
    """How far an approval is: seats filled, and what is still missing per grant."""

    filled: int
    required: int
    missing: tuple[tuple[str | None, int], ...]
    """(grant, seats still empty); `None` is the seats any approver can fill."""
    seat_of: dict[str, str | None]
    """Each counted voter's seat: the grant it fills, or None for an open seat."""

    @property
    def complete(self) -> bool:
        return self.filled >= self.required

    def describe_missing(self) -> list[str]:
        """`1 holder of security.approve`, `1 more approver`: for people and logs."""
        out = []
        for grant, count in self.missing:
            if grant is None:
                out.append(f"{count} more approver" + ("s" if count > 1 else ""))
            else:
                out.append(f"{count} holder" + ("s" if count > 1 else "") + f" of {grant}")
        return out


def count_seats(spec: ApprovalSpec, voters: Sequence[Voter]) -> Seats:
    """Fill the approval's seats with distinct voters (first vote of each actor counts)."""
    seen: set[str] = set()
    people: list[Voter] = []
    for voter in voters:
        if voter.actor not in seen:
            seen.add(voter.actor)
            people.append(voter)
    slots = [g.grant for g in spec.quorum for _ in range(g.requiredApprovals)]
    holder: list[int | None] = [None] * len(slots)  # slot -> index in people

    def augment(person: int, visited: set[int]) -> bool:
        for slot, grant in enumerate(slots):
            if grant in people[person].grants and slot not in visited:
                visited.add(slot)
                current = holder[slot]
                if current is None or augment(current, visited):
                    holder[slot] = person
                    return True
        return False

    for index in range(len(people)):
        augment(index, set())
    seat_of: dict[str, str | None] = {}
    for slot, sitting in enumerate(holder):
        if sitting is not None:
            seat_of[people[sitting].actor] = slots[slot]
    open_seats = max(spec.requiredApprovals - len(slots), 0)
    others = [v.actor for v in people if v.actor not in seat_of][:open_seats]
    for actor in others:
        seat_of[actor] = None
    missing: list[tuple[str | None, int]] = []
    for group in spec.quorum:
        empty = group.requiredApprovals - sum(1 for s in seat_of.values() if s == group.grant)
        if empty > 0:
            missing.append((group.grant, empty))
    if open_seats - len(others) > 0:
        missing.append((None, open_seats - len(others)))
    return Seats(
        filled=len(seat_of),
        required=max(spec.requiredApprovals, len(slots)),
        missing=tuple(missing),
        seat_of=seat_of,
    )


def relevant_grants(spec: ApprovalSpec, held: Collection[str]) -> list[str]:
    """The quorum grants among those a person holds: what a decision carries to be counted."""
    return [g.grant for g in spec.quorum if g.grant in held]
