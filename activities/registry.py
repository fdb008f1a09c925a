"""The executor registry: which callable runs a step's `uses`.

Builtins are registered as `builtin:NAME`. Custom executors come from installed distributions
through the entry point group `taskrunner.executors`: an entry point named NAME becomes
`custom:NAME` (one named `builtin:NAME` or `custom:NAME` keeps its name), e.g. in a plugin's
pyproject.toml

    [project.entry-points."taskrunner.executors"]
    scan = "my_plugin.executors:scan"

Entry points are loaded on first use, not at start-up, so one broken plugin cannot stop a worker
and only steps that use it fail (permanently, with the import error in the message).

An executor declares the parameters it takes (its `with`) as a `params` attribute holding a
pydantic model (see `activities.executor.Params`), or a `params_schema` attribute holding a
JSON Schema. `catalog()` gives the compiler those schemas as data, so a pack that names an
executor the service lacks, or passes it a wrong `with`, is refused before anything runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel

from activities.executor import Executor, StepFailed

ENTRY_POINT_GROUP = "taskrunner.executors"
BUILTIN_PREFIX = "builtin:"
CUSTOM_PREFIX = "custom:"


class ExecutorNotFound(StepFailed):
    """A `uses` this worker has no executor for."""


class ExecutorLoadError(StepFailed):
    """A custom executor whose entry point could not be loaded or is not an async callable."""


class Registry:
    """Maps `uses` values to executors.

    `builtins` defaults to this package's builtin executors (keyed by bare NAME);
    `entry_points` defaults to the installed `taskrunner.executors` entry points. Passing either
    explicitly replaces the default, which is how tests and embedders pin what a worker runs.
    """

    def __init__(
        self,
        builtins: Mapping[str, Executor] | None = None,
        entry_points: Iterable[EntryPoint] | None = None,
    ) -> None:
        self._schemas: dict[str, dict[str, Any] | None] = {}
        if builtins is None:
            from activities.builtins import BUILTINS, PARAMS

            builtins = BUILTINS
            self._schemas = {
                BUILTIN_PREFIX + name: model.model_json_schema() if model else None
                for name, model in PARAMS.items()
            }
        if entry_points is None:
            entry_points = discover_entry_points()
        self._loaded: dict[str, Executor] = {
            BUILTIN_PREFIX + name: fn for name, fn in builtins.items()
        }
        self._pending: dict[str, EntryPoint] = {}
        for ep in entry_points:
            # The first of two same-named entry points wins, as importlib lists them in
            # sys.path order, the same order an import would pick.
            # An entry point named with its prefix (`builtin:scanner`) keeps it: that is how
            # an operator provides executors that packs name as builtins.
            named = ep.name.startswith((BUILTIN_PREFIX, CUSTOM_PREFIX))
            self._pending.setdefault(ep.name if named else CUSTOM_PREFIX + ep.name, ep)

    def register(self, uses: str, executor: Executor) -> None:
        """Register (or replace) an executor under a full `uses` value."""
        if not uses.startswith((BUILTIN_PREFIX, CUSTOM_PREFIX)):
            raise ValueError(f"uses must start with {BUILTIN_PREFIX!r} or {CUSTOM_PREFIX!r}")
        self._pending.pop(uses, None)
        self._schemas.pop(uses, None)
        self._loaded[uses] = executor

    def catalog(self) -> dict[str, dict[str, Any] | None]:
        """Every known `uses` with the JSON Schema of its `with` (None: not declared), the
        compiler's executor catalog. Loads the custom executors' entry points to read their
        declarations; one that fails to load is listed without a schema (its steps fail when
        they run, with the import error, as before)."""
        out: dict[str, dict[str, Any] | None] = {}
        for uses in self.names():
            if uses in self._schemas:
                out[uses] = self._schemas[uses]
                continue
            try:
                executor: object = self.get(uses)
            except StepFailed:
                out[uses] = None
                continue
            out[uses] = declared_schema(executor)
        return out

    def names(self) -> list[str]:
        """Every known `uses` value, sorted (the compiler's `known_executors`)."""
        return sorted({*self._loaded, *self._pending})

    def __contains__(self, uses: object) -> bool:
        return uses in self._loaded or uses in self._pending

    def get(self, uses: str) -> Executor:
        """The executor for `uses`, loading its entry point on first use.

        Raises ExecutorNotFound or ExecutorLoadError, both permanent step failures.
        """
        if uses in self._loaded:
            return self._loaded[uses]
        ep = self._pending.get(uses)
        if ep is None:
            known = ", ".join(self.names()) or "none"
            raise ExecutorNotFound(f"no executor for uses {uses!r} on this worker (known: {known})")
        try:
            loaded = ep.load()
        except Exception as exc:
            raise ExecutorLoadError(
                f"custom executor {uses!r} (entry point {ep.value!r}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not (inspect.iscoroutinefunction(loaded) or _has_async_call(loaded)):
            raise ExecutorLoadError(
                f"custom executor {uses!r} (entry point {ep.value!r}) is not an async callable"
            )
        self._loaded[uses] = loaded
        del self._pending[uses]
        return self._loaded[uses]


def _has_async_call(obj: object) -> bool:
    call = getattr(obj, "__call__", None)  # noqa: B004 - an instance with an async __call__
    return not inspect.isclass(obj) and inspect.iscoroutinefunction(call)


def declared_schema(executor: object) -> dict[str, Any] | None:
    """The JSON Schema an executor declares for its `with` (`params` model or `params_schema`)."""
    model = getattr(executor, "params", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_json_schema()
    schema = getattr(executor, "params_schema", None)
    return dict(schema) if isinstance(schema, dict) else None


def discover_entry_points() -> list[EntryPoint]:
    """The installed `taskrunner.executors` entry points (not loaded)."""
    return list(entry_points(group=ENTRY_POINT_GROUP))
