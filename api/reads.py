"""Reads of run state that do not wait on the worker.

Every `GET /runs/{runId}` of a live run is answered from a `state` query, and a query is a round
trip through the Temporal server to a worker's poller and back: on two cores with 200 runs
waiting at gates, `make bench` measured p50 330 ms / p99 880 ms for the raw query (about 130
queries/s at most), while the API itself and a server-only `describe` answer in a fraction of
that. py-spy on the worker showed it mostly idle and no measurable time in building the state
(`RunBook.snapshot`): the bound is the query's dispatch, not its answer. So reads do not queue
one query each:

- **Shared.** Concurrent reads of the same page of the same run share one query in flight.
- **Short-cached, refreshed behind.** A live run's state read less than `fresh_for` ago answers
  as it is; one read less than `max_age` ago answers at once too and starts one refresh in the
  background for the next reader. So a run costs at most about one query per `fresh_for`
  however many read it, and a reader sees a state at most `max_age` old. The response says how
  old (`Age`), so no one mistakes it for a newer one.
- **Own writes first.** Every write this API sends to a run (a decision, a cancel) starts a new
  generation of that run; a read never answers from, nor joins a query of, an older one, so
  callers always read their own writes.
- **Finished runs** no longer change: their state is kept for `finished_ttl` (the gateway reads
  it from the run's result, without a worker, see `RunGateway.state`). Only a Temporal reset, an
  operator's action outside this API, brings a finished run back; the TTL bounds the miss.
- **A worker outage** does not turn reads into 503s: when the query fails or has not answered
  within `patience`, the last state this API read answers, with its age and why it is stale
  (`stale`), while the query goes on in the background and refreshes it when it lands. Only a
  run this API has never read waits the whole query timeout (then 503).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from workflows.contract.state import TERMINAL_RUN_STATUSES, RunStateSnapshot

FRESH_SECONDS = 0.5
MAX_AGE_SECONDS = 2.0
PATIENCE_SECONDS = 2.0
FINISHED_TTL_SECONDS = 600.0
MAX_RUNS = 4096

Fetch = Callable[[], Awaitable[RunStateSnapshot]]


@dataclass(frozen=True)
class Read:
    """A state and how old it is: seconds since the run answered it."""

    snapshot: RunStateSnapshot
    age: float = 0.0
    stale: str | None = None
    """Why an older state answers than `max_age` allows (the run did not answer), if it does."""


@dataclass
class _Known:
    snapshot: RunStateSnapshot
    read_at: float
    generation: int


@dataclass
class _Flight:
    task: asyncio.Task[RunStateSnapshot]
    generation: int
    started: float


class StateReads:
    """One per app: the queries in flight and the runs' last known states."""

    def __init__(
        self,
        *,
        fresh_for: float = FRESH_SECONDS,
        max_age: float = MAX_AGE_SECONDS,
        patience: float = PATIENCE_SECONDS,
        finished_ttl: float = FINISHED_TTL_SECONDS,
        max_runs: int = MAX_RUNS,
        transient: Callable[[BaseException], bool] = lambda exc: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_for = fresh_for
        self.max_age = max_age
        self.patience = patience
        self.finished_ttl = finished_ttl
        self.max_runs = max_runs
        self.transient = transient
        """Whether a failed query may be answered with the last known state (not a 404, say)."""
        self._clock = clock
        self._generation = 0
        """Counts writes; a query carries the count at its start."""
        self._written: OrderedDict[str, int] = OrderedDict()
        """The count after each run's last write."""
        self._in_flight: dict[Hashable, _Flight] = {}
        self._known: OrderedDict[Hashable, _Known] = OrderedDict()
        self._requesters: OrderedDict[str, str] = OrderedDict()

    async def read(self, run: str, page: Hashable, fetch: Fetch) -> Read:
        """The state of `page` of `run`: known recently enough, or from `fetch` (shared), or,
        when `fetch` fails or is slow, the last known one with its age."""
        key = (run, page)
        now = self._clock()
        known = self._known.get(key)
        if known is not None:
            age = now - known.read_at
            if known.snapshot.status in TERMINAL_RUN_STATUSES:
                if age < self.finished_ttl:
                    return Read(known.snapshot, age)
            elif known.generation >= self._written.get(run, 0) and age < self.max_age:
                if age >= self.fresh_for:
                    self._flight(run, key, fetch)  # for the next reader; this one does not wait
                return Read(known.snapshot, age)
        flight = self._flight(run, key, fetch)
        # Shielded: a caller that goes away must not cancel the query the others wait for.
        if known is None:
            return Read(await asyncio.shield(flight.task))
        # A query that has been out for a while already used up the patience of earlier readers.
        wait = max(0.0, self.patience - (now - flight.started))
        try:
            return Read(await asyncio.wait_for(asyncio.shield(flight.task), wait))
        except TimeoutError:
            why = f"the run has not answered for {self._clock() - flight.started:.1f}s"
        except Exception as exc:
            if not self.transient(exc):
                raise
            why = f"the run did not answer: {str(exc)[:200]}"
        return Read(known.snapshot, self._clock() - known.read_at, why)

    def live(self, run: str, page: Hashable) -> bool:
        """Whether `page` of `run` was last known to be a live run's."""
        known = self._known.get((run, page))
        return known is not None and known.snapshot.status not in TERMINAL_RUN_STATUSES

    def _flight(self, run: str, key: Hashable, fetch: Fetch) -> _Flight:
        flight = self._in_flight.get(key)
        if flight is None or flight.generation < self._written.get(run, 0):
            task = asyncio.ensure_future(self._fetch(key, fetch, self._generation))
            # Retrieved here too, so a failure whose callers all left is not reported as lost.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            flight = _Flight(task, self._generation, self._clock())
            self._in_flight[key] = flight
        return flight

    async def _fetch(self, key: Hashable, fetch: Fetch, generation: int) -> RunStateSnapshot:
        try:
            snapshot = await fetch()
        finally:
            current = self._in_flight.get(key)
            if current is not None and current.task is asyncio.current_task():
                del self._in_flight[key]
        known = self._known.get(key)
        # An answer to a query sent before a write never replaces one sent after it.
        if known is None or known.generation <= generation:
            self._known[key] = _Known(snapshot, self._clock(), generation)
            self._known.move_to_end(key)
            while len(self._known) > self.max_runs:
                self._known.popitem(last=False)
        return snapshot

    async def requester(self, run: str, fetch: Callable[[], Awaitable[str]]) -> str:
        """Who started `run`: it never changes, so it is read once (from the run's first event)
        and kept, for as many runs as states are."""
        known = self._requesters.get(run)
        if known is None:
            known = await fetch()
            self._requesters[run] = known
            while len(self._requesters) > self.max_runs:
                self._requesters.popitem(last=False)
        else:
            self._requesters.move_to_end(run)
        return known

    @contextmanager
    def writing(self, run: str) -> Iterator[None]:
        """Around a write to `run`: reads that start after it never answer from, nor join, a
        query sent before it ended."""
        try:
            yield
        finally:
            self._generation += 1
            self._written[run] = self._generation
            self._written.move_to_end(run)
            while len(self._written) > 4 * self.max_runs:
                # Long after its write: no state known from before it is still kept.
                self._written.popitem(last=False)
