"""The removed TaskRunnerLedger workflow's records, frozen as they were (from workflows/contract/ledger.py
before the database): what `taskrunner db import-ledger` reads back, for its test."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from workflows.contract.state import Model

LEDGER_WORKFLOW_TYPE = "TaskRunnerLedger"

UPDATE_REGISTER_WEBHOOK = "register_webhook"
UPDATE_DELETE_WEBHOOK = "delete_webhook"
UPDATE_REMEMBER = "remember"
UPDATE_RELEASE = "release"
QUERY_WEBHOOKS = "webhooks"
QUERY_IDEMPOTENCY = "idempotency"


class LedgerRefusal(StrEnum):
    """Why the ledger refuses an update: the `ApplicationError` type the API maps to its error."""

    WEBHOOK_NOT_FOUND = "WebhookNotFound"
    WEBHOOK_EXISTS = "WebhookExists"
    TOO_MANY_WEBHOOKS = "TooManyWebhooks"
    LEDGER_FULL = "LedgerFull"


MAX_WEBHOOKS = 50
"""Registrations per tenant: each run carries all of them in its input."""
IDEMPOTENCY_BUDGET_BYTES = 1_200_000
"""What the idempotency records of one tenant may hold in all. The state is carried across
continue-as-new in one payload, and Temporal refuses payloads over 2 MB."""
MAX_STORED_BODY_BYTES = 64 * 1024
"""A response body larger than this (as stored) is not kept; its replay has no body."""


def ledger_workflow_id(tenant: str) -> str:
    """The workflow id of a tenant's ledger (nothing parses it back)."""
    return f"taskrunner-ledger/{tenant}"


class WebhookRegistration(Model):
    """A webhook as the ledger keeps it. `createdAt` is set by the ledger when it registers."""

    id: str
    url: str
    events: list[str]
    secretCiphertext: str
    """The secret encrypted with `contract.signing.encrypt_secret`; never the plaintext."""
    createdAt: str = ""
    createdBy: str | None = None


class DeleteWebhook(Model):
    id: str


class StoredResponse(Model):
    """An HTTP response kept for replay: status, selected headers and the body as stored."""

    status: int
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""
    encoding: Literal["identity", "zlib+base64", "omitted"] = "identity"
    """`identity`: the body as sent; `zlib+base64`: compressed; `omitted`: too large to keep."""


class IdempotencyRecord(Model):
    """One Idempotency-Key of a tenant: the request it was first used for, and its outcome.

    Without a `response` the request is still in progress, held by `holder` (one API request)
    until `lockedUntil`; after that another request with the key may take it over.
    """

    key: str
    fingerprint: str
    expiresAt: str
    holder: str
    lockedUntil: str | None = None
    response: StoredResponse | None = None

    def size(self) -> int:
        """Roughly what the record adds to the ledger's state, in bytes."""
        body = len(self.response.body) if self.response else 0
        return 256 + len(self.key) + len(self.fingerprint) + body


class ReleaseKey(Model):
    """Give up an in-progress key (the request failed in a way not worth replaying)."""

    key: str
    holder: str


class LedgerState(Model):
    webhooks: list[WebhookRegistration] = Field(default_factory=list)
    idempotency: dict[str, IdempotencyRecord] = Field(default_factory=dict)


class LedgerInput(Model):
    tenant: str
    state: LedgerState = Field(default_factory=LedgerState)
    continueAsNewAfterEvents: int | None = None
    """Continue-as-new past this history length even before Temporal suggests it (for tests)."""
