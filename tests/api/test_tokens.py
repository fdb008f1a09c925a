"""api.auth.Authenticator on its own: RS256 keys, audience and issuer, and refusing bad config."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api.auth import AuthConfigError, Authenticator
from api.errors import TenantForbidden, Unauthenticated
from api.settings import ApiSettings
from tests.api.support import SECRET


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def claims(**extra: Any) -> dict[str, Any]:
    return {
        "sub": "user:alice",
        "exp": int(time.time()) + 60,
        "scope": "taskrunner.viewer",
        **extra,
    }


class TestAuthenticator:
    def test_rs256(self, rsa_pair: tuple[Any, str]) -> None:
        private, public = rsa_pair
        auth = Authenticator(ApiSettings(jwt_rs256_public_key=public))
        principal = auth.authenticate(
            jwt.encode(claims(grants=["packs.approve"]), private, algorithm="RS256")
        )
        assert principal.subject == "user:alice"
        assert principal.has_scope("taskrunner.viewer") and not principal.has_scope(
            "taskrunner.operator"
        )
        assert principal.missing_grants(["packs.approve", "other"]) == ["other"]
        # An HS256 token "signed" with the public key must not pass as RS256's key.
        forged = jwt.encode(claims(), SECRET, algorithm="HS256")
        with pytest.raises(Unauthenticated):
            auth.authenticate(forged)

    def test_audience_and_issuer(self) -> None:
        auth = Authenticator(
            ApiSettings(
                jwt_hs256_secret=SECRET, jwt_audience="taskrunner", jwt_issuer="https://idp"
            )
        )
        good = jwt.encode(claims(aud="taskrunner", iss="https://idp"), SECRET, algorithm="HS256")
        assert auth.authenticate(good).subject == "user:alice"
        for bad in (
            claims(iss="https://idp"),
            claims(aud="other", iss="https://idp"),
            claims(aud="taskrunner"),
        ):
            with pytest.raises(Unauthenticated):
                auth.authenticate(jwt.encode(bad, SECRET, algorithm="HS256"))

    def test_auth_on_without_a_key_refuses_to_start(self) -> None:
        with pytest.raises(AuthConfigError, match="TASKRUNNER_JWT_HS256_SECRET"):
            Authenticator(ApiSettings(auth_enabled=True))
        with pytest.raises(AuthConfigError, match="at least 32 bytes"):
            Authenticator(ApiSettings(jwt_hs256_secret="short"))
        with pytest.raises(AuthConfigError, match="not a usable key"):
            Authenticator(ApiSettings(jwt_rs256_public_key="not a pem"))

    def test_auth_off_is_an_unrestricted_anonymous_admin(self) -> None:
        principal = Authenticator(ApiSettings(auth_enabled=False)).authenticate(None)
        assert principal.subject == "anonymous"
        assert principal.has_scope("taskrunner.admin") and principal.missing_grants(["x"]) == []


class TestTenantClaims:
    def test_tenant_and_tenants_add_up(self) -> None:
        auth = Authenticator(ApiSettings(jwt_hs256_secret=SECRET))
        principal = auth.authenticate(
            jwt.encode(claims(tenant="acme", tenants="globex initech"), SECRET, algorithm="HS256")
        )
        assert principal.tenants == {"acme", "globex", "initech"} and not principal.all_tenants
        listed = auth.authenticate(
            jwt.encode(claims(tenant=["acme", "globex"]), SECRET, algorithm="HS256")
        )
        assert listed.tenants == {"acme", "globex"}
        # A `tenant` with a space is one (invalid) name, not two tenants.
        spaced = auth.authenticate(
            jwt.encode(claims(tenant="acme globex"), SECRET, algorithm="HS256")
        )
        assert spaced.tenants == {"acme globex"}

    def test_star_is_every_tenant_for_an_admin_only(self) -> None:
        auth = Authenticator(ApiSettings(jwt_hs256_secret=SECRET))
        admin = auth.authenticate(
            jwt.encode(claims(scope="taskrunner.admin", tenants=["*"]), SECRET, algorithm="HS256")
        )
        assert admin.all_tenants and admin.tenant_for("anyone", "default") == "anyone"
        with pytest.raises(TenantForbidden, match="platform admins"):
            auth.authenticate(
                jwt.encode(
                    claims(scope="taskrunner.operator", tenant="*"), SECRET, algorithm="HS256"
                )
            )
