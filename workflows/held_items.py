"""A map in levels' items as the run holds them: a status per item, not a StepState per step.

A million-item map registered as step states would hold a million pydantic objects (about a
gigabyte) in the run's workflow, and registering them costs seconds of workflow task. Most items
only ever are pending, then plainly succeeded (or skipped) with the rest of their group, which a
byte per item says as well. `HeldItems` keeps that byte, the time each item ended and its outputs,
and makes an item's step states only when they are read (a page of the state query) or when the
item has more to say (a failure, a retry: then it is registered in the RunBook as before).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from compiler import plan as p
from workflows.contract.initial import step_states
from workflows.contract.state import StepState

PENDING = 0
SUCCEEDED = 1
REGISTERED = 2
"""The item's steps are in the RunBook itself (it had more to say than a status)."""
SKIPPED = 3
"""Codes from here on: skipped, with reason `reasons[code - SKIPPED]`."""


class HeldItems:
    """The items of one map that fans out in levels, held as a status byte per item."""

    def __init__(self, map_id: str, template: p.PlanStep, count: int) -> None:
        self.map_id = map_id
        self.template = template
        self.count = count
        self.status = bytearray(count)
        self.stamps: list[str | None] = [None] * count
        self.outputs: list[Any] = [None] * count
        self.reasons: list[str] = []
        self.registered = 0
        self.steps_per_item = sum(1 for _ in step_states((template,), "", map_id, templated=True))

    @property
    def hidden_steps(self) -> int:
        """Steps of the items not registered in the RunBook (each item's whole tree)."""
        return (self.count - self.registered) * self.steps_per_item

    def index_of(self, step_id: str) -> int | None:
        """The item a step id of this map belongs to (`map[7]::one...` is item 7), or None."""
        head = self.map_id + "["
        if not step_id.startswith(head):
            return None
        end = step_id.find("]::", len(head))
        digits = step_id[len(head) : end]
        return int(digits) if end > 0 and digits.isdigit() else None

    def prefix(self, index: int) -> str:
        return f"{self.map_id}[{index}]::"

    def register(self, index: int) -> bool:
        """The item is to be registered in the RunBook (it has more to say); False if it is
        already. Its status so far is dropped: what comes next says it all."""
        if self.status[index] == REGISTERED:
            return False
        self.status[index] = REGISTERED
        self.registered += 1
        return True

    def succeed(self, first: int, last: int, outputs: list[Any], stamp: str | None) -> None:
        """Items `first..last` succeeded plainly at `stamp`; `outputs[i]` is item first+i's."""
        for index in range(first, last + 1):
            if self.status[index] != REGISTERED:
                self.status[index] = SUCCEEDED
                self.stamps[index] = stamp
                self.outputs[index] = outputs[index - first]

    def skip(self, first: int, last: int, reason: str, stamp: str, *, pending_only: bool) -> int:
        """Items `first..last` (pending ones only, if asked) are skipped for `reason`; returns
        how many were."""
        code = self._code(reason)
        skipped = 0
        for index in range(first, last + 1):
            status = self.status[index]
            if status == REGISTERED or (pending_only and status != PENDING):
                continue
            self.status[index] = code
            self.stamps[index] = stamp
            skipped += 1
        return skipped

    def _code(self, reason: str) -> int:
        if reason not in self.reasons:
            if SKIPPED + len(self.reasons) > 255:
                reason = self.reasons[-1]  # 253 distinct reasons: never in practice
            else:
                self.reasons.append(reason)
        return SKIPPED + self.reasons.index(reason)

    def states(self, index: int) -> list[StepState]:
        """Item `index`'s steps as the RunBook would hold them, in tree order (not for an item
        registered there)."""
        states = list(
            step_states((self.template,), self.prefix(index), self.map_id, templated=True)
        )
        status = self.status[index]
        stamp = self.stamps[index]
        if status == SUCCEEDED:
            for state in states:
                state.status = "Succeeded"
                state.attempts = 1
                state.lastTransitionAt = stamp
            states[0].outputs = dict(self.outputs[index] or {})
        elif status >= SKIPPED:
            reason = self.reasons[status - SKIPPED]
            for state in states:
                state.status = "Skipped"
                state.statusReason = reason
                state.lastTransitionAt = stamp
                # As RunBook.transition has it: a step skipped by its condition is not enabled.
                state.enabled = reason != "condition-false"
        return states

    def walk(self, skip: list[int], registered: Any) -> Iterator[StepState]:
        """Every item's steps in order, passing over the first `skip[0]` (and counting it down):
        an item not registered is passed over whole without making its states. `registered`
        walks an item the RunBook holds, given its root step's id."""
        size = self.steps_per_item
        for index in range(self.count):
            if self.status[index] == REGISTERED:
                yield from registered(self.prefix(index) + self.template.id)
            elif skip[0] >= size:
                skip[0] -= size
            else:
                for state in self.states(index):
                    if skip[0]:
                        skip[0] -= 1
                    else:
                        yield state
