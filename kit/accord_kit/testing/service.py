"""Run a whole service in-process for tests: its real bootstrap, gRPC server on port 0,
real NATS, real store, its own checkpoint signing key (so every service under test seals
its log at stop, and every `<SERVICE>_SEAL_SECONDS` if a test sets it); plus tokens to
call it with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from accord_kit.auth import TokenVerifier, generate_keypair, mint_token
from accord_kit.chain import load_private_key, private_key_pem, public_key_pem
from accord_kit.runtime import ServiceParts, ServiceRuntime
from accord_kit.settings import ServiceSettings
from accord_kit.testing.fixtures import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER
from accord_kit.testing.streams import eventually


@dataclass
class Keys:
    private: bytes
    public_file: Path

    def metadata(self, role: str, department: str = "", subject: str = "tester") -> tuple[tuple[str, str], ...]:
        token = mint_token(self.private, subject=subject, role=role, department=department)
        return (("authorization", f"Bearer {token}"),)


def make_keys(directory: Path) -> Keys:
    private, public = generate_keypair(directory)
    return Keys(private.read_bytes(), public)


def service_environ(
    service: str, tmp_path: Path, nats_url: str, store_kind: str, postgres_dbname: str = "", **extra: str
) -> dict[str, str]:
    """Settings for a service under test: port 0, its own var dir, the given store."""
    p = service.upper()
    env = {
        "ACCORD_VAR_DIR": str(tmp_path / "var"),
        "ACCORD_NATS_URL": nats_url,
        "ACCORD_PERSISTENCE": store_kind,
        "ACCORD_POSTGRES_HOST": PG_HOST,
        "ACCORD_POSTGRES_PORT": str(PG_PORT),
        "ACCORD_POSTGRES_USER": PG_USER,
        "ACCORD_POSTGRES_PASSWORD": PG_PASSWORD,
        f"{p}_GRPC_PORT": "0",
        f"{p}_GRACE_SECONDS": "1",
        f"{p}_RELAY_POLL_SECONDS": "0.1",
    }
    if postgres_dbname:
        env[f"{p}_POSTGRES_DBNAME"] = postgres_dbname
    env.update(extra)
    return env


def ensure_chain_key(settings: ServiceSettings) -> Path:
    """Create the service's checkpoint signing key where its settings look for it
    (`<SERVICE>_CHAIN_KEY_FILE`, by default under the test's var dir) unless it exists;
    the public half goes beside it. Returns the public key's path."""
    private = settings.chain_key_file
    public = private.with_name(private.name.replace("_private", "_public"))
    if public == private:
        public = private.with_suffix(".public.pem")
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True)
        private.write_bytes(private_key_pem(Ed25519PrivateKey.generate()))
        private.chmod(0o600)
    if not public.exists():
        public.write_bytes(public_key_pem(load_private_key(private).public_key()))
    return public


@asynccontextmanager
async def running_service(
    build: Callable[..., ServiceParts],
    settings: ServiceSettings,
    keys: Keys,
    *,
    wait_ready: bool = True,
    **build_kwargs: object,
) -> AsyncIterator[ServiceRuntime]:
    parts = build(settings, verifier=TokenVerifier(keys.public_file.read_bytes()), **build_kwargs)
    if parts.app is not None:
        ensure_chain_key(settings)
    runtime = ServiceRuntime(parts)
    await runtime.start()
    try:
        if wait_ready:
            await eventually(parts.readiness.is_ready, timeout=30, what=f"{settings.service} ready")
        yield runtime
    finally:
        await runtime.stop()
