"""How far a map scales: run one map of N `builtin:noop` items and print every history's event
count and size against the targets (each history under 10,000 events and 5 MB).

Not part of `make bench` (a 100,000-item map takes long on a small machine); run it on its own:
`python -m bench.map_scale --items 100000`. A map of more than 100 chunks (50,000 items) fans out
in levels (workflows/map_levels.py), so the largest history stays near 1,000 events whatever N.

`--range` writes the items as `items: {range: {end: N}}` instead of an N-item input list (a
million numbers are 6.9 MB, past gRPC's 4 MB for a start); it needs map items to take the loop's
forms. `--minutes M` stops after M minutes: it prints items done per second (from the chunk
workflows that completed), the histories so far, and extrapolates the whole run's time, then
terminates it. E.g. `python -m bench.map_scale --items 1000000 --range --minutes 10`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client

from bench.workflow_bench import MAP_PACK, start_dev_server, start_run
from compiler import history
from workflows import pacing
from workflows.settings import WorkerSettings
from workflows.worker import build_worker

EVENT_TARGET = 10_000
BYTES_TARGET = 5 * 1024 * 1024


async def history_sizes(
    client: Client, workflow_id: str, problems: Counter[str]
) -> list[tuple[str, int, int]]:
    """(workflow id, events, bytes) of the run's every history: each continued run and child.
    Workflow tasks that failed or timed out are counted into `problems` by cause."""
    sizes = []
    query = f"WorkflowId = '{workflow_id}' OR WorkflowId STARTS_WITH '{workflow_id}/'"
    async for execution in client.list_workflows(query):
        history = await client.get_workflow_handle(
            execution.id, run_id=execution.run_id
        ).fetch_history()
        size = sum(event.ByteSize() for event in history.events)
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                attrs = event.workflow_task_failed_event_attributes
                cause = WorkflowTaskFailedCause.Name(attrs.cause).removeprefix(
                    "WORKFLOW_TASK_FAILED_CAUSE_"
                )
                if "TMPRL1101" in attrs.failure.message:
                    cause = "DEADLOCK (TMPRL1101)"
                problems[f"failed: {cause} (in a {_kind(execution.id, workflow_id)})"] += 1
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                problems[f"timed out (in a {_kind(execution.id, workflow_id)})"] += 1
        sizes.append((execution.id, len(history.events), size))
    return sizes


def _kind(execution_id: str, workflow_id: str) -> str:
    """Which of the run's workflows this is: the run, a group of chunks, or a chunk."""
    if execution_id == workflow_id:
        return "run"
    return "group" if execution_id.rsplit("/", 1)[-1].startswith("chunks-") else "chunk"


async def chunk_inputs(client: Client, workflow_id: str) -> list[int]:
    """Bytes of each chunk's `ChunkInput` as the parent's history records it (the payload a
    chunk starts with, held once per chunk in the parent's history)."""
    sizes = []
    async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        history = await client.get_workflow_handle(
            execution.id, run_id=execution.run_id
        ).fetch_history()
        for event in history.events:
            if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
                attrs = event.start_child_workflow_execution_initiated_event_attributes
                sizes.append(sum(payload.ByteSize() for payload in attrs.input.payloads))
    return sizes


async def bytes_by_event(client: Client, workflow_id: str) -> list[tuple[str, int, int]]:
    """What fills the run's own histories: (event type, count, bytes), biggest first."""
    totals: dict[str, list[int]] = {}
    async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        history = await client.get_workflow_handle(
            execution.id, run_id=execution.run_id
        ).fetch_history()
        for event in history.events:
            name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
            total = totals.setdefault(name, [0, 0])
            total[0] += 1
            total[1] += event.ByteSize()
    return sorted(((k, n, b) for k, (n, b) in totals.items()), key=lambda t: -t[2])


async def chunks_done(client: Client, workflow_id: str) -> int:
    """How many of the run's chunk workflows completed so far."""
    query = (
        f"WorkflowId STARTS_WITH '{workflow_id}/' AND WorkflowType = 'PackRunMapChunk' "
        "AND ExecutionStatus = 'Completed'"
    )
    return (await client.count_workflows(query)).count


async def measure(items: int, max_parallel: int, as_range: bool, minutes: float | None) -> None:
    env = await start_dev_server()
    try:
        client = env.client
        settings = WorkerSettings(data_dir=Path(tempfile.mkdtemp(prefix="bench-map-")))
        tq = f"bench-map-{uuid.uuid4().hex[:6]}"
        manifest = MAP_PACK.replace("maxParallel: 200", f"maxParallel: {max_parallel}")
        inputs: dict[str, Any] | None = {"items": list(range(items))}
        if as_range:
            manifest = manifest.replace('"inputs.items"', f"{{range: {{end: {items}}}}}")
            inputs = None
        async with build_worker(client, settings, task_queue=tq):
            began = time.perf_counter()
            handle = await start_run(client, tq, manifest, inputs)
            try:
                result = await asyncio.wait_for(
                    handle.result(), timeout=minutes * 60 if minutes else None
                )
            except TimeoutError:
                elapsed = time.perf_counter() - began
                await report_partial(client, handle, items, elapsed)
                await handle.terminate(reason="bench: time is up")
                return
            elapsed = time.perf_counter() - began
        print(f"map of {items:,} items: {result.status} in {elapsed:.0f} s")
        problems: Counter[str] = Counter()
        sizes = await history_sizes(client, handle.id, problems)
        events = max(s[1] for s in sizes)
        size = max(s[2] for s in sizes)
        parent = [s for s in sizes if s[0] == handle.id]
        print(f"histories: {len(sizes)} ({len(parent)} of the run itself)")
        print(
            f"largest history: {events:,} events (target < {EVENT_TARGET:,}: "
            f"{'met' if events < EVENT_TARGET else 'MISSED'}), {size / 2**20:.2f} MiB "
            f"(target < 5 MiB: {'met' if size < BYTES_TARGET else 'MISSED'})"
        )
        print(
            "workflow tasks that failed or timed out: "
            + (", ".join(f"{n} {cause}" for cause, n in problems.most_common()) or "none")
        )
        for wid, n, b in sorted(parent, key=lambda s: -s[2])[:3]:
            print(f"  run history {wid}: {n:,} events, {b / 2**20:.2f} MiB")
        children = sorted((s for s in sizes if s[0] != handle.id), key=lambda s: -s[2])
        for wid, n, b in children[:2]:
            print(f"  largest child {wid}: {n:,} events, {b / 2**20:.2f} MiB")
        for name, n, b in (await bytes_by_event(client, handle.id))[:4]:
            print(f"  in the run's histories: {n:,} x {name}, {b / 2**20:.2f} MiB")
        inputs = await chunk_inputs(client, handle.id)
        if inputs:
            print(
                f"ChunkInput per chunk: {len(inputs)} chunks, {min(inputs):,}..{max(inputs):,} "
                f"bytes (mean {sum(inputs) // len(inputs):,}); all together "
                f"{sum(inputs) / 2**20:.2f} MiB of the parent's history"
            )
    finally:
        await env.shutdown()


async def report_partial(client: Client, handle: Any, items: int, elapsed: float) -> None:
    """A run stopped after a while: how fast it went, its histories so far, and where it would
    end (linear in the chunks done: the groups are alike)."""
    done = min(items, await chunks_done(client, handle.id) * history.MAP_CHUNK_SIZE)
    rate = done / elapsed if elapsed else 0.0
    print(f"map of {items:,} items: stopped after {elapsed:.0f} s with {done:,} items done")
    print(f"items done per second: {rate:.1f}")
    if rate:
        whole = items / rate
        print(f"extrapolated time for all {items:,}: {whole:,.0f} s ({whole / 3600:.1f} h)")
    problems: Counter[str] = Counter()
    sizes = await history_sizes(client, handle.id, problems)
    groups = [s for s in sizes if s[0].rsplit("/", 1)[-1].startswith("chunks-")]
    chunks = [s for s in sizes if s[0].rsplit("/", 1)[-1].startswith("chunk-")]
    for wid, n, b in [s for s in sizes if s[0] == handle.id]:
        print(f"  run history so far {wid}: {n:,} events, {b / 2**20:.2f} MiB")
    for wid, n, b in sorted(groups, key=lambda s: -s[1])[:3]:
        print(f"  group history so far {wid}: {n:,} events, {b / 2**20:.2f} MiB")
    if chunks:
        n, b = max(s[1] for s in chunks), max(s[2] for s in chunks)
        print(f"  largest of {len(chunks)} chunk histories: {n:,} events, {b / 2**20:.2f} MiB")
    total_chunks = history.map_chunk_count(items)
    if history.map_span(total_chunks) == 1:
        print(f"one level: {total_chunks} chunks, started by the run itself")
    else:
        print(
            f"in levels: {len(history.map_children(0, total_chunks))} groups below the run, "
            f"{total_chunks} chunks; {len(groups)} groups started so far"
        )
    print(
        "workflow tasks that failed or timed out: "
        + (", ".join(f"{n} {cause}" for cause, n in problems.most_common()) or "none")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--max-parallel", type=int, default=200)
    parser.add_argument(
        "--starts-per-task",
        type=int,
        default=None,
        help="override workflows.pacing.STARTS_PER_TASK (a large number: no pacing), to compare",
    )
    parser.add_argument(
        "--range",
        action="store_true",
        help="items as `range: {end: N}` in the manifest, not an N-item input list",
    )
    parser.add_argument(
        "--minutes", type=float, default=None, help="stop after this long and extrapolate"
    )
    args = parser.parse_args(argv)
    if args.starts_per_task is not None:
        pacing.STARTS_PER_TASK = args.starts_per_task
        print(f"starts per workflow task: {pacing.STARTS_PER_TASK}")
    asyncio.run(measure(args.items, args.max_parallel, args.range, args.minutes))


if __name__ == "__main__":
    main()
