"""The executor registry: builtins, lazily loaded entry points, and clear failures."""

from __future__ import annotations

import sys
import uuid
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from activities.executor import ExecutorContext, StepFailed
from activities.registry import (
    ENTRY_POINT_GROUP,
    ExecutorLoadError,
    ExecutorNotFound,
    Registry,
)

BUILTIN_NAMES = ["echo", "fail", "http", "noop", "shell", "sleep"]


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    name = f"tr_test_plugin_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


PLUGIN = """
async def greet(params, ctx):
    return {"greeting": "hello " + params["who"], "step": ctx.step_id}

def not_async(params, ctx):
    return {}
"""


def test_builtins_are_registered() -> None:
    registry = Registry(entry_points=[])
    assert registry.names() == [f"builtin:{n}" for n in BUILTIN_NAMES]
    assert "builtin:shell" in registry
    assert callable(registry.get("builtin:echo"))


def test_unknown_uses_is_a_permanent_failure_listing_known() -> None:
    registry = Registry(entry_points=[])
    with pytest.raises(ExecutorNotFound, match=r"builtin:nope.*known: builtin:echo") as caught:
        registry.get("builtin:nope")
    assert isinstance(caught.value, StepFailed)


async def test_entry_point_loaded_lazily(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_ctx: Any
) -> None:
    module = _module(tmp_path, monkeypatch, PLUGIN)
    ep = EntryPoint(name="greet", value=f"{module}:greet", group=ENTRY_POINT_GROUP)
    registry = Registry(builtins={}, entry_points=[ep])
    assert registry.names() == ["custom:greet"]
    assert module not in sys.modules  # listed, not imported

    executor = registry.get("custom:greet")
    ctx: ExecutorContext = make_ctx(uses="custom:greet", step_id="hi")
    assert await executor({"who": "ops"}, ctx) == {"greeting": "hello ops", "step": "hi"}
    assert registry.get("custom:greet") is executor


def test_broken_entry_point_fails_only_its_steps() -> None:
    broken = EntryPoint(name="broken", value="tr_no_such_module_xyz:run", group=ENTRY_POINT_GROUP)
    registry = Registry(entry_points=[broken])
    assert "custom:broken" in registry.names()
    assert callable(registry.get("builtin:noop"))
    with pytest.raises(ExecutorLoadError, match=r"custom:broken.*ModuleNotFoundError"):
        registry.get("custom:broken")


def test_entry_point_that_is_not_async_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _module(tmp_path, monkeypatch, PLUGIN)
    ep = EntryPoint(name="sync", value=f"{module}:not_async", group=ENTRY_POINT_GROUP)
    with pytest.raises(ExecutorLoadError, match="not an async callable"):
        Registry(entry_points=[ep]).get("custom:sync")


def test_installed_distribution_is_discovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _module(tmp_path, monkeypatch, PLUGIN)
    dist = tmp_path / "tr_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tr-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ngreet = {module}:greet\n")
    registry = Registry()
    assert "custom:greet" in registry.names()
    assert "builtin:shell" in registry.names()
    assert callable(registry.get("custom:greet"))


def test_register_programmatically() -> None:
    async def custom(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
        return {}

    registry = Registry(builtins={}, entry_points=[])
    registry.register("custom:inline", custom)
    assert registry.get("custom:inline") is custom
    with pytest.raises(ValueError, match="must start with"):
        registry.register("inline", custom)


DECLARING_PLUGIN = """
from pydantic import BaseModel, ConfigDict

class ScanParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str
    depth: int = 1

async def scan(params, ctx):
    return {"findings": 0}

scan.params = ScanParams

async def build(params, ctx):
    return {}

build.params_schema = {"type": "object", "properties": {"ref": {"type": "string"}}}

async def free(params, ctx):
    return {}
"""


def test_catalog_has_builtin_and_declared_schemas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _module(tmp_path, monkeypatch, DECLARING_PLUGIN)
    eps = [
        # Named with its prefix, an entry point provides what packs call a builtin.
        EntryPoint(name="builtin:scanner", value=f"{module}:scan", group=ENTRY_POINT_GROUP),
        EntryPoint(name="build", value=f"{module}:build", group=ENTRY_POINT_GROUP),
        EntryPoint(name="free", value=f"{module}:free", group=ENTRY_POINT_GROUP),
        EntryPoint(name="broken", value=f"{module}:nothing", group=ENTRY_POINT_GROUP),
    ]
    catalog = Registry(entry_points=eps).catalog()
    assert catalog["builtin:sleep"] is not None
    assert catalog["builtin:sleep"]["required"] == ["seconds"]
    assert catalog["builtin:echo"] is None  # takes any `with`
    scanner = catalog["builtin:scanner"]
    assert scanner is not None and scanner["required"] == ["target"]
    assert scanner["additionalProperties"] is False
    assert catalog["custom:build"] == {
        "type": "object",
        "properties": {"ref": {"type": "string"}},
    }
    assert catalog["custom:free"] is None
    assert catalog["custom:broken"] is None  # listed: its steps fail when they run, as before
