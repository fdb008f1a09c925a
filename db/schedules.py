"""Schedules of registered packs: the API's record of each (the firing is Temporal's)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from db.engine import Database
from db.models import ScheduleRecord


class ScheduleExists(Exception):
    """The tenant has a schedule with this id."""


@dataclass(frozen=True)
class Schedule:
    tenant: str
    id: str
    pack_name: str
    pack_version: str
    pack_digest: str
    inputs: dict[str, Any]
    cron: str
    timezone: str
    overlap: str
    catchup_window_seconds: int
    created_at: datetime
    created_by: str | None


def _schedule(row: ScheduleRecord) -> Schedule:
    return Schedule(
        tenant=row.tenant,
        id=row.id,
        pack_name=row.pack_name,
        pack_version=row.pack_version,
        pack_digest=row.pack_digest,
        inputs=dict(row.inputs),
        cron=row.cron,
        timezone=row.timezone,
        overlap=row.overlap,
        catchup_window_seconds=row.catchup_window_seconds,
        created_at=row.created_at,
        created_by=row.created_by,
    )


class ScheduleStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def add(self, schedule: Schedule) -> None:
        """Record a schedule; ScheduleExists if the tenant has one with this id."""
        try:
            async with self.database.transaction() as session:
                session.add(
                    ScheduleRecord(
                        tenant=schedule.tenant,
                        id=schedule.id,
                        pack_name=schedule.pack_name,
                        pack_version=schedule.pack_version,
                        pack_digest=schedule.pack_digest,
                        inputs=schedule.inputs,
                        cron=schedule.cron,
                        timezone=schedule.timezone,
                        overlap=schedule.overlap,
                        catchup_window_seconds=schedule.catchup_window_seconds,
                        created_at=schedule.created_at,
                        created_by=schedule.created_by,
                    )
                )
        except IntegrityError:
            raise ScheduleExists(schedule.id) from None

    async def get(self, tenant: str, schedule_id: str) -> Schedule | None:
        async with self.database.transaction() as session:
            row = await session.get(ScheduleRecord, (tenant, schedule_id))
            return None if row is None else _schedule(row)

    async def list(self, tenant: str) -> list[Schedule]:
        async with self.database.transaction() as session:
            rows = await session.scalars(
                select(ScheduleRecord)
                .where(ScheduleRecord.tenant == tenant)
                .order_by(ScheduleRecord.id)
            )
            return [_schedule(row) for row in rows]

    async def remove(self, tenant: str, schedule_id: str) -> bool:
        async with self.database.transaction() as session:
            result = await session.execute(
                delete(ScheduleRecord).where(
                    ScheduleRecord.tenant == tenant, ScheduleRecord.id == schedule_id
                )
            )
            return bool(getattr(result, "rowcount", 0))
