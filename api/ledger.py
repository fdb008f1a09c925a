"""The API's side of a tenant's ledger workflow (`workflows.ledger`): webhook registrations and
idempotency records, with Temporal's failures turned into the API's errors.

Writes go through update-with-start (conflict policy USE_EXISTING), so a tenant's ledger comes
into being with its first registration or Idempotency-Key; reads are queries, and a tenant
without a ledger simply has nothing registered or remembered.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api import errors
from api.settings import ApiSettings
from workflows.contract.ledger import (
    LEDGER_WORKFLOW_TYPE,
    QUERY_IDEMPOTENCY,
    QUERY_WEBHOOKS,
    UPDATE_DELETE_WEBHOOK,
    UPDATE_REGISTER_WEBHOOK,
    UPDATE_RELEASE,
    UPDATE_REMEMBER,
    DeleteWebhook,
    IdempotencyRecord,
    LedgerInput,
    LedgerRefusal,
    ReleaseKey,
    WebhookRegistration,
    ledger_workflow_id,
)

T = TypeVar("T")

_REFUSALS: dict[str, type[errors.ApiError]] = {
    LedgerRefusal.WEBHOOK_NOT_FOUND: errors.WebhookNotFound,
    LedgerRefusal.WEBHOOK_EXISTS: errors.WebhookExists,
    LedgerRefusal.TOO_MANY_WEBHOOKS: errors.TooManyWebhooks,
    LedgerRefusal.LEDGER_FULL: errors.IdempotencyStoreFull,
}


class LedgerGateway:
    def __init__(self, client: Client, settings: ApiSettings) -> None:
        self.client = client
        self.settings = settings
        self.timeout = timedelta(seconds=settings.query_timeout_seconds)

    # ----------------------------------------------------------------- webhooks

    async def webhooks(self, tenant: str) -> list[WebhookRegistration]:
        found: list[WebhookRegistration] | None = await self._query(
            tenant, QUERY_WEBHOOKS, None, list[WebhookRegistration]
        )
        return found or []

    async def register_webhook(
        self, tenant: str, registration: WebhookRegistration
    ) -> WebhookRegistration:
        return await self._update(
            tenant, UPDATE_REGISTER_WEBHOOK, registration, WebhookRegistration, start=True
        )

    async def delete_webhook(self, tenant: str, webhook_id: str) -> None:
        try:
            await self._update(
                tenant, UPDATE_DELETE_WEBHOOK, DeleteWebhook(id=webhook_id), type(None)
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            raise errors.WebhookNotFound(f"no webhook {webhook_id!r}") from None

    # ----------------------------------------------------------------- idempotency

    async def recall(self, tenant: str, key: str) -> IdempotencyRecord | None:
        found: IdempotencyRecord | None = await self._query(
            tenant, QUERY_IDEMPOTENCY, key, IdempotencyRecord | None
        )
        return found

    async def remember(self, tenant: str, record: IdempotencyRecord) -> IdempotencyRecord:
        """Keep `record` unless its key is taken; what the key holds afterwards either way."""
        return await self._update(tenant, UPDATE_REMEMBER, record, IdempotencyRecord, start=True)

    async def release(self, tenant: str, key: str, holder: str) -> None:
        await self._update(tenant, UPDATE_RELEASE, ReleaseKey(key=key, holder=holder), type(None))

    # ----------------------------------------------------------------- plumbing

    async def _query(self, tenant: str, name: str, arg: Any, result_type: Any) -> Any:
        handle = self.client.get_workflow_handle(ledger_workflow_id(tenant))
        args = [] if arg is None else [arg]
        try:
            return await handle.query(
                name, args=args, result_type=result_type, rpc_timeout=self.timeout
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None  # no ledger yet: nothing registered, nothing remembered
            raise
        except RPCTimeoutOrCancelledError:
            raise self._unavailable(tenant) from None

    async def _update(
        self, tenant: str, name: str, arg: Any, result_type: type[T], *, start: bool = False
    ) -> T:
        try:
            if start:
                operation: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
                    LEDGER_WORKFLOW_TYPE,
                    LedgerInput(tenant=tenant),
                    id=ledger_workflow_id(tenant),
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    task_queue=self.settings.task_queue,
                    static_summary=f"ledger of tenant {tenant}: webhooks, idempotency keys",
                )
                result: T = await self.client.execute_update_with_start_workflow(
                    name,
                    arg,
                    start_workflow_operation=operation,
                    result_type=result_type,
                    rpc_timeout=self.timeout,
                )
                return result
            handle = self.client.get_workflow_handle(ledger_workflow_id(tenant))
            result = await handle.execute_update(
                name, arg, result_type=result_type, rpc_timeout=self.timeout
            )
            return result
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type in _REFUSALS:
                raise _REFUSALS[cause.type](cause.message) from None
            raise
        except RPCTimeoutOrCancelledError:
            raise self._unavailable(tenant) from None

    def _unavailable(self, tenant: str) -> errors.TemporalUnavailable:
        return errors.TemporalUnavailable(
            f"no worker answered for the ledger of tenant {tenant!r} in "
            f"{self.timeout.total_seconds():g}s"
        )
