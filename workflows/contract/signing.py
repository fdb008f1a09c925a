"""Signed approval links and webhook signatures: HMAC-SHA256 with the service's signing key.

A link token names one run, one approval, the run's plan hash, a decision and an expiry, so it
is useless for any other gate or run; the workflow records its id with the decision, so it is
single use. The module is pure (no clock: callers pass `now`), and shared by the API, which
verifies tokens, and the webhook activity, which mints them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken

TokenDecision = Literal["approved", "rejected"]
UNBOUND_LINK = "link:unbound"
"""The one identity every link minted without a subject counts for."""


class TokenInvalid(Exception):
    """A token that is malformed or whose signature does not match."""


class TokenBadSignature(TokenInvalid):
    """A well-formed token not signed with this key: forged, altered, or from another service."""


class TokenExpired(Exception):
    """A well-signed token past its expiry."""


@dataclass(frozen=True)
class ApprovalToken:
    tenant: str
    runId: str
    approvalId: str
    planHash: str
    decision: TokenDecision
    expiresAt: int
    """Unix seconds."""
    nonce: str
    subject: str = ""
    """Whom the link was minted for: its vote counts for this identity, whoever holds the link.
    Empty in links minted before identities were bound (they all share one seat)."""

    @property
    def identity(self) -> str:
        """The actor a decision made with this link is counted for."""
        return self.subject or UNBOUND_LINK

    @property
    def token_id(self) -> str:
        """A short stable id for the token, recorded with the decision it makes."""
        claims = asdict(self)
        if not self.subject:
            del claims["subject"]  # the id an unbound link had when it was minted
        return hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def mint_token(key: bytes, token: ApprovalToken) -> str:
    claims = asdict(token)
    if not token.subject:
        del claims["subject"]
    body = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    return f"{_b64(body)}.{_b64(_mac(key, body))}"


def verify_token(key: bytes, text: str, now: int) -> ApprovalToken:
    """The token's claims, or TokenInvalid / TokenExpired. Signature is checked first."""
    try:
        body_part, mac_part = text.split(".", 1)
        body = _unb64(body_part)
        mac = _unb64(mac_part)
    except (ValueError, UnicodeError) as exc:
        raise TokenInvalid("malformed token") from exc
    if _b64(body) != body_part or _b64(mac) != mac_part:
        # Python's decoder skips what is not base64 and what follows padding, so `\\T=@host`
        # would read as T: only the text as minted is the token (pages put it in URLs).
        raise TokenInvalid("malformed token")
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise TokenBadSignature("bad token signature")
    try:
        claims = json.loads(body)
        token = ApprovalToken(**claims)
    except (ValueError, TypeError) as exc:
        raise TokenInvalid("malformed token") from exc
    if token.decision not in ("approved", "rejected"):
        raise TokenInvalid("malformed token")
    if now >= token.expiresAt:
        raise TokenExpired("token has expired")
    return token


def _fernet(key: bytes) -> Fernet:
    # Fernet wants 32 url-safe base64 bytes; any signing key is stretched to that by SHA-256.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"taskrunner-secrets:" + key).digest()))


def encrypt_secret(key: bytes, plaintext: str) -> str:
    """Ciphertext safe to keep in workflow history; only holders of the signing key can read it."""
    return _fernet(key).encrypt(plaintext.encode()).decode()


def decrypt_secret(key: bytes, ciphertext: str) -> str:
    try:
        return _fernet(key).decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise TokenInvalid("secret was encrypted with another signing key") from exc


def sign_body(secret: bytes, timestamp: str, body: bytes) -> str:
    """`X-TaskRunner-Signature` value: `sha256=<hex>` over `timestamp.body`.

    The timestamp (also sent as `X-TaskRunner-Timestamp`) is inside the MAC so a receiver can
    refuse replays of old deliveries.
    """
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


WHSEC_PREFIX = "whsec_"
"""Standard Webhooks secrets: `whsec_` and the base64 of 24 to 64 random bytes."""


class WebhookSecretInvalid(ValueError):
    """A `whsec_` secret whose rest is not the base64 of 24 to 64 bytes."""


def standard_webhook_key(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks `webhook-signature`: the bytes a `whsec_` secret
    encodes, or (a secret registered before `whsec_` secrets, any text) its UTF-8 bytes, which
    receivers pass to their verifier as bytes."""
    if not secret.startswith(WHSEC_PREFIX):
        return secret.encode()
    encoded = secret.removeprefix(WHSEC_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        raise WebhookSecretInvalid("a whsec_ secret is whsec_ and base64") from None
    if not 24 <= len(key) <= 64:
        raise WebhookSecretInvalid(
            f"a whsec_ secret encodes 24 to 64 bytes; this one encodes {len(key)}"
        )
    return key
