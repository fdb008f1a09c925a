"""The executor contract: what an executor is given, what it returns, and how it fails.

Plugins import it as `taskrunner.executors`, the stable surface; this module is its home.

An executor is an async callable

    async def executor(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]

`params` is the step's `with`, rendered by the workflow and with its secrets filled in by the
activity; the returned dict becomes the step's outputs (`steps.<id>.outputs` in expressions), so
it must be JSON-serialisable and small: put anything large in the artifact store through
`ctx.write_artifact`. An executor fails a step for good with `ctx.fail(message, outputs)` (which
raises `StepFailed` with the outputs it has so far); any other exception is treated as transient
and retried by Temporal. It need not
mask secrets in what it returns or raises (the activity does), but text it writes elsewhere
should go through `ctx.mask`.

An executor that runs a program must start it with `ctx.run_command`: that runs it in the step's
sandbox (see `activities/sandbox/runner.py`) with the step's limits, and ends every process it
started when it ends. Never start a subprocess directly: it would see the worker's files,
environment and network.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from activities.artifacts import ArtifactStore
from activities.masking import Masker
from activities.sandbox.runner import (
    SANDBOX_UNAVAILABLE,
    CommandResult,
    CommandRunner,
    SandboxSettings,
    SandboxUnavailable,
)
from compiler.plan import Sandbox
from workflows.contract.activities import ArtifactRecord


class StepFailed(Exception):
    """A permanent step failure: retrying the same request cannot succeed.

    `outputs` are the step's outputs so far (e.g. a shell step's exit code and output tails);
    the activity attaches them, masked, as the failure's first detail. `reason` names the
    sandbox limit the step broke (`memory-limit`, ...; see
    `workflows.contract.activities.FAILURE_REASONS`): the step's status reason then says so.
    """

    def __init__(
        self, message: str, outputs: dict[str, Any] | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.outputs: dict[str, Any] = dict(outputs or {})
        self.reason = reason


def _no_heartbeat(*details: Any) -> None:
    pass


@cache
def default_runner() -> CommandRunner:
    """The runner of a context built without one: sandboxed, with the default settings."""
    return CommandRunner(SandboxSettings())


@dataclass
class ExecutorContext:
    """Everything an executor may use besides its parameters."""

    run_id: str
    tenant: str
    step_id: str
    uses: str
    workspace: Path
    """The run's workspace folder (exists); shared by the run's steps."""
    store: ArtifactStore
    sandbox: Sandbox = field(default_factory=Sandbox)
    attempt: int = 1
    timeout_seconds: float = 3600
    """The step's time budget; executors with their own timeout stay within it."""
    heartbeat: Callable[..., None] = _no_heartbeat
    """Record liveness (and let a cancellation reach the activity); cheap, call it freely."""
    logger: logging.Logger | logging.LoggerAdapter[Any] = field(
        default_factory=lambda: logging.getLogger("activities")
    )
    mask: Masker = field(default_factory=Masker)
    """Masks this step's secret values in a string (`ctx.mask(text)`) or value (`.value(v)`)."""
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    """Artifacts written so far; the activity returns them with the step result."""
    runner: CommandRunner | None = None
    """Runs the step's commands (the worker's; `default_runner()` when None)."""
    limit: str | None = None
    """The last limit a command of this step broke (`run_command` sets it): a step that then
    fails without a reason of its own fails for that limit."""
    egress_denied: list[str] = field(default_factory=list)
    """Connections the egress proxy refused to this step's commands (`host:port (why)`)."""

    @property
    def commands(self) -> CommandRunner:
        return self.runner if self.runner is not None else default_runner()

    @property
    def command_workspace(self) -> str:
        """The workspace as a command sees it (`/workspace` in the sandbox)."""
        return self.commands.workspace_view(self.workspace)

    async def run_command(
        self,
        argv: Sequence[str],
        *,
        stdout: IO[bytes],
        stderr: IO[bytes],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        files: Mapping[str, bytes] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run `argv` in the step's sandbox and wait until it and all it started have ended.

        `env` is the whole environment the command gets; `cwd` a folder inside the workspace
        (the workspace itself by default); `files` are given read-only at
        `activities.sandbox.runner.FILES_DIR/<name>`; `timeout` is capped by the step's.
        The result's `limit` names a limit the command broke (`memory-limit`, ...). Raises
        StepFailed (`sandbox-unavailable: ...`) without running anything when the host cannot
        isolate the command.
        """
        try:
            result = await self.commands.run(
                argv,
                workspace=self.workspace,
                cwd=cwd or self.workspace,
                env=env or {},
                sandbox=self.sandbox,
                timeout=min(timeout or math.inf, self.timeout_seconds),
                stdout=stdout,
                stderr=stderr,
                files=files,
                scratch=self.store.scratch_dir(self.tenant, self.run_id),
            )
        except SandboxUnavailable as exc:
            raise StepFailed(
                f"{self.uses}: {SANDBOX_UNAVAILABLE}: {exc}", reason=SANDBOX_UNAVAILABLE
            ) from None
        if result.limit is not None:
            self.limit = result.limit
        self.egress_denied += [d for d in result.denied if d not in self.egress_denied]
        return result

    def fail(
        self, message: str, outputs: dict[str, Any] | None = None, reason: str | None = None
    ) -> NoReturn:
        """Fail the step for good (no retry) with `message` and its outputs so far; `reason`
        as for `StepFailed` (the limit a command broke, by default)."""
        raise StepFailed(message, outputs, reason or self.limit)

    def write_artifact(self, name: str, text: str) -> ArtifactRecord:
        """Store `text`, masked, as the run's artifact `name`, and record it for the result."""
        record = self.store.write_text(self.tenant, self.run_id, name, self.mask(text))
        self.artifacts.append(record)
        return record


Executor = Callable[[dict[str, Any], ExecutorContext], Awaitable[dict[str, Any]]]
"""`async def executor(params, ctx) -> outputs`; see the module docstring."""


class Params(BaseModel):
    """Base for an executor's `with` model: unknown keys are refused so a typo fails loudly."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


P = TypeVar("P", bound=BaseModel)


def parse_params(model: type[P], params: dict[str, Any], uses: str) -> P:
    """Validate `params` against `model`; StepFailed listing each problem by its `with` path.

    Only locations and messages are reported, never the offending values: those may be secrets.
    """
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(['with', *map(str, err['loc'])])}: {err['msg']}" for err in exc.errors()
        )
        raise StepFailed(f"{uses}: invalid parameters: {problems}") from None
