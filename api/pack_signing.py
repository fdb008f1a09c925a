"""Signed packs: a DSSE envelope (securesystemslib) whose payload is the manifest's exact bytes,
signed with Ed25519, verified against the public keys the operator trusts.

The operator lists trusted keys in one PEM file (`TASKRUNNER_PACK_TRUSTED_KEYS_FILE`, any number
of `PUBLIC KEY` blocks); `TASKRUNNER_PACK_REQUIRE_SIGNATURES=true` refuses unsigned packs. A
signature over other bytes than the manifest published, by a key not trusted, or in a malformed
envelope is a 400 `invalid_pack_signature`; the key id that verified it is kept with the version.
"""

from __future__ import annotations

import binascii
import json
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import Key, SSlibKey

from workflows.contract.service_key import ServiceKey, ServiceKeyError, parse_public_pem

PACK_PAYLOAD_TYPE = "application/vnd.stellaops.taskrunner.pack+yaml"
_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


class PackSignatureInvalid(ValueError):
    """The signature does not verify; the message says why."""


def load_trusted_keys(path: Path | None) -> list[Ed25519PublicKey]:
    """Every PUBLIC KEY block of the operator's PEM file (none when no file is configured)."""
    if path is None:
        return []
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ServiceKeyError(f"cannot read the trusted pack keys {path}: {exc.strerror}") from None
    blocks = _PEM_BLOCK.findall(text)
    if not blocks:
        raise ServiceKeyError(f"{path} holds no PEM PUBLIC KEY block")
    return [parse_public_pem(block, f"{path} block {i + 1}") for i, block in enumerate(blocks)]


def sign_pack(manifest: bytes, key: ServiceKey) -> dict[str, Any]:
    envelope = Envelope(manifest, PACK_PAYLOAD_TYPE, {})
    envelope.sign(key.signer())
    result: dict[str, Any] = envelope.to_dict()
    return result


def verify_pack(signature: Any, manifest: bytes, trusted: list[Ed25519PublicKey]) -> str:
    """The key id of the trusted key that signed exactly `manifest`; else PackSignatureInvalid."""
    if not trusted:
        raise PackSignatureInvalid(
            "this service trusts no pack signing keys (TASKRUNNER_PACK_TRUSTED_KEYS_FILE)"
        )
    try:
        envelope = Envelope.from_dict(json.loads(json.dumps(signature)))
    except (KeyError, TypeError, ValueError, binascii.Error, AttributeError) as exc:
        raise PackSignatureInvalid(f"signature is not a DSSE envelope ({exc})") from None
    if envelope.payload_type != PACK_PAYLOAD_TYPE:
        raise PackSignatureInvalid(f"signature.payloadType must be {PACK_PAYLOAD_TYPE!r}")
    if envelope.payload != manifest:
        raise PackSignatureInvalid("the signed payload is not this manifest")
    keys: list[Key] = [SSlibKey.from_crypto(k) for k in trusted]
    try:
        accepted = envelope.verify(keys, 1)
    except (VerificationError, ValueError):
        raise PackSignatureInvalid("no trusted key signed this manifest") from None
    return str(next(iter(accepted)))
