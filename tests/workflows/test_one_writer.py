"""RunBook is the one writer of run state: the Interpreter and PackRun read it and call it.

Read from the source with `ast`: outside a constructor, neither module assigns to an attribute
or to an item of one (`book.status = ...`, `state.outputs = ...`, `self.gates[rid] = ...`), and
neither calls a mutating method on something the RunBook holds (`book.artifacts.extend(...)`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READERS = ("workflows/interpreter.py", "workflows/pack_run.py")
MUTATORS = {"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault"}
# The workflow's own machinery, not run state: the task running the plan, set as it starts.
ALLOWED = {("run", "self._task")}


def _targets(node: ast.AST) -> list[ast.expr]:
    match node:
        case ast.Assign(targets=targets):
            found = []
            for target in targets:
                found += target.elts if isinstance(target, ast.Tuple | ast.List) else [target]
            return found
        case ast.AugAssign(target=target) | ast.AnnAssign(target=target):
            return [target]
    return []


def _reaches_book(node: ast.expr) -> bool:
    """Whether an expression starts from the RunBook (`book.x`, `self.book.x`, `book.step(..)`)."""
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
        if isinstance(node, ast.Attribute) and node.attr == "book":
            return True
        if isinstance(node, ast.Name) and node.id == "book":
            return True
    return False


def writes(source: str) -> list[str]:
    """Where a module writes state itself instead of calling the RunBook."""
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if function.name == "__init__":
            continue
        for node in ast.walk(function):
            for target in _targets(node):
                # An item of a local value being built (`event["x"] = ...`) is no run state.
                local_item = isinstance(target, ast.Subscript) and isinstance(
                    target.value, ast.Name
                )
                if isinstance(target, ast.Attribute | ast.Subscript) and not local_item:
                    text = ast.unparse(target)
                    if (function.name, text) not in ALLOWED:
                        found.append(f"{function.name}: {text} = ...")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in MUTATORS
                and _reaches_book(node.func.value)
            ):
                found.append(f"{function.name}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", READERS)
def test_interpreter_and_pack_run_never_write_run_state(path: str) -> None:
    assert writes((ROOT / path).read_text()) == []


@pytest.mark.parametrize(
    "line",
    [
        "book.status = 'running'",
        "self.book.cancel_requested = True",
        "state.outputs = {}",
        "self.book.step(rid).nextAttemptAt = stamp",
        "self.open_gates[rid] = approval_id",
        "frame.local[step.id] = result",
        "book.next_step_index += 1",
        "self.book.artifacts.extend(records)",
        "book.step(rid).outputs.update(more)",
    ],
)
def test_a_write_is_caught(line: str) -> None:
    assert writes(f"def f(self, book, state, frame):\n    {line}\n") != []


def test_reading_and_calling_is_not_a_write() -> None:
    source = (
        "def f(self, book, rid):\n"
        "    outputs = dict(book.step(rid).outputs)\n"
        "    book.record_outputs(rid, outputs)\n"
        "    self._deliveries.append(task)\n"
    )
    assert writes(source) == []
