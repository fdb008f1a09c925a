"""Runtime figures on the embedded dev server: throughput, interpreter overhead, fan-out.

Run: `python -m bench.workflow_bench [--runs 50] [--steps 10] [--map-items 10000]`.
Both sides of every ratio run in this one process, against the same server, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.artifacts import ArtifactStore
from activities.registry import Registry
from activities.step_activities import StepActivities
from bench.baseline import BaselineSteps
from compiler import CompiledPlan, compile_manifest
from workflows.contract.names import SEARCH_ATTRIBUTES, WORKFLOW_TYPE, workflow_id
from workflows.contract.state import PackRunInput, RunMeta, RunResult
from workflows.settings import WorkerSettings
from workflows.worker import build_worker


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    note: str = ""
    target: str = ""
    met: bool | None = None


def noop_pack(steps: int) -> str:
    body = "\n".join(f'    - {{id: s{i}, run: {{uses: "builtin:noop"}}}}' for i in range(steps))
    return (
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\n"
        "metadata: {name: bench, version: 1.0.0}\nspec:\n  steps:\n" + body + "\n"
    )


MAP_PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: fanout, version: 1.0.0}
spec:
  inputs: [{name: items, type: array}]
  steps:
    - id: fan
      map: {items: "inputs.items", maxParallel: 200, step: {id: one, run: {uses: "builtin:noop"}}}
"""


async def start_run(
    client: Client,
    task_queue: str,
    manifest: str,
    inputs: Any = None,
    compiled: CompiledPlan | None = None,
) -> Any:
    """Start a run of `manifest` (compiled here unless `compiled` is given)."""
    compiled = compiled or compile_manifest(manifest, inputs)
    run_id = f"bench-{uuid.uuid4().hex[:10]}"
    return await client.start_workflow(
        WORKFLOW_TYPE,
        PackRunInput(
            plan=compiled.plan,
            planHash=compiled.plan_hash,
            meta=RunMeta(runId=run_id, tenant="bench", requestedAt="2026-01-01T00:00:00Z"),
        ),
        id=workflow_id("bench", run_id),
        task_queue=task_queue,
        result_type=RunResult,
    )


async def pack_batch(client: Client, task_queue: str, runs: int, steps: int) -> float:
    manifest = noop_pack(steps)
    # Compiled once, as the baseline's side has nothing to compile: the ratio is the workflows'
    # (compiling is measured in its own section).
    compiled = compile_manifest(manifest)
    started = time.perf_counter()
    handles = await asyncio.gather(
        *(start_run(client, task_queue, manifest, compiled=compiled) for _ in range(runs))
    )
    results = await asyncio.gather(*(h.result() for h in handles))
    elapsed = time.perf_counter() - started
    assert all(r.status == "succeeded" for r in results), results
    return elapsed


async def baseline_batch(client: Client, task_queue: str, runs: int, steps: int) -> float:
    started = time.perf_counter()
    handles = await asyncio.gather(
        *(
            client.start_workflow(
                BaselineSteps.run, steps, id=f"baseline-{uuid.uuid4().hex}", task_queue=task_queue
            )
            for _ in range(runs)
        )
    )
    await asyncio.gather(*(h.result() for h in handles))
    return time.perf_counter() - started


async def largest_history(client: Client, handle: Any) -> tuple[int, int]:
    lengths = [len((await handle.fetch_history()).events)]
    async for child in client.list_workflows(f"WorkflowId STARTS_WITH '{handle.id}/'"):
        history = await client.get_workflow_handle(child.id, run_id=child.run_id).fetch_history()
        lengths.append(len(history.events))
    return max(lengths), len(lengths)


async def start_dev_server() -> WorkflowEnvironment:
    """The embedded dev server from this venv's `temporal` binary, with our search attributes."""
    scripts = Path(sysconfig.get_path("scripts"))
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(scripts / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )


async def overhead(client: Client, runs: int, steps: int, rounds: int) -> list[Figure]:
    """Throughput of `runs` concurrent `steps`-step noop packs against the hand-written baseline,
    each side on a worker of its own in this process, best of `rounds`."""
    settings = WorkerSettings(data_dir=Path(tempfile.mkdtemp(prefix="bench-")))
    tq = f"bench-{uuid.uuid4().hex[:6]}"
    worker = build_worker(client, settings, task_queue=tq)
    baseline_tq = f"{tq}-baseline"
    baseline = Worker(
        client,
        task_queue=baseline_tq,
        workflows=[BaselineSteps],
        activities=StepActivities(Registry(), ArtifactStore(settings.data_dir)).activities(),
    )
    async with worker, baseline:
        # Warm both paths once so imports and sandbox set-up are not timed.
        await pack_batch(client, tq, 2, 2)
        await baseline_batch(client, baseline_tq, 2, 2)
        ours: list[float] = []
        theirs: list[float] = []
        cpu: dict[str, list[tuple[float, float]]] = {"ours": [], "theirs": []}
        for _ in range(rounds):
            # Alternate the two sides so drift on a shared machine hits both alike.
            with cpu_used(cpu["theirs"]):
                theirs.append(await baseline_batch(client, baseline_tq, runs, steps))
            with cpu_used(cpu["ours"]):
                ours.append(await pack_batch(client, tq, runs, steps))
    ours_best, theirs_best = min(ours), min(theirs)
    # Each round's pair, side by side: the spread says how much the shared machine moved.
    paired = [o / t for o, t in zip(ours, theirs, strict=True)]
    rounds_note = ", ".join(f"{o:.1f}/{t:.1f} s" for o, t in zip(ours, theirs, strict=True))
    # Wall time ours / theirs and throughput theirs / ours are the same number.
    ratio = ours_best / theirs_best
    total_steps = runs * steps
    return [
        *cpu_figures(cpu, runs),
        Figure(
            "overhead ratio, median of rounds",
            statistics.median(paired),
            "x",
            f"each round's ours / hand-written: {', '.join(f'{r:.2f}' for r in paired)}",
        ),
        Figure("throughput runs/s (TaskRunner)", runs / ours_best, "runs/s"),
        Figure("throughput steps/s (TaskRunner)", total_steps / ours_best, "steps/s"),
        Figure("throughput runs/s (hand-written)", runs / theirs_best, "runs/s"),
        Figure("batch wall time (TaskRunner)", ours_best, "s", f"{runs} runs x {steps} steps"),
        Figure("batch wall time (hand-written)", theirs_best, "s", "same work, same activity"),
        Figure(
            "overhead ratio, wall time",
            ratio,
            "x",
            f"best ours / best hand-written of {rounds}; rounds: {rounds_note}",
            target="<= 1.3",
            met=ratio <= 1.3,
        ),
        Figure(
            "overhead ratio, throughput",
            ratio,
            "x",
            "hand-written / ours",
            target="<= 1.3",
            met=ratio <= 1.3,
        ),
    ]


@contextmanager
def cpu_used(into: list[tuple[float, float]]) -> Iterator[None]:
    """Append the CPU seconds this process (client and workers) and its children (the dev
    server) used inside the block: where a batch's time went, whatever else the machine ran."""
    own, children = time.process_time(), children_cpu()
    yield
    into.append((time.process_time() - own, children_cpu() - children))


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's live child processes, from /proc."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def cpu_figures(cpu: dict[str, list[tuple[float, float]]], runs: int) -> list[Figure]:
    """CPU milliseconds per run of each side, in the worker process and in the server: medians
    over the rounds (the throughput ratio's two causes, less sensitive to other load)."""
    figures = []
    for side, label in (("ours", "TaskRunner"), ("theirs", "hand-written")):
        for index, where in ((0, "client + workers process"), (1, "Temporal dev server")):
            each = [pair[index] * 1000 / runs for pair in cpu[side]]
            figures.append(
                Figure(
                    f"CPU per run, {where} ({label})",
                    statistics.median(each),
                    "ms",
                    "rounds: " + ", ".join(f"{ms:.1f}" for ms in each),
                )
            )
    return figures


async def fanout(client: Client, items: int) -> list[Figure]:
    """A map over `items` noop items on a worker in this process: wall time, largest history."""
    settings = WorkerSettings(data_dir=Path(tempfile.mkdtemp(prefix="bench-")))
    tq = f"bench-{uuid.uuid4().hex[:6]}"
    async with build_worker(client, settings, task_queue=tq):
        started = time.perf_counter()
        handle = await start_run(client, tq, MAP_PACK, {"items": list(range(items))})
        result = await handle.result()
        elapsed = time.perf_counter() - started
    assert result.status == "succeeded", result
    biggest, workflows = await largest_history(client, handle)
    return [
        Figure(f"map over {items} items, wall time", elapsed, "s"),
        Figure(
            "largest history of any workflow",
            biggest,
            "events",
            f"{workflows} workflows",
            target="< 10000",
            met=biggest < 10_000,
        ),
    ]


async def measure(args: argparse.Namespace) -> list[Figure]:
    env = await start_dev_server()
    try:
        figures = await overhead(env.client, args.runs, args.steps, args.rounds)
        if args.map_items:
            figures += await fanout(env.client, args.map_items)
    finally:
        await env.shutdown()
    return figures


def print_table(figures: list[Figure]) -> None:
    width = max(len(f.name) for f in figures)
    for f in figures:
        value = f"{f.value:,.3f}" if f.value < 100 else f"{f.value:,.0f}"
        target = f"target {f.target}: {'met' if f.met else 'MISSED'}; " if f.target else ""
        print(f"{f.name:<{width}}  {value:>12} {f.unit:<7} {target}{f.note}")


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--map-items", type=int, default=10_000)
    figures = asyncio.run(measure(parser.parse_args(argv)))
    print_table(figures)
    return figures


if __name__ == "__main__":
    main()
