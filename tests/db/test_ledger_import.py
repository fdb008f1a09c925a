"""`taskrunner db import-ledger`: real ledger workflows (the removed workflow, frozen in
tests/db/old_ledger.py) on the dev server, their state read back from their histories into the
database, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from db.engine import Database
from db.idempotency import IdempotencyStore
from db.webhooks import WebhookStore
from tests.db.old_ledger import TaskRunnerLedger
from tests.db.old_ledger_state import (
    LEDGER_WORKFLOW_TYPE,
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
from tests.helpers import unique
from workflows.contract.times import rfc3339 as iso


async def update(
    env: WorkflowEnvironment, tq: str, tenant: str, name: str, arg: Any, result: Any, **options: Any
) -> Any:
    return await env.client.execute_update_with_start_workflow(
        name,
        arg,
        start_workflow_operation=WithStartWorkflowOperation(
            LEDGER_WORKFLOW_TYPE,
            LedgerInput(tenant=tenant, **options),
            id=ledger_workflow_id(tenant),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            task_queue=tq,
        ),
        result_type=result,
    )


def record(key: str, *, status: int | None, body: str = "{}", ttl: timedelta, **more: Any) -> Any:
    now = datetime.now(UTC)
    response = None if status is None else StoredResponse(status=status, body=body, **more)
    return IdempotencyRecord(
        key=key,
        fingerprint=f"sha256:{key}",
        expiresAt=iso(now + ttl),
        holder="old-api",
        lockedUntil=iso(now + timedelta(seconds=60)),
        response=response,
    )


async def test_import_ledger_moves_webhooks_and_answered_keys(
    dev_env: WorkflowEnvironment,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from api.settings import get_api_settings
    from cli.main import main

    tq, tenant = unique("ledger-tq"), unique("ledger")
    big = '{"runId": "run-big", "steps": [' + ",".join(['{"id": "s"}'] * 400) + "]}"
    packed = base64.b64encode(zlib.compress(big.encode())).decode()
    async with Worker(dev_env.client, task_queue=tq, workflows=[TaskRunnerLedger]):
        # Continue-as-new early, so part of the state arrives in the current run's input.
        options = {"continueAsNewAfterEvents": 12}
        for hook in ("wh-00000000000000a1", "wh-00000000000000b2", "wh-00000000000000c3"):
            await update(
                dev_env, tq, tenant, UPDATE_REGISTER_WEBHOOK,
                WebhookRegistration(
                    id=hook, url=f"https://hooks.example.com/{hook}", events=["run.completed"],
                    secretCiphertext=f"gAAAAA-{hook}", createdBy="user:alice",
                ),
                WebhookRegistration, **options,
            )  # fmt: skip
        await update(
            dev_env, tq, tenant, UPDATE_DELETE_WEBHOOK, DeleteWebhook(id="wh-00000000000000a1"),
            type(None), **options,
        )  # fmt: skip
        for kept in (
            record("answered", status=201, body='{"runId": "run-1"}', ttl=timedelta(hours=20),
                   headers={"location": "/v1/task-runner/runs/run-1",
                            "content-type": "application/json"}),
            record("compressed", status=201, body=packed, encoding="zlib+base64",
                   ttl=timedelta(hours=20), headers={"content-type": "application/json"}),
            record("in-progress", status=None, ttl=timedelta(hours=20)),
            record("released", status=None, ttl=timedelta(hours=20)),
            record("expired", status=200, ttl=timedelta(seconds=1)),
        ):  # fmt: skip
            await update(dev_env, tq, tenant, UPDATE_REMEMBER, kept, IdempotencyRecord, **options)
        await update(
            dev_env, tq, tenant, UPDATE_RELEASE, ReleaseKey(key="released", holder="old-api"),
            type(None), **options,
        )  # fmt: skip
        handle = dev_env.client.get_workflow_handle(ledger_workflow_id(tenant))
        described = await handle.describe()
        first_run = described.raw_description.workflow_execution_info.first_run_id
        assert described.run_id != first_run  # it did continue as new
        await asyncio.sleep(1.5)  # "expired" is past its TTL

        monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
        monkeypatch.setenv("TEMPORAL_NAMESPACE", dev_env.client.namespace)
        monkeypatch.setenv("TASKRUNNER_DATABASE_URL", database.url.render_as_string(False))
        get_api_settings.cache_clear()
        try:
            # The command runs its own event loop, as from a shell.
            assert await asyncio.to_thread(main, ["db", "import-ledger"]) == 0
            first = capsys.readouterr().out
            assert f"tenant {tenant}: imported 2 webhooks, 2 idempotency keys" in first
            # Again: nothing twice; then the ledger ends.
            assert await asyncio.to_thread(main, ["db", "import-ledger", "--terminate"]) == 0
            second = capsys.readouterr().out
            assert f"tenant {tenant}: imported 0 webhooks, 0 idempotency keys" in second
            assert f"{ledger_workflow_id(tenant)}: terminated" in second
        finally:
            get_api_settings.cache_clear()

    hooks = await WebhookStore(database).list(tenant)
    assert [(h.id, h.secret_ciphertext, h.created_by) for h in hooks] == [
        ("wh-00000000000000b2", "gAAAAA-wh-00000000000000b2", "user:alice"),
        ("wh-00000000000000c3", "gAAAAA-wh-00000000000000c3", "user:alice"),
    ]
    keys = IdempotencyStore(database)
    answered = await keys.get(tenant, "answered")
    assert answered is not None and answered.response is not None
    assert answered.response.status == 201 and answered.response.body == b'{"runId": "run-1"}'
    assert answered.response.headers["location"] == "/v1/task-runner/runs/run-1"
    assert answered.fingerprint == "sha256:answered"
    compressed = await keys.get(tenant, "compressed")
    assert compressed is not None and compressed.response is not None
    assert compressed.response.body == big.encode()
    for gone in ("in-progress", "released", "expired"):
        assert await keys.get(tenant, gone) is None, gone
    status = (await handle.describe()).status
    assert status is not None and status.name == "TERMINATED"
