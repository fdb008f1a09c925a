"""Secret masking: every text an activity emits passes through a Masker before it leaves.

A secret's value is replaced by `***` wherever it appears in outputs, artifact text, error
messages and log lines. Besides the raw value, the forms a value commonly takes when it is
re-encoded on its way out (JSON string escaping, URL quoting) are masked too, so a script that
echoes a token inside a JSON document or a query string does not leak it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import quote

MASK = "***"


class Masker:
    """Replaces known secret values with `***` in text and, deeply, in JSON-like values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for value in secrets:
            # An empty value cannot be located in text; masking it would mean masking nothing.
            if not value:
                continue
            forms.add(value)
            forms.add(json.dumps(value)[1:-1])
            forms.add(quote(value, safe=""))
        forms.discard("")
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        """Mask one string."""
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """Mask every string inside a JSON-like value (dict keys included); other leaves as is."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


class MaskingLogger(logging.LoggerAdapter[Any]):
    """A logger adapter that formats each message first and masks the result.

    Formatting happens here rather than in the handler because a secret may arrive through the
    `%` arguments, and the handler never sees the masker.
    """

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any], mask: Masker) -> None:
        super().__init__(logger, {})
        self._mask = mask

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        if "extra" in kwargs and kwargs["extra"] is not None:
            kwargs["extra"] = self._mask.value(dict(kwargs["extra"]))
        self.logger.log(level, self._mask(text), **kwargs)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs
