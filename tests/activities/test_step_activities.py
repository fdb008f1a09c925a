"""The Temporal activities, run in temporalio's ActivityEnvironment with real executors."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.artifacts import ArtifactStore
from activities.executor import ExecutorContext
from activities.registry import Registry
from activities.secrets import MappingSecretProvider
from activities.step_activities import StepActivities
from compiler.plan import OutputSpec, Sandbox
from tests.processes import processes_with
from workflows.contract.activities import (
    CAPTURE_OUTPUTS,
    EVALUATE_POLICY,
    LOAD_MAP_ITEMS,
    RUN_STEP,
    STEP_FAILED,
    STORE_LOG_SEGMENT,
    STORE_MAP_ITEMS,
    STORE_STEP_SEGMENT,
    CaptureRequest,
    PolicyRequest,
    RunStepRequest,
)

SECRET = "s3cr3t-value"


async def leaky(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    """A custom executor that fails in a way Temporal should retry, naming the secret."""
    raise RuntimeError(f"upstream rejected {params['token']}")


async def not_json(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    return {"value": object()}


async def own_error(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    raise ApplicationError(f"quota for {params['token']}", {"t": params["token"]}, type="Quota")


async def slow(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    await asyncio.sleep(30)
    return {}


@pytest.fixture
def steps(store: ArtifactStore) -> StepActivities:
    registry = Registry(entry_points=[])
    for name, fn in {"leaky": leaky, "not-json": not_json, "own": own_error, "slow": slow}.items():
        registry.register(f"custom:{name}", fn)
    return StepActivities(
        registry, store, MappingSecretProvider({"TOKEN": SECRET}), heartbeat_seconds=0.1
    )


def request(uses: str, with_: dict[str, Any], **kwargs: Any) -> RunStepRequest:
    return RunStepRequest(
        runId="run-1", tenant="acme", stepId="step", uses=uses, with_=with_, **kwargs
    )


async def run_failing(steps: StepActivities, req: RunStepRequest) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(steps.run_step, req)
    return caught.value


async def test_run_step_returns_outputs_with_secrets_resolved_and_masked(
    steps: StepActivities,
) -> None:
    req = request("builtin:echo", {"auth": "Bearer {{ secrets.TOKEN }}"}, secrets=["TOKEN"])
    result = await ActivityEnvironment().run(steps.run_step, req)
    assert result.outputs == {"auth": "Bearer ***"}
    assert result.artifacts == []


async def test_shell_sees_secret_but_outputs_and_artifacts_are_masked(
    steps: StepActivities, store: ArtifactStore
) -> None:
    req = request(
        "builtin:shell",
        {"command": 'echo "token is $TOKEN"', "env": {"TOKEN": "{{ secrets.TOKEN }}"}},
        secrets=["TOKEN"],
    )
    result = await ActivityEnvironment().run(steps.run_step, req)
    assert result.outputs["stdout"] == "token is ***\n"
    for record in result.artifacts:
        assert SECRET not in (store.root / str(record.storedPath)).read_text()
    assert [a.name for a in result.artifacts] == ["step.stdout", "step.stderr"]


async def test_missing_secret_fails_permanently_naming_it(store: ArtifactStore) -> None:
    steps = StepActivities(Registry(entry_points=[]), store, MappingSecretProvider({}))
    req = request("builtin:echo", {"a": "{{ secrets.TOKEN }}"}, secrets=["TOKEN"])
    error = await run_failing(steps, req)
    assert error.type == STEP_FAILED
    assert error.non_retryable
    assert "'TOKEN' is not available" in error.message
    assert error.details[0] == {}


async def test_undeclared_secret_placeholder_is_refused(steps: StepActivities) -> None:
    error = await run_failing(steps, request("builtin:echo", {"a": "{{ secrets.TOKEN }}"}))
    assert error.type == STEP_FAILED
    assert "did not declare" in error.message


async def test_env_secret_provider_by_default(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKRUNNER_SECRET_TOKEN", "from-env")
    steps = StepActivities(Registry(entry_points=[]), store)
    req = request("builtin:echo", {"a": "{{ secrets.TOKEN }}", "b": "x"}, secrets=["TOKEN"])
    result = await ActivityEnvironment().run(steps.run_step, req)
    assert result.outputs == {"a": "***", "b": "x"}


async def test_unknown_uses_fails_permanently(steps: StepActivities) -> None:
    error = await run_failing(steps, request("builtin:nope", {}))
    assert error.type == STEP_FAILED
    assert error.non_retryable
    assert "no executor for uses 'builtin:nope'" in error.message


async def test_shell_failure_carries_masked_outputs_and_artifacts(steps: StepActivities) -> None:
    req = request(
        "builtin:shell",
        {"command": "echo $T; echo $T >&2; exit 4", "env": {"T": "{{ secrets.TOKEN }}"}},
        secrets=["TOKEN"],
    )
    error = await run_failing(steps, req)
    assert error.type == STEP_FAILED
    assert error.non_retryable
    assert error.message == "builtin:shell: command exited with code 4: ***"
    assert error.details[0] == {"exitCode": 4, "stdout": "***\n", "stderr": "***\n"}
    assert [a["name"] for a in error.details[1]] == ["step.stdout", "step.stderr"]


async def test_fail_message_is_masked(steps: StepActivities) -> None:
    req = request("builtin:fail", {"message": "bad {{ secrets.TOKEN }}"}, secrets=["TOKEN"])
    error = await run_failing(steps, req)
    assert error.message == "bad ***"


async def test_unexpected_error_is_retryable_and_masked(steps: StepActivities) -> None:
    req = request("custom:leaky", {"token": "{{ secrets.TOKEN }}"}, secrets=["TOKEN"])
    error = await run_failing(steps, req)
    assert not error.non_retryable
    assert error.type == "RuntimeError"
    assert SECRET not in error.message
    assert "upstream rejected ***" in error.message
    assert error.__cause__ is None


async def test_executor_application_error_keeps_type_and_is_masked(
    steps: StepActivities,
) -> None:
    req = request("custom:own", {"token": "{{ secrets.TOKEN }}"}, secrets=["TOKEN"])
    error = await run_failing(steps, req)
    assert error.type == "Quota"
    assert error.message == "quota for ***"
    assert error.details[0] == {"t": "***"}


async def test_unsafe_step_id_is_refused(steps: StepActivities) -> None:
    req = RunStepRequest(runId="run-1", tenant="acme", stepId="../x", uses="builtin:noop")
    error = await run_failing(steps, req)
    assert error.type == STEP_FAILED
    assert "step id" in error.message


async def test_log_lines_are_masked(
    steps: StepActivities, caplog: pytest.LogCaptureFixture
) -> None:
    req = request("builtin:fail", {"message": "no {{ secrets.TOKEN }}"}, secrets=["TOKEN"])
    with caplog.at_level(logging.INFO):
        await run_failing(steps, req)
    failed = [r for r in caplog.records if r.getMessage().startswith("step.failed")]
    assert failed and failed[0].reason == "no ***"
    assert SECRET not in caplog.text
    assert all(SECRET not in str(r.__dict__) for r in caplog.records)


async def test_outputs_must_be_json(steps: StepActivities) -> None:
    error = await run_failing(steps, request("custom:not-json", {}))
    assert error.type == STEP_FAILED
    assert "not JSON-serialisable" in error.message


async def test_step_timeout_enforced_for_any_executor(store: ArtifactStore) -> None:
    registry = Registry(entry_points=[])
    registry.register("custom:slow", slow)
    steps = StepActivities(registry, store, timeout_grace_seconds=0.2)
    started = time.monotonic()
    error = await run_failing(steps, request("custom:slow", {}, timeoutSeconds=1))
    assert time.monotonic() - started < 5
    assert error.type == STEP_FAILED
    assert "timed out after 1s" in error.message


async def test_heartbeats_while_running(steps: StepActivities) -> None:
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    await env.run(steps.run_step, request("builtin:shell", {"command": "sleep 0.5"}))
    assert len(beats) >= 3  # every 0.1 s in this fixture


async def test_cancellation_kills_the_running_command(steps: StepActivities) -> None:
    env = ActivityEnvironment()
    # Unique to this test: processes are looked for host-wide, where other sessions run tests.
    marker = f"sleep 30.{uuid.uuid4().int % 10**6 + 10**6}"
    req = request(
        "builtin:shell",
        {"command": f"{marker}1 & {marker}2"},
        timeoutSeconds=60,
    )
    task = asyncio.ensure_future(env.run(steps.run_step, req))
    deadline = time.monotonic() + 10
    while len(processes_with(marker)) < 2:
        assert time.monotonic() < deadline, "the command never ran"
        await asyncio.sleep(0.02)

    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not processes_with(marker)


async def test_cancellation_reaches_sleep(steps: StepActivities) -> None:
    env = ActivityEnvironment()
    task = asyncio.ensure_future(env.run(steps.run_step, request("builtin:sleep", {"seconds": 30})))
    await asyncio.sleep(0.2)
    env.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("condition", "passed"),
    [
        ("inputs.env == 'prod'", True),
        ("{{ steps.scan.outputs.critical == `0` }}", False),
        (True, True),
        ("inputs.missing", False),
    ],
)
async def test_evaluate_policy(steps: StepActivities, condition: Any, passed: bool) -> None:
    req = PolicyRequest(
        runId="run-1",
        policyId="prod-only",
        policyVersion="1",
        condition=condition,
        scope={"inputs": {"env": "prod"}, "steps": {"scan": {"outputs": {"critical": 2}}}},
    )
    result = await ActivityEnvironment().run(steps.evaluate_policy, req)
    assert result.passed is passed
    assert result.detail and "prod-only@1" in result.detail


async def test_evaluate_policy_expression_error_is_permanent(steps: StepActivities) -> None:
    req = PolicyRequest(
        runId="run-1", policyId="p", policyVersion="1", condition="length(`1`)", scope={}
    )
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(steps.evaluate_policy, req)
    assert caught.value.type == STEP_FAILED
    assert caught.value.non_retryable
    assert "policy p@1" in caught.value.message


async def test_capture_outputs(steps: StepActivities, store: ArtifactStore, tmp_path: Path) -> None:
    workspace = store.workspace("acme", "run-1")
    (workspace / "dist").mkdir()
    (workspace / "dist" / "report.json").write_text('{"ok": true}')
    (workspace / "notes.txt").write_text(f"token={SECRET}\n")
    (workspace / "blob.bin").write_bytes(b"\xff\xfe" + SECRET.encode())
    (tmp_path / "outside.txt").write_text("outside")
    (workspace / "link.txt").symlink_to(tmp_path / "outside.txt")
    outputs = [
        OutputSpec(name="report", type="file", path="dist/report.json"),
        OutputSpec(name="summary", type="object", expression="steps.a.outputs"),
        OutputSpec(name="missing", type="file", path="nope.txt"),
        OutputSpec(name="escape", type="file", path="../../../etc/passwd"),
        OutputSpec(name="linked", type="file", path="link.txt"),
        OutputSpec(name="folder", type="file", path="dist"),
        OutputSpec(name="bad/name", type="file", path="dist/report.json"),
        OutputSpec(name="notes", type="file", path="notes.txt"),
        OutputSpec(name="blob", type="file", path="blob.bin"),
    ]
    req = CaptureRequest(runId="run-1", tenant="acme", outputs=outputs, secrets=["TOKEN"])
    result = await ActivityEnvironment().run(steps.capture_outputs, req)
    records = {r.name: r for r in result.artifacts}
    assert list(records) == [
        "report",
        "missing",
        "escape",
        "linked",
        "folder",
        "bad/name",
        "notes",
        "blob",
    ]

    report = records["report"]
    assert report.status == "captured"
    assert report.sourcePath == "dist/report.json"
    assert report.storedPath == "runs/acme/run-1/artifacts/report"
    assert (store.root / report.storedPath).read_text() == '{"ok": true}'

    assert records["missing"].status == "failed"
    assert "not found" in str(records["missing"].notes)
    assert records["escape"].status == "failed"
    assert "leaves the run workspace" in str(records["escape"].notes)
    assert records["linked"].status == "failed"
    assert "symbolic link" in str(records["linked"].notes)
    assert records["folder"].status == "failed"
    assert "not a regular file" in str(records["folder"].notes)
    assert records["bad/name"].status == "failed"
    assert "path separator" in str(records["bad/name"].notes)

    notes = records["notes"]
    assert (store.root / str(notes.storedPath)).read_text() == "token=***\n"
    blob = records["blob"]
    assert blob.status == "captured"
    assert "without masking" in str(blob.notes)


def test_the_worker_registers_the_contract_names(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    fns = StepActivities(Registry(entry_points=[]), store).activities()
    names = [activity._Definition.must_from_callable(fn).name for fn in fns]
    assert names == [
        RUN_STEP,
        EVALUATE_POLICY,
        CAPTURE_OUTPUTS,
        STORE_LOG_SEGMENT,
        STORE_STEP_SEGMENT,
        STORE_MAP_ITEMS,
        LOAD_MAP_ITEMS,
    ]


async def test_sealed_http_refusal_through_the_activity(
    steps: StepActivities, http_server: Any
) -> None:
    req = request(
        "builtin:http",
        {"url": f"{http_server.base}/json"},
        sandbox=Sandbox(mode="sealed", egressAllowlist=("api.example.com",)),
    )
    error = await run_failing(steps, req)
    assert error.type == STEP_FAILED
    assert error.non_retryable
    assert "refused" in error.message
    assert http_server.recorder.requests == []


async def test_capture_refuses_hard_links_fifos_and_linked_folders(
    steps: StepActivities, tmp_path: Path
) -> None:
    """A file output is a plain file of the workspace's own: never a second name for another
    file (a hard link to /etc/hostname or another tenant's artifact), a FIFO, or a path through
    a symlinked folder."""
    store = steps.store
    workspace = store.workspace("acme", "run-1")
    outside = tmp_path / "other-tenant-artifact"
    outside.write_text("not yours")
    os.link(outside, workspace / "hard.txt")
    os.mkfifo(workspace / "pipe")
    (workspace / "via").symlink_to(tmp_path)
    (workspace / "plain.txt").write_text("mine")
    outputs = [
        OutputSpec(name="hard", type="file", path="hard.txt"),
        OutputSpec(name="pipe", type="file", path="pipe"),
        OutputSpec(name="via", type="file", path="via/other-tenant-artifact"),
        OutputSpec(name="plain", type="file", path="plain.txt"),
    ]
    req = CaptureRequest(runId="run-1", tenant="acme", outputs=outputs, secrets=[])
    result = await ActivityEnvironment().run(steps.capture_outputs, req)
    records = {r.name: r for r in result.artifacts}
    assert records["hard"].status == "failed"
    assert "hard link" in str(records["hard"].notes)
    assert records["pipe"].status == "failed"
    assert "not a regular file" in str(records["pipe"].notes)
    assert records["via"].status == "failed"
    assert "is a link or not a folder" in str(records["via"].notes)
    assert records["plain"].status == "captured"
    stored = store.root / str(records["plain"].storedPath)
    assert stored.read_text() == "mine"
    assert os.stat(stored).st_ino != os.stat(workspace / "plain.txt").st_ino


async def test_a_plugin_fails_its_step_through_its_context(store: ArtifactStore) -> None:
    """An executor written against `taskrunner.executors` alone: `ctx.fail` ends the step for
    good, with the outputs it had (masked), and no retry."""
    from taskrunner.executors import ExecutorContext as PluginContext

    async def plugin(params: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
        ctx.fail(
            f"scan found {params['count']} problems", {"count": params["count"], "key": SECRET}
        )

    registry = Registry(entry_points=[])
    registry.register("custom:plugin", plugin)
    steps = StepActivities(registry, store, MappingSecretProvider({"TOKEN": SECRET}))
    error = await run_failing(steps, request("custom:plugin", {"count": 3}, secrets=["TOKEN"]))
    assert error.type == STEP_FAILED and error.non_retryable
    assert error.message == "scan found 3 problems"
    assert error.details[0] == {"count": 3, "key": "***"}
