"""`builtin:shell`: run a command or a script as a subprocess of the worker.

    with:
      command: "make test"              # run by /bin/sh -c ...
      # or
      script: |                         # written to a private temp file and run as
        print("hello")                  #   <interpreter> <file>
      interpreter: python3              # default sh; e.g. bash, sh, python3, "python3 -u"
      env: {NAME: value}                # merged over a minimal environment
      cwd: build                        # relative to the run workspace (created if missing)
      timeoutSeconds: 60                # capped by the step's own timeout

Outputs: `exitCode`, and `stdout` / `stderr` holding the last 4096 characters of each stream.
The full streams are stored as the artifacts `<stepId>.stdout` and `<stepId>.stderr` (up to 16 MiB
each is kept from the start, plus the last 1 MiB; anything between is replaced by a marker).

Returning values: if the last non-empty line of stdout is `::outputs::` followed by a JSON
object, its keys are merged into the outputs, e.g. `echo '::outputs::{"version": "1.2.3"}'`
makes `steps.<id>.outputs.version` available. `exitCode`, `stdout` and `stderr` cannot be
overridden this way. A line with the prefix that is not a JSON object fails the step.

The environment is minimal on purpose (PATH, HOME=workspace, LANG, and TASKRUNNER_RUN_ID,
TASKRUNNER_STEP_ID, TASKRUNNER_ATTEMPT, TASKRUNNER_WORKSPACE): nothing from the worker's own
environment, its secrets above all, leaks into a step unless the step passes it in `env`.

Limits from the plan's sandbox apply through setrlimit in the child: `quotaSeconds` caps CPU time
(RLIMIT_CPU, SIGXCPU then SIGKILL a second later) and `memoryLimitMiB` caps address space
(RLIMIT_AS). Core dumps are off. The command runs in its own session, and its whole process group
is killed on timeout, on cancellation and when the command exits, so nothing outlives the step;
on Linux the command is also killed if the worker itself dies (PR_SET_PDEATHSIG).

A non-zero exit, a signal, a timeout or a bad `with` fail the step permanently, with the outputs
attached to the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from activities.executor import ExecutorContext, Params, StepFailed, parse_params
from compiler.expressions import to_text
from compiler.plan import Sandbox
from workflows.contract.artifacts import UnsafePathError

OUTPUTS_PREFIX = "::outputs::"
TAIL_CHARS = 4096
HEAD_LIMIT_BYTES = 16 * 1024 * 1024
TAIL_LIMIT_BYTES = 1024 * 1024
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TERM_GRACE_SECONDS = 2.0
_MIB = 1024 * 1024
_PR_SET_PDEATHSIG = 1


class ShellParams(Params):
    command: str | None = None
    script: str | None = None
    interpreter: str | None = None
    env: dict[str, str | int | float | bool] = Field(default_factory=dict)
    cwd: str | None = None
    timeoutSeconds: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_program(self) -> ShellParams:
        if (self.command is None) == (self.script is None):
            raise ValueError("give exactly one of `command` and `script`")
        if self.interpreter is not None and self.script is None:
            raise ValueError("`interpreter` only applies to `script`")
        if self.interpreter is not None and not shlex.split(self.interpreter):
            raise ValueError("`interpreter` must name a program")
        for name in self.env:
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"env name {name!r} is not a valid variable name")
        return self


async def shell(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    """`builtin:shell`: see the module docstring for `with`, outputs and limits."""
    args = parse_params(ShellParams, params, ctx.uses)
    try:
        cwd = ctx.store.workspace_path(ctx.tenant, ctx.run_id, args.cwd or ".")
    except UnsafePathError as exc:
        raise StepFailed(f"{ctx.uses}: cwd refused: {exc}") from None
    try:
        cwd.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StepFailed(f"{ctx.uses}: cwd {args.cwd!r} is not a directory") from None
    env = _environment(args, ctx)
    timeout = min(args.timeoutSeconds or math.inf, ctx.timeout_seconds)

    # Scratch space next to the run, not in /tmp: the streams can be large, and /tmp is often
    # memory-backed.
    scratch_root = ctx.store.scratch_dir(ctx.tenant, ctx.run_id)
    with tempfile.TemporaryDirectory(prefix="shell-", dir=scratch_root) as scratch:
        folder = Path(scratch)
        argv = _argv(args, folder)
        run = await _run(argv, cwd, env, timeout, folder, ctx)
        raw_stdout = _read_stream(folder / "stdout")
        raw_stderr = _read_stream(folder / "stderr")

    stdout = ctx.mask(raw_stdout)
    stderr = ctx.mask(raw_stderr)
    ctx.write_artifact(f"{ctx.step_id}.stdout", stdout)
    ctx.write_artifact(f"{ctx.step_id}.stderr", stderr)
    returned, problem = _script_outputs(raw_stdout)
    outputs: dict[str, Any] = {
        **returned,
        "exitCode": run.returncode,
        "stdout": stdout[-TAIL_CHARS:],
        "stderr": stderr[-TAIL_CHARS:],
    }

    if run.timed_out:
        outputs["timedOut"] = True
        raise StepFailed(f"{ctx.uses}: command timed out after {timeout:g}s", outputs)
    if run.returncode < 0:
        reason = _signal_text(-run.returncode, ctx.sandbox)
        raise StepFailed(f"{ctx.uses}: command was killed by {reason}", outputs)
    if run.returncode > 0:
        # Shells report a child killed by signal N as exit code 128+N; say which signal.
        hint = ""
        if 128 < run.returncode < 128 + 65:
            hint = f" (128+{_signal_text(run.returncode - 128, ctx.sandbox)})"
        last = _last_line(stderr)
        detail = f": {last[:200]}" if last else ""
        raise StepFailed(
            f"{ctx.uses}: command exited with code {run.returncode}{hint}{detail}", outputs
        )
    if problem:
        raise StepFailed(f"{ctx.uses}: {problem}", outputs)
    return outputs


def _environment(args: ShellParams, ctx: ExecutorContext) -> dict[str, str]:
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": str(ctx.workspace),
        "LANG": "C.UTF-8",
        "TASKRUNNER_RUN_ID": ctx.run_id,
        "TASKRUNNER_STEP_ID": ctx.step_id,
        "TASKRUNNER_ATTEMPT": str(ctx.attempt),
        "TASKRUNNER_WORKSPACE": str(ctx.workspace),
    }
    for name, value in args.env.items():
        text = to_text(value)
        if "\0" in text:
            raise StepFailed(f"{ctx.uses}: env {name!r} must not contain NUL")
        env[name] = text
    return env


def _argv(args: ShellParams, scratch: Path) -> list[str]:
    if args.command is not None:
        return ["/bin/sh", "-c", args.command]
    assert args.script is not None
    # A file rather than `-c`: every interpreter takes a script path, not all take `-c`. The
    # folder is private (0700) and removed afterwards: the script may hold resolved secrets.
    path = scratch / "script"
    path.write_text(args.script)
    path.chmod(0o600)
    return [*shlex.split(args.interpreter or "sh"), str(path)]


class _Run:
    def __init__(self) -> None:
        self.returncode = 0
        self.timed_out = False


async def _run(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    folder: Path,
    ctx: ExecutorContext,
) -> _Run:
    run = _Run()
    # The streams go to files, not pipes: a background process that keeps a pipe open would
    # hold up reading (and asyncio's wait()) long after the command itself has exited, and a
    # file needs no reader keeping up with a chatty command.
    try:
        with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                # Its own session makes the child a process group leader, so one killpg
                # reaches everything it started.
                start_new_session=True,
                preexec_fn=_limits(ctx.sandbox),
            )
    except FileNotFoundError:
        raise StepFailed(f"{ctx.uses}: program {argv[0]!r} not found on PATH") from None
    except PermissionError:
        raise StepFailed(f"{ctx.uses}: program {argv[0]!r} is not executable") from None
    except subprocess.SubprocessError as exc:
        raise StepFailed(f"{ctx.uses}: could not start the command: {exc}") from None

    ctx.logger.info("shell.started", extra={"step_id": ctx.step_id, "pid": proc.pid})
    try:
        try:
            await asyncio.wait_for(proc.wait(), None if math.isinf(timeout) else timeout)
        except TimeoutError:
            run.timed_out = True
            ctx.logger.warning("shell.timed-out", extra={"step_id": ctx.step_id})
            await _stop(proc)
    except BaseException:
        # Cancelled (or failing unexpectedly): take the whole group down before letting go.
        # Shielded so a second cancellation cannot leave the children running.
        await asyncio.shield(_stop(proc))
        raise
    # Whatever the command left running in its group would outlive the step; a step leaves
    # nothing behind.
    _kill_group(proc.pid, signal.SIGKILL)
    assert proc.returncode is not None
    run.returncode = proc.returncode
    ctx.logger.info("shell.finished", extra={"step_id": ctx.step_id, "exit_code": proc.returncode})
    return run


def _read_stream(path: Path) -> str:
    """A captured stream's text: all of it, or its first HEAD_LIMIT_BYTES and last
    TAIL_LIMIT_BYTES around a marker, so a chatty command cannot exhaust the worker's memory
    while the end (where errors and `::outputs::` are) is always kept.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        if size <= HEAD_LIMIT_BYTES + TAIL_LIMIT_BYTES:
            data = handle.read()
        else:
            head = handle.read(HEAD_LIMIT_BYTES)
            handle.seek(size - TAIL_LIMIT_BYTES)
            tail = handle.read()
            dropped = size - len(head) - len(tail)
            data = head + f"\n[... {dropped} bytes dropped ...]\n".encode() + tail
    return data.decode("utf-8", "replace")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """TERM the process group, then KILL it if the leader has not exited within the grace."""
    if proc.returncode is None:
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), TERM_GRACE_SECONDS)
        except TimeoutError:
            _kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    _kill_group(proc.pid, signal.SIGKILL)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _limits(sandbox: Sandbox) -> Callable[[], None]:
    """The preexec_fn applying the sandbox's limits in the child, before exec.

    Limits are computed here, in the parent, and clamped to the worker's own hard limits (an
    unprivileged process cannot raise those, and a failing preexec_fn would fail the spawn);
    the child only makes the setrlimit calls.
    """
    wanted: list[tuple[int, int, int]] = [(resource.RLIMIT_CORE, 0, 0)]
    if sandbox.quotaSeconds > 0:
        # The soft limit sends SIGXCPU; the hard limit a second later is a SIGKILL for a
        # process that catches or ignores SIGXCPU.
        wanted.append((resource.RLIMIT_CPU, sandbox.quotaSeconds, sandbox.quotaSeconds + 1))
    if sandbox.memoryLimitMiB > 0:
        size = sandbox.memoryLimitMiB * _MIB
        wanted.append((resource.RLIMIT_AS, size, size))
    limits: list[tuple[int, int, int]] = []
    for which, soft, hard in wanted:
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
        limits.append((which, min(soft, hard), hard))

    # The command runs in its own session, out of reach of a signal to the worker's process
    # group; should the worker die without cleaning up (SIGKILL, OOM), the kernel kills the
    # command too. Linux only; elsewhere a dead worker can leave the command running.
    prctl = _prctl()
    parent = os.getpid()

    def apply() -> None:
        for which, soft, hard in limits:
            resource.setrlimit(which, (soft, hard))
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the worker died before prctl took effect
                os._exit(1)

    return apply


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return fn


def _signal_text(signum: int, sandbox: Sandbox) -> str:
    try:
        text = signal.Signals(signum).name
    except ValueError:
        text = f"signal {signum}"
    if signum == signal.SIGXCPU:
        text += f", the CPU time quota of {sandbox.quotaSeconds}s used up"
    return text


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _script_outputs(stdout: str) -> tuple[dict[str, Any], str | None]:
    """Values returned through a last `::outputs::` line, or a problem with that line."""
    line = _last_line(stdout)
    if not line.startswith(OUTPUTS_PREFIX):
        return {}, None
    try:
        values = json.loads(line[len(OUTPUTS_PREFIX) :])
    except ValueError:
        values = None
    if not isinstance(values, dict):
        return {}, f"the last stdout line starts with {OUTPUTS_PREFIX} but is not a JSON object"
    return values, None
