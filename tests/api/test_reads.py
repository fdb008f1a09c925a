"""Shared reads of run state (api/reads.py): one query for concurrent readers, never a stale read
after this API's own write, finished runs kept briefly."""

from __future__ import annotations

import asyncio
from typing import Any

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
    """A fake `state` query: counts calls, answers when released."""

    def __init__(self, status: str = "running") -> None:
        self.calls = 0
        self.status = status
        self.release = asyncio.Event()

    async def fetch(self) -> RunStateSnapshot:
        self.calls += 1
        marker = f"answer-{self.calls}"
        await self.release.wait()
        return snapshot(self.status, marker)


class TestSharedQueries:
    async def test_concurrent_reads_share_one_query(self) -> None:
        reads, backend = StateReads(), Backend()
        readers = [asyncio.create_task(reads.read("run", backend.fetch)) for _ in range(50)]
        await asyncio.sleep(0)
        backend.release.set()
        answers = await asyncio.gather(*readers)
        assert backend.calls == 1
        assert {a.runId for a in answers} == {"answer-1"}

    async def test_different_pages_are_different_queries(self) -> None:
        reads, backend = StateReads(), Backend()
        backend.release.set()
        await asyncio.gather(
            reads.read(("run", 0, 10), backend.fetch), reads.read(("run", 10, 10), backend.fetch)
        )
        assert backend.calls == 2

    async def test_a_read_after_a_write_never_joins_an_older_query(self) -> None:
        reads, backend = StateReads(), Backend()
        before = asyncio.create_task(reads.read("run", backend.fetch))
        await asyncio.sleep(0)
        with reads.writing():
            pass
        after = asyncio.create_task(reads.read("run", backend.fetch))
        await asyncio.sleep(0)
        backend.release.set()
        assert (await before).runId == "answer-1"
        assert (await after).runId == "answer-2"

    async def test_a_reader_leaving_does_not_cancel_the_query(self) -> None:
        reads, backend = StateReads(), Backend()
        leaving = asyncio.create_task(reads.read("run", backend.fetch))
        staying = asyncio.create_task(reads.read("run", backend.fetch))
        await asyncio.sleep(0)
        leaving.cancel()
        backend.release.set()
        assert (await staying).runId == "answer-1"
        assert backend.calls == 1

    async def test_a_failure_reaches_every_reader_and_is_not_kept(self) -> None:
        reads = StateReads()
        calls = 0

        async def failing() -> RunStateSnapshot:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            raise LookupError("no such run")

        results = await asyncio.gather(
            *(reads.read("run", failing) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, LookupError) for r in results)
        assert calls == 1
        await asyncio.gather(reads.read("run", failing), return_exceptions=True)
        assert calls == 2


class TestFinishedRuns:
    async def test_a_live_run_is_queried_every_time(self) -> None:
        reads, backend = StateReads(), Backend("awaiting-approval")
        backend.release.set()
        for _ in range(3):
            await reads.read("run", backend.fetch)
        assert backend.calls == 3

    async def test_a_finished_run_is_kept_until_the_ttl(self) -> None:
        now = [0.0]
        reads, backend = StateReads(finished_ttl=10, clock=lambda: now[0]), Backend("succeeded")
        backend.release.set()
        for _ in range(3):
            assert (await reads.read("run", backend.fetch)).runId == "answer-1"
        now[0] = 10.5
        assert (await reads.read("run", backend.fetch)).runId == "answer-2"

    async def test_kept_runs_are_bounded(self) -> None:
        reads, backend = StateReads(finished_max=2), Backend("failed")
        backend.release.set()
        for key in ("a", "b", "c", "a"):
            await reads.read(key, backend.fetch)
        assert backend.calls == 4  # "a" was pushed out by "c"
