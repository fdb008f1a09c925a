"""Small executors for tests and demos: `noop`, `echo`, `sleep`, `fail`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import Field

from activities.executor import ExecutorContext, Params, StepFailed, parse_params


async def noop(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    """`builtin:noop`: does nothing; outputs `{}`. Any `with` is accepted and ignored."""
    return {}


async def echo(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    """`builtin:echo`: outputs its `with`, unchanged."""
    return dict(params)


class SleepParams(Params):
    seconds: float = Field(ge=0)


async def sleep(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    """`builtin:sleep`, with `{seconds}`: waits, heartbeating; outputs `{sleptSeconds}`.

    Sleeps in short slices with a heartbeat after each, so a cancellation is noticed even when
    the executor runs outside the activity's own heartbeat loop.
    """
    args = parse_params(SleepParams, params, ctx.uses)
    deadline = time.monotonic() + args.seconds
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(remaining, 1.0))
        ctx.heartbeat()
    return {"sleptSeconds": args.seconds}


class FailParams(Params):
    message: str = "failed by builtin:fail"


async def fail(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    """`builtin:fail`, with `{message?}`: fails the step permanently with that message."""
    args = parse_params(FailParams, params, ctx.uses)
    raise StepFailed(args.message)
