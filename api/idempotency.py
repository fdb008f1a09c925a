"""Idempotency-Key: a POST sent again with the same key gets the first answer again.

The key is scoped by tenant (the request's, as `api.deps.Tenant` decided it from the token, the
header and the body: so a key can only be replayed in a tenant the caller holds) and kept in the
database (`db.idempotency`, table `idempotency_keys`) for `idempotency_ttl_seconds` (24 h or
more). A request is identified by its fingerprint: SHA-256 of method, path, tenant, the caller's
subject and the canonical JSON of its body. The caller is part of it because what a POST does
depends on who sends it (a decision counts for the token's subject): another caller's request
under the same key is a different request.

- Same key, same fingerprint, first answer recorded: that answer again (status, body, `Location`,
  `Content-Type`), with `Idempotent-Replay: true`, and nothing is done.
- Same key, another fingerprint: 409 `idempotency_conflict`.
- Same key while the first request is still being served: 409 `idempotency_in_progress`
  (`Retry-After: 1`). The key is claimed by inserting its row (the primary key decides between
  concurrent requests) in one transaction before any work is done, so two concurrent retries
  never both act; a claim whose request died lapses after `CLAIM_SECONDS` and the next request
  with the key takes it over.

What a taken-over claim does again cannot happen twice, because everything it does carries an
identity derived from the key, fixed before the work started:
- a create's run id is written with the claim, before the run starts: the taker starts that run
  id, and if the run is there already (Temporal refuses a second start of one workflow id), it
  answers with that run, recognised by the key's token in the run's memo;
- an approval is a Temporal update whose update id is derived from the key (Temporal answers a
  repeated update id with the first outcome); a cancel is a signal whose request id is derived
  from the key (Temporal drops a repeated one); a webhook's id is derived from the key.
So a create whose answer could not be written after its run started still answers with the run,
and the next request with the key finds that run instead of starting another.

Recorded: 2xx answers, and the final refusals 400 (invalid request or manifest) and 409
(conflicts such as an existing run id or an already decided gate). Not recorded, so a retry with
the key acts anew: 401 and 403 (they depend on the token, not the request), 404 (the run may
appear), 413, 5xx (nothing was done, or what was done is found again as above).

Two pieces, used together: the `idempotent(scope)` dependency claims the key (after auth, before
the route's work) or answers from the record; `IdempotentRoute`, the route class of the routers
that use it, records the route's answer, including errors, before it is sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.routing import APIRoute

from api.auth import Principal, require_scope
from api.database import UNAVAILABLE, available
from api.deps import DatabaseDep, SettingsDep, Tenant, _principal
from api.errors import (
    IdempotencyConflict,
    IdempotencyInProgress,
    InvalidRequest,
)
from db.idempotency import IdempotencyStore, KeyRecord, StoredResponse

log = structlog.get_logger("taskrunner.api")

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replay"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
CLAIM_SECONDS = 60
KEPT_HEADERS = ("location", "content-type")

Reserve = Callable[[Any], str | None]
"""What a route fixes before its work from the parsed JSON body (a create: its run id)."""


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


# ----------------------------------------------------------------- stored answers


def store(response: Response) -> StoredResponse:
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS}
    return StoredResponse(status=response.status_code, headers=headers, body=bytes(response.body))


def replay(stored: StoredResponse) -> Response:
    headers = {**stored.headers, REPLAY_HEADER: "true"}
    media_type = headers.pop("content-type", None)
    return Response(stored.body, status_code=stored.status, headers=headers, media_type=media_type)


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

    keys: IdempotencyStore
    tenant: str
    key: str
    fingerprint: str
    holder: str
    run_id: str | None = None
    """The run a create under this key starts: fixed with the claim, before the start."""
    taken_over: bool = False
    """The key was claimed before by a request that died: its work may have been done."""

    @property
    def token(self) -> str:
        """This request's identity in Temporal (update id, signal request id, run memo): the
        same for every attempt of the request under the key, and for no other request."""
        digest = hashlib.sha256(f"{self.tenant}\0{self.key}\0{self.fingerprint}".encode())
        return "idem-" + digest.hexdigest()[:40]

    async def settle(self, response: Response) -> None:
        status = response.status_code
        if not recorded(status):
            # A 5xx may come after the work was done (a start whose answer was lost): keep the
            # claim, lapsed, so a retry takes it over and finds that work by the key's identity.
            await (self.lapse() if status >= 500 else self.release())
            return
        try:
            kept = await self.keys.complete(self.tenant, self.key, self.holder, store(response))
        except UNAVAILABLE as exc:
            # The work is done and its answer goes out; the next request with the key takes the
            # claim over and finds the work again (see the module docstring).
            log.warning("idempotency.record-failed", key=self.key, error=str(exc)[:200])
            await self.lapse()
            return
        if kept is None or kept.holder != self.holder:
            log.warning("idempotency.claim-lost", key=self.key)

    async def release(self) -> None:
        try:
            await self.keys.release(self.tenant, self.key, self.holder)
        except UNAVAILABLE as exc:
            log.warning("idempotency.release-failed", key=self.key, error=str(exc)[:200])

    async def lapse(self) -> None:
        try:
            await self.keys.lapse(self.tenant, self.key, self.holder, datetime.now(UTC))
        except UNAVAILABLE as exc:
            log.warning("idempotency.lapse-failed", key=self.key, error=str(exc)[:200])


def _refuse(record: KeyRecord, fp: str) -> None:
    """Raise what a request under a key another request holds gets."""
    if record.fingerprint != fp:
        raise IdempotencyConflict(
            f"{IDEMPOTENCY_HEADER} {record.key!r} was used for another request"
        )
    if record.response is not None:
        raise IdempotentReplay(record.response)
    raise IdempotencyInProgress(
        f"a request with {IDEMPOTENCY_HEADER} {record.key!r} is still being served",
        headers={"Retry-After": "1"},
    )


def idempotent(scope: str, reserve: Reserve | None = None) -> Any:
    """The dependency of a POST that honours Idempotency-Key; its routes use IdempotentRoute.

    `reserve`: what to fix with the claim, from the parsed body (the create's run id)."""

    async def claim(
        request: Request,
        settings: SettingsDep,
        database: DatabaseDep,
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
        parsed = _parsed(body)
        fp = fingerprint(request.method, request.url.path, tenant, principal.subject, body)
        now = datetime.now(UTC)
        holder = uuid.uuid4().hex
        with available():
            record = await database.keys.claim(
                tenant,
                key,
                fingerprint=fp,
                holder=holder,
                now=now,
                lock_for=timedelta(seconds=CLAIM_SECONDS),
                keep_for=timedelta(seconds=settings.idempotency_ttl_seconds),
                run_id=reserve(parsed) if reserve is not None else None,
            )
        if record.holder != holder:
            _refuse(record, fp)
        held = Claim(
            database.keys, tenant, key, fp, holder, record.run_id, taken_over=record.taken_over
        )
        request.state.idempotency_claim = held
        return held

    return Depends(claim)


def _parsed(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


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
                    await held.lapse()  # unexpected: what was done is unknown
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
