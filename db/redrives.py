"""Which runs redrove which: the redriven run has ended, so its state cannot record it itself."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.engine import Database
from db.models import RunRedrive


class RedriveStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def add(self, tenant: str, run_id: str, redrive_id: str) -> None:
        """Record a redrive (again is no error: a retried request records it once)."""
        with contextlib.suppress(IntegrityError):
            async with self.database.transaction() as session:
                session.add(
                    RunRedrive(
                        tenant=tenant,
                        run_id=run_id,
                        redrive_id=redrive_id,
                        created_at=datetime.now(UTC),
                    )
                )

    async def of(self, tenant: str, run_id: str) -> list[str]:
        """The runs that redrove `run_id`, oldest first."""
        async with self.database.transaction() as session:
            rows = await session.scalars(
                select(RunRedrive)
                .where(RunRedrive.tenant == tenant, RunRedrive.run_id == run_id)
                .order_by(RunRedrive.created_at, RunRedrive.redrive_id)
            )
            return [row.redrive_id for row in rows]
