"""The manifest's JSON Schema (compiler/schema.py): the committed copy is the generated one, every
example names it on its first line and validates against it, wrong manifests fail it, and it never
accepts what the compiler's models refuse."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from compiler import ManifestError, compile_manifest, load_manifest
from compiler.loader import load_yaml
from compiler.schema import COMMITTED_PATH, manifest_schema, manifest_schema_text
from tests.compiler.conftest import CliRunner
from tests.compiler.packs import BASE, EXAMPLES, ROOT, dump
from tests.compiler.test_properties import PROPERTY

COMMITTED = ROOT / COMMITTED_PATH
MODELINE = "# yaml-language-server: $schema="
ALL_EXAMPLES = sorted(EXAMPLES.rglob("*.yaml"))
CORPUS = sorted((ROOT / "tests" / "corpus" / "manifests").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(COMMITTED.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(validator: Draft202012Validator, data: Any) -> list[str]:
    return sorted(
        "/".join(str(p) for p in e.absolute_path) + ": " + e.message
        for e in validator.iter_errors(data)
    )


def builtins() -> dict[str, Any]:
    """The builtin executors' catalog, whatever plugins this machine has installed."""
    from activities.registry import Registry

    return Registry(entry_points=[]).catalog()


def test_the_committed_schema_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == manifest_schema_text(builtins()), (
        "the models or the builtins' parameters changed: regenerate with "
        "`taskrunner schema -o schema/taskpack.schema.json`"
    )
    assert manifest_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_examples_are_found() -> None:
    assert len(ALL_EXAMPLES) >= 10 and any(p.parent.name == "contract" for p in ALL_EXAMPLES)


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_names_the_schema_and_validates(
    path: Path, validator: Draft202012Validator
) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith(MODELINE), f"{path.name}: first line is {first!r}"
    # Relative to the file, as yaml-language-server resolves it.
    named = (path.parent / first.removeprefix(MODELINE).strip()).resolve()
    assert named == COMMITTED.resolve()
    assert errors(validator, load_yaml(path.read_text())) == []


WRONG: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key", {**BASE, "spce": {}}, "Additional properties"),
    ("wrong kind", {**BASE, "kind": "Pack"}, "kind: 'TaskPack' was expected"),
    ("no steps", {**BASE, "spec": {}}, "spec: 'steps' is a required property"),
    (
        "a misspelt step key",
        {**BASE, "spec": {"steps": [{"id": "a", "rnu": {"uses": "builtin:noop"}}]}},
        "spec/steps/0",
    ),
    (
        "two kinds in a step",
        {
            **BASE,
            "spec": {
                "steps": [
                    {
                        "id": "a",
                        "run": {"uses": "builtin:noop"},
                        "gate": {"approval": {"id": "x"}},
                    }
                ]
            },
        },
        "spec/steps/0: ",
    ),
    (
        "a gate with both an approval and a policy",
        {
            **BASE,
            "spec": {
                "steps": [{"id": "g", "gate": {"approval": {"id": "x"}, "policy": {"policy": "p"}}}]
            },
        },
        "spec/steps/0/gate",
    ),
    (
        "a string where a number goes",
        {**BASE, "spec": {**BASE["spec"], "failure": {"maxAttempts": "three"}}},
        "spec/failure/maxAttempts: 'three' is not of type 'integer'",
    ),
    (
        "a bad step id",
        {**BASE, "spec": {"steps": [{"id": "a b", "run": {"uses": "builtin:noop"}}]}},
        "spec/steps/0/id: 'a b' does not match",
    ),
    (
        "a file output without a path",
        {**BASE, "spec": {**BASE["spec"], "outputs": [{"name": "o", "type": "file"}]}},
        "spec/outputs/0: 'path' is a required property",
    ),
    (
        "a wrong type inside an optional object",
        {
            **BASE,
            "spec": {
                "steps": [
                    {"id": "a", "run": {"uses": "builtin:noop", "retries": {"maxAttempts": "x"}}}
                ]
            },
        },
        "spec/steps/0/run/retries/maxAttempts: 'x' is not of type 'integer'",
    ),
    (
        "a misspelt key in a gate's approval",
        {
            **BASE,
            "spec": {"steps": [{"id": "g", "gate": {"approval": {"id": "x", "mesage": "m"}}}]},
        },
        "spec/steps/0/gate/approval: Additional properties are not allowed ('mesage'",
    ),
    (
        "a quote in the pack's name",
        {**BASE, "metadata": {"name": 'a"b', "version": "1"}},
        "metadata/name",
    ),
]


@pytest.mark.parametrize(("why", "data", "expected"), WRONG, ids=[w[0] for w in WRONG])
def test_wrong_manifests_fail_where_they_are_wrong(
    why: str, data: dict[str, Any], expected: str, validator: Draft202012Validator
) -> None:
    found = errors(validator, data)
    assert any(expected in line for line in found), found
    # The compiler refuses it too: the schema is not stricter than the packs that run.
    with pytest.raises(ManifestError):
        load_manifest(dump(data))


def run_step(uses: str, with_: Any) -> dict[str, Any]:
    return {**BASE, "spec": {"steps": [{"id": "a", "run": {"uses": uses, "with": with_}}]}}


WRONG_WITH: list[tuple[str, dict[str, Any], str]] = [
    (
        "an unknown parameter",
        run_step("builtin:shell", {"comand": "ls"}),
        "spec/steps/0/run/with: Additional properties are not allowed ('comand' was unexpected)",
    ),
    (
        "a parameter of the wrong type",
        run_step("builtin:sleep", {"seconds": "soon"}),
        "spec/steps/0/run/with/seconds: 'soon' is not valid",
    ),
]


@pytest.mark.parametrize(("why", "data", "expected"), WRONG_WITH, ids=[w[0] for w in WRONG_WITH])
def test_a_wrong_with_fails_as_the_compiler_refuses_it(
    why: str, data: dict[str, Any], expected: str, validator: Draft202012Validator
) -> None:
    found = errors(validator, data)
    assert any(line.startswith(expected) for line in found), found
    with pytest.raises(ManifestError) as refused:
        compile_manifest(dump(data), known_executors=builtins())
    assert all(e.path.startswith("spec.steps[0].run.with") for e in refused.value.errors)


def test_with_follows_its_executor_and_takes_expressions(validator: Draft202012Validator) -> None:
    assert errors(validator, run_step("builtin:sleep", {"seconds": "{{ inputs.wait }}"})) == []
    assert errors(validator, run_step("builtin:sleep", {"seconds": 2})) == []
    # An executor this schema does not know: its `with` is any mapping, as the schema cannot
    # say what another service has; the compiler of that service checks it.
    assert errors(validator, run_step("custom:scan", {"anything": [1, 2]})) == []
    assert errors(validator, run_step("custom:scan", "not a mapping")) != []
    uses = validator.schema["$defs"]["RunBody"]["properties"]["uses"]
    assert {"builtin:shell", "builtin:echo"} <= set(uses["examples"])


def test_a_number_for_a_version_is_text_to_both(validator: Draft202012Validator) -> None:
    data = {**BASE, "metadata": {"name": "p", "version": 1.0}}
    assert errors(validator, data) == []
    assert load_manifest(dump(data)).metadata.version == "1.0"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_the_corpus_is_judged_alike_where_the_models_decide(
    path: Path, validator: Draft202012Validator
) -> None:
    """A corpus manifest the models accept, the schema accepts; one the schema accepts, the
    models accept (the compiler's later checks, expressions and ids, are beyond a schema)."""
    try:
        data = load_yaml(path.read_bytes())
    except ManifestError:
        return  # not YAML the loader reads: no document for either to judge
    try:
        load_manifest(path.read_bytes())
        accepted = True
    except ManifestError:
        accepted = False
    assert (errors(validator, data) == []) == accepted, errors(validator, data)


# ------------------------------------------------------------------ mutations of a valid pack

RICH = load_yaml((EXAMPLES / "nested.yaml").read_text())
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=100_000),
    st.sampled_from(["", "x", "a b", "builtin:noop", "sealed", "file", "1.0", "*.x.org", "0"]),
    st.sampled_from(["builtin:sleep", "builtin:shell", "builtin:http", "{{ inputs.x }}"]),
    st.just([]),
    st.just({}),
    st.just({"seconds": 1}),
    st.just({"command": "ls", "env": {"A": "{{ item }}"}}),
    st.just({"id": "z"}),
    st.just([{"id": "z", "run": {"uses": "builtin:noop"}}]),
)


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _places(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _places(value, (*path, index))
    return found


PLACES = _places(RICH)[1:]


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    data = copy.deepcopy(RICH)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(PLACES))
        parent = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = copy.deepcopy(draw(VALUES))
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent[path[-1]], dict):
                key = draw(
                    st.sampled_from(
                        ["unknown", "run", "gate", "loop", "with", "else", "seconds", "command"]
                    )
                )
                parent[path[-1]][key] = copy.deepcopy(draw(VALUES))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation moved this place away
    return data


SCHEMA = manifest_schema(builtins())


@PROPERTY
@given(mutated())
def test_what_the_schema_accepts_the_models_and_executors_accept(data: Any) -> None:
    """Accepted by the schema: the models accept it too, and no run step's `with` is refused
    by its executor (the compiler's other checks, ids and expressions, are beyond a schema)."""
    if not Draft202012Validator(SCHEMA).is_valid(data):
        return
    text = dump(data)
    load_manifest(text)  # no ManifestError
    # What checking against the executors adds: errors in a `with`, or an unknown `uses`
    # (the schema names executors as examples, not as the only ones).
    added = set(compile_errors(text, builtins())) - set(compile_errors(text, None))
    assert not [e for e in added if not e[0].endswith(".uses")], added


def compile_errors(text: str, executors: Any) -> list[tuple[str, str]]:
    try:
        compile_manifest(text, known_executors=executors)
    except ManifestError as exc:
        return [(e.path, e.message) for e in exc.errors]
    return []


# ------------------------------------------------------------------ `taskrunner schema`


def test_taskrunner_schema_prints_it_and_writes_it(taskrunner: CliRunner, tmp_path: Path) -> None:
    printed = taskrunner("schema")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == COMMITTED.read_text()
    target = tmp_path / "taskpack.schema.json"
    written = taskrunner("schema", "-o", str(target))
    assert written.returncode == 0 and written.stdout == ""
    assert target.read_text() == COMMITTED.read_text()
    nowhere = taskrunner("schema", "-o", str(tmp_path / "no" / "such" / "dir.json"))
    assert nowhere.returncode == 1
    assert nowhere.stderr.startswith("taskrunner: error: cannot write ")
