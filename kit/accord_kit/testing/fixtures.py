"""pytest fixtures every service's tests use: free ports, a real nats-server with
JetStream, fresh PostgreSQL databases, and event stores of both kinds.

Nothing is skipped silently: a server that cannot start fails the test with the reason."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from accord_kit.testing.nats import NatsServer, free_port


def pytest_configure(config: pytest.Config) -> None:
    from accord_kit.logging import configure_logging

    configure_logging(os.environ.get("ACCORD_TEST_LOG_LEVEL", "warning"), "console")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files holding a slow test (marked `slow`: the long end-to-end and fault runs) go
    first, each file's tests in their order: on several workers (`make test` runs
    `pytest -n`, files kept whole on one worker) the long files start at once and the
    short ones fill in around them, instead of one long file left running alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within stays


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


# Databases the test run has created and emptied again, free for the next test: creating and
# dropping a PostgreSQL database costs about a second (DROP DATABASE waits for a checkpoint),
# emptying one a few milliseconds. A database handed out is indistinguishable from a new one:
# its own settings reset, every schema dropped and `public` created again as CREATE DATABASE
# makes it.
_free_databases: list[str] = []
_all_databases: list[str] = []


def _take_database() -> str:
    if _free_databases:
        return _free_databases.pop()
    name = f"accord_test_{uuid.uuid4().hex[:12]}"
    with _pg_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _all_databases.append(name)
    return name


def _empty_database(name: str) -> str:
    """Disconnect everyone from the database, give it a new name (a client of the test that
    finished and reconnects finds no database, as if it had been dropped), reset its settings
    and drop every schema in it; returns the new name ("" when it was dropped instead)."""
    import psycopg

    fresh = f"accord_test_{uuid.uuid4().hex[:12]}"
    with _pg_connect() as conn:
        for _ in range(100):
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            try:
                conn.execute(f'ALTER DATABASE "{name}" RENAME TO "{fresh}"')
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(0.05)  # the terminated sessions are still on their way out
            except psycopg.errors.InvalidCatalogName:  # the test dropped it itself
                _all_databases.remove(name)
                return ""
        else:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            _all_databases.remove(name)
            return ""
    _all_databases[_all_databases.index(name)] = fresh
    with _pg_connect() as conn:
        # What a test set on the database itself (ALTER DATABASE … SET, ALTER ROLE … IN
        # DATABASE … SET) goes too; a database whose other properties a test changed is dropped.
        conn.execute(f'ALTER DATABASE "{fresh}" RESET ALL')
        for (role,) in conn.execute(
            "SELECT setrole::regrole::text FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = %s AND s.setrole <> 0",
            (fresh,),
        ).fetchall():
            conn.execute(f'ALTER ROLE {role} IN DATABASE "{fresh}" RESET ALL')
        as_created = conn.execute(
            "SELECT datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND NOT datistemplate "
            "AND datallowconn AND datconnlimit = -1 "
            "AND NOT EXISTS (SELECT 1 FROM pg_db_role_setting WHERE setdatabase = d.oid) "
            "FROM pg_database d WHERE datname = %s",
            (fresh,),
        ).fetchone()
        if not (as_created and as_created[0]):
            conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')
            _all_databases.remove(fresh)
            return ""
    with _pg_connect(fresh) as conn, conn.transaction():
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname <> 'information_schema' AND nspname !~ '^pg_'"
        ).fetchall()
        for (schema,) in schemas:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        # As CREATE DATABASE makes it from template1 (PostgreSQL 15 on; before, owned by the
        # bootstrap superuser and open to everyone: the tests connect as a superuser anyway).
        if conn.info.server_version >= 150000:
            conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
            conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
        else:
            conn.execute("CREATE SCHEMA public")
            conn.execute("GRANT ALL ON SCHEMA public TO PUBLIC")
        conn.execute("COMMENT ON SCHEMA public IS 'standard public schema'")
    return fresh


@pytest.fixture(scope="session")
def _postgres_databases() -> Iterator[None]:
    """Drops every database the tests of the run used, once they are all done."""
    yield
    if _all_databases:
        with _pg_connect() as conn:
            for name in _all_databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _all_databases.clear()
    _free_databases.clear()


def _copy_database(template: str) -> str:
    """A new database holding what `template` holds (nobody may be connected to it)."""
    name = f"accord_test_{uuid.uuid4().hex[:12]}"
    with _pg_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    _all_databases.append(name)
    return name


def _databases() -> Iterator[Callable[..., str]]:
    taken: list[str] = []

    def make(template: str = "") -> str:
        name = _copy_database(template) if template else _take_database()
        taken.append(name)
        return name

    yield make
    for name in taken:
        fresh = _empty_database(name)
        if fresh:
            _free_databases.append(fresh)


@pytest.fixture
def postgres_db(_postgres_databases: None) -> Iterator[Callable[..., str]]:
    """A factory of fresh (empty) PostgreSQL databases of this test's own — or, given
    `template=<database>`, copies of that one; after the test they are emptied for the next
    one and dropped at the end of the run."""
    yield from _databases()


@pytest.fixture(scope="module")
def module_postgres_db(_postgres_databases: None) -> Iterator[Callable[..., str]]:
    """The same, for databases a module's tests share (e.g. a template each test copies)."""
    yield from _databases()


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
