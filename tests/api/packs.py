"""Packs the API tests run: small, fast, and made of builtin executors only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers import EXAMPLES

# The REST contract, shipped in the repo: the platform's, unchanged (tests/compiler/test_golden.py).
CONTRACT = Path(__file__).resolve().parents[2] / "contract" / "taskrunner-openapi.yaml"

ECHO = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: api-echo, version: 1.0.0}
spec:
  inputs:
    - {name: who, type: string, required: true}
  steps:
    - {id: hello, run: {uses: "builtin:echo", with: {greeting: "hello {{ inputs.who }}"}}}
    - {id: done, run: {uses: "builtin:noop"}}
"""

# The README's walk-through pack: build, wait for `release-manager` (grant packs.approve), release.
GATED = (EXAMPLES / "gate-approval.yaml").read_text()

SLOW = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: api-slow, version: 1.0.0}
spec:
  steps:
    - {id: wait, run: {uses: "builtin:sleep", with: {seconds: 60}}}
    - {id: after, run: {uses: "builtin:noop"}}
"""

# Fails at its first step with the executor's message; the second step is never reached.
FAILING = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: api-failing, version: 1.0.0}
spec:
  steps:
    - {id: build, run: {uses: "builtin:fail", with: {message: "compiler exploded"}}}
    - {id: after, run: {uses: "builtin:noop"}}
"""

MAP = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: api-map, version: 1.0.0}
spec:
  steps:
    - id: each
      map:
        items: "{{ inputs.items }}"
        step: {id: one, run: {uses: "builtin:noop"}}
  inputs:
    - {name: items, type: array, required: true}
"""

FILES = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: api-files, version: 1.0.0}
spec:
  steps:
    - id: write
      run:
        uses: builtin:shell
        with:
          command: 'mkdir -p out && printf "%s" "report body" > out/report.txt'
    - {id: facts, run: {uses: "builtin:echo", with: {answer: 42}}}
  outputs:
    - {name: report, type: file, path: out/report.txt}
    - {name: facts, type: object, expression: "{{ steps.facts.outputs }}"}
"""


def replaced(text: str, old: str, new: str) -> str:
    """`text` with `old` replaced, failing loudly if an edit of the pack made `old` disappear."""
    assert old in text, f"{old!r} is no longer in the pack"
    return text.replace(old, new)


def contract() -> dict[str, Any]:
    """The REST contract; the tests check the app against it, so its absence is a failure."""
    if not CONTRACT.is_file():
        raise AssertionError(f"the REST contract is missing: expected {CONTRACT}")
    document: dict[str, Any] = yaml.safe_load(CONTRACT.read_text())
    return document


def contract_example(path: str, name: str) -> dict[str, Any]:
    """A request example of a POST operation in the contract, by path and example name."""
    operation = contract()["paths"][path]["post"]
    value: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["examples"][
        name
    ]["value"]
    return value
