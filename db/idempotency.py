"""Idempotency keys in the database: a key is claimed by inserting its row, so the primary key
(tenant, key) decides a race between concurrent requests, in one short transaction before any
work starts; the answer is written to the same row after the work.

A claim holds the key until `locked_until`; a claim whose request died lapses then and may be
taken over by a request with the same fingerprint (compare-and-set on the old holder, so two
takers never both win). A row past `expires_at` is replaced by whoever comes next, and pruned.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from db.engine import Database
from db.models import IdempotencyKey

COMPRESS_ABOVE = 1024
MAX_STORED_BODY_BYTES = 1024 * 1024
"""A response body larger than this (compressed) is not kept; its replay has no body."""

Encoding = Literal["identity", "zlib", "omitted"]


@dataclass(frozen=True)
class StoredResponse:
    """An HTTP answer kept for replay: status, selected headers, the body as sent."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def packed(self) -> tuple[bytes, Encoding]:
        if len(self.body) > COMPRESS_ABOVE:
            squeezed = zlib.compress(self.body, 6)
            if len(squeezed) < len(self.body):
                if len(squeezed) > MAX_STORED_BODY_BYTES:
                    return b"", "omitted"
                return squeezed, "zlib"
        if len(self.body) > MAX_STORED_BODY_BYTES:
            return b"", "omitted"
        return self.body, "identity"

    @staticmethod
    def unpacked(
        status: int, headers: dict[str, str] | None, body: bytes | None, encoding: str | None
    ) -> StoredResponse:
        data = body or b""
        if encoding == "zlib":
            data = zlib.decompress(data)
        kept = dict(headers or {})
        if encoding == "omitted":
            kept.pop("content-type", None)
        return StoredResponse(status=status, headers=kept, body=data)


@dataclass(frozen=True)
class KeyRecord:
    """What a key holds: the request it was claimed for and, once done, its answer."""

    tenant: str
    key: str
    fingerprint: str
    holder: str
    expires_at: datetime
    locked_until: datetime | None
    run_id: str | None
    response: StoredResponse | None
    taken_over: bool = False
    """Returned by `claim` to the request that took a lapsed claim over."""

    def lapsed(self, now: datetime) -> bool:
        """An unanswered claim whose request is taken for dead."""
        return self.response is None and (self.locked_until is None or self.locked_until <= now)


def _record(row: IdempotencyKey) -> KeyRecord:
    response = None
    if row.response_status is not None:
        response = StoredResponse.unpacked(
            row.response_status, row.response_headers, row.response_body, row.response_encoding
        )
    return KeyRecord(
        tenant=row.tenant,
        key=row.key,
        fingerprint=row.fingerprint,
        holder=row.holder,
        expires_at=row.expires_at,
        locked_until=row.locked_until,
        run_id=row.run_id,
        response=response,
    )


class IdempotencyStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def _insert(self) -> Any:
        return sqlite_insert if self.database.is_sqlite else pg_insert

    async def get(self, tenant: str, key: str) -> KeyRecord | None:
        async with self.database.transaction() as session:
            row = await session.get(IdempotencyKey, (tenant, key))
            return None if row is None else _record(row)

    async def claim(
        self,
        tenant: str,
        key: str,
        *,
        fingerprint: str,
        holder: str,
        now: datetime,
        lock_for: timedelta,
        keep_for: timedelta,
        run_id: str | None = None,
    ) -> KeyRecord:
        """Claim `key` for `holder`, or return what the key holds.

        The caller holds the key iff the returned record's holder is `holder`. Taken over: an
        expired row (by anyone), or a lapsed claim of the same request (its `run_id` is kept:
        the run the dead request may have started is the one this request must answer with).
        """
        locked_until, expires_at = now + lock_for, now + keep_for
        values: dict[str, Any] = {
            "tenant": tenant,
            "key": key,
            "fingerprint": fingerprint,
            "holder": holder,
            "locked_until": locked_until,
            "expires_at": expires_at,
            "created_at": now,
            "run_id": run_id,
        }
        async with self.database.transaction() as session:
            inserted = await session.execute(
                self._insert()(IdempotencyKey)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["tenant", "key"])
                .returning(IdempotencyKey.holder)
            )
            if inserted.scalar_one_or_none() is not None:
                return KeyRecord(
                    tenant=tenant,
                    key=key,
                    fingerprint=fingerprint,
                    holder=holder,
                    expires_at=expires_at,
                    locked_until=locked_until,
                    run_id=run_id,
                    response=None,
                )
            row = await session.get(IdempotencyKey, (tenant, key), populate_existing=True)
            if row is None:  # pruned between the two statements: the next attempt inserts
                return await self.claim(
                    tenant, key, fingerprint=fingerprint, holder=holder, now=now,
                    lock_for=lock_for, keep_for=keep_for, run_id=run_id,
                )  # fmt: skip
            existing = _record(row)
            if existing.expires_at <= now:
                changes: dict[str, Any] = {
                    **values,
                    "response_status": None,
                    "response_headers": None,
                    "response_body": None,
                    "response_encoding": None,
                }
            elif existing.lapsed(now) and existing.fingerprint == fingerprint:
                changes = {"holder": holder, "locked_until": now + lock_for}
                if existing.run_id is None:
                    changes["run_id"] = run_id
            else:
                return existing
            # Compare-and-set on the holder seen: of two takers, one wins, the other sees it.
            taken = await session.execute(
                update(IdempotencyKey)
                .where(
                    IdempotencyKey.tenant == tenant,
                    IdempotencyKey.key == key,
                    IdempotencyKey.holder == existing.holder,
                )
                .values(**changes)
                .returning(IdempotencyKey.holder)
                .execution_options(synchronize_session=False)
            )
            if taken.scalar_one_or_none() is None:
                fresh = await session.get(IdempotencyKey, (tenant, key), populate_existing=True)
                return existing if fresh is None else _record(fresh)
            await session.refresh(row)
            return replace(_record(row), taken_over="response_status" not in changes)

    async def complete(
        self, tenant: str, key: str, holder: str, response: StoredResponse
    ) -> KeyRecord | None:
        """Keep the answer, if `holder` still holds the key; what the key holds afterwards."""
        body, encoding = response.packed()
        async with self.database.transaction() as session:
            await session.execute(
                update(IdempotencyKey)
                .where(
                    IdempotencyKey.tenant == tenant,
                    IdempotencyKey.key == key,
                    IdempotencyKey.holder == holder,
                    IdempotencyKey.response_status.is_(None),
                )
                .values(
                    response_status=response.status,
                    response_headers=response.headers,
                    response_body=body,
                    response_encoding=encoding,
                    locked_until=None,
                )
                .execution_options(synchronize_session=False)
            )
            row = await session.get(IdempotencyKey, (tenant, key), populate_existing=True)
            return None if row is None else _record(row)

    async def release(self, tenant: str, key: str, holder: str) -> None:
        """Give the key up: the request failed in a way not worth replaying."""
        async with self.database.transaction() as session:
            await session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.tenant == tenant,
                    IdempotencyKey.key == key,
                    IdempotencyKey.holder == holder,
                    IdempotencyKey.response_status.is_(None),
                )
            )

    async def lapse(self, tenant: str, key: str, holder: str, now: datetime) -> None:
        """End `holder`'s lock now, keeping the claim (and its run id) for a takeover."""
        async with self.database.transaction() as session:
            await session.execute(
                update(IdempotencyKey)
                .where(
                    IdempotencyKey.tenant == tenant,
                    IdempotencyKey.key == key,
                    IdempotencyKey.holder == holder,
                    IdempotencyKey.response_status.is_(None),
                )
                .values(locked_until=now)
                .execution_options(synchronize_session=False)
            )

    async def prune(self, now: datetime) -> int:
        """Delete the expired keys; how many went."""
        async with self.database.transaction() as session:
            result = await session.execute(
                delete(IdempotencyKey)
                .where(IdempotencyKey.expires_at <= now)
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)
