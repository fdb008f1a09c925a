"""`noop`, `echo`, `sleep` and `fail`, called directly with a real context."""

from __future__ import annotations

import time
from typing import Any

import pytest

from activities.builtins.basic import echo, fail, noop, sleep
from activities.executor import StepFailed


async def test_noop_returns_nothing(make_ctx: Any) -> None:
    assert await noop({"ignored": 1}, make_ctx(uses="builtin:noop")) == {}


async def test_echo_returns_its_with(make_ctx: Any) -> None:
    params = {"a": 1, "b": {"c": [1, 2]}}
    assert await echo(params, make_ctx(uses="builtin:echo")) == params


async def test_fail_fails_permanently_with_message(make_ctx: Any) -> None:
    with pytest.raises(StepFailed, match="boom"):
        await fail({"message": "boom"}, make_ctx(uses="builtin:fail"))
    with pytest.raises(StepFailed, match="failed by builtin:fail"):
        await fail({}, make_ctx(uses="builtin:fail"))


async def test_sleep_sleeps_and_heartbeats(make_ctx: Any) -> None:
    beats: list[tuple[Any, ...]] = []
    ctx = make_ctx(uses="builtin:sleep", heartbeat=lambda *d: beats.append(d))
    started = time.monotonic()
    assert await sleep({"seconds": 1.2}, ctx) == {"sleptSeconds": 1.2}
    assert time.monotonic() - started >= 1.2
    assert len(beats) >= 2


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"seconds": -1}, "with.seconds"),
        ({}, "with.seconds: Field required"),
        ({"seconds": 1, "secs": 2}, "with.secs: Extra inputs are not permitted"),
    ],
)
async def test_sleep_rejects_bad_with(make_ctx: Any, params: dict[str, Any], problem: str) -> None:
    with pytest.raises(StepFailed, match=problem):
        await sleep(params, make_ctx(uses="builtin:sleep"))
