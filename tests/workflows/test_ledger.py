"""TaskRunnerLedger: a tenant's webhook registrations and idempotency records, started on demand
with update-with-start, pruned when records expire, carried across continue-as-new."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tests.helpers import unique, worker_for
from workflows.contract.ledger import (
    LEDGER_WORKFLOW_TYPE,
    MAX_WEBHOOKS,
    QUERY_IDEMPOTENCY,
    QUERY_WEBHOOKS,
    UPDATE_DELETE_WEBHOOK,
    UPDATE_REGISTER_WEBHOOK,
    UPDATE_RELEASE,
    UPDATE_REMEMBER,
    DeleteWebhook,
    IdempotencyRecord,
    LedgerInput,
    ReleaseKey,
    StoredResponse,
    WebhookRegistration,
    ledger_workflow_id,
)
from workflows.run_book import iso
from workflows.worker import WORKFLOWS


class Ledger:
    """The calls the API makes, against one tenant's ledger on one task queue."""

    def __init__(self, client: Client, task_queue: str, **options: Any) -> None:
        self.client = client
        self.tenant = unique("tenant")
        self.task_queue = task_queue
        self.options = options
        self.handle = client.get_workflow_handle(ledger_workflow_id(self.tenant))

    async def update(self, name: str, arg: Any, result_type: type | None = None) -> Any:
        start = WithStartWorkflowOperation(
            LEDGER_WORKFLOW_TYPE,
            LedgerInput(tenant=self.tenant, **self.options),
            id=ledger_workflow_id(self.tenant),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            task_queue=self.task_queue,
        )
        return await self.client.execute_update_with_start_workflow(
            name, arg, start_workflow_operation=start, result_type=result_type
        )

    async def register(self, hook_id: str) -> WebhookRegistration:
        hook = WebhookRegistration(
            id=hook_id,
            url="https://example.com/hook",
            events=["run.completed"],
            secretCiphertext="c",
        )
        result: WebhookRegistration = await self.update(
            UPDATE_REGISTER_WEBHOOK, hook, WebhookRegistration
        )
        return result

    async def webhooks(self) -> list[str]:
        hooks = await self.handle.query(QUERY_WEBHOOKS, result_type=list[WebhookRegistration])
        return [h.id for h in hooks]

    async def remember(self, record: IdempotencyRecord) -> IdempotencyRecord:
        result: IdempotencyRecord = await self.update(UPDATE_REMEMBER, record, IdempotencyRecord)
        return result

    async def recall(self, key: str) -> IdempotencyRecord | None:
        try:
            result: IdempotencyRecord | None = await self.handle.query(
                QUERY_IDEMPOTENCY, key, result_type=IdempotencyRecord | None
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return None  # no ledger yet: nothing remembered
        return result


def record(
    key: str,
    holder: str,
    *,
    fingerprint: str = "fp-1",
    status: int | None = None,
    now: datetime | None = None,
    ttl: timedelta = timedelta(hours=24),
    lock: timedelta = timedelta(seconds=60),
) -> IdempotencyRecord:
    now = now or datetime.now(UTC)
    return IdempotencyRecord(
        key=key,
        fingerprint=fingerprint,
        expiresAt=iso(now + ttl),
        holder=holder,
        lockedUntil=iso(now + lock),
        response=None
        if status is None
        else StoredResponse(status=status, body=f'{{"by":"{holder}"}}'),
    )


class TestWebhookRegistrations:
    async def test_register_list_delete(self, dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
        tq = unique("tq")
        async with worker_for(dev_env.client, tmp_path, tq):
            ledger = Ledger(dev_env.client, tq)
            first = await ledger.register("wh-1")
            assert first.createdAt.endswith("Z")
            await ledger.register("wh-2")
            assert await ledger.webhooks() == ["wh-1", "wh-2"]
            await ledger.update(UPDATE_DELETE_WEBHOOK, DeleteWebhook(id="wh-1"))
            assert await ledger.webhooks() == ["wh-2"]

            with pytest.raises(WorkflowUpdateFailedError) as missing:
                await ledger.update(UPDATE_DELETE_WEBHOOK, DeleteWebhook(id="wh-1"))
            assert isinstance(missing.value.cause, ApplicationError)
            assert missing.value.cause.type == "WebhookNotFound"
            with pytest.raises(WorkflowUpdateFailedError) as duplicate:
                await ledger.register("wh-2")
            assert isinstance(duplicate.value.cause, ApplicationError)
            assert duplicate.value.cause.type == "WebhookExists"

    async def test_at_most_max_webhooks(self, dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
        tq = unique("tq")
        async with worker_for(dev_env.client, tmp_path, tq):
            ledger = Ledger(dev_env.client, tq)
            for i in range(MAX_WEBHOOKS):
                await ledger.register(f"wh-{i}")
            with pytest.raises(WorkflowUpdateFailedError) as full:
                await ledger.register("one-more")
            assert isinstance(full.value.cause, ApplicationError)
            assert full.value.cause.type == "TooManyWebhooks"


class TestIdempotencyRecords:
    async def test_first_writer_wins(self, dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
        tq = unique("tq")
        async with worker_for(dev_env.client, tmp_path, tq):
            ledger = Ledger(dev_env.client, tq)
            assert await ledger.recall("k") is None
            mine = await ledger.remember(record("k", "a"))
            assert (mine.holder, mine.response) == ("a", None)
            # Another request while "a" holds the key gets a's record: in progress.
            theirs = await ledger.remember(record("k", "b", fingerprint="fp-2"))
            assert (theirs.holder, theirs.fingerprint) == ("a", "fp-1")
            # The holder completes it; from then on it never changes.
            done = await ledger.remember(record("k", "a", status=201))
            assert done.response is not None and done.response.status == 201
            late = await ledger.remember(record("k", "b", status=200))
            assert late.holder == "a" and late.response == done.response
            assert await ledger.recall("k") == done

    async def test_an_expired_lock_is_taken_over_and_a_release_frees_the_key(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        tq = unique("tq")
        async with worker_for(dev_env.client, tmp_path, tq):
            ledger = Ledger(dev_env.client, tq)
            await ledger.remember(record("dead", "a", lock=timedelta(seconds=-1)))
            taken = await ledger.remember(record("dead", "b"))
            assert taken.holder == "b"

            await ledger.remember(record("failed", "a"))
            await ledger.update(UPDATE_RELEASE, ReleaseKey(key="failed", holder="b"))  # not b's
            assert await ledger.recall("failed") is not None
            await ledger.update(UPDATE_RELEASE, ReleaseKey(key="failed", holder="a"))
            assert await ledger.recall("failed") is None

    async def test_state_survives_continue_as_new(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        tq = unique("tq")
        async with worker_for(dev_env.client, tmp_path, tq):
            ledger = Ledger(dev_env.client, tq, continueAsNewAfterEvents=20)
            await ledger.register("wh-1")
            first_run = (await ledger.handle.describe()).run_id
            for i in range(12):
                await ledger.remember(record(f"k{i}", "a", status=200))
            assert (await ledger.handle.describe()).run_id != first_run
            assert await ledger.webhooks() == ["wh-1"]
            for i in range(12):
                kept = await ledger.recall(f"k{i}")
                assert kept is not None and kept.response is not None, i

    async def test_history_replays(self, dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
        tq = unique("tq")
        async with worker_for(dev_env.client, tmp_path, tq):
            ledger = Ledger(dev_env.client, tq)
            await ledger.register("wh-1")
            await ledger.remember(record("k", "a"))
            await ledger.remember(record("k", "a", status=200))
            await ledger.update(UPDATE_DELETE_WEBHOOK, DeleteWebhook(id="wh-1"))
            history = await ledger.handle.fetch_history()
        replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, result.replay_failure


class TestExpiry:
    async def test_expired_records_are_forgotten(
        self, skip_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        tq = unique("tq")
        async with worker_for(skip_env.client, tmp_path, tq):
            ledger = Ledger(skip_env.client, tq)
            now = await skip_env.get_current_time()
            await ledger.remember(record("short", "a", status=200, now=now, ttl=timedelta(hours=1)))
            await ledger.remember(record("long", "a", status=200, now=now, ttl=timedelta(hours=30)))
            await skip_env.sleep(timedelta(hours=2))
            assert await ledger.recall("short") is None
            assert await ledger.recall("long") is not None
            # A new record under an expired key is a first write again.
            again = await ledger.remember(
                record("short", "b", status=201, now=now + timedelta(hours=2))
            )
            assert again.holder == "b"
