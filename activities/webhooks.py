"""Webhook deliveries: POST an event as JSON, signed, to a tenant's registered URL.

Deliveries are activities of the run, so they survive worker restarts and Temporal retries them
with backoff: a connection error, a timeout, a 5xx, 408 or 429 is retried; any other 4xx is a
permanent refusal by the receiver. Each request carries the Standard Webhooks headers
(https://www.standardwebhooks.com), signed by the `standardwebhooks` package, so receivers can use
any of its verifiers:

- `webhook-id`: the delivery id, the same on every retry (deduplicate on it);
- `webhook-timestamp`: Unix seconds of the attempt;
- `webhook-signature`: `v1,<base64 HMAC-SHA256>` over `<id>.<timestamp>.<body>`, keyed with the
  bytes of the webhook's `whsec_` secret (or, for a secret registered as plain text before
  `whsec_` secrets, its UTF-8 bytes: see `standard_webhook_key`).

and, for one more release, the headers it carried before:

- `X-TaskRunner-Signature: sha256=<hex>`: HMAC-SHA256 with the webhook's secret over
  `<timestamp>.<body>`;
- `X-TaskRunner-Timestamp`: Unix seconds, inside the MAC, so receivers can refuse old replays;
- `X-TaskRunner-Event` and `X-TaskRunner-Delivery` (an id stable across retries).

A `gate.awaiting` event also gets two signed one-time links, `links.approve` and
`links.reject`, that apply the decision without a bearer token. They are minted for the webhook
(`webhook:<id>`): whoever holds them decides once, as that identity, so a receiver fills at most
one seat of a quorum. They are derived from the delivery, not the attempt, so a delivery and its
retries carry the very same links. `links.review` is for people: opened in a browser (a GET,
which never decides) it shows the gate with an Approve and a Reject button, each POSTing one of
the two links.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.netpolicy import TargetPolicy, TargetRefused
from workflows.contract.activities import DELIVER_WEBHOOK, DeliveryResult, WebhookDelivery
from workflows.contract.signing import (
    ApprovalToken,
    TokenInvalid,
    WebhookSecretInvalid,
    decrypt_secret,
    mint_token,
    sign_body,
    standard_webhook_key,
)

RETRYABLE_STATUSES = frozenset({408, 425, 429})
PERMANENT = "WebhookRefused"


class WebhookActivities:
    """The delivery activity, configured with what the worker knows: the signing key, where the
    API is reachable (for the links), and how long links live."""

    def __init__(
        self,
        signing_key: str | None,
        public_url: str | None,
        link_ttl_seconds: int = 86400,
        timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
        targets: TargetPolicy | None = None,
    ) -> None:
        self.key = signing_key.encode() if signing_key else None
        # Loopback, link-local and private receivers are refused unless the operator allows them.
        self.targets = targets or TargetPolicy()
        self.public_url = (public_url or "http://127.0.0.1:8080").rstrip("/")
        self.link_ttl_seconds = link_ttl_seconds
        self.timeout_seconds = timeout_seconds
        self.clock = clock

    def activities(self) -> list[Callable[..., Any]]:
        return [self.deliver_webhook]

    def links(self, req: WebhookDelivery, event: dict[str, Any], key: bytes) -> dict[str, str]:
        # Everything here comes from the delivery (its id, the event's own time), never from the
        # attempt, so every retry carries the same two links.
        expires = _epoch(event.get("timestamp"), default=int(self.clock())) + self.link_ttl_seconds
        nonce = hashlib.sha256(req.deliveryId.encode()).hexdigest()[:16]
        out: dict[str, str] = {}
        tokens: dict[str, str] = {}
        for verb, decision in (("approve", "approved"), ("reject", "rejected")):
            token = ApprovalToken(
                tenant=str(event["tenant"]),
                runId=str(event["runId"]),
                approvalId=str(event["approvalId"]),
                planHash=str(event["planHash"]),
                decision=decision,  # type: ignore[arg-type]
                expiresAt=expires,
                nonce=nonce,
                subject=f"webhook:{req.webhookId}",
            )
            tokens[verb] = mint_token(key, token)
            out[verb] = f"{self.public_url}/v1/task-runner/approvals/{tokens[verb]}"
        # The page for people: a GET shows the gate and both buttons, and decides nothing.
        out["review"] = f"{out['approve']}?other={tokens['reject']}"
        return out

    async def _pinned(
        self, target: str, headers: dict[str, str]
    ) -> tuple[httpx.URL, dict[str, Any]]:
        """The URL to post to, at the address the target policy checked (so the name cannot
        resolve elsewhere between the check and the connection), with the Host header and TLS
        server name of the original."""
        try:
            url = httpx.URL(target)
        except httpx.InvalidURL:
            raise ApplicationError(
                "invalid webhook URL", type=PERMANENT, non_retryable=True
            ) from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ApplicationError(
                "webhook URL must be http or https", type=PERMANENT, non_retryable=True
            )
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await self.targets.resolve(url.host, port)
        except TargetRefused as exc:
            raise ApplicationError(
                f"webhook target refused: {exc}", type=PERMANENT, non_retryable=True
            ) from None
        headers["Host"] = url.netloc.decode("ascii")
        return url.copy_with(host=addresses[0]), {"sni_hostname": url.host}

    @activity.defn(name=DELIVER_WEBHOOK)
    async def deliver_webhook(self, req: WebhookDelivery) -> DeliveryResult:
        if self.key is None:
            raise ApplicationError(
                "no signing key configured on this worker (TASKRUNNER_SIGNING_KEY)",
                type=PERMANENT,
                non_retryable=True,
            )
        try:
            secret = decrypt_secret(self.key, req.secretCiphertext)
            standard = Webhook(standard_webhook_key(secret))
        except (TokenInvalid, WebhookSecretInvalid) as exc:
            raise ApplicationError(str(exc), type=PERMANENT, non_retryable=True) from None
        event = dict(req.event)
        if event.get("eventType") == "gate.awaiting" and event.get("approvalId"):
            event["links"] = self.links(req, event, self.key)
        body = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        now = int(self.clock())
        stamp = str(now)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "TaskRunner-Webhook/1",
            "webhook-id": req.deliveryId,
            "webhook-timestamp": stamp,
            "webhook-signature": standard.sign(
                req.deliveryId, datetime.fromtimestamp(now, UTC), body
            ),
            # Deprecated: kept for one release beside the Standard Webhooks headers.
            "X-TaskRunner-Event": str(event.get("eventType", "")),
            "X-TaskRunner-Delivery": req.deliveryId,
            "X-TaskRunner-Timestamp": stamp,
            "X-TaskRunner-Signature": sign_body(secret.encode(), stamp, body),
        }
        attempt = activity.info().attempt
        url, extensions = await self._pinned(req.url, headers)
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds, trust_env=False) as client:
                response = await client.post(
                    url, content=body, headers=headers, extensions=extensions
                )
        except httpx.HTTPError as exc:
            # Retryable: the receiver may be down for a while; Temporal backs off.
            # The origin only: a receiver's URL often holds its credential in the path or the
            # query, and this message is the reason of the run log's `webhook.failed`, which
            # every viewer of the tenant reads (only admins list webhooks).
            raise ApplicationError(
                f"delivery to {_origin(httpx.URL(req.url))} failed: {type(exc).__name__}",
                type="WebhookUnreachable",
            ) from None
        if response.status_code >= 500 or response.status_code in RETRYABLE_STATUSES:
            raise ApplicationError(f"receiver answered {response.status_code}", type="WebhookRetry")
        if response.status_code >= 400:
            raise ApplicationError(
                f"receiver refused the delivery with {response.status_code}",
                type=PERMANENT,
                non_retryable=True,
            )
        return DeliveryResult(status=response.status_code, attempt=attempt)


def _origin(url: httpx.URL) -> str:
    """`scheme://host[:port]` of a URL, without its path, query or credentials."""
    port = f":{url.port}" if url.port is not None else ""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}{port}"


def _epoch(stamp: Any, *, default: int) -> int:
    """Unix seconds of an RFC 3339 timestamp (the event's), or `default` when there is none."""
    try:
        return int(datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return default
