"""API errors: each failure modelled once here, and mapped to HTTP once by the handlers `install`
registers on the app.

Every 4xx/5xx body is the contract's envelope `{"error": {"code", "message", "traceId"}}`, except
manifest and input errors, which are the contract's `PlanErrorResponse` `{"errors": [...]}`.
Nothing unexpected reaches a client as a stack trace: it becomes a 500 `internal_error`, logged
with the trace id the client sees (see `api.middleware.RequestContext`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from temporalio.service import RPCError, RPCStatusCode

from api.schemas import ErrorEnvelope, PlanErrorResponse
from api.tracing import trace_id
from compiler import ManifestError

log = structlog.get_logger("taskrunner.api")


class ApiError(Exception):
    """A failure with its HTTP status and machine-readable code; the message is for people."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class InvalidRequest(ApiError):
    status = 400
    code = "invalid_request"


class MalformedJson(InvalidRequest):
    code = "malformed_json"


class InvalidTenant(InvalidRequest):
    code = "invalid_tenant"


class TenantRequired(InvalidRequest):
    """The token holds several tenants (or all of them) and the request named none."""

    code = "tenant_required"


class Unauthenticated(ApiError):
    status = 401
    code = "unauthenticated"

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        # RFC 6750: say which scheme to use, and whether the token given was the problem.
        challenge = 'Bearer realm="taskrunner"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class InsufficientScope(Forbidden):
    """The token holds none of the scopes that would allow the operation (RFC 6750 names it)."""

    code = "insufficient_scope"

    def __init__(self, scope: str, message: str | None = None) -> None:
        super().__init__(
            message or f"this operation needs the {scope} scope",
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="taskrunner", error="insufficient_scope", scope="{scope}"'
                )
            },
        )


class TenantForbidden(Forbidden):
    """The request names a tenant the token does not hold."""

    code = "tenant_forbidden"


class TenantClaimMissing(Forbidden):
    """The token holds no tenant at all (no `tenant` or `tenants` claim): no tenant route."""

    code = "tenant_claim_missing"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class RunNotFound(NotFound):
    code = "run_not_found"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found")


class ApprovalNotFound(NotFound):
    code = "approval_not_found"


class ArtifactNotFound(NotFound):
    code = "artifact_not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class RunAlreadyExists(Conflict):
    code = "run_exists"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} already exists")


class RunFinished(Conflict):
    code = "run_finished"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} has already finished")


class PlanHashMismatch(Conflict):
    code = "plan_hash_mismatch"


class ApprovalConflict(Conflict):
    """The gate cannot take this decision now: already decided, not reached, or a repeat voter."""

    code = "approval_conflict"


class ApprovalAlreadyDecided(ApprovalConflict):
    code = "approval_already_decided"


class ApprovalNotPending(ApprovalConflict):
    code = "approval_not_pending"


class DuplicateApprover(ApprovalConflict):
    code = "duplicate_approver"


class ApprovalExpired(ApprovalConflict):
    """Decided at or after the approval's `expiresAt`: the deadline's outcome stands."""

    code = "approval_expired"


class ExpiredByPerson(ApprovalConflict):
    """`expired` sent as a decision: only the deadline's timer says that."""

    code = "expired_by_person"


class NoOpenSeat(ApprovalConflict):
    """An approval whose remaining quorum seats need grants the decider does not hold."""

    code = "no_open_seat"


class RequesterNotAllowed(Forbidden):
    """The run's requester deciding an approval that says `allowRequester: false`."""

    code = "requester_not_allowed"


class WebhookNotFound(NotFound):
    code = "webhook_not_found"


class WebhookExists(Conflict):
    code = "webhook_exists"


class TooManyWebhooks(Conflict):
    code = "too_many_webhooks"


# ----------------------------------------------------------------- signed approval links


class InvalidLink(InvalidRequest):
    """Not an approval link at all (malformed), or a body that contradicts the link."""

    code = "invalid_link"


class LinkNotAccepted(ApiError):
    """A well-formed link this service did not sign (forged, altered, or another key)."""

    status = 401
    code = "invalid_link_signature"


class LinkExpired(ApiError):
    status = 410
    code = "link_expired"


class LinkAlreadyUsed(ApprovalConflict):
    code = "link_already_used"


class SigningKeyMissing(ApiError):
    status = 503
    code = "signing_key_missing"

    def __init__(self, feature: str) -> None:
        super().__init__(f"{feature} need a signing key: set TASKRUNNER_SIGNING_KEY")


class PackNotFound(NotFound):
    code = "pack_not_found"


class PackVersionExistsError(Conflict):
    code = "pack_version_exists"


class PackDisabled(Conflict):
    code = "pack_disabled"


class InvalidPackSignature(InvalidRequest):
    code = "invalid_pack_signature"


class RunNotRedrivable(Conflict):
    code = "run_not_redrivable"


class InvalidRedrive(InvalidRequest):
    code = "invalid_redrive"


class ScheduleNotFound(NotFound):
    code = "schedule_not_found"


class ScheduleExistsError(Conflict):
    code = "schedule_exists"


class InvalidSchedule(InvalidRequest):
    code = "invalid_schedule"


class ServiceKeyMissing(ApiError):
    status = 503
    code = "service_key_missing"

    def __init__(self) -> None:
        super().__init__(
            "evidence bundles need the service's Ed25519 key: set TASKRUNNER_SERVICE_KEY_FILE "
            "(`taskrunner keys generate FILE` makes one)"
        )


# ----------------------------------------------------------------- idempotency


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class TemporalUnavailable(ApiError):
    status = 503
    code = "temporal_unavailable"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        # Worth trying again: a worker or the server was busy or away for a moment.
        super().__init__(message, headers={"Retry-After": "2", **(headers or {})})


class DatabaseUnavailable(ApiError):
    status = 503
    code = "database_unavailable"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        # Out of reach for a moment, or its connections all busy under load: try again.
        super().__init__(message, headers={"Retry-After": "2", **(headers or {})})


class LogsUnavailable(ApiError):
    """Log entries a run paged out to the artifact store that this API cannot read."""

    status = 503
    code = "logs_unavailable"


class StepsUnavailable(ApiError):
    """Step states a run paged out to the artifact store (a long loop's finished iterations)
    that this API cannot read."""

    status = 503
    code = "steps_unavailable"


class InternalError(ApiError):
    def __init__(self) -> None:
        super().__init__("An unexpected error occurred")


_CODE_FOR_STATUS = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

# Temporal statuses that mean "Temporal (or any worker) cannot answer now", not "you asked wrong".
_UNAVAILABLE = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,  # a query no worker picked up before its deadline
        RPCStatusCode.RESOURCE_EXHAUSTED,
    }
)


def envelope(
    code: str, message: str, status: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "traceId": trace_id()}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def error_response(exc: ApiError) -> JSONResponse:
    return envelope(exc.code, exc.message, exc.status, exc.headers)


def internal_error_response() -> JSONResponse:
    return error_response(InternalError())


def from_rpc(exc: RPCError) -> ApiError:
    """The API error for a Temporal RPC failure nobody more specific claimed."""
    if exc.status in _UNAVAILABLE:
        return TemporalUnavailable(f"Temporal did not answer: {exc.message}")
    return InternalError()


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """`body.decision: Input should be ...; ...`: each problem with the field it is about."""
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(part) for part in err.get("loc", ()))
        msg = "unknown field" if err.get("type") == "extra_forbidden" else str(err.get("msg", ""))
        parts.append(f"{loc}: {msg}" if loc else msg)
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(parts)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.status >= 500:
        log.warning("api.error", code=exc.code, message=exc.message)
    return error_response(exc)


async def _manifest_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ManifestError)
    errors: list[dict[str, Any]] = []
    for e in exc.errors:
        error: dict[str, Any] = {"path": e.path, "message": e.message}
        if e.line is not None:
            error |= {"line": e.line, "column": e.column}
        errors.append(error)
    return JSONResponse({"errors": errors}, status_code=400)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        detail = (bad_json.get("ctx") or {}).get("error", "JSON decode error")
        where = bad_json["loc"][-1] if bad_json.get("loc") else "?"
        return error_response(
            MalformedJson(f"malformed JSON body: {detail} (at character {where})")
        )
    return error_response(InvalidRequest(validation_message(errors)))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _CODE_FOR_STATUS.get(
        exc.status_code, "internal_error" if exc.status_code >= 500 else "error"
    )
    return envelope(code, str(exc.detail), exc.status_code, exc.headers)


async def _rpc_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    error = from_rpc(exc)
    if isinstance(error, InternalError):
        log.error("temporal.rpc-failed", status=exc.status.name, message=exc.message)
    else:
        log.warning("temporal.unavailable", status=exc.status.name, message=exc.message)
    return error_response(error)


def install(app: FastAPI) -> None:
    """Register the handlers: the one place errors become HTTP responses.

    Anything else escaping a route is caught by `api.middleware.RequestContext`, which knows
    whether a response has already begun.
    """
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ManifestError, _manifest_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RPCError, _rpc_error)


def documented(
    *statuses: int, plan_errors: bool = False, stream: bool = False
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: the contract's error bodies, for the OpenAPI document.

    `plan_errors`: a 400 is a PlanErrorResponse for a manifest or its inputs, and the envelope
    for a request that is not even that far (malformed JSON, an unknown field, a bad tenant).
    `stream`: the route's own responses are not JSON (NDJSON), but its errors still are; FastAPI
    would file a `model` under the route's media type, so they are given as JSON explicitly.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        if stream:
            out[status] = {"content": {"application/json": {"schema": _ENVELOPE_REF}}}
        elif status == 400 and plan_errors:
            out[status] = {
                "model": PlanErrorResponse | ErrorEnvelope,
                "description": "Manifest or input errors (PlanErrorResponse), or a bad request",
            }
        else:
            out[status] = {"model": ErrorEnvelope}
    if stream:
        out["default"] = {
            "description": "Standard error envelope",
            "content": {"application/json": {"schema": _ENVELOPE_REF}},
        }
    else:
        out["default"] = {"model": ErrorEnvelope, "description": "Standard error envelope"}
    return out


# Other routes' `model=ErrorEnvelope` puts the schema among the document's components.
_ENVELOPE_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
