"""Shared reads of run state (api/reads.py): one query for concurrent readers, a recent state
answered at once and refreshed behind, never a stale read after this API's own write, the last
known state (marked stale) when the run does not answer, finished runs kept.

The backend here stands in for the `state` query so the timing can be stepped exactly; the same
behaviour against a real worker is in test_reads_live.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api.reads import StateReads
from compiler.plan import FailurePolicy
from workflows.contract.state import RunStateSnapshot


def snapshot(status: Any = "running", marker: str = "a") -> RunStateSnapshot:
    return RunStateSnapshot(
        runId=marker,
        tenant="t",
        pack="p",
        packVersion="1",
        planHash="sha256:" + "0" * 64,
        status=status,
        failurePolicy=FailurePolicy(maxAttempts=1, backoffSeconds=0, continueOnError=False),
        createdAt="2026-01-01T00:00:00Z",
        updatedAt="2026-01-01T00:00:00Z",
    )


class Backend:
    """A stand-in `state` query: counts calls, answers when released (or fails when told)."""

    def __init__(self, status: str = "running") -> None:
        self.calls = 0
        self.status = status
        self.release = asyncio.Event()
        self.failure: Exception | None = None

    async def fetch(self) -> RunStateSnapshot:
        self.calls += 1
        marker = f"answer-{self.calls}"
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return snapshot(self.status, marker)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reads_with(clock: Clock, **options: Any) -> StateReads:
    return StateReads(
        clock=clock,
        transient=lambda exc: not isinstance(exc, LookupError),
        **{"fresh_for": 0.5, "max_age": 2.0, "patience": 0.05, **options},
    )


class TestSharedQueries:
    async def test_concurrent_reads_share_one_query(self) -> None:
        reads, backend = StateReads(), Backend()
        readers = [asyncio.create_task(reads.read("run", 0, backend.fetch)) for _ in range(50)]
        await asyncio.sleep(0)
        backend.release.set()
        answers = await asyncio.gather(*readers)
        assert backend.calls == 1
        assert {a.snapshot.runId for a in answers} == {"answer-1"}

    async def test_different_pages_are_different_queries(self) -> None:
        reads, backend = StateReads(), Backend()
        backend.release.set()
        await asyncio.gather(
            reads.read("run", (0, 10), backend.fetch), reads.read("run", (10, 10), backend.fetch)
        )
        assert backend.calls == 2

    async def test_a_read_after_a_write_never_joins_an_older_query(self) -> None:
        reads, backend = StateReads(), Backend()
        before = asyncio.create_task(reads.read("run", 0, backend.fetch))
        await asyncio.sleep(0)
        with reads.writing("run"):
            pass
        after = asyncio.create_task(reads.read("run", 0, backend.fetch))
        await asyncio.sleep(0)
        backend.release.set()
        assert (await before).snapshot.runId == "answer-1"
        assert (await after).snapshot.runId == "answer-2"

    async def test_a_reader_leaving_does_not_cancel_the_query(self) -> None:
        reads, backend = StateReads(), Backend()
        leaving = asyncio.create_task(reads.read("run", 0, backend.fetch))
        staying = asyncio.create_task(reads.read("run", 0, backend.fetch))
        await asyncio.sleep(0)
        leaving.cancel()
        backend.release.set()
        assert (await staying).snapshot.runId == "answer-1"
        assert backend.calls == 1

    async def test_a_failure_of_a_never_read_run_reaches_every_reader(self) -> None:
        reads = StateReads()
        calls = 0

        async def failing() -> RunStateSnapshot:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            raise LookupError("no such run")

        results = await asyncio.gather(
            *(reads.read("run", 0, failing) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, LookupError) for r in results)
        assert calls == 1
        await asyncio.gather(reads.read("run", 0, failing), return_exceptions=True)
        assert calls == 2


class TestRecentStates:
    async def test_a_fresh_state_answers_without_a_query(self) -> None:
        clock, backend = Clock(), Backend()
        reads = reads_with(clock)
        backend.release.set()
        await reads.read("run", 0, backend.fetch)
        clock.now = 0.4
        read = await reads.read("run", 0, backend.fetch)
        assert backend.calls == 1
        assert read.age == pytest.approx(0.4)
        assert read.stale is None

    async def test_an_older_state_answers_at_once_and_is_refreshed_behind(self) -> None:
        clock, backend = Clock(), Backend()
        reads = reads_with(clock)
        backend.release.set()
        await reads.read("run", 0, backend.fetch)
        backend.release.clear()
        clock.now = 1.0
        read = await reads.read("run", 0, backend.fetch)  # the refresh has not answered yet
        assert read.snapshot.runId == "answer-1" and read.age == pytest.approx(1.0)
        backend.release.set()
        await asyncio.sleep(0.01)
        assert backend.calls == 2
        assert (await reads.read("run", 0, backend.fetch)).snapshot.runId == "answer-2"

    async def test_a_state_past_max_age_is_read_again(self) -> None:
        clock, backend = Clock(), Backend()
        reads = reads_with(clock)
        backend.release.set()
        await reads.read("run", 0, backend.fetch)
        clock.now = 2.5
        read = await reads.read("run", 0, backend.fetch)
        assert read.snapshot.runId == "answer-2" and read.age == 0

    async def test_after_a_write_the_known_state_is_not_used(self) -> None:
        clock, backend = Clock(), Backend()
        reads = reads_with(clock)
        backend.release.set()
        await reads.read("run", 0, backend.fetch)
        with reads.writing("run"):
            pass
        assert (await reads.read("run", 0, backend.fetch)).snapshot.runId == "answer-2"

    async def test_a_write_to_another_run_keeps_this_ones(self) -> None:
        clock, backend = Clock(), Backend()
        reads = reads_with(clock)
        backend.release.set()
        await reads.read("run", 0, backend.fetch)
        with reads.writing("other"):
            pass
        assert (await reads.read("run", 0, backend.fetch)).snapshot.runId == "answer-1"


class TestRunNotAnswering:
    async def test_a_failing_query_answers_the_last_known_state_marked_stale(self) -> None:
        clock, backend = Clock(), Backend()
        reads = reads_with(clock)
        backend.release.set()
        await reads.read("run", 0, backend.fetch)
        backend.failure = RuntimeError("no poller")
        clock.now = 30.0
        read = await reads.read("run", 0, backend.fetch)
        assert read.snapshot.runId == "answer-1"
        assert read.age == pytest.approx(30.0)
        assert read.stale is not None and "no poller" in read.stale

    async def test_a_slow_query_answers_the_last_known_state_then_replaces_it(self) -> None:
        clock, backend = Clock(), Backend()
        reads = reads_with(clock)
        backend.release.set()
        await reads.read("run", 0, backend.fetch)
        backend.release.clear()
        clock.now = 5.0
        read = await reads.read("run", 0, backend.fetch)  # waits `patience`, then gives up
        assert read.snapshot.runId == "answer-1" and read.stale is not None
        backend.release.set()
        await asyncio.sleep(0.01)
        assert (await reads.read("run", 0, backend.fetch)).snapshot.runId == "answer-2"

    async def test_a_definite_answer_is_not_hidden_behind_the_last_state(self) -> None:
        clock, backend = Clock(), Backend()
        reads = reads_with(clock)
        backend.release.set()
        await reads.read("run", 0, backend.fetch)
        backend.failure = LookupError("the run is gone")
        clock.now = 5.0
        with pytest.raises(LookupError):
            await reads.read("run", 0, backend.fetch)


class TestFinishedRuns:
    async def test_a_finished_run_is_kept_until_the_ttl(self) -> None:
        clock, backend = Clock(), Backend("succeeded")
        reads = reads_with(clock, finished_ttl=10)
        backend.release.set()
        for _ in range(3):
            assert (await reads.read("run", 0, backend.fetch)).snapshot.runId == "answer-1"
        clock.now = 10.5
        assert (await reads.read("run", 0, backend.fetch)).snapshot.runId == "answer-2"

    async def test_known_runs_are_bounded(self) -> None:
        reads, backend = StateReads(max_runs=2), Backend("failed")
        backend.release.set()
        for key in ("a", "b", "c", "a"):
            await reads.read(key, 0, backend.fetch)
        assert backend.calls == 4  # "a" was pushed out by "c"
