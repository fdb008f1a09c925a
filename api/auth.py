"""Bearer-token authentication and scope checks.

Tokens are JWTs signed HS256 (a shared secret) or RS256 (a public key); `exp` and `sub` are
required, `aud` and `iss` checked when configured. Scopes come from `scope` (space-separated) or
`scp` (a list); each role includes the ones below it: `taskrunner.admin` > `taskrunner.operator`
> `taskrunner.viewer`. An approval also needs every grant its gate lists, found in the token's
`grants` claim or among its scopes; no role stands in for a grant. A decision is recorded for the
token's subject; only an admin may name another actor.

A token names the tenants it acts in: `tenant` (one slug) and/or `tenants` (a list, or a
space-separated string). `*` among them means every tenant, and is honoured only on a platform
admin's token: one that also holds `taskrunner.admin`. A `*` on any other token is refused
outright (403 `tenant_forbidden`), so a mis-issued token fails loudly instead of acting in no
tenant. Which tenant a request acts in is `Principal.tenant_for`'s decision (see `api.deps`).

With `auth_enabled` off every caller is an anonymous admin holding every grant and every
tenant, which is what the embedded single-user service wants and nothing else does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import RSAAlgorithm

from api.errors import (
    Forbidden,
    InsufficientScope,
    InvalidTenant,
    TenantClaimMissing,
    TenantForbidden,
    TenantRequired,
    Unauthenticated,
)
from api.settings import ApiSettings

VIEWER = "taskrunner.viewer"
OPERATOR = "taskrunner.operator"
ADMIN = "taskrunner.admin"
# Reads /metrics when it is labelled by tenant, and nothing else (for a Prometheus scraper).
METRICS = "taskrunner.metrics"
_SATISFIED_BY = {
    VIEWER: frozenset({VIEWER, OPERATOR, ADMIN}),
    OPERATOR: frozenset({OPERATOR, ADMIN}),
    ADMIN: frozenset({ADMIN}),
}
ROLES = (VIEWER, OPERATOR, ADMIN)
"""The roles, lowest first; each includes the ones before it."""
ROLE_DESCRIPTIONS = {
    VIEWER: "Read-only access to runs and logs",
    OPERATOR: "Create runs and apply approvals",
    ADMIN: "Full administrative access",
}
"""The contract's words for each scope (its oauth2 scheme's `scopes`)."""


def roles_satisfying(scope: str) -> list[str]:
    """The roles that hold `scope`, lowest first."""
    return [role for role in ROLES if role in _SATISFIED_BY[scope]]


ANONYMOUS = "anonymous"
ALL_TENANTS = "*"
TENANT_HEADER = "X-StellaOps-Tenant"
# A tenant is one path component of the artifact store and part of workflow ids: keep it plain.
TENANT_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$")
# PyJWT warns about (and brute force breaks) HMAC secrets shorter than the hash.
MIN_HS256_SECRET_BYTES = 32


class AuthConfigError(ValueError):
    """Auth is on but cannot verify any token: refuse to start rather than refuse every call."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject, its scopes, its grants and its tenants.

    `all_tenants`: a platform admin's token (`*` with `taskrunner.admin`). `unrestricted`: the
    anonymous caller of auth-off dev mode, who holds everything.
    """

    subject: str
    scopes: frozenset[str]
    grants: frozenset[str]
    unrestricted: bool = False
    tenants: frozenset[str] = frozenset()
    all_tenants: bool = False

    def tenant_for(self, named: str | None, default: str) -> str:
        """The tenant a request acts in, given the tenant it names (header or body), if any.

        A named tenant must be one of the token's; without one, a single-tenant token acts in
        its tenant, and any other token must say which (there is no guessing across tenants).
        `default` is only for auth-off dev mode, where nobody holds a token.
        """
        if named is not None:
            _check_slug(named)
        if self.unrestricted:
            return named or default
        if not self.tenants and not self.all_tenants:
            raise TenantClaimMissing(
                "this token names no tenant (a `tenant` or `tenants` claim); it cannot act "
                "on any tenant's resources"
            )
        if named is not None:
            if self.all_tenants or named in self.tenants:
                return named
            raise TenantForbidden(f"this token does not hold tenant {named!r}")
        if len(self.tenants) == 1 and not self.all_tenants:
            return _check_slug(next(iter(self.tenants)))
        raise TenantRequired(
            f"this token holds several tenants: name one in {TENANT_HEADER}"
            if not self.all_tenants
            else f"a platform admin's token must name the tenant in {TENANT_HEADER}"
        )

    def has_scope(self, scope: str) -> bool:
        return self.unrestricted or bool(self.scopes & _SATISFIED_BY[scope])

    def acting_as(self, actor_id: str | None) -> str:
        """Who a decision is recorded for: the caller, or (admins only) someone it acts for.

        Quorums count distinct actors, so an operator who could name any actor could approve
        twice; naming someone else is for admins (a chat bot relaying a person's decision).
        """
        if actor_id is None or actor_id == self.subject:
            return self.subject
        if not self.has_scope(ADMIN):
            raise Forbidden(f"only {ADMIN} may decide as another actor than the token's subject")
        return actor_id

    def missing_grants(self, needed: Iterable[str]) -> list[str]:
        if self.unrestricted:
            return []
        held = self.grants | self.scopes
        return [g for g in needed if g not in held]


ANONYMOUS_ADMIN = Principal(
    ANONYMOUS, frozenset({ADMIN}), frozenset(), unrestricted=True, all_tenants=True
)


def _check_slug(tenant: str) -> str:
    if not TENANT_PATTERN.match(tenant):
        raise InvalidTenant(
            f"tenant {tenant!r} is not a valid slug (letters, digits, '-' and '_', at most 63)"
        )
    return tenant


class Authenticator:
    """Turns an `Authorization` header into a Principal, or raises Unauthenticated."""

    def __init__(self, settings: ApiSettings) -> None:
        self.enabled = settings.auth_enabled
        self.keys: dict[str, Any] = {}
        if settings.jwt_hs256_secret:
            if len(settings.jwt_hs256_secret.encode()) < MIN_HS256_SECRET_BYTES:
                raise AuthConfigError(
                    f"TASKRUNNER_JWT_HS256_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes"
                )
            self.keys["HS256"] = settings.jwt_hs256_secret
        if settings.jwt_rs256_public_key:
            try:
                rsa = RSAAlgorithm(RSAAlgorithm.SHA256)
                self.keys["RS256"] = rsa.prepare_key(settings.jwt_rs256_public_key)
            except Exception as exc:
                raise AuthConfigError(
                    f"TASKRUNNER_JWT_RS256_PUBLIC_KEY is not a usable key: {exc}"
                ) from None
        if self.enabled and not self.keys:
            raise AuthConfigError(
                "auth is enabled but no key is configured: set TASKRUNNER_JWT_HS256_SECRET or "
                "TASKRUNNER_JWT_RS256_PUBLIC_KEY (or TASKRUNNER_AUTH_ENABLED=false for a private "
                "single-user service)"
            )
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer

    def authenticate(self, token: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS_ADMIN
        if not token:
            raise Unauthenticated("a bearer token is required")
        try:
            algorithm = str(jwt.get_unverified_header(token).get("alg"))
            # The key is chosen by algorithm, so an RS256 public key can never be used as an
            # HMAC secret (the classic algorithm-confusion forgery).
            key = self.keys.get(algorithm)
            if key is None:
                raise Unauthenticated(
                    f"tokens signed with {algorithm!r} are not accepted", invalid_token=True
                )
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
                leeway=30,
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}", invalid_token=True) from None
        scopes = frozenset(_strings(claims.get("scope")) + _strings(claims.get("scp")))
        single = claims.get("tenant")
        # `tenant` is one slug (never split on spaces); issuers that put a list there mean a list.
        named = [single] if isinstance(single, str) else _strings(single)
        named += _strings(claims.get("tenants"))
        tenants = frozenset(named)
        wildcard = ALL_TENANTS in tenants
        if wildcard and ADMIN not in scopes:
            raise TenantForbidden(
                f"tenant {ALL_TENANTS!r} is for platform admins only: the token must also hold "
                f"{ADMIN}"
            )
        return Principal(
            subject=str(claims["sub"]),
            scopes=scopes,
            grants=frozenset(_strings(claims.get("grants"))),
            tenants=tenants - {ALL_TENANTS},
            all_tenants=wildcard,
        )


def require_scope(principal: Principal, scope: str) -> Principal:
    if not principal.has_scope(scope):
        raise InsufficientScope(scope)
    return principal


def _strings(value: Any) -> list[str]:
    """A claim that is a space-separated string or a list of strings, as a list."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []
