"""The pack registry's store: published versions of a tenant's packs.

A version is written once (the primary key, tenant + name + version, decides a race between two
publishers) and never changes but for its status, `active` or `disabled`. Listing orders by name,
then version, highest first: semantic versions by precedence (`semver`), anything that is no
semantic version after them, by text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import semver
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.engine import Database
from db.models import PackVersion

PackStatus = Literal["active", "disabled"]


class PackVersionExists(Exception):
    """name@version is published already, with other content."""

    def __init__(self, existing: PackRecord) -> None:
        self.existing = existing
        super().__init__(
            f"{existing.name}@{existing.version} is published already with digest "
            f"{existing.digest}; versions are immutable: publish a new version"
        )


@dataclass(frozen=True)
class PackRecord:
    tenant: str
    name: str
    version: str
    digest: str
    manifest: str
    status: PackStatus
    published_at: datetime
    published_by: str | None
    signature: dict[str, Any] | None = None
    signed_by: str | None = None


def _record(row: PackVersion) -> PackRecord:
    return PackRecord(
        tenant=row.tenant,
        name=row.name,
        version=row.version,
        digest=row.digest,
        manifest=row.manifest,
        status="disabled" if row.status == "disabled" else "active",
        published_at=row.published_at,
        published_by=row.published_by,
        signature=row.signature,
        signed_by=row.signed_by,
    )


def version_order(version: str) -> tuple[int, Any]:
    """A sort key: higher versions sort later. Semantic versions (a missing minor or patch reads
    as 0) above anything else, which compares by text."""
    try:
        parsed = semver.Version.parse(version, optional_minor_and_patch=True)
    except ValueError:
        return (0, version)
    return (1, parsed)


def listing_order(records: list[PackRecord]) -> list[PackRecord]:
    """By name, then by version, highest first."""
    by_version = sorted(records, key=lambda r: _Desc(version_order(r.version)))
    return sorted(by_version, key=lambda r: r.name)


class _Desc:
    # A key wrapper that reverses order, so one stable sort gives name ascending, version
    # descending without negating semver objects.
    __slots__ = ("key",)

    def __init__(self, key: tuple[int, Any]) -> None:
        self.key = key

    def __lt__(self, other: _Desc) -> bool:
        mine, theirs = self.key, other.key
        if mine[0] != theirs[0]:
            return mine[0] > theirs[0]
        return bool(mine[1] > theirs[1])


class PackStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def publish(self, record: PackRecord) -> tuple[PackRecord, bool]:
        """Publish; returns (the record, whether it is new). The same content again answers the
        existing record; other content under a published name@version is PackVersionExists."""
        try:
            async with self.database.transaction() as session:
                session.add(
                    PackVersion(
                        tenant=record.tenant,
                        name=record.name,
                        version=record.version,
                        digest=record.digest,
                        manifest=record.manifest,
                        signature=record.signature,
                        signed_by=record.signed_by,
                        status=record.status,
                        published_at=record.published_at,
                        published_by=record.published_by,
                    )
                )
            return record, True
        except IntegrityError:
            existing = await self.get(record.tenant, record.name, record.version)
            if existing is None:  # deleted in between: cannot happen, versions are never deleted
                raise
            if existing.digest != record.digest:
                raise PackVersionExists(existing) from None
            return existing, False

    async def get(self, tenant: str, name: str, version: str) -> PackRecord | None:
        async with self.database.transaction() as session:
            row = await session.get(PackVersion, (tenant, name, version))
            return None if row is None else _record(row)

    async def versions(self, tenant: str, name: str | None = None) -> list[PackRecord]:
        """The tenant's versions (of one pack, with `name`) in listing order."""
        query = select(PackVersion).where(PackVersion.tenant == tenant)
        if name is not None:
            query = query.where(PackVersion.name == name)
        async with self.database.transaction() as session:
            rows = await session.scalars(query)
            return listing_order([_record(row) for row in rows])

    async def highest_active(self, tenant: str, name: str) -> PackRecord | None:
        return next((r for r in await self.versions(tenant, name) if r.status == "active"), None)

    async def set_status(
        self, tenant: str, name: str, version: str, status: PackStatus, actor: str | None
    ) -> PackRecord | None:
        """Enable or disable a version; None when it does not exist."""
        async with self.database.transaction() as session:
            row = await session.get(PackVersion, (tenant, name, version), with_for_update=True)
            if row is None:
                return None
            if row.status != status:
                row.status = status
                row.status_changed_at = datetime.now(UTC)
                row.status_changed_by = actor
            return _record(row)
