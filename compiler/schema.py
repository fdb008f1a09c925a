"""The manifest's JSON Schema, generated from the pydantic models in compiler/manifest.py.

Editors (yaml-language-server: VS Code's YAML extension, Neovim, JetBrains) complete and check a
pack against it; the API serves it at /schemas/taskpack.json, `taskrunner schema` prints it, and
schema/taskpack.schema.json is the committed copy the examples point at (a test keeps it equal to
this one).

The models check a few rules in validators, which pydantic cannot express in a schema; they are
added here so the schema refuses what the compiler refuses (a step with two kinds, a gate with
both an approval and a policy) and accepts what it accepts (`version: 1.0`, a number the
compiler reads as its text). The schema is a first check: the compiler still checks what no
JSON Schema can (ids that must exist, expressions, duplicate ids, executors' `with`).
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from compiler.executors import ExecutorCatalog
from compiler.manifest import API_VERSION, STEP_KIND_KEYS, Manifest

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_PATH = "/schemas/taskpack.json"
"""Where the API serves it."""
COMMITTED_PATH = "schema/taskpack.schema.json"
"""The copy in the repository, relative to its root, that examples name in their modeline."""

# Names the compiler refuses in metadata.name (see Metadata._listable).
_UNLISTABLE = "['\"\\\\\\x00-\\x1f\\x7f]"


def _exactly_one(keys: tuple[str, ...]) -> list[dict[str, Any]]:
    # A key given as null is not given, as the models read `x is None`.
    return [{"required": [key], "properties": {key: {"not": {"type": "null"}}}} for key in keys]


def _not_null(model: dict[str, Any], key: str) -> None:
    """`T | None` becomes T: the key may be left out, not given as null."""
    prop = model["properties"][key]
    prop["anyOf"] = [s for s in prop["anyOf"] if s != {"type": "null"}]
    if len(prop["anyOf"]) == 1:
        prop.update(prop.pop("anyOf")[0])
    prop.pop("default", None)


def _rules(defs: dict[str, Any]) -> None:
    """The validators' rules, in JSON Schema."""
    # An optional object (`Retries | None`, a step's kinds) may be left out, not given as null
    # (which the compiler reads as left out): as `anyOf [object, null]`, every mistake inside
    # the object would be reported on the whole of it ("is not valid under any of the given
    # schemas"), by editors too, instead of at the key that is wrong.
    for model in defs.values():
        for key, prop in model.get("properties", {}).items():
            members = prop.get("anyOf", [])
            if (
                len(members) == 2
                and {"type": "null"} in members
                and any("$ref" in m for m in members)
            ):
                _not_null(model, key)
    # Step._exactly_one_kind: one kind per step. With two kinds given, two alternatives match
    # and oneOf fails, as the compiler does.
    defs["Step"]["oneOf"] = [{"required": [key]} for key in STEP_KIND_KEYS]
    # GateBody._exactly_one and ItemsSource._exactly_one.
    defs["GateBody"]["oneOf"] = _exactly_one(("approval", "policy"))
    defs["ItemsSource"]["oneOf"] = _exactly_one(("expression", "range", "static"))
    # Output._needs_source.
    defs["Output"]["allOf"] = [
        {
            "if": {"properties": {"type": {"const": "file"}}, "required": ["type"]},
            "then": {"required": ["path"], "properties": {"path": {"type": "string"}}},
        },
        {
            "if": {"properties": {"type": {"const": "object"}}, "required": ["type"]},
            "then": {
                "required": ["expression"],
                "properties": {"expression": {"type": "string"}},
            },
        },
    ]
    # RangeSpec._nonzero.
    defs["RangeSpec"]["properties"]["step"]["not"] = {"const": 0}
    # Metadata._listable.
    defs["Metadata"]["properties"]["name"]["not"] = {"pattern": _UNLISTABLE}
    # The `_text` validators: YAML reads `version: 1.0` as a number, which the compiler keeps as
    # the text written. (Only a number or a string: a boolean is refused by both.)
    for model, field in (("Metadata", "version"), ("Policy", "version"), ("PolicyGate", "version")):
        prop = defs[model]["properties"][field]
        if "anyOf" in prop:  # `str | None`
            prop["anyOf"].insert(1, {"type": "number"})
        else:
            constraints = {k: prop.pop(k) for k in ("minLength", "maxLength") if k in prop}
            prop.pop("type")
            prop["anyOf"] = [{"type": "string", **constraints}, {"type": "number"}]


def _untitle(node: Any, *, keep: bool) -> None:
    # pydantic titles each property after its name ("Requiredapprovals"), which editors show as
    # the hover text: noise beside the name. Models' titles stay (they name the object).
    if isinstance(node, dict):
        if not keep:
            node.pop("title", None)
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for prop in value.values():
                    _untitle(prop, keep=False)
            elif key == "$defs" and isinstance(value, dict):
                for model in value.values():
                    _untitle(model, keep=True)
            elif key not in ("default", "const", "enum", "examples"):
                _untitle(value, keep=False)
    elif isinstance(node, list):
        for item in node:
            _untitle(item, keep=False)


EXPRESSION = {"type": "string", "pattern": "\\{\\{"}
"""A value holding an expression: known only when the step runs, so the compiler judges its key
but not its value (compiler/executors.py), and so does the schema."""


def _lenient_children(node: Any) -> Any:
    """`node` with every value schema inside it also accepting an expression string."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    for key in ("properties", "patternProperties"):
        if isinstance(node.get(key), dict):
            node[key] = {k: _or_expression(v) for k, v in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _or_expression(node[key])
    if isinstance(node.get("prefixItems"), list):
        node["prefixItems"] = [_or_expression(v) for v in node["prefixItems"]]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(node.get(key), list):
            node[key] = [_lenient_children(v) for v in node[key]]
    return node


def _or_expression(node: Any) -> Any:
    """A value schema that also accepts an expression string (and so do the values in it)."""
    if not isinstance(node, dict) or not node:
        return node
    node = _lenient_children(node)
    annotations = {"title", "description", "default", "examples"}
    if not set(node) - annotations:
        return node  # any value at all
    if node.get("type") == "string" and not set(node) - annotations - {"type"}:
        return node  # any string already
    return {"anyOf": [node, EXPRESSION]}


def _relocated(node: Any, prefix: str) -> Any:
    """`node` with its `#/$defs/X` references renamed `#/$defs/PREFIX.X`."""
    if isinstance(node, dict):
        out = {k: _relocated(v, prefix) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = "#/$defs/" + prefix + ref.removeprefix("#/$defs/")
        return out
    if isinstance(node, list):
        return [_relocated(v, prefix) for v in node]
    return node


def _executors(schema: dict[str, Any], executors: ExecutorCatalog) -> None:
    """Each executor's parameters as the schema of `with` when `uses` names it, so editors
    complete `with` keys and flag unknown ones; `uses` offers the executors' names."""
    defs = schema["$defs"]
    run = defs["RunBody"]
    run["properties"]["uses"]["examples"] = sorted(executors)
    branches = []
    for uses, params in sorted(executors.items()):
        if params is None:
            continue
        prefix = f"{uses}."
        params = _relocated(copy.deepcopy(dict(params)), prefix)
        for name, body in params.pop("$defs", {}).items():
            defs[prefix + name] = _lenient_children(body)
        params.pop("$schema", None)
        with_ = _lenient_children(params)  # itself a mapping, as `with` always is
        with_.setdefault("description", f"The parameters of {uses}")
        then: dict[str, Any] = {"properties": {"with": with_}}
        if params.get("required"):
            # A left-out `with` is `{}` to the compiler, which lacks what the executor requires.
            then["required"] = ["with"]
        branches.append(
            {"if": {"properties": {"uses": {"const": uses}}, "required": ["uses"]}, "then": then}
        )
    if branches:
        run["allOf"] = branches


@functools.cache
def _generated() -> dict[str, Any]:
    schema = Manifest.model_json_schema(by_alias=True, mode="validation")
    _rules(schema["$defs"])
    _untitle(schema, keep=True)
    return {
        "$schema": DIALECT,
        "title": f"TaskRunner task pack ({API_VERSION})",
        "description": "A TaskRunner task pack manifest (docs/manifest.md). Generated from the "
        "compiler's models by `taskrunner schema`; the compiler checks more than this schema "
        "can (ids that must exist, expressions, executors' parameters).",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def manifest_schema(executors: ExecutorCatalog | None = None) -> dict[str, Any]:
    """The manifest's JSON Schema (draft 2020-12), a fresh copy the caller may change. With an
    executor catalog (`uses` → the JSON Schema of its `with`), each run step's `with` is
    described by its executor's parameters."""
    schema = copy.deepcopy(_generated())
    if executors:
        _executors(schema, executors)
        _untitle(schema, keep=True)
    return schema


def manifest_schema_text(executors: ExecutorCatalog | None = None) -> str:
    """The schema as written to schema/taskpack.schema.json: indented, keys in model order, with
    a final newline, so the committed file diffs cleanly when a model changes."""
    return json.dumps(manifest_schema(executors), indent=2, ensure_ascii=False) + "\n"
