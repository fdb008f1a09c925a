"""Webhooks: a tenant's registrations, kept in its ledger workflow with the secret encrypted.

A run takes the tenant's webhooks as they are when it starts (they travel in its input, secrets
as ciphertext); registering or deleting one changes what later runs deliver, not running ones.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Response

from api.auth import ADMIN
from api.deps import Admin, Ledger, SettingsDep, Tenant, signing_key
from api.errors import InvalidRequest, SigningKeyMissing, documented
from api.idempotency import IdempotentRoute, idempotent
from api.routes import PREFIX
from api.schemas import Webhook, WebhookList, WebhookRequest
from workflows.contract.ledger import WebhookRegistration
from workflows.contract.signing import encrypt_secret

router = APIRouter(prefix=PREFIX, tags=["Webhooks"], route_class=IdempotentRoute)
Idempotent = Annotated[object, idempotent(ADMIN)]
WebhookId = Annotated[str, Path(pattern=r"^wh-[a-f0-9]{16}$", description="Webhook id")]


def public(registration: WebhookRegistration) -> Webhook:
    """What callers see of a registration: never its secret, in any form."""
    return Webhook(
        id=registration.id,
        url=registration.url,
        events=registration.events,
        createdAt=registration.createdAt,
    )


def checked_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise InvalidRequest("url: not a URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidRequest("url: must be an http or https URL with a host")
    if parts.username or parts.password:
        raise InvalidRequest("url: must not carry credentials; the secret signs deliveries")
    return url


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
    ledger: Ledger,
    settings: SettingsDep,
) -> Webhook:
    """Deliveries of the events named go to `url`, signed with `secret` (which is never shown
    again). Runs started from now on deliver to it; running ones do not."""
    key = signing_key(settings)
    if key is None:
        raise SigningKeyMissing("webhooks")
    registration = WebhookRegistration(
        id=f"wh-{secrets.token_hex(8)}",
        url=checked_url(body.url),
        events=list(dict.fromkeys(body.events)),
        secretCiphertext=encrypt_secret(key, body.secret),
        createdBy=principal.subject,
    )
    return public(await ledger.register_webhook(tenant, registration))


@router.get(
    "/webhooks",
    operation_id="listWebhooks",
    summary="List webhooks",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 503),
)
async def list_webhooks(principal: Admin, tenant: Tenant, ledger: Ledger) -> WebhookList:
    return WebhookList(webhooks=[public(w) for w in await ledger.webhooks(tenant)])


@router.delete(
    "/webhooks/{webhookId}",
    status_code=204,
    operation_id="deleteWebhook",
    summary="Delete a webhook",
    response_class=Response,
    responses=documented(400, 401, 403, 404, 503),
)
async def delete_webhook(
    principal: Admin, tenant: Tenant, webhookId: WebhookId, ledger: Ledger
) -> Response:
    await ledger.delete_webhook(tenant, webhookId)
    return Response(status_code=204)
