"""The executors installed beside this command: the catalog packs are checked against.

Builtins and `taskrunner.executors` entry points, with their parameter schemas. The API and the
worker are one installation (one image), so these are the executors the worker runs. Found here,
at the entry point, and handed to the API as data: the API itself imports nothing of
`activities/` (tests/test_imports.py).
"""

from __future__ import annotations

from compiler.executors import ExecutorCatalog


def installed_executors() -> ExecutorCatalog:
    from activities.registry import Registry

    return Registry().catalog()
