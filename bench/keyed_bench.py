"""Keyed creates under concurrency (issue #12): `POST /runs` with an `Idempotency-Key`, 200 and
1,000 of them, 50 and 100 in flight, side by side with as many unkeyed creates.

For each size, against the same service (a worker and the API each in a process of its own):

1. unkeyed: `count` creates of a one-step pack, `concurrency` in flight (each sender posts its
   next as soon as the last is answered), in a tenant of their own;
2. keyed: the same, each with a distinct key, in another tenant;
3. retries: every keyed request again, at the same concurrency, as a client retrying after a
   timeout would: each must replay the first answer (same run id, `Idempotent-Replay: true`);
4. duplicates: the runs Temporal has for the keyed tenant (its visibility, polled until it
   stops changing) minus the keys sent: any above zero is a key that started two runs.

Each phase starts once the runs of the one before have all finished, so neither kind of create
competes with the other's runs for the worker and Temporal. 5xx answers are counted in every
phase; none is retried, so each one is a caller that saw an error. The database is the one the
service is given: SQLite (`taskrunner dev`'s) or PostgreSQL.

Run on its own: `python -m bench.keyed_bench [--database sqlite|postgresql]`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from bench.api_bench import RUNS
from bench.service import service
from bench.workflow_bench import Figure, start_dev_server
from workflows.contract.names import SA_TENANT

PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: bench-keyed, version: 1.0.0}
spec:
  steps:
    - {id: only, run: {uses: "builtin:noop"}}
"""
SIZES = ((200, 50), (1000, 100))
RATIO_TARGET = 1.5
"""Keyed creates within this factor of unkeyed creates' throughput (issue #12)."""


@dataclass
class Phase:
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    no_answer: Counter[str] = field(default_factory=Counter)
    """Requests that got no answer (counted as 599), by what httpx raised."""
    run_ids: dict[str, str] = field(default_factory=dict)
    """Key (or sequence number) -> the run id its 201 named."""
    replays: int = 0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


async def send(
    http: httpx.AsyncClient, count: int, concurrency: int, tenant: str, keys: list[str] | None
) -> Phase:
    phase = Phase()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(count):
        queue.put_nowait(number)

    async def sender() -> None:
        while not queue.empty():
            number = queue.get_nowait()
            headers = {"X-StellaOps-Tenant": tenant}
            if keys is not None:
                headers["Idempotency-Key"] = keys[number]
            try:
                response = await http.post(RUNS, json={"manifest": PACK}, headers=headers)
            except httpx.HTTPError as exc:
                phase.statuses[599] += 1  # no answer at all: as bad as a 5xx for the caller
                phase.no_answer[type(exc).__name__] += 1
                continue
            phase.statuses[response.status_code] += 1
            if response.status_code == 201:
                phase.run_ids[keys[number] if keys else str(number)] = response.json()["runId"]
                phase.replays += response.headers.get("idempotent-replay") == "true"

    began = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - began
    return phase


async def runs_of(client: Client, tenant: str, settle: float = 3.0) -> int:
    """The tenant's runs in Temporal's visibility, once the count has not moved for `settle` s."""
    query = f"{SA_TENANT.name} = '{tenant}'"
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        count = (await client.count_workflows(query)).count
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= settle:
            break
        await asyncio.sleep(0.5)
    return last


async def quiet(client: Client, tenant: str) -> None:
    """Wait until none of the tenant's runs is still running (visibility, polled)."""
    query = f"{SA_TENANT.name} = '{tenant}' AND ExecutionStatus = 'Running'"
    deadline = time.monotonic() + 300
    await asyncio.sleep(1)  # visibility trails the starts
    while (await client.count_workflows(query)).count and time.monotonic() < deadline:
        await asyncio.sleep(1)


async def measure_one(
    url: str, client: Client, count: int, concurrency: int, label: str
) -> list[Figure]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        tag = uuid.uuid4().hex[:6]
        plain_tenant, keyed_tenant = f"bench-plain-{tag}", f"bench-keyed-{tag}"
        plain = await send(http, count, concurrency, plain_tenant, None)
        await quiet(client, plain_tenant)
        keys = [f"bench-{tag}-{n}" for n in range(count)]
        keyed = await send(http, count, concurrency, keyed_tenant, keys)
        await quiet(client, keyed_tenant)
        retried = await send(http, count, concurrency, keyed_tenant, keys)
    started = await runs_of(client, keyed_tenant)
    same = sum(1 for k, run in retried.run_ids.items() if keyed.run_ids.get(k) == run)
    duplicates = max(0, started - count)
    errors = keyed.server_errors + retried.server_errors
    plain_rate, keyed_rate = count / plain.seconds, count / keyed.seconds
    ratio = plain_rate / keyed_rate
    name = f"{count:,} keyed creates, {concurrency} at once ({label})"
    statuses = ", ".join(
        f"{s}: {n}" for s, n in sorted((keyed.statuses + retried.statuses).items())
    )
    if unanswered := keyed.no_answer + retried.no_answer:
        statuses += " (no answer: " + ", ".join(f"{n} {e}" for e, n in unanswered.items()) + ")"
    return [
        Figure(
            f"{name}: 5xx",
            errors,
            "answers",
            target="0",
            met=errors == 0,
            note=f"creates then retries; {statuses}; unkeyed 5xx: {plain.server_errors}",
        ),
        Figure(
            f"{name}: duplicate runs",
            duplicates,
            "runs",
            target="0",
            met=duplicates == 0 and started == count,
            note=f"{started} runs in Temporal for {count} keys; retries replayed {retried.replays}"
            f", {same} with the first run id",
        ),
        Figure(f"{name}: creates/s", keyed_rate, "/s", note=f"unkeyed {plain_rate:.1f}/s"),
        Figure(
            f"{name}: unkeyed/keyed time",
            ratio,
            "x",
            target=f"<= {RATIO_TARGET}x",
            met=ratio <= RATIO_TARGET,
            note=f"{plain.seconds:.1f} s unkeyed, {keyed.seconds:.1f} s keyed",
        ),
    ]


async def measure(
    client: Client, address: str, databases: list[str], sizes: tuple[tuple[int, int], ...] = SIZES
) -> list[Figure]:
    figures: list[Figure] = []
    for kind in databases:
        data_dir = Path(tempfile.mkdtemp(prefix=f"bench-keyed-{kind}-"))
        with _database(kind, data_dir) as env:
            queue = f"bench-keyed-{uuid.uuid4().hex[:6]}"
            with service(address, queue, data_dir, extra_env=env) as svc:
                for count, concurrency in sizes:
                    figures += await measure_one(svc.url, client, count, concurrency, kind)
    return figures


class _database:
    """The environment naming the service's database: SQLite in its data dir (the default), or
    a PostgreSQL server started for the bench (from the pgserver package, as the tests do)."""

    def __init__(self, kind: str, data_dir: Path) -> None:
        self.kind, self.data_dir = kind, data_dir
        self.server: Any = None

    def __enter__(self) -> dict[str, str]:
        if self.kind == "sqlite":
            return {}
        from tests.postgres import PostgresServer

        self.server = PostgresServer().start()
        url = self.server.create_database("bench")
        _migrate(url)
        return {"TASKRUNNER_DATABASE_URL": url}

    def __exit__(self, *_: object) -> None:
        if self.server is not None:
            self.server.stop()


def _migrate(url: str) -> None:
    """`taskrunner db upgrade`, as a deployment runs it before the API starts."""
    import os
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-m", "cli.main", "db", "upgrade"],
        env={**os.environ, "TASKRUNNER_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    args = parser.parse_args()
    env = await start_dev_server()
    try:
        address = env.client.service_client.config.target_host
        for figure in await measure(env.client, address, args.database):
            ok = "" if figure.met is None else (" ok" if figure.met else " MISSED")
            print(f"{figure.name:<60} {figure.value:>10.2f} {figure.unit:<8}{ok}  {figure.note}")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
