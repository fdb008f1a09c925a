"""The removed TaskRunnerLedger workflow, frozen as it was (from workflows/ledger.py before the
database), run by the test of `taskrunner db import-ledger` to make real ledger histories."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from tests.db.old_ledger_state import (
        IDEMPOTENCY_BUDGET_BYTES,
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
        LedgerRefusal,
        LedgerState,
        ReleaseKey,
        WebhookRegistration,
    )
    from workflows.contract.times import rfc3339 as iso

PRUNE_AT_MOST_EVERY = timedelta(minutes=10)
"""Expired records may linger this long: fewer timers, a shorter history."""


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@workflow.defn(name=LEDGER_WORKFLOW_TYPE)
class TaskRunnerLedger:
    @workflow.init
    def __init__(self, ledger: LedgerInput) -> None:
        self.tenant = ledger.tenant
        self.webhooks: list[WebhookRegistration] = list(ledger.state.webhooks)
        self.records: dict[str, IdempotencyRecord] = dict(ledger.state.idempotency)
        self._prune_timer = False

    @workflow.run
    async def run(self, ledger: LedgerInput) -> None:
        while True:
            timeout = self._until_next_prune()
            self._prune_timer = timeout is not None
            # Woken early to arm the timer when the first record arrives: records arrive with
            # the same TTL, so a later one never expires before the armed deadline.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: (
                        self._should_continue_as_new(ledger)
                        or (bool(self.records) and not self._prune_timer)
                    ),
                    timeout=timeout,
                )
            self._prune()
            if self._should_continue_as_new(ledger):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    LedgerInput(
                        tenant=self.tenant,
                        state=LedgerState(webhooks=self.webhooks, idempotency=self.records),
                        continueAsNewAfterEvents=ledger.continueAsNewAfterEvents,
                    )
                )

    def _should_continue_as_new(self, ledger: LedgerInput) -> bool:
        info = workflow.info()
        limit = ledger.continueAsNewAfterEvents
        if limit is not None and info.get_current_history_length() >= limit:
            return True
        return info.is_continue_as_new_suggested()

    def _until_next_prune(self) -> timedelta | None:
        """None (no timer at all) while nothing can expire: an idle ledger writes no history."""
        if not self.records:
            return None
        first = min(_at(r.expiresAt) for r in self.records.values())
        return max(first - workflow.now(), PRUNE_AT_MOST_EVERY)

    def _prune(self) -> None:
        now = workflow.now()
        for key in [k for k, r in self.records.items() if _at(r.expiresAt) <= now]:
            del self.records[key]

    def _live(self, key: str) -> IdempotencyRecord | None:
        record = self.records.get(key)
        if record is None or _at(record.expiresAt) <= workflow.now():
            return None
        return record

    # ----------------------------------------------------------------- webhooks

    @workflow.update(name=UPDATE_REGISTER_WEBHOOK)
    def register_webhook(self, hook: WebhookRegistration) -> WebhookRegistration:
        registered = hook.model_copy(update={"createdAt": iso(workflow.now())})
        self.webhooks.append(registered)
        return registered

    @register_webhook.validator
    def _check_register(self, hook: WebhookRegistration) -> None:
        if len(self.webhooks) >= MAX_WEBHOOKS:
            raise ApplicationError(
                f"tenant {self.tenant!r} already has {MAX_WEBHOOKS} webhooks",
                type=LedgerRefusal.TOO_MANY_WEBHOOKS.value,
                non_retryable=True,
            )
        if any(w.id == hook.id for w in self.webhooks):
            raise ApplicationError(
                f"webhook {hook.id!r} exists",
                type=LedgerRefusal.WEBHOOK_EXISTS.value,
                non_retryable=True,
            )

    @workflow.update(name=UPDATE_DELETE_WEBHOOK)
    def delete_webhook(self, request: DeleteWebhook) -> None:
        self.webhooks = [w for w in self.webhooks if w.id != request.id]

    @delete_webhook.validator
    def _check_delete(self, request: DeleteWebhook) -> None:
        if not any(w.id == request.id for w in self.webhooks):
            raise ApplicationError(
                f"no webhook {request.id!r}",
                type=LedgerRefusal.WEBHOOK_NOT_FOUND.value,
                non_retryable=True,
            )

    @workflow.query(name=QUERY_WEBHOOKS)
    def registered_webhooks(self) -> list[WebhookRegistration]:
        return list(self.webhooks)

    # ----------------------------------------------------------------- idempotency

    @workflow.update(name=UPDATE_REMEMBER)
    def remember(self, record: IdempotencyRecord) -> IdempotencyRecord:
        """Keep `record` unless the key is taken; either way, return what the key now holds.

        First writer wins. The holder of an in-progress key may complete it (or renew it), and
        anyone may take over a key whose holder's lock has run out (its request died).
        """
        self._prune()
        existing = self._live(record.key)
        if existing is not None and not self._may_replace(existing, record):
            return existing
        self.records[record.key] = record
        return record

    @remember.validator
    def _check_remember(self, record: IdempotencyRecord) -> None:
        existing = self._live(record.key)
        if existing is not None and not self._may_replace(existing, record):
            return  # answered with the existing record: adds nothing
        held = sum(r.size() for k, r in self.records.items() if k != record.key)
        if held + record.size() > IDEMPOTENCY_BUDGET_BYTES:
            raise ApplicationError(
                f"tenant {self.tenant!r} holds too many idempotency records; retry later",
                type=LedgerRefusal.LEDGER_FULL.value,
                non_retryable=True,
            )

    def _may_replace(self, existing: IdempotencyRecord, record: IdempotencyRecord) -> bool:
        if existing.response is not None:
            return False
        if existing.holder == record.holder:
            return True
        return existing.lockedUntil is not None and _at(existing.lockedUntil) <= workflow.now()

    @workflow.update(name=UPDATE_RELEASE)
    def release(self, request: ReleaseKey) -> None:
        existing = self.records.get(request.key)
        if existing is not None and existing.response is None and existing.holder == request.holder:
            del self.records[request.key]

    @workflow.query(name=QUERY_IDEMPOTENCY)
    def idempotency(self, key: str) -> IdempotencyRecord | None:
        return self._live(key)
