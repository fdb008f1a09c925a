"""Evidence bundles: what a run did, as an in-toto Statement in a DSSE envelope signed with the
service's Ed25519 key, plus the run's chained log so a verifier can recompute its head.

A bundle is one JSON document:

    {"mediaType": BUNDLE_MEDIA_TYPE,
     "dsseEnvelope": {"payloadType": "application/vnd.in-toto+json", "payload", "signatures"},
     "log": [<the run's log entries, each with its chain hash>]}

The envelope's payload is an in-toto v1 Statement. Its subjects are the run's captured files
(name and sha256) and the log itself (`LOG_SUBJECT`, whose digest is the chain head's). Its
predicate (`PREDICATE_TYPE`) holds the pack, planHash and plan, the inputs (never secrets: the
plan has none), the requester, every approval decision, policy gate results, each step's status
and attempts, and the log's chain head and length. A bundle of a run that has not ended says so
(`run.finished: false`) and verifies all the same: it attests to the run as far as it got.

DSSE comes from securesystemslib (pre-authentication encoding, signing, verification) and the
Statement from the in-toto attestation bindings, which validate its shape. Those bindings keep a
predicate as a protobuf Struct, where every number is a double (1 would come back as 1.0, 2**60
rounded), so the predicate travels as the JSON it was built from; the bindings still check the
statement on both sides. This module is pure: the route gathers the facts, the CLI verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import json_format
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import STATEMENT_TYPE_URI, Statement
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import Key, SSlibKey

from workflows.contract.log_chain import ChainMismatch, chain_head
from workflows.contract.service_key import ServiceKey

BUNDLE_MEDIA_TYPE = "application/vnd.stellaops.taskrunner.evidence.v1+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "https://stellaops.io/taskrunner/run-evidence/v1"
LOG_SUBJECT = "taskrunner:run-log"
"""The subject naming the run's log; its sha256 is the chain head's hex digest."""


class EvidenceMismatch(Exception):
    """The first thing in a bundle that does not verify; the message names it."""


@dataclass(frozen=True)
class Subject:
    name: str
    sha256: str
    """64 lowercase hex digits."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hex(chain_hash: str) -> str:
    return chain_hash.removeprefix("sha256:")


def _statement(subjects: Sequence[Subject], predicate: Mapping[str, Any]) -> Statement:
    descriptors = [
        ResourceDescriptor(name=s.name, digest={"sha256": s.sha256}).pb for s in subjects
    ]
    statement = Statement(descriptors, PREDICATE_TYPE, dict(predicate))
    statement.validate()
    return statement


def build_bundle(
    key: ServiceKey,
    subjects: Sequence[Subject],
    predicate: Mapping[str, Any],
    log: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Sign a bundle. `predicate["log"]["chainHead"]` must be the head of `log`."""
    head = predicate["log"]["chainHead"]
    everything = [*subjects, Subject(LOG_SUBJECT, _hex(head))]
    statement = json_format.MessageToDict(_statement(everything, predicate).pb)
    statement["predicate"] = dict(predicate)  # exact numbers; see the module docstring
    envelope = Envelope(rfc8785.dumps(statement), PAYLOAD_TYPE, {})
    envelope.sign(key.signer())
    return {"mediaType": BUNDLE_MEDIA_TYPE, "dsseEnvelope": envelope.to_dict(), "log": list(log)}


@dataclass(frozen=True)
class Verified:
    """What a verified bundle attests to."""

    statement: dict[str, Any]
    key_id: str
    artifacts_checked: int

    @property
    def predicate(self) -> dict[str, Any]:
        predicate: dict[str, Any] = self.statement["predicate"]
        return predicate


def verify_bundle(
    bundle: Any, keys: Sequence[Ed25519PublicKey], artifacts: Path | None = None
) -> Verified:
    """Check the signature, the statement, the log chain and (with `artifacts`, a folder holding
    the run's files by name) every file's digest. Raises EvidenceMismatch at the first failure."""
    if not isinstance(bundle, dict) or bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise EvidenceMismatch(f"bundle: not a TaskRunner evidence bundle ({BUNDLE_MEDIA_TYPE})")
    try:
        envelope = Envelope.from_dict(json.loads(json.dumps(bundle["dsseEnvelope"])))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise EvidenceMismatch(f"dsseEnvelope: malformed ({exc})") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise EvidenceMismatch(f"dsseEnvelope.payloadType: {envelope.payload_type!r}")
    trusted: list[Key] = [SSlibKey.from_crypto(k) for k in keys]
    try:
        accepted = envelope.verify(trusted, 1)
    except (VerificationError, ValueError):
        ids = ", ".join(k.keyid[:16] for k in trusted)
        raise EvidenceMismatch(
            f"signature: the envelope is not signed by the trusted key ({ids}), or its payload "
            "was changed after signing"
        ) from None
    statement = _parse_statement(envelope.payload)
    predicate = statement["predicate"]
    subjects = {s.get("name"): s.get("digest", {}).get("sha256") for s in statement["subject"]}

    log = bundle.get("log")
    if not isinstance(log, list) or not all(isinstance(e, dict) for e in log):
        raise EvidenceMismatch("log: missing or not a list of entries")
    try:
        head = chain_head(log)
    except ChainMismatch as exc:
        raise EvidenceMismatch(f"log: {exc}") from None
    signed_head = predicate.get("log", {}).get("chainHead")
    if head != signed_head:
        raise EvidenceMismatch(
            f"log: the entries' chain head {head} is not the signed head {signed_head} "
            f"({len(log)} entries here, {predicate.get('log', {}).get('entries')} signed)"
        )
    if subjects.get(LOG_SUBJECT) != _hex(head):
        raise EvidenceMismatch(f"subject {LOG_SUBJECT}: digest is not the log's chain head")

    checked = 0
    if artifacts is not None:
        for name, digest in subjects.items():
            if name == LOG_SUBJECT:
                continue
            path = artifacts / str(name)
            if not path.is_file():
                raise EvidenceMismatch(f"artifact {name}: no file {path}")
            actual = sha256_file(path)
            if actual != digest:
                raise EvidenceMismatch(
                    f"artifact {name}: sha256 of {path} is {actual}, the bundle signed {digest}"
                )
            checked += 1
    return Verified(statement=statement, key_id=next(iter(accepted)), artifacts_checked=checked)


def _parse_statement(payload: bytes) -> dict[str, Any]:
    try:
        statement = json.loads(payload)
        parsed = Statement([], "", {})
        json_format.ParseDict(statement, parsed.pb)
        parsed.validate()
    except (ValueError, TypeError, json_format.ParseError) as exc:
        raise EvidenceMismatch(f"statement: not a valid in-toto Statement ({exc})") from None
    if statement.get("_type") != STATEMENT_TYPE_URI:
        raise EvidenceMismatch(f"statement._type: {statement.get('_type')!r}")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise EvidenceMismatch(f"statement.predicateType: {statement.get('predicateType')!r}")
    if not isinstance(statement.get("predicate"), dict):
        raise EvidenceMismatch("statement.predicate: not an object")
    result: dict[str, Any] = statement
    return result


def b64_payload(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The statement of a bundle, unverified (for display)."""
    decoded: dict[str, Any] = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return decoded
