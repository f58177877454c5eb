"""The billing service as it runs: its real bootstrap on both stores, gRPC over a real
channel, its stream created on NATS, its log served, its durability checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from accord_billing.bootstrap import build
from accord_billing.settings import load
from accord_kit.testing import service_checks
from accord_kit.testing.nats import NatsServer


async def test_billing_starts_serves_its_log_and_creates_its_stream(
    own_nats_server: NatsServer, tmp_path: Path, store_kind: str, postgres_db: Callable[[], str]
) -> None:
    db = postgres_db() if store_kind == "postgres" else ""
    await service_checks.check_starts_and_serves_its_log(
        "billing", build, load, ["agreements", "metrics"], own_nats_server.url, tmp_path, store_kind, db
    )


def test_billing_refuses_an_in_memory_sqlite_store() -> None:
    service_checks.check_refuses_in_memory_sqlite("billing", load)


def test_billing_refuses_postgres_that_acknowledges_undurable_commits(
    tmp_path: Path, postgres_db: Callable[[], str]
) -> None:
    service_checks.check_refuses_undurable_postgres("billing", build, load, tmp_path, postgres_db())
