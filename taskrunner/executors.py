"""What a custom executor imports: the one module its package depends on.

    from taskrunner.executors import ExecutorContext, Params, StepFailed, parse_params

An executor is `async def executor(params: dict, ctx: ExecutorContext) -> dict`, declared in the
`taskrunner.executors` entry point group of its package. It fails a step for good with
`ctx.fail(message, outputs)` (or by raising `StepFailed(message, outputs)`, the same thing); any
other exception is transient and the step's activity is retried. Programs it runs go through
`ctx.run_command`, in the step's sandbox. These names keep their meaning across releases; where
they are implemented inside the service does not matter to a plugin.
"""

from __future__ import annotations

from activities.executor import (
    Executor,
    ExecutorContext,
    Params,
    StepFailed,
    parse_params,
)
from activities.sandbox.runner import CommandResult

__all__ = [
    "CommandResult",
    "Executor",
    "ExecutorContext",
    "Params",
    "StepFailed",
    "parse_params",
]
