"""The API's side of its database (`db`): opened when the app starts, closed when it stops.

On start, an embedded SQLite database is brought up to date (`taskrunner dev` needs no step of
its own); any other database must already be at this code's schema (`taskrunner db upgrade`
runs first, as docker-compose does), else the API refuses to start. A database that cannot be
reached at start is logged, and each request that needs it is a 503 with Retry-After until it
can be (`/readyz` says why).

Expired idempotency keys are pruned every PRUNE_EVERY while the app runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.errors import DatabaseUnavailable
from api.settings import ApiSettings
from db.engine import Database, database_url, redacted
from db.idempotency import IdempotencyStore
from db.migrate import SchemaOutOfDate, check, upgrade
from db.packs import PackStore
from db.redrives import RedriveStore
from db.schedules import ScheduleStore
from db.webhooks import WebhookStore

log = structlog.get_logger("taskrunner.api")

PRUNE_EVERY = 600.0
READY_TIMEOUT = 3.0

UNAVAILABLE: tuple[type[BaseException], ...] = (DBAPIError, PoolTimeout, OSError, TimeoutError)
"""What a database out of reach (or overloaded) raises: a 503, never a 500. An IntegrityError
(a DBAPIError too) is the stores' to handle; one that escapes them is a bug, and not caught."""


@contextlib.contextmanager
def available() -> Iterator[None]:
    """Turn the database being out of reach into a 503 with Retry-After."""
    try:
        yield
    except UNAVAILABLE as exc:
        from sqlalchemy.exc import IntegrityError

        if isinstance(exc, IntegrityError):
            raise
        log.warning("database.unavailable", error=str(exc).splitlines()[0][:300])
        raise DatabaseUnavailable("the database did not answer; retry shortly") from None


class ApiDatabase:
    def __init__(self, url: str) -> None:
        self.database = Database(url)
        self.keys = IdempotencyStore(self.database)
        self.webhooks = WebhookStore(self.database)
        self.packs = PackStore(self.database)
        self.redrives = RedriveStore(self.database)
        self.schedules = ScheduleStore(self.database)
        self._pruner: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> ApiDatabase:
        return cls(database_url(settings))

    async def open(self) -> None:
        """Migrate SQLite, check any other database; SchemaOutOfDate stops the start."""
        where = redacted(self.database.url)
        try:
            if self.database.is_sqlite:
                before, after = await upgrade(self.database)
                if before != after:
                    log.info("database.migrated", database=where, before=before, after=after)
            else:
                await check(self.database)
        except SchemaOutOfDate:
            raise
        except UNAVAILABLE as exc:
            log.warning(
                "database.unreachable", database=where, error=str(exc).splitlines()[0][:300]
            )
        else:
            log.info("database.ready", database=where)
        self._pruner = asyncio.create_task(self._prune_forever(), name="idempotency-pruner")

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        await self.database.dispose()

    async def ready(self) -> str | None:
        """None when the database answers at this code's schema, else why not."""
        try:
            await asyncio.wait_for(check(self.database), READY_TIMEOUT)
        except SchemaOutOfDate as exc:
            return str(exc)
        except UNAVAILABLE as exc:
            return f"the database {redacted(self.database.url)} did not answer: " + (
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            )
        return None

    async def _prune_forever(self) -> None:
        while True:
            try:
                pruned = await self.keys.prune(datetime.now(UTC))
                if pruned:
                    log.info("idempotency.pruned", keys=pruned)
            except UNAVAILABLE as exc:
                log.warning("idempotency.prune-failed", error=str(exc).splitlines()[0][:200])
            await asyncio.sleep(PRUNE_EVERY)
