"""`make bench` (`python -m bench`): every benchmark, printed as one table and written as JSON.

- compile: load + validate + plan + hash, and simulate, of generated 1,000- and 10,000-step packs
  (bench/compile_bench.py);
- runtime, on the embedded dev server (the venv's `temporal` binary) with workers in this
  process: 50 and 1,000 concurrent 10-step `builtin:noop` runs against the hand-written
  `BaselineSteps` workflow, and a map over 10,000 items (bench/workflow_bench.py);
- history: events per step of a sequence, a parallel block, a map of 100 and a gate against the
  baseline (bench/history_bench.py);
- reads, against a worker and the API each in a process of their own: `GET /runs/{id}` p50/p99
  with 50 readers while 0, 200 and 1,000 runs wait at gates, beside `/healthz`, a raw describe
  and a raw query under the same readers (bench/read_bench.py);
- API, likewise: approval latency and read latency (bench/api_bench.py);
- keyed creates: 200 and 1,000 `POST /runs` with an `Idempotency-Key`, 50 and 100 at once, then
  retried: 5xx, duplicate runs, and creates/s against as many unkeyed creates, with the API's
  database on SQLite and on PostgreSQL (bench/keyed_bench.py);
- sandbox: the start-up cost of running a step's command in the sandbox against a bare
  subprocess, as a ratio (bench/sandbox_bench.py).

Each figure that has a target says whether it met it. The machine is part of the result: the
numbers mean little without it, and the load average says whether something else was running.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import (
    api_bench,
    compile_bench,
    history_bench,
    keyed_bench,
    read_bench,
    sandbox_bench,
    workflow_bench,
)
from bench.service import service

DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"


@dataclass
class Row:
    section: str
    metric: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    temporal = Path(sysconfig.get_path("scripts")) / "temporal"
    try:
        server = subprocess.run(
            [str(temporal), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        server = "unknown"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "temporal": server,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def compile_bytecode() -> str:
    """Compile the project's modules to bytecode, as `pip install` does for a deployed image.

    The workflow sandbox imports the workflow modules afresh for every workflow instance it
    creates (each run, each replay of a finished run for a query). Where PYTHONDONTWRITEBYTECODE
    is set, as on this machine, and nothing else wrote the `.pyc` files, each of those imports
    compiles the source again: a third of a cold replay's time.
    """
    root = Path(__file__).resolve().parent.parent
    for package in ("compiler", "workflows", "activities", "api", "cli", "bench"):
        compileall.compile_dir(root / package, quiet=1)
    where = "PYTHONDONTWRITEBYTECODE is set" if sys.flags.dont_write_bytecode else "as usual"
    return f"precompiled by the bench ({where})"


def compile_rows(sizes: list[int], repeat: int) -> list[Row]:
    rows = []
    for size in sizes:
        steps, kib, timings = compile_bench.measure(size, repeat)
        label = f"{steps:,} steps ({kib} KiB)"
        target = "< 1 s" if size >= 10_000 else ""
        rows.append(
            Row(
                "compile",
                f"compile {label}",
                timings["compile"] * 1000,
                "ms",
                target,
                timings["compile"] < 1.0 if target else None,
                f"best of {repeat}; load+models+plan+hash",
            )
        )
        rows.append(
            Row("compile", f"simulate {label}", timings["simulate"] * 1000, "ms", "", None, "")
        )
    return rows


def runtime_rows(figures: list[workflow_bench.Figure]) -> list[Row]:
    return [Row("runtime", f.name, f.value, f.unit, f.target, f.met, f.note) for f in figures]


def api_rows(f: api_bench.ApiFigures, readers: int) -> list[Row]:
    gates = len(f.approval.samples)
    return [
        Row(
            "api",
            "approval: POST decision -> next step.started, p50",
            f.approval.pct(50),
            "ms",
            "< 150 ms",
            f.approval.pct(50) < 150,
            f"{gates} gates, one at a time",
        ),
        Row("api", "approval: POST -> next step.started, p95", f.approval.pct(95), "ms"),
        Row(
            "api",
            "approval: POST round trip, p50 / p95",
            f.decision_round_trip.pct(50),
            "ms",
            note=f"p95 {f.decision_round_trip.pct(95):.1f} ms",
        ),
        *(
            row
            for label, lat, rps in (
                ("live run (at a gate)", f.read_live, f.read_live_rps),
                ("finished runs, after a first read", f.read_finished, f.read_finished_rps),
            )
            for row in (
                Row("api", f"GET run, {label}, p50", lat.pct(50), "ms", note=f"{rps:.0f} req/s"),
                Row(
                    "api",
                    f"GET run, {label}, p99",
                    lat.pct(99),
                    "ms",
                    "< 100 ms",
                    lat.pct(99) < 100,
                    f"{readers} concurrent readers, {len(lat.samples)} requests",
                ),
            )
        ),
        Row(
            "api",
            "GET run, finished, first read, p50",
            f.finished_first_read.pct(50),
            "ms",
            note=f"p95 {f.finished_first_read.pct(95):.0f} ms; {gates} at once, from the result",
        ),
    ]


async def runtime_and_api(args: argparse.Namespace) -> list[Row]:
    env = await workflow_bench.start_dev_server()
    rows: list[Row] = []
    try:
        client = env.client
        figures = await workflow_bench.overhead(client, args.runs, args.steps, args.rounds)
        if args.big_runs:
            # Issue #12: 1,000 concurrent runs, `--big-rounds` times (one: a round takes minutes).
            big = await workflow_bench.overhead(client, args.big_runs, args.steps, args.big_rounds)
            for figure in big:
                figure.name = f"{figure.name}, {args.big_runs:,} at once"
                figures.append(figure)
        if args.map_items:
            figures += await workflow_bench.fanout(client, args.map_items)
        rows += runtime_rows(figures)
        rows += [
            Row("history", f.name, f.value, f.unit, f.target, f.met, f.note)
            for f in await history_bench.measure(client)
        ]
        address = client.service_client.config.target_host
        if args.waiting:
            reads = await read_bench.measure(
                client, address, args.waiting, args.readers, args.read_seconds
            )
            rows += [Row("reads", f.name, f.value, f.unit, f.target, f.met, f.note) for f in reads]
        data_dir = Path(tempfile.mkdtemp(prefix="bench-api-"))
        with service(address, f"bench-api-{uuid.uuid4().hex[:6]}", data_dir) as svc:
            api = await api_bench.measure(
                svc.url, gates=args.gates, readers=args.readers, requests_each=args.requests
            )
        rows += api_rows(api, args.readers)
        if args.keyed_databases:
            rows += await keyed_rows(client, address, args.keyed_databases)
    finally:
        await env.shutdown()
    return rows


async def keyed_rows(client: Any, address: str, databases: list[str]) -> list[Row]:
    figures = await keyed_bench.measure(client, address, databases)
    return [Row("keyed", f.name, f.value, f.unit, f.target, f.met, f.note) for f in figures]


async def throughput_only(args: argparse.Namespace) -> list[Row]:
    """The throughput comparison alone: `--runs` x `--rounds`, then `--big-runs` once."""
    env = await workflow_bench.start_dev_server()
    try:
        client = env.client
        figures: list[workflow_bench.Figure] = []
        if args.runs:
            figures += await workflow_bench.overhead(client, args.runs, args.steps, args.rounds)
        if args.big_runs:
            big = await workflow_bench.overhead(client, args.big_runs, args.steps, args.big_rounds)
            for figure in big:
                figure.name = f"{figure.name}, {args.big_runs:,} at once"
                figures.append(figure)
        return runtime_rows(figures)
    finally:
        await env.shutdown()


async def keyed_only(databases: list[str]) -> list[Row]:
    env = await workflow_bench.start_dev_server()
    try:
        address = env.client.service_client.config.target_host
        return await keyed_rows(env.client, address, databases)
    finally:
        await env.shutdown()


def render(rows: list[Row], info: dict[str, Any], seconds: float) -> str:
    lines = [
        f"machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory_gib']} GiB; "
        f"Python {info['python']}; {info['temporal'].splitlines()[0] if info['temporal'] else ''}",
        f"load average at start: {info['load_average_at_start']}; bench took {seconds:.0f} s; "
        f"bytecode {info['bytecode']}",
        "",
    ]
    width = max(len(r.metric) for r in rows)
    header = f"{'section':<8}  {'metric':<{width}}  {'value':>10} {'unit':<7}  {'target':<9} ok"
    lines += [header, "-" * (len(header) + 40)]
    for r in rows:
        value = f"{r.value:,.1f}" if abs(r.value) < 10_000 else f"{r.value:,.0f}"
        if r.unit == "x":
            value = f"{r.value:.2f}"
        ok = "" if r.met is None else ("yes" if r.met else "NO")
        note = f"  {r.note}" if r.note else ""
        lines.append(
            f"{r.section:<8}  {r.metric:<{width}}  {value:>10} {r.unit:<7}  {r.target:<9} {ok:<3}"
            f"{note}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=5, help="compile timings: best of")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-runs", type=int, default=1000, help="0 skips the large batch")
    parser.add_argument(
        "--big-rounds", type=int, default=1, help="rounds of the large batch (minutes each)"
    )
    parser.add_argument("--map-items", type=int, default=10_000)
    parser.add_argument(
        "--waiting", type=int, nargs="*", default=[0, 200, 1000], help="runs at gates for reads"
    )
    parser.add_argument("--read-seconds", type=float, default=10, help="per kind of read")
    parser.add_argument("--gates", type=int, default=30)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="GETs per reader")
    parser.add_argument(
        "--sandbox-rounds", type=int, default=40, help="sandbox start-up rounds (0 skips)"
    )
    parser.add_argument(
        "--keyed-databases",
        nargs="*",
        default=["sqlite", "postgresql"],
        choices=["sqlite", "postgresql"],
        help="the API's databases for the keyed-create bench (none skips it)",
    )
    parser.add_argument(
        "--only",
        choices=["sandbox", "keyed", "throughput"],
        help="run only this benchmark (quick look); throughput: PackRun against the "
        "hand-written baseline (`--runs 0 --big-runs 1000` for the 1,000 concurrent runs alone)",
    )
    args = parser.parse_args(argv)

    began = time.monotonic()
    info = machine()
    info["bytecode"] = compile_bytecode()
    rows: list[Row] = []
    if args.only is None:
        rows += compile_rows(args.sizes, args.repeat)
    if args.only == "keyed":
        rows += asyncio.run(keyed_only(args.keyed_databases))
    elif args.only == "throughput":
        rows += asyncio.run(throughput_only(args))
    elif args.sandbox_rounds:
        rows += [
            Row("sandbox", f.name, f.value, f.unit, f.target, f.met, f.note)
            for f in asyncio.run(sandbox_bench.measure(args.sandbox_rounds))
        ]
    if args.only is None:
        rows += asyncio.run(runtime_and_api(args))
    seconds = time.monotonic() - began
    print(render(rows, info, seconds))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"machine": info, "seconds": round(seconds, 1), "rows": [asdict(r) for r in rows]},
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    code = main()
    # Straight out, without the interpreter's teardown: after the Temporal clients and workers
    # of the runs above it can abort ("PyGILState_Release ... finalizing",
    # temporalio/sdk-python#300), and `make bench` then failed after writing its results.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
