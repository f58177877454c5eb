"""The verifiers read a log page by page in bounded memory (`chain.ChainVerifier`, under
`verify_store`, `verify_chain`, `verify_pages` and VerifyLog): their reports must be the
ones `chain.verify` gives over the whole log held in memory, whatever was done to the log —
checked here on synthetic logs tampered with at random (records edited, deleted, inserted,
swapped, cut off, rechained; checkpoints forged, false, out of order, kept outside) — and
what they hold at once must not grow with the log."""

from __future__ import annotations

import dataclasses
import gc
import random
import sqlite3
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from accord.audit.v1 import audit_pb2
from accord_kit.audit import ReadChain, record_message, verify_chain, verify_pages
from accord_kit.chain import (
    SEALED_TOPIC,
    ZERO_HASH,
    ChainVerifier,
    Checkpoint,
    Checkpoints,
    Kind,
    Page,
    RecordView,
    Report,
    checkpoint_of,
    default_mapper,
    link,
    pages_in_memory,
    seal,
    store_pages,
    verify,
    verify_store,
)
from accord_kit.testing import fixtures
from accord_kit.testing.counter import Counters

SEED = 20260102
SERVICE = "probe"
CID = Checkpoints.create_id(SERVICE)
MAPPER = default_mapper()
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def _key(rng: random.Random) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))


def plain(n: int, version: int | None = None) -> RecordView:
    """An ordinary record, its content a function of n (so a long log need not be held)."""
    oid = str(uuid5(NAMESPACE_URL, f"probe-{n % 13}"))
    return RecordView(
        n, oid, version if version is not None else n, "probe:Thing", b'{"n":%d,"pad":"%s"}' % (n, b"x" * (n % 50))
    )


def sealed(n: int, version: int, cp: Checkpoint) -> RecordView:
    """A record of the log holding a checkpoint, as `seal` stores it."""
    event = Checkpoints.Sealed(  # type: ignore[call-arg]
        originator_id=CID,
        originator_version=version,
        timestamp=WHEN,
        service=cp.service,
        position=cp.position,
        chain_hash=cp.chain_hash.hex(),
        sealed_at=cp.sealed_at,
        key_id=cp.key_id,
        signature=cp.signature.hex(),
    )
    stored = MAPPER.to_stored_event(event)
    return RecordView(n, str(CID), version, stored.topic, bytes(stored.state))


def rechain(records: dict[int, RecordView], chain: dict[int, bytes], start: int) -> None:
    """What an attacker with write access can do: recompute the chain from `start` on."""
    prev = max(((k, h) for k, h in chain.items() if k < start), default=(0, ZERO_HASH))[1]
    for k in [k for k in chain if k >= start]:
        del chain[k]
    for n in sorted(k for k in records if k >= start):
        r = records[n]
        prev = link(prev, n, r.originator_id, r.originator_version, r.topic, r.state)
        chain[n] = prev


@dataclasses.dataclass
class Synthetic:
    """A log held in memory: records and chain by position, and the checkpoints sealed in it."""

    records: dict[int, RecordView]
    chain: dict[int, bytes]
    checkpoints: list[Checkpoint]
    key: Ed25519PrivateKey
    version: int  # the Checkpoints aggregate's last version

    @property
    def end(self) -> int:
        return max([0, *self.records, *self.chain])

    def append(self, r: RecordView) -> None:
        """A record appended at the end with its (genuine) chain entry."""
        prev = self.chain[max(self.chain)] if self.chain else ZERO_HASH
        self.records[r.notification_id] = r
        self.chain[r.notification_id] = link(
            prev, r.notification_id, r.originator_id, r.originator_version, r.topic, r.state
        )

    def seal_record(self, n: int, position: int, chain_hash: bytes, key: Ed25519PrivateKey) -> Checkpoint:
        self.version += 1
        cp = Checkpoint.sign(SERVICE, position, chain_hash, WHEN, key)
        self.append(sealed(n, self.version, cp))
        return dataclasses.replace(cp, at=n)

    def read(self) -> ReadChain:
        return serve(self.records.get, self.chain.get, self.end)

    def pages(self, rng: random.Random) -> list[Page]:
        """Pages over consecutive ranges of random lengths (records and chain of each range)."""
        out: list[Page] = []
        after, end = 0, self.end
        while after < end:
            through = min(end, after + rng.randint(1, 40))
            records = [self.records[k] for k in sorted(self.records) if after < k <= through]
            out.append((records, {k: h for k, h in sorted(self.chain.items()) if after < k <= through}))
            after = through
        return out


def genuine(rng: random.Random, size: int) -> Synthetic:
    """An honest log: ids with a few gaps (as PostgreSQL leaves them), a checkpoint every
    ~15 records sealing a position just behind it (or, while others wrote, further back)."""
    log = Synthetic({}, {}, [], _key(rng), 0)
    n = 0
    while len(log.records) < size:
        n += 1 + (1 if rng.random() < 0.03 else 0)
        if len(log.records) > 6 and rng.random() < 1 / 15:
            behind = sorted(log.records)[-rng.choice((1, 1, 1, 2, 6))]
            log.checkpoints.append(log.seal_record(n, behind, log.chain[behind], log.key))
        else:
            log.append(plain(n))
    return log


def serve(record_at: Callable[[int], RecordView | None], hash_at: Callable[[int], bytes | None], end: int) -> ReadChain:
    """ReadChain over a log, as `audit.read_chain` pages it (at most `limit` positions a page)."""

    def read(after: int, limit: int, stop: int) -> audit_pb2.ReadChainResponse:
        last = min(stop, end) if stop else end
        page = audit_pb2.ReadChainResponse(
            service=SERVICE, log_head_position=end, chain_head_position=end, through_position=after
        )
        n = after
        while n < last and n - after < limit:
            n += 1
            r, h = record_at(n), hash_at(n)
            if r is not None:
                page.records.append(record_message(r))
            if h is not None:
                page.chain.append(audit_pb2.ChainEntry(position=n, hash=h))
        page.through_position = n
        page.more = n < last
        return page

    return read


# -- what can be done to a log -----------------------------------------------------------------------


def tamper(log: Synthetic, rng: random.Random) -> str:
    """One change to the log, chosen at random; says what it did."""
    records, chain = log.records, log.chain
    ids = sorted(records)
    if not ids:
        return "nothing (no record left)"
    n = rng.choice(ids)
    later = [k for k in ids if k > n]
    what = rng.randrange(14)
    if what == 0:
        r = records[n]
        i = rng.randrange(len(r.state))
        records[n] = dataclasses.replace(r, state=r.state[:i] + bytes([r.state[i] ^ 0x5A]) + r.state[i + 1 :])
        return f"byte {i} of {n} edited"
    if what == 1:
        del records[n]
        return f"{n} deleted"
    if what == 2:
        del records[n]
        chain.pop(n, None)
        return f"{n} deleted with its chain entry"
    if what == 3:  # deleted, the later records renumbered down
        moved = {k: records.pop(k) for k in [n, *later]}
        for k in later:
            records[k - 1] = dataclasses.replace(moved[k], notification_id=k - 1)
        return f"{n} deleted, later records moved down"
    if what == 4:  # forged record, the later ones pushed up; with a forged chain entry or none
        moved = {k: records.pop(k) for k in [n, *later]}
        for k in [n, *later]:
            records[k + 1] = dataclasses.replace(moved[k], notification_id=k + 1)
        records[n] = plain(n, version=10_000 + n)
        if rng.random() < 0.5:
            rechain(records, chain, n)
            return f"forged record at {n}, later pushed up, chain recomputed"
        return f"forged record at {n}, later pushed up"
    if what == 5 and later:
        m = rng.choice(later)
        a, b = records[n], records[m]
        records[n] = dataclasses.replace(b, notification_id=n)
        records[m] = dataclasses.replace(a, notification_id=m)
        return f"{n} and {m} swapped"
    if what == 6:
        for k in [n, *later]:
            del records[k]
        if rng.random() < 0.5:
            for k in [k for k in chain if k >= n]:
                del chain[k]
            return f"cut off from {n} with the chain"
        return f"cut off from {n}"
    if what == 7:
        r = records[n]
        records[n] = dataclasses.replace(r, state=r.state + b" ")
        rechain(records, chain, n)
        return f"{n} edited, chain recomputed"
    if what == 8:
        earlier = [k for k in ids if k < n and records[k].topic != SEALED_TOPIC]
        if earlier:
            m = rng.choice(earlier)
            records[n] = dataclasses.replace(records[m], notification_id=n)
            return f"{n} replaced by a copy of {m}"
    if what == 9:  # a checkpoint signed with a key nobody trusts, chained as if genuine
        behind = rng.choice(ids[: max(1, ids.index(n))])
        log.seal_record(log.end + 1, behind, chain.get(behind, bytes(32)), _key(rng))
        return f"checkpoint by an impostor sealing {behind}"
    if what == 10:  # a false checkpoint (the genuine key, a wrong hash) sealing an early position
        log.seal_record(log.end + 1, n, bytes(rng.randbytes(32)), log.key)
        return f"false checkpoint sealing {n} at the end"
    if what == 11 and n in chain:  # a genuine checkpoint, sealing a position far behind, out of order
        log.seal_record(log.end + 1, n, chain[n], log.key)
        return f"checkpoint sealing {n} far behind"
    if what == 12:  # a checkpoint sealing a position without a record (a gap, or deleted)
        gaps = [k for k in range(1, log.end) if k not in records]
        if gaps:
            gap = rng.choice(gaps)
            log.seal_record(log.end + 1, gap, bytes(32), log.key)
            return f"checkpoint sealing the gap {gap}"
    if what == 13:
        r = records[n]
        chain[n] = bytes(rng.randbytes(32))
        return f"chain entry of {n} forged ({r.topic})"
    return "nothing"


def outside(log: Synthetic, rng: random.Random, genuine_cps: list[Checkpoint]) -> list[Checkpoint]:
    """Checkpoints an auditor kept: copies of some genuine ones, and sometimes a false one,
    one from an impostor, or one sealing a position beyond the log's end."""
    kept = [dataclasses.replace(c, at=None) for c in genuine_cps if rng.random() < 0.3]
    r = rng.random()
    if r < 0.15:
        kept.append(Checkpoint.sign(SERVICE, log.end + rng.randint(1, 5), bytes(32), WHEN, log.key))
    elif r < 0.25 and log.chain:
        p = rng.choice(sorted(log.chain))
        kept.append(Checkpoint.sign(SERVICE, p, bytes(rng.randbytes(32)), WHEN, log.key))
    elif r < 0.3:
        kept.append(Checkpoint.sign(SERVICE, rng.randint(1, max(1, log.end)), bytes(32), WHEN, _key(rng)))
    rng.shuffle(kept)
    return kept


def reference(log: Synthetic, **kwargs: Any) -> Report:
    """chain.verify over the whole log held in memory, with the checkpoints found in it."""
    start: Checkpoint | None = kwargs.get("start")
    stop: int | None = kwargs.get("stop")
    lo = start.position if start is not None else 0
    records = [log.records[k] for k in sorted(log.records) if k > lo and (stop is None or k <= stop)]
    found = [checkpoint_of(r, MAPPER) for r in records if r.topic == SEALED_TOPIC]
    cps = [*found, *kwargs.get("checkpoints", ())]
    return verify(records, log.chain, cps, [log.key.public_key()], service=SERVICE, start=start, stop=stop)


def streamed(log: Synthetic, pages: list[Page], look_behind: int, **kwargs: Any) -> Report:
    verifier = ChainVerifier([log.key.public_key()], reread=pages_in_memory(pages), service=SERVICE, **kwargs)
    verifier.look_behind = look_behind  # small: checkpoints sealing positions behind it are read alone
    for records, hashes in pages:
        verifier.add(records, hashes)
    return verifier.finish()


# -- the same reports as chain.verify --------------------------------------------------------------


def test_streamed_reports_equal_verify_over_the_whole_log_whatever_was_done_to_it() -> None:
    rng = random.Random(SEED)
    kinds: dict[str, int] = {}
    for case in range(600):
        log = genuine(rng, rng.randint(20, 160))
        genuine_cps = list(log.checkpoints)
        done = [tamper(log, rng) for _ in range(rng.choice((0, 1, 1, 1, 2, 3)))]
        kwargs: dict[str, Any] = {}
        if genuine_cps and rng.random() < 0.3:
            kwargs["start"] = dataclasses.replace(rng.choice(genuine_cps), at=None)
            if rng.random() < 0.1:
                kwargs["start"] = Checkpoint.sign(SERVICE, kwargs["start"].position, bytes(32), WHEN, _key(rng))
        if rng.random() < 0.2:
            kwargs["stop"] = rng.randint(1, log.end + 2)
        if rng.random() < 0.4:
            kwargs["checkpoints"] = outside(log, rng, genuine_cps)
        expected = reference(log, **kwargs)
        got = streamed(log, log.pages(rng), rng.choice((0, 3, 1000)), **kwargs)
        assert got == expected, f"case {case}: {done} {kwargs.get('stop')}"
        kind = str(expected.problem.kind) if expected.problem else "clean"
        kinds[kind] = kinds.get(kind, 0) + 1
        if "stop" not in kwargs and case % 5 == 0:  # the pages as ReadChain serves them, and held
            assert list(verify_chain(log.read(), [log.key.public_key()], limit=rng.randint(1, 50), **{
                k: v for k, v in kwargs.items() if k != "stop"}))[-1].report == expected  # fmt: skip
            pages = []
            after, read = 0, log.read()
            while True:
                page = read(after, 25, log.end)
                pages.append(page)
                after = page.through_position
                if not page.more:
                    break
            rest = {k: v for k, v in kwargs.items() if k != "stop"}
            assert verify_pages(pages, [log.key.public_key()], **rest) == expected
    # Every kind of problem was met, and clean logs too.
    assert set(kinds) == {"clean", *(str(k) for k in Kind)}, kinds


# -- bounded memory ----------------------------------------------------------------------------------


def _alive_records() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is RecordView)


def test_verify_chain_holds_a_page_or_two_of_records_however_long_the_log() -> None:
    rng = random.Random(SEED + 1)
    key = _key(rng)
    size, limit = 30_000, 2_000
    # The records are made when read (a function of their position); only their hashes are kept.
    hashes: dict[int, bytes] = {}
    seals: dict[int, RecordView] = {}
    prev, version = ZERO_HASH, 0
    for n in range(1, size + 1):
        if n % 5_000 == 0:
            version += 1
            seals[n] = sealed(n, version, Checkpoint.sign(SERVICE, n - 1, hashes[n - 1], WHEN, key))
        r = seals.get(n) or plain(n)
        prev = link(prev, n, r.originator_id, r.originator_version, r.topic, r.state)
        hashes[n] = prev
    tampered: dict[int, RecordView] = {}

    def record_at(n: int) -> RecordView | None:
        if n in tampered:
            return tampered[n]
        return seals.get(n) or plain(n) if 0 < n <= size else None

    alive: list[int] = []
    serving = serve(record_at, hashes.get, size)

    def read(after: int, lim: int, stop: int) -> audit_pb2.ReadChainResponse:
        alive.append(_alive_records())  # what the verifier (and everything else) holds right now
        return serving(after, lim, stop)

    baseline = _alive_records()
    final = list(verify_chain(read, [key.public_key()], service=SERVICE, limit=limit))[-1]
    assert final.ok and final.records_checked == size and final.checkpoints_checked == 6
    assert len(alive) == size // limit
    assert max(alive) - baseline <= 2 * limit, alive

    # A record edited far into the log: named at its position, still a page or two at a time.
    far = size - 1234
    tampered[far] = dataclasses.replace(plain(far), state=plain(far).state.replace(b'"n"', b'"N"'))
    alive.clear()
    final = list(verify_chain(read, [key.public_key()], service=SERVICE, limit=limit))[-1]
    assert final.problem is not None and (final.problem.kind, final.problem.position) == (Kind.ALTERED, far)
    assert final.records_checked == far - 1 and final.verified_through == far - 1
    assert max(alive) - baseline <= 2 * limit, alive


def _peak_of(work: Callable[[], Any]) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    try:
        result = work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_verify_store_peak_memory_does_not_grow_with_the_log(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    peaks: dict[int, int] = {}
    apps: dict[int, Counters] = {}
    try:
        for size in (8_000, 32_000):
            app = apps[size] = Counters(fixtures.sqlite_env(tmp_path / f"log{size}.sqlite"))
            for k in range(size // 1000):
                app.increment_many(f"c{k}", [1] * 999)
                if k % 8 == 7:
                    seal(app, key)
            report, peaks[size] = _peak_of(lambda a=app: verify_store(a, [key.public_key()]))
            assert report.ok and report.records == app.head_position(), report.problem
        # Four times the log, about the same peak (a page of records, 5,000, at a time).
        assert peaks[32_000] < 1.3 * peaks[8_000], peaks

        # A record edited far into the long log is named at its position, in as little memory.
        app = apps[32_000]
        far = app.head_position() - 700
        conn = sqlite3.connect(tmp_path / "log32000.sqlite", isolation_level=None)
        try:
            state = bytes(conn.execute("SELECT state FROM stored_events WHERE rowid = ?", (far,)).fetchone()[0])
            conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state + b" ", far))
            report, peak = _peak_of(lambda: verify_store(app, [key.public_key()]))
        finally:
            conn.close()
        assert report.problem is not None and (report.problem.kind, report.problem.position) == (Kind.ALTERED, far)
        assert peak < 1.3 * peaks[8_000], (peak, peaks)
    finally:
        for a in apps.values():
            a.close()


@pytest.mark.parametrize("page", [1, 7, 5000])
def test_any_page_size_gives_the_same_report(tmp_path: Path, page: int) -> None:
    app = Counters(fixtures.sqlite_env(tmp_path / "c.sqlite"))
    try:
        key = Ed25519PrivateKey.generate()
        for k in range(6):
            app.increment_many(f"c{k}", [1] * 49)
            seal(app, key)
        conn = sqlite3.connect(tmp_path / "c.sqlite", isolation_level=None)
        try:
            conn.execute("DELETE FROM stored_events WHERE rowid = 123")
        finally:
            conn.close()
        pages = store_pages(app.recorder, page)  # type: ignore[arg-type]
        verifier = ChainVerifier([key.public_key()], reread=pages, service=app.service, mapper=app.mapper)
        for records, hashes in pages(0, app.head_position()):
            verifier.add(records, hashes)
        report = verifier.finish()
        assert report == verify_store(app, [key.public_key()])
        assert report.problem is not None and (report.problem.kind, report.problem.position) == (Kind.MISSING, 123)
    finally:
        app.close()
