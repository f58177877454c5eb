"""Signed bearer tokens (EdDSA/Ed25519 JWTs) naming the caller's department and role,
and the per-RPC policy table that denies by default."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from accord_kit.context import Principal
from accord_kit.errors import PermissionDeniedError, UnauthenticatedError

ROLES = frozenset({"department", "auditor", "admin", "service"})
ISSUER = "accord"
ALGORITHM = "EdDSA"
PUBLIC = frozenset({"*public*"})  # marker: no token needed (health, reflection)


def generate_keypair(directory: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair (PEM) into `directory`, private key mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = directory / "auth_private.pem"
    public = directory / "auth_public.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def mint_token(
    private_key_pem: bytes,
    *,
    subject: str,
    role: str,
    department: str = "",
    ttl: timedelta = timedelta(hours=12),
    now: datetime | None = None,
) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}, not {role!r}")
    if role == "department" and not department:
        raise ValueError("a department token must name its department")
    issued = now or datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "role": role,
        "dept": department,
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, private_key_pem, algorithm=ALGORITHM)


class TokenVerifier:
    """Verifies bearer tokens. A token that verified once is remembered (bounded, least recently
    used first out) until its expiry, so a client that reuses its token pays for the signature check
    once instead of on every call; a remembered token still expires on time."""

    def __init__(
        self,
        public_key_pem: bytes,
        leeway_seconds: float = 30.0,
        *,
        cache_size: int = 4096,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._key = serialization.load_pem_public_key(public_key_pem)
        self._leeway = leeway_seconds
        self._cache_size = cache_size
        self._now = now
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.signature_checks = 0

    @classmethod
    def from_file(cls, path: Path) -> TokenVerifier:
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"auth public key {path} not found (ACCORD_AUTH_PUBLIC_KEY_FILE); `make run` creates dev keys"
            ) from None

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise UnauthenticatedError("missing bearer token: send metadata 'authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("authorization metadata must be 'Bearer <token>'")
        token = token.strip()
        with self._lock:
            hit = self._cache.get(token)
            if hit is not None:
                principal, expires = hit
                if self._now() <= expires + self._leeway:
                    self._cache.move_to_end(token)
                    return principal
                del self._cache[token]
                raise UnauthenticatedError("bearer token expired")
        principal, expires = self._decode(token)
        with self._lock:
            self._cache[token] = (principal, expires)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        self.signature_checks += 1
        try:
            claims = jwt.decode(
                token,
                self._key,  # type: ignore[arg-type]
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("bearer token expired") from None
        except jwt.InvalidSignatureError:
            raise UnauthenticatedError("bearer token signature is not valid") from None
        except jwt.PyJWTError as e:
            raise UnauthenticatedError(f"bearer token rejected: {e}") from None
        role = claims.get("role")
        if role not in ROLES:
            raise UnauthenticatedError(f"bearer token names an unknown role {role!r}")
        dept = str(claims.get("dept") or "")
        if role == "department" and not dept:
            raise UnauthenticatedError("a department token must name its department")
        return Principal(subject=str(claims["sub"]), role=str(role), department=dept), float(claims["exp"])


@dataclass(frozen=True)
class Policy:
    """Full gRPC method name → roles allowed. Anything not listed is denied."""

    rules: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, *tables: Mapping[str, Iterable[str]]) -> Policy:
        merged: dict[str, frozenset[str]] = {}
        for table in tables:
            for method, roles in table.items():
                roles = frozenset(roles)
                unknown = roles - ROLES - PUBLIC
                if unknown:
                    raise ValueError(f"policy for {method} names unknown roles {sorted(unknown)}")
                merged[method] = roles
        return cls(merged)

    def is_public(self, method: str) -> bool:
        return self.rules.get(method) == PUBLIC

    def check(self, method: str, principal: Principal) -> None:
        allowed = self.rules.get(method)
        if allowed is None:
            raise PermissionDeniedError(f"{method} is not open to any role (denied by default)")
        if principal.role not in allowed:
            raise PermissionDeniedError(
                f"role {principal.role!r} may not call {method}; allowed: {', '.join(sorted(allowed))}"
            )


# Health and reflection are open so that probes and tools work without tokens.
INFRA_POLICY: dict[str, Iterable[str]] = {
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.health.v1.Health/List": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": PUBLIC,
}

EVENT_LOG_POLICY: dict[str, Iterable[str]] = {
    "/accord.events.v1.EventLogService/ReadEvents": {"service", "auditor", "admin"},
}

# accord.audit.v1.AuditService, served by every event-sourced service (the runtime merges
# this into the service's own policy).
AUDIT_POLICY: dict[str, Iterable[str]] = {
    "/accord.audit.v1.AuditService/ReadChain": {"auditor", "admin", "service"},
    "/accord.audit.v1.AuditService/VerifyLog": {"auditor", "admin", "service"},
    "/accord.audit.v1.AuditService/AgreementHistory": {"auditor", "admin", "service"},
    "/accord.audit.v1.AuditService/GetChainKeys": ROLES,
}
