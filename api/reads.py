"""Reads of run state, shared between concurrent callers.

Every `GET /runs/{runId}` is a `state` query that a worker answers: a round trip through the
Temporal server and a worker's poller that costs milliseconds however small the answer, and a
finished run's query replays its whole history on a worker. Fifty callers polling one run would
queue fifty such round trips. So:

- Concurrent reads of the same page of the same run share one query in flight. A read that joins
  a query sent just before it arrived sees the state of that moment: at most one query's latency
  older than the read. Every write this API sends (a decision, a cancel) starts a new generation,
  and a read never joins a query sent in an older one, so callers always read their own writes.
- A finished run's state no longer changes, so it is kept for `FINISHED_TTL_SECONDS` (for at most
  `FINISHED_MAX_RUNS` pages). Only a Temporal reset, an operator's action outside this API, can
  bring a finished run back; the TTL bounds how long a read may miss that.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager

from workflows.contract.state import TERMINAL_RUN_STATUSES, RunStateSnapshot

FINISHED_TTL_SECONDS = 10.0
FINISHED_MAX_RUNS = 1024

Fetch = Callable[[], Awaitable[RunStateSnapshot]]


class StateReads:
    """One per app: the queries in flight and the finished runs' recent states."""

    def __init__(
        self,
        finished_ttl: float = FINISHED_TTL_SECONDS,
        finished_max: int = FINISHED_MAX_RUNS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.finished_ttl = finished_ttl
        self.finished_max = finished_max
        self._clock = clock
        self._generation = 0
        self._in_flight: dict[Hashable, tuple[int, asyncio.Task[RunStateSnapshot]]] = {}
        self._finished: OrderedDict[Hashable, tuple[float, RunStateSnapshot]] = OrderedDict()

    async def read(self, key: Hashable, fetch: Fetch) -> RunStateSnapshot:
        """The state `fetch` gets for `key`, from a finished run's recent read, a query already
        in flight in this generation, or a new query."""
        kept = self._finished.get(key)
        if kept is not None:
            if self._clock() < kept[0]:
                return kept[1]
            del self._finished[key]
        flight = self._in_flight.get(key)
        if flight is None or flight[0] != self._generation:
            task = asyncio.ensure_future(self._fetch(key, fetch))
            # Retrieved here too, so a failure whose callers all left is not reported as lost.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            flight = (self._generation, task)
            self._in_flight[key] = flight
        # Shielded: a caller that goes away must not cancel the query the others wait for.
        return await asyncio.shield(flight[1])

    async def _fetch(self, key: Hashable, fetch: Fetch) -> RunStateSnapshot:
        try:
            snapshot = await fetch()
        finally:
            current = self._in_flight.get(key)
            if current is not None and current[1] is asyncio.current_task():
                del self._in_flight[key]
        if snapshot.status in TERMINAL_RUN_STATUSES:
            self._finished[key] = (self._clock() + self.finished_ttl, snapshot)
            self._finished.move_to_end(key)
            while len(self._finished) > self.finished_max:
                self._finished.popitem(last=False)
        return snapshot

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around a write to a run: reads that start after it never join an older query."""
        try:
            yield
        finally:
            self._generation += 1
