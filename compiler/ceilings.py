"""Operator ceilings: the most a pack's sandbox may ask for on this installation.

The operator sets them in the worker's and the API's settings; the caller passes them in as data
(`Ceilings`), which keeps the compiler pure. A pack asking for more is refused with the path of
the field, never clamped: a limit the author did not get is a limit they cannot reason about.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from compiler import manifest as m
from compiler.errors import ErrorDetail


@dataclass(frozen=True)
class Ceilings:
    """The most a pack may ask for. `None` leaves a dimension unbounded."""

    memory_mib: int | None = None
    cpu_millicores: int | None = None
    quota_seconds: int | None = None
    timeout_seconds: int | None = None
    allow_open: bool = True


def check_ceilings(
    manifest: m.Manifest, ceilings: Ceilings, default_timeout: int
) -> list[ErrorDetail]:
    """Every place the manifest asks for more than `ceilings` allow, with its path."""
    errors: list[ErrorDetail] = []
    box = manifest.spec.sandbox
    if box.mode == "open" and not ceilings.allow_open:
        errors.append(
            ErrorDetail(
                "spec.sandbox.mode",
                "mode `open` is not allowed on this installation (the operator allows only "
                "`sealed`; use egressAllowlist for the hosts the pack needs)",
            )
        )
    for field, value, ceiling, unit in (
        ("memoryLimitMiB", box.memoryLimitMiB, ceilings.memory_mib, " MiB"),
        ("cpuLimitMillicores", box.cpuLimitMillicores, ceilings.cpu_millicores, " millicores"),
        ("quotaSeconds", box.quotaSeconds, ceilings.quota_seconds, "s"),
    ):
        if ceiling is not None and value > ceiling:
            errors.append(
                ErrorDetail(
                    f"spec.sandbox.{field}",
                    f"{value}{unit} is more than this installation allows ({ceiling}{unit})",
                )
            )
    if ceilings.timeout_seconds is not None:
        for path, step in _steps(manifest.spec.steps, "spec.steps"):
            if step.run is None:
                continue
            asked = step.run.timeoutSeconds
            timeout = asked or default_timeout
            if timeout > ceilings.timeout_seconds:
                what = f"{timeout}s" if asked else f"the default of {timeout}s"
                errors.append(
                    ErrorDetail(
                        f"{path}.run.timeoutSeconds",
                        f"{what} is more than this installation allows "
                        f"({ceilings.timeout_seconds}s)",
                    )
                )
    return errors


def _steps(steps: list[m.Step], path: str) -> Iterator[tuple[str, m.Step]]:
    for index, step in enumerate(steps):
        yield from _walk(step, f"{path}[{index}]")


def _walk(step: m.Step, here: str) -> Iterator[tuple[str, m.Step]]:
    yield here, step
    if step.parallel is not None:
        yield from _steps(step.parallel.steps, f"{here}.parallel.steps")
    if step.map is not None:
        yield from _walk(step.map.step, f"{here}.map.step")
    if step.loop is not None:
        yield from _steps(step.loop.steps, f"{here}.loop.steps")
    if step.conditional is not None:
        for i, branch in enumerate(step.conditional.branches):
            yield from _steps(branch.steps, f"{here}.conditional.branches[{i}].steps")
        yield from _steps(step.conditional.else_, f"{here}.conditional.else")
    if step.gate is not None and step.gate.policy is not None:
        yield from _steps(step.gate.policy.else_, f"{here}.gate.policy.else")
