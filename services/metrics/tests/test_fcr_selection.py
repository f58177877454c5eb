"""First-contact resolution's calls: a round reads a window's calls from its repeat window before
its start, and before that only the contacts of each customer and reason that chain to them (each
within the repeat window of the next), of which it passes the formula one, the first contact of
the episode under way — not every call ever recorded — and every window it records equals the
formula over every stored signal (`recompute`); a window recorded with "contact.fcr" v1 keeps
reading every call; a store indexed before groups its calls once at start. Over several services,
the chains are read across them (one customer's contacts chain from one service to another)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from accord.metrics.v1 import signals_pb2 as pb
from accord_kit.timeline import Interval
from accord_metrics import signal_index, signal_store
from accord_metrics.application import Metrics
from accord_metrics.formulas import contact
from accord_metrics.formulas.running import FcrTally
from accord_metrics.signal_store import LIST_CODE, SignalStore
from tests.suite import (
    AMS,
    COLLECTOR,
    EMAIL,
    Suite,
    an_agreement_with,
    at,
    monthly_objective,
    open_windows_against_every_stored_signal,
    ts,
)

JAN, FEB = "2025-12-31T23:00:00+00:00", "2026-01-31T23:00:00+00:00"
OBJECTIVES = (
    ("repeat", {"method": "REPEAT_CONTACT"}),
    ("flagged", {"method": "FLAGGED"}),
    ("repeat-3", {"method": "REPEAT_CONTACT", "repeat_window_days": "3"}),
)
# The loyal customer's calls about billing, every 4 days back from 5 January: 92 of them, so the
# earliest (k = 91) is a first contact, and so is every odd k — 1 January's (k = 1) among them.
LOYAL = [at(f"2026-01-05T10:00{AMS}") - timedelta(days=4 * k) for k in range(92)]
PHONE = "phone"


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def _agreement(suite: Suite) -> str:
    return an_agreement_with(
        suite, [monthly_objective(oid, "METRIC_FIRST_CONTACT_RESOLUTION", p) for oid, p in OBJECTIVES]
    )


def _agreement_on_two_services(suite: Suite) -> str:
    """The sample SLA with the objectives of `_agreement`, measured on e-mail and phone."""
    return an_agreement_with(
        suite,
        [monthly_objective(oid, "METRIC_FIRST_CONTACT_RESOLUTION", p) for oid, p in OBJECTIVES],
        services=(EMAIL, PHONE),
    )


def _call(
    sid: str, entered: datetime, customer: str, reason: str = "billing", answered: bool = True,
    resolved: bool | None = None, service: str = EMAIL,
) -> pb.Signal:  # fmt: skip
    c = pb.Call(entered_queue=ts(entered), customer_id=customer, reason=reason)
    if answered:
        c.answered_at.CopyFrom(ts(entered + timedelta(seconds=20)))
    else:
        c.abandoned_at.CopyFrom(ts(entered + timedelta(seconds=50)))
    if resolved is not None:
        c.first_contact = pb.FIRST_CONTACT_RESOLUTION_RESOLVED if resolved else pb.FIRST_CONTACT_RESOLUTION_NOT_RESOLVED
    return pb.Signal(signal_id=sid, service_id=service, call=c)


def _history(m: Metrics, services: tuple[str, ...] = (EMAIL,)) -> None:
    """A year of calls before the agreement — 300 customers each calling about one reason every
    20 days, answered or not — and the loyal customer's chain of calls every 4 days (taking turns
    among `services`: with e-mail and phone, its even calls by e-mail, its odd ones by phone)."""
    start = at(f"2025-01-02T09:00{AMS}")
    old = [
        _call(
            f"old-{i}-{n}",
            start + timedelta(days=20 * n, minutes=i),
            f"cust-{i}",
            f"r{i % 5}",
            answered=i % 7 != 0,
            service=services[i % len(services)],
        )
        for i in range(300)
        for n in range(17)
    ]
    loyal = [
        _call(f"loyal-{k}", t, "loyal", resolved=k % 3 == 0, service=services[k % len(services)])
        for k, t in enumerate(LOYAL)
    ]
    m.record(COLLECTOR, old + loyal)


def _ten_contacts_judged(suite: Suite, now: datetime, prefix: str) -> tuple[Metrics, str]:
    """`_agreement` over `_history`, ten contacts of five customers in the hours before `now`
    (`prefix`-0 … -9), judged at `now`: the metrics application and the agreement's id."""
    m = suite.metrics
    aid = _agreement(suite)
    _history(m)
    m.record(COLLECTOR, [_call(f"{prefix}-{i}", now - timedelta(hours=i), f"c{i % 5}") for i in range(10)])
    suite.tick(now.isoformat())
    return m, aid


class _Reads:
    """The calls rounds pass first-contact resolution (its formula, or its running form in an
    open window: `running.FcrTally`), the calls read whole from the index, and those read by
    group (the chains)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.passed: set[str] = set()
        self.formula: set[str] = set()  # those passed to the formula itself
        self.whole: list[str] = []
        self.chained: set[str] = set()
        whole, fcr, by_group, fold = SignalStore.whole, contact.fcr, SignalStore.group_calls, FcrTally.extend

        def spy_group_calls(store: SignalStore, *args: Any) -> Any:
            found = by_group(store, *args)
            self.chained.update(r[1] for r in found)
            return found

        def spy_whole(store: SignalStore, service_id: str, names: Any) -> Any:
            found = whole(store, service_id, names)
            self.whole += [sid for _, sid, _ in found.get("calls", [])]
            return found

        def spy_fcr(passed: Any, *args: Any, **kwargs: Any) -> Any:
            self.passed.update(c.call_id for c in passed)
            self.formula.update(c.call_id for c in passed)
            return fcr(passed, *args, **kwargs)

        def spy_fold(tally: FcrTally, passed: Any) -> bool:
            self.passed.update(c.call_id for c in passed)
            return fold(tally, passed)

        monkeypatch.setattr(SignalStore, "whole", spy_whole)
        monkeypatch.setattr(SignalStore, "group_calls", spy_group_calls)
        monkeypatch.setattr(contact, "fcr", spy_fcr)
        monkeypatch.setattr(FcrTally, "extend", spy_fold)


def _matches_every_stored_signal(m: Metrics, aid: str, starts: tuple[str, ...] = (JAN,)) -> None:
    """Each window as recorded equals the formula over every stored signal: whole when closed; an
    open one's value and status, and its counts when recorded as of now."""
    objectives = [oid for oid, _ in OBJECTIVES]
    for oid, start, recorded, recomputed in open_windows_against_every_stored_signal(m, aid, objectives, starts):
        if recorded["parameters"]["as_of"] == recomputed["parameters"]["as_of"]:
            assert recorded["detail"] == recomputed["detail"], (oid, start)


def test_a_round_reads_the_windows_calls_and_the_contacts_chained_to_them(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a year of calls before the agreement, a round reads the loyal customer's chain back to
    its first call (each within 7 days of the next: whether 1 January's call is a first contact
    depends on every one of them), and passes first-contact resolution January's calls, those of
    the repeat window before it, and of the chain the first contact of the episode under way on
    25 December (24 December's) — none of the other customers' history, nothing read whole (each
    round before read and held every call ever recorded). What it records is the formula's over
    every stored call: 1 January's call a first contact repeated on 5 January (from the calls
    since 25 December alone, 28 December's would be the first contact)."""
    m = suite.metrics
    reads = _Reads(monkeypatch)
    aid = _agreement(suite)
    _history(m)
    jan = at(f"2026-01-12T09:00{AMS}")
    batch = [_call(f"jan-{i}", jan + timedelta(hours=i), f"new-{i}") for i in range(12)]
    m.record(COLLECTOR, batch)
    suite.tick(f"2026-01-14T09:00{AMS}")
    assert reads.whole == []
    # The other customers last called in November: none passed.
    assert reads.passed == {s.signal_id for s in batch} | {f"loyal-{k}" for k in range(4)}
    assert {f"loyal-{k}" for k in range(3, 92)} <= reads.chained
    current = m.window(None, aid, "repeat", JAN).current
    assert (current["formula_id"], current["formula_version"]) == ("contact.fcr", 5)
    # Of the loyal customer's: 1 January's first contact, repeated on 5 January (not resolved).
    assert current["detail"]["repeated"] == "1"
    _matches_every_stored_signal(m, aid)
    # 28 December's call corrected to another customer: 1 January's call has none within 7 days
    # before it (24 December's is 8 days before), so it is a first contact whatever came earlier:
    # the kept selections let 24 December's go.
    assert "loyal-3" in _held_calls(m)
    m.record(COLLECTOR, [_call("loyal-2", LOYAL[2], "someone-else")])
    suite.tick(f"2026-01-15T09:00{AMS}")
    assert not {f"loyal-{k}" for k in range(3, 92)} & _held_calls(m)
    _matches_every_stored_signal(m, aid)


def _held_calls(m: Metrics, service: str = EMAIL) -> set[str]:
    """The ids of the calls the service's kept selections hold."""
    return {
        sid for kept in m._services[service].selections.values() for sid in kept.lists.get("calls", ((), [], []))[1]
    }


def test_over_two_services_a_round_reads_the_chains_across_them_not_every_call(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agreement measuring e-mail and phone by first-contact resolution: one customer's contacts
    chain across both (the loyal customer's calls take turns between them). A round reads neither
    service's calls whole (each round before read and held every call either ever recorded): it
    passes January's calls, those of the repeat window before it and the chain's one contact kept
    — 24 December's, a phone call, found through e-mail's and phone's calls before it — and records
    the formula's over every stored call of both. E-mail's 28 December call corrected to another
    customer lets phone's 24 December call go from phone's selection (its chain read again there
    for e-mail's change)."""
    m = suite.metrics
    reads = _Reads(monkeypatch)
    aid = _agreement_on_two_services(suite)
    _history(m, (EMAIL, PHONE))
    jan = at(f"2026-01-12T09:00{AMS}")
    batch = [_call(f"jan-{i}", jan + timedelta(hours=i), f"new-{i}", service=(EMAIL, PHONE)[i % 2]) for i in range(12)]
    m.record(COLLECTOR, batch)
    suite.tick(f"2026-01-14T09:00{AMS}")
    assert reads.whole == []
    assert reads.passed == {s.signal_id for s in batch} | {f"loyal-{k}" for k in range(4)}
    assert {f"loyal-{k}" for k in range(3, 92)} <= reads.chained
    assert "loyal-3" in _held_calls(m, PHONE) and "loyal-3" not in _held_calls(m, EMAIL)
    current = m.window(None, aid, "repeat", JAN).current
    assert (current["formula_id"], current["formula_version"]) == ("contact.fcr", 5)
    assert current["detail"]["repeated"] == "1"  # 1 January's (phone) repeated on 5 January (e-mail)
    _matches_every_stored_signal(m, aid)
    m.record(COLLECTOR, [_call("loyal-2", LOYAL[2], "someone-else")])  # e-mail's
    suite.tick(f"2026-01-15T09:00{AMS}")
    assert not {f"loyal-{k}" for k in range(3, 92)} & (_held_calls(m, PHONE) | _held_calls(m, EMAIL))
    _matches_every_stored_signal(m, aid)


@pytest.mark.parametrize("meanwhile", ["kept", "released"])
def test_a_late_call_of_one_service_brings_the_other_services_contact_into_its_chain(
    suite: Suite, meanwhile: str
) -> None:
    """Phone's call of 22 December and e-mail's of 2 January, 11 days apart: no chain reaches
    January, and 2 January's is a first contact. E-mail's call of 28 December arrives late: a
    repeat of phone's (6 days after it), so 2 January's, 5 days after a repeat and 11 after its
    first contact, is still one — phone's call is read into phone's selection by e-mail's change
    (without it, 28 December's would be the first contact and 2 January's its repeat). Likewise
    when e-mail's selection was released meanwhile (`released`: a round that selected only e-mail's
    other inputs keeps only what it used): phone's is made afresh beside it."""
    m = suite.metrics
    aid = _agreement_on_two_services(suite)
    m.record(COLLECTOR, [
        _call("p-dec-22", at(f"2025-12-22T12:00{AMS}"), "c", service=PHONE),
        _call("e-jan-02", at(f"2026-01-02T12:00{AMS}"), "c"),
    ])  # fmt: skip
    suite.tick(f"2026-01-12T09:00{AMS}")  # 2 January's not repeated within 7 days: decided
    assert m.window(None, aid, "repeat", JAN).current["detail"]["first_contacts"] == "1"
    if meanwhile == "released":
        email = m._services[EMAIL]
        email.begin_round()
        email.select(Interval(at(JAN), at(FEB)))
        email.end_round()
        assert not any(key[5] for key in email.selections) and any(key[5] for key in m._services[PHONE].selections)
    m.record(COLLECTOR, [_call("e-dec-28", at(f"2025-12-28T12:00{AMS}"), "c")])
    suite.tick(f"2026-01-13T09:00{AMS}")
    assert m.window(None, aid, "repeat", JAN).current["detail"]["first_contacts"] == "1"
    assert "p-dec-22" in _held_calls(m, PHONE)
    _matches_every_stored_signal(m, aid)


def test_one_call_id_on_two_services_fails_as_the_formula_refuses_it(suite: Suite) -> None:
    """Several services' calls may repeat an id (each service's index holds one row an id), which
    the formula refuses: a batch repeating on phone an id e-mail's calls hold, folded into the open
    window's running evaluation, fails the objective as the formula does — not counted as another
    contact."""
    m = suite.metrics
    aid = _agreement_on_two_services(suite)
    m.record(COLLECTOR, [_call("x", at(f"2026-01-02T12:00{AMS}"), "c"), _call("y", at(f"2026-01-03T12:00{AMS}"), "d")])
    suite.tick(f"2026-01-12T09:00{AMS}")
    assert m.window(None, aid, "repeat", JAN).current["detail"]["first_contacts"] == "2"
    assert not m.evaluation_failures()
    m.record(COLLECTOR, [_call("x", at(f"2026-01-04T12:00{AMS}"), "e", service=PHONE)])
    suite.tick(f"2026-01-13T09:00{AMS}")
    failures = m.evaluation_failures()
    assert {oid for _, oid in failures} == {oid for oid, _ in OBJECTIVES}
    assert all("appears twice" in why for why in failures.values())
    assert m.window(None, aid, "repeat", JAN).current["detail"]["first_contacts"] == "2"


@pytest.mark.parametrize("services", ["email", "email+phone"])
@pytest.mark.parametrize("groups", ["apart", "shared"])
def test_calls_that_arrive_late_or_are_corrected_keep_every_window_in_step(
    suite: Suite, monkeypatch: pytest.MonkeyPatch, groups: str, services: str
) -> None:
    """Random calls of two customers about two reasons (chains of contacts every few days),
    answered or abandoned, flagged or not; calls arriving months late, corrected to another
    customer, reason or day, or to abandoned — after every round each window (repeat windows of
    7 and 3 days, and flagged) equals the formula over every stored call; January closes, February
    opens, both hold. Likewise when every customer and reason shares one group in the index (as
    two whose digests collide would). Likewise with the calls spread over two services the
    agreement measures (`email+phone`: one customer's contacts chain across them)."""
    if groups == "shared":
        monkeypatch.setattr(signal_index, "call_group", lambda customer, reason: 7)
    m = suite.metrics
    rng = random.Random(11)
    aid = _agreement(suite) if services == "email" else _agreement_on_two_services(suite)
    among = (EMAIL,) if services == "email" else (EMAIL, PHONE)
    spread = random.Random(5)  # the service of each call (its own: the calls' own draws unchanged)
    service_of: dict[str, str] = {}

    def call(sid: str, *args: Any) -> pb.Signal:
        service_of.setdefault(sid, spread.choice(among))  # a correction keeps its signal's service
        return _call(sid, *args, service=service_of[sid])

    customers, reasons = ["a", "b"], ["billing", "access"]
    known: list[str] = []
    early = at(f"2025-11-15T09:00{AMS}")
    seed = []
    for n in range(60):  # from mid-November: a call every 3 days or so a group, chains reaching January
        t = early + timedelta(days=rng.uniform(0, 58))
        seed.append(call(f"seed-{n}", t, rng.choice(customers), rng.choice(reasons), rng.random() < 0.85,
                          rng.choice([None, True, False])))  # fmt: skip
    m.record(COLLECTOR, seed)
    known += [s.signal_id for s in seed]
    now = at(f"2026-01-12T09:00{AMS}")
    for step in range(16):
        batch = []
        for i in range(rng.randint(1, 5)):
            t = now - timedelta(hours=rng.uniform(0, 72))
            batch.append(call(f"s{step}-{i}", t, rng.choice(customers), rng.choice(reasons), rng.random() < 0.85,
                               rng.choice([None, True, False])))  # fmt: skip
        if step % 3 == 0:  # late: a call of November or December
            t = early + timedelta(days=rng.uniform(0, 46))
            batch.append(call(f"late-{step}", t, rng.choice(customers), rng.choice(reasons)))
        if step % 2 == 1:  # a call corrected: another customer, reason, day, or abandoned
            sid = rng.choice(known)
            t = early + timedelta(days=rng.uniform(0, 70))
            batch.append(call(sid, t, rng.choice(customers), rng.choice(reasons), rng.random() < 0.7))
        m.record(COLLECTOR, batch)
        known += [s.signal_id for s in batch if s.signal_id not in known]
        now += timedelta(days=2, hours=rng.randint(0, 12))
        suite.tick(now.isoformat())
        _matches_every_stored_signal(m, aid, (JAN, FEB) if now >= at(FEB) else (JAN,))
    assert now > at(FEB) and m.window(None, aid, "repeat", JAN).closed


def test_a_window_recorded_with_fcr_v1_reads_every_call_at_its_restatement(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """January closed with v1 (every call passed is in its digest): a late call restates it by v1
    over every stored call — read whole for that window — while February, open, is v2."""
    m = suite.metrics
    with monkeypatch.context() as v1:
        v1.setattr(contact, "FCR_VERSION", 1)
        aid = _agreement(suite)
        _history(m)
        m.record(COLLECTOR, [_call("jan-1", at(f"2026-01-12T09:00{AMS}"), "cust-1", "r1")])
        suite.tick(f"2026-02-02T09:00{AMS}")
    closed = m.window(None, aid, "repeat", JAN).closed
    assert closed["formula_version"] == 1
    reads = _Reads(monkeypatch)
    m.record(COLLECTOR, [_call("jan-2", at(f"2026-01-20T09:00{AMS}"), "cust-2", "r2")])  # late: restates January
    suite.tick(f"2026-02-02T10:00{AMS}")
    restated = m.window(None, aid, "repeat", JAN).latest
    assert restated["formula_version"] == 1
    assert (closed["detail"]["first_contacts"], restated["detail"]["first_contacts"]) == ("2", "3")
    assert {"old-0-0", "old-299-16", "jan-1", "jan-2"} <= set(reads.whole)
    assert m.window(None, aid, "repeat", FEB).current["formula_version"] == 5
    _matches_every_stored_signal(m, aid, (JAN, FEB))


def test_a_store_indexed_before_groups_its_answered_calls_once_at_start(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls indexed before they were grouped (no group) are given their customer-and-reason
    group when the service starts, a page of rows a transaction (here of 1,000: six pages), once
    (then marked done): a round then reads the chains as if they were recorded now."""
    monkeypatch.setattr(signal_store, "REKEY_PAGE", 1_000)
    m = suite.metrics
    aid = _agreement(suite)
    _history(m)
    store = m._signal_store
    with store._cursor(write=True) as cur:  # as the index was written before
        cur.execute(store._q(f"UPDATE {store.rows} SET grp = NULL"))
        cur.execute(store._q(f"DELETE FROM {store.position_table} WHERE name LIKE ?"), ("signals.grouped%",))
    m.close()
    logged: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(signal_index.log, "info", lambda event, **kw: logged.append((event, kw)))
    again = suite.metrics = Metrics(suite.envs["metrics"], clock=suite.clock)
    answered = 300 * 17 - 43 * 17 + 92  # every customer i with i % 7 == 0 never answered
    assert [(e, kw["rows"]) for e, kw in logged if e == "signal_index_grouped"] == [("signal_index_grouped", answered)]
    store = again._signal_store
    with store._cursor(write=False) as cur:
        cur.execute(store._q(f"SELECT grp, content FROM {store.rows} WHERE list = ?"), (LIST_CODE["calls"],))
        rows = cur.fetchall()
    assert all((None if g is None else int(g)) == signal_index.group_key(bytes(c)) for g, c in rows)
    assert store.key_groups(signal_index.group_key) == 0  # once
    reads = _Reads(monkeypatch)
    suite.tick(f"2026-01-14T09:00{AMS}")
    assert {f"loyal-{k}" for k in range(3, 92)} <= reads.chained and reads.whole == []
    assert {f"loyal-{k}" for k in range(4)} <= reads.passed
    assert again.window(None, aid, "repeat", JAN).current["detail"]["repeated"] == "1"
    _matches_every_stored_signal(again, aid)


def test_an_open_window_is_judged_from_its_running_evaluation_as_contacts_arrive(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rounds after batches of new contacts (repeats of earlier ones among them) and time
    passing fold only the new contacts into the open window's running evaluation — the formula
    is not run over the window again — and each round's evaluation is the formula's over every
    stored call — a contact arriving late, before a first contact whose outcome was counted,
    too; a contact corrected is taken out and folded in again."""
    now = at(f"2026-01-12T09:00{AMS}")
    m, aid = _ten_contacts_judged(suite, now, "start")
    reads = _Reads(monkeypatch)
    for step in range(6):
        now += timedelta(hours=30)
        batch = [_call(f"r{step}-{i}", now - timedelta(minutes=10 * i), f"c{(step + i) % 7}") for i in range(4)]
        m.record(COLLECTOR, batch)
        reads.formula.clear()
        reads.passed.clear()
        suite.tick(now.isoformat())
        assert not reads.formula and reads.passed == {s.signal_id for s in batch}  # the batch folded in
        _matches_every_stored_signal(m, aid)
    running = [r for r in m._running.values() if type(r.tally).__name__ == "FcrTally"]
    assert len(running) == len(OBJECTIVES) and all(r.appended >= 6 for r in running)
    # A contact of c3 arrives late, on 11 January: c3's first contact of the 12th, counted, is now
    # its repeat — taken out of each running evaluation, which folds the late one alone.
    seeded = [r.seeded for r in running]
    m.record(COLLECTOR, [_call("late", at(f"2026-01-11T10:00{AMS}"), "c3")])
    reads.formula.clear()
    suite.tick((now + timedelta(hours=1)).isoformat())
    assert [r.seeded for r in running] == seeded and not reads.formula
    _matches_every_stored_signal(m, aid)
    # A contact of the window corrected — another customer, then another day — is taken out of
    # each running evaluation as it was and folded in as it is: not the window folded again.
    edited = [r.edited for r in running]
    reads.formula.clear()
    first = _call("start-0", now - timedelta(hours=2), "someone-new")
    m.record(COLLECTOR, [first], reason="corrected")
    suite.tick((now + timedelta(hours=2)).isoformat())
    m.record(COLLECTOR, [_call("r2-1", now - timedelta(days=3), "c3"), _call("n-1", now, "c1")], reason="corrected")
    suite.tick((now + timedelta(hours=3)).isoformat())
    assert [r.seeded for r in running] == seeded and not reads.formula
    assert [r.edited for r in running] == [e + 2 for e in edited]
    _matches_every_stored_signal(m, aid)


def test_a_window_closes_and_is_restated_within_the_hour_from_its_running_evaluation(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """January's end closes each first-contact resolution window from its running evaluation, as
    of its end — the formula is not run over the window's contacts again — and a contact late for
    January within the hour after is folded into it there: no window folded again, the formula not
    run. Each window, closed or open, equals the formula over every stored call."""
    m, aid = _ten_contacts_judged(suite, at(f"2026-01-30T09:00{AMS}"), "end")
    running = [r for r in m._running.values() if type(r.tally).__name__ == "FcrTally"]
    assert len(running) == len(OBJECTIVES)
    seeded = [r.seeded for r in running]
    reads = _Reads(monkeypatch)

    # A contact on the last evening, then the round after January's end (Amsterdam: 23:00 UTC).
    m.record(COLLECTOR, [_call("last", at(f"2026-01-31T20:00{AMS}"), "c1")])
    suite.tick("2026-01-31T23:00:05+00:00")
    assert all(m.window(None, aid, oid, JAN).closed for oid, _ in OBJECTIVES)
    assert not reads.formula and "last" in reads.passed and [r.seeded for r in running] == seeded
    _matches_every_stored_signal(m, aid, (JAN, FEB))

    # A contact late for January, 20 minutes after its end: folded into the closed windows' running
    # evaluations.
    reads.passed.clear()
    reads.formula.clear()
    m.record(COLLECTOR, [_call("late", at(f"2026-01-31T18:00{AMS}"), "c2")])
    suite.tick("2026-01-31T23:20:00+00:00")
    assert not reads.formula and "late" in reads.passed and [r.seeded for r in running] == seeded
    _matches_every_stored_signal(m, aid, (JAN, FEB))
