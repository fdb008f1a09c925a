"""Secrets: where an activity gets a secret's value, and how `{{ secrets.NAME }}` is filled in.

Values never travel through the workflow: the step's `with` arrives with its placeholders intact
and `RunStepRequest.secrets` naming the secrets the step declared. The activity resolves them
here, from the worker's SecretProvider, just before the executor runs.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from compiler.expressions import secret_name

ENV_PREFIX = "TASKRUNNER_SECRET_"

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class SecretError(Exception):
    """A secret that is missing, or a placeholder naming a secret the step did not declare.

    The message names the secret, never a value.
    """


class SecretProvider(Protocol):
    """Where a worker gets secret values from."""

    def get(self, name: str) -> str | None:
        """The value of secret `name`, or None when this worker does not have it."""
        ...


class EnvSecretProvider:
    """Secrets from environment variables: `NAME` is read from `TASKRUNNER_SECRET_NAME`."""

    def __init__(self, environ: Mapping[str, str] | None = None, prefix: str = ENV_PREFIX) -> None:
        self._environ = environ
        self._prefix = prefix

    def get(self, name: str) -> str | None:
        # Read at call time, not construction time, so a rotated value is picked up.
        environ = os.environ if self._environ is None else self._environ
        return environ.get(self._prefix + name)


class MappingSecretProvider:
    """Secrets from a fixed mapping (embedding, tests)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def get(self, name: str) -> str | None:
        return self._values.get(name)


def resolve_secrets(provider: SecretProvider, names: Iterable[str]) -> dict[str, str]:
    """The values of the named secrets; SecretError naming the first one the provider lacks."""
    values: dict[str, str] = {}
    for name in names:
        value = provider.get(name)
        if value is None:
            raise SecretError(f"secret {name!r} is not available to this worker")
        values[name] = value
    return values


def fill_placeholders(value: Any, secrets: Mapping[str, str]) -> Any:
    """Replace every `{{ secrets.NAME }}` in a value (deeply) with the secret's value.

    Only names in `secrets` may be used: the step declared those. A placeholder naming any other
    secret is refused rather than looked up, because `with` may carry rendered input values, and
    an input must not be able to pull an undeclared secret out of the worker. Other `{{ }}` text
    is left as it is: the workflow already rendered everything it could.
    """
    if isinstance(value, str):
        return _fill_string(value, secrets)
    if isinstance(value, list):
        return [fill_placeholders(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: fill_placeholders(v, secrets) for k, v in value.items()}
    return value


def _fill_string(text: str, secrets: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = secret_name(match.group(1))
        if name is None:
            return match.group(0)
        if name not in secrets:
            raise SecretError(f"`with` refers to secret {name!r}, which this step did not declare")
        return secrets[name]

    return _PLACEHOLDER.sub(replace, text)


SCRUBBED = b"***"


def scrub_files(root: Path, values: Iterable[str]) -> list[str]:
    """Overwrite every trace of `values` in the regular files under `root` with `***`.

    Run after a step that had secrets: a step may write a secret into the run workspace
    (`echo $TOKEN > .netrc`), and the workspace outlives the step. The forms the masker knows
    (raw, JSON-escaped, URL-quoted) are replaced in place; links are not followed. Returns the
    paths changed, relative to `root`.
    """
    forms = {f for v in values if v for f in (v, json.dumps(v)[1:-1], quote(v, safe=""))}
    forms.discard("")
    if not forms:
        return []
    ordered = sorted((f.encode() for f in forms), key=len, reverse=True)
    pattern = re.compile(b"|".join(map(re.escape, ordered)))
    changed: list[str] = []
    for folder, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            path = Path(folder) / name
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                with os.fdopen(os.dup(fd), "r+b") as handle:
                    data = handle.read()
                    scrubbed = pattern.sub(SCRUBBED, data)
                    if scrubbed != data:
                        handle.seek(0)
                        handle.write(scrubbed)
                        handle.truncate()
                        changed.append(path.relative_to(root).as_posix())
            finally:
                os.close(fd)
    return changed
