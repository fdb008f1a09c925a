"""Helpers for the compiler tests: small packs built from dicts, and the example packs."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler import ManifestError, compile_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

BASE: dict[str, Any] = {
    "apiVersion": "stellaops.io/pack.v1",
    "kind": "TaskPack",
    "metadata": {"name": "test-pack", "version": "1.0.0"},
    "spec": {"steps": [{"id": "a", "run": {"uses": "builtin:noop"}}]},
}

# An unknown key (misspelt), a duplicate step id, a reference to a misspelt step and an unknown
# approval: each check used to stop the next (an unknown key hid everything after it).
ONE_PASS = """\
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata:
  name: demo
  version: 1.0.0
spec:
  approvals:
    - id: release
  steps:
    - id: build
      run:
        uses: builtin:noop
        timoutSeconds: 5
    - id: build
      run: {uses: builtin:noop}
    - id: ship
      when: "{{ steps.biuld.status == 'Succeeded' }}"
      gate:
        approval:
          id: relase
"""


def manifest(spec: Mapping[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A valid manifest dict: BASE with `spec` keys replaced and top-level keys overridden."""
    data = copy.deepcopy(BASE)
    data["spec"].update(copy.deepcopy(dict(spec or {})))
    data.update(top)
    return data


class _NoAliasDumper(yaml.SafeDumper):
    # The loader refuses aliases, so a dict used twice must be written out twice.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(data: Any, **options: Any) -> str:
    """YAML text for `data`, keys in the order given, never with anchors or aliases."""
    text: str = yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, **options)
    return text


def errors_of(text: str | bytes, inputs: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """The (path, message) pairs compiling `text` raises; fails the test when it compiles."""
    with pytest.raises(ManifestError) as info:
        compile_manifest(text, inputs)
    return [(e.path, e.message) for e in info.value.errors]


def paths_of(text: str | bytes, inputs: Mapping[str, Any] | None = None) -> list[str]:
    return [path for path, _ in errors_of(text, inputs)]


def example(name: str) -> str:
    return (EXAMPLES / name).read_text()
