"""Webhooks: a tenant's registrations, kept in the database (`db.webhooks`) with the secret
encrypted.

A run takes the tenant's webhooks as they are when it starts (they travel in its input, secrets
as ciphertext, so workers never read the database); registering or deleting one changes what
later runs deliver, not running ones.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Response

from api.auth import ADMIN
from api.database import available
from api.deps import Admin, DatabaseDep, SettingsDep, Tenant, signing_key
from api.errors import (
    InvalidRequest,
    SigningKeyMissing,
    TooManyWebhooks,
    WebhookExists,
    WebhookNotFound,
    documented,
)
from api.idempotency import Claim, IdempotentRoute, idempotent
from api.routes import PREFIX
from api.schemas import Webhook, WebhookCreated, WebhookList, WebhookRequest
from db import webhooks as store
from workflows.contract.addresses import is_internal
from workflows.contract.signing import (
    WHSEC_PREFIX,
    WebhookSecretInvalid,
    encrypt_secret,
    standard_webhook_key,
)
from workflows.contract.times import rfc3339

router = APIRouter(prefix=PREFIX, tags=["Webhooks"], route_class=IdempotentRoute)
Idempotent = Annotated[Claim | None, idempotent(ADMIN)]
WebhookId = Annotated[str, Path(pattern=r"^wh-[a-f0-9]{16}$", description="Webhook id")]


def public(registration: store.Registration) -> Webhook:
    """What callers see of a registration: never its secret, in any form."""
    return Webhook(
        id=registration.id,
        url=registration.url,
        events=registration.events,
        createdAt=rfc3339(registration.created_at),
    )


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    return WHSEC_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def checked_secret(secret: str) -> str:
    try:
        standard_webhook_key(secret)
    except WebhookSecretInvalid as exc:
        raise InvalidRequest(f"secret: {exc}") from None
    return secret


def webhook_id(claim: Claim | None) -> str:
    """A new id; under an Idempotency-Key, the key's: a retry never registers a second one."""
    if claim is None:
        return f"wh-{secrets.token_hex(8)}"
    return "wh-" + hashlib.sha256(claim.token.encode()).hexdigest()[:16]


def checked_url(url: str, allow_internal: bool = False) -> str:
    """The URL, or InvalidRequest. Literal internal addresses (and `localhost`) are refused here
    unless the operator allows internal targets; the worker checks what names resolve to when it
    delivers (`activities/netpolicy.py`)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise InvalidRequest("url: not a URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidRequest("url: must be an http or https URL with a host")
    if parts.username or parts.password:
        raise InvalidRequest("url: must not carry credentials; the secret signs deliveries")
    if not allow_internal and _internal_host(host):
        raise InvalidRequest(
            "url: an internal address (loopback, link-local or private) is not allowed as a "
            "webhook target on this installation"
        )
    return url


def _internal_host(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return is_internal(ip)


@router.post(
    "/webhooks",
    status_code=201,
    operation_id="registerWebhook",
    summary="Register a webhook",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 409, 503),
)
async def register_webhook(
    principal: Admin,
    idempotency: Idempotent,
    tenant: Tenant,
    body: WebhookRequest,
    database: DatabaseDep,
    settings: SettingsDep,
) -> WebhookCreated:
    """Deliveries of the events named go to `url`, signed with `secret` (which is never shown
    again) in the Standard Webhooks format. With no `secret`, the service makes a `whsec_` one
    and answers it this once. Runs started from now on deliver to it; running ones do not."""
    key = signing_key(settings)
    if key is None:
        raise SigningKeyMissing("webhooks")
    made = None
    if body.secret is None:
        if idempotency is not None:
            # The answer under a key is recorded in the database to be replayed: a secret made
            # here would lie there in plain text.
            raise InvalidRequest(
                "secret: required with an Idempotency-Key (a secret the service makes is shown "
                "once and never stored, so a replay could not show it)"
            )
        made = new_secret()
    secret = made or checked_secret(body.secret or "")
    registration = store.Registration(
        id=webhook_id(idempotency),
        tenant=tenant,
        url=checked_url(body.url, settings.webhook_allow_private_targets),
        events=list(dict.fromkeys(body.events)),
        secret_ciphertext=encrypt_secret(key, secret),
        created_at=datetime.now(UTC),
        created_by=principal.subject,
    )
    with available():
        try:
            added = public(await database.webhooks.add(registration))
            return WebhookCreated(**added.model_dump(), secret=made)
        except store.TooManyWebhooks as exc:
            raise TooManyWebhooks(str(exc)) from None
        except store.WebhookExists:
            # Only a retry under the same Idempotency-Key makes an id taken: its registration.
            existing = await database.webhooks.get(tenant, registration.id)
            if idempotency is None or existing is None:
                raise WebhookExists(f"webhook {registration.id!r} exists") from None
            return WebhookCreated(**public(existing).model_dump())


@router.get(
    "/webhooks",
    operation_id="listWebhooks",
    summary="List webhooks",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 503),
)
async def list_webhooks(principal: Admin, tenant: Tenant, database: DatabaseDep) -> WebhookList:
    with available():
        registered = await database.webhooks.list(tenant)
    return WebhookList(webhooks=[public(w) for w in registered])


@router.delete(
    "/webhooks/{webhookId}",
    status_code=204,
    operation_id="deleteWebhook",
    summary="Delete a webhook",
    response_class=Response,
    responses=documented(400, 401, 403, 404, 503),
)
async def delete_webhook(
    principal: Admin, tenant: Tenant, webhookId: WebhookId, database: DatabaseDep
) -> Response:
    with available():
        deleted = await database.webhooks.delete(tenant, webhookId)
    if not deleted:
        raise WebhookNotFound(f"no webhook {webhookId!r}")
    return Response(status_code=204)
