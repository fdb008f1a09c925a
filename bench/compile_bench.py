"""How long the compiler takes on large packs: load + compile + hash, and simulate.

Run: `python -m bench.compile_bench [--sizes 1000 10000] [--repeat 5]`. The issue's target is a
10,000-step compile under one second.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import yaml

from compiler import compile_manifest
from compiler.compile import build_plan
from compiler.hashing import plan_hash
from compiler.loader import load_yaml
from compiler.manifest import Manifest
from compiler.plan import walk
from compiler.simulation import simulate


def generate_manifest(step_count: int) -> str:
    """A valid pack of about `step_count` steps (nested ones counted), mixing every step kind.

    Each block of 20 steps has runs reading inputs and earlier outputs, a parallel, a map, a loop,
    a conditional, an approval gate and a policy gate, so every code path of the compiler is timed.
    """
    steps: list[dict[str, Any]] = []
    block = 0
    count = 0
    previous: str | None = None
    while count < step_count:
        b = f"b{block}"
        last = f"{{{{ steps.{previous}.outputs.value }}}}" if previous else "start"
        steps += [
            {
                "id": f"{b}_run",
                "description": "a run step reading an input and an earlier step",
                "run": {
                    "uses": "builtin:echo",
                    "with": {"target": "{{ inputs.target }}", "previous": last, "n": block},
                },
            },
            {
                "id": f"{b}_par",
                "parallel": {
                    "maxParallel": 2,
                    "steps": [
                        {"id": f"{b}_par-{i}", "run": {"uses": "builtin:noop"}} for i in range(3)
                    ],
                },
            },
            {
                "id": f"{b}_map",
                "map": {
                    "items": "{{ inputs.hosts }}",
                    "step": {
                        "id": f"{b}_map-t",
                        "run": {"uses": "builtin:echo", "with": {"host": "{{ item }}"}},
                    },
                },
            },
            {
                "id": f"{b}_loop",
                "loop": {
                    "items": {"range": {"start": 0, "end": 3}},
                    "steps": [
                        {"id": f"{b}_loop-a", "run": {"uses": "builtin:noop"}},
                        {
                            "id": f"{b}_loop-b",
                            "when": "{{ index > `0` }}",
                            "run": {"uses": "builtin:echo", "with": {"i": "{{ index }}"}},
                        },
                    ],
                },
            },
            {
                "id": f"{b}_cond",
                "conditional": {
                    "branches": [
                        {
                            "condition": "{{ inputs.mode == 'fast' }}",
                            "steps": [{"id": f"{b}_fast", "run": {"uses": "builtin:noop"}}],
                        },
                        {
                            "condition": f"{{{{ steps.{b}_run.status == 'Succeeded' }}}}",
                            "steps": [{"id": f"{b}_slow", "run": {"uses": "builtin:noop"}}],
                        },
                    ],
                    "else": [{"id": f"{b}_other", "run": {"uses": "builtin:noop"}}],
                },
            },
            {
                "id": f"{b}_approve",
                "when": f"{{{{ inputs.n > `{block}` }}}}",
                "gate": {"approval": {"id": "release"}},
            },
            {"id": f"{b}_policy", "gate": {"policy": {"policy": "small"}}},
            {
                "id": f"{b}_out",
                "run": {
                    "uses": "builtin:shell",
                    "with": {"command": "echo {{ steps." + f"{b}_run" + ".outputs.n }}"},
                },
            },
        ]
        previous = f"{b}_out"
        count = _count(steps)
        block += 1
    manifest = {
        "apiVersion": "stellaops.io/pack.v1",
        "kind": "TaskPack",
        "metadata": {"name": f"bench-{step_count}", "version": "1.0.0"},
        "spec": {
            "inputs": [
                {"name": "target", "type": "string", "default": "example"},
                {"name": "hosts", "type": "array", "default": ["a", "b"]},
                {"name": "mode", "type": "string", "default": "fast"},
                {"name": "n", "type": "integer", "default": 3},
            ],
            "approvals": [{"id": "release", "grants": ["packs.approve"]}],
            "policies": [{"id": "small", "condition": "{{ inputs.n < `100` }}"}],
            "steps": steps,
        },
    }
    return yaml.safe_dump(manifest, sort_keys=False, width=200)


def _count(steps: list[dict[str, Any]]) -> int:
    total = 0
    for step in steps:
        total += 1
        body = next(v for k, v in step.items() if k in _KINDS)
        nested = body.get("steps", []) + ([body["step"]] if "step" in body else [])
        nested += [s for branch in body.get("branches", []) for s in branch["steps"]]
        total += _count(nested + body.get("else", []))
    return total


_KINDS = ("run", "parallel", "map", "loop", "conditional", "gate")


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """The fastest of `repeat` timed calls, in seconds. The garbage collector stays on: a server
    compiling packs pays for it too."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


PARTS = ("load", "models", "plan", "hash", "compile", "simulate")


def measure(size: int, repeat: int) -> tuple[int, int, dict[str, float]]:
    """(steps, KiB, {part: best seconds}) for a generated pack of about `size` steps."""
    text = generate_manifest(size)
    # The whole compile first, while nothing else of this size is alive: every object kept
    # around makes the collector's full passes during a compile slower.
    compile_s = best_of(repeat, partial(compile_manifest, text))
    compiled = compile_manifest(text)
    simulate_s = best_of(repeat, partial(simulate, compiled.plan, compiled.plan_hash))
    data = load_yaml(text)
    manifest = Manifest.model_validate(data)
    timings = [
        best_of(repeat, partial(load_yaml, text)),
        best_of(repeat, partial(Manifest.model_validate, data)),
        best_of(repeat, partial(build_plan, manifest)),
        best_of(repeat, partial(plan_hash, compiled.plan)),
        compile_s,
        simulate_s,
    ]
    steps = len(walk(compiled.plan.steps))
    return steps, len(text) // 1024, dict(zip(PARTS, timings, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    header = ("target", "steps", "KiB", *PARTS)
    rows = []
    for size in args.sizes:
        steps, kib, timings = measure(size, args.repeat)
        rows.append([str(size), str(steps), str(kib), *(f"{t:.3f}" for t in timings.values())])

    print("best of", args.repeat, "runs, seconds; compile = load + models + plan + hash")
    for row in [list(header), *rows]:
        print("  ".join(cell.rjust(8) for cell in row))


if __name__ == "__main__":
    main()
