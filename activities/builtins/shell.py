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

The command runs in the step's sandbox (`activities/sandbox/runner.py`): the run workspace is
`/workspace` (also HOME and the default cwd), the system is read-only, `/tmp` is a small tmpfs,
the network is the sandbox's (`mode`, `egressAllowlist`), and the step's limits hold for every
process it starts. The environment is minimal on purpose (PATH, HOME, LANG, and
TASKRUNNER_RUN_ID, TASKRUNNER_STEP_ID, TASKRUNNER_ATTEMPT, TASKRUNNER_WORKSPACE, plus `env`):
nothing of the worker's own environment, its secrets above all, reaches a step. A script reaches
the sandbox through a pipe, read-only, never through the disk. When the command ends, every
process it started is killed.

A step that breaks a limit fails with the limit's name as its status reason and first in the
message: `memory-limit`, `cpu-time-limit`, `timeout`, `disk-limit`, `egress-denied`, `pids-limit`
(also in the outputs as `limit`).

A non-zero exit, a signal, a timeout or a bad `with` fail the step permanently, with the outputs
attached to the failure.
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from activities.executor import ExecutorContext, Params, StepFailed, parse_params
from activities.sandbox.runner import FILES_DIR, TIMEOUT, CommandResult
from compiler.expressions import to_text
from workflows.contract.artifacts import UnsafePathError

OUTPUTS_PREFIX = "::outputs::"
TAIL_CHARS = 4096
HEAD_LIMIT_BYTES = 16 * 1024 * 1024
TAIL_LIMIT_BYTES = 1024 * 1024
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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

    # The streams go to files next to the run, not pipes or /tmp: they can be large, a
    # background process holding a pipe open would hold up reading, and /tmp is often
    # memory-backed. The folder (and the raw, unmasked streams) is removed afterwards.
    scratch_root = ctx.store.scratch_dir(ctx.tenant, ctx.run_id)
    with tempfile.TemporaryDirectory(prefix="shell-", dir=scratch_root) as scratch:
        folder = Path(scratch)
        argv, files = _argv(args)
        with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
            ctx.logger.info("shell.started", extra={"step_id": ctx.step_id})
            run = await ctx.run_command(
                argv, stdout=out, stderr=err, env=env, cwd=cwd, files=files, timeout=timeout
            )
            ctx.logger.info(
                "shell.finished",
                extra={"step_id": ctx.step_id, "exit_code": run.returncode, "limit": run.limit},
            )
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

    if run.limit == TIMEOUT:
        outputs["timedOut"] = True
        outputs["limit"] = TIMEOUT
        raise StepFailed(
            f"{ctx.uses}: {TIMEOUT}: command timed out after {timeout:g}s", outputs, TIMEOUT
        )
    if run.limit is not None:
        outputs["limit"] = run.limit
        raise StepFailed(f"{ctx.uses}: {run.limit}: {run.detail}", outputs, run.limit)
    missing = _not_started(run, raw_stderr)
    if missing:
        raise StepFailed(f"{ctx.uses}: program {argv[0]!r} {missing}", outputs)
    if run.returncode < 0:
        raise StepFailed(
            f"{ctx.uses}: command was killed by {_signal_text(-run.returncode)}", outputs
        )
    if run.returncode > 0:
        # Shells report a child killed by signal N as exit code 128+N; say which signal.
        hint = ""
        if 128 < run.returncode < 128 + 65:
            hint = f" (128+{_signal_text(run.returncode - 128)})"
        last = _last_line(stderr)
        detail = f": {last[:200]}" if last else ""
        raise StepFailed(
            f"{ctx.uses}: command exited with code {run.returncode}{hint}{detail}", outputs
        )
    if problem:
        raise StepFailed(f"{ctx.uses}: {problem}", outputs)
    return outputs


def _environment(args: ShellParams, ctx: ExecutorContext) -> dict[str, str]:
    workspace = ctx.command_workspace
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": workspace,
        "LANG": "C.UTF-8",
        "TASKRUNNER_RUN_ID": ctx.run_id,
        "TASKRUNNER_STEP_ID": ctx.step_id,
        "TASKRUNNER_ATTEMPT": str(ctx.attempt),
        "TASKRUNNER_WORKSPACE": workspace,
    }
    for name, value in args.env.items():
        text = to_text(value)
        if "\0" in text:
            raise StepFailed(f"{ctx.uses}: env {name!r} must not contain NUL")
        env[name] = text
    return env


def _argv(args: ShellParams) -> tuple[list[str], dict[str, bytes]]:
    if args.command is not None:
        return ["/bin/sh", "-c", args.command], {}
    assert args.script is not None
    # A file rather than `-c`: every interpreter takes a script path, not all take `-c`. It
    # reaches the sandbox through a pipe, read-only: the script may hold resolved secrets.
    return [*shlex.split(args.interpreter or "sh"), f"{FILES_DIR}/script"], {
        "script": args.script.encode()
    }


def _not_started(run: CommandResult, stderr: str) -> str:
    """Why the program never started ('not found', ...), or "" when it did."""
    first = stderr.lstrip().split("\n", 1)[0]
    if run.returncode == 1 and first.startswith("bwrap: execvp "):
        return "is not executable" if "Permission denied" in first else "not found on PATH"
    return ""


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


def _signal_text(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


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
