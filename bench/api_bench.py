"""What a REST caller sees: approval latency and read latency, through the real API over HTTP.

- Approval latency: from sending `POST .../approvals/{id}` to the `step.started` log entry of the
  step after the gate. That entry's timestamp is the workflow's clock (`workflow.now()`, the start
  of the workflow task that took the decision), on this same machine, so the difference is what
  a decision costs end to end: API, update, workflow task, next step scheduled. Decisions are
  sent one at a time so each is timed alone.
- Read latency: `GET /runs/{id}` from many concurrent readers, each sending its next request as
  soon as the last one is answered (a closed loop), on a run waiting at a gate and on finished
  runs. A finished run's first read replays its history on a worker; it is timed on its own,
  before the readers start.

Run on its own: `python -m bench.api_bench --url http://127.0.0.1:8080` against a running
service (`taskrunner dev`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

RUNS = "/v1/task-runner/runs"

GATE_PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: bench-gate, version: 1.0.0}
spec:
  approvals: [{id: go}]
  steps:
    - {id: gate, gate: {approval: {id: go}}}
    - {id: after, run: {uses: "builtin:noop"}}
"""


@dataclass
class Latencies:
    samples: list[float]
    """Seconds."""

    def pct(self, q: float) -> float:
        """The q-th percentile (nearest rank), in milliseconds."""
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[index] * 1000

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples) * 1000


def parse_ts(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def wait_status(
    http: httpx.AsyncClient, run_id: str, statuses: set[str], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get(f"{RUNS}/{run_id}", params={"stepsLimit": 1})
        if response.status_code == 200 and response.json()["status"] in statuses:
            state: dict[str, Any] = response.json()
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not reach {statuses}: {response.text[:300]}")
        await asyncio.sleep(0.1)


async def start_gated_runs(http: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """`count` runs of the gate pack, each waiting at its gate."""
    created = []
    for _ in range(count):
        response = await http.post(RUNS, json={"manifest": GATE_PACK})
        response.raise_for_status()
        created.append(response.json())
    return list(
        await asyncio.gather(
            *(wait_status(http, c["runId"], {"awaiting-approval"}) for c in created)
        )
    )


async def step_started_at(http: httpx.AsyncClient, run_id: str, step_id: str) -> float:
    """When the run's log says `step_id` started (polls until it does)."""
    deadline = time.monotonic() + 60
    while True:
        response = await http.get(f"{RUNS}/{run_id}/logs")
        for line in response.text.splitlines():
            entry = json.loads(line)
            if entry["eventType"] == "step.started" and entry.get("stepId") == step_id:
                return parse_ts(entry["timestamp"])
        if time.monotonic() > deadline:
            raise RuntimeError(f"{step_id} of {run_id} never started")
        await asyncio.sleep(0.05)


async def approval_latency(
    http: httpx.AsyncClient, runs: list[dict[str, Any]]
) -> tuple[Latencies, Latencies]:
    """(decision -> next step started, POST round trip), one decision at a time."""
    to_start: list[float] = []
    round_trip: list[float] = []
    for run in runs:
        await asyncio.sleep(0.2)  # let the previous run's tail settle: time each decision alone
        sent = time.time()
        response = await http.post(
            f"{RUNS}/{run['runId']}/approvals/go",
            json={"decision": "approved", "planHash": run["planHash"]},
        )
        round_trip.append(time.time() - sent)
        response.raise_for_status()
        started = await step_started_at(http, run["runId"], "after")
        to_start.append(started - sent)
    return Latencies(to_start), Latencies(round_trip)


async def read_latency(
    url: str, run_ids: list[str], readers: int, requests_each: int
) -> tuple[Latencies, float]:
    """(latencies, requests per second) of `readers` closed-loop readers of `run_ids`.

    Each reader has a client (and a connection) of its own, as separate callers would: one
    httpx client shared by fifty concurrent requests spends more time managing its pool than
    the API takes to answer.
    """
    samples: list[float] = []
    clients = [httpx.AsyncClient(base_url=url, timeout=60) for _ in range(readers)]
    try:

        async def reader(number: int, http: httpx.AsyncClient) -> None:
            path = f"{RUNS}/{run_ids[number % len(run_ids)]}"
            for _ in range(requests_each):
                began = time.perf_counter()
                response = await http.get(path)
                samples.append(time.perf_counter() - began)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")

        # One round to open the connections, untimed.
        await asyncio.gather(*(http.get("/healthz") for http in clients))
        began = time.perf_counter()
        await asyncio.gather(*(reader(n, http) for n, http in enumerate(clients)))
        elapsed = time.perf_counter() - began
    finally:
        for http in clients:
            await http.aclose()
    return Latencies(samples), len(samples) / elapsed


async def first_reads(url: str, run_ids: list[str]) -> Latencies:
    """One GET of each run, all at once: for a finished run, a history replay on a worker."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one(run_id: str) -> float:
            began = time.perf_counter()
            (await http.get(f"{RUNS}/{run_id}")).raise_for_status()
            return time.perf_counter() - began

        return Latencies(list(await asyncio.gather(*(one(r) for r in run_ids))))


@dataclass
class ApiFigures:
    approval: Latencies
    decision_round_trip: Latencies
    read_live: Latencies
    read_live_rps: float
    finished_first_read: Latencies
    read_finished: Latencies
    read_finished_rps: float


async def measure(
    url: str, *, gates: int = 30, readers: int = 50, requests_each: int = 20
) -> ApiFigures:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        runs = await start_gated_runs(http, gates + 1)
        live, gated = runs[0], runs[1:]
        approval, round_trip = await approval_latency(http, gated)
        for run in gated:
            await wait_status(http, run["runId"], {"succeeded"})
        read_live, live_rps = await read_latency(url, [live["runId"]], readers, requests_each)
        finished = [r["runId"] for r in gated]
        first = await first_reads(url, finished)
        read_done, done_rps = await read_latency(url, finished, readers, requests_each)
        await http.post(f"{RUNS}/{live['runId']}/cancel")
    return ApiFigures(approval, round_trip, read_live, live_rps, first, read_done, done_rps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--gates", type=int, default=30)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args(argv)
    figures = asyncio.run(
        measure(args.url, gates=args.gates, readers=args.readers, requests_each=args.requests)
    )
    for name, lat in (
        ("approval -> next step started", figures.approval),
        ("approval POST round trip", figures.decision_round_trip),
        ("GET run, live", figures.read_live),
        ("GET run, finished, first read", figures.finished_first_read),
        ("GET run, finished", figures.read_finished),
    ):
        print(
            f"{name:<32} p50 {lat.pct(50):7.1f} ms  p95 {lat.pct(95):7.1f}  p99 {lat.pct(99):7.1f}"
        )
    print(f"reads/s live {figures.read_live_rps:.0f}, finished {figures.read_finished_rps:.0f}")


if __name__ == "__main__":
    main()
