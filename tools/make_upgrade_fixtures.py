"""Writes the upgrade fixtures (tests/fixtures/upgrade/): the stores a release leaves behind,
for tests/test_upgrade.py to open with newer code.

Run it with the code of the release whose stores the fixtures stand for (a checkout of that
commit, `make install` done), PostgreSQL reachable as for the tests:

    .venv/bin/python tools/make_upgrade_fixtures.py [OUT_DIR] [--release COMMIT]

(From an exported tree, e.g. `git archive <commit> | tar -x -C DIR`, with the tree's kit,
services and root first on PYTHONPATH, pass --release: there is no git to ask.)

It plays one short journey through the in-process suite (tests/suite.py) twice, once on SQLite
and once on PostgreSQL: departments and the e-mail service registered, an SLA drafted, proposed
and accepted; January's signals (met) and its statement issued; February an hour down (breached),
an amendment relaxing availability from March, February's statement issued and disputed (one
assessment accepted with an amount, one rejected); a snapshot of the agreement and of February's
availability window; each store sealed (a signed chain checkpoint);
then one more signal batch after the seal, so each log also has an unsealed tail.

Written to OUT_DIR (default tests/fixtures/upgrade):
  <service>.sqlite         each event-sourced service's SQLite store (journal mode DELETE, vacuumed)
  postgres/<service>.sql   each service's PostgreSQL database, `pg_dump --inserts` (plain SQL a
                           test can run statement by statement on an empty database)
  keys/<service>.pub.pem   the public key each store was sealed with (the private keys are thrown away)
  manifest.json            the release commit, the agreement, statement and snapshot ids, and per store the
                           head position, event count per topic, and the sealed checkpoint
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms, with_target
from accord_kit.application import AccordApplication
from accord_kit.chain import generate_chain_keypair, load_private_key, seal
from accord_kit.testing.fixtures import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, postgres_env, sqlite_env
from tests.suite import AMS, COLLECTOR, CUSTOMER, P_CUSTOMER, P_PROVIDER, PROVIDER, Suite, at, calls, outage

ROOT = Path(__file__).resolve().parent.parent  # the repository (on the path through the virtualenv's accord.pth)

SERVICES = ("agreements", "metrics", "billing")


def journey(suite: Suite) -> dict[str, Any]:
    """The release's stores after a short, realistic quarter; returns the ids it made."""
    ag, m, b = suite.agreements, suite.metrics, suite.billing
    for dept in (IT, FINANCE):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    terms = sla_terms()
    aid = str(ag.draft(PROVIDER, terms).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    suite.tick(f"2026-01-10T10:00{AMS}")
    # January: 30 minutes down (met); its statement is issued on 1 February.
    m.record(COLLECTOR, [outage("jan", f"2026-01-12T10:00{AMS}", 30), *calls("j", f"2026-01-15T09:00{AMS}", 9, 1)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    # February: an hour down (breached), and slow calls.
    m.record(COLLECTOR, [outage("feb", f"2026-02-03T08:00{AMS}", 60), *calls("f", f"2026-02-15T09:00{AMS}", 7, 3)])
    # The parties relax availability to 99.0 % from March.
    _, amendment = ag.propose_amendment(
        CUSTOMER, aid, with_target(terms, "availability", "99.0"), at(f"2026-03-01T00:00{AMS}"), "relax"
    )
    ag.accept_amendment(PROVIDER, aid, amendment)
    suite.tick(f"2026-03-01T02:00{AMS}")
    statements = b.statements(P_CUSTOMER, aid)
    feb = statements[1]
    windows = {k.split("|")[0]: k.split("|")[1] for k in feb.assessments}
    d1 = b.dispute(P_CUSTOMER, str(feb.id), "availability", windows["availability"], "the hour cost us the close")
    d2 = b.dispute(P_CUSTOMER, str(feb.id), "service-level", windows["service-level"], "calls were slow")
    b.resolve(P_PROVIDER, str(feb.id), d1, True, "2000.00", "agreed: 2,000.00")
    b.resolve(P_PROVIDER, str(feb.id), d2, False, "", "no band for the service level")
    suite.tick(f"2026-03-05T12:00{AMS}")
    # A snapshot in each store that takes them: the agreement, and February's availability window.
    ag.take_snapshot(UUID(aid))
    window = next(w for w in m.window_ids(aid) if m.repository.get(w).objective_id == "availability"
                  and m.repository.get(w).breaches)  # fmt: skip
    m.take_snapshot(window)
    return {
        "agreement_id": aid,
        "amendment_id": amendment,
        "statement_ids": [str(s.id) for s in b.statements(P_CUSTOMER, aid)],
        "disputes": [d1, d2],
        "snapshots": {"agreements": [aid], "metrics": [str(window)]},
    }


def seal_all(suite: Suite, keys_dir: Path) -> dict[str, Any]:
    sealed: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as private_dir:
        for name in SERVICES:
            app: AccordApplication = getattr(suite, name)
            private, public = generate_chain_keypair(Path(private_dir) / name, name)
            cp = seal(app, load_private_key(private))
            keys_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(public, keys_dir / f"{name}.pub.pem")
            sealed[name] = {"position": cp.position, "chain_hash": cp.chain_hash.hex(), "key_id": cp.key_id}
    return sealed


def after_the_seal(suite: Suite) -> None:
    """An unsealed tail in each log: one more batch, judged and billed as far as it goes."""
    suite.metrics.record(COLLECTOR, [outage("mar", f"2026-03-04T08:00{AMS}", 20)])
    suite.tick(f"2026-03-06T12:00{AMS}")


def describe(app: AccordApplication) -> dict[str, Any]:
    topics: Counter[str] = Counter()
    after = 0
    while True:
        page = app.select_notifications(after, 1000)
        if not page:
            break
        topics.update(n.topic for n in page)
        after = page[-1].id
    return {"head": app.head_position(), "events": sum(topics.values()), "topics": dict(sorted(topics.items()))}


def run(make_env: Any, keys_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    suite = Suite(make_env)
    try:
        ids = journey(suite)
        sealed = seal_all(suite, keys_dir)
        after_the_seal(suite)
        stores = {name: {**describe(getattr(suite, name)), "sealed": sealed[name]} for name in SERVICES}
    finally:
        suite.close()
    return ids, stores


def compact_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("VACUUM")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def pg_connect(dbname: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None, dbname=dbname, autocommit=True
    )


def pg_dump(dbname: str, target: Path) -> None:
    env = {"PGPASSWORD": PG_PASSWORD} if PG_PASSWORD else {}
    out = subprocess.run(
        ["pg_dump", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "--inserts", "--no-owner", "--no-privileges",
         "--no-comments", dbname],
        check=True, capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin:/usr/local/bin"},
    )  # fmt: skip
    target.write_text(out.stdout)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Write the upgrade fixtures (tests/fixtures/upgrade/).")
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "tests" / "fixtures" / "upgrade")
    parser.add_argument("--release", default="", help="the release's commit (default: git rev-parse HEAD)")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    commit = (
        args.release
        or subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    )
    manifest: dict[str, Any] = {"release": commit, "written_at": datetime.now().astimezone().isoformat()}

    for name in SERVICES:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{out / name}.sqlite{suffix}").unlink(missing_ok=True)
    ids, stores = run(lambda name: sqlite_env(out / f"{name}.sqlite"), out / "keys" / "sqlite")
    for name in SERVICES:
        compact_sqlite(out / f"{name}.sqlite")
    manifest["sqlite"] = {**ids, "stores": stores}

    databases = {name: f"accord_upgrade_{name}_{uuid.uuid4().hex[:8]}" for name in SERVICES}
    with pg_connect() as conn:
        for db in databases.values():
            conn.execute(f'CREATE DATABASE "{db}"')
    try:
        ids, stores = run(lambda name: postgres_env(databases[name]), out / "keys" / "postgres")
        (out / "postgres").mkdir(exist_ok=True)
        for name, db in databases.items():
            pg_dump(db, out / "postgres" / f"{name}.sql")
    finally:
        with pg_connect() as conn:
            for db in databases.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    manifest["postgres"] = {**ids, "stores": stores}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"upgrade fixtures of {commit[:7]} written to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
