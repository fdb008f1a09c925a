"""`builtin:shell` with real subprocesses and real files: outputs, artifacts, limits, safety."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from activities.artifacts import ArtifactStore
from activities.builtins import shell as shell_module
from activities.builtins.shell import TAIL_CHARS, shell
from activities.executor import StepFailed
from compiler.plan import Sandbox
from tests.processes import processes_with


def artifact_text(store: ArtifactStore, ctx: Any, suffix: str) -> str:
    record = next(a for a in ctx.artifacts if a.name == f"{ctx.step_id}.{suffix}")
    return (store.root / record.storedPath).read_text()


async def test_command_success(make_ctx: Any, store: ArtifactStore) -> None:
    ctx = make_ctx(step_id="build")
    outputs = await shell({"command": "echo out; echo err >&2"}, ctx)
    assert outputs == {"exitCode": 0, "stdout": "out\n", "stderr": "err\n"}
    assert [a.storedPath for a in ctx.artifacts] == [
        "runs/acme/run-1/artifacts/build.stdout",
        "runs/acme/run-1/artifacts/build.stderr",
    ]
    assert artifact_text(store, ctx, "stdout") == "out\n"
    assert artifact_text(store, ctx, "stderr") == "err\n"


async def test_runs_in_workspace_by_default(make_ctx: Any) -> None:
    ctx = make_ctx()
    outputs = await shell({"command": "pwd; echo data > made.txt"}, ctx)
    # The sandbox shows the run workspace at /workspace; the file lands in the real one.
    assert outputs["stdout"].strip() == "/workspace"
    assert (ctx.workspace / "made.txt").read_text() == "data\n"


@pytest.mark.parametrize(
    ("interpreter", "script", "expected"),
    [
        (None, "echo $((1 + 2))", "3"),
        ("bash", "echo ${BASH_VERSION:+bash}", "bash"),
        ("python3", "import sys\nprint(sys.version_info[0])", "3"),
        ("python3 -u", "print('unbuffered')", "unbuffered"),
    ],
)
async def test_script_with_interpreter(
    make_ctx: Any, interpreter: str | None, script: str, expected: str
) -> None:
    params: dict[str, Any] = {"script": script}
    if interpreter:
        params["interpreter"] = interpreter
    outputs = await shell(params, make_ctx())
    assert outputs["stdout"].strip() == expected


async def test_non_zero_exit_fails_permanently_with_outputs(make_ctx: Any) -> None:
    with pytest.raises(StepFailed, match=r"exited with code 3: bad thing") as caught:
        await shell({"command": "echo partial; echo bad thing >&2; exit 3"}, make_ctx())
    assert caught.value.outputs == {"exitCode": 3, "stdout": "partial\n", "stderr": "bad thing\n"}


async def test_timeout_kills_and_fails(make_ctx: Any) -> None:
    started = time.monotonic()
    with pytest.raises(StepFailed, match=r"timed out after 0\.5s") as caught:
        await shell({"command": "echo before; sleep 30", "timeoutSeconds": 0.5}, make_ctx())
    assert time.monotonic() - started < 5
    assert caught.value.outputs["timedOut"] is True
    assert caught.value.outputs["stdout"] == "before\n"


async def test_step_timeout_caps_with_timeout(make_ctx: Any) -> None:
    with pytest.raises(StepFailed, match=r"timed out after 0\.5s"):
        await shell({"command": "sleep 30", "timeoutSeconds": 60}, make_ctx(timeout_seconds=0.5))


@pytest.mark.parametrize("cwd", ["..", "../../..", "/etc", "a/../../b"])
async def test_cwd_escape_refused(make_ctx: Any, cwd: str) -> None:
    with pytest.raises(StepFailed, match="cwd refused"):
        await shell({"command": "pwd", "cwd": cwd}, make_ctx())


async def test_cwd_symlink_escape_refused(make_ctx: Any, tmp_path: Path) -> None:
    ctx = make_ctx()
    (ctx.workspace / "out").symlink_to(tmp_path)
    with pytest.raises(StepFailed, match="escapes the run workspace"):
        await shell({"command": "pwd", "cwd": "out"}, ctx)


async def test_cwd_inside_workspace_is_created(make_ctx: Any) -> None:
    ctx = make_ctx()
    outputs = await shell({"command": "pwd", "cwd": "sub/dir"}, ctx)
    assert outputs["stdout"].strip() == "/workspace/sub/dir"
    assert (ctx.workspace / "sub" / "dir").is_dir()


async def test_env_is_minimal_and_merged(make_ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKRUNNER_SECRET_LEAK", "worker-only")
    ctx = make_ctx(step_id="envy")
    outputs = await shell(
        {
            "command": "env",
            "env": {"GREETING": "hi there", "COUNT": 3, "FLAG": True, "PATH": "/usr/bin:/bin"},
        },
        ctx,
    )
    env = dict(line.split("=", 1) for line in outputs["stdout"].splitlines() if "=" in line)
    assert env["GREETING"] == "hi there"
    assert env["COUNT"] == "3"
    assert env["FLAG"] == "true"
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["TASKRUNNER_STEP_ID"] == "envy"
    assert env["TASKRUNNER_RUN_ID"] == "run-1"
    assert env["HOME"] == env["TASKRUNNER_WORKSPACE"] == "/workspace"
    assert "TASKRUNNER_SECRET_LEAK" not in env
    assert "worker-only" not in outputs["stdout"]


async def test_outputs_line_is_merged(make_ctx: Any) -> None:
    command = """echo working; echo '::outputs::{"version": "1.2.3", "exitCode": 99, "n": [1]}'"""
    outputs = await shell({"command": command}, make_ctx())
    assert outputs["version"] == "1.2.3"
    assert outputs["n"] == [1]
    assert outputs["exitCode"] == 0  # builtin outputs cannot be overridden


async def test_outputs_line_only_counts_when_last(make_ctx: Any) -> None:
    outputs = await shell({"command": "echo '::outputs::{\"a\": 1}'; echo done"}, make_ctx())
    assert "a" not in outputs


async def test_bad_outputs_line_fails(make_ctx: Any) -> None:
    with pytest.raises(StepFailed, match="not a JSON object") as caught:
        await shell({"command": "echo '::outputs::[1, 2]'"}, make_ctx())
    assert caught.value.outputs["exitCode"] == 0


async def test_long_output_tail_in_outputs_full_text_in_artifact(
    make_ctx: Any, store: ArtifactStore
) -> None:
    ctx = make_ctx()
    script = "for i in range(2000): print(f'line {i:05d}')"
    outputs = await shell({"script": script, "interpreter": "python3"}, ctx)
    assert len(outputs["stdout"]) == TAIL_CHARS
    assert outputs["stdout"].endswith("line 01999\n")
    full = artifact_text(store, ctx, "stdout")
    assert full.startswith("line 00000\n")
    assert len(full.splitlines()) == 2000


async def test_huge_output_keeps_head_and_tail(
    make_ctx: Any, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell_module, "HEAD_LIMIT_BYTES", 1000)
    monkeypatch.setattr(shell_module, "TAIL_LIMIT_BYTES", 500)
    ctx = make_ctx()
    script = "print('H' * 1000 + 'M' * 5000 + 'T' * 499)"
    outputs = await shell({"script": script, "interpreter": "python3"}, ctx)
    full = artifact_text(store, ctx, "stdout")
    assert full == "H" * 1000 + "\n[... 5000 bytes dropped ...]\n" + "T" * 499 + "\n"
    assert outputs["stdout"].endswith("T" * 499 + "\n")


async def test_secrets_masked_in_outputs_and_artifacts(make_ctx: Any, store: ArtifactStore) -> None:
    ctx = make_ctx(secrets=("hunter2",))
    outputs = await shell(
        {"command": 'echo "token=$TOKEN"; echo "$TOKEN" >&2', "env": {"TOKEN": "hunter2"}}, ctx
    )
    assert outputs["stdout"] == "token=***\n"
    assert outputs["stderr"] == "***\n"
    assert "hunter2" not in artifact_text(store, ctx, "stdout")
    assert "hunter2" not in artifact_text(store, ctx, "stderr")


async def test_memory_hog_is_stopped_by_memory_limit(make_ctx: Any) -> None:
    ctx = make_ctx(sandbox=Sandbox(memoryLimitMiB=128))
    hog = "x = bytearray(1024 * 1024 * 1024); print('allocated')"
    with pytest.raises(StepFailed, match=r"memory-limit: .*memoryLimitMiB") as caught:
        await shell({"script": hog, "interpreter": "python3"}, ctx)
    assert caught.value.outputs["limit"] == "memory-limit"
    assert "allocated" not in caught.value.outputs["stdout"]


async def test_cpu_spin_is_killed_by_cpu_quota(make_ctx: Any) -> None:
    ctx = make_ctx(sandbox=Sandbox(quotaSeconds=1))
    started = time.monotonic()
    with pytest.raises(StepFailed, match=r"cpu-time-limit: .*quotaSeconds") as caught:
        await shell(
            {"script": "while True: pass", "interpreter": "python3", "timeoutSeconds": 20}, ctx
        )
    assert time.monotonic() - started < 10
    assert caught.value.outputs["limit"] == "cpu-time-limit"
    assert "timedOut" not in caught.value.outputs


async def test_left_over_background_processes_are_killed(make_ctx: Any) -> None:
    ctx = make_ctx()
    marker = f"{30 + os.getpid() % 1000 / 1000:.3f}"  # a sleep no other test runs
    started = time.monotonic()
    await shell({"command": f"sleep {marker} & setsid sleep {marker} & echo started"}, ctx)
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while processes_with(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes_with(f"sleep {marker}")


ORPHAN_HELPER = """
import asyncio, sys
from activities.artifacts import ArtifactStore
from activities.builtins.shell import shell
from activities.executor import ExecutorContext
store = ArtifactStore(sys.argv[1])
ctx = ExecutorContext(run_id="r", tenant="t", step_id="s", uses="builtin:shell",
                      workspace=store.workspace("t", "r"), store=store)
asyncio.run(shell({"command": "echo started > pid; exec sleep " + sys.argv[2]}, ctx))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
async def test_command_dies_with_a_killed_worker(tmp_path: Path) -> None:
    root = tmp_path / "root"
    repo = Path(__file__).resolve().parents[2]
    # Unique to this test: processes are looked for host-wide, where other sessions run tests.
    seconds = f"31.{uuid.uuid4().int % 10**6 + 10**6}"
    worker = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_HELPER, str(root), seconds],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        pid_file = root / "runs" / "t" / "r" / "workspace" / "pid"
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, "the command never started"
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 10
        while not processes_with(f"sleep {seconds}"):
            assert time.monotonic() < deadline, "the command never ran"
            await asyncio.sleep(0.02)
        worker.kill()  # SIGKILL: no cleanup code of the worker runs
    finally:
        worker.kill()
        worker.wait(timeout=10)
    deadline = time.monotonic() + 5
    while processes_with(f"sleep {seconds}") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not processes_with(f"sleep {seconds}")


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({}, "exactly one of `command` and `script`"),
        ({"command": "true", "script": "true"}, "exactly one of"),
        ({"command": "true", "interpreter": "bash"}, "only applies to `script`"),
        ({"command": "true", "timeoutSeconds": 0}, "with.timeoutSeconds"),
        ({"command": "true", "env": {"A=B": "x"}}, "not a valid variable name"),
        ({"command": "true", "shell": "bash"}, "with.shell: Extra inputs"),
    ],
)
async def test_bad_with_is_refused(make_ctx: Any, params: dict[str, Any], problem: str) -> None:
    with pytest.raises(StepFailed, match=problem):
        await shell(params, make_ctx())


async def test_unknown_interpreter_fails_permanently(make_ctx: Any) -> None:
    with pytest.raises(StepFailed, match="'no-such-interpreter' not found"):
        await shell({"script": "x", "interpreter": "no-such-interpreter"}, make_ctx())
