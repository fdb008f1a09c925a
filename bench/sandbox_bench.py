"""Sandbox start-up cost: one `/bin/true` per step, sandboxed vs. a bare subprocess, side by side.

Each round starts the same trivial command three ways, interleaved so the machine's load falls on
all of them alike: a bare `asyncio.create_subprocess_exec`, the step sandbox
(`CommandRunner.run`: cgroup created and limits written, bubblewrap namespaces and mounts, the
whole tree killed and the cgroup removed at the end), and the sandbox with an egress allowlist
(plus the worker's proxy and the in-sandbox forwarder). Medians are reported, and the ratio of
sandboxed to bare: what isolation adds to every step that runs a command.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from activities.sandbox.runner import CommandRunner, SandboxSettings
from compiler.plan import Sandbox


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""


async def _timed(fn: Callable[[], Awaitable[int]]) -> float:
    started = time.perf_counter()
    code = await fn()
    if code != 0:
        raise RuntimeError(f"benchmark command exited with {code}")
    return time.perf_counter() - started


async def measure(rounds: int) -> list[Figure]:
    runner = CommandRunner(SandboxSettings())
    if runner.host is not None and runner.host.unavailable:
        return [Figure("sandbox start-up", 0, "ms", note=f"unavailable: {runner.host.unavailable}")]
    root = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    workspace = root / "workspace"
    workspace.mkdir()
    sink = (root / "out").open("wb")
    sealed = Sandbox()
    proxied = Sandbox(egressAllowlist=("127.0.0.1:9",))

    async def bare() -> int:
        proc = await asyncio.create_subprocess_exec(
            "/bin/true", stdout=sink, stderr=sink, cwd=workspace, env={"PATH": "/usr/bin:/bin"}
        )
        return await proc.wait()

    def sandboxed(box: Sandbox) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            result = await runner.run(
                ["/bin/true"],
                workspace=workspace,
                cwd=workspace,
                env={"PATH": "/usr/bin:/bin"},
                sandbox=box,
                timeout=60,
                stdout=sink,
                stderr=sink,
                scratch=root,
            )
            return result.returncode

        return run

    timings: dict[str, list[float]] = {"bare": [], "sandbox": [], "proxy": []}
    for fn in (bare, sandboxed(sealed), sandboxed(proxied)):  # warm-up
        await _timed(fn)
    for _ in range(rounds):
        timings["bare"].append(await _timed(bare))
        timings["sandbox"].append(await _timed(sandboxed(sealed)))
        timings["proxy"].append(await _timed(sandboxed(proxied)))
    sink.close()
    bare_ms = statistics.median(timings["bare"]) * 1000
    sandbox_ms = statistics.median(timings["sandbox"]) * 1000
    proxy_ms = statistics.median(timings["proxy"]) * 1000
    note = f"median of {rounds}, interleaved; /bin/true"
    return [
        Figure("bare subprocess start+exit, p50", bare_ms, "ms", note=note),
        Figure("sandboxed (sealed) start+exit, p50", sandbox_ms, "ms", note=note),
        Figure(
            "sandbox start-up cost: sandboxed / bare",
            sandbox_ms / bare_ms,
            "x",
            note=f"+{sandbox_ms - bare_ms:.1f} ms per step that runs a command",
        ),
        Figure("sandboxed with egress proxy, p50", proxy_ms, "ms", note=note),
        Figure(
            "egress-proxy sandbox / bare",
            proxy_ms / bare_ms,
            "x",
            note="adds the worker's proxy and the in-sandbox forwarder (python3 start-up)",
        ),
    ]
