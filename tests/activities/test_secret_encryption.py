"""workflows.contract.signing as the API uses it: webhook secrets encrypted at rest, and link tokens whose
signature does not match told apart from malformed ones (401 against 400)."""

from __future__ import annotations

import pytest

from workflows.contract.signing import (
    ApprovalToken,
    TokenBadSignature,
    TokenInvalid,
    decrypt_secret,
    encrypt_secret,
    mint_token,
    verify_token,
)

KEY = b"k" * 32
SECRET = "a-webhook-secret-of-some-length"


def test_secret_round_trip_without_plaintext() -> None:
    ciphertext = encrypt_secret(KEY, SECRET)
    assert SECRET not in ciphertext
    assert decrypt_secret(KEY, ciphertext) == SECRET
    with pytest.raises(TokenInvalid):
        decrypt_secret(b"o" * 32, ciphertext)


def test_bad_signature_is_its_own_kind_of_invalid() -> None:
    token = ApprovalToken("t", "r", "a", "sha256:" + "0" * 64, "approved", 2_000_000_000, "n")
    text = mint_token(KEY, token)
    assert verify_token(KEY, text, 0) == token
    with pytest.raises(TokenBadSignature):
        verify_token(b"o" * 32, text, 0)
    with pytest.raises(TokenInvalid) as malformed:
        verify_token(KEY, "no-dot-here", 0)
    assert not isinstance(malformed.value, TokenBadSignature)
