"""Step cgroups on a host several workers share: a worker starting up clears the groups dead
workers left behind, never a live worker's group, which is empty for a moment before its
command joins it (and after its command ended, before its usage is read)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.artifacts import ArtifactStore
from activities.registry import Registry
from activities.sandbox.cgroups import (
    CgroupBackend,
    CgroupUnavailable,
    CgroupV1,
    CgroupV2,
    Limits,
    StepCgroup,
    detect,
)
from activities.sandbox.host import host_sandbox
from activities.sandbox.runner import CommandRunner, SandboxSettings
from activities.secrets import MappingSecretProvider
from activities.step_activities import StepActivities
from workflows.contract.activities import RunStepRequest

ROOT = Path(__file__).resolve().parents[2]


def parents() -> list[Path]:
    backend = detect()
    if isinstance(backend, CgroupV1):
        return sorted(set(backend.parents.values()))
    assert isinstance(backend, CgroupV2)
    return [backend.parent]


def another_worker_starts() -> None:
    """What a second worker on this host does at start-up, in a process of its own."""
    subprocess.run(
        [sys.executable, "-c", "from activities.sandbox.cgroups import detect; detect()"],
        cwd=ROOT,
        check=True,
        timeout=60,
    )


@pytest.fixture
def backend_ok() -> Iterator[None]:
    try:
        detect()
    except CgroupUnavailable as exc:
        pytest.skip(f"no cgroup here: {exc}")
    yield


@pytest.mark.usefixtures("backend_ok")
def test_a_live_workers_empty_group_survives_another_workers_start_up() -> None:
    group = detect().create(Limits(memory_mib=64, cpu_millicores=500, pids=16))
    try:
        assert group.pids() == []  # created, nothing joined yet
        another_worker_starts()
        assert all(folder.is_dir() for folder in group.folders)
        # And the step can still join it.
        joined = subprocess.run(
            ["/bin/sh", "-c", 'for f in "$@"; do echo 0 > "$f" || exit 1; done', "sh",
             *group.join_paths],
            timeout=30,
        )  # fmt: skip
        assert joined.returncode == 0
    finally:
        group.remove()
    assert not any(folder.exists() for folder in group.folders)


@pytest.mark.usefixtures("backend_ok")
def test_a_dead_workers_leftover_group_is_removed() -> None:
    gone = subprocess.Popen(["/bin/true"])
    gone.wait()
    leftovers = [parent / f"step-{gone.pid}-0123456789ab" for parent in parents()]
    for folder in leftovers:
        folder.mkdir()
    try:
        another_worker_starts()
        assert not any(folder.exists() for folder in leftovers)
    finally:
        for folder in leftovers:
            if folder.exists():
                folder.rmdir()


class Vanishing(CgroupBackend):
    """The host's backend, but the first `times` groups are taken away (still empty) right
    after they are made, as another worker's start-up on the same host used to."""

    def __init__(self, real: CgroupBackend, times: int) -> None:
        self.real, self.times, self.version = real, times, real.version

    def create(self, limits: Limits) -> StepCgroup:
        group = self.real.create(limits)
        if self.times > 0:
            self.times -= 1
            for folder in group.folders:
                folder.rmdir()
        return group

    def describe(self) -> str:
        return self.real.describe()


def runner_losing(times: int) -> CommandRunner:
    host = host_sandbox()
    assert host.cgroups is not None
    return CommandRunner(
        SandboxSettings(), host=dataclasses.replace(host, cgroups=Vanishing(host.cgroups, times))
    )


def step(command: str) -> RunStepRequest:
    return RunStepRequest(
        runId="run-1", tenant="acme", stepId="s", uses="builtin:shell", with_={"command": command}
    )


def activities(store: ArtifactStore, runner: CommandRunner) -> StepActivities:
    return StepActivities(
        Registry(entry_points=[]), store, MappingSecretProvider({}), runner=runner
    )


@pytest.mark.usefixtures("backend_ok")
async def test_a_group_taken_before_the_command_joined_is_made_again(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    steps = activities(store, runner_losing(1))
    result = await ActivityEnvironment().run(steps.run_step, step("echo ran >> runs.txt; echo hi"))
    assert result.outputs["stdout"] == "hi\n"
    assert result.outputs["stderr"] == ""  # the failed launch's complaint is not kept
    assert (store.workspace("acme", "run-1") / "runs.txt").read_text() == "ran\n"  # once


@pytest.mark.usefixtures("backend_ok")
async def test_a_group_that_keeps_vanishing_is_sandbox_unavailable_and_nothing_ran(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(tmp_path)
    steps = activities(store, runner_losing(99))
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(steps.run_step, step("echo ran >> runs.txt"))
    assert caught.value.non_retryable
    assert "sandbox-unavailable: the command could not join the step's cgroup" in str(
        caught.value.message
    )
    assert caught.value.details[2] == "sandbox-unavailable"
    assert not (store.workspace("acme", "run-1") / "runs.txt").exists()
