"""`taskrunner runs ...` as a user runs it: the installed script in a subprocess, against the
live test API (real dev server and worker), configured by TASKRUNNER_URL/TOKEN/TENANT."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from cli.client_commands import ASCII_SYMBOLS, SYMBOLS, render
from tests.api.packs import ECHO, GATED, SLOW
from tests.api.support import OPERATOR, token
from tests.compiler.packs import ONE_PASS
from tests.helpers import unique
from workflows.contract.names import workflow_id

FAILING = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: cli-fail, version: 1.0.0}
spec:
  steps:
    - {id: boom, run: {uses: "builtin:fail", with: {message: "no luck"}}}
"""

SHELL_FAILING = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: cli-shell-fail, version: 1.0.0}
spec:
  steps:
    - id: build
      run:
        uses: builtin:shell
        with: {command: "echo compiling >&2; echo 'error: missing semicolon' >&2; exit 3"}
"""


def script() -> list[str]:
    found = Path(sys.executable).parent / "taskrunner"
    if found.exists():
        return [str(found)]
    which = shutil.which("taskrunner")
    return [which] if which else [sys.executable, "-m", "cli.main"]


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Awaitable[Result]]


@pytest.fixture
def tenant() -> str:
    return unique("cli")


@pytest.fixture
def env(stack: Any, tenant: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("TASKRUNNER_")}
    return {
        **keep,
        "TASKRUNNER_URL": stack.url,
        "TASKRUNNER_TOKEN": token(OPERATOR, grants=["packs.approve"], tenant=tenant),
        "TASKRUNNER_TENANT": tenant,
    }


@pytest.fixture
def taskrunner(env: dict[str, str], tmp_path: Path) -> Cli:
    async def run(*args: str, stdin: str | None = None, **overrides: str) -> Result:
        # Not subprocess.run: the test's worker runs on this event loop and must keep going.
        process = await asyncio.create_subprocess_exec(
            *script(),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp_path,
            env={**env, **overrides},
        )
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin else None), timeout=90
        )
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())

    return run


def pack_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / f"{unique('pack')}.yaml"
    path.write_text(text)
    return str(path)


async def until(cli: Cli, args: list[str], text: str, timeout: float = 20) -> Result:
    """Run the command until its output holds `text` (visibility, a run reaching a gate)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await cli(*args)
        if text in result.out:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{args}: never printed {text!r}; last: {result}")
        await asyncio.sleep(0.2)


class TestCreate:
    async def test_create_wait_draws_the_tree_and_exits_0(
        self, taskrunner: Cli, tmp_path: Path
    ) -> None:
        result = await taskrunner(
            "runs", "create", pack_file(tmp_path, ECHO), "--inputs", '{"who": "ada"}', "--wait"
        )
        assert result.code == 0, result
        lines = result.out.splitlines()
        assert lines[0].startswith("run ") and "api-echo@1.0.0" in lines[0]
        assert any(line.strip().startswith("✓ hello") for line in lines), result.out
        assert lines[-1].endswith(": succeeded")
        assert "\x1b[" not in result.out  # not a terminal: plain lines, no redraw

    async def test_create_prints_the_run_id(self, taskrunner: Cli, tmp_path: Path) -> None:
        inputs = tmp_path / "inputs.yaml"
        inputs.write_text("who: grace\n")
        run_id = unique("run")
        result = await taskrunner(
            "runs", "create", pack_file(tmp_path, ECHO), "--inputs", str(inputs), "--run-id", run_id
        )
        assert (result.code, result.out) == (0, f"{run_id}\n")
        again = await taskrunner(
            "runs", "create", pack_file(tmp_path, ECHO), "--inputs", str(inputs), "--run-id", run_id
        )
        assert again.code == 1
        assert again.err == f"taskrunner: error: run {run_id!r} already exists (409 run_exists)\n"

    async def test_a_failing_run_exits_1(self, taskrunner: Cli, tmp_path: Path) -> None:
        result = await taskrunner("runs", "create", pack_file(tmp_path, FAILING), "--wait")
        assert result.code == 1, result
        lines = result.out.splitlines()
        assert "✗ boom" in result.out
        # Piped (no terminal), --wait still says why, after the final status.
        end = next(i for i, line in enumerate(lines) if line.endswith(": failed"))
        assert lines[end + 1] == "  boom failed: Step failed: boom: no luck"

    async def test_show_of_a_failed_step_says_why(self, taskrunner: Cli, tmp_path: Path) -> None:
        created = await taskrunner("runs", "create", pack_file(tmp_path, SHELL_FAILING), "--wait")
        assert created.code == 1, created
        run_id = created.out.splitlines()[0].split()[1]
        shown = await taskrunner("runs", "show", run_id)
        assert shown.code == 1
        why = shown.out.split("  build failed: ", 1)[1].splitlines()
        assert "exit" in why[0] and "3" in why[0]  # the executor's own message
        assert why[1:] == [
            "    exit code 3",
            "    stderr (last 2 lines):",
            "      compiling",
            "      error: missing semicolon",
        ]

    async def test_invalid_manifest_exits_2_with_paths(
        self, taskrunner: Cli, tmp_path: Path
    ) -> None:
        bad = pack_file(tmp_path, ECHO.replace("TaskPack", "Pack"))
        result = await taskrunner("runs", "create", bad)
        assert result.code == 2
        assert result.out == ""
        # Every error, each at its place in the file, as `taskrunner validate` prints them.
        assert result.err.splitlines()[0] == f"{bad}:3:1: kind: Input should be 'TaskPack'"
        missing = await taskrunner("runs", "create", pack_file(tmp_path, ECHO))  # no inputs
        # Not in the file: no place to name.
        assert missing.code == 2 and missing.err.startswith("inputs.who: "), missing.err
        stdin = await taskrunner("runs", "create", "-", stdin=ONE_PASS)
        assert stdin.code == 2
        assert [line.split(": ", 2)[:2] for line in stdin.err.splitlines()] == [
            ["<stdin>:13:9", "spec.steps[0].run.timoutSeconds"],
            ["<stdin>:14:7", "spec.steps[1].id"],
            ["<stdin>:17:7", "spec.steps[2].when"],
            ["<stdin>:20:11", "spec.steps[2].gate.approval.id"],
        ]


class TestArtifacts:
    async def test_list_and_download(self, taskrunner: Cli, tmp_path: Path) -> None:
        pack = SHELL_FAILING.replace(
            "echo compiling >&2; echo 'error: missing semicolon' >&2; exit 3", "echo hello there"
        )
        created = await taskrunner("runs", "create", pack_file(tmp_path, pack), "--wait")
        assert created.code == 0, created
        run_id = created.out.splitlines()[0].split()[1]
        listed = await taskrunner("runs", "artifacts", run_id)
        assert listed.code == 0, listed
        rows = [line.split() for line in listed.out.splitlines()]
        assert rows[0] == ["NAME", "TYPE", "STATUS", "CAPTURED", "NOTES"]
        assert ["build.stdout", "file", "captured"] in [r[:3] for r in rows[1:]]
        as_json = await taskrunner("runs", "artifacts", run_id, "-o", "json")
        records = {a["name"]: a for a in json.loads(as_json.out)}
        assert records["build.stdout"]["status"] == "captured"
        wide = await taskrunner("runs", "artifacts", run_id, "-o", "wide")
        assert wide.out.splitlines()[0].split() == [
            "NAME",
            "TYPE",
            "STATUS",
            "CAPTURED",
            "SOURCE",
            "NOTES",
        ]
        nonsense = await taskrunner("runs", "artifacts", run_id, "-o", "out.txt")
        assert nonsense.code == 1 and "without NAME, -o is the format" in nonsense.err
        target = tmp_path / "out.txt"
        got = await taskrunner("runs", "artifacts", run_id, "build.stdout", "-o", str(target))
        assert got.code == 0, got
        assert target.read_text() == "hello there\n"
        missing = await taskrunner("runs", "artifacts", run_id, "nope")
        assert missing.code == 1 and "has no artifact 'nope'" in missing.err


class TestReadCommands:
    async def test_show_list_and_logs(self, taskrunner: Cli, tmp_path: Path) -> None:
        created = await taskrunner(
            "runs", "create", pack_file(tmp_path, ECHO), "--inputs", '{"who": "x"}', "--wait"
        )
        assert created.code == 0
        run_id = created.out.splitlines()[0].split()[1]

        shown = await taskrunner("runs", "show", run_id)
        assert shown.code == 0
        assert shown.out.splitlines()[1:3] == ["  ✓ hello  Succeeded", "  ✓ done  Succeeded"]

        listed = await until(taskrunner, ["runs", "list", "--status", "succeeded"], run_id)
        header, row = listed.out.splitlines()[:2]
        assert header.split() == ["RUN", "ID", "STATUS", "PACK", "CREATED", "CLOSED", "DURATION"]
        assert row.split()[:3] == [run_id, "succeeded", "api-echo"]
        assert re.fullmatch(r"\d+(ms|s)", row.split()[-1]), row  # a run of a few seconds
        assert "\x1b[" not in listed.out and all(
            line == line.rstrip() for line in listed.out.splitlines()
        )
        assert run_id not in (await taskrunner("runs", "list", "--status", "failed")).out

        logs = await taskrunner("runs", "logs", run_id)
        events = [line.split()[2] for line in logs.out.splitlines()]
        assert events[0] == "run.created" and events[-1] == "run.completed"
        followed = await taskrunner("runs", "logs", run_id, "--follow")  # ended: returns
        assert followed.out == logs.out
        as_json = await taskrunner("runs", "logs", run_id, "-o", "json")
        entries = [json.loads(line) for line in as_json.out.splitlines()]
        assert [e["eventType"] for e in entries] == events
        assert [e["sequence"] for e in entries] == list(range(1, len(entries) + 1))

    async def test_output_formats(
        self, taskrunner: Cli, tmp_path: Path, http: Any, env: dict[str, str]
    ) -> None:
        """-o json is the API's own answer; -o yaml the same data; -o wide more columns."""
        created = await taskrunner(
            "runs", "create", pack_file(tmp_path, ECHO), "--inputs", '{"who": "x"}', "--wait"
        )
        run_id = created.out.splitlines()[0].split()[1]
        headers = {
            "Authorization": f"Bearer {env['TASKRUNNER_TOKEN']}",
            "X-StellaOps-Tenant": env["TASKRUNNER_TENANT"],
        }
        api = (
            await http.get(
                f"/v1/task-runner/runs/{run_id}", params={"stepsLimit": 2000}, headers=headers
            )
        ).json()

        shown = await taskrunner("runs", "show", run_id, "-o", "json")
        assert shown.code == 0, shown
        state = json.loads(shown.out)
        assert state["runId"] == run_id and set(state) == set(api)
        assert [s["stepId"] for s in state["steps"]] == [s["stepId"] for s in api["steps"]]
        assert state["planHash"] == api["planHash"] and state["status"] == "succeeded"
        as_yaml = await taskrunner("runs", "show", run_id, "-o", "yaml")
        assert as_yaml.code == 0 and yaml.safe_load(as_yaml.out) == state
        legacy = await taskrunner("runs", "show", run_id, "--json")
        assert json.loads(legacy.out) == state
        wide = await taskrunner("runs", "show", run_id, "-o", "wide")
        assert f"planHash {api['planHash']}" in wide.out
        assert "  ✓ hello  Succeeded  [Run, since " in wide.out, wide.out

        listed = await until(taskrunner, ["runs", "list", "-o", "json"], run_id)
        runs = json.loads(listed.out)
        mine = next(r for r in runs if r["runId"] == run_id)
        assert {"runId", "pack", "status", "planHash", "createdAt", "closedAt"} <= set(mine)
        assert mine["planHash"] == api["planHash"]
        as_yaml = await taskrunner("runs", "list", "-o", "yaml")
        assert run_id in [r["runId"] for r in yaml.safe_load(as_yaml.out)]
        wide = await taskrunner("runs", "list", "-o", "wide")
        header, *rows = wide.out.splitlines()
        assert header.split()[-6:] == ["DURATION", "VERSION", "PLAN", "HASH", "REDRIVE", "OF"]
        row = next(r.split() for r in rows if r.startswith(run_id + " "))
        assert row[-3:] == ["1.0.0", api["planHash"], "-"]

        bad = await taskrunner("runs", "list", "-o", "xml")
        assert bad.code == 1 and "invalid choice: 'xml'" in bad.err

    async def test_the_tree_is_redrawn_in_place_on_a_terminal(
        self, env: dict[str, str], tmp_path: Path
    ) -> None:
        controller, terminal = pty.openpty()
        process = await asyncio.create_subprocess_exec(
            *script(),
            "runs",
            "create",
            pack_file(tmp_path, SLOW.replace("seconds: 60", "seconds: 1")),
            "--wait",
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env={**env, "LANG": "C.UTF-8", "TERM": "xterm-256color"},
        )
        os.close(terminal)
        code = await asyncio.wait_for(process.wait(), timeout=60)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        os.close(controller)
        text = output.decode()
        assert code == 0, text
        # rich's live view: the tree drawn with guide lines, then moved up over and redrawn.
        assert "\x1b[1A\x1b[2K" in text, text  # cursor up, erase the line: a redraw
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
        assert "├── ✓ wait  Succeeded" in plain and "└── ✓ after  Succeeded" in plain, plain
        assert text.rstrip().endswith("succeeded")

    async def test_on_a_terminal_rich_draws_the_table_and_the_tree(
        self, taskrunner: Cli, env: dict[str, str], tmp_path: Path
    ) -> None:
        created = await taskrunner(
            "runs", "create", pack_file(tmp_path, ECHO), "--inputs", '{"who": "x"}', "--wait"
        )
        run_id = created.out.splitlines()[0].split()[1]
        await until(taskrunner, ["runs", "list"], run_id)

        async def on_terminal(*args: str) -> str:
            controller, terminal = pty.openpty()
            process = await asyncio.create_subprocess_exec(
                *script(),
                *args,
                stdin=terminal,
                stdout=terminal,
                stderr=terminal,
                env={**env, "LANG": "C.UTF-8", "TERM": "xterm-256color", "COLUMNS": "200"},
            )
            os.close(terminal)
            assert await asyncio.wait_for(process.wait(), timeout=60) == 0
            output = b""
            while True:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            os.close(controller)
            return output.decode()

        listed = await on_terminal("runs", "list", "--limit", "5")
        assert "\x1b[1m" in listed  # a bold header: rich, not the pipe's plain columns
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", listed)
        assert "─────" in plain and run_id in plain  # the rule under the header
        shown = await on_terminal("runs", "show", run_id)
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
        assert "├── ✓ hello  Succeeded" in plain and "└── ✓ done  Succeeded" in plain, plain
        assert "\x1b[32m" in shown  # succeeded in green

    async def test_bash_completes_run_ids_from_the_api(
        self, taskrunner: Cli, env: dict[str, str], tmp_path: Path
    ) -> None:
        created = await taskrunner(
            "runs", "create", pack_file(tmp_path, ECHO), "--inputs", '{"who": "x"}', "--wait"
        )
        run_id = created.out.splitlines()[0].split()[1]
        await until(taskrunner, ["runs", "list"], run_id)
        probe = """
        source <("$1" completion bash)
        COMP_WORDS=("$1" runs show "$2"); COMP_CWORD=3; COMP_LINE="${COMP_WORDS[*]}"
        COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _shtab_taskrunner
        printf '%s\\n' "${COMPREPLY[@]}"
        """
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            probe,
            "probe",
            script()[0],
            run_id[:-3],
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        assert out.decode().split() == [run_id]  # the run whose id starts so, from the API


class TestApproveAndCancel:
    async def test_approve_fetches_the_plan_hash(
        self, taskrunner: Cli, tmp_path: Path, tenant: str
    ) -> None:
        run_id = (await taskrunner("runs", "create", pack_file(tmp_path, GATED))).out.strip()
        waiting = await until(taskrunner, ["runs", "show", run_id], "awaiting-approval")
        assert "⏸ approve-release" in waiting.out
        assert f"taskrunner runs approve {run_id} release-manager" in waiting.out

        # Someone else than the requester: the pack's approval does not allow self-approval.
        approver = token(OPERATOR, sub="user:bob", grants=["packs.approve"], tenant=tenant)
        approved = await taskrunner(
            "runs",
            "approve",
            run_id,
            "release-manager",
            "--summary",
            "ship it",
            TASKRUNNER_TOKEN=approver,
        )
        assert approved.code == 0, approved
        assert approved.out == "release-manager: approved (1 of 1); the run resumes\n"
        done = await until(taskrunner, ["runs", "show", run_id], "succeeded")
        assert done.code == 0
        again = await taskrunner("runs", "approve", run_id, "release-manager")
        assert again.code == 1 and "(409 " in again.err and "Traceback" not in again.err

    async def test_the_requester_cannot_approve_their_own_run(
        self, taskrunner: Cli, tmp_path: Path
    ) -> None:
        run_id = (await taskrunner("runs", "create", pack_file(tmp_path, GATED))).out.strip()
        await until(taskrunner, ["runs", "show", run_id], "awaiting-approval")
        own = await taskrunner("runs", "approve", run_id, "release-manager")
        assert own.code == 1 and "(403 " in own.err and "requested this run" in own.err
        logs = await taskrunner("runs", "logs", run_id)
        assert "gate.decision-refused" in logs.out

    async def test_a_run_terminated_in_temporal_has_ended_for_the_cli(
        self, taskrunner: Cli, tmp_path: Path, tenant: str, dev_env: WorkflowEnvironment
    ) -> None:
        run_id = (await taskrunner("runs", "create", pack_file(tmp_path, GATED))).out.strip()
        await until(taskrunner, ["runs", "show", run_id], "awaiting-approval")
        watch = asyncio.create_task(taskrunner("runs", "show", run_id, "--watch"))
        follow = asyncio.create_task(taskrunner("runs", "logs", run_id, "--follow"))
        await asyncio.sleep(1)
        handle = dev_env.client.get_workflow_handle(workflow_id(tenant, run_id))
        await handle.terminate(reason="stuck")
        watched, followed = await asyncio.wait_for(asyncio.gather(watch, follow), timeout=60)
        assert watched.code == 1 and watched.out.rstrip().endswith(f"run {run_id}: failed")
        assert followed.code == 0 and "run.failed" in followed.out.splitlines()[-1]
        shown = await taskrunner("runs", "show", run_id)
        assert shown.code == 1
        assert "terminated in Temporal: stuck" in shown.out
        assert "taskrunner runs approve" not in shown.out
        assert "approval release-manager cancelled" in shown.out

    async def test_reject_fails_the_run(self, taskrunner: Cli, tmp_path: Path, tenant: str) -> None:
        run_id = (await taskrunner("runs", "create", pack_file(tmp_path, GATED))).out.strip()
        await until(taskrunner, ["runs", "show", run_id], "awaiting-approval")
        approver = token(OPERATOR, sub="user:bob", grants=["packs.approve"], tenant=tenant)
        rejected = await taskrunner(
            "runs", "approve", run_id, "release-manager", "--reject", TASKRUNNER_TOKEN=approver
        )
        assert rejected.out.startswith("release-manager: rejected")
        failed = await until(taskrunner, ["runs", "show", run_id], "  failed")
        assert failed.code == 1

    async def test_cancel(self, taskrunner: Cli, tmp_path: Path) -> None:
        run_id = (await taskrunner("runs", "create", pack_file(tmp_path, SLOW))).out.strip()
        cancelled = await taskrunner("runs", "cancel", run_id)
        assert (cancelled.code, cancelled.out) == (0, f"{run_id}: cancel requested\n")
        shown = await until(taskrunner, ["runs", "show", run_id], "  cancelled")
        assert shown.code == 1
        assert "⊘ after  Skipped (cancelled)" in shown.out


class TestErrors:
    async def test_errors_are_one_line_with_exit_1(
        self, taskrunner: Cli, env: dict[str, str]
    ) -> None:
        missing = await taskrunner("runs", "show", "no-such-run")
        assert missing.code == 1
        assert missing.err == "taskrunner: error: run 'no-such-run' not found (404 run_not_found)\n"
        anonymous = await taskrunner("runs", "list", TASKRUNNER_TOKEN="")
        assert anonymous.code == 1 and "(401 unauthenticated)" in anonymous.err
        viewer = await taskrunner(
            "runs",
            "cancel",
            "x",
            TASKRUNNER_TOKEN=token("taskrunner.viewer", tenant=env["TASKRUNNER_TENANT"]),
        )
        assert viewer.code == 1 and "(403 insufficient_scope)" in viewer.err
        elsewhere = await taskrunner(
            "runs", "list", TASKRUNNER_TOKEN=token("taskrunner.viewer", tenant="another-tenant")
        )
        assert elsewhere.code == 1 and "(403 tenant_forbidden)" in elsewhere.err
        nowhere = await taskrunner("runs", "list", TASKRUNNER_URL="http://127.0.0.1:9")
        assert nowhere.code == 1 and "cannot reach the API at http://127.0.0.1:9" in nowhere.err
        for result in (missing, anonymous, viewer, elsewhere, nowhere):
            assert "Traceback" not in result.err and result.out == ""


STATE: dict[str, Any] = {
    "runId": "r1",
    "pack": "p",
    "packVersion": "1",
    "status": "awaiting-approval",
    "totalSteps": 4,
    "steps": [
        {"stepId": "group", "status": "Running", "attempts": 1},
        {"stepId": "a", "status": "Succeeded", "parentId": "group", "attempts": 2},
        {"stepId": "inner", "status": "Running", "parentId": "group"},
        {
            "stepId": "gate",
            "status": "Pending",
            "statusReason": "awaiting-approval",
            "parentId": "inner",
        },
    ],
    "approvals": [
        {"approvalId": "ok", "status": "pending", "requiredApprovals": 2, "decisions": []}
    ],
}


class TestRender:
    def test_indented_by_parent_with_a_symbol_per_step(self) -> None:
        assert render(STATE, SYMBOLS) == [
            "run r1  p@1  awaiting-approval",
            "  ▶ group  Running",
            "    ✓ a  Succeeded, attempt 2",
            "    ▶ inner  Running",
            "      ⏸ gate  Pending (awaiting-approval)",
            "  waiting for approval ok (0 of 2): taskrunner runs approve r1 ok",
        ]
        assert render(STATE, ASCII_SYMBOLS)[4] == "      ? gate  Pending (awaiting-approval)"

    def test_long_trees_are_cut_to_fit(self) -> None:
        lines = render({**STATE, "totalSteps": 10}, SYMBOLS, max_lines=5)
        assert len(lines) <= 5 and lines[3] == "  ... 8 more steps"
