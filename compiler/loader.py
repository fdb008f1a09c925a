"""Safe YAML loading: size and nesting caps, no aliases, no duplicate keys, JSON-shaped data only.

Manifests are YAML 1.2: a plain scalar gets its type by the YAML 1.2 core schema, as resolved
and constructed by ruamel.yaml (a maintained YAML 1.2 library), so `NO`, `on` and `12:30` are
text and `010` is ten, where YAML 1.1 (PyYAML's own resolver) reads false, true, 750 and 8.
The syntax is read by libyaml's event parser (through PyYAML): ruamel.yaml's own parser is pure
Python and took ten times as long on a 1 MB pack (5.6 s against 0.54 s), and the manifest
syntax accepted here (no tags, aliases or directives) reads the same in 1.1 and 1.2.

The document is built straight from the parser's event stream, in one iterative pass, rather than
through PyYAML's composer and constructor: the C composer recurses on the C stack (a deeply nested
document crashes the process), and the two-stage route is several times slower. Every value is one
JSON can hold, so the plan built from it hashes the same everywhere: timestamps stay the text that
was written, and tags without a JSON value (`!!set`, `!!binary`, `!!omap`, ...) are refused.
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.nodes import ScalarNode

from compiler.errors import ManifestError, join_path

MAX_MANIFEST_BYTES = 1024 * 1024
MAX_NESTING = 100

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
_STR = _TAG + "str"
_MERGE = _TAG + "merge"
_MAP_TAGS = frozenset({None, "!", _TAG + "map"})
_SEQ_TAGS = frozenset({None, "!", _TAG + "seq"})
# Scalars kept as the text that was written: a date is the string the author typed, and `=` (YAML
# 1.1's "value" key) is just a character.
_TEXT_TAGS = frozenset({_STR, _TAG + "timestamp", _TAG + "value"})
_VALUE_TAGS = frozenset({_TAG + "null", _TAG + "bool", _TAG + "int", _TAG + "float"})


def _where(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"


# The YAML 1.2 core schema's resolver and constructors. Only their stateless scalar functions are
# used (never construct_object, which caches every node), so threads may share them.
_YAML12 = YAML(typ="safe", pure=True)
_YAML12.version = (1, 2)
_RESOLVER = _YAML12.resolver
_CONSTRUCTOR = _YAML12.constructor


class _Builder:
    """Turns parser events into plain data, checking each node as it arrives."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.first_chars = _RESOLVER.versioned_resolver

    def scalar(self, event: yaml.ScalarEvent) -> Any:
        tag = event.tag
        value = event.value
        if tag is None or tag == "!":
            if not event.implicit[0] or (value and value[0] not in self.first_chars):
                return value  # quoted, or plain text no implicit type can start with
            tag = str(_RESOLVER.resolve(ScalarNode, value, event.implicit))
        if tag in _TEXT_TAGS:
            return value
        if tag in _VALUE_TAGS:
            node = ScalarNode(tag, value)
            result = _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)
            if isinstance(result, float) and not math.isfinite(result):
                raise ManifestError.single(
                    "", f"NaN and infinity are not allowed ({_where(event)})"
                )
            return result
        if tag == _MERGE:
            raise ManifestError.single("", f"YAML merge keys are not allowed ({_where(event)})")
        raise ManifestError.single("", f"YAML tag {tag!r} is not allowed ({_where(event)})")


def _build(loader: Any) -> Any:
    """Build the single document of a stream; raises ManifestError for anything refused."""
    builder = _Builder(loader)
    # Each open container: [container, key waiting for its value (mappings), start event].
    stack: list[list[Any]] = []
    root: Any = None
    documents = 0
    no_key = object()
    while True:
        event = loader.get_event()
        if event is None or isinstance(event, yaml.StreamEndEvent):
            break
        kind = type(event)
        if kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise ManifestError.single(
                    "", f"expected a single YAML document, found another ({_where(event)})"
                )
            continue
        if kind in (yaml.StreamStartEvent, yaml.DocumentEndEvent):
            continue
        if kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            value = stack.pop()[0]
        else:
            if len(stack) >= MAX_NESTING:
                raise ManifestError.single(
                    "", f"manifest is nested deeper than {MAX_NESTING} levels ({_where(event)})"
                )
            if kind is yaml.ScalarEvent:
                value = builder.scalar(event)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                is_map = kind is yaml.MappingStartEvent
                if event.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
                    raise ManifestError.single(
                        "", f"YAML tag {event.tag!r} is not allowed ({_where(event)})"
                    )
                if stack and isinstance(stack[-1][0], dict) and stack[-1][1] is no_key:
                    raise ManifestError.single(
                        "", f"mapping keys must be scalars ({_where(event)})"
                    )
                stack.append([{} if is_map else [], no_key, event])
                continue
            elif kind is yaml.AliasEvent:
                raise ManifestError.single("", f"YAML aliases are not allowed ({_where(event)})")
            else:  # pragma: no cover - the parser emits no other events
                raise ManifestError.single("", f"unexpected YAML event ({_where(event)})")
        if not stack:
            root = value
            continue
        top = stack[-1]
        container = top[0]
        if isinstance(container, list):
            container.append(value)
        elif top[1] is no_key:
            if value in container:  # keys are scalars, so hashable
                raise ManifestError.single("", f"duplicate key {value!r} ({_where(event)})")
            top[1] = value
        else:
            container[top[1]] = value
            top[1] = no_key
    if documents == 0:
        raise ManifestError.single("", "manifest is empty")
    return root


def load_yaml(text: str | bytes, *, max_bytes: int = MAX_MANIFEST_BYTES) -> Any:
    """Parse one YAML document into plain data, or raise ManifestError with a clear message."""
    if isinstance(text, bytes):
        if len(text) > max_bytes:
            raise ManifestError.single("", f"manifest is larger than {max_bytes} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError.single(
                "", f"manifest is not valid UTF-8 (byte {exc.start})"
            ) from None
    if len(text.encode("utf-8", errors="surrogatepass")) > max_bytes:
        raise ManifestError.single("", f"manifest is larger than {max_bytes} bytes")
    if not text.strip():
        raise ManifestError.single("", "manifest is empty")
    try:
        loader = _BaseLoader(text)
        try:
            return _build(loader)
        finally:
            loader.dispose()
    except ManifestError:
        raise
    except yaml.YAMLError as exc:
        raise ManifestError.single("", f"invalid YAML: {_yaml_message(exc)}") from None
    except (RecursionError, UnicodeError, ValueError, TypeError, OverflowError) as exc:
        raise ManifestError.single("", f"invalid YAML: {exc}") from None


def _yaml_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        where = ""
        if exc.problem_mark is not None:
            where = f" (line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})"
        return f"{exc.problem or exc.context or 'syntax error'}{where}"
    return str(exc).splitlines()[0] if str(exc) else "syntax error"


def positions(text: str | bytes) -> dict[str, tuple[int, int]]:
    """The 1-based (line, column) of each node of a manifest, by its JSON path (`spec.steps[0]`;
    a mapping value is placed at its key). Only read when there are errors to place, so the
    loading of a valid manifest never pays for it. Text that does not parse, or nests deeper
    than the loader accepts, gives what was read before the problem (the loader has already
    refused such text with an error that carries its own line and column)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    found: dict[str, tuple[int, int]] = {}
    # Each open container: [parts of its path, is a mapping, next index or key, expecting key].
    stack: list[list[Any]] = []
    loader = _BaseLoader(text)
    try:
        while True:
            event = loader.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                break
            kind = type(event)
            if kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                if not stack:
                    break
                stack.pop()
                _advance(stack)
                continue
            if kind not in (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent):
                continue
            if len(stack) >= MAX_NESTING:
                break  # the paths would grow without bound (and the loader refused this text)
            mark = event.start_mark
            here: list[Any] = []
            if stack:
                top = stack[-1]
                if top[1] and top[3]:  # a key: remember it, place the value there
                    if kind is not yaml.ScalarEvent:
                        break  # a mapping as a key: refused by the loader
                    top[2] = event.value
                    top[3] = False
                    found.setdefault(join_path([*top[0], top[2]]), (mark.line + 1, mark.column + 1))
                    continue
                here = [*top[0], top[2]]
                if not top[1]:
                    found[join_path(here)] = (mark.line + 1, mark.column + 1)
            if kind is yaml.ScalarEvent:
                _advance(stack)
            else:
                stack.append([here, kind is yaml.MappingStartEvent, 0, True])
    except (yaml.YAMLError, RecursionError, ValueError):
        pass
    finally:
        loader.dispose()
    return found


def _advance(stack: list[list[Any]]) -> None:
    if stack:
        top = stack[-1]
        if top[1]:
            top[3] = True
        else:
            top[2] += 1
