"""Running forms of the high-volume formulas: the same value, detail and input digest as the
formula computes over a window's inputs, kept up to date as inputs are appended, so judging an
open window again after a batch costs what the batch holds, not what the window holds.

Each `*Tally` is folded from a window's inputs in the order the formula goes through them
(`extend` with the first inputs, then with each batch appended after them): its sums are the
formula's sums, added in the same order, so they are the same Decimals; its counts the same
ints. The input digest is the formula version's bucketed digest by hours (`common.hour_bucketed`:
the records in order dealt into 64 buckets, each bucket in runs by hour, the payload holding each
bucket's SHA-256) — the call formulas' v4, first-contact resolution's v5, the outages' v3 and the
request counts' v4 — kept by `RunDigest`: a change hashing its run again from its inputs, no
record held but each bucket's last run's. Each tally can take an
input out as it was folded (`remove`, `replace`: a correction); anything else that is not an
append (another parameter, calendar or exclusion) is the caller's to detect: it folds a new tally
from every input (`accord_metrics.running`). `tests/test_running.py` holds each tally to its
formula on random sequences of batches and removals."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import zlib
from array import array
from bisect import bisect_left, bisect_right, insort
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from operator import attrgetter, itemgetter
from typing import Any

from accord_kit.timeline import Calendar, Interval, total, union
from accord_metrics.formulas import contact, reliability
from accord_metrics.formulas.common import (
    BUCKETS,
    EMPTY_BUCKET,
    ZERO,
    Encoded,
    EncodedList,
    Evaluated,
    bucket_of,
    canonical_json,
    hour_of,
    percent,
    ratio,
    run_digest,
    seconds,
)

# The formula versions the running forms here compute (their digests' forms): a current version
# other than these — never in a running process, but kept honest: tests patch the current ones —
# is left to the formula itself (`accord_metrics.running._computes`, `burning.BurnIndex`).
CALLS_VERSION = 4  # contact.asa, contact.abandonment_rate, contact.service_level, contact.aht
FCR_VERSION = 5  # contact.fcr
OUTAGES_VERSION = 3  # availability.time, mtbf
REQUESTS_VERSION = 4  # availability.requests

_SENTINEL = Encoded("\x00records\x00")  # never in canonical JSON (a control character is escaped)
_first = itemgetter(0)


def split_payload(payload: dict[str, Any]) -> tuple[bytes, bytes]:
    """The canonical JSON of `payload` (one of whose values, at any depth of dicts, is
    `EncodedList([_SENTINEL])`) split around that list's records: (what precedes the first
    record, what follows the last) — the bytes of the payload with any records R are
    prefix + ",".join(R) + suffix, as `canonical_json` splices an `EncodedList`."""
    text = canonical_json(payload)
    at = text.index(_SENTINEL)
    return text[:at].encode(), text[at + len(_SENTINEL) :].encode()


def records_slot() -> EncodedList:
    """The list to put in a payload where its records go (see `split_payload`)."""
    return EncodedList([_SENTINEL])


def _order_of(item: Any, order: Callable[[Any], Any] | None) -> Any:
    """An item's place in the order (None: the item itself)."""
    return item if order is None else order(item)


def _pair_order(order: Callable[[Any], Any] | None) -> Callable[[tuple[Any, str]], Any]:
    """An (item, record) pair's place in the order of its item."""
    if order is None:
        return _first
    return lambda pair: order(pair[0])


def _splices(new: int, after: int) -> bool:
    """Whether `new` items (more than a few) placed among held ones, `after` of those held from the
    first new one's place on, are placed by a bisection each (`_places`, `_spliced`) rather than
    merged with those held: when the bisections (≈ log2 of those held, each reading one held
    item's order) read fewer orders than the merge, which reads every one after that place and
    sorts them with the new ones. A backlog sent in pieces while live items arrive lands each
    piece before every live one held since the backlog's start: merged, each piece cost those
    (services/metrics/README.md, "A late batch placed by bisection")."""
    return new * after.bit_length() < after


def _places(held: Sequence[Any], keys: Iterable[Any], lo: int, order: Callable[[Any], Any] | None) -> list[int]:
    """Where items of these orders (in order) go among `held` (in order by `order`; None: the
    items themselves), from `lo` on: after held items of an equal order, each found by a
    bisection from the place of the one before."""
    out: list[int] = []
    append = out.append
    for key in keys:
        lo = bisect_right(held, key, lo) if order is None else bisect_right(held, key, lo, key=order)
        append(lo)
    return out


def _spliced(held: Sequence[Any], at: int, places: Sequence[int], new: Sequence[Any]) -> list[Any]:
    """`held[at:]` with `new[i]` placed before `held[places[i]]` (`places` from `at` on, never
    decreasing; new items of one place in their order): the held items between moved as slices."""
    out: list[Any] = []
    append = out.append
    prev = at
    for place, item in zip(places, new, strict=True):
        if place != prev:
            out += held[prev:place]
            prev = place
        append(item)
    out += held[prev:]
    return out


def _in_order(pairs: list[tuple[Any, str]], order: Callable[[Any], Any] | None) -> list[tuple[Any, str]]:
    """These (item, record) pairs sorted by their items' order, stably (the order read once a
    pair, in C: `map` over a getter, where a key function in Python costs a call a pair)."""
    if order is None:
        return sorted(pairs, key=_first)
    keys = list(map(order, map(_first, pairs)))
    return list(map(pairs.__getitem__, sorted(range(len(pairs)), key=keys.__getitem__)))


class _Held:
    """Items kept in order — by `order(item)`, or the items themselves — each with the bucket of its
    record beside (a `bytearray`): how a bucketed digest finds a held item, tells whether one is
    held, and places new ones, whatever its buckets hold."""

    buckets: Sequence[Any]  # the subclass's, each with its `digest`

    def __init__(self, order: Callable[[Any], Any] | None) -> None:
        self.order = order
        self.items: list[Any] = []  # every item held, in order
        self._where = bytearray()  # the bucket of each, beside `items`

    def _place(self, item: Any) -> int:
        """The place of the item held equal to `item` (`KeyError` when none is)."""
        items, order = self.items, self.order
        key = _order_of(item, order)
        at = bisect_left(items, key, key=order)
        if at == len(items) or _order_of(items[at], order) != key:
            raise KeyError(item)
        return at

    def holds_any(self, items: Sequence[Any]) -> bool:
        """Whether an item equal to any of these is held (a bisection each, where a set of them
        beside would cost ≈ 50 B an item — 8 MiB over 167,000 calls)."""
        held, order = self.items, self.order
        if not held:
            return False
        last = _order_of(held[-1], order)
        for item in items:
            if _order_of(item, order) > last:
                continue  # after every item held (a batch of new ones: each, one comparison)
            try:
                self._place(item)
            except KeyError:
                continue
            return True
        return False

    def _digests_with(
        self, extra: list[tuple[Any, str]], bucket_with: Callable[[int, list[tuple[Any, str]]], Encoded]
    ) -> list[Encoded]:  # fmt: skip
        """The buckets' digests as if these (item, record) pairs were held too: those of the buckets
        they go to by `bucket_with` (the bucket, its pairs in order), nothing changed."""
        groups: dict[int, list[tuple[Any, str]]] = {}
        for pair in _in_order(extra, self.order):
            groups.setdefault(bucket_of(pair[1]), []).append(pair)
        digests: list[Encoded] = [bucket.digest for bucket in self.buckets]
        for b, group in groups.items():
            digests[b] = bucket_with(b, group)
        return digests

    def _placed(self, pairs: list[tuple[Any, str]]) -> dict[int, list[tuple[Any, str]]]:
        """These (item, record) pairs put in order and their items placed among those held (after
        held items of an equal order); the pairs by bucket (`bucket_of` their record), in order."""
        order = self.order
        by_pair = _pair_order(order)
        pairs[:] = _in_order(pairs, order)
        crc, low = zlib.crc32, BUCKETS - 1
        where = [crc(r.encode()) & low for _, r in pairs]  # `bucket_of` each record, inline
        items, held_where = self.items, self._where
        first = by_pair(pairs[0])
        after_all = not items or first >= _order_of(items[-1], order)  # then no bisection
        at = len(items) if after_all else bisect_right(items, first, key=order)
        if at == len(items):
            items.extend([p[0] for p in pairs])
            held_where.extend(where)
        elif len(pairs) <= _FEW:
            # A few placed one at a time (a correction): a move of the pointers after each, in C,
            # where merging the runs below walks the tail in Python.
            for pair, b in zip(pairs, where, strict=True):
                at = bisect_right(items, by_pair(pair), key=order)
                items.insert(at, pair[0])
                held_where.insert(at, b)
        elif _splices(len(pairs), len(items) - at):
            # Many before many held (a backlog's piece among live items): each placed by a
            # bisection from the place of the one before, the held ones between moved as slices —
            # the held items' orders never read but by the bisections.
            places = _places(items, map(by_pair, pairs), at, order)
            items[at:] = _spliced(items, at, places, [p[0] for p in pairs])
            held_where[at:] = bytes(_spliced(held_where, at, places, where))
        else:
            # The held items from `at` on and the new ones: two runs in order, merged by a stable
            # sort of their places (the held one first among equal orders, as `sorted` keeps them).
            tail = items[at:] + [p[0] for p in pairs]
            tail_where = held_where[at:] + bytes(where)
            keys = tail if order is None else list(map(order, tail))
            places = sorted(range(len(tail)), key=keys.__getitem__)
            del items[at:], held_where[at:]
            items.extend(map(tail.__getitem__, places))
            held_where.extend(map(tail_where.__getitem__, places))
        groups: dict[int, list[tuple[Any, str]]] = {}
        for b, pair in zip(where, pairs, strict=True):
            group = groups.get(b)
            if group is None:
                groups[b] = [pair]
            else:
                group.append(pair)
        return groups


_CHUNK = 4096  # `RunDigest.add_encoded`: items encoded and placed at once, at most
# The hours whose runs keep their records in a bucket (`_Runs.kept`): the latest hour it holds
# and the one before. Signals arrive minutes late: a batch that reached back past the hour
# boundary encoded the previous hour's run anew (every call in it) every round, and hashed every
# run's digest again — ≈ 4,000–8,000 records a round in the benchmark, 50–75 ms more of a round
# after one batch (services/metrics/README.md, "Late signals across the hour"). Two hours at
# 1,500,000 calls a month: ≈ 4,000 records a digest, ≈ 1 MiB (worked out; the benchmark's RSS did
# not move).
KEPT_HOURS = 2


class _Runs:
    """One bucket of a `RunDigest`: its items in order, in runs by the hour they arrived in (each
    run's items, hour and digest); of the runs of its latest `KEPT_HOURS` hours — the hour calls
    are arriving in and the one before, where late ones land — their records (`kept`, by hour: one
    placed among them hashes them again as kept); the hash state after the last run's records
    (appended ones continue it); and the state after the digests of the runs before the last (a
    new last run continues it). No other record is held: an earlier run that changes is hashed
    again from its items, encoded anew."""

    __slots__ = ("_prefix", "_prefix_runs", "_tail", "digest", "digests", "hours", "kept", "runs")

    def __init__(self) -> None:
        # Its runs' hours (C longs) and digests (32 bytes each, in one bytearray): a run costs its
        # items' list and 40 bytes, not two objects more (≈ 150 B) — a bucket-hour holds a few
        # inputs at a contact centre's density.
        self.hours = array("q")
        self.runs: list[list[Any]] = []
        self.digests = bytearray()
        # The records of the runs of the latest hours, by hour (a run's as it holds its items), and
        # the hash state after the last run's (None: not known; its run is then hashed anew).
        self.kept: dict[int, list[str]] = {}
        self._tail: Any = None
        self._prefix: Any = hashlib.sha256()  # after ",".join(digests[:_prefix_runs]) + ","
        self._prefix_runs = 0
        self.digest = EMPTY_BUCKET

    def top(self) -> None:
        """The bucket's digest from its runs' (those before the latest `KEPT_HOURS` continuing the
        kept state: a late item placed in the run before the last does not hash every run's digest
        again — ≈ 300 runs a bucket in a month's window at a contact centre's density)."""
        if not self.runs:
            self._prefix, self._prefix_runs, self.digest = hashlib.sha256(), 0, EMPTY_BUCKET
            return
        last = len(self.runs) - 1
        settled = max(last - (KEPT_HOURS - 1), 0)  # the runs the kept state may cover
        if self._prefix_runs > settled:
            self._prefix, self._prefix_runs = hashlib.sha256(), 0
        while self._prefix_runs < settled:
            self._prefix.update((self.run_digest(self._prefix_runs) + ",").encode())
            self._prefix_runs += 1
        state = self._prefix.copy()
        if settled < last:
            state.update("".join(self.run_digest(at) + "," for at in range(settled, last)).encode())
        state.update(self.run_digest(last).encode())
        self.digest = Encoded('"' + state.hexdigest() + '"')

    def run_digest(self, at: int) -> str:
        """Run `at`'s digest (lowercase hex)."""
        return self.digests[at * 32 : at * 32 + 32].hex()

    def set_digest(self, at: int, digest: bytes) -> None:
        self.digests[at * 32 : at * 32 + 32] = digest

    def changed(self, at: int) -> None:
        """Run `at`'s digest changed (or it was placed or taken out): the kept state of the runs
        before the last no longer covers it."""
        if at < self._prefix_runs:
            self._prefix, self._prefix_runs = hashlib.sha256(), 0

    def keep(self, at: int, records: list[str]) -> None:
        """Run `at`'s records (as it holds its items), kept when its hour is among the latest
        `KEPT_HOURS`; the records of hours no longer among them dropped."""
        oldest = self.hours[-1] - KEPT_HOURS  # the latest hour not kept
        if self.hours[at] > oldest:
            self.kept[self.hours[at]] = records
        for h in [h for h in self.kept if h <= oldest]:
            del self.kept[h]

    def edit(self, at: int, k: int, record: str | None, insert: bool) -> None:
        """Run `at`'s item at place `k` inserted (`insert`), replaced (`record`) or taken out (None):
        its kept records likewise."""
        records = self.kept.get(self.hours[at])
        if records is None:
            return
        if record is None:
            del records[k]
        elif insert:
            records.insert(k, record)
        else:
            records[k] = record


class RunDigest(_Held):
    """Items kept in order (`order`: a call's arrival), their records dealt into the buckets of the
    bucketed digest by hours (`common.hour_bucketed`: by `common.bucket_of` their record, each
    bucket in runs by the hour its items arrived in, `hour(item)`), and the SHA-256 of prefix + the
    buckets' digests + suffix. A record is encoded (`encode`) when its item is placed, and kept
    while its run is of its bucket's latest `KEPT_HOURS` hours (the hour arriving and the one
    before); items appended at the end of the last run continue its hash state, one placed among
    a kept run's items hashes its kept records again, and a change in an earlier run hashes that
    run again from its items, encoded anew (the inputs of one hour of one bucket). Items of an
    equal order are equal (a call's arrival and id)."""

    def __init__(
        self, prefix: bytes, order: Callable[[Any], Any], hour: Callable[[Any], int], encode: Callable[[Any], str]
    ) -> None:
        super().__init__(order)
        self.key, self.hour, self.encode = order, hour, encode  # `order`, never None here
        self.buckets = [_Runs() for _ in range(BUCKETS)]
        self._prefix = prefix
        self.hashed = 0  # records hashed (for tests and benches)
        self.encoded = 0  # records encoded again, their runs changed (for tests and benches)
        # What it holds, for the tallies that share it (`accord_metrics.running`): their key for
        # the inputs placed, or None while they change (a tally folding them) or after a fold failed.
        self.state: Any = None

    def add(self, pairs: list[tuple[Any, str]]) -> None:
        """Place these (item, record) pairs in order (after held items of an equal order)."""
        if not pairs:
            return
        for b, group in self._placed(pairs).items():
            self._add(self.buckets[b], group)

    def add_encoded(self, items: Sequence[Any]) -> None:
        """Place these items, their records encoded here: many (a window folded whole) in order, a
        chunk at a time, so no more than a chunk's records are alive at once — encoded all at once,
        the window's records were made, hashed and dropped together, and the allocator kept most
        of the memory they had held. The same digest either way."""
        if len(items) > _CHUNK:
            items = sorted(items, key=self.key)
        encode = self.encode
        for k in range(0, len(items), _CHUNK):
            chunk = items[k : k + _CHUNK]
            self.add([(item, encode(item)) for item in chunk])

    def _add(self, bucket: _Runs, group: list[tuple[Any, str]]) -> None:
        """Place a bucket's pairs (in order): each hour's in turn — after every item of the last
        run, its state continued with their records at once; as a new last run, hashed at once;
        anywhere else, one at a time, their runs hashed again after."""
        order, hour = self.key, self.hour
        stale: set[int] = set()  # hours whose runs are hashed again
        chunks: list[tuple[int, list[tuple[Any, str]]]] = []
        for pair in group:
            h = hour(pair[0])
            if chunks and chunks[-1][0] == h:
                chunks[-1][1].append(pair)
            else:
                chunks.append((h, [pair]))
        for h, pairs in chunks:
            items, records = [p[0] for p in pairs], [p[1] for p in pairs]
            at = bisect_left(bucket.hours, h)
            if at == len(bucket.hours):  # a later hour than any: the new last run
                bucket.hours.append(h)
                bucket.runs.append(items)
                bucket.keep(at, records)
                bucket._tail = hashlib.sha256(",".join(records).encode())
                bucket.digests += bucket._tail.digest()
                self.hashed += len(records)
                bucket.changed(at)
                continue
            run = bucket.runs[at] if bucket.hours[at] == h else None
            tail = bucket.kept.get(h)
            if (
                run is not None and at == len(bucket.runs) - 1 and tail is not None and bucket._tail is not None
                and h not in stale and order(items[0]) >= order(run[-1])
            ):  # fmt: skip
                run.extend(items)
                tail.extend(records)
                bucket._tail.update(("," + ",".join(records)).encode())
                bucket.set_digest(at, bucket._tail.digest())
                self.hashed += len(records)
                continue
            if run is None:  # a run of its own, before later ones
                bucket.hours.insert(at, h)
                bucket.runs.insert(at, [])
                bucket.digests[at * 32 : at * 32] = bytes(32)  # hashed below
                bucket.changed(at)
                run = bucket.runs[at]
            for item, record in pairs:
                k = bisect_right(run, order(item), key=order)
                run.insert(k, item)
                bucket.edit(at, k, record, insert=True)
            stale.add(h)
        self._rehash(bucket, stale)

    def _rehash(self, bucket: _Runs, stale: set[int]) -> None:
        """The runs of these hours hashed again (from their kept records, else from their items,
        encoded anew — and kept, of the latest hours); the bucket's digest."""
        last = len(bucket.runs) - 1
        for h in stale:
            at = bisect_left(bucket.hours, h)
            if at == len(bucket.hours) or bucket.hours[at] != h:
                continue  # taken out since
            records = bucket.kept.get(h)
            if records is None:
                records = [self.encode(item) for item in bucket.runs[at]]
                self.encoded += len(records)
                bucket.keep(at, records)
            self.hashed += len(records)
            state = hashlib.sha256(",".join(records).encode())
            bucket.set_digest(at, state.digest())
            if at == last:
                bucket._tail = state
            bucket.changed(at)
        bucket.top()

    def _find(self, item: Any, b: int) -> tuple[_Runs, int, int]:
        """(bucket, run place, place in the run) of the held item equal to `item` in bucket `b`."""
        bucket, order = self.buckets[b], self.key
        h = self.hour(item)
        at = bisect_left(bucket.hours, h)
        if at == len(bucket.hours) or bucket.hours[at] != h:
            raise KeyError(item)  # never: `items` held it in this bucket
        run, key = bucket.runs[at], order(item)
        k = bisect_left(run, key, key=order)
        if k == len(run) or order(run[k]) != key:
            raise KeyError(item)
        return bucket, at, k

    def remove(self, items: Sequence[Any]) -> None:
        """Take out the items equal to these (`KeyError` when one is not held or given twice,
        nothing taken out)."""
        places = [self._place(item) for item in items]
        if len(set(places)) != len(places):
            raise KeyError("an item given twice")
        stale: dict[int, set[int]] = {}
        for at in sorted(places, reverse=True):
            item, b = self.items[at], self._where[at]
            bucket, r, k = self._find(item, b)
            run = bucket.runs[r]
            del run[k]
            bucket.edit(r, k, None, insert=False)
            hours = stale.setdefault(b, set())
            if run:
                hours.add(bucket.hours[r])
            else:
                if r == len(bucket.runs) - 1:  # the run before it is the last now: no hash state after it
                    bucket._tail = None
                bucket.kept.pop(bucket.hours[r], None)
                del bucket.runs[r], bucket.hours[r], bucket.digests[r * 32 : r * 32 + 32]
                bucket.changed(r)
            del self.items[at], self._where[at]
        for b, hours in stale.items():
            self._rehash(self.buckets[b], hours)

    def replace(self, before: Any, after: Any, record: str) -> None:
        """The item held equal to `before` is now `after`, of this record: in its place when of an
        equal order and bucket (its run hashed again), else taken out and placed by its order."""
        at = self._place(before)
        b = self._where[at]
        if self.key(before) != self.key(after) or bucket_of(record) != b:
            self.remove([before])
            self.add([(after, record)])
            return
        bucket, r, k = self._find(before, b)
        bucket.runs[r][k] = after
        bucket.edit(r, k, record, insert=False)
        self.items[at] = after
        self._rehash(bucket, {bucket.hours[r]})

    def digest_with(self, extra: list[tuple[Any, str]], suffix: bytes) -> str:
        """`digest` as if these (item, record) pairs were held too (placed as `add` places them:
        after held items of an equal order), nothing changed: the runs they go to hashed beside,
        from their items encoded (the last run's from its kept records), or as runs of their own."""
        if not extra:
            return self.digest(suffix)
        return self._top(self._digests_with(extra, lambda b, group: self._bucket_with(self.buckets[b], group)), suffix)

    def _bucket_with(self, bucket: _Runs, group: list[tuple[Any, str]]) -> Encoded:
        """A bucket's digest with these pairs (in order) placed in its runs, nothing changed."""
        order = self.key
        runs = {h: bucket.run_digest(at) for at, h in enumerate(bucket.hours)}
        by_hour: dict[int, list[tuple[Any, str]]] = {}
        for pair in group:
            by_hour.setdefault(self.hour(pair[0]), []).append(pair)
        for h, pairs in by_hour.items():
            at = bisect_left(bucket.hours, h)
            if at < len(bucket.hours) and bucket.hours[at] == h:
                items = list(bucket.runs[at])
                kept = bucket.kept.get(h)
                records = list(kept) if kept is not None else [self.encode(item) for item in items]
            else:
                items, records = [], []
            for item, record in pairs:
                k = bisect_right(items, order(item), key=order)
                items.insert(k, item)
                records.insert(k, record)
            runs[h] = run_digest(records)
        return Encoded('"' + hashlib.sha256(",".join(runs[h] for h in sorted(runs)).encode()).hexdigest() + '"')

    def digest(self, suffix: bytes, prefix: bytes | None = None) -> str:
        """The SHA-256 of prefix (its own, or one given: a tally sharing its buckets) + the
        buckets' digests + suffix."""
        return self._top([bucket.digest for bucket in self.buckets], suffix, prefix)

    def _top(self, digests: list[Encoded], suffix: bytes, prefix: bytes | None = None) -> str:
        head = self._prefix if prefix is None else prefix
        return "sha256:" + hashlib.sha256(head + ",".join(digests).encode() + suffix).hexdigest()


# -- calls: ASA, abandonment, service level, AHT -------------------------------------------------
CALL_FORMULAS = ("contact.asa", "contact.abandonment_rate", "contact.service_level", "contact.aht")


_ONE_US = timedelta(microseconds=1)


def _seconds_exponent(us: int) -> int:
    """The exponent of `seconds(w)` for a wait `w` of `us` µs: 0 for whole seconds, else that of
    its fraction's last digit (`Decimal(µs) / Decimal(1_000_000)` writes no trailing zero)."""
    fraction = us % 1_000_000
    if not fraction:
        return 0
    exponent = -6
    while fraction % 10 == 0:
        fraction //= 10
        exponent += 1
    return exponent


def _call_hour(c: contact.Call) -> int:
    return hour_of(c.entered_queue)


class _LatelyEncoded:
    """The records of the calls encoded lately (the last `size`), for the call tallies that fold
    the same calls in one round — an SLA's ASA, abandonment, service level and AHT over one
    window fold each batch in turn, and no call keeps its record (`RunDigest`): without them each
    tally would encode it again. A call is frozen, so its record is its own; held by identity (the
    call held beside it). More calls than it holds at once (a window folded whole) are never
    given to it: the tally encodes those a chunk at a time as it places them
    (`RunDigest.add_encoded`) — cycling a restart's every record through it left the heap
    fragmented (the restarted process ≈ 20 MiB larger at 160,256 signals in the open window)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._held: OrderedDict[int, tuple[contact.Call, str]] = OrderedDict()

    def records(self, calls: Sequence[contact.Call]) -> list[str]:
        held, out = self._held, []
        for c in calls:
            got = held.get(id(c))
            if got is None or got[0] is not c:
                got = held[id(c)] = (c, contact.call_json(c))
            out.append(got[1])
        while len(held) > self.size:
            held.popitem(last=False)
        return out


def call_digest() -> RunDigest:
    """An empty digest of calls as the call formulas' (v4) digest them: in the order they arrived,
    in runs by hour, records encoded and not kept. Its own prefix is empty: each tally that
    shares it gives its own (`RunDigest.digest`)."""
    return RunDigest(b"", contact.arrival, _call_hour, contact.call_json)


_LATELY = _LatelyEncoded(8192)  # ≈ 3 MiB: a round's batches, shared by the tallies that fold them


class CallTally:
    """`contact.asa`, `contact.abandonment_rate`, `contact.service_level` or `contact.aht` over
    the calls folded in, as the formula computes it over them (its parameters fixed here)."""

    def __init__(
        self,
        formula: str,
        variant: str = "",
        threshold: timedelta | None = None,
        short_abandon: timedelta | None = None,
    ) -> None:
        if formula not in CALL_FORMULAS:
            raise ValueError(f"no running form of {formula!r}")
        self.formula = formula
        self.variant = contact.ServiceLevelVariant(variant) if formula == "contact.service_level" else None
        self.threshold = threshold
        self.short = short_abandon
        self.offered = 0
        self.answered = 0
        self.answered_within = 0
        self.abandoned = 0
        self.short_abandoned = 0  # Ab<S (service level, abandonment)
        self.counted_within = 0  # abandons ≥ S (or all, without S) within T
        self._wait_us = 0  # Σ queue wait of the answered calls held (ASA), µs: `total_wait`
        self.handle = ZERO
        self._exponents: Counter[int] = Counter()  # of the summed terms held (`_count`)
        # The formula's parameter checks, raised as it raises them (with no call, no repeated id).
        self.parameters = self._result().parameters
        self._prefix, self._suffix = split_payload(
            contact.digest_payload(formula, contact.VERSION, records_slot(), self.parameters)
        )
        # The calls in the order they arrived, in runs by hour; their records encoded, never kept.
        # None while it only counts: the calls are placed in a digest another tally over the same
        # calls keeps — the four call formulas' buckets are alike, only the payload around them
        # differs — which it takes once they are (`accord_metrics.running`, `share`).
        self.records: RunDigest | None = call_digest()

    def share(self, records: RunDigest | None) -> None:
        """Take `records` as its digest — the calls it folded are those placed in it — or (None)
        only count the calls folded from now on, their placing another tally's."""
        self.records = records

    def extend(self, calls: Sequence[contact.Call]) -> bool:
        """Fold in these calls (after those folded before, in their order). False — nothing
        folded — when an id repeats among them or a call of one's id and arrival is held: the
        formula refuses a repeated id. (A call of a held id arriving at another instant is the
        caller's to fold as a correction, `replace`: the calls of a window's selection have
        distinct ids.)"""
        ids = [c.call_id for c in calls]
        records = self.records
        if len(set(ids)) != len(ids) or (records is not None and records.holds_any(calls)):
            return False
        self._count(calls, 1)
        if records is None:
            pass
        elif len(calls) > _LATELY.size:  # a window folded whole (a restart): encoded a chunk at a time
            records.add_encoded(calls)
        else:
            records.add(list(zip(calls, _LATELY.records(calls), strict=True)))
        return True

    def remove(self, calls: Sequence[contact.Call]) -> None:
        """Take out these calls, folded in before as they are (a correction replaces one: taken
        out as it was, folded in as it is): the tally is the one of the calls left. `KeyError`
        when one is not held (nothing taken out)."""
        if self.records is not None:
            self.records.remove(calls)
        self._count(calls, -1)

    def replace(self, before: contact.Call, after: contact.Call) -> None:
        """A call folded in as `before` is now `after` (its correction, the same id): taken out
        and folded in, its record replaced in its place (the digest brought up to date once) —
        or, arriving at another instant now, placed by it."""
        if before.call_id != after.call_id:
            raise KeyError(after.call_id)
        if self.records is not None:
            self.records.replace(before, after, _LATELY.records([after])[0])
        self._count([before], -1)
        self._count([after], 1)

    def _count(self, calls: Sequence[contact.Call], sign: int) -> None:
        """These calls counted in (`sign` 1) or out (-1): every count and sum exact, so a call
        counted out leaves what counting the others alone gives — the sums written as the
        formula's sum of the calls left writes them too (a Decimal sum keeps the finest exponent
        of its terms: the exponents of the terms held are counted, and a sum a term left is
        written again with the finest of those still held)."""
        threshold, short = self.threshold, self.short
        self.offered += sign * len(calls)
        wait_us, handle, exponents = self._wait_us, self.handle, self._exponents
        asa, aht = self.formula == "contact.asa", self.formula == "contact.aht"  # the sums each needs
        for c in calls:
            if c.answered_at is not None:
                wait = c.answered_at - c.entered_queue
                self.answered += sign
                if threshold is not None and wait <= threshold:
                    self.answered_within += sign
                if asa:  # `seconds(wait)` held as its µs and its exponent (`total_wait`)
                    us = wait // _ONE_US
                    wait_us += sign * us
                    exponents[_seconds_exponent(us)] += sign
                if aht:
                    term = c.talk_seconds + c.hold_seconds + c.after_call_seconds
                    handle += sign * term
                    exponents[int(term.as_tuple().exponent)] += sign
            elif c.abandoned_at is not None:
                wait = c.abandoned_at - c.entered_queue
                self.abandoned += sign
                if short is not None and wait < short:
                    self.short_abandoned += sign
                elif threshold is not None and wait <= threshold:
                    self.counted_within += sign
        if sign < 0 and aht:
            handle = handle.quantize(self._quantum())
        self._wait_us, self.handle = wait_us, handle

    def _quantum(self) -> Decimal:
        """A sum of the terms held as the formula's sum writes it: to the finest exponent among
        them (a Decimal sum keeps its terms' finest; ZERO, the sum's start, is 0)."""
        return Decimal(1).scaleb(min(0, min((e for e, held in self._exponents.items() if held > 0), default=0)))

    @property
    def total_wait(self) -> Decimal:
        """Σ `seconds(wait)` of the answered calls held, as the formula's Decimal sum gives it —
        its value exactly (µs), written to the finest exponent of its terms. Kept as an integer
        (µs) and the terms' exponents: a call counted in or out costs no Decimal arithmetic."""
        return Decimal(self._wait_us).scaleb(-6).quantize(self._quantum())

    def evaluated(self) -> Evaluated:
        if self.records is None:
            raise RuntimeError("a call tally that only counts has no digest until it shares one")
        return self._result(self.records.digest(self._suffix, self._prefix))

    def _result(self, input_digest: str = "") -> Evaluated:
        if self.formula == "contact.service_level":
            assert self.threshold is not None and self.variant is not None
            return _service_level(self, self.variant, self.threshold, input_digest)
        if self.formula == "contact.asa":
            detail = {"unit": "seconds", "answered": str(self.answered), "total_wait_seconds": str(self.total_wait)}
            return _calls_evaluated(
                self.formula, ratio(self.total_wait, self.answered), {}, detail, "no answered call", input_digest
            )
        if self.formula == "contact.aht":
            detail = {"unit": "seconds", "handled": str(self.answered), "total_handle_seconds": str(self.handle)}
            return _calls_evaluated(
                self.formula, ratio(self.handle, self.answered), {}, detail, "no handled contact", input_digest
            )
        contact._check_short(self.short)
        short = self.short_abandoned
        detail = {
            "unit": "percent",
            "offered": str(self.offered),
            "abandoned": str(self.abandoned),
            "short_abandoned": str(short),
        }
        params = {"short_abandon_seconds": contact.td_param(self.short)}
        value = percent(self.abandoned - short, self.offered - short)
        return _calls_evaluated(self.formula, value, params, detail, "no offered call", input_digest)


def _calls_evaluated(
    formula: str, value: Decimal | None, parameters: dict[str, str], detail: dict[str, str], undefined: str,
    input_digest: str,
) -> Evaluated:  # fmt: skip
    return Evaluated(
        formula, contact.VERSION, value, parameters, input_digest, detail, "" if value is not None else undefined
    )


def _service_level(t: CallTally, v: contact.ServiceLevelVariant, threshold: timedelta, input_digest: str) -> Evaluated:
    """`contact.service_level`'s value and detail from the tally (its checks, in its order)."""
    if threshold < timedelta(0):
        raise ValueError("the answer threshold T must not be negative")
    contact._check_short(t.short)
    if v is contact.ServiceLevelVariant.SHORT_ABANDONS_SUCCESS and t.short is None:
        raise ValueError("SHORT_ABANDONS_SUCCESS needs the short-abandon threshold S")
    a, a_in = t.answered, t.answered_within
    short = t.short_abandoned
    ab = t.abandoned - short
    ab_in = t.counted_within
    ab_over = ab - ab_in
    num, den = contact.service_level_ratio(v, a, a_in, ab, ab_in, short)
    detail = {
        "unit": "percent",
        "answered": str(a),
        "answered_within": str(a_in),
        "abandoned": str(t.abandoned),
        "short_abandoned": str(short),
        "abandoned_within": str(ab_in),
        "abandoned_after": str(ab_over),
        "other": str(t.offered - a - t.abandoned),
        "numerator": str(num),
        "denominator": str(den),
    }
    params = {
        "variant": v.value,
        "threshold_seconds": contact.td_param(threshold),
        "short_abandon_seconds": contact.td_param(t.short),
    }
    return _calls_evaluated(
        "contact.service_level", percent(num, den), params, detail, "zero denominator", input_digest
    )


# -- first-contact resolution (v2) ----------------------------------------------------------------
class _Outcome:
    """A first contact's outcome as `FcrTally` holds it: `contact.FirstContactOutcome`'s fields,
    those of the first contact read through the contact itself — 72 B an outcome against 104
    (≈ 23 B a contact of a month's). Equal to another of the same fields; its record is
    `contact.outcome_json`'s of the `FirstContactOutcome` it stands for."""

    __slots__ = ("decided", "first", "flag", "repeat_id", "resolved")

    def __init__(
        self, first: contact.Call, decided: datetime, resolved: bool, flag: bool | None, repeat_id: str
    ) -> None:  # fmt: skip
        self.first, self.decided, self.resolved = first, decided, resolved
        self.flag, self.repeat_id = flag, repeat_id

    @property
    def call_id(self) -> str:
        return self.first.call_id

    def whole(self) -> contact.FirstContactOutcome:
        return contact.outcome_of(self.first, self.decided, self.resolved, self.flag, self.repeat_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Outcome):
            return NotImplemented
        a, b = self.first, other.first
        return (a is b or (a.call_id, a.customer_id, a.reason, a.entered_queue)
                == (b.call_id, b.customer_id, b.reason, b.entered_queue)) and (
            (self.decided, self.resolved, self.flag, self.repeat_id)
            == (other.decided, other.resolved, other.flag, other.repeat_id)
        )  # fmt: skip

    __hash__ = None  # type: ignore[assignment]


def _outcome_json(o: _Outcome) -> str:
    return contact.outcome_json(o.whole())


def _decided_hour(o: _Outcome) -> int:
    return hour_of(o.decided)


# A customer-and-reason group's key: the customer id alone for contacts that give no reason, else
# (customer, reason). A contact centre that tags no reasons keys every group by a string the
# contact already holds, not a tuple of 56 B beside each group; a string and a tuple are never
# equal, so no group is taken for another.
_GroupKey = str | tuple[str, str]


def _group_key(c: contact.Call) -> _GroupKey:
    return (c.customer_id, c.reason) if c.reason else c.customer_id


class FcrTally:
    """`contact.fcr` v5 (v2's rule) over the contacts folded in, for one method, repeat window and window,
    as of any instant from the last one asked for on: each customer and reason's contacts kept
    in their order (`contact.first_contacts`'), each first contact's outcome, the outcomes
    counted (decided in the window before the instant asked for) in their digest (`RunDigest`:
    as they became known, in runs by that hour, no record kept), and
    a heap of those decided in the window not counted yet, by when they fall due. A batch works
    out again the outcomes of the groups it reaches: an outcome that changes is taken out (out of
    the records and counts when counted — a contact arriving late, before a first contact's
    decision) and the new one falls due in its turn. The contacts' ids must be distinct (those of
    one service's selection)."""

    def __init__(self, method: contact.FcrMethod | str, repeat_window: timedelta, window: Interval) -> None:
        self.method = contact.FcrMethod(method)
        contact.fcr([], self.method, repeat_window, window=window)  # its checks, as it makes them
        self.repeat, self.window = repeat_window, window
        # A customer-and-reason group (`_group_key`) → its contacts in `first_contacts`' order
        # (arrival, then id): a group of one contact holds the contact itself, a larger one a list
        # of them. Most groups of a month are of one contact (a customer calling once about a
        # reason): a list beside each cost ≈ 100 B a contact, a third of the tally ("What still grows").
        self._groups: dict[_GroupKey, contact.Call | list[contact.Call]] = {}
        # First contact id → its outcome, for every first contact whose decision is in the window;
        # and the token of its entry among those due while it is not counted.
        self._outcomes: dict[str, _Outcome] = {}
        self._due_token: dict[str, int] = {}
        self._due: list[tuple[datetime, int, str]] = []  # a heap of (decision, token, id) not yet counted
        self._tokens = itertools.count()
        self._as_of: datetime | None = None  # the last instant asked for
        self.counted = self.resolved = self.repeated = self.unflagged = 0
        prefix, _ = split_payload(contact.digest_payload("contact.fcr", contact.FCR_VERSION, records_slot(), {}))
        # The counted outcomes as they became known, in runs by that hour; their records encoded,
        # never kept (not on the outcomes either).
        self.records = RunDigest(prefix, contact.decision, _decided_hour, _outcome_json)

    def extend(self, calls: Sequence[contact.Call]) -> bool:
        """Fold in these contacts (True: it always can)."""
        touched: set[_GroupKey] = set()
        groups, arrival = self._groups, contact.arrival
        for c in calls:
            if c.answered:
                key = (c.customer_id, c.reason) if c.reason else c.customer_id  # `_group_key`, inline
                held = groups.get(key)
                if held is None:
                    groups[key] = c
                elif not isinstance(held, list):
                    groups[key] = [c, held] if arrival(c) < arrival(held) else [held, c]
                elif arrival(c) < arrival(held[-1]):
                    insort(held, c, key=arrival)
                else:
                    held.append(c)
                touched.add(key)
        uncounted: list[_Outcome] = []
        for key in touched:
            self._judge(self._group(key), uncounted)
        self.records.remove(uncounted)
        return True

    def _group(self, key: _GroupKey) -> list[contact.Call]:
        """A group's contacts in order (none when it holds none)."""
        held = self._groups.get(key)
        return [] if held is None else held if isinstance(held, list) else [held]

    def remove(self, calls: Sequence[contact.Call]) -> None:
        """Take out these contacts, folded in before as they are (a correction replaces one: taken
        out as it was, folded in as it is): each one's own outcome goes, and the outcomes of the
        contacts left in its group are worked out again — the tally is the one of the contacts
        left. `KeyError` when an answered one is not held (nothing taken out)."""
        places: list[tuple[_GroupKey, int]] = []
        for c in calls:
            if not c.answered:
                continue  # never in a group
            key = _group_key(c)
            group = self._group(key)
            at = bisect_left(group, contact.arrival(c), key=contact.arrival)
            if at == len(group) or group[at].call_id != c.call_id or (key, at) in places:
                raise KeyError(c.call_id)
            places.append((key, at))
        uncounted: list[_Outcome] = []
        groups = self._groups
        for key, at in sorted(places, key=itemgetter(1), reverse=True):  # later places first: the earlier stay put
            held = groups[key]
            if isinstance(held, list):
                gone = held.pop(at)
                if len(held) == 1:
                    groups[key] = held[0]
            else:
                gone = held
                del groups[key]
            self._drop_outcome(gone.call_id, uncounted)
        for key in {key for key, _ in places}:
            if key in groups:
                self._judge(self._group(key), uncounted)
        self.records.remove(uncounted)

    def _drop_outcome(self, cid: str, uncounted: list[_Outcome]) -> None:
        """A contact's outcome as a first contact, if it has one, dropped: taken out of the counts
        (and the outcome added to `uncounted`: its record to take out) when counted, else its entry
        among those due no longer current."""
        held = self._outcomes.pop(cid, None)
        if held is not None and self._due_token.pop(cid, None) is None:
            self._count(held, -1)
            uncounted.append(held)

    def _judge(self, group: list[contact.Call], uncounted: list[_Outcome]) -> None:
        """A group's outcomes worked out again (`contact.decide_group`, the formula's rule); the
        counted ones that changed added to `uncounted` (their records to take out)."""
        now = contact.decide_group(group, self.method, self.repeat, self.window, _Outcome)
        # The group's former outcomes are those of its contacts' ids (each was a first contact or not).
        outcomes, tokens = self._outcomes, self._due_token
        for c in group:
            cid = c.call_id
            held = outcomes.get(cid)
            if held is None or now.get(cid) == held:
                continue
            self._drop_outcome(cid, uncounted)
        for cid, outcome in now.items():
            if cid not in outcomes:
                token = tokens[cid] = next(self._tokens)
                outcomes[cid] = outcome
                heapq.heappush(self._due, (outcome.decided, token, cid))

    def _count(self, outcome: _Outcome, sign: int) -> None:
        self.counted += sign
        self.resolved += sign * outcome.resolved
        self.repeated += sign * bool(outcome.repeat_id)
        self.unflagged += sign * (self.method is contact.FcrMethod.FLAGGED and outcome.flag is None)

    def evaluated(self, as_of: datetime) -> Evaluated | None:
        """`contact.fcr` v5 as of `as_of`; None when it is before an instant asked for before
        (what was counted then is not taken back here: the caller folds every contact again)."""
        contact._aware("as_of", as_of)
        if self._as_of is not None and as_of < self._as_of:
            return None
        due, outcomes, tokens = self._due, self._outcomes, self._due_token
        fallen: list[_Outcome] = []
        while due and due[0][0] < as_of:
            _, token, cid = heapq.heappop(due)
            if tokens.get(cid) != token:
                continue  # changed since it was placed
            del tokens[cid]
            outcome = outcomes[cid]
            fallen.append(outcome)
            self._count(outcome, 1)
        self.records.add_encoded(fallen)
        self._as_of = as_of
        detail = {
            "unit": "percent",
            "first_contacts": str(self.counted),
            "resolved": str(self.resolved),
            "repeated": str(self.repeated),
            "pending": str(len(tokens)),
            "unflagged": str(self.unflagged),
        }
        params = contact._fcr_params(self.method, self.repeat, self.window, as_of)
        _, suffix = split_payload(contact.digest_payload("contact.fcr", contact.FCR_VERSION, records_slot(), params))
        value = percent(self.resolved, self.counted)
        return Evaluated(
            "contact.fcr", contact.FCR_VERSION, value, params, self.records.digest(suffix), detail,
            "" if value is not None else "no first contact",
        )  # fmt: skip


# An outage's end, as a sort key in C (a merge's tail can hold every outage of the last minutes).
_END = attrgetter("end")


_start_end = attrgetter("start", "end")  # an outage's order in its digest (its record's)


def _start_hour(o: Interval) -> int:
    return hour_of(o.start)


def _start(o: Interval) -> datetime:
    return o.start


# New outages (`place_by_end`, `touched`) and new items (`_Held._placed`) placed one at a time,
# at most this many; more: with the tail after them.
_FEW = 8


def place_by_end(ends: list[datetime], outages: list[Interval], fresh: Sequence[Interval]) -> None:
    """These outages placed among `outages` (ordered by end, with their `ends`), after those ending
    at the same instant: a few one at a time (an insertion moves the pointers after it: cheap),
    many before many held each by a bisection of `ends` (`_spliced`), else by merging them with
    those held after the first of them (two sorted runs: one pass)."""
    new = sorted(fresh, key=_END)
    at = bisect_right(ends, new[0].end)
    if len(new) > _FEW and _splices(len(new), len(ends) - at):
        new_ends = list(map(_END, new))
        places = _places(ends, new_ends, at, None)
        ends[at:] = _spliced(ends, at, places, new_ends)
        outages[at:] = _spliced(outages, at, places, new)
        return
    if len(new) > _FEW or at == len(ends):
        merged = sorted([*outages[at:], *new], key=_END)  # (stable: the held first among equal ends)
        del ends[at:], outages[at:]
        ends.extend(map(_END, merged))
        outages.extend(merged)
        return
    for o in new:
        k = bisect_right(ends, o.end)
        ends.insert(k, o.end)
        outages.insert(k, o)


def touched(
    starts: Sequence[datetime], merged: Sequence[Interval], fresh: Sequence[Interval]
) -> list[tuple[int, int, list[Interval]]]:  # fmt: skip
    """Where new outages go in a union kept merged (`merged`, apart from each other — touching
    ones are merged — with their `starts`): the runs of them, by start, with the slice of merged
    outages each run touches, as (first, end of the slice, the run's outages), in order. Merging a
    run with its slice alone gives the union of all: a merged outage outside every slice touches
    no new outage. A run's slice is empty (first == end) where it touches none. More than a few
    new outages (appended ones, a backfill) are one run with every merged outage from the first
    they can touch on: its merging costs that tail once, where a run each would cost the caller's
    lists after each (their running sums, their places)."""
    low = min(o.start for o in fresh)
    at = bisect_right(starts, low)
    if at and merged[at - 1].end >= low:
        at -= 1
    if len(fresh) > _FEW:
        return [(at, len(merged), list(fresh))]
    out: list[tuple[int, int, list[Interval]]] = []
    for o in sorted(fresh, key=_start):
        at = bisect_right(starts, o.start)
        if at and merged[at - 1].end >= o.start:  # the last starting at or before it reaches it
            at -= 1
        hi = bisect_right(starts, o.end)  # those starting after it ends it does not touch
        if out and at <= out[-1][1]:
            first, end, run = out[-1]
            run.append(o)
            if hi > end:
                out[-1] = (first, hi, run)
        else:
            out.append((at, hi, [o]))
    return out


# -- time-based availability -----------------------------------------------------------------------
class OutageTally:
    """`reliability.availability_time` over the outages folded in (those overlapping the window,
    with ends: an outage under way changes with the evaluation's instant, never folded — it is
    given to `evaluated`, as lasting until that instant), for one window, calendar, exclusions
    and minimum outage: the outages ordered by end, their union kept merged, each merged outage's
    downtime in eligible time, and the outages in their digest's order (`RunDigest`: by start and
    end, in runs by the hour they started in, no record kept)."""

    FORMULA = "availability.time"

    def __init__(
        self, window: Interval, calendar: Calendar, exclusions: Sequence[Interval], min_outage: timedelta
    ) -> None:
        self.window, self.calendar, self.min_outage = window, calendar, min_outage
        self.parameters = self._empty(exclusions).parameters  # the formula's checks, and its parameters
        self.eligible = reliability.eligible_intervals(window, calendar, exclusions)
        self._eligible_starts = [e.start for e in self.eligible]
        self.eligible_s = seconds(total(self.eligible))
        self.merged: list[Interval] = []
        self._starts: list[datetime] = []
        # The outages merged (non-empty), ordered by end: those of a merged outage are those ending
        # within it (`remove` merges them again without the one taken out).
        self._ends: list[datetime] = []
        self._by_end: list[Interval] = []
        self.downtime = timedelta(0)  # of the merged outages at least the minimum long
        self.counted = 0
        self.short = 0  # merged outages below the minimum
        payload = reliability.outages_payload(
            self.FORMULA, reliability.OUTAGES_VERSION, self.parameters, records_slot(), exclusions, calendar
        )
        prefix, self._suffix = split_payload(payload)
        # The outages in order (start, end: their records' order), in runs by the hour they
        # started in; their records encoded, never kept (not on the outages either).
        self.records = RunDigest(prefix, _start_end, _start_hour, reliability._utc_pair_json)

    def _empty(self, exclusions: Sequence[Interval]) -> Evaluated:
        return reliability.availability_time(self.window, self.calendar, [], exclusions, self.min_outage)

    def _weight(self, m: Interval) -> tuple[timedelta, int, int]:
        """A merged outage's (downtime in eligible time, counted, below the minimum)."""
        if m.duration < self.min_outage:
            return timedelta(0), 0, 1
        down = timedelta(0)
        eligible = self.eligible
        i = max(bisect_right(self._eligible_starts, m.start) - 1, 0)
        while i < len(eligible) and eligible[i].start < m.end:
            part = m.intersect(eligible[i])
            if part is not None:
                down += part.duration
            i += 1
        return down, 1 if down else 0, 0

    def _weigh(self, m: Interval, sign: int) -> None:
        down, counted, short = self._weight(m)
        self.downtime += down * sign
        self.counted += counted * sign
        self.short += short * sign

    def extend(self, outages: Sequence[Interval]) -> None:
        """Fold in these outages (each with its end, overlapping the window)."""
        fresh = [o for o in outages if o.start < o.end]
        if fresh:
            # Each run of new outages merged with the merged outages it touches alone (a late one
            # in the middle of the window re-weighs its neighbours, not every merged outage after it).
            for at, hi, group in reversed(touched(self._starts, self.merged, fresh)):
                old = self.merged[at:hi]
                for m in old:
                    self._weigh(m, -1)
                again = union([*old, *group])
                self.merged[at:hi] = again
                self._starts[at:hi] = [m.start for m in again]
                for m in again:
                    self._weigh(m, 1)
            place_by_end(self._ends, self._by_end, fresh)
        self.records.add_encoded(outages)

    def remove(self, outages: Sequence[Interval]) -> None:
        """Take out these outages, folded in before as they are (a correction replaces one: taken
        out as it was, folded in as it is): the merged outage each was in is merged again from the
        outages left in it. `KeyError` when one is not held (nothing taken out then)."""
        self.records.remove(outages)
        for o in outages:
            if not o.start < o.end:
                continue  # held as a record only
            at = bisect_left(self._ends, o.end)
            while self._by_end[at] != o:  # an equal one is there (its record was)
                at += 1
            del self._ends[at], self._by_end[at]
            k = bisect_right(self._starts, o.start) - 1  # the merged outage it is in
            m = self.merged[k]
            left = self._by_end[bisect_left(self._ends, m.start) : bisect_right(self._ends, m.end)]
            self._weigh(m, -1)
            again = union(left)
            self.merged[k : k + 1] = again
            self._starts[k : k + 1] = [x.start for x in again]
            for x in again:
                self._weigh(x, 1)

    def evaluated(self, under_way: Sequence[Interval] = ()) -> Evaluated:
        """The formula's evaluation over the outages folded in and `under_way` — outages under
        way as the formula takes them at its instant (each lasting until then, overlapping the
        window, non-empty) — computed beside the tally, nothing of it changed: the merged outages
        they can touch merged again with them, their records placed among those held."""
        downtime, counted, short, digest = self._with(under_way)
        return reliability.availability_time_evaluated(
            self.parameters, self.eligible_s, seconds(downtime), counted, short, digest
        )

    def _with(self, under_way: Sequence[Interval]) -> tuple[timedelta, int, int, str]:
        """(downtime, counted, below the minimum, input digest) with `under_way` beside (see `evaluated`)."""
        downtime, counted, short = self.downtime, self.counted, self.short
        extra: list[tuple[Any, str]] = []
        if under_way:
            low, high = min(o.start for o in under_way), max(o.end for o in under_way)
            # The merged outages they can touch: from the last starting at or before `low` if it
            # reaches it, to the last starting at or before `high` (those after start later, and
            # every merged outage is apart from the next).
            at = bisect_right(self._starts, low)
            if at and self.merged[at - 1].end >= low:
                at -= 1
            touched = self.merged[at : bisect_right(self._starts, high)]
            for m in touched:
                d, c, b = self._weight(m)
                downtime, counted, short = downtime - d, counted - c, short - b
            for m in union([*touched, *under_way]):
                d, c, b = self._weight(m)
                downtime, counted, short = downtime + d, counted + c, short + b
            extra = [(o, reliability._utc_pair_json(o)) for o in under_way]
        return downtime, counted, short, self.records.digest_with(extra, self._suffix)


class MtbfTally(OutageTally):
    """`reliability.mtbf` over the failures folded in (the outages overlapping the window, with
    ends; one under way given to `evaluated` as lasting until its instant), as `OutageTally`
    keeps them: merged, each merged failure's downtime in eligible time (no minimum) and whether
    it starts in the window, their digest in runs by hour."""

    FORMULA = "mtbf"

    def __init__(self, window: Interval, calendar: Calendar, exclusions: Sequence[Interval]) -> None:
        super().__init__(window, calendar, exclusions, timedelta(0))

    def _empty(self, exclusions: Sequence[Interval]) -> Evaluated:
        return reliability.mtbf(self.window, self.calendar, [], exclusions=exclusions)

    def _weight(self, m: Interval) -> tuple[timedelta, int, int]:
        """A merged failure's (downtime in eligible time, starting in the window, 0)."""
        return super()._weight(m)[0], 1 if self.window.contains(m.start) else 0, 0

    def evaluated(self, under_way: Sequence[Interval] = ()) -> Evaluated:
        """The formula's evaluation over the failures folded in and `under_way` (as `OutageTally`'s)."""
        downtime, starting, _, digest = self._with(under_way)
        return reliability.mtbf_evaluated(self.parameters, self.eligible_s, seconds(downtime), starting, digest)


# -- request-based availability, OCCURRENCES --------------------------------------------------------
def _count_hour(b: reliability.RequestCount) -> int:
    return hour_of(b.start)


class CountTally:
    """`reliability.availability_requests` v4 (OCCURRENCES) over the request counts folded in
    (those starting in the window), for one window, calendar and exclusions: the counts in their
    digest (`RunDigest`: by record order, in runs by the hour they started in, no record kept)."""

    def __init__(self, window: Interval, calendar: Calendar, exclusions: Sequence[Interval]) -> None:
        empty = reliability.availability_requests([], "OCCURRENCES", window, calendar=calendar, exclusions=exclusions)
        self.window, self.calendar = window, calendar
        self.parameters = empty.parameters
        self.eligible = reliability.eligible_intervals(window, calendar, exclusions)
        self._eligible_starts = [e.start for e in self.eligible]
        self.eligible_s = empty.detail["eligible_seconds"]
        self.good = self.total = self.inside = self.excluded = 0
        payload = reliability._input_payload(
            "availability.requests",
            self.parameters,
            {"counts": records_slot(), "exclusions": reliability._intervals(exclusions)},
            calendar,
            reliability.REQUESTS_VERSION,
        )
        prefix, self._suffix = split_payload(payload)
        self.records = RunDigest(prefix, reliability.count_order, _count_hour, reliability.count_json)

    def extend(self, counts: Sequence[reliability.RequestCount]) -> None:
        """Fold in these request counts (each starting in the window)."""
        self._count(counts, 1)
        self.records.add_encoded(counts)

    def remove(self, counts: Sequence[reliability.RequestCount]) -> None:
        """Take out these request counts, folded in before as they are (a correction: taken out
        as it was, folded in as it is). `KeyError` when one is not held (nothing taken out)."""
        self.records.remove(counts)
        self._count(counts, -1)

    def _count(self, counts: Sequence[reliability.RequestCount], sign: int) -> None:
        """These counts counted in (`sign` 1) or out (-1)."""
        starts, eligible = self._eligible_starts, self.eligible
        for b in counts:
            i = bisect_right(starts, b.start) - 1
            if i >= 0 and b.start < eligible[i].end:
                self.good += sign * b.good
                self.total += sign * b.total
                self.inside += sign
            else:
                self.excluded += sign

    def evaluated(self) -> Evaluated:
        detail = {
            "good": str(self.good),
            "total": str(self.total),
            "counts_in_window": str(self.inside),
            "eligible_seconds": self.eligible_s,
            "counts_excluded": str(self.excluded),
        }
        value = percent(self.good, self.total)
        undefined = ""
        if value is None:
            undefined = "no requests in the window" if self.eligible else reliability.NO_ELIGIBLE_TIME
        return Evaluated(
            "availability.requests", reliability.REQUESTS_VERSION, value, self.parameters,
            self.records.digest(self._suffix), detail, undefined,
        )  # fmt: skip
