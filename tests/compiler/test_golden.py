"""Golden manifest -> plan checks: the compiled plan of some examples, field by field.

The plan is a wire format that running histories replay, so any change to these files is a change
to the format: review it as one. Regenerate with `TASKRUNNER_UPDATE_GOLDEN=1 pytest tests/compiler`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from compiler import compile_manifest
from compiler.hashing import plan_document
from compiler.plan import SCHEMA_VERSION
from tests.compiler.packs import EXAMPLES, example

GOLDEN = Path(__file__).resolve().parent / "golden"
MODELINE = "# yaml-language-server: $schema="

CASES: list[tuple[str, dict[str, Any] | None]] = [
    ("contract/create-run.yaml", None),
    ("run.yaml", {"name": "Ada", "times": 3}),
    ("loop.yaml", None),
    ("nested.yaml", {"hosts": ["h1"]}),
]


@pytest.mark.parametrize(("name", "inputs"), CASES, ids=[c[0] for c in CASES])
def test_golden_plan(name: str, inputs: dict[str, Any] | None) -> None:
    compiled = compile_manifest(example(name), inputs)
    got = {"planHash": compiled.plan_hash, "plan": plan_document(compiled.plan)}
    path = GOLDEN / (Path(name).stem + ".plan.json")
    if os.environ.get("TASKRUNNER_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n")
    assert got == json.loads(path.read_text())


def test_plan_defaults_are_resolved() -> None:
    plan = plan_document(compile_manifest(example("run.yaml"), {"name": "Ada"}).plan)
    assert plan["schemaVersion"] == SCHEMA_VERSION
    assert plan["inputs"] == {"name": "Ada", "times": 2}  # the default filled in
    greet, pause, shout, _ = plan["steps"]
    assert greet["timeoutSeconds"] == 3600  # the default run timeout
    assert greet["maxAttempts"] == 1  # from the pack's failure policy
    assert (shout["maxAttempts"], shout["backoffSeconds"]) == (2, 1)  # the step's own retries
    assert pause["with"] == {"seconds": 0.2}


def test_every_example_compiles() -> None:
    names = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.yaml"))
    assert len(names) >= 10
    for name in names:
        inputs = {"name": "Ada"} if name == "run.yaml" else None
        if name == "contract/basic-simulation.yaml":
            inputs = {"target": "x"}
        compile_manifest(example(name), inputs)


def test_examples_say_what_they_show() -> None:
    for path in EXAMPLES.glob("*.yaml"):
        # Below the editor's schema line (tests/compiler/test_schema.py), a comment saying what.
        lines = path.read_text().splitlines()
        assert lines[0].startswith(MODELINE) and lines[1].startswith("# "), path.name


def test_contract_examples_are_unchanged_copies() -> None:
    shared = Path("/work/shared/contract/examples")
    if not shared.is_dir():
        pytest.skip("the shared contract folder is not mounted here")
    for path in shared.glob("*.yaml"):
        # The contract's bytes, below the line that points editors at the schema.
        ours = (EXAMPLES / "contract" / path.name).read_bytes()
        modeline, _, copied = ours.partition(b"\n")
        assert modeline.decode().startswith(MODELINE), path.name
        assert copied == path.read_bytes(), path.name
    # The contract the API tests check the served spec against is the platform's, unchanged.
    repo_contract = EXAMPLES.parent / "contract" / "taskrunner-openapi.yaml"
    assert repo_contract.read_bytes() == (shared.parent / "taskrunner-openapi.yaml").read_bytes()
