"""How the work stands in Temporal: the task queue's backlog and pollers (for `/readyz`) and the
runs in flight by status (for `/metrics`), asked of the Temporal server, not of a worker.

The backlog is Temporal's approximate count (`DescribeTaskQueue` with stats): tasks scheduled and
not yet picked up by a worker, for workflow tasks (runs to advance) and activity tasks (steps to
run) apart. Pollers are the workers polling the queue in the last minutes: none means nothing
moves. Poller identities (host names, pids) are left out: `/readyz` needs no token.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Generic, TypeVar

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    CountWorkflowExecutionsRequest,
    DescribeTaskQueueRequest,
)
from temporalio.client import Client

from api.schemas import QueueKindHealth, TaskQueueHealth
from workflows.contract.names import SA_STATUS, WORKFLOW_TYPE

DESCRIBE_TIMEOUT = timedelta(seconds=3)
QUOTABLE = re.compile(r"^[^'\"\\\x00-\x1f]+$")
"""A name that can stand in quotes in a visibility query as it is."""
OPEN_STATUSES = ("pending", "running", "awaiting-approval")
"""A run's TaskRunnerStatus while its workflow runs (a run that has ended may still be open a
moment, delivering its webhooks: it is not in flight)."""
FIGURES_TTL_SECONDS = 2.0
"""How long one answer of Temporal serves /readyz or /metrics: they need no token, so without it
every GET by anyone was as many queries on Temporal (and its visibility store)."""

T = TypeVar("T")


class Recent(Generic[T]):
    """The last outcome of a question to Temporal, for `ttl` seconds: concurrent and close askers
    share one asking. A failure is kept as long (re-raised to each asker), so an outage does not
    line every caller up behind its own timeout."""

    def __init__(self, ttl: float = FIGURES_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._lock = asyncio.Lock()
        self._at = float("-inf")
        self._value: T | None = None
        self._error: Exception | None = None

    async def get(self, ask: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                try:
                    self._value, self._error = await ask(), None
                except Exception as exc:
                    self._value, self._error = None, exc
                self._at = time.monotonic()
            if self._error is not None:
                raise self._error
            assert self._value is not None
            return self._value


async def task_queue_health(client: Client, task_queue: str) -> TaskQueueHealth:
    """Backlog and pollers of the task queue, workflow and activity tasks apart."""

    async def describe(kind: TaskQueueType.ValueType) -> QueueKindHealth:
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=kind,
                report_stats=True,
            ),
            retry=False,
            timeout=DESCRIBE_TIMEOUT,
        )
        stats = answer.stats
        return QueueKindHealth(
            backlog=stats.approximate_backlog_count,
            backlogAgeSeconds=round(stats.approximate_backlog_age.ToTimedelta().total_seconds(), 3),
            pollers=len(answer.pollers),
        )

    workflows, activities = await asyncio.gather(
        describe(TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        describe(TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    )
    return TaskQueueHealth(name=task_queue, workflowTasks=workflows, activityTasks=activities)


async def runs_in_flight(client: Client, task_queue: str) -> dict[str, int]:
    """How many runs' workflows on `task_queue` are open, by TaskRunnerStatus, across tenants
    (the visibility store; another deployment's queue in the same namespace is not counted)."""
    if not QUOTABLE.match(task_queue):
        raise ValueError(f"task queue {task_queue!r} cannot be named in a visibility query")

    async def count(status: str) -> int:
        answer = await client.workflow_service.count_workflow_executions(
            CountWorkflowExecutionsRequest(
                namespace=client.namespace,
                query=(
                    f"WorkflowType = '{WORKFLOW_TYPE}' AND TaskQueue = '{task_queue}' "
                    "AND ExecutionStatus = 'Running' "
                    f"AND {SA_STATUS.name} = '{status}'"
                ),
            ),
            retry=False,
            timeout=DESCRIBE_TIMEOUT,
        )
        return int(answer.count)

    counts = await asyncio.gather(*(count(status) for status in OPEN_STATUSES))
    return dict(zip(OPEN_STATUSES, counts, strict=True))
