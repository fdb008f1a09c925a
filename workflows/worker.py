"""The worker entry point: connects to Temporal and serves PackRun, its map chunks and the steps.

The one place `workflows/` reaches into `activities/`: a worker hosts both.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.artifacts import ArtifactStore
from activities.netpolicy import TargetPolicy
from activities.registry import Registry
from activities.sandbox.host import host_sandbox
from activities.sandbox.runner import CommandRunner, SandboxSettings
from activities.step_activities import StepActivities
from activities.webhooks import WebhookActivities
from workflows.contract import telemetry
from workflows.contract.settings import connect
from workflows.map_levels import PackRunMapGroup
from workflows.pack_run import PackRun, PackRunMapChunk
from workflows.scheduled import PackRunScheduled
from workflows.settings import WorkerSettings

log = structlog.get_logger("taskrunner.worker")

WORKFLOWS: Sequence[type] = (PackRun, PackRunMapChunk, PackRunMapGroup, PackRunScheduled)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox, with the modules defining our workflows passed through like the interpreter,
    the RunBook and the contract they import already are.

    The sandbox imports a workflow's own module afresh for every workflow instance it creates
    (each run, and each replay of an evicted or finished run for a query): for PackRun that was
    ~2.5 ms of worker CPU per run, mostly the SDK reading the classes' signal, query and update
    handlers again (`make bench`, issue #12). These modules hold constants and class definitions,
    no state, so sharing them across instances changes nothing a run sees; the sandbox's
    restrictions still cover every other import, and the replay tests (tests/workflows/
    test_replay.py), which replay through the default sandbox, keep checking these modules too.
    """
    modules = sorted({cls.__module__ for cls in WORKFLOWS})
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules)
    )


def build_worker(
    client: Client,
    settings: WorkerSettings,
    *,
    task_queue: str | None = None,
    registry: Registry | None = None,
    **worker_options: Any,
) -> Worker:
    """A worker serving the workflows and the step activities on the configured task queue."""
    store = ArtifactStore(settings.data_dir)
    steps = StepActivities(
        registry=registry or Registry(),
        store=store,
        runner=command_runner(settings),
        ceilings=settings.ceilings(),
    )
    hooks = WebhookActivities(
        settings.signing_key,
        settings.public_url,
        link_ttl_seconds=settings.approval_link_ttl_seconds,
        timeout_seconds=settings.webhook_timeout_seconds,
        targets=TargetPolicy.build(
            settings.webhook_allow_private_targets, [settings.temporal_address]
        ),
    )
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=[*steps.activities(), *hooks.activities()],
        max_concurrent_activities=settings.max_concurrent_activities,
        **{"workflow_runner": workflow_runner(), **worker_options},
    )


async def run_worker(settings: WorkerSettings, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM), then shut down gracefully."""
    # With OTEL_* set, the client's tracing interceptor traces the worker's workflows and
    # activities too (a worker takes the interceptors of its client).
    client = await connect(settings, telemetry.interceptors(telemetry.process_provider()))
    stop = stop or _stop_on_signals()
    worker = build_worker(client, settings)
    log.info(
        "worker.started",
        address=settings.temporal_address,
        namespace=settings.temporal_namespace,
        task_queue=settings.task_queue,
    )
    report_sandbox(settings)
    async with worker:
        await stop.wait()
    log.info("worker.stopped")


def command_runner(settings: WorkerSettings) -> CommandRunner:
    """The runner of the worker's step commands, as the settings ask (probing the host once)."""
    return CommandRunner(
        SandboxSettings(
            enabled=settings.sandbox == "on",
            pids_max=settings.sandbox_pids_max,
            disk_mib=settings.sandbox_disk_mib,
            tmp_mib=settings.sandbox_tmp_mib,
            bwrap=settings.sandbox_bwrap,
            egress=TargetPolicy.build(
                settings.sandbox_egress_allow_internal, [settings.temporal_address]
            ),
        )
    )


def sandbox_lines(settings: WorkerSettings) -> list[str]:
    """What protections steps get on this host, one line each (for start-up messages)."""
    if settings.sandbox == "off":
        return [
            "!! TASKRUNNER_SANDBOX=off: step commands run WITHOUT isolation, as the worker's "
            "user, with its files, environment and network in reach. Run only trusted packs."
        ]
    host = host_sandbox(settings.sandbox_bwrap)
    if host.unavailable:
        return [
            f"!! sandbox unavailable: {host.unavailable}",
            "!! steps that run commands will fail with `sandbox-unavailable` (set "
            "TASKRUNNER_SANDBOX=off to run them unisolated, only for trusted packs)",
        ]
    return host.protections()


def report_sandbox(settings: WorkerSettings) -> None:
    """Log, at start-up, which protections this host gives steps (loudly when none)."""
    lines = sandbox_lines(settings)
    if settings.sandbox == "off" or lines[0].startswith("!!"):
        for line in lines:
            log.warning("worker.sandbox", protection=line)
    else:
        for line in lines:
            log.info("worker.sandbox", protection=line)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


__all__ = ["WORKFLOWS", "build_worker", "connect", "run_worker"]


if __name__ == "__main__":  # `python -m workflows.worker`: a worker alone, configured by env
    from workflows.settings import get_worker_settings

    asyncio.run(run_worker(get_worker_settings()))
