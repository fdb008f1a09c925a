"""The hash chain over a run's log: each entry's `hash` covers the previous entry's hash and the
entry's own canonical form, so changing, dropping or reordering any line breaks every hash after
it, and the last hash (the chain head, in the run's state and its evidence) commits to the whole
log.

    hash(n) = "sha256:" + hex(sha256(hash(n-1) + "\\n" + JCS(entry n without "hash")))
    hash(0) = GENESIS

JCS is RFC 8785 (the `rfc8785` package): the one canonical JSON a verifier in any language can
reproduce. Pure and deterministic: the workflow computes it as it logs, `taskrunner evidence
verify` recomputes it from a bundle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import rfc8785

GENESIS = "sha256:" + "0" * 64
HASH_FIELD = "hash"


def entry_hash(previous: str, entry: Mapping[str, Any]) -> str:
    """The chain hash of `entry` (a log entry as JSON; its own `hash` field is left out)."""
    body = {k: v for k, v in entry.items() if k != HASH_FIELD and v is not None}
    digest = hashlib.sha256(previous.encode() + b"\n" + rfc8785.dumps(body))
    return "sha256:" + digest.hexdigest()


class ChainMismatch(Exception):
    """The first entry whose recorded hash is not what its content and predecessor give."""

    def __init__(self, index: int, sequence: Any, expected: str, found: Any) -> None:
        self.index = index
        self.sequence = sequence
        super().__init__(
            f"log entry {index + 1} (sequence {sequence}): recorded hash {found!r} is not "
            f"{expected!r}, the hash of its content after the entry before it"
        )


def chain_head(entries: Iterable[Mapping[str, Any]]) -> str:
    """Recompute the chain over `entries` and check each recorded hash on the way.

    Returns the head; raises ChainMismatch at the first entry that does not match.
    """
    head = GENESIS
    for index, entry in enumerate(entries):
        expected = entry_hash(head, entry)
        if entry.get(HASH_FIELD) != expected:
            raise ChainMismatch(index, entry.get("sequence"), expected, entry.get(HASH_FIELD))
        head = expected
    return head
