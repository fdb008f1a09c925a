"""The executor contract: what an executor is given, what it returns, and how it fails.

An executor is an async callable

    async def executor(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]

`params` is the step's `with`, rendered by the workflow and with its secrets filled in by the
activity; the returned dict becomes the step's outputs (`steps.<id>.outputs` in expressions), so
it must be JSON-serialisable and small: put anything large in the artifact store through
`ctx.write_artifact`. An executor fails a step for good by raising `StepFailed` (with the outputs
it has so far); any other exception is treated as transient and retried by Temporal. It need not
mask secrets in what it returns or raises (the activity does), but text it writes elsewhere
should go through `ctx.mask`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from activities.artifacts import ArtifactStore
from activities.masking import Masker
from compiler.plan import Sandbox
from workflows.contract.activities import ArtifactRecord


class StepFailed(Exception):
    """A permanent step failure: retrying the same request cannot succeed.

    `outputs` are the step's outputs so far (e.g. a shell step's exit code and output tails);
    the activity attaches them, masked, as the failure's first detail.
    """

    def __init__(self, message: str, outputs: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.outputs: dict[str, Any] = dict(outputs or {})


def _no_heartbeat(*details: Any) -> None:
    pass


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
