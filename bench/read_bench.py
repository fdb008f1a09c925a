"""Reads under load: `GET /runs/{id}` while 0, 200 and 1,000 runs wait at gates, side by side
with the API's own `/healthz` and a raw Temporal describe of the same workflows.

Each scenario drives `readers` closed-loop readers (each with a connection of its own, sending
its next request as soon as the last is answered) for `seconds`, once per kind of read, one kind
after the other against the same service and the same waiting runs:

- `GET /runs/{id}` through the API (the readers spread over the waiting runs; with none waiting
  they all read one run waiting at its gate);
- `GET /healthz`, the API's floor: routing, middleware, JSON, no Temporal;
- `describe` of the same workflows with a Temporal client from this process: what the server
  alone costs, no worker involved;
- the `state` query of the same workflows sent raw: what a read costs when a worker answers it.

Run on its own: `python -m bench.read_bench [--waiting 0 200 1000] [--seconds 10]`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from bench.api_bench import GATE_PACK, RUNS, Latencies, wait_status
from bench.service import service
from bench.workflow_bench import Figure, start_dev_server
from workflows.contract.names import QUERY_STATE, workflow_id
from workflows.contract.state import RunStateSnapshot, StateQuery

TENANT = "default"
READ_TARGET = 3.0
"""p99 of `GET /runs/{id}` within this many times the `/healthz` p99 (issue #12)."""


@dataclass
class Load:
    latencies: Latencies
    errors: int
    rate: float


async def closed_loop(readers: int, seconds: float, one: Callable[[int], Awaitable[bool]]) -> Load:
    """`readers` loops calling `one(reader)` for `seconds`; `one` says whether it succeeded."""
    samples: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def loop(number: int) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                ok = await one(number)
            except Exception:
                ok = False
            samples.append(time.perf_counter() - began)
            errors += not ok

    began = time.perf_counter()
    await asyncio.gather(*(loop(n) for n in range(readers)))
    return Load(Latencies(samples), errors, len(samples) / (time.perf_counter() - began))


async def create_gated(url: str, count: int, concurrency: int = 16) -> list[str]:
    """`count` runs of the gate pack, each confirmed waiting at its gate."""
    ids: list[str] = []
    queue = list(range(count))
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:

        async def creator() -> None:
            while queue:
                queue.pop()
                for _ in range(20):
                    response = await http.post(RUNS, json={"manifest": GATE_PACK})
                    if response.status_code == 201:
                        ids.append(response.json()["runId"])
                        break
                    await asyncio.sleep(1)  # a 503 under start-up load: try again
                else:
                    raise RuntimeError(f"create failed: {response.status_code} {response.text}")

        await asyncio.gather(*(creator() for _ in range(concurrency)))
        for start in range(0, len(ids), 50):
            await asyncio.gather(
                *(wait_status(http, r, {"awaiting-approval"}, 600) for r in ids[start : start + 50])
            )
    return ids


async def scenario(
    url: str, client: Client, run_ids: list[str], readers: int, seconds: float
) -> dict[str, Load]:
    clients = [httpx.AsyncClient(base_url=url, timeout=60) for _ in range(readers)]
    handles = [client.get_workflow_handle(workflow_id(TENANT, r)) for r in run_ids]
    try:
        await asyncio.gather(*(c.get("/healthz") for c in clients))  # open the connections

        async def get_run(n: int) -> bool:
            response = await clients[n].get(f"{RUNS}/{run_ids[n % len(run_ids)]}")
            return response.status_code == 200

        async def healthz(n: int) -> bool:
            return (await clients[n].get("/healthz")).status_code == 200

        async def describe(n: int) -> bool:
            await handles[n % len(handles)].describe(rpc_timeout=timedelta(seconds=30))
            return True

        async def query(n: int) -> bool:
            await handles[n % len(handles)].query(
                QUERY_STATE,
                StateQuery(stepsLimit=2000),
                result_type=RunStateSnapshot,
                rpc_timeout=timedelta(seconds=30),
            )
            return True

        loads = {}
        for name, one in (
            ("run", get_run),
            ("healthz", healthz),
            ("describe", describe),
            ("query", query),
        ):
            loads[name] = await closed_loop(readers, seconds, one)
        return loads
    finally:
        for c in clients:
            await c.aclose()


def figures_for(waiting: int, loads: dict[str, Load], readers: int) -> list[Figure]:
    run, health, describe, query = (loads[k] for k in ("run", "healthz", "describe", "query"))
    label = f"{waiting:,} waiting"
    ratio = run.latencies.pct(99) / health.latencies.pct(99)
    figures = [
        Figure(
            f"GET run p50, {label}",
            run.latencies.pct(50),
            "ms",
            f"{run.rate:.0f} req/s, {readers} readers",
        ),
        Figure(
            f"GET run p99, {label}",
            run.latencies.pct(99),
            "ms",
            f"{len(run.latencies.samples)} reads, {run.errors} errors",
            target="0 errors",
            met=run.errors == 0,
        ),
        Figure(
            f"/healthz p50 / p99, {label}",
            health.latencies.pct(99),
            "ms",
            f"p50 {health.latencies.pct(50):.1f} ms; {health.rate:.0f} req/s",
        ),
        Figure(
            f"GET run p99 / healthz p99, {label}",
            ratio,
            "x",
            "same readers, one after the other",
            target=f"<= {READ_TARGET:g}",
            met=ratio <= READ_TARGET,
        ),
        Figure(
            f"raw describe p50 / p99, {label}",
            describe.latencies.pct(99),
            "ms",
            f"p50 {describe.latencies.pct(50):.1f} ms; {describe.rate:.0f}/s; "
            f"GET run p99 is {run.latencies.pct(99) / describe.latencies.pct(99):.2f}x",
        ),
        Figure(
            f"raw state query p50 / p99, {label}",
            query.latencies.pct(99),
            "ms",
            f"p50 {query.latencies.pct(50):.1f} ms; {query.rate:.0f}/s; {query.errors} errors",
        ),
    ]
    return figures


async def measure(
    client: Client, address: str, waiting: list[int], readers: int, seconds: float
) -> list[Figure]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-reads-"))
    figures: list[Figure] = []
    with service(address, f"bench-reads-{uuid.uuid4().hex[:6]}", data_dir) as svc:
        run_ids: list[str] = []
        for count in sorted(waiting):
            wanted = max(count, 1)
            if wanted > len(run_ids):
                began = time.perf_counter()
                run_ids += await create_gated(svc.url, wanted - len(run_ids))
                print(f"  {len(run_ids)} runs waiting ({time.perf_counter() - began:.0f} s)")
            loads = await scenario(svc.url, client, run_ids[:wanted], readers, seconds)
            figures += figures_for(count, loads, readers)
    return figures


async def main_async(args: argparse.Namespace) -> list[Figure]:
    env = await start_dev_server()
    try:
        address = env.client.service_client.config.target_host
        return await measure(env.client, address, args.waiting, args.readers, args.seconds)
    finally:
        await env.shutdown()


def main(argv: list[str] | None = None) -> Any:
    from bench.workflow_bench import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, nargs="+", default=[0, 200, 1000])
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    figures = asyncio.run(main_async(parser.parse_args(argv)))
    print_table(figures)


if __name__ == "__main__":
    main()
