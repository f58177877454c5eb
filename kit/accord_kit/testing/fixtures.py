"""pytest fixtures every service's tests use: free ports, a real nats-server with
JetStream, fresh PostgreSQL databases, and event stores of both kinds.

Nothing is skipped silently: a server that cannot start fails the test with the reason."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from accord_kit.testing.nats import NatsServer, free_port


def pytest_configure(config: pytest.Config) -> None:
    from accord_kit.logging import configure_logging

    configure_logging(os.environ.get("ACCORD_TEST_LOG_LEVEL", "warning"), "console")


PG_HOST = os.environ.get("ACCORD_TEST_POSTGRES_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ACCORD_TEST_POSTGRES_PORT", "5432"))
PG_USER = os.environ.get("ACCORD_TEST_POSTGRES_USER", "postgres")
PG_PASSWORD = os.environ.get("ACCORD_TEST_POSTGRES_PASSWORD", "")


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the session (tests use unique stream names)."""
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture
def own_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own, for tests that stop or restart it."""
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


def _pg_connect(dbname: str = "postgres"):  # type: ignore[no-untyped-def]
    import psycopg

    try:
        return psycopg.connect(
            host=PG_HOST,
            port=PG_PORT,
            user=PG_USER,
            password=PG_PASSWORD or None,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable (user {PG_USER}): {e}")


@pytest.fixture
def postgres_db() -> Iterator[Callable[[], str]]:
    """A factory of fresh PostgreSQL databases, dropped after the test."""
    created: list[str] = []

    def make() -> str:
        name = f"accord_test_{uuid.uuid4().hex[:12]}"
        with _pg_connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return name

    yield make
    with _pg_connect() as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_env(dbname: str) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "accord_kit.persistence:ChainedPostgresFactory",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": PG_HOST,
        "POSTGRES_PORT": str(PG_PORT),
        "POSTGRES_USER": PG_USER,
        "POSTGRES_PASSWORD": PG_PASSWORD,
    }


def sqlite_env(path: Path) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "accord_kit.persistence:DurableSQLiteFactory", "SQLITE_DBNAME": str(path)}


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store_env(store_kind: str, tmp_path: Path, postgres_db: Callable[[], str]) -> Callable[[str], dict[str, str]]:
    """Makes fresh event store settings of the parametrized kind (sqlite, postgres)."""

    def make(name: str) -> dict[str, str]:
        if store_kind == "sqlite":
            return sqlite_env(tmp_path / f"{name}-{uuid.uuid4().hex[:8]}.sqlite")
        return postgres_env(postgres_db())

    return make


@pytest.fixture
def unique() -> str:
    """A unique token for stream and durable names within the session's nats-server."""
    return uuid.uuid4().hex[:8].upper()
