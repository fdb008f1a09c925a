"""The floors hold: which of our packages may import which, read from the source with `ast`.

- `compiler/` imports nothing of ours (it is the ground floor).
- `activities/` and `api/` reach `workflows/` only through its contract (`workflows.contract`).
- The contract imports nothing of ours beyond `compiler` and itself.
- Only the worker entry point (`workflows/worker.py`) imports both workflows (beyond the
  contract) and activities.
- `db/` (the API's database) imports nothing of ours: the API uses it, never the worker.
- No arrow points back up: cli → api → workflows → activities → compiler; `taskrunner` (the
  plugin surface) reaches only into activities, and none of ours imports it.

Every import counts, also those inside functions and `TYPE_CHECKING` blocks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("cli", "api", "db", "workflows", "activities", "compiler")
CONTRACT = "workflows.contract"
WORKER = "workflows.worker"
# What each package may import of ours; anything not listed points back up.
MAY_IMPORT = {
    "compiler": {"compiler"},
    "activities": {"activities", "compiler", "workflows"},
    "workflows": {"workflows", "activities", "compiler"},
    "api": {"api", "db", "workflows", "compiler"},
    "db": {"db"},
    "cli": set(OURS),
    # The plugin surface: it names what executors use, which lives in activities.
    "taskrunner": {"taskrunner", "activities"},
}


def imports_of(source: str) -> Iterator[str]:
    """The absolute module names a module's source imports (`from a.b import c` gives `a.b`)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def package_of(module: str) -> str:
    return module.split(".", 1)[0]


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def problems(module: str, source: str) -> list[str]:
    """How the module `module`, with this source, breaks the rules (empty when it keeps them)."""
    home = package_of(module)
    found: list[str] = []
    ours = [m for m in imports_of(source) if package_of(m) in OURS]
    for target in ours:
        where = package_of(target)
        if where not in MAY_IMPORT[home]:
            found.append(f"{module} imports {target}: {home} may not import {where}")
        elif home in ("activities", "api") and where == "workflows":
            if not within(target, CONTRACT):
                found.append(f"{module} imports {target}, not through {CONTRACT}")
        elif within(module, CONTRACT) and where != "compiler" and not within(target, CONTRACT):
            found.append(f"the contract module {module} imports {target}")
    # The contract is the neutral ground both sides stand on: importing it is not reaching in.
    reaches = {package_of(m) for m in ours if not within(m, CONTRACT)}
    if module != WORKER and (
        (home == "workflows" and "activities" in reaches) or {"workflows", "activities"} <= reaches
    ):
        found.append(f"{module} imports activities: only {WORKER} wires workflows to activities")
    return found


def our_modules() -> Iterator[tuple[str, Path]]:
    for package in OURS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def test_every_module_keeps_the_import_rules() -> None:
    modules = list(our_modules())
    assert len(modules) > 50  # the walk found the tree
    found = [p for name, path in modules for p in problems(name, path.read_text())]
    assert found == []


def test_the_worker_entry_point_is_the_one_that_wires_both() -> None:
    reaches = {package_of(m) for m in imports_of((ROOT / "workflows/worker.py").read_text())}
    assert {"workflows", "activities"} <= reaches


@pytest.mark.parametrize(
    ("module", "source", "complaint"),
    [
        ("compiler.plan", "from workflows.contract.state import RunStatus", "may not import"),
        ("api.routes.runs", "from workflows.run_book import RunBook", "not through"),
        ("activities.webhooks", "import workflows.pack_run", "not through"),
        ("api.gateway", "from activities.signing import mint_token", "may not import"),
        ("workflows.interpreter", "from activities.registry import Registry", "only"),
        ("workflows.contract.state", "from workflows.run_book import iso", "contract module"),
        ("activities.executor", "from api.errors import ApiError", "may not import"),
        (
            "cli.service_commands",
            "def f():\n    from workflows.pack_run import PackRun\n    import activities.registry",
            "only",
        ),
    ],
)
def test_a_broken_rule_is_caught(module: str, source: str, complaint: str) -> None:
    found = problems(module, source)
    assert found and complaint in found[0]


def test_imports_through_the_contract_are_allowed() -> None:
    source = "from workflows.contract.activities import RunStepRequest\nfrom compiler import plan"
    assert problems("activities.step_activities", source) == []
    assert problems("api.gateway", "from workflows.contract import names") == []
