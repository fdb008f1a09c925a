"""The app's one Temporal client.

Opened when the app starts. If Temporal is not reachable then, the API still starts (so
`/healthz` answers and `/readyz` says why it is not ready) and connects on the first request
that needs Temporal; until then such requests get a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import structlog
from temporalio.client import Client, Interceptor

from api.errors import TemporalUnavailable
from workflows.contract.settings import SharedSettings, connect

log = structlog.get_logger("taskrunner.api")

READY_TIMEOUT = timedelta(seconds=3)


class TemporalConnection:
    def __init__(self, settings: SharedSettings, interceptors: Sequence[Interceptor] = ()) -> None:
        self.settings = settings
        self.interceptors = list(interceptors)
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Connect at start-up; a failure is logged, not raised."""
        try:
            await self.client()
        except TemporalUnavailable as exc:
            log.warning(
                "temporal.unreachable", address=self.settings.temporal_address, error=exc.message
            )

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await connect(self.settings, self.interceptors)
                except Exception as exc:  # the SDK raises RuntimeError for connect failures
                    raise TemporalUnavailable(
                        f"cannot reach Temporal at {self.settings.temporal_address}: "
                        f"{str(exc).splitlines()[0][:200]}"
                    ) from None
                log.info(
                    "temporal.connected",
                    address=self.settings.temporal_address,
                    namespace=self.settings.temporal_namespace,
                )
        return self._client

    async def ready(self) -> str | None:
        """None when Temporal answers a health check, else why not."""
        try:
            client = await self.client()
            healthy = await client.service_client.check_health(timeout=READY_TIMEOUT)
        except TemporalUnavailable as exc:
            return exc.message
        except Exception as exc:
            return f"Temporal health check failed: {str(exc).splitlines()[0][:200]}"
        return None if healthy else "Temporal reports it is not serving"
