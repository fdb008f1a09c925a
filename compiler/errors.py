"""The compiler's one error type: every problem found, each with the JSON path of its node."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorDetail:
    """One problem in a manifest or its inputs: `path` is a JSON path such as `spec.steps[1].id`.

    `line` and `column` (1-based) say where the node of `path` (or of its nearest parent that is
    written in the YAML) starts in the manifest's text; None for a problem not in the text (a
    given input, a whole-document problem whose message says where it is).
    """

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def located_str(self, source: str | None) -> str:
        """`source:line:column: path: message`, the form compilers and linters print (editors
        and CI annotations jump to it); `path: message` when there is no line to name."""
        if source is None or self.line is None:
            return str(self)
        return f"{source}:{self.line}:{self.column}: {self}"


class ManifestError(Exception):
    """A manifest, or the inputs given with it, cannot become a plan. Carries every error found.

    `source` names the manifest's file for messages (the CLI sets it; None elsewhere).
    """

    def __init__(self, errors: Sequence[ErrorDetail], *, source: str | None = None) -> None:
        self.errors: list[ErrorDetail] = list(errors)
        self.source = source
        super().__init__("; ".join(str(e) for e in self.errors) or "invalid manifest")

    @classmethod
    def single(cls, path: str, message: str) -> ManifestError:
        return cls([ErrorDetail(path, message)])

    def located(self, positions: Callable[[], Mapping[str, tuple[int, int]]]) -> ManifestError:
        """The same errors, each with the line and column of its path (or of its nearest parent
        in the text), in the order of the text. `positions` is only called when some error has
        a path to place."""
        if not any(_placeable(e) for e in self.errors):
            return self
        where = positions()
        out = []
        for error in self.errors:
            path = error.path if _placeable(error) else ""
            while path and path not in where:
                path = _parent(path)
            if path:
                line, column = where[path]
                error = ErrorDetail(error.path, error.message, line, column)
            out.append(error)
        # In the order of the text, as a reader fixes them (errors not in it, such as the given
        # inputs', after): unknown keys are found before the later checks, not above them.
        out.sort(key=lambda e: (e.line is None, e.line or 0, e.column or 0))
        return ManifestError(out, source=self.source)


def _placeable(error: ErrorDetail) -> bool:
    # The YAML's own errors (no path) say where they are in their message; `inputs.` paths are
    # the given inputs, not in the text.
    return bool(error.path) and error.line is None and not error.path.startswith(_INPUTS)


_INPUTS = ("inputs.", "inputs[")


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def join_path(parts: Iterable[str | int]) -> str:
    """Render path parts as `a.b[2].c`, the form every error path takes."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out
