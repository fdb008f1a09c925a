"""Safe YAML loading: size and nesting caps, no aliases, no duplicate keys, no Python tags."""

from __future__ import annotations

from typing import Any

import yaml

from compiler.errors import ManifestError

MAX_MANIFEST_BYTES = 1024 * 1024
MAX_NESTING = 100

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _where(node: yaml.Node) -> str:
    mark = node.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _StrictLoader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader that refuses duplicate keys and non-scalar keys (aliases are refused before)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ManifestError.single("", f"mapping keys must be scalars ({_where(key_node)})")
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ManifestError.single("", f"YAML merge keys are not allowed ({_where(key_node)})")
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                raise ManifestError.single(
                    "", f"duplicate key {key_node.value!r} ({_where(key_node)})"
                )
            seen.add(ident)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def _check_tree(root: yaml.Node) -> None:
    """Refuse aliases (a node reached twice) and nesting past the cap, before anything is built.

    Aliases are refused outright rather than bounded: a manifest never needs them, and refusing them
    makes an alias bomb cost one visit per distinct node.
    """
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    seen: set[int] = set()
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ManifestError.single(
                "", f"manifest is nested deeper than {MAX_NESTING} levels ({_where(node)})"
            )
        if id(node) in seen:
            raise ManifestError.single("", f"YAML aliases are not allowed ({_where(node)})")
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))


def load_yaml(text: str | bytes, *, max_bytes: int = MAX_MANIFEST_BYTES) -> Any:
    """Parse one YAML document into plain data, or raise ManifestError with a clear message."""
    if isinstance(text, bytes):
        if len(text) > max_bytes:
            raise ManifestError.single("", f"manifest is larger than {max_bytes} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError.single("", f"manifest is not valid UTF-8 (byte {exc.start})") from None
    if len(text.encode("utf-8", errors="surrogatepass")) > max_bytes:
        raise ManifestError.single("", f"manifest is larger than {max_bytes} bytes")
    if not text.strip():
        raise ManifestError.single("", "manifest is empty")
    try:
        loader = _StrictLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                raise ManifestError.single("", "manifest is empty")
            _check_tree(root)
            return loader.construct_document(root)
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
