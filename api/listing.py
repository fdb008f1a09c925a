"""Run listing from Temporal visibility: filters become a list query over the run search
attributes, pages are Temporal's own, and the page token handed out is opaque and signed.

Order: Temporal's SQL visibility (SQLite for `taskrunner dev`, PostgreSQL in compose) has no
ORDER BY; it lists open runs first, newest started first, then finished runs, most recently
finished first, and pages by that key. New runs never shift later pages; a run that finishes
while a caller pages through the open ones may be listed twice (once open, once finished), and
none is skipped.

A page token carries Temporal's token, a digest of the query it belongs to, and an HMAC (key
derived from the signing key, else a random key per process), so a token is refused with 400
when altered or used with other filters, and never reaches Temporal unchecked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api.errors import InvalidRequest
from api.schemas import RunList, RunSummary
from workflows.contract.names import (
    SA_PACK,
    SA_PLAN_HASH,
    SA_STATUS,
    SA_TENANT,
    WORKFLOW_TYPE,
    workflow_id,
)
from workflows.contract.state import TERMINAL_RUN_STATUSES
from workflows.contract.times import rfc3339

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
RUN_STATUSES = ("pending", "running", "awaiting-approval", "succeeded", "failed", "cancelled")
OPEN_STATUSES = ("pending", "running", "awaiting-approval")
# Executions that ended without the workflow saying how (terminated by an operator, timed out,
# failed outside the interpreter) keep their last TaskRunnerStatus: they count as failed.
_ENDED_ABRUPTLY = ("Terminated", "TimedOut", "Failed")
# Characters a filter value may not hold: it is quoted inside a visibility query.
_UNQUOTABLE = frozenset("'\"\\\n\r\t")

MEMO_RUN_ID = "runId"
MEMO_CREATED_AT = "createdAt"
MEMO_REQUEST = "idempotencyToken"
MEMO_PACK_VERSION = "packVersion"
MEMO_PACK_DIGEST = "packDigest"
MEMO_REDRIVE_OF = "redriveOf"
"""The identity of the keyed request that started the run (see api.idempotency)."""
_SUMMARY_MEMO_KEYS = (
    MEMO_RUN_ID,
    MEMO_CREATED_AT,
    MEMO_PACK_VERSION,
    MEMO_PACK_DIGEST,
    MEMO_REDRIVE_OF,
)


class InvalidPageToken(InvalidRequest):
    code = "invalid_page_token"


@dataclass(frozen=True)
class RunFilter:
    statuses: tuple[str, ...] = ()
    pack: str | None = None
    plan_hash: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def parse_statuses(values: Sequence[str]) -> tuple[str, ...]:
    """`?status=a&status=b` and `?status=a,b` alike; each one a run status."""
    out: list[str] = []
    for value in values:
        for status in (s.strip() for s in value.split(",")):
            if status not in RUN_STATUSES:
                raise InvalidRequest(f"status: {status!r} is not one of {', '.join(RUN_STATUSES)}")
            if status not in out:
                out.append(status)
    return tuple(out)


def parse_time(name: str, value: str | None) -> datetime | None:
    """An RFC 3339 timestamp with its offset (`2025-12-06T10:00:00Z`), in UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name}: {value!r} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None or "T" not in value.upper():
        raise InvalidRequest(f"{name}: {value!r} needs a date, a time and an offset (e.g. Z)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is past the last datetime in UTC
        raise InvalidRequest(f"{name}: {value!r} is out of range") from None


def quotable(name: str, value: str | None) -> str | None:
    if value is not None and (not value or _UNQUOTABLE & set(value) or len(value) > 200):
        raise InvalidRequest(f"{name}: {value!r} is not a value runs can have")
    return value


def visibility_query(tenant: str, f: RunFilter) -> str:
    """The visibility list query of a tenant's runs that match `f`."""
    clauses = [
        f"WorkflowType = '{WORKFLOW_TYPE}'",
        f"{SA_TENANT.name} = '{tenant}'",
        # A run that continued as new is one run: list its open execution only.
        "ExecutionStatus != 'ContinuedAsNew'",
    ]
    if f.statuses:
        clauses.append("(" + " OR ".join(_status_clause(s) for s in f.statuses) + ")")
    if f.pack is not None:
        clauses.append(f"{SA_PACK.name} = '{f.pack}'")
    if f.plan_hash is not None:
        clauses.append(f"{SA_PLAN_HASH.name} = '{f.plan_hash}'")
    if f.created_after is not None:
        clauses.append(f"StartTime > '{rfc3339(f.created_after, 'microseconds')}'")
    if f.created_before is not None:
        clauses.append(f"StartTime < '{rfc3339(f.created_before, 'microseconds')}'")
    return " AND ".join(clauses)


def _status_clause(status: str) -> str:
    if status in OPEN_STATUSES:
        return f"({SA_STATUS.name} = '{status}' AND ExecutionStatus = 'Running')"
    if status == "failed":
        ended = ", ".join(f"'{s}'" for s in _ENDED_ABRUPTLY)
        return f"({SA_STATUS.name} = 'failed' OR ExecutionStatus IN ({ended}))"
    return f"{SA_STATUS.name} = '{status}'"


# ----------------------------------------------------------------- page tokens


class PageTokens:
    """Opaque, signed page tokens bound to the query they continue."""

    def __init__(self, signing_key: bytes | None) -> None:
        secret = signing_key if signing_key is not None else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"taskrunner/page-token/v1\0" + secret).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]

    @staticmethod
    def _digest(query: str) -> str:
        return hashlib.sha256(query.encode()).hexdigest()[:16]

    def issue(self, query: str, temporal_token: bytes) -> str:
        body = json.dumps(
            {"q": self._digest(query), "t": base64.b64encode(temporal_token).decode()},
            separators=(",", ":"),
        ).encode()
        return _b64(body + self._mac(body))

    def accept(self, query: str, token: str) -> bytes:
        """Temporal's token inside `token`, if this service issued it for `query`."""
        try:
            raw = _unb64(token)
        except (ValueError, binascii.Error):
            raise InvalidPageToken("pageToken is not a page token") from None
        body, mac = raw[:-16], raw[-16:]
        if len(raw) <= 16 or not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidPageToken("pageToken was not issued by this service (or was altered)")
        claims = json.loads(body)
        if claims["q"] != self._digest(query):
            raise InvalidPageToken("pageToken belongs to another query: keep the filters")
        return base64.b64decode(claims["t"])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ----------------------------------------------------------------- the listing


async def list_runs(
    client: Client,
    tokens: PageTokens,
    tenant: str,
    f: RunFilter,
    *,
    page_size: int,
    page_token: str | None,
    timeout: timedelta,
) -> RunList:
    query = visibility_query(tenant, f)
    start = tokens.accept(query, page_token) if page_token else None
    pages = client.list_workflows(
        query, page_size=page_size, next_page_token=start, rpc_timeout=timeout
    )
    try:
        await pages.fetch_next_page()
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise InvalidRequest(f"Temporal refused the listing: {exc.message}") from None
        raise
    runs = [await summary(tenant, execution) for execution in pages.current_page or ()]
    following = pages.next_page_token
    return RunList(runs=runs, nextPageToken=tokens.issue(query, following) if following else None)


async def summary(tenant: str, execution: WorkflowExecution) -> RunSummary:
    attributes = execution.typed_search_attributes
    # Only the keys a summary shows are decoded: a cancelled run's memo also holds its final
    # state (names.MEMO_FINAL_STATE, up to MEMO_STATE_BYTES), which a listing never ships.
    memo: Mapping[str, Any] = {
        key: await execution.memo_value(key, None) for key in _SUMMARY_MEMO_KEYS
    }
    # Runs started before the API wrote its memo: the id is what follows the tenant's prefix.
    run_id = str(memo.get(MEMO_RUN_ID) or execution.id.removeprefix(workflow_id(tenant, "")))
    return RunSummary(
        runId=run_id,
        pack=attributes.get(SA_PACK) or "",
        status=run_status(attributes.get(SA_STATUS), execution.status),
        planHash=attributes.get(SA_PLAN_HASH) or "",
        createdAt=str(memo.get(MEMO_CREATED_AT) or rfc3339(execution.start_time)),
        closedAt=rfc3339(execution.close_time) if execution.close_time else None,
        packVersion=_text(memo.get(MEMO_PACK_VERSION)),
        packDigest=_text(memo.get(MEMO_PACK_DIGEST)),
        redriveOf=_text(memo.get(MEMO_REDRIVE_OF)),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def run_status(recorded: str | None, execution: WorkflowExecutionStatus | None) -> str:
    """The run's status from its TaskRunnerStatus and how its execution stands."""
    if execution in (None, WorkflowExecutionStatus.RUNNING):
        # A run that has ended may still be open for a moment (its webhooks being delivered).
        return recorded if recorded in RUN_STATUSES else "running"
    if recorded in TERMINAL_RUN_STATUSES:
        return recorded
    if execution == WorkflowExecutionStatus.CANCELED:
        return "cancelled"
    return "failed"
