"""The tables. Every change here comes with a migration in db/migrations/versions (see `db`).

Times are stored as UTC and always come back timezone-aware (`UTCDateTime`), on SQLite too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Constraint names Alembic can find again on every database (SQLite included).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TENANT_LENGTH = 63
"""api.deps.TENANT_PATTERN allows at most 63 characters."""


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored in UTC: SQLite keeps no zone, so it is put back on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: give the database aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class IdempotencyKey(Base):
    """One Idempotency-Key of a tenant: claimed by the insert (the primary key decides a race),
    then completed with the answer. Without `response_status` it is still being served by
    `holder` until `locked_until`; after that another request with the key may take it over.

    `run_id`: the run a create under this key starts, written with the claim, before the start,
    so every later request under the key (a takeover, a replay after the answer was lost) starts
    or finds that one run and never another.
    """

    __tablename__ = "idempotency_keys"

    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(80))
    holder: Mapped[str] = mapped_column(String(32))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    run_id: Mapped[str | None] = mapped_column(String(128))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSON)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    response_encoding: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)


class Webhook(Base):
    """A tenant's webhook registration; the secret only as Fernet ciphertext
    (`activities.signing.encrypt_secret`)."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (Index("ix_webhooks_tenant_created_at", "tenant", "created_at"),)


class PackVersion(Base):
    """One published version of a tenant's pack (the registry). Immutable but for `status`:
    the manifest, its digest and signature never change once written."""

    __tablename__ = "pack_versions"

    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    digest: Mapped[str] = mapped_column(String(71))
    """`sha256:` and 64 hex digits of the manifest's bytes."""
    manifest: Mapped[str] = mapped_column(Text)
    signature: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The DSSE envelope it was published with, if any."""
    signed_by: Mapped[str | None] = mapped_column(String(128))
    """Key id of the trusted key that verified the signature."""
    status: Mapped[str] = mapped_column(String(16))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_by: Mapped[str | None] = mapped_column(String(255))
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status_changed_by: Mapped[str | None] = mapped_column(String(255))


class RunRedrive(Base):
    """A redrive: `redrive_id` is a new run that took over what `run_id` had done. Kept here
    because the redriven run has ended, and an ended workflow takes no more changes."""

    __tablename__ = "run_redrives"

    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    redrive_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ScheduleRecord(Base):
    """A tenant's schedule of a registered pack. The Temporal Schedule does the firing and holds
    whether it is paused; this row is what the API lists and what each firing runs."""

    __tablename__ = "schedules"

    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pack_name: Mapped[str] = mapped_column(String(200))
    pack_version: Mapped[str] = mapped_column(String(100))
    pack_digest: Mapped[str] = mapped_column(String(71))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    overlap: Mapped[str] = mapped_column(String(32))
    catchup_window_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(255))
