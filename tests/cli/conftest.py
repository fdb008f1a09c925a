"""The CLI client's tests drive the same real stack as the API tests: dev server, worker, API."""

from __future__ import annotations

from tests.api.conftest import api_settings, http, stack, stacks

__all__ = ["api_settings", "http", "stack", "stacks"]
