"""Tamper evidence on both stores: a 10,000-event log is hash-chained as it is written and
sealed every ~1,000 events; the database is then edited behind the application's back
(single bytes, deletions, insertions, swaps, truncations, forged checkpoints) and the
verifier must name the first problem, its kind and its position — and say nothing about
an untouched log."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from eventsourcing.persistence import IntegrityError, StoredEvent

from accord_kit.chain import (
    SEALED_TOPIC,
    ZERO_HASH,
    ChainError,
    Checkpoint,
    Kind,
    RecordView,
    Report,
    chain_hashes_of,
    checkpoint_of,
    generate_chain_keypair,
    key_id,
    load_private_key,
    load_public_key,
    private_key_pem,
    read_records,
    seal,
    verify,
    verify_store,
)
from accord_kit.settings import ServiceSettings
from accord_kit.testing import fixtures
from accord_kit.testing.counter import Counter, Counters
from accord_kit.testing.tamper import Store

SEED = 20260101
CHUNKS = 100  # counters, each saved once with 100 events (Created + 99 Incremented): 10,000 events
PER_CHUNK = 99
SEAL_EVERY = 10  # chunks: a checkpoint every 1,000 events


def _key(rng: random.Random) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))


class Db(Store):
    """The store's tables, edited directly with sqlite3 / psycopg, not through the app."""

    def __init__(self, kind: str, env: dict[str, str], app: Counters) -> None:
        recorder: Any = app.recorder
        super().__init__(kind, env, recorder.events_table_name)
        self.chain: str = recorder.chain_table_name
        self.names["chain"] = self.chain

    @contextmanager
    def atomic(self) -> Iterator[None]:
        if self.kind == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        else:
            with self.conn.transaction():
                yield

    def state(self, n: int) -> bytes:
        return bytes(self.row(n)[3])

    def insert(self, n: int, row: tuple[Any, ...]) -> None:
        self.x(
            "INSERT INTO {events} ({id}, originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?, ?)",
            (n, *row),
        )

    def delete(self, n: int) -> None:
        self.x("DELETE FROM {events} WHERE {id} = ?", (n,))

    def delete_from(self, n: int) -> None:
        self.x("DELETE FROM {events} WHERE {id} >= ?", (n,))

    def shift(self, start: int, by: int) -> None:
        """Renumber the records from `start` on by `by` (in two steps: ids are unique)."""
        with self.atomic():
            self.x("UPDATE {events} SET {id} = {id} + 100000000 WHERE {id} >= ?", (start,))
            self.x("UPDATE {events} SET {id} = {id} - 100000000 + ? WHERE {id} >= 100000000", (by,))

    def swap(self, a: int, b: int) -> None:
        """Swap two records' contents (each keeps its position)."""
        ra, rb = self.row(a), self.row(b)
        with self.atomic():
            self.x("UPDATE {events} SET originator_version = -1 WHERE {id} = ?", (a,))
            for n, r in ((b, ra), (a, rb)):
                sql = "UPDATE {events} SET originator_id = ?, originator_version = ?, topic = ?, state = ? "
                self.x(sql + "WHERE {id} = ?", (*r, n))

    def chain_hash(self, n: int) -> bytes:
        return bytes(self.x("SELECT hash FROM {chain} WHERE notification_id = ?", (n,))[0][0])

    def set_chain(self, n: int, h: bytes) -> None:
        self.x("UPDATE {chain} SET hash = ? WHERE notification_id = ?", (h, n))

    def insert_chain(self, n: int, h: bytes) -> None:
        self.x("INSERT INTO {chain} (notification_id, hash) VALUES (?, ?)", (n, h))

    def delete_chain(self, n: int) -> None:
        self.x("DELETE FROM {chain} WHERE notification_id = ?", (n,))

    def delete_chain_from(self, n: int) -> None:
        self.x("DELETE FROM {chain} WHERE notification_id >= ?", (n,))

    def rechain_from(self, app: Counters, n: int) -> None:
        """What an attacker with write access can do: recompute the (unkeyed) chain from n on."""
        rows = self.x("SELECT hash FROM {chain} WHERE notification_id < ? ORDER BY notification_id DESC LIMIT 1", (n,))
        prev = bytes(rows[0][0]) if rows else ZERO_HASH
        fresh = [(h, nid) for nid, h in chain_hashes_of(read_records(app.recorder, after=n - 1), prev)]
        sql = f"UPDATE {self.chain} SET hash = ? WHERE notification_id = ?"
        with self.atomic():
            if self.kind == "sqlite":
                self.conn.executemany(sql, fresh)
            else:
                self.conn.cursor().executemany(sql.replace("?", "%s"), fresh)


@dataclass
class Log:
    app: Counters
    env: dict[str, str]
    db: Db
    key: Ed25519PrivateKey
    public: Ed25519PublicKey
    checkpoints: list[Checkpoint]
    head: int
    rng: random.Random

    def verify(self, *, reference: bool = True, **kwargs: Any) -> Report:
        if not reference:
            return verify_store(self.app, [self.public], **kwargs)
        return verify_both(self.app, [self.public], **kwargs)

    def window(self, n: int) -> dict[str, Any]:
        """Verify incrementally: from the last checkpoint before n to the next one at or after it."""
        start = max((c for c in self.checkpoints if c.position < n), key=lambda c: c.position, default=None)
        stop = min((c.position for c in self.checkpoints if c.position >= n), default=None)
        return {"start": start, "stop": stop}


def verify_both(app: Counters, keys: list[Ed25519PublicKey], **kwargs: Any) -> Report:
    """verify_store (page by page), checked against chain.verify over the whole log held in
    memory: the two must give the same report, whatever was done to the log."""
    report = verify_store(app, keys, **kwargs)
    start: Checkpoint | None = kwargs.get("start")
    stop: int | None = kwargs.get("stop")
    recorder: Any = app.recorder
    lo = start.position if start is not None else 0
    end = stop if stop is not None else max(recorder.chain_heads())
    records = read_records(recorder, after=lo, stop=end)
    found = [checkpoint_of(r, app.mapper) for r in records if r.topic == SEALED_TOPIC]
    cps = [*found, *kwargs.get("checkpoints", ())]
    hashes = recorder.select_chain_hashes(lo, end)
    assert report == verify(records, hashes, cps, keys, service=app.service, start=start, stop=stop)
    return report


def build_log(env: dict[str, str], kind: str) -> Log:
    rng = random.Random(SEED)
    app = Counters(env)
    key = _key(rng)
    checkpoints: list[Checkpoint] = []
    for k in range(CHUNKS):
        app.increment_many(f"c{k}", [1 + k % 7] * PER_CHUNK)
        if k % SEAL_EVERY == SEAL_EVERY - 1:
            checkpoints.append(seal(app, key))
    return Log(app, env, Db(kind, env, app), key, key.public_key(), checkpoints, app.head_position(), rng)


@dataclass
class Built:
    """A log built once per module and store kind; each test gets a copy of its store."""

    env: dict[str, str]
    checkpoints: list[Checkpoint]


@pytest.fixture(scope="module")
def built_logs(
    tmp_path_factory: pytest.TempPathFactory, module_postgres_db: Callable[[], str]
) -> Callable[[str], Built]:
    built: dict[str, Built] = {}

    def get(kind: str) -> Built:
        if kind not in built:
            if kind == "sqlite":
                env = fixtures.sqlite_env(tmp_path_factory.mktemp("chain") / "chain.sqlite")
            else:
                env = fixtures.postgres_env(module_postgres_db())
            log = build_log(env, kind)
            log.db.close()
            log.app.close()
            built[kind] = Built(env, log.checkpoints)
        return built[kind]

    return get


@pytest.fixture
def log(
    built_logs: Callable[[str], Built], store_kind: str, tmp_path: Path, postgres_db: Callable[..., str]
) -> Iterator[Log]:
    """A copy of the module's 10,000-event log (built as build_log builds it) on the store kind."""
    built = built_logs(store_kind)
    if store_kind == "sqlite":
        copy = tmp_path / "chain.sqlite"
        src, dst = sqlite3.connect(built.env["SQLITE_DBNAME"]), sqlite3.connect(copy)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        env = fixtures.sqlite_env(copy)
    else:
        env = fixtures.postgres_env(postgres_db(template=built.env["POSTGRES_DBNAME"]))
    rng = random.Random(SEED)
    key = _key(rng)  # the same key build_log drew first
    app = Counters(env)
    copied = Log(
        app, env, Db(store_kind, env, app), key, key.public_key(), list(built.checkpoints), app.head_position(), rng
    )
    yield copied
    copied.db.close()
    copied.app.close()


def expect(report: Report, kind: Kind, position: int) -> None:
    assert report.problem is not None, f"expected {kind} at {position}, but the log verified clean"
    assert (report.problem.kind, report.problem.position) == (kind, position), str(report.problem)


def test_an_untouched_log_verifies_clean_in_every_way(log: Log) -> None:
    # 10,000 counter events + the Checkpoints aggregate's Opened + 10 Sealed.
    assert log.head == CHUNKS * (PER_CHUNK + 1) + 1 + len(log.checkpoints)
    # Each checkpoint seals the head just before its own record (the first follows the
    # Checkpoints aggregate's Opened event).
    assert [(c.at or 0) - c.position for c in log.checkpoints] == [2] + [1] * 9

    t = time.perf_counter()
    report = log.verify(reference=False)
    full = time.perf_counter() - t
    assert report == log.verify()
    assert report.ok, report.problem
    assert report.records == log.head
    assert report.checkpoints == len(log.checkpoints) == 10
    assert report.sealed_through == log.checkpoints[-1].position
    assert report.last_checkpoint is not None and report.last_checkpoint.position == log.checkpoints[-1].position

    # With the log and the public key alone (no chain table): still clean.
    records = read_records(log.app.recorder)
    found = [checkpoint_of(r, log.app.mapper) for r in records if "Checkpoints.Sealed" in r.topic]
    t = time.perf_counter()
    bare = verify(records, None, found, [log.public], service=log.app.service)
    pure = time.perf_counter() - t
    assert bare.ok and bare.checkpoints == 10

    # Incrementally from each checkpoint, and window by window: clean.
    for i, cp in enumerate(log.checkpoints):
        assert log.verify(start=cp).ok
        stop = log.checkpoints[i + 1].position if i + 1 < len(log.checkpoints) else None
        assert log.verify(start=cp, stop=stop).ok
    t = time.perf_counter()
    tail = log.verify(start=report.last_checkpoint, reference=False)
    incremental = time.perf_counter() - t
    assert tail == log.verify(start=report.last_checkpoint)
    assert tail.ok and tail.records == log.head - log.checkpoints[-1].position

    # Checkpoints kept outside the store (e.g. by an auditor) agree too.
    assert log.verify(checkpoints=[dataclasses.replace(c, at=None) for c in log.checkpoints]).ok
    print(
        f"\n[{log.db.kind}] {log.head} records: verify_store {full * 1000:.0f} ms, verify() alone "
        f"{pure * 1000:.0f} ms, from the last checkpoint {incremental * 1000:.1f} ms"
    )


def test_every_single_byte_edit_is_found_at_its_record(log: Log) -> None:
    rng = random.Random(SEED + 1)
    started = time.perf_counter()
    for i in range(1000):
        n = rng.randint(1, log.head)
        original = log.db.state(n)
        offset = rng.randrange(len(original))
        edited = original[:offset] + bytes([original[offset] ^ rng.randint(1, 255)]) + original[offset + 1 :]
        log.db.set_state(n, edited)
        try:
            # Every 50th edit verifies the whole log; the others verify incrementally
            # between the two checkpoints around the edit (what a periodic verifier does).
            # Every 4th is also checked against chain.verify over the log held in memory.
            check = i % 4 == 0
            report = log.verify(reference=check) if i % 50 == 0 else log.verify(reference=check, **log.window(n))
            assert report.problem is not None, f"edit {i}: byte {offset} of record {n} was not detected"
            assert (report.problem.kind, report.problem.position) == (Kind.ALTERED, n), f"edit {i}: {report.problem}"
        finally:
            log.db.set_state(n, original)
    elapsed = time.perf_counter() - started
    assert log.verify().ok
    print(f"\n[{log.db.kind}] 1,000 edits found in {elapsed:.1f} s")


def test_a_deleted_record_is_missing_at_its_position(log: Log) -> None:
    n = 4321
    row, h = log.db.row(n), log.db.chain_hash(n)

    log.db.delete(n)  # the chain still says a record was there
    expect(log.verify(), Kind.MISSING, n)
    expect(log.verify(**log.window(n)), Kind.MISSING, n)

    log.db.delete_chain(n)  # and its chain entry too: the next record no longer chains
    expect(log.verify(), Kind.MISSING, n)

    log.db.insert(n, row)
    log.db.insert_chain(n, h)
    assert log.verify().ok

    log.db.delete(n)  # deleted, and the later records renumbered to close the gap
    log.db.shift(n + 1, -1)
    expect(log.verify(), Kind.MISSING, n)
    log.db.shift(n, +1)
    log.db.insert(n, row)
    assert log.verify().ok

    first = 1  # the very first record
    row = log.db.row(first)
    log.db.delete(first)
    expect(log.verify(), Kind.MISSING, first)
    log.db.insert(first, row)
    assert log.verify().ok


def test_inserted_records_are_found_where_they_were_inserted(log: Log) -> None:
    # A copy of an existing record (under a new version, the key is unique) appended.
    oid, version, topic, state = log.db.row(1234)
    log.db.insert(log.head + 1, (oid, version + 1_000_000, topic, state))
    expect(log.verify(), Kind.INSERTED, log.head + 1)
    log.db.delete(log.head + 1)
    assert log.verify().ok

    # A forged record in the middle, the later records pushed up to make room.
    n = 5000
    forged_id = uuid.uuid4()
    forged = (
        forged_id.hex if log.db.kind == "sqlite" else forged_id,
        1,
        log.db.row(n)[2],
        b'{"amount":1000000}',
    )
    log.db.shift(n, +1)
    log.db.insert(n, forged)
    expect(log.verify(), Kind.INSERTED, n)
    expect(log.verify(**log.window(n)), Kind.INSERTED, n)
    log.db.delete(n)
    log.db.shift(n + 1, -1)
    assert log.verify().ok

    if log.db.kind == "postgres":
        # PostgreSQL leaves honest gaps in the ids after a rolled-back insert (here an
        # optimistic-concurrency conflict). They are no alarm; a forged record with a
        # forged chain entry put into one is found by the record after it.
        other = Counters(log.env)
        try:
            mine, theirs = log.app.get_counter("c0"), other.get_counter("c0")
            mine.increment(1)
            log.app.save(mine)
            theirs.increment(1)
            with pytest.raises(IntegrityError):
                other.save(theirs)
        finally:
            other.close()
        log.app.increment("c0", 1)
        gap = log.head + 2
        assert [r.notification_id for r in read_records(log.app.recorder, after=log.head)] == [gap - 1, gap + 1]
        assert log.verify().ok
        log.db.insert(gap, forged)
        log.db.insert_chain(gap, bytes(32))
        expect(log.verify(), Kind.INSERTED, gap)


def test_swapped_records_are_reordered_at_the_first_of_them(log: Log) -> None:
    for a, b in ((1234, 7777), (2500, 2501), (1, 10_000)):
        log.db.swap(a, b)
        expect(log.verify(), Kind.REORDERED, a)
        log.db.swap(a, b)
        assert log.verify().ok


def test_a_truncated_log_is_found_where_it_ends(log: Log, store_kind: str) -> None:
    t = 8000
    log.db.delete_from(t)  # the tail of records, the chain left alone
    expect(log.verify(), Kind.TRUNCATED, t)
    if store_kind == "sqlite":
        # SQLite would reuse the deleted ids: the recorder refuses to write behind its chain.
        with pytest.raises(ChainError):
            log.app.increment("late", 1)
        assert log.app.head_position() == t - 1

    # The chain's tail removed as well: the log now looks like a clean prefix, with its
    # checkpoints after 8000 gone with it. Only a checkpoint kept outside the store shows it.
    log.db.delete_chain_from(t)
    assert log.verify().ok
    kept = dataclasses.replace(log.checkpoints[-1], at=None)
    expect(log.verify(checkpoints=[kept]), Kind.TRUNCATED, t)
    expect(verify(read_records(log.app.recorder), None, [kept], [log.public]), Kind.TRUNCATED, t)


def test_a_checkpoint_signed_with_another_key_is_bad(log: Log) -> None:
    impostor = _key(log.rng)
    log.app.increment_many("after", [1] * 10)
    # Sealed through the app, but with a key the auditor does not trust.
    forged = seal(log.app, impostor, previous_keys=[log.public])
    assert forged.at is not None
    expect(log.verify(), Kind.BAD_CHECKPOINT, forged.at)
    # Verified with the wrong public key only: the first genuine checkpoint is bad.
    expect(verify_both(log.app, [impostor.public_key()]), Kind.BAD_CHECKPOINT, log.checkpoints[0].at or -1)
    # Trusting both keys (e.g. a rotation), everything verifies.
    assert verify_both(log.app, [log.public, impostor.public_key()]).ok


def test_a_checkpoint_resigned_in_place_is_bad(log: Log) -> None:
    cp = log.checkpoints[4]
    assert cp.at is not None
    oid, version, topic, state = log.db.row(cp.at)
    stored = StoredEvent(uuid.UUID(str(oid)), version, topic, bytes(state))
    event = log.app.mapper.to_domain_event(stored)
    impostor = _key(log.rng)
    # Keep the genuine key id, sign with another key.
    resigned = dataclasses.replace(
        event,  # type: ignore[type-var]
        signature=impostor.sign(cp.payload()).hex(),
    )
    log.db.set_state(cp.at, log.app.mapper.to_stored_event(resigned).state)
    expect(log.verify(), Kind.ALTERED, cp.at)  # the chain sees the record changed...
    log.db.rechain_from(log.app, cp.at)
    report = log.verify()  # ...and with the chain recomputed, the signature does not verify
    expect(report, Kind.BAD_CHECKPOINT, cp.at)
    assert report.problem is not None and "does not verify" in report.problem.detail
    # Re-signed under the impostor's own key id: an untrusted key.
    event2 = dataclasses.replace(
        event,  # type: ignore[type-var]
        key_id=key_id(impostor.public_key()),
        signature=impostor.sign(dataclasses.replace(cp, key_id=key_id(impostor.public_key())).payload()).hex(),
    )
    log.db.set_state(cp.at, log.app.mapper.to_stored_event(event2).state)
    log.db.rechain_from(log.app, cp.at)
    expect(log.verify(), Kind.BAD_CHECKPOINT, cp.at)


def test_a_rewrite_with_a_recomputed_chain_is_caught_by_the_next_checkpoint(log: Log) -> None:
    n = 4567
    state = log.db.state(n)
    log.db.set_state(n, bytes([state[0] ^ 1]) + state[1:])
    log.db.rechain_from(log.app, n)
    after = next(c for c in log.checkpoints if c.position >= n)
    before = max(c.position for c in log.checkpoints if c.position < n)
    report = log.verify()
    expect(report, Kind.BAD_CHECKPOINT, after.position)
    assert report.problem is not None and report.problem.since == before
    # The same from the records and the public key alone.
    records = read_records(log.app.recorder)
    found = [checkpoint_of(r, log.app.mapper) for r in records if "Checkpoints.Sealed" in r.topic]
    expect(verify(records, None, found, [log.public]), Kind.BAD_CHECKPOINT, after.position)


def test_seal_skips_an_idle_log_and_refuses_a_tampered_one(log: Log) -> None:
    last = log.checkpoints[-1]
    again = seal(log.app, log.key)
    assert again.position == last.position  # nothing but the checkpoint itself since
    assert log.app.head_position() == log.head
    log.app.increment_many("more", [1] * 5)
    fresh = seal(log.app, log.key)
    assert fresh.position == log.head + 6 and fresh.at == log.head + 7
    log.app.increment("more", 1)
    n = log.head + 8  # after the last checkpoint: seal() verifies from there
    log.db.set_state(n, log.db.state(n) + b" ")
    with pytest.raises(ChainError, match=f"ALTERED at position {n}"):
        seal(log.app, log.key)


def test_a_store_written_before_chaining_is_adopted(
    make_store_env: Callable[[str], dict[str, str]], store_kind: str
) -> None:
    env = make_store_env("legacy")
    plain = {
        **env,
        "PERSISTENCE_MODULE": "eventsourcing.sqlite" if store_kind == "sqlite" else "eventsourcing.postgres",
    }
    legacy = Counters(plain)
    legacy.increment_many("old", [1] * 49)
    legacy.close()
    app = Counters(env)  # creates the chain table and chains the 50 records found
    try:
        app.increment_many("new", [2] * 49)
        key = Ed25519PrivateKey.generate()
        cp = seal(app, key)
        assert cp.position == 100
        report = verify_store(app, [key.public_key()])
        assert report.ok and report.records == 102 and report.checkpoints == 1
    finally:
        app.close()


def test_concurrent_writers_keep_one_chain(make_store_env: Callable[[str], dict[str, str]]) -> None:
    env = make_store_env("busy")
    apps = [Counters(env) for _ in range(3)]  # separate pools, as separate processes would have
    errors: list[BaseException] = []

    def work(app: Counters, name: str) -> None:
        try:
            for i in range(40):
                app.increment(name, 1)
                while True:  # a shared counter: optimistic conflicts (and, in PostgreSQL, id gaps)
                    try:
                        app.increment("shared", 1)
                        break
                    except IntegrityError:
                        continue
                if i % 10 == 0:
                    app.increment_many(f"{name}-batch{i}", [1] * 20)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(a, f"w{i}")) for i, a in enumerate(apps)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        key = Ed25519PrivateKey.generate()
        seal(apps[0], key)
        report = verify_store(apps[1], [key.public_key()])
        assert report.ok, report.problem
        assert apps[2].get_counter("shared").value == 120
    finally:
        for a in apps:
            a.close()


def test_signing_keys_are_written_and_loaded_as_pem(tmp_path: Path) -> None:
    private, public = generate_chain_keypair(tmp_path / "keys", "agreements")
    assert private.name == "agreements_chain_private.pem" and private.stat().st_mode & 0o777 == 0o600
    key = load_private_key(private)
    assert key_id(load_public_key(public)) == key_id(key.public_key())
    assert load_private_key(private_key_pem(key)).public_key() == key.public_key()
    other = generate_private_key(SECP256R1())

    pem = other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    with pytest.raises(ValueError, match="not an Ed25519"):
        load_private_key(pem)


def test_both_stores_are_configured_with_the_chained_factories(tmp_path: Path) -> None:
    pg = ServiceSettings.from_env("agreements", {"ACCORD_PERSISTENCE": "postgres"})
    assert pg.event_store_env()["PERSISTENCE_MODULE"] == "accord_kit.persistence:ChainedPostgresFactory"
    assert fixtures.postgres_env("x")["PERSISTENCE_MODULE"] == "accord_kit.persistence:ChainedPostgresFactory"
    lite = ServiceSettings.from_env("agreements", {"ACCORD_VAR_DIR": str(tmp_path)})
    assert lite.event_store_env()["PERSISTENCE_MODULE"] == "accord_kit.persistence:DurableSQLiteFactory"
    app = Counters(fixtures.sqlite_env(tmp_path / "c.sqlite"))
    try:
        app.save(Counter("x"))
        head_id, _ = app.recorder.chain_head()  # type: ignore[attr-defined]
        assert head_id == 1
        assert RecordView.of(app.recorder.select_notifications(1, 1)[0]).notification_id == 1
    finally:
        app.close()
