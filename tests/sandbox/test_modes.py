"""How the sandbox behaves around the edges: a host that cannot isolate (steps fail with
`sandbox-unavailable` before anything runs), the operator's explicit `TASKRUNNER_SANDBOX=off`
(loud at start-up and in every step's log), the worker's own ceiling check, and the helper custom
executors run commands with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.artifacts import ArtifactStore
from activities.executor import ExecutorContext
from activities.registry import Registry
from activities.sandbox.host import probe
from activities.sandbox.runner import FILES_DIR, OFF_WARNING, CommandRunner, SandboxSettings
from activities.secrets import MappingSecretProvider
from activities.step_activities import StepActivities
from compiler import Ceilings
from compiler.plan import Sandbox
from workflows.contract.activities import RunStepRequest
from workflows.settings import WorkerSettings
from workflows.worker import report_sandbox, sandbox_lines


async def custom_sleep(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    """A custom executor that fails in its own words after its command broke a limit."""
    scratch = ctx.store.scratch_dir(ctx.tenant, ctx.run_id)
    with (scratch / "o").open("wb") as out, (scratch / "e").open("wb") as err:
        result = await ctx.run_command(
            ["/bin/sleep", "30.645"], stdout=out, stderr=err, timeout=params["timeout"]
        )
    if result.returncode != 0:
        ctx.fail(f"{ctx.uses}: the sleeper did not finish")
    return {}


async def custom_cat(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    """A custom executor running a program through the helper, with a file of its own."""
    out = ctx.store.scratch_dir(ctx.tenant, ctx.run_id) / "out"
    err = ctx.store.scratch_dir(ctx.tenant, ctx.run_id) / "err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        result = await ctx.run_command(
            ["/bin/sh", "-c", f'cat {FILES_DIR}/data; echo " in $PWD"'],
            stdout=stdout,
            stderr=stderr,
            files={"data": params["data"].encode()},
            env={"PATH": "/usr/bin:/bin"},
        )
    return {"code": result.returncode, "out": out.read_text(), "err": err.read_text()}


def activities(store: ArtifactStore, runner: CommandRunner, **kwargs: Any) -> StepActivities:
    registry = Registry(entry_points=[])
    registry.register("custom:cat", custom_cat)
    registry.register("custom:sleep", custom_sleep)
    return StepActivities(registry, store, MappingSecretProvider({}), runner=runner, **kwargs)


def shell(command: str, **kwargs: Any) -> RunStepRequest:
    return RunStepRequest(
        runId="run-1",
        tenant="acme",
        stepId="step",
        uses="builtin:shell",
        with_={"command": command},
        **kwargs,
    )


async def failing(steps: StepActivities, req: RunStepRequest) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(steps.run_step, req)
    assert caught.value.non_retryable
    return caught.value


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


@pytest.mark.parametrize(
    ("bwrap", "why"),
    [("/nonexistent/bwrap", "not executable"), ("/bin/false", "no namespaces for the sandbox")],
)
async def test_no_isolation_fails_the_step_before_anything_runs(
    store: ArtifactStore, bwrap: str, why: str
) -> None:
    runner = CommandRunner(SandboxSettings(bwrap=bwrap), host=probe(bwrap))
    steps = activities(store, runner)
    error = await failing(steps, shell("touch ran.txt"))
    assert "sandbox-unavailable: " in error.message
    assert why in error.message
    assert error.details[2] == "sandbox-unavailable"  # the step's status reason
    assert not (store.workspace("acme", "run-1") / "ran.txt").exists()
    # A step that runs no command does not need the sandbox.
    req = RunStepRequest(runId="run-1", tenant="acme", stepId="e", uses="builtin:noop", with_={})
    assert (await ActivityEnvironment().run(steps.run_step, req)).outputs == {}


def test_start_up_says_what_this_host_gives() -> None:
    lines = sandbox_lines(WorkerSettings())
    assert any(line.startswith("filesystem: own mount namespace") for line in lines), lines
    assert any("cgroup v" in line for line in lines), lines
    broken = sandbox_lines(WorkerSettings(sandbox_bwrap="/nonexistent/bwrap"))
    assert broken[0].startswith("!! sandbox unavailable: ")
    with capture_logs() as logs:
        report_sandbox(WorkerSettings(sandbox="off"))
    assert logs[0]["log_level"] == "warning"
    assert "TASKRUNNER_SANDBOX=off" in logs[0]["protection"]


async def test_sandbox_off_runs_but_warns_in_every_steps_log(store: ArtifactStore) -> None:
    steps = activities(store, CommandRunner(SandboxSettings(enabled=False)))
    result = await ActivityEnvironment().run(steps.run_step, shell("echo ran"))
    assert result.outputs["stdout"] == "ran\n"
    assert result.outputs["stderr"].startswith(OFF_WARNING)
    stderr = next(a for a in result.artifacts if a.name == "step.stderr")
    assert (
        (store.root / str(stderr.storedPath))
        .read_text()
        .startswith("WARNING: TASKRUNNER_SANDBOX=off")
    )


@pytest.mark.parametrize("enabled", [True, False])
async def test_custom_executors_run_commands_through_the_helper(
    store: ArtifactStore, enabled: bool
) -> None:
    steps = activities(store, CommandRunner(SandboxSettings(enabled=enabled)))
    req = RunStepRequest(
        runId="run-1", tenant="acme", stepId="c", uses="custom:cat", with_={"data": "payload"}
    )
    outputs = (await ActivityEnvironment().run(steps.run_step, req)).outputs
    assert outputs["code"] == 0
    workspace = "/workspace" if enabled else str(store.workspace("acme", "run-1"))
    assert outputs["out"] == f"payload in {workspace}\n"


@pytest.mark.parametrize(
    ("sandbox", "timeout", "field"),
    [
        (Sandbox(memoryLimitMiB=4096), 60, "spec.sandbox.memoryLimitMiB"),
        (Sandbox(mode="open"), 60, "spec.sandbox.mode"),
        (Sandbox(), 7200, "timeoutSeconds"),
    ],
)
async def test_the_worker_refuses_a_plan_above_its_ceilings(
    store: ArtifactStore, sandbox: Sandbox, timeout: int, field: str
) -> None:
    ceilings = Ceilings(memory_mib=1024, timeout_seconds=3600, allow_open=False)
    steps = activities(store, CommandRunner(SandboxSettings()), ceilings=ceilings)
    error = await failing(steps, shell("touch ran.txt", sandbox=sandbox, timeoutSeconds=timeout))
    assert "sandbox-refused: " in error.message and field in error.message
    assert error.details[2] == "sandbox-refused"
    assert not (store.workspace("acme", "run-1") / "ran.txt").exists()


async def test_a_custom_executors_failure_after_a_broken_limit_names_the_limit(
    store: ArtifactStore,
) -> None:
    steps = activities(store, CommandRunner(SandboxSettings()))
    req = RunStepRequest(
        runId="run-1", tenant="acme", stepId="c", uses="custom:sleep", with_={"timeout": 0.5}
    )
    error = await failing(steps, req)
    assert error.message == "custom:sleep: the sleeper did not finish"
    assert error.details[2] == "timeout"


async def test_a_failure_that_broke_no_limit_has_no_reason(store: ArtifactStore) -> None:
    steps = activities(store, CommandRunner(SandboxSettings()))
    error = await failing(steps, shell("exit 3"))
    assert len(error.details) == 2  # outputs and artifacts: the workflow says `step-failed`
