"""The running forms of the formulas (`formulas/running.py`) against the formulas themselves: folded
batch by batch, each evaluation — value, detail, parameters, input digest — is the formula's over
every input folded so far, in order, with few records (one hash state) and many (several)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from accord.metrics.v1 import signals_pb2 as pb
from accord_kit.timeline import AlwaysOpen, BusinessCalendar, Interval
from accord_metrics.application import Metrics
from accord_metrics.formulas import contact, reliability, running
from accord_metrics.formulas.common import hour_bucketed, hour_of
from tests.suite import (
    AMS,
    COLLECTOR,
    EMAIL,
    Suite,
    an_active_agreement,
    an_agreement_with,
    at,
    calls,
    monthly_objective,
    outage,
    ts,
)

JAN = "2025-12-31T23:00:00+00:00"  # January's window in Amsterdam
APRIL = "2026-03-31T22:00:00+00:00"

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = Interval(T0, T0 + timedelta(days=2))
BUSINESS = BusinessCalendar(
    "Europe/Amsterdam", ((4, "09:00", "17:00"), (5, "09:00", "17:00"), (6, "08:00", "12:00")), frozenset(), "office", 2
)

_call = st.tuples(
    st.integers(0, 2 * 86400 - 1),  # seconds into the window
    st.sampled_from(["answered", "abandoned", "other"]),
    st.integers(0, 60),  # wait, s
    st.integers(0, 999_999),  # µs of the wait
    st.integers(0, 900),
    st.sampled_from(["0", "1.5", "12.250", "30"]),
)


def _calls(raw: list[tuple[int, str, int, int, int, str]], ids: list[int]) -> list[contact.Call]:
    out = []
    for n, (offset, kind, wait, micro, talk, hold) in zip(ids, raw, strict=False):
        entered = T0 + timedelta(seconds=offset)
        end = entered + timedelta(seconds=wait, microseconds=micro)
        out.append(
            contact.Call(
                f"c{n:05d}",
                entered,
                answered_at=end if kind == "answered" else None,
                abandoned_at=end if kind == "abandoned" else None,
                talk_seconds=Decimal(talk),
                hold_seconds=Decimal(hold),
            )
        )
    return out


def _formula(formula: str, calls: list[contact.Call], variant: str, t: timedelta, s: timedelta | None) -> object:
    if formula == "contact.service_level":
        return contact.service_level(calls, variant, t, s)
    if formula == "contact.asa":
        return contact.asa(calls)
    if formula == "contact.aht":
        return contact.aht(calls)
    return contact.abandonment_rate(calls, s)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(_call, max_size=40), min_size=1, max_size=6),
    st.sampled_from(running.CALL_FORMULAS),
    st.sampled_from(list(contact.ServiceLevelVariant)),
    st.integers(0, 40),
    st.one_of(st.none(), st.integers(0, 10)),
    st.booleans(),
    st.integers(0, 10**6),
)
def test_a_call_tally_gives_the_formula_s_evaluation_after_every_batch(
    batches: list[list[tuple[int, str, int, int, int, str]]], formula: str, variant: contact.ServiceLevelVariant,
    t: int, s: int | None, growing: bool, seed: int,
) -> None:  # fmt: skip
    threshold = timedelta(seconds=t)
    short = None if s is None else timedelta(seconds=s)
    if formula == "contact.service_level" and variant is contact.ServiceLevelVariant.SHORT_ABANDONS_SUCCESS:
        short = short or timedelta(seconds=3)
    # Ids that grow (a batch's records go after every record held) or that do not (placed anywhere).
    total = sum(len(b) for b in batches)
    numbers = list(range(total)) if growing else [(seed + 7919 * i) % 100_003 for i in range(total)]
    tally = running.CallTally(formula, variant.value, threshold, short)
    so_far: list[contact.Call] = []
    used = 0
    for raw in batches:
        batch = _calls(raw, numbers[used : used + len(raw)])
        used += len(raw)
        assert tally.extend(batch)
        so_far += batch
        assert tally.evaluated() == _formula(formula, so_far, variant.value, threshold, short)


@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.sampled_from([0, 500_000, 250_000, 120_000, 5_000, 100, 10, 1, 999_990])),
        min_size=1,
        max_size=12,
    ),
    st.randoms(use_true_random=False),
)
@example([(2, 500_000), (0, 250_000)], random.Random(1))  # 2.5 s and 0.25 s: written to two decimals
def test_asa_s_total_wait_is_the_formula_s_sum_to_its_last_written_digit(
    waits: list[tuple[int, int]], rnd: random.Random
) -> None:
    """ASA's running sum of the waits (kept as µs and the terms' exponents) is the formula's
    Decimal sum as it writes it — 2.5 + 0.25 is "2.75", 2 + 1 is "3", 0.120 s a term "0.12" —
    after every call folded in and after every call taken out, whatever waits are left."""
    calls = [
        contact.Call(f"c{n}", T0, answered_at=T0 + timedelta(seconds=w, microseconds=us))
        for n, (w, us) in enumerate(waits)
    ]
    tally = running.CallTally("contact.asa")
    held: list[contact.Call] = []
    for c in calls:
        assert tally.extend([c])
        held.append(c)
        assert tally.evaluated() == contact.asa(held)
    rnd.shuffle(held)
    while len(held) > 1:
        tally.remove([held.pop()])
        assert tally.evaluated() == contact.asa(held)
        assert tally.evaluated().detail["total_wait_seconds"] == contact.asa(held).detail["total_wait_seconds"]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(_call, min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 10**6), _call, st.booleans()), min_size=1, max_size=12),
    st.sampled_from(running.CALL_FORMULAS),
    st.sampled_from(list(contact.ServiceLevelVariant)),
    st.integers(0, 40),
    st.one_of(st.none(), st.integers(0, 10)),
)
def test_a_call_tally_takes_a_call_out_and_a_correction_in_as_the_formula_over_those_left(
    raw: list[tuple[int, str, int, int, int, str]], fixes: list[tuple[int, tuple[int, str, int, int, int, str], bool]],
    formula: str, variant: contact.ServiceLevelVariant, t: int, s: int | None,
) -> None:  # fmt: skip
    """A call taken out (`remove`), or replaced by its correction (`replace`, or taken out as it
    was and folded in as it is), leaves the formula's evaluation over the calls held — its sums
    written as the formula writes them (the finest exponent of the terms left)."""
    threshold = timedelta(seconds=t)
    short = None if s is None else timedelta(seconds=s)
    if formula == "contact.service_level" and variant is contact.ServiceLevelVariant.SHORT_ABANDONS_SUCCESS:
        short = short or timedelta(seconds=3)
    held = {c.call_id: c for c in _calls(raw, list(range(len(raw))))}
    tally = running.CallTally(formula, variant.value, threshold, short)
    assert tally.extend(list(held.values()))
    for pick, fix, drop in fixes:
        if not held:
            break
        call_id = sorted(held)[pick % len(held)]
        before = held.pop(call_id)
        if drop:
            tally.remove([before])
        else:  # a correction: the same id, another content — replaced, or taken out and folded in
            (after,) = _calls([fix], [int(call_id[1:])])
            if pick % 2:
                tally.replace(before, after)
            else:
                tally.remove([before])
                assert tally.extend([after])
            held[call_id] = after
        assert tally.evaluated() == _formula(formula, list(held.values()), variant.value, threshold, short)
    with pytest.raises(KeyError):
        tally.remove([_calls(raw[:1], [10**6])[0]])  # not held


def test_a_call_tally_refuses_an_id_it_holds_and_checks_parameters_as_the_formula_does() -> None:
    tally = running.CallTally("contact.asa")
    calls = _calls([(10, "answered", 5, 0, 60, "0")], [1])
    assert tally.extend(calls)
    assert not tally.extend(calls)  # the formula refuses a repeated id: the caller computes it whole
    assert not tally.extend(_calls([(10, "answered", 5, 0, 60, "0")] * 2, [2, 2]))
    # Held ids are found among many (sorted by id, not in the order folded), new ones between them pass.
    many = running.CallTally("contact.asa")
    assert many.extend(_calls([(10, "answered", 5, 0, 60, "0")] * 50, list(range(100, 0, -2))))
    assert not many.extend(_calls([(10, "answered", 5, 0, 60, "0")] * 3, [51, 52, 53]))
    assert not many.extend(_calls([(10, "answered", 5, 0, 60, "0")], [2]))
    assert many.extend(_calls([(10, "answered", 5, 0, 60, "0")] * 3, [1, 51, 101]))
    with pytest.raises(ValueError, match="needs the short-abandon threshold S"):
        running.CallTally("contact.service_level", "SHORT_ABANDONS_SUCCESS", timedelta(seconds=20), None)
    with pytest.raises(ValueError, match="must not be negative"):
        running.CallTally("contact.abandonment_rate", "", None, timedelta(seconds=-1))


def test_calls_over_many_hours_keep_runs_continued_at_their_end() -> None:
    """Calls over most of a day fill every bucket with runs of many hours: batches appended after
    each bucket's last call continue its last run (the new records alone hashed), one placed in
    the first hour hashes that run of its bucket alone; each gives the formula's digest."""
    n = running.BUCKETS * 200
    calls = _calls([(i * 6 % 86400, "answered", i % 30, i, 60, "0") for i in range(n)], list(range(n)))
    tally = running.CallTally("contact.service_level", "ANSWERED_OVER_OFFERED", timedelta(seconds=20))
    for i in range(0, n, 1000):
        hashed = tally.records.hashed
        assert tally.extend(calls[i : i + 1000])
        assert tally.records.hashed - hashed == len(calls[i : i + 1000])
        assert tally.evaluated() == contact.service_level(
            calls[: i + 1000], "ANSWERED_OVER_OFFERED", timedelta(seconds=20)
        )
    assert all(len(b.runs) >= 20 for b in tally.records.buckets)
    late = _calls([(5, "abandoned", 2, 0, 0, "0")], [-1])
    late = [contact.Call("a-first", late[0].entered_queue, abandoned_at=late[0].abandoned_at)]
    hashed = tally.records.hashed
    assert tally.extend(late)
    (bucket,) = [b for b in tally.records.buckets if any(c.call_id == "a-first" for c in b.runs[0])]
    assert tally.records.hashed - hashed == len(bucket.runs[0])
    assert tally.evaluated() == contact.service_level(calls + late, "ANSWERED_OVER_OFFERED", timedelta(seconds=20))


def test_calls_arriving_late_in_the_hour_before_the_last_encode_only_themselves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Calls over most of a day, then a batch a few minutes late — in the hour before the one
    arriving, each bucket's run before its last: placed among the records kept of that hour,
    neither that hour's calls encoded anew nor every earlier run's digest hashed again (a bucket
    holds ≈ 20 runs here, ≈ 300 over a month's window) — only the runs of the latest hours; the
    digest is the formula's."""
    n = running.BUCKETS * 200
    calls = _calls([(i * 6 % 86400, "answered", i % 30, i, 60, "0") for i in range(n)], list(range(n)))
    tally = running.CallTally("contact.service_level", "ANSWERED_OVER_OFFERED", timedelta(seconds=20))
    for i in range(0, n, 1000):
        assert tally.extend(calls[i : i + 1000])
    assert all(len(b.runs) >= 20 for b in tally.records.buckets)
    assert tally.records.encoded == 0
    # The last call entered at 76,794 s (hour 21): late ones in hour 20, 1,000 of them.
    late = _calls([(72_001 + k * 3, "answered", 5, 0, 60, "0") for k in range(1000)], [n + k for k in range(1000)])
    digests = 0
    run_digest = running._Runs.run_digest

    def counted(bucket: Any, at: int) -> str:
        nonlocal digests
        digests += 1
        return run_digest(bucket, at)

    monkeypatch.setattr(running._Runs, "run_digest", counted)
    hashed = tally.records.hashed
    assert tally.extend(late)
    assert tally.records.encoded == 0  # the records of hour 20 were kept
    late_hour = hour_of(T0) + 20
    assert all(b.hours[-1] - late_hour in (0, 1) for b in tally.records.buckets)  # hour 20 among each one's latest
    assert tally.records.hashed - hashed == sum(len(b.runs[b.hours.index(late_hour)]) for b in tally.records.buckets)
    assert digests <= running.KEPT_HOURS * running.BUCKETS  # the two latest runs' digests a bucket, no earlier one
    assert tally.evaluated() == contact.service_level(calls + late, "ANSWERED_OVER_OFFERED", timedelta(seconds=20))


def test_a_correction_hashes_its_run_again_not_the_records_after_it() -> None:
    """A call corrected in the middle of 20,000 (its record moved to another bucket or not) is
    hashed again with the calls of its hour in its bucket alone — not with every record after its
    place, as the digest of one list must, nor every record of its bucket after it — and the
    digest is the formula's."""
    n = 20_000
    calls = _calls([(i * 4 % 86400, "answered", i % 30, i, 60, "0") for i in range(n)], list(range(n)))
    tally = running.CallTally("contact.asa")
    assert tally.extend(calls)
    largest = max(len(run) for b in tally.records.buckets for run in b.runs)
    for k, wait in ((n // 2, 7), (n // 3, 8), (10, 9)):
        before = calls[k]
        answered = before.entered_queue + timedelta(seconds=wait)
        after = contact.Call(before.call_id, before.entered_queue, answered_at=answered)
        hashed, encoded = tally.records.hashed, tally.records.encoded
        tally.replace(before, after)
        calls[k] = after
        assert tally.records.hashed - hashed <= 2 * largest + 1 < n // 200  # a bucket: ≈ n // 64
        assert 0 < tally.records.encoded - encoded <= 2 * largest + 1  # its run's calls, encoded anew
        assert tally.evaluated() == contact.asa(calls)
    tally.remove([calls[n // 4]])
    assert tally.evaluated() == contact.asa(calls[: n // 4] + calls[n // 4 + 1 :])


def test_the_call_tallies_of_a_window_encode_a_batch_once_and_hold_no_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The four call tallies of one window folding a batch in turn encode each call's record once
    (the last calls' records held beside them, no call keeping its own); a window folded whole —
    more calls than that holds — is encoded by each tally and not held."""
    encoded: list[str] = []
    write = contact.call_json

    def counting(c: contact.Call) -> str:
        encoded.append(c.call_id)
        return write(c)

    monkeypatch.setattr(contact, "call_json", counting)
    monkeypatch.setattr(running, "_LATELY", running._LatelyEncoded(1000))
    calls = _calls([(i * 9, "answered", i % 30, i, 60, "0") for i in range(3000)], list(range(3000)))
    tallies = [running.CallTally(f) for f in ("contact.asa", "contact.abandonment_rate", "contact.aht")]
    tallies.append(running.CallTally("contact.service_level", "ANSWERED_OVER_OFFERED", timedelta(seconds=20)))
    for t in tallies:
        assert t.extend(calls[:2000])  # whole: 2,000 more than the 1,000 held
    assert len(encoded) == 4 * 2000 and not running._LATELY._held
    for t in tallies:
        assert t.extend(calls[2000:2500])
    assert len(encoded) == 4 * 2000 + 500 and len(running._LATELY._held) == 500
    assert all(getattr(c, "_accord_encoded_utc_record", None) is None for c in calls)
    assert tallies[0].evaluated() == contact.asa(calls[:2500])


def test_new_calls_with_random_ids_are_hashed_alone() -> None:
    """Calls whose ids are random (UUIDs, as many telephony systems give them) arriving in order:
    each batch lands after the calls held in every bucket — the digest orders calls by arrival
    (entry into the queue, then id) — so only the new records are hashed, where ordered by id
    (v2) every bucket was hashed again from before its first new call (≈ every record held). A
    correction that moves a call's entry places it by its new arrival; the digest is always the
    formula's."""
    import random
    import uuid

    rnd = random.Random(20261205)
    n = running.BUCKETS * 128

    def call(i: int) -> contact.Call:
        entered = T0 + timedelta(seconds=3 * i)
        return contact.Call(
            str(uuid.UUID(int=rnd.getrandbits(128))), entered, answered_at=entered + timedelta(seconds=i % 40)
        )

    calls = [call(i) for i in range(n + 2000)]
    tally = running.CallTally("contact.service_level", "ANSWERED_OVER_OFFERED", timedelta(seconds=20))
    assert tally.extend(calls[:n])
    for start in (n, n + 1000):
        hashed = tally.records.hashed
        assert tally.extend(calls[start : start + 1000])
        assert tally.records.hashed - hashed == 1000
        assert tally.evaluated() == contact.service_level(
            calls[: start + 1000], "ANSWERED_OVER_OFFERED", timedelta(seconds=20)
        )
    # A correction moving a call's entry an hour later (among other calls): placed by it.
    before = calls[n // 2]
    entered = before.entered_queue + timedelta(hours=1)
    after = contact.Call(before.call_id, entered, answered_at=entered + timedelta(seconds=25))
    tally.replace(before, after)
    calls[n // 2] = after
    assert tally.evaluated() == contact.service_level(calls, "ANSWERED_OVER_OFFERED", timedelta(seconds=20))
    assert [c.call_id for c in tally.records.items] == [c.call_id for c in sorted(calls, key=contact.arrival)]
    # A held call given again (as it arrived) is refused, nothing folded.
    assert not tally.extend([calls[7]])
    tally.remove([after])
    assert tally.evaluated() == contact.service_level(
        calls[: n // 2] + calls[n // 2 + 1 :], "ANSWERED_OVER_OFFERED", timedelta(seconds=20)
    )


class _Arrived:
    """An item ordered by (instant, id) as a call tally orders calls, its record its content."""

    __slots__ = ("at", "key", "version")

    def __init__(self, key: int, at: int, version: int = 0) -> None:
        self.key, self.at, self.version = key, at, version

    def record(self) -> str:
        return f'"{self.key}:{self.at}:{self.version}"'


_BY_ARRIVAL = attrgetter("at", "key")


def _steps(latest: int) -> st.SearchStrategy[list[tuple[str, list[tuple[int, int]]]]]:
    """Random steps for `_arrivals`: batches of (key, instant from 0 to `latest` s)."""
    step = st.tuples(
        st.sampled_from(["add", "remove", "replace", "move"]),
        st.lists(st.tuples(st.integers(0, 12_000), st.integers(0, latest)), max_size=300),
    )
    return st.lists(step)


def _arrivals(
    kept: running.RunDigest,
    held: dict[int, _Arrived],
    steps: list[tuple[str, list[tuple[int, int]]]],
) -> Iterator[list[_Arrived]]:
    """Each random step applied to `kept` and `held` alike — a batch added (anywhere), taken out,
    replaced in place (another content) or moved (another instant) — then the items held, in order."""
    kept.add([(x, x.record()) for x in held.values()])
    for op, raw in steps:
        if op == "add":
            new = {k: _Arrived(k, at) for k, at in raw if k not in held}
            kept.add([(x, x.record()) for x in new.values()])
            held |= new
        elif op == "remove":
            gone = [held.pop(k) for k in {k for k, _ in raw if k in held}]
            kept.remove(gone)
        else:
            for k, at in {k: at for k, at in raw if k in held}.items():
                was = held[k]
                now = _Arrived(k, was.at if op == "replace" else at, was.version + 1)
                kept.replace(was, now, now.record())
                held[k] = now
        yield sorted(held.values(), key=_BY_ARRIVAL)


@settings(max_examples=60, deadline=None)
@given(st.booleans(), _steps(6 * 3600))
def test_a_run_digest_is_the_formulas_over_its_items(
    many: bool, steps: list[tuple[str, list[tuple[int, int]]]]
) -> None:
    """Items in the order they arrived (an instant then an id, many at one instant) over six
    hours: random batches added anywhere (late ones in earlier hours, new hours before later
    ones), taken out (whole runs too), replaced in their place (another content) or moved (another
    instant, another hour): the digest is always the formulas' (`common.hour_bucketed`) over the
    records in that order, and no record held but those of each bucket's runs of its latest hours
    (`KEPT_HOURS`). Items given
    beside (`digest_with`: in the last hour, earlier ones, a new one, one equal to an item held)
    give the digest of all of them held, nothing changed."""
    hour = lambda x: x.at // 3600  # noqa: E731
    kept = running.RunDigest(b"{", _BY_ARRIVAL, hour, _Arrived.record)
    held: dict[int, _Arrived] = {k: _Arrived(k, k * 7 % (6 * 3600)) for k in range(0, 12_000, 4 if many else 1000)}

    def top(items: list[_Arrived]) -> str:
        joined = ",".join(hour_bucketed((hour(x), x.record()) for x in items))
        return "sha256:" + hashlib.sha256(b"{" + joined.encode() + b"}").hexdigest()

    for ordered in _arrivals(kept, held, steps):
        assert kept.digest(b"}") == top(ordered)
        extra = [_Arrived(20_000 + i, (i * 7919 + len(ordered) * 31) % (7 * 3600)) for i in range(6)]
        extra += ordered[len(ordered) // 2 : len(ordered) // 2 + 1]
        assert kept.digest_with([(x, x.record()) for x in extra], b"}") == top(
            sorted([*ordered, *extra], key=_BY_ARRIVAL)
        )
        assert kept.digest(b"}") == top(ordered)
        assert kept.items == ordered
        assert not kept.holds_any([_Arrived(k, -1) for k in held]) and (not held or kept.holds_any(ordered[-1:]))
        # The records held are those of each bucket's runs of its latest hours, as each run holds its items (no other).
        for b in kept.buckets:
            assert all(h > b.hours[-1] - running.KEPT_HOURS for h in b.kept)
            assert all(rs == [x.record() for x in b.runs[b.hours.index(h)]] for h, rs in b.kept.items())


def test_a_run_digest_placing_many_encodes_them_a_chunk_at_a_time_to_the_same_digest() -> None:
    """Many items given at once, in no order (a window folded whole), among items held: placed in
    order a chunk at a time — no more than a chunk's records made at once — to the digest the
    formulas give over them all, as one `add` of them all gives."""
    import random

    rnd = random.Random(5)
    hour = lambda x: x.at // 3600  # noqa: E731
    held = [_Arrived(k, rnd.randrange(10 * 3600)) for k in range(0, 3000)]
    many = [_Arrived(k, rnd.randrange(12 * 3600)) for k in range(3000, 3000 + 3 * running._CHUNK + 7)]
    chunked = running.RunDigest(b"[", _BY_ARRIVAL, hour, _Arrived.record)
    whole = running.RunDigest(b"[", _BY_ARRIVAL, hour, _Arrived.record)
    for kept in (chunked, whole):
        kept.add([(x, x.record()) for x in held])
    placed: list[int] = []
    add = chunked.add
    chunked.add = lambda pairs: (placed.append(len(pairs)), add(pairs))  # type: ignore[method-assign]
    chunked.add_encoded(many)
    assert placed == [running._CHUNK] * 3 + [7]
    whole.add([(x, x.record()) for x in many])
    every = sorted([*held, *many], key=_BY_ARRIVAL)
    joined = ",".join(hour_bucketed((hour(x), x.record()) for x in every))
    top = "sha256:" + hashlib.sha256(b"[" + joined.encode() + b"]").hexdigest()
    assert chunked.digest(b"]") == whole.digest(b"]") == top and chunked.items == every


def test_a_late_batch_before_many_held_items_reads_the_orders_of_few() -> None:
    """A backlog's piece while live items arrive: 200 items arriving over the first hours of six,
    placed before ≈ 40,000 held — each by a bisection from the place of the one before, reading
    the order of ≈ log2 of the held items each (the code before read the order of every held item
    after the first one's place, and sorted them with the new: ≈ 40,000 reads); the items in
    order, the digest the formulas', and an equal instant's held items before the new ones."""
    reads = 0

    def order(x: _Arrived) -> tuple[int, int]:
        nonlocal reads
        reads += 1
        return (x.at, x.key)

    hour = lambda x: x.at // 3600  # noqa: E731
    kept = running.RunDigest(b"{", order, hour, _Arrived.record)
    held = [_Arrived(k, 3600 + k // 2) for k in range(40_000)]  # two an instant, from the second hour on
    for k in range(0, len(held), 5000):
        kept.add([(x, x.record()) for x in held[k : k + 5000]])
    late = [_Arrived(100_000 + k, 3600 + k * 97 % 20_000) for k in range(200)]  # among the held, from the start
    reads = 0
    kept.add([(x, x.record()) for x in late])
    assert reads < 12_000
    every = sorted([*held, *late], key=_BY_ARRIVAL)  # (keys differ: the held first at an instant by key)
    assert kept.items == every
    joined = ",".join(hour_bucketed((hour(x), x.record()) for x in every))
    assert kept.digest(b"}") == "sha256:" + hashlib.sha256(b"{" + joined.encode() + b"}").hexdigest()
    # An equal order: a held item's twin placed after it (`_Held._place` finds the held one first).
    twin = [_Arrived(x.key, x.at, 1) for x in held[100:120]]
    kept.add([(x, x.record()) for x in twin])
    for x in twin:
        at = kept.items.index(held[100 + twin.index(x)])
        assert kept.items[at + 1] is x


def test_outages_placed_by_their_end_before_many_held_read_the_ends_of_few(monkeypatch: pytest.MonkeyPatch) -> None:
    """`place_by_end` with 100 outages ending among ≈ 20,000 held (ends repeating): each placed by a
    bisection of the ends held, not merged with every held one after the first (whose ends the
    code before read: ≈ 20,000); the outages in order of their ends, the held ones first among
    equal ends, the new ones in the order sorting them by end gives."""
    reads = 0
    end = running._END

    def counted(o: Interval) -> datetime:
        nonlocal reads
        reads += 1
        return end(o)

    rnd = random.Random(11)
    held = sorted(
        (Interval(T0 + timedelta(seconds=s), T0 + timedelta(seconds=s + rnd.randint(1, 9))) for s in range(20_000)),
        key=end,
    )
    ends, by_end = [o.end for o in held], list(held)
    fresh = [Interval(T0 + timedelta(seconds=s), T0 + timedelta(seconds=s + 5)) for s in rnd.sample(range(20_000), 100)]
    monkeypatch.setattr(running, "_END", counted)
    running.place_by_end(ends, by_end, fresh)
    assert reads <= 3 * len(fresh)
    expected = sorted([*held, *sorted(fresh, key=end)], key=end)  # stable: the held first at an equal end
    assert all(a is b for a, b in zip(by_end, expected, strict=True))
    assert ends == [o.end for o in expected]


def test_a_run_digest_whose_last_hour_is_taken_out_continues_the_hour_before() -> None:
    """Every item of the last hour taken out (each bucket's last run gone), then items appended at
    the end of the hour before: each bucket's run of that hour is hashed again from its items (its
    state was not kept), not continued from the state of the run taken out."""
    hour = lambda x: x.at // 3600  # noqa: E731
    kept = running.RunDigest(b"[", _BY_ARRIVAL, hour, _Arrived.record)
    first = [_Arrived(k, k) for k in range(0, 3000)]  # hour 0, from 0 s to 2,999 s
    second = [_Arrived(k, 3600 + k) for k in range(3000, 6000)]  # hour 1
    kept.add([(x, x.record()) for x in first + second])
    kept.remove(second)
    late = [_Arrived(k, 3000 + k % 500) for k in range(6000, 7000)]  # hour 0, after every item held
    kept.add([(x, x.record()) for x in late])
    ordered = sorted(first + late, key=_BY_ARRIVAL)
    top = ",".join(hour_bucketed((hour(x), x.record()) for x in ordered))
    assert kept.digest(b"]") == "sha256:" + hashlib.sha256(b"[" + top.encode() + b"]").hexdigest()


_outage = st.tuples(st.integers(-3600, 2 * 86400 + 3600), st.integers(0, 7200))


def _in_window(raw: list[tuple[int, int]]) -> list[Interval]:
    """Outages (start, length in s from the window's start) as the formula's caller passes them:
    those overlapping the window, non-empty."""
    batch = [Interval(T0 + timedelta(seconds=a), T0 + timedelta(seconds=a + n)) for a, n in raw]
    return [o for o in batch if o.start < WINDOW.end and WINDOW.start < o.end and o.start < o.end]


def _lasting(starts: list[int], now: datetime) -> list[Interval]:
    """Outages under way since these starts (s from the window's start) as the formula takes them
    at `now`: lasting until then, those starting before it and overlapping the window."""
    lasting = [Interval(T0 + timedelta(seconds=a), now) for a in starts]
    return [o for o in lasting if o.start < now and o.start < WINDOW.end and WINDOW.start < o.end]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.lists(_outage, max_size=30), min_size=1, max_size=6).map(lambda b: b * 4 if len(b) == 6 else b),
    st.sampled_from(["always", "business"]),
    st.lists(st.tuples(st.integers(0, 2 * 86400), st.integers(1, 20000)), max_size=2),
    st.integers(0, 600),
    st.lists(st.integers(-3600, 2 * 86400 + 3600), max_size=3),
    st.integers(0, 2 * 86400 + 3600),
)
def test_an_outage_tally_gives_time_based_availability_after_every_batch(
    batches: list[list[tuple[int, int]]], calendar: str, excluded: list[tuple[int, int]], minimum: int,
    under_way: list[int], as_of: int,
) -> None:  # fmt: skip
    """After every batch: the formula's evaluation over the outages folded, and — asked with
    outages under way lasting until an instant (touching, overlapping, swallowing or apart from
    those held, many records or few) — over those and them, the tally unchanged by it."""
    cal = AlwaysOpen() if calendar == "always" else BUSINESS
    exclusions = [Interval(T0 + timedelta(seconds=a), T0 + timedelta(seconds=a + n)) for a, n in excluded]
    tally = running.OutageTally(WINDOW, cal, exclusions, timedelta(seconds=minimum))
    lasting = _lasting(under_way, T0 + timedelta(seconds=as_of))
    so_far: list[Interval] = []
    for raw in batches:
        batch = _in_window(raw)
        tally.extend(batch)
        so_far += batch
        expected = reliability.availability_time(WINDOW, cal, so_far, exclusions, timedelta(seconds=minimum))
        assert tally.evaluated(lasting) == reliability.availability_time(
            WINDOW, cal, so_far + lasting, exclusions, timedelta(seconds=minimum)
        )
        assert tally.evaluated() == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(_outage, max_size=30), min_size=1, max_size=6),
    st.sampled_from(["always", "business"]),
    st.lists(st.tuples(st.integers(0, 2 * 86400), st.integers(1, 20000)), max_size=2),
    st.lists(st.integers(-3600, 2 * 86400 + 3600), max_size=2),
    st.integers(0, 2 * 86400 + 3600),
)
def test_an_mtbf_tally_gives_the_formula_s_evaluation_after_every_batch(
    batches: list[list[tuple[int, int]]], calendar: str, excluded: list[tuple[int, int]], under_way: list[int],
    as_of: int,
) -> None:  # fmt: skip
    """MTBF's running form, as the outage tally's: after every batch the formula's evaluation
    over the failures folded (merged failures starting in the window counted, whether or not that
    instant is eligible), and with failures under way lasting until an instant beside them."""
    cal = AlwaysOpen() if calendar == "always" else BUSINESS
    exclusions = [Interval(T0 + timedelta(seconds=a), T0 + timedelta(seconds=a + n)) for a, n in excluded]
    tally = running.MtbfTally(WINDOW, cal, exclusions)
    lasting = _lasting(under_way, T0 + timedelta(seconds=as_of))
    assert tally.evaluated() == reliability.mtbf(WINDOW, cal, [], exclusions=exclusions)
    so_far: list[Interval] = []
    for raw in batches:
        batch = _in_window(raw)
        tally.extend(batch)
        so_far += batch
        assert tally.evaluated(lasting) == reliability.mtbf(WINDOW, cal, so_far + lasting, exclusions=exclusions)
        assert tally.evaluated() == reliability.mtbf(WINDOW, cal, so_far, exclusions=exclusions)


def _taken_out_in_turn(
    tally: Any, held: list[Any], fixes: list[tuple[int, bool, Any]], fixed: Callable[[Any, Any], list[Any]]
) -> Iterator[None]:  # fmt: skip
    """Each of `fixes` (pick, drop, fix) in turn, yielding after each: an input of `held` taken out
    of the tally and of `held`, and — unless dropped — what `fixed(it, fix)` gives folded in and
    held in its place (a correction)."""
    for pick, drop, fix in fixes:
        if not held:
            return
        before = held.pop(pick % len(held))
        tally.remove([before])
        if not drop:
            after = fixed(before, fix)
            tally.extend(after)
            held += after
        yield


def test_an_outage_tally_merges_a_late_outage_with_the_merged_outages_it_touches_alone() -> None:
    """A late outage in the middle of the window is weighed in with the merged outage it touches
    alone — before, every merged outage after it was taken out and weighed in again (80,000 at a
    contact centre's density, for a correction too) — and the evaluation is the formula's."""
    held = [Interval(T0 + timedelta(minutes=10 * k), T0 + timedelta(minutes=10 * k + 1)) for k in range(100)]
    tally = running.OutageTally(WINDOW, AlwaysOpen(), [], timedelta(0))
    tally.extend(held)
    weighed: list[Interval] = []
    weight = tally._weight
    tally._weight = lambda m: (weighed.append(m), weight(m))[1]  # type: ignore[method-assign]
    late = Interval(T0 + timedelta(minutes=505), T0 + timedelta(minutes=510))  # touches the 51st (510–511)
    tally.extend([late])
    assert weighed == [held[51], Interval(late.start, held[51].end)]  # out, and the merged outage in
    assert tally.evaluated() == reliability.availability_time(WINDOW, AlwaysOpen(), [*held, late], [], timedelta(0))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(_outage, min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 10**6), st.booleans(), _outage), min_size=1, max_size=12),
    st.sampled_from(["availability", "mtbf"]),
    st.integers(0, 600),
    st.lists(st.integers(-3600, 2 * 86400 + 3600), max_size=2),
    st.integers(0, 2 * 86400 + 3600),
)
def test_an_outage_tally_takes_an_outage_out_and_a_correction_in_as_the_formula_over_those_left(
    raw: list[tuple[int, int]], fixes: list[tuple[int, bool, tuple[int, int]]], metric: str, minimum: int,
    under_way: list[int], as_of: int,
) -> None:  # fmt: skip
    """Outages folded in (overlapping, touching, equal ones among them), then taken out one at a
    time (removed, or corrected: taken out as it was and folded in as it is): after each, time-based
    availability's (or MTBF's) tally is the formula's over the outages left — the merged outage one
    was in merged again without it — with outages under way beside too."""
    least = timedelta(seconds=minimum)
    tally = running.OutageTally(WINDOW, AlwaysOpen(), [], least) if metric == "availability" else (
        running.MtbfTally(WINDOW, AlwaysOpen(), [])
    )  # fmt: skip

    def formula(outages: list[Interval]) -> object:
        if metric == "availability":
            return reliability.availability_time(WINDOW, AlwaysOpen(), outages, [], least)
        return reliability.mtbf(WINDOW, AlwaysOpen(), outages, exclusions=[])

    held = _in_window(raw)
    tally.extend(held)
    lasting = _lasting(under_way, T0 + timedelta(seconds=as_of))
    for _ in _taken_out_in_turn(tally, held, fixes, lambda _, fix: _in_window([fix])):
        assert tally.evaluated() == formula(held)
        assert tally.evaluated(lasting) == formula(held + lasting)
    with pytest.raises(KeyError):
        tally.remove([Interval(T0 - timedelta(days=9), T0 - timedelta(days=8))])  # not held


def test_rounds_of_an_mtbf_objective_fold_only_their_batches(make_store_env: Callable[[str], dict[str, str]]) -> None:
    """An open window judged by MTBF keeps its running form (it ran the formula over every outage
    of the window each round): batches of outages, one under way and its end, each round the
    formula's evaluation over every stored signal."""
    suite = Suite(make_store_env)
    try:
        m = suite.metrics
        aid = an_agreement_with(suite, [monthly_objective("mtbf", "METRIC_MTBF", {})])
        now = at(f"2026-01-10T09:30{AMS}")
        m.record(COLLECTOR, [outage("long", f"2026-01-02T10:00{AMS}", 180)])  # the longest: none after it is
        now += timedelta(minutes=5)
        suite.tick(now.isoformat())
        (held,) = [r for r in m._running.values() if isinstance(r.tally, running.MtbfTally)]
        seeded, appended = held.seeded, held.appended
        steps: list[list[pb.Signal]] = [
            [outage(f"a{n}", f"2026-01-09T0{n}:00{AMS}", 5 + n) for n in range(3)],
            [_under_way("down", at(f"2026-01-10T09:00{AMS}")), outage("b", f"2026-01-10T08:58{AMS}", 3)],
            [outage("c", f"2026-01-10T09:20{AMS}", 1)],
        ]
        done = _under_way("down", at(f"2026-01-10T09:00{AMS}"))
        done.outage.end.CopyFrom(ts(at(f"2026-01-10T09:40{AMS}")))
        for batch in [*steps, [done]]:
            m.record(COLLECTOR, batch, reason="recorded")
            now += timedelta(minutes=15)
            suite.tick(now.isoformat())
            check = m.recompute(aid, "mtbf", JAN)
            assert check["matches"], check["differences"]
        assert held.seeded == seeded and held.appended >= appended + 4 and held.under_way == []
        # long, a0, a1, a2 and one of b, down and c (down, 09:00–09:40, reaches b and swallows c)
        assert m.window(None, aid, "mtbf", JAN).latest["detail"]["failures"] == "5"
    finally:
        suite.close()


_count = st.tuples(st.integers(0, 2 * 86400 - 1), st.integers(0, 50), st.integers(0, 50))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(_count, max_size=30), min_size=1, max_size=6),
    st.sampled_from(["always", "business"]),
    st.lists(st.tuples(st.integers(0, 2 * 86400), st.integers(1, 20000)), max_size=2),
)
def test_a_count_tally_gives_request_based_availability_after_every_batch(
    batches: list[list[tuple[int, int, int]]], calendar: str, excluded: list[tuple[int, int]]
) -> None:
    cal = AlwaysOpen() if calendar == "always" else BUSINESS
    exclusions = [Interval(T0 + timedelta(seconds=a), T0 + timedelta(seconds=a + n)) for a, n in excluded]
    tally = running.CountTally(WINDOW, cal, exclusions)
    so_far: list[reliability.RequestCount] = []
    for raw in batches:
        batch = [
            reliability.RequestCount(T0 + timedelta(seconds=a), T0 + timedelta(seconds=a + 60), min(g, n), n)
            for a, g, n in raw
        ]
        tally.extend(batch)
        so_far += batch
        expected = reliability.availability_requests(so_far, "OCCURRENCES", WINDOW, calendar=cal, exclusions=exclusions)
        assert tally.evaluated() == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(_count, min_size=1, max_size=30),
    st.lists(st.tuples(st.integers(0, 10**6), _count, st.booleans()), min_size=1, max_size=10),
    st.sampled_from(["always", "business"]),
    st.lists(st.tuples(st.integers(0, 2 * 86400), st.integers(1, 20000)), max_size=2),
)
def test_a_count_tally_takes_a_count_out_and_a_correction_in_as_the_formula_over_those_left(
    raw: list[tuple[int, int, int]], fixes: list[tuple[int, tuple[int, int, int], bool]], calendar: str,
    excluded: list[tuple[int, int]],
) -> None:  # fmt: skip
    cal = AlwaysOpen() if calendar == "always" else BUSINESS
    exclusions = [Interval(T0 + timedelta(seconds=a), T0 + timedelta(seconds=a + n)) for a, n in excluded]

    def count(a: int, g: int, n: int) -> reliability.RequestCount:
        return reliability.RequestCount(T0 + timedelta(seconds=a), T0 + timedelta(seconds=a + 60), min(g, n), n)

    held = [count(*r) for r in raw]
    tally = running.CountTally(WINDOW, cal, exclusions)
    tally.extend(held)
    for pick, fix, drop in fixes:
        if not held:
            break
        before = held.pop(pick % len(held))
        tally.remove([before])
        if not drop:  # a correction: taken out as it was, folded in as it is
            after = count(*fix)
            tally.extend([after])
            held.append(after)
        expected = reliability.availability_requests(held, "OCCURRENCES", WINDOW, calendar=cal, exclusions=exclusions)
        assert tally.evaluated() == expected
    with pytest.raises(KeyError):
        tally.remove([count(2 * 86400 - 1, 51, 52)])  # not held (no count of 52)


# -- a service's rounds: every open window's running evaluation against the formula over every input ---------------
_step = st.one_of(
    st.tuples(st.just("calls"), st.integers(0, 4), st.integers(0, 3), st.integers(-60 * 24 * 12, 60 * 24 * 9)),
    st.tuples(st.just("outage"), st.integers(-60 * 24 * 12, 60 * 24 * 9), st.integers(1, 90)),
    st.tuples(st.just("under way"), st.integers(-60 * 24 * 12, 60 * 24 * 9)),
    st.tuples(st.just("correct"), st.integers(0, 10**6), st.integers(1, 120)),
    st.tuples(st.just("again"), st.integers(0, 10**6)),
    st.tuples(st.just("round"), st.integers(1, 4000)),
)


PHONE = "phone"


@pytest.mark.parametrize("services", [(EMAIL,), (EMAIL, PHONE)], ids=["email", "email+phone"])
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_step, min_size=4, max_size=14))
def test_an_open_window_judged_from_its_running_evaluation_is_the_formula_over_every_input(
    make_store_env: Callable[[str], dict[str, str]], services: tuple[str, ...], steps: list[tuple[Any, ...]]
) -> None:
    """Random batches (in April, and late ones in March: a closed window restated), outages under
    way, corrections and completions of signals the window holds, duplicates, and rounds: after every round,
    April's evaluations (availability over outages, service level and ASA over calls: two call
    tallies sharing one digest) are those the formulas give over every stored signal — value,
    detail, parameters, input digest. Likewise with the agreement measuring two services, each
    batch on one of them in turn."""
    _april_rounds(make_store_env, services, steps)


def _april_rounds(
    make_store_env: Callable[[str], dict[str, str]], services: tuple[str, ...], steps: list[tuple[Any, ...]]
) -> list[running.Running]:
    """The steps (`_step`) against an agreement measuring `services`, April's evaluations checked
    against the formulas after every round; the open windows' running evaluations, once done."""
    from accord_agreements.samples import sla_terms

    suite = Suite(make_store_env)
    try:
        m = suite.metrics
        objectives = [*sla_terms()["objectives"], monthly_objective("asa", "METRIC_ASA", {})]
        aid = an_agreement_with(suite, objectives, f"2026-01-10T10:00{AMS}", services)
        now = at(f"2026-04-10T10:00{AMS}")
        suite.tick(now.isoformat())
        sent: list[pb.Signal] = []
        n = 0
        for step in [*steps, ("round", 5)]:
            kind = step[0]
            if kind == "calls":
                n += 1
                batch = calls(f"c{n}-", (now + timedelta(minutes=step[3])).isoformat(), step[1], step[2])
            elif kind == "outage":
                n += 1
                batch = [outage(f"o{n}", (now + timedelta(minutes=step[1])).isoformat(), step[2])]
            elif kind == "under way":  # no end yet: a correction later gives it one
                n += 1
                batch = [_under_way(f"o{n}", now + timedelta(minutes=step[1]))]
            elif kind in ("correct", "again") and sent:
                s = pb.Signal()
                s.CopyFrom(sent[step[1] % len(sent)])
                if kind == "correct" and s.HasField("call"):
                    s.call.answered_at.FromDatetime(s.call.entered_queue.ToDatetime() + timedelta(seconds=step[2]))
                elif kind == "correct":
                    s.outage.end.FromDatetime(s.outage.start.ToDatetime() + timedelta(minutes=step[2]))
                batch = [s]
            elif kind == "round":
                now += timedelta(seconds=step[1])
                suite.tick(now.isoformat())
                _check_april(m, aid, now, _APRIL_THREE)
                continue
            else:
                continue
            if kind not in ("correct", "again"):  # a new batch: on one of the services in turn
                for s in batch:
                    s.service_id = services[n % len(services)]
            m.record(COLLECTOR, batch, reason="corrected")
            sent += [s for s in batch if s.signal_id not in {x.signal_id for x in sent}]
        return list(m._running.values())
    finally:
        suite.close()


_APRIL_TWO = (("availability", APRIL), ("service-level", APRIL))
_APRIL_THREE = (*_APRIL_TWO, ("asa", APRIL))


def _under_way(sid: str, start: datetime) -> pb.Signal:
    return pb.Signal(signal_id=sid, service_id=EMAIL, outage=pb.Outage(start=ts(start)))


def test_rounds_while_an_outage_is_under_way_fold_only_their_batches(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    """While an outage is under way, availability changes with every round's instant: each
    round's evaluation is the formula's over every stored signal with the outage lasting until
    then, yet it folds only the round's batch — the outage under way is taken beside the tally
    (the formula over the whole window every round, before) — and its end reported is folded as
    an append (a completion in its place: the window folded again from the start, before)."""
    suite = Suite(make_store_env)
    try:
        m = suite.metrics
        aid = an_active_agreement(suite)
        now = at(f"2026-04-10T10:00{AMS}")
        # o1 the longest outage: the one under way, once ended, is not (a longer one than any
        # before makes the window's selection anew: see test_rounds.py).
        m.record(COLLECTOR, [outage("o1", f"2026-04-09T11:00{AMS}", 120), outage("o2", f"2026-04-10T09:50{AMS}", 4)])
        suite.tick(now.isoformat())
        m.record(COLLECTOR, [_under_way("down", at(f"2026-04-10T09:52{AMS}"))])  # touching o2: merged with it
        for n in range(3):
            m.record(COLLECTOR, [outage(f"p{n}", f"2026-04-10T0{n}:30{AMS}", 2)])
            now += timedelta(minutes=5)
            suite.tick(now.isoformat())
            _check_april(m, aid, now)
        (held,) = [r for r in m._running.values() if isinstance(r.tally, running.OutageTally)]
        assert (held.seeded, held.appended) == (1, 6) and len(held.under_way) == 1  # two rounds a tick
        detail = m.window(None, aid, "availability", "2026-03-31T22:00:00+00:00").latest["detail"]
        assert detail["downtime_seconds"] == str(120 * 60 + 2 * 60 * 3 + (now - at(f"2026-04-10T09:50{AMS}")).seconds)
        done = pb.Signal()
        done.CopyFrom(_under_way("down", at(f"2026-04-10T09:52{AMS}")))
        done.outage.end.CopyFrom(ts(now - timedelta(minutes=1)))
        m.record(COLLECTOR, [done], reason="completed")
        now += timedelta(minutes=5)
        suite.tick(now.isoformat())
        _check_april(m, aid, now)
        assert (held.seeded, held.appended) == (1, 7) and held.under_way == []
        burns = held.burns
        assert (burns.built, burns.under_way) == (1, [])  # the look-backs placed it too
    finally:
        suite.close()


def test_rounds_over_two_services_fold_a_batch_on_either(make_store_env: Callable[[str], dict[str, str]]) -> None:
    """An agreement measuring e-mail and phone: a batch of calls or outages on either service is
    folded as an append (before, only one on the last service was: one on e-mail folded the whole
    window again), an outage under way on phone held by its place in phone's part while e-mail's
    grows before it, and its end folded once reported; corrections of a call of each service taken
    out and in; each round the formulas' over every stored signal."""
    suite = Suite(make_store_env)
    try:
        m = suite.metrics
        aid = an_active_agreement(suite, (EMAIL, PHONE))
        now = at(f"2026-04-10T10:00{AMS}")
        first = [*calls("e0-", f"2026-04-10T08:00{AMS}", 3, 1), outage("eo0", f"2026-04-09T11:00{AMS}", 120)]
        # Each service's longest outage first (those after it are shorter).
        second = [*calls("p0-", f"2026-04-10T08:30{AMS}", 2, 2), outage("po0", f"2026-04-08T11:00{AMS}", 120)]
        second.append(_under_way("down", at(f"2026-04-10T09:00{AMS}")))
        for s in second:
            s.service_id = PHONE
        m.record(COLLECTOR, first + second)
        suite.tick(now.isoformat())
        _check_april(m, aid, now)
        tallies = {type(r.tally).__name__: r for r in m._running.values()}
        held_calls, held_outages = tallies["CallTally"], tallies["OutageTally"]
        assert (held_calls.seeded, held_outages.seeded) == (1, 1) and held_outages.under_way == [(1, 1)]
        for n in range(1, 5):
            service = (EMAIL, PHONE)[n % 2]
            batch = calls(f"b{n}-", f"2026-04-10T09:{10 * n}{AMS}", 2, 1)
            batch.append(outage(f"o{n}", f"2026-04-10T0{n}:00{AMS}", 3))
            for s in batch:
                s.service_id = service
            m.record(COLLECTOR, batch)
            now += timedelta(minutes=5)
            suite.tick(now.isoformat())
            _check_april(m, aid, now)
        assert (held_calls.seeded, held_calls.appended) == (1, 4)
        # A call of each service corrected (answered later), beside new calls on phone: taken out
        # and in (before, several services' corrections folded the window again).
        fixed = calls("e0-", f"2026-04-10T08:00{AMS}", 0, 4)[:1] + calls("p0-", f"2026-04-10T08:30{AMS}", 0, 4)[:1]
        fixed[1].service_id = PHONE
        new = calls("q-", f"2026-04-10T09:55{AMS}", 2, 0)
        for s in new:
            s.service_id = PHONE
        m.record(COLLECTOR, [*fixed, *new], reason="corrected")
        now += timedelta(minutes=5)
        suite.tick(now.isoformat())
        _check_april(m, aid, now)
        assert (held_calls.seeded, held_calls.edited) == (1, 1)
        # (availability, with an outage under way, judged at every round's instant: two rounds a tick)
        assert held_outages.seeded == 1 and held_outages.appended >= 4 and held_outages.under_way == [(1, 1)]
        appended = held_outages.appended
        done = _under_way("down", at(f"2026-04-10T09:00{AMS}"))
        done.service_id = PHONE
        done.outage.end.CopyFrom(ts(now - timedelta(minutes=1)))
        m.record(COLLECTOR, [done], reason="completed")
        now += timedelta(minutes=5)
        suite.tick(now.isoformat())
        _check_april(m, aid, now)
        assert held_outages.seeded == 1 and held_outages.appended > appended and held_outages.under_way == []
    finally:
        suite.close()


def _check_april(m: Metrics, aid: str, now: datetime, windows: Sequence[tuple[str, str]] = _APRIL_TWO) -> None:
    view = m.agreement_view(None, aid)
    everything = m.signal_sources(m.scope(view, now)[2])  # every input per service, not from a kept selection
    for objective, start in windows:
        agg = m.window(None, aid, objective, start)
        check = m.check_window(view, agg, everything, now)
        assert check.recomputed is not None
        for name in ("value", "input_digest", "detail", "parameters", "status"):
            assert check.recomputed[name] == agg.latest[name], (objective, name)


def test_the_call_objectives_of_a_window_share_one_digest(make_store_env: Callable[[str], dict[str, str]]) -> None:
    """An SLA's ASA, abandonment, service level and AHT over April hold the same calls: their
    tallies share one digest — a batch is placed and hashed once, not once a tally (each only
    counts it, the first to fold it places it), a correction taken out and in once — while the
    week's service level holds its own (other calls). A digest left changing, as a fold that
    failed leaves it, is taken by none: the tally that held it folds its window again, and the
    others take the new digest. Every evaluation is the formula's over every stored signal."""
    tsf = {"variant": "ANSWERED_OVER_OFFERED", "threshold_seconds": "20"}
    month = [
        monthly_objective("asa", "METRIC_ASA", {}),
        monthly_objective("abandoned", "METRIC_ABANDONMENT_RATE", {"short_abandon_seconds": "5"}),
        monthly_objective("tsf", "METRIC_SERVICE_LEVEL", tsf),
        monthly_objective("aht", "METRIC_AVERAGE_HANDLE_TIME", {}),
    ]
    week = {**monthly_objective("tsf-week", "METRIC_SERVICE_LEVEL", tsf), "window": {"kind": "WINDOW_KIND_WEEK"}}
    windows = [*((o["objective_id"], APRIL) for o in month), ("tsf-week", "2026-04-05T22:00:00+00:00")]
    suite = Suite(make_store_env)
    try:
        m = suite.metrics
        aid = an_agreement_with(suite, [*month, week])
        now = at(f"2026-04-10T10:00{AMS}")
        m.record(COLLECTOR, calls("a", f"2026-04-03T09:00{AMS}", 5, 2) + calls("b", f"2026-04-09T09:00{AMS}", 5, 2))
        suite.tick(now.isoformat())
        _check_april(m, aid, now, windows)

        def tallies() -> tuple[list[Any], Any]:
            held = [r for r in m._running.values() if isinstance(r.tally, running.CallTally)]
            weekly = [r for r in held if r.calls_key[1] - r.calls_key[0] == timedelta(days=7)]
            assert len(held) == 5 and len(weekly) == 1
            return [r for r in held if r not in weekly], weekly[0]

        monthly, weekly = tallies()
        shared = monthly[0].tally.records
        assert all(r.tally.records is shared for r in monthly) and weekly.tally.records is not shared
        assert shared.hashed == 14 and weekly.tally.records.hashed == 7  # each call placed once a digest
        m.record(COLLECTOR, calls("c", f"2026-04-10T09:00{AMS}", 3, 1))
        now += timedelta(seconds=5)
        suite.tick(now.isoformat())
        _check_april(m, aid, now, windows)
        assert shared.hashed == 14 + 4 and all(r.tally.records is shared for r in monthly)
        assert [(r.seeded, r.appended) for r in monthly] == [(1, 1)] * 4
        # "b0" answered after 40 s, not 10 s: taken out and in of the shared digest once.
        slow = calls("b", f"2026-04-09T09:00{AMS}", 0, 1)[0]
        m.record(COLLECTOR, [slow], reason="corrected")
        now += timedelta(seconds=5)
        suite.tick(now.isoformat())
        _check_april(m, aid, now, windows)
        assert shared.encoded <= 7 and all(r.tally.records is shared and r.edited == 1 for r in monthly)
        # Left changing (as a fold that failed leaves it): the tally that held it folds again.
        shared.state = None
        m.record(COLLECTOR, calls("d", f"2026-04-10T09:30{AMS}", 1, 1))
        now += timedelta(seconds=5)
        suite.tick(now.isoformat())
        _check_april(m, aid, now, windows)
        monthly, weekly = tallies()
        again = monthly[0].tally.records
        assert again is not shared and all(r.tally.records is again for r in monthly)
        assert sorted(r.seeded for r in monthly) == [1, 1, 1, 2]
    finally:
        suite.close()


def test_one_call_id_on_two_services_fails_the_call_objectives_as_the_formula_refuses_it(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    """Each service's index holds one row an id, so the calls of two services may repeat one, at
    another instant — which the formula refuses ("appears twice"). Folded into the open window's
    running evaluation it fails the objective as the formula does, not counted as another call:
    the tally orders calls by arrival, so the ids of a window of several services are held beside
    it (without them a repeated id arriving at another instant was counted)."""
    suite = Suite(make_store_env)
    try:
        m = suite.metrics
        aid = an_active_agreement(suite, (EMAIL, PHONE))
        m.record(COLLECTOR, calls("c", f"2026-04-10T09:00{AMS}", 3, 1))
        suite.tick(f"2026-04-10T10:00{AMS}")
        before = m.window(None, aid, "service-level", "2026-03-31T22:00:00+00:00").latest
        assert before["detail"]["answered"] == "4" and not m.evaluation_failures()
        again = calls("c", f"2026-04-10T09:30{AMS}", 1, 0)  # "c0" again, half an hour later, on phone
        again[0].service_id = PHONE
        m.record(COLLECTOR, again)
        suite.tick(f"2026-04-10T10:05{AMS}")
        failures = m.evaluation_failures()
        assert "appears twice" in failures.get((aid, "service-level"), ""), failures
        assert m.window(None, aid, "service-level", "2026-03-31T22:00:00+00:00").latest == before
    finally:
        suite.close()


@pytest.mark.parametrize("services", [(EMAIL,), (EMAIL, PHONE)], ids=["email", "email+phone"])
def test_the_rounds_above_folded_appended_signals(
    make_store_env: Callable[[str], dict[str, str]], services: tuple[str, ...]
) -> None:
    """The rounds of the property above fold appended inputs alone, not every input again (which
    gives the same evaluations, so the property alone cannot tell): steps as it draws them —
    batches of calls and outages, an outage under way, a correction and a duplicate, with rounds
    between — and April's availability, service level and ASA each judged a round from its
    running evaluation with only the round's batch folded in. The steps are its own: it relies on
    no other test having run before it."""
    steps: list[tuple[Any, ...]] = [
        ("calls", 3, 1, -90),
        ("outage", -300, 20),
        ("round", 60),
        ("calls", 2, 2, -30),
        ("outage", -120, 5),
        ("round", 60),
        ("under way", -10),
        ("calls", 1, 1, -5),
        ("round", 60),
        ("correct", 2, 15),
        ("again", 0),
        ("round", 60),
    ]
    held = _april_rounds(make_store_env, services, steps)
    rounds = sorted((type(r.tally).__name__, r.appended) for r in held)
    assert [kind for kind, _ in rounds] == ["CallTally", "CallTally", "OutageTally"], rounds
    assert all(appended for _, appended in rounds), rounds


def test_a_correction_in_the_open_window_is_taken_out_and_in_or_folds_it_again(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    """Batches appended are folded in (no window folded again); a correction of a call the open
    window holds is taken out of its call tally as it was and folded in as it is (the kept
    selection logs the replacement in place), and so is a correction of an outage — out of time-based
    availability's tally and of its burn rates' look-backs, its merged outage merged again without
    it (before, both were built again from every outage); every evaluation is still the formula's
    over every stored signal."""
    suite = Suite(make_store_env)
    try:
        m = suite.metrics
        aid = an_active_agreement(suite)
        now = at(f"2026-04-10T10:00{AMS}")
        m.record(COLLECTOR, [*calls("a", f"2026-04-09T09:00{AMS}", 5, 2), outage("o1", f"2026-04-09T11:00{AMS}", 3)])
        suite.tick(now.isoformat())
        for n, minutes in enumerate((1, 2, 3)):
            m.record(
                COLLECTOR,
                [
                    *calls(f"b{n}-", f"2026-04-10T0{n}:00{AMS}", 2, 1),
                    outage(f"p{n}", f"2026-04-10T0{n}:30{AMS}", minutes),
                ],
            )
            now += timedelta(seconds=5)
            suite.tick(now.isoformat())
            _check_april(m, aid, now)
        held = list(m._running.values())
        assert sorted((r.seeded, r.appended) for r in held) == [(1, 3), (1, 3)]

        # (the longest outage stays 3 minutes: the same selection, an input replaced in it)
        slow = calls("a", f"2026-04-09T09:00{AMS}", 0, 1)[0]  # "a0" answered after 40 s, not 10 s
        m.record(COLLECTOR, [slow, outage("o1", f"2026-04-09T11:00{AMS}", 2)], reason="corrected")
        now += timedelta(seconds=5)
        suite.tick(now.isoformat())
        _check_april(m, aid, now)
        calls_held = next(r for r in held if isinstance(r.tally, running.CallTally))
        outages_held = next(r for r in held if isinstance(r.tally, running.OutageTally))
        assert (calls_held.seeded, calls_held.appended, calls_held.edited) == (1, 3, 1)
        assert (outages_held.seeded, outages_held.appended, outages_held.edited) == (1, 3, 1)
        assert (outages_held.burns.built, outages_held.burns.edited) == (1, 1)
        assert _latest_detail(m, aid)["answered_within"] == "10"
        # Corrected again, with new calls beside: taken out and in again, the new ones folded.
        fast = pb.Signal()
        fast.CopyFrom(slow)  # "a0" answered after 15 s: within the threshold again, another content
        fast.call.answered_at.FromDatetime(slow.call.entered_queue.ToDatetime() + timedelta(seconds=15))
        m.record(COLLECTOR, [fast], reason="corrected again")
        m.record(COLLECTOR, calls("d", f"2026-04-10T03:00{AMS}", 1, 1))
        now += timedelta(seconds=5)
        suite.tick(now.isoformat())
        _check_april(m, aid, now)
        assert (calls_held.seeded, calls_held.edited) == (1, 2)
        assert _latest_detail(m, aid)["answered_within"] == "12"
    finally:
        suite.close()


def test_a_request_counts_correction_is_taken_out_and_in(make_store_env: Callable[[str], dict[str, str]]) -> None:
    """A correction of a request count the open window holds is taken out of request-based
    availability's running form as it was and put in as it is; the evaluation is the formula's
    over every stored signal."""
    suite = Suite(make_store_env)
    try:
        m = suite.metrics
        objective = monthly_objective("req", "METRIC_AVAILABILITY_REQUESTS", {})
        aid = an_agreement_with(suite, [objective], f"2026-01-10T09:30{AMS}")

        def counts(prefix: str, first: str, good: int, n: int) -> list[pb.Signal]:
            start = at(first)
            return [
                pb.Signal(
                    signal_id=f"{prefix}{k}", service_id=EMAIL,
                    requests=pb.RequestCount(
                        start=ts(start + timedelta(minutes=k)), end=ts(start + timedelta(minutes=k + 1)),
                        good=good, total=100,
                    ),
                )
                for k in range(n)
            ]  # fmt: skip

        m.record(COLLECTOR, counts("r", f"2026-01-09T09:00{AMS}", 99, 6))
        suite.tick(f"2026-01-10T10:00{AMS}")
        m.record(COLLECTOR, counts("s", f"2026-01-10T08:00{AMS}", 100, 3))
        suite.tick(f"2026-01-10T10:05{AMS}")
        (held,) = [r for r in m._running.values() if isinstance(r.tally, running.CountTally)]
        seeded = held.seeded
        assert held.appended >= 1 and held.edited == 0

        fixed = counts("r", f"2026-01-09T09:00{AMS}", 90, 6)[2:3]  # r2: 90 good of 100, not 99
        m.record(COLLECTOR, [*fixed, *counts("t", f"2026-01-10T09:00{AMS}", 100, 2)], reason="recounted")
        suite.tick(f"2026-01-10T10:10{AMS}")
        assert (held.seeded, held.edited) == (seeded, 1)  # not folded again: taken out and in
        window = m.window(None, aid, "req", JAN)
        assert window.latest["detail"]["good"] == str(5 * 99 + 90 + 3 * 100 + 2 * 100)
        check = m.recompute(aid, "req", JAN)
        assert (check["recorded"]["value"], check["recorded"]["input_digest"]) == (
            check["recomputed"]["value"], check["recomputed"]["input_digest"],
        )  # fmt: skip
    finally:
        suite.close()


def _latest_detail(m: Metrics, aid: str) -> dict[str, str]:
    return dict(m.window(None, aid, "service-level", "2026-03-31T22:00:00+00:00").latest["detail"])


_contact = st.tuples(
    # Seconds from the window's start (it is 2 days long): whole hours often (a repeat exactly
    # the repeat window after its first contact, or a decision exactly at an instant asked for).
    st.one_of(st.integers(-240, 288).map(lambda h: h * 3600), st.integers(-10 * 86400, 12 * 86400)),
    st.sampled_from(["a", "b", ""]),  # customer ("": none, flagged only)
    st.sampled_from(["billing", "access", ""]),  # reason ("": none, grouped by the customer alone)
    st.booleans(),  # answered
    st.sampled_from([None, True, False]),  # the agent's flag
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(_contact, max_size=12), min_size=1, max_size=8),
    st.sampled_from(list(contact.FcrMethod)),
    st.sampled_from([1, 3]),
    st.lists(st.one_of(st.integers(0, 72).map(lambda h: h * 3600), st.integers(0, 3 * 86400)), min_size=8, max_size=8),
)
def test_an_fcr_tally_gives_the_formula_s_evaluation_as_contacts_arrive_and_time_passes(
    batches: list[list[tuple[int, str, str, bool, bool | None]]], method: contact.FcrMethod, days: int,
    steps: list[int],
) -> None:  # fmt: skip
    """Batches of contacts arriving in any order of time (late ones too: a first contact counted
    becomes a repeat, a counted decision moves), the instant moving on after each: the tally's
    evaluation is `contact.fcr` v2's over every contact so far."""
    repeat = timedelta(days=days)
    tally = running.FcrTally(method, repeat, WINDOW)
    so_far: list[contact.Call] = []
    as_of = T0 - timedelta(days=1)
    n = 0
    for raw, step in zip(batches, steps, strict=False):
        batch = []
        for offset, customer, reason, answered, flag in raw:
            if method is contact.FcrMethod.REPEAT_CONTACT and not customer:
                continue  # refused at intake for such an objective (evaluation passes none)
            entered = T0 + timedelta(seconds=offset)
            batch.append(contact.Call(f"k{n:04d}", entered, answered_at=entered + timedelta(seconds=9) if answered
                                      else None, customer_id=customer, reason=reason,
                                      resolved_first_contact=flag))  # fmt: skip
            n += 1
        so_far += batch
        assert tally.extend(batch)
        as_of += timedelta(seconds=step)
        assert tally.evaluated(as_of) == contact.fcr(so_far, method, repeat, window=WINDOW, as_of=as_of)
    assert tally.evaluated(as_of - timedelta(seconds=1)) is None or as_of == T0 - timedelta(days=1)


_Contact = tuple[int, str, str, bool, bool | None]  # `_contact`'s: offset, customer, reason, answered, flag


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_contact, min_size=1, max_size=30),
    st.lists(st.tuples(st.integers(0, 10**6), st.booleans(), _contact), min_size=1, max_size=12),
    st.sampled_from(list(contact.FcrMethod)),
    st.sampled_from([1, 3]),
    st.integers(0, 3 * 86400),
)
def test_an_fcr_tally_takes_a_contact_out_and_a_correction_in_as_the_formula_over_those_left(
    raw: list[_Contact], fixes: list[tuple[int, bool, _Contact]], method: contact.FcrMethod, days: int, step: int
) -> None:
    """Contacts folded in, then taken out one at a time (removed, or corrected: taken out as it was
    and folded in as it is — another instant, customer, reason, answer or flag): after each, the
    tally's evaluation is `contact.fcr` v2's over the contacts left — a first contact taken out, its
    repeat becomes one; a repeat taken out, its first contact may be resolved."""
    repeat = timedelta(days=days)

    def call(cid: str, offset: int, customer: str, reason: str, answered: bool, flag: bool | None) -> contact.Call:
        entered = T0 + timedelta(seconds=offset)
        return contact.Call(cid, entered, answered_at=entered + timedelta(seconds=9) if answered else None,
                            customer_id=customer or "z", reason=reason, resolved_first_contact=flag)  # fmt: skip

    held = [call(f"k{n:03d}", *c) for n, c in enumerate(raw)]
    tally = running.FcrTally(method, repeat, WINDOW)
    assert tally.extend(held)
    as_of = T0 + timedelta(seconds=step)
    for _ in _taken_out_in_turn(tally, held, fixes, lambda before, fix: [call(before.call_id, *fix)]):
        assert tally.evaluated(as_of) == contact.fcr(held, method, repeat, window=WINDOW, as_of=as_of)
    with pytest.raises(KeyError):
        tally.remove([call("k999", 0, "a", "billing", True, None)])  # not held


def test_an_fcr_tally_takes_a_contact_exactly_the_repeat_window_after_a_first_one_as_its_repeat() -> None:
    """The repeat window is inclusive (`contact.first_contacts`): a contact exactly a day after
    a first contact (repeat window one day) is its repeat, one a microsecond later a first one."""
    day = timedelta(days=1)
    tally = running.FcrTally("REPEAT_CONTACT", day, WINDOW)
    calls = [
        contact.Call(cid, T0 + at, answered_at=T0 + at + timedelta(seconds=5), customer_id=who, reason="billing")
        for cid, at, who in [
            ("x1", timedelta(hours=1), "a"), ("x2", timedelta(hours=25), "a"),
            ("y1", timedelta(hours=2), "b"), ("y2", timedelta(hours=26, microseconds=1), "b"),
        ]
    ]  # fmt: skip
    assert tally.extend(calls)
    as_of = T0 + timedelta(days=2)
    got = tally.evaluated(as_of)
    assert got == contact.fcr(calls, "REPEAT_CONTACT", day, window=WINDOW, as_of=as_of)
    # x1 repeated by x2; y1 resolved (decided a day after it); y2 a first contact decided after the window.
    assert got is not None and [got.detail[k] for k in ("first_contacts", "repeated", "resolved")] == ["2", "1", "1"]


def _repeat_tally() -> tuple[running.FcrTally, datetime]:
    """A tally by repeat contact within a day over the window, and an instant two days in."""
    return running.FcrTally("REPEAT_CONTACT", timedelta(days=1), WINDOW), T0 + timedelta(days=2)


def _assert_the_formula_s(tally: running.FcrTally, held: list[contact.Call], as_of: datetime) -> None:
    expected = contact.fcr(held, "REPEAT_CONTACT", timedelta(days=1), window=WINDOW, as_of=as_of)
    assert tally.evaluated(as_of) == expected


def test_an_fcr_tally_keys_a_contact_without_a_reason_by_its_customer_alone() -> None:
    """A contact giving no reason is grouped by its customer id itself (the string the contact
    holds), not a (customer, "") tuple beside each group (56 B); the same customer's contacts
    about a reason are a group of their own, never mixed with those; taking contacts out of
    both kinds of group together works as for either. The evaluation is always the formula's."""

    def call(cid: str, hours: int, customer: str, reason: str = "") -> contact.Call:
        entered = T0 + timedelta(hours=hours)
        return contact.Call(cid, entered, answered_at=entered, customer_id=customer, reason=reason)

    plain, again, other = call("p1", 1, "cust-1"), call("p2", 5, "cust-1"), call("o1", 3, "cust-2")
    billing = call("b1", 2, "cust-1", "billing")
    held = [plain, billing, other]
    tally, as_of = _repeat_tally()

    def check() -> None:
        _assert_the_formula_s(tally, held, as_of)

    assert tally.extend(held)
    assert tally._groups["cust-1"] is plain and tally._groups["cust-2"] is other
    assert tally._groups[("cust-1", "billing")] is billing
    assert all(type(k) is str for k in tally._groups if k != ("cust-1", "billing"))
    check()
    held.append(again)
    assert tally.extend([again])  # a repeat of the reason-less contact, not of the billing one
    assert tally._groups["cust-1"] == [plain, again]
    check()
    got = tally.evaluated(as_of)
    assert got is not None and got.detail["repeated"] == "1"
    tally.remove([again, billing, plain])  # both kinds of key in one removal
    held = [other]
    assert set(tally._groups) == {"cust-2"}
    check()


def test_an_fcr_tally_holds_a_group_of_one_contact_as_the_contact_itself() -> None:
    """Most customer-and-reason groups of a month hold one contact: the tally holds such a contact
    itself, not a list of one (≈ 100 B a contact, a third of the tally) — a second contact makes a
    list, in arrival order; taking contacts out makes it the contact again, then nothing. Each
    outcome reads its first contact's fields through the contact (not copies: ≈ 23 B a contact).
    The evaluation is always the formula's over the contacts held."""

    def call(cid: str, hours: int, customer: str) -> contact.Call:
        entered = T0 + timedelta(hours=hours)
        return contact.Call(cid, entered, answered_at=entered, customer_id=customer, reason="billing")

    ones = [call(f"one{i:02d}", i % 40, f"cust-{i}") for i in range(30)]
    later, earlier = call("m2", 30, "many"), call("m1", 3, "many")
    held = [*ones, later]
    tally, as_of = _repeat_tally()

    def check() -> None:
        _assert_the_formula_s(tally, held, as_of)

    assert tally.extend(held)
    assert all(tally._groups[(c.customer_id, c.reason)] is c for c in [*ones, later])
    check()
    assert all(tally._outcomes[c.call_id].first is c for c in ones[:20])  # those decided in the window
    held.append(earlier)
    assert tally.extend([earlier])  # arrived late, before the group's one contact
    assert tally._groups[("many", "billing")] == [earlier, later]
    check()
    tally.remove([earlier])
    held.remove(earlier)
    assert tally._groups[("many", "billing")] is later
    check()
    tally.remove([later, ones[0]])
    held[:] = ones[1:]
    assert ("many", "billing") not in tally._groups and ("cust-0", "billing") not in tally._groups
    check()
    with pytest.raises(KeyError):
        tally.remove([later])  # no longer held


def test_outage_count_and_first_contact_tallies_keep_no_record() -> None:
    """The outages' digest (v3), request counts' (v4) and first contacts' outcomes' (v5) are in
    runs by hour: their tallies keep no record — not on the inputs, and beside them only each
    bucket's last run's — and their evaluations are the formulas'. (Outages v2 and first contacts
    v4 kept every record, on the input too; request counts v3 every record and its key beside.)"""
    import random

    outages = [Interval(T0 + timedelta(seconds=80 * i), T0 + timedelta(seconds=80 * i + 30)) for i in range(2000)]
    tally = running.OutageTally(WINDOW, AlwaysOpen(), [], timedelta(0))
    for k in range(0, len(outages), 500):
        tally.extend(outages[k : k + 500])
    copies = [Interval(o.start, o.end) for o in outages]  # (the formula keeps its records on its inputs)
    assert tally.evaluated() == reliability.availability_time(WINDOW, AlwaysOpen(), copies, [], timedelta(0))
    assert all(getattr(o, "_accord_encoded__utc_pair", None) is None for o in outages)

    rnd = random.Random(12)
    window = Interval(T0, T0 + timedelta(days=31))
    calls = []
    for i in range(3000):
        entered = T0 + timedelta(seconds=240 * i)
        calls.append(
            contact.Call(
                f"c{i:05d}", entered, answered_at=entered, customer_id=f"cust-{rnd.randrange(600)}", reason="x"
            )
        )
    fcr = running.FcrTally("REPEAT_CONTACT", timedelta(days=7), window)
    for k in range(0, len(calls), 500):
        fcr.extend(calls[k : k + 500])
    as_of = T0 + timedelta(days=20)
    assert fcr.evaluated(as_of) == contact.fcr(calls, "REPEAT_CONTACT", window=window, as_of=as_of)
    assert all(getattr(o, "_accord_encoded_utc_record", None) is None for o in fcr._outcomes.values())

    counts = [
        reliability.RequestCount(T0 + timedelta(minutes=i), T0 + timedelta(minutes=i + 1), 990 + i % 11, 1000)
        for i in range(2000)
    ]
    requests = running.CountTally(WINDOW, AlwaysOpen(), [])
    for k in range(0, len(counts), 500):
        requests.extend(counts[k : k + 500])
    expected = reliability.availability_requests(counts, "OCCURRENCES", WINDOW, calendar=AlwaysOpen())
    assert requests.evaluated() == expected

    held = ((tally.records, len(outages)), (fcr.records, int(fcr.counted)), (requests.records, len(counts)))
    for digest, counted in held:
        kept = [sum(map(len, b.kept.values())) for b in digest.buckets]
        for b in digest.buckets:
            assert all(h > b.hours[-1] - running.KEPT_HOURS for h in b.kept)
            assert all(rs == list(map(digest.encode, b.runs[b.hours.index(h)])) for h, rs in b.kept.items())
        assert 0 < sum(kept) < counted // 4
