"""Idempotency-Key: a POST sent again with the same key gets the first answer again.

The key is scoped by tenant (the request's, as `api.deps.Tenant` decided it from the token, the
header and the body: so a key can only be replayed in a tenant the caller holds) and kept in the
tenant's ledger workflow (`workflows.ledger`) for
`idempotency_ttl_seconds` (24 h or more). A request is identified by its fingerprint: SHA-256 of
method, path, tenant, the caller's subject and the canonical JSON of its body. The caller is part
of it because what a POST does depends on who sends it (a decision counts for the token's
subject): another caller's request under the same key is a different request.

- Same key, same fingerprint, first answer recorded: that answer again (status, body, `Location`,
  `Content-Type`), with `Idempotent-Replay: true`, and nothing is done.
- Same key, another fingerprint: 409 `idempotency_conflict`.
- Same key while the first request is still being served: 409 `idempotency_in_progress`
  (`Retry-After: 1`). The key is claimed before any work is done, so two concurrent retries
  never both act; a claim whose request died lapses after `CLAIM_SECONDS`.

Recorded: 2xx answers, and the final refusals 400 (invalid request or manifest) and 409
(conflicts such as an existing run id or an already decided gate). Not recorded, so a retry with
the key acts anew: 401 and 403 (they depend on the token, not the request), 404 (the run may
appear), 413, 5xx (nothing was done, or Temporal could not be reached).

Two pieces, used together: the `idempotent(scope)` dependency claims the key (after auth, before
the route's work) or answers from the record; `IdempotentRoute`, the route class of the routers
that use it, records the route's answer, including errors, before it is sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.routing import APIRoute
from temporalio.service import RPCError

from api.auth import Principal, require_scope
from api.deps import Ledger, SettingsDep, Tenant, _principal
from api.errors import (
    ApiError,
    IdempotencyConflict,
    IdempotencyInProgress,
    InvalidRequest,
)
from api.ledger import LedgerGateway
from workflows.contract.ledger import MAX_STORED_BODY_BYTES, IdempotencyRecord, StoredResponse

log = structlog.get_logger("taskrunner.api")

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replay"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
CLAIM_SECONDS = 60
KEPT_HEADERS = ("location", "content-type")
COMPRESS_ABOVE = 1024


def recorded(status: int) -> bool:
    return 200 <= status < 300 or status in (400, 409)


def fingerprint(method: str, path: str, tenant: str, subject: str, body: bytes) -> str:
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, RecursionError):
        canonical = body  # not JSON (or too deep): the route refuses it; the bytes identify it
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), tenant.encode(), subject.encode()):
        digest.update(part + b"\0")
    digest.update(canonical)
    return "sha256:" + digest.hexdigest()


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----------------------------------------------------------------- stored answers


def store(response: Response) -> StoredResponse:
    body = bytes(response.body)
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS}
    stored = StoredResponse(status=response.status_code, headers=headers, body=body.decode())
    if len(body) > COMPRESS_ABOVE:
        packed = base64.b64encode(zlib.compress(body, 6)).decode()
        if len(packed) < len(body):
            stored = stored.model_copy(update={"body": packed, "encoding": "zlib+base64"})
    if len(stored.body) > MAX_STORED_BODY_BYTES:
        headers.pop("content-type", None)
        stored = stored.model_copy(update={"body": "", "encoding": "omitted", "headers": headers})
    return stored


def replay(stored: StoredResponse) -> Response:
    if stored.encoding == "zlib+base64":
        body = zlib.decompress(base64.b64decode(stored.body))
    else:
        body = stored.body.encode()
    headers = {**stored.headers, REPLAY_HEADER: "true"}
    media_type = headers.pop("content-type", None)
    return Response(body, status_code=stored.status, headers=headers, media_type=media_type)


class IdempotentReplay(Exception):
    """Raised by the dependency to answer from the record; turned into the recorded response."""

    def __init__(self, stored: StoredResponse) -> None:
        super().__init__("idempotent replay")
        self.stored = stored


async def _replay_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdempotentReplay)
    return replay(exc.stored)


def install(app: FastAPI) -> None:
    app.add_exception_handler(IdempotentReplay, _replay_handler)


# ----------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """A key this request holds until it records its answer (or gives the key up)."""

    ledger: LedgerGateway
    tenant: str
    key: str
    fingerprint: str
    holder: str
    expires_at: str

    async def settle(self, response: Response) -> None:
        if not recorded(response.status_code):
            await self.release()
            return
        record = IdempotencyRecord(
            key=self.key,
            fingerprint=self.fingerprint,
            expiresAt=self.expires_at,
            holder=self.holder,
            response=store(response),
        )
        try:
            kept = await self.ledger.remember(self.tenant, record)
        except (ApiError, RPCError) as exc:
            # The work is done and its answer goes out; a retry finds the key claimed until
            # the claim lapses, then acts anew.
            log.warning("idempotency.record-failed", key=self.key, error=str(exc)[:200])
            return
        if kept.holder != self.holder:
            log.warning("idempotency.claim-lost", key=self.key)

    async def release(self) -> None:
        try:
            await self.ledger.release(self.tenant, self.key, self.holder)
        except (ApiError, RPCError) as exc:
            log.warning("idempotency.release-failed", key=self.key, error=str(exc)[:200])


def _answer(record: IdempotencyRecord, fp: str, now: datetime) -> None:
    """Raise what a request under a key someone else holds gets; return if it may claim it."""
    if record.fingerprint != fp:
        raise IdempotencyConflict(
            f"{IDEMPOTENCY_HEADER} {record.key!r} was used for another request"
        )
    if record.response is not None:
        raise IdempotentReplay(record.response)
    lapsed = record.lockedUntil is not None and record.lockedUntil <= _stamp(now)
    if not lapsed:
        raise IdempotencyInProgress(
            f"a request with {IDEMPOTENCY_HEADER} {record.key!r} is still being served",
            headers={"Retry-After": "1"},
        )


def idempotent(scope: str) -> Any:
    """The dependency of a POST that honours Idempotency-Key; its routes use IdempotentRoute."""

    async def claim(
        request: Request,
        settings: SettingsDep,
        ledger: Ledger,
        principal: Annotated[Principal, Depends(_principal)],
        tenant: Tenant,
        key: Annotated[
            str | None,
            Header(
                alias=IDEMPOTENCY_HEADER,
                description="Makes the request safe to retry: the same key and request get the "
                "first answer again (Idempotent-Replay: true) for 24 h",
            ),
        ] = None,
    ) -> Claim | None:
        require_scope(principal, scope)  # a replay is an answer too: only for who may ask
        if key is None:
            return None
        if not KEY_PATTERN.match(key):
            raise InvalidRequest(
                f"{IDEMPOTENCY_HEADER} must be 1 to 255 printable ASCII characters, no spaces"
            )
        body = await request.body()
        fp = fingerprint(request.method, request.url.path, tenant, principal.subject, body)
        now = datetime.now(UTC)
        existing = await ledger.recall(tenant, key)
        if existing is not None:
            _answer(existing, fp, now)
        holder = uuid.uuid4().hex
        wanted = IdempotencyRecord(
            key=key,
            fingerprint=fp,
            expiresAt=_stamp(now + timedelta(seconds=settings.idempotency_ttl_seconds)),
            holder=holder,
            lockedUntil=_stamp(now + timedelta(seconds=CLAIM_SECONDS)),
        )
        kept = await ledger.remember(tenant, wanted)
        if kept.holder != holder:
            _answer(kept, fp, now)
        held = Claim(ledger, tenant, key, fp, holder, wanted.expiresAt)
        request.state.idempotency_claim = held
        return held

    return Depends(claim)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class IdempotentRoute(APIRoute):
    """Records the answer of a request that claimed an Idempotency-Key, errors included, before
    it is sent. Routes without a claim pass through untouched."""

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handle(request)
            except Exception as exc:
                held: Claim | None = getattr(request.state, "idempotency_claim", None)
                if held is None:
                    raise
                answer = await _handled(request, exc)
                if answer is None:
                    await held.release()
                    raise
                response = answer
            held = getattr(request.state, "idempotency_claim", None)
            if held is not None:
                await held.settle(response)
            return response

        return run


async def _handled(request: Request, exc: Exception) -> Response | None:
    """The response the app's own exception handlers give for `exc` (None: no handler)."""
    handlers = request.app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response: Response = await handler(request, exc)
            return response
    return None
