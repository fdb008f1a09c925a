"""Helpers for tests that run packs on a real Temporal server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Worker

from compiler import compile_manifest
from workflows.contract.names import (
    QUERY_LOGS,
    QUERY_STATE,
    RUN_FAILED_ERROR,
    WORKFLOW_TYPE,
    workflow_id,
)
from workflows.contract.state import (
    LogEntry,
    LogsPage,
    LogsQuery,
    PackRunInput,
    RunMeta,
    RunResult,
    RunStateSnapshot,
    StateQuery,
)
from workflows.settings import WorkerSettings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def worker_for(
    client: Client,
    data_dir: Path,
    task_queue: str | None = None,
    settings: WorkerSettings | None = None,
    **options: Any,
) -> AsyncIterator[Worker]:
    """A real worker on a fresh task queue, for one test."""
    from workflows.worker import build_worker

    settings = (settings or WorkerSettings()).model_copy(update={"data_dir": data_dir})
    worker = build_worker(client, settings, task_queue=task_queue or unique("tq"), **options)
    async with worker:
        yield worker


async def run_histories(client: Client, workflow_id: str) -> dict[str, list[Any]]:
    """Every history of a run: its own and each map group's and chunk's, by workflow id."""
    found: dict[str, list[Any]] = {}
    query = f"WorkflowId = '{workflow_id}' OR WorkflowId STARTS_WITH '{workflow_id}/'"
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        found[execution.id] = list((await handle.fetch_history()).events)
    return found


async def start_pack(
    client: Client,
    task_queue: str,
    manifest: str,
    inputs: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    tenant: str = "default",
    search_attributes: bool = True,
    actor: str = "test",
    execution_timeout: timedelta | None = None,
    **meta: Any,
) -> WorkflowHandle[Any, Any]:
    compiled = compile_manifest(manifest, inputs)
    run_id = run_id or unique("run")
    run_input = PackRunInput(
        plan=compiled.plan,
        planHash=compiled.plan_hash,
        meta=RunMeta(
            runId=run_id,
            tenant=tenant,
            actor=actor,
            requestedAt=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            searchAttributes=search_attributes,
            **meta,
        ),
    )
    return await client.start_workflow(
        WORKFLOW_TYPE,
        run_input,
        id=workflow_id(tenant, run_id),
        task_queue=task_queue,
        result_type=RunResult,
        execution_timeout=execution_timeout,
    )


async def result_of(handle: WorkflowHandle[Any, Any]) -> RunResult:
    """A run's result, whether its workflow completed or failed (a failed run's workflow is
    Failed, its result the failure's detail). A run cancelled through Temporal has none: raises."""
    try:
        result: RunResult = await handle.result()
        return result
    except WorkflowFailureError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == RUN_FAILED_ERROR:
            return RunResult.model_validate(cause.details[0])
        raise


async def run_to_end(
    client: Client,
    data_dir: Path,
    manifest: str,
    inputs: Mapping[str, Any] | None = None,
    **meta: Any,
) -> tuple[RunResult, RunStateSnapshot, list[LogEntry]]:
    """Run a pack on a fresh worker until it ends: its result, final state and whole log."""
    task_queue = unique("tq")
    async with worker_for(client, data_dir, task_queue):
        handle = await start_pack(client, task_queue, manifest, inputs, **meta)
        result = await result_of(handle)
        return result, await state_of(handle), await logs_of(handle)


async def state_of(handle: WorkflowHandle[Any, Any]) -> RunStateSnapshot:
    """The whole state, every step with its outputs, read a page at a time as the API does."""
    steps: list[Any] = []
    while True:
        page = await handle.query(
            QUERY_STATE,
            StateQuery(includeOutputs=True, stepsOffset=len(steps), stepsLimit=2000),
            result_type=RunStateSnapshot,
        )
        steps += page.steps
        if len(steps) >= page.totalSteps or not page.steps:
            return page.model_copy(update={"steps": steps})


async def logs_of(handle: WorkflowHandle[Any, Any], after: int = 0) -> list[LogEntry]:
    page = await handle.query(QUERY_LOGS, LogsQuery(after=after, limit=5000), result_type=LogsPage)
    return page.entries


async def whole_log(client: Client, data_dir: Path, run_id: str) -> list[LogEntry]:
    """A run's whole log as the API serves it: the entries the workflow keeps and those it
    paged out to the artifact store under `data_dir`, in order."""
    from api.gateway import RunGateway
    from api.metrics import Metrics
    from api.settings import ApiSettings

    settings = ApiSettings(
        temporal_address=client.service_client.config.target_host, data_dir=data_dir
    )
    return await RunGateway(client, settings, Metrics()).all_logs("default", run_id)


def steps_by_id(state: RunStateSnapshot) -> dict[str, Any]:
    return {s.stepId: s for s in state.steps}


async def wait_for(
    handle: WorkflowHandle[Any, Any], predicate: Any, timeout: float = 30.0
) -> RunStateSnapshot:
    """Poll the state query until `predicate(state)` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: RunStateSnapshot | Exception | None = None
    while True:
        try:
            state = await state_of(handle)
            if predicate(state):
                return state
            last = state
        except RPCError as exc:  # no worker polling yet (it may still be starting)
            last = exc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached; last state: {str(last)[:2000]}")
        await asyncio.sleep(0.1)


async def keep_asking(handle: WorkflowHandle[Any, Any], seconds: float, at_once: int = 10) -> None:
    """Query the run's state, `at_once` queries at a time, for `seconds`. On a worker that caches
    no workflow, queries that come while a local activity of the run finishes can make core
    write the activity in one workflow task and the code after it in the next; every later task
    then replays the whole history, running that code in the first task."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.gather(*(state_of(handle) for _ in range(at_once)), return_exceptions=True)
