"""The service's Ed25519 key: the one place it is made, loaded and turned into a signer.

Evidence bundles are signed with it (DSSE, through securesystemslib), and anything else that
must prove it came from this service (webhook payloads, say) can use `load_service_key` and
`signer` too. Its public half is served at `/.well-known/taskrunner/keys` and printed by
`taskrunner keys`, so whoever verifies a signature needs nothing from us but that PEM.

Where the key comes from: `TASKRUNNER_SERVICE_KEY_FILE` (a PKCS#8 PEM file, unencrypted) or
`TASKRUNNER_SERVICE_KEY` (the PEM text itself). `taskrunner dev` makes one per data dir, beside
the HMAC signing key, so bundles verify against the same key after a restart. Every API replica
of a deployment loads the same key; nothing here makes one behind an operator's back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, SSlibKey

SERVICE_KEY_FILE = "service-key.pem"
"""Its file name in a data dir (`taskrunner dev`)."""


class ServiceKeyError(Exception):
    """A key that cannot be read or is not an Ed25519 key; the message says which file and why."""


@dataclass(frozen=True)
class ServiceKey:
    """The private key and what is derived from it once."""

    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def public_pem(self) -> str:
        return public_key_pem(self.public)

    @property
    def sslib_key(self) -> SSlibKey:
        """The public key as securesystemslib sees it; its `keyid` names it in DSSE signatures."""
        return SSlibKey.from_crypto(self.public)

    @property
    def key_id(self) -> str:
        return str(self.sslib_key.keyid)

    @property
    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def signer(self) -> CryptoSigner:
        return CryptoSigner(self.private, self.sslib_key)


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def parse_private_pem(text: bytes, where: str) -> ServiceKey:
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except (ValueError, TypeError) as exc:
        raise ServiceKeyError(f"{where} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ServiceKeyError(f"{where} holds a {type(key).__name__}, not an Ed25519 key")
    return ServiceKey(key)


def parse_public_pem(text: bytes, where: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (a private key's PEM gives its public half too)."""
    try:
        key = serialization.load_pem_public_key(text)
    except (ValueError, TypeError):
        return parse_private_pem(text, where).public
    if not isinstance(key, Ed25519PublicKey):
        raise ServiceKeyError(f"{where} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_service_key(pem: str | None, path: Path | None) -> ServiceKey | None:
    """The configured key (PEM text wins over a file), or None when neither is set."""
    if pem:
        return parse_private_pem(pem.encode(), "TASKRUNNER_SERVICE_KEY")
    if path is None:
        return None
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ServiceKeyError(f"cannot read the service key {path}: {exc.strerror}") from None
    return parse_private_pem(text, str(path))


def ensure_service_key(data_dir: Path) -> Path:
    """DATA_DIR/service-key.pem, made on first use (mode 0600) and kept, as `taskrunner dev` wants.

    Made with O_EXCL so two processes starting at once never write two different keys.
    """
    path = data_dir / SERVICE_KEY_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        load_service_key(None, path)  # refuse a damaged file now, not at the first bundle
        return path
    except OSError as exc:
        raise ServiceKeyError(f"cannot keep a service key in {data_dir}: {exc.strerror}") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(generate_private_pem())
    return path


def generate_private_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
