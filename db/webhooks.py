"""Webhook registrations in the database, the secret only as ciphertext.

A run takes its tenant's registrations at start, in its workflow input (`RunMeta.webhooks`):
the worker's delivery activity never reads the database, so workers need no database access and
a run delivers to exactly the webhooks that were registered when it started.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError

from db.engine import Database
from db.models import Webhook

MAX_WEBHOOKS = 50
"""Registrations per tenant: each run carries all of them in its input."""


class WebhookExists(Exception):
    """A registration with this id exists."""


class TooManyWebhooks(Exception):
    """The tenant has MAX_WEBHOOKS registrations already."""


@dataclass(frozen=True)
class Registration:
    id: str
    tenant: str
    url: str
    events: list[str]
    secret_ciphertext: str
    created_at: datetime
    created_by: str | None = None


def _registration(row: Webhook) -> Registration:
    return Registration(
        id=row.id,
        tenant=row.tenant,
        url=row.url,
        events=list(row.events),
        secret_ciphertext=row.secret_ciphertext,
        created_at=row.created_at,
        created_by=row.created_by,
    )


class WebhookStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def list(self, tenant: str) -> list[Registration]:
        """The tenant's registrations, oldest first."""
        async with self.database.transaction() as session:
            rows = await session.scalars(
                select(Webhook)
                .where(Webhook.tenant == tenant)
                .order_by(Webhook.created_at, Webhook.id)
            )
            return [_registration(row) for row in rows]

    async def get(self, tenant: str, webhook_id: str) -> Registration | None:
        async with self.database.transaction() as session:
            row = await session.get(Webhook, webhook_id)
            return None if row is None or row.tenant != tenant else _registration(row)

    async def add(self, registration: Registration) -> Registration:
        """Register; WebhookExists if the id is taken, TooManyWebhooks at the limit."""
        try:
            async with self.database.transaction() as session:
                if not self.database.is_sqlite:
                    # Registrations of one tenant take turns, so the limit holds under races
                    # (SQLite's transactions take turns anyway: BEGIN IMMEDIATE).
                    await session.execute(
                        text("SELECT pg_advisory_xact_lock(hashtext(:tenant))"),
                        {"tenant": f"webhooks/{registration.tenant}"},
                    )
                count = await session.scalar(
                    select(func.count())
                    .select_from(Webhook)
                    .where(Webhook.tenant == registration.tenant)
                )
                if (count or 0) >= MAX_WEBHOOKS:
                    raise TooManyWebhooks(
                        f"tenant {registration.tenant!r} already has {MAX_WEBHOOKS} webhooks"
                    )
                session.add(
                    Webhook(
                        id=registration.id,
                        tenant=registration.tenant,
                        url=registration.url,
                        events=list(registration.events),
                        secret_ciphertext=registration.secret_ciphertext,
                        created_at=registration.created_at,
                        created_by=registration.created_by,
                    )
                )
        except IntegrityError:
            raise WebhookExists(f"webhook {registration.id!r} exists") from None
        return registration

    async def delete(self, tenant: str, webhook_id: str) -> bool:
        """Delete the tenant's webhook; False if it has none of that id."""
        async with self.database.transaction() as session:
            result = await session.execute(
                delete(Webhook)
                .where(Webhook.id == webhook_id, Webhook.tenant == tenant)
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0))
