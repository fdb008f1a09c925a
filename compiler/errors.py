"""The compiler's one error type: every problem found, each with the JSON path of its node."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorDetail:
    """One problem in a manifest or its inputs: `path` is a JSON path such as `spec.steps[1].id`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestError(Exception):
    """A manifest, or the inputs given with it, cannot become a plan. Carries every error found."""

    def __init__(self, errors: Sequence[ErrorDetail]) -> None:
        self.errors: list[ErrorDetail] = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors) or "invalid manifest")

    @classmethod
    def single(cls, path: str, message: str) -> ManifestError:
        return cls([ErrorDetail(path, message)])


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
