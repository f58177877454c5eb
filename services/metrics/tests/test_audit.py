"""The auditor's questions of the metrics service, through the application on both stores
(docs/domain.md §6): re-derivation from the raw signals in the store catches a signal altered in
the database; what-if shows the breaches a proposal would have produced and stores nothing;
a restated window shows as known at T beside as effective, and the difference."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from typing import Any

import pytest

from accord.metrics.v1 import signals_pb2 as pb
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms, with_target
from accord_kit.context import Principal
from accord_kit.timeline import Interval
from accord_metrics import audit, signal_index
from accord_metrics.application import CALENDAR_UNAVAILABLE, Metrics
from accord_metrics.audit import MetricsAudit, Progress
from accord_metrics.domain import (
    BREACHED,
    MET,
    AmendmentNotPendingError,
    InvalidRequestError,
    NotAPartyError,
    NotFoundError,
)
from accord_metrics.signal_index import reaching
from tests.suite import (
    AMS,
    COLLECTOR,
    CUSTOMER,
    P_CUSTOMER,
    P_PROVIDER,
    PROVIDER,
    Suite,
    an_active_agreement,
    an_agreement_with,
    at,
    ts,
)
from tests.suite import calls as call_signals
from tests.suite import outage as outage_signal

PHONE = "phone"

AUDITOR = Principal("audrey", "auditor")
STRANGER = Principal("mallory", "department", "marketing")
JAN, FEB, MAR = at(f"2026-01-01T00:00{AMS}"), at(f"2026-02-01T00:00{AMS}"), at(f"2026-03-01T00:00{AMS}")


class World:
    """The suite with the metrics store's settings at hand (to alter it behind its back)."""

    def __init__(self, make_env: Callable[[str], dict[str, str]]) -> None:
        self.envs: dict[str, dict[str, str]] = {}

        def make(name: str) -> dict[str, str]:
            self.envs[name] = make_env(name)
            return self.envs[name]

        self.suite = Suite(make)
        self.audit = MetricsAudit(self.suite.metrics)

    @property
    def metrics_table(self) -> str:
        return str(self.suite.metrics.recorder.events_table_name)  # type: ignore[attr-defined]


@pytest.fixture
def world(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[World]:
    w = World(make_store_env)
    try:
        yield w
    finally:
        w.suite.close()


def two_months(suite: Suite) -> str:
    """The sample SLA (availability ≥ 99.9 %, 80 % of calls answered within 20 s, monthly).
    January: 30 minutes down (99.93 %, met), 90 % of calls fast (met). February: an hour
    down (99.85 %, breached), 70 % fast (breached). On 5 March both have closed; March is open."""
    aid = an_active_agreement(suite)
    m = suite.metrics
    m.record(COLLECTOR, [outage_signal("o-jan", f"2026-01-12T10:00{AMS}", 30),
                         *call_signals("jan", f"2026-01-15T09:00{AMS}", 18, 2)])  # fmt: skip
    suite.tick(f"2026-02-10T12:00{AMS}")
    m.record(COLLECTOR, [outage_signal("o-feb", f"2026-02-03T08:00{AMS}", 60),
                         *call_signals("feb", f"2026-02-16T09:00{AMS}", 14, 6)])  # fmt: skip
    suite.tick(f"2026-03-05T12:00{AMS}")
    return aid


def statuses(suite: Suite, aid: str) -> dict[tuple[str, Any], str]:
    return {(w.objective_id, at(w.window_start)): w.latest["status"] for w in suite.metrics.window_evaluations(aid)}


# -- re-derivation ---------------------------------------------------------------------------------
def test_rederivation_matches_an_untampered_record_and_names_the_window_a_changed_signal_changes(
    world: World, alter_stored_signal: Any
) -> None:
    suite = world.suite
    aid = two_months(suite)
    before = statuses(suite, aid)
    assert before[("availability", JAN)] == MET and before[("availability", FEB)] == BREACHED
    assert before[("service-level", FEB)] == BREACHED

    # Untampered: every closed window (two objectives × January, February) recomputes to the
    # record; the two open March windows are counted and skipped.
    reports: list[Progress] = []
    clean = world.audit.rederive("", reports.append)
    assert (clean.total, clean.checked, clean.skipped_open, clean.mismatches) == (6, 4, 2, [])
    assert clean.agreements == 1 and clean.signals_read == 2 + 20 + 20
    # First word before the store is read, then per agreement (and every 25 windows).
    assert (reports[0].processed, reports[0].signals_read, reports[0].agreement_id) == (0, 0, "")
    assert [(r.processed, r.agreement_id, r.signals_read) for r in reports[1:]] == [(0, aid, 42), (6, aid, 42)]
    assert all(r.total == 6 and r.agreements == 1 for r in reports)
    assert world.audit.rederive(aid).mismatches == []

    # Behind the service's back: January's outage made to last 2 hours instead of 30 minutes.
    def longer(s: pb.Signal) -> None:
        s.outage.end.FromDatetime(at(f"2026-01-12T12:00{AMS}"))

    head = suite.metrics.head_position()
    alter_stored_signal(world.envs["metrics"], world.metrics_table, "o-jan", longer)

    found = world.audit.rederive()
    assert found.checked == 4
    assert [(m.agreement_id, m.objective_id, at(m.window_start)) for m in found.mismatches] == [
        (aid, "availability", JAN)
    ]
    mismatch = found.mismatches[0]
    assert mismatch.differences == ["value", "status", "input_digest", "breaches"]
    assert mismatch.recorded["status"] == MET and mismatch.recomputed is not None
    assert mismatch.recomputed["status"] == BREACHED
    assert mismatch.recomputed["detail"]["downtime_seconds"] == "7200"
    assert (mismatch.recorded_breaches, mismatch.expected_breaches) == (0, 1)
    assert at(mismatch.window_end) == FEB
    # The single-window recomputation (RecomputeWindow) shares the code and agrees.
    one = suite.metrics.recompute(aid, "availability", mismatch.window_start)
    assert not one["matches"] and one["differences"] == mismatch.differences
    # The service's own view is untouched by the audit: nothing stored.
    assert suite.metrics.head_position() == head
    assert statuses(suite, aid) == before


MONTHS = [at(f"2026-{m:02d}-01T00:00{AMS}") for m in range(1, 8)]  # January to July


# A monthly first-contact resolution objective, inferred from repeat contacts (7 days).
FCR_MONTHLY = {
    "objective_id": "fcr", "name": "First-contact resolution", "metric": "METRIC_FIRST_CONTACT_RESOLUTION",
    "parameters": {"method": "REPEAT_CONTACT"}, "comparator": "COMPARATOR_AT_LEAST", "target": "50",
    "window": {"kind": "WINDOW_KIND_MONTH"}, "calendar_id": "24x7",
}  # fmt: skip


def five_months(suite: Suite, objectives: list[dict[str, Any]] | None = None) -> str:
    """The sample SLA (with these objectives, unless None) judged over January to May: each month
    an outage of 30 minutes on the 12th and 10 calls on the 15th (8 answered fast); on 5 June the
    five months have closed and June is open."""
    aid = an_agreement_with(suite, objectives, f"2026-01-10T10:00{AMS}")
    for i, start in enumerate(MONTHS[:5]):
        day = start.astimezone(UTC) + timedelta(days=11)
        calls = call_signals(f"m{i + 1}-", (day + timedelta(days=3)).isoformat(), 8, 2)
        for c in calls:
            c.call.customer_id = f"cust-{c.signal_id}"
        suite.metrics.record(COLLECTOR, [outage_signal(f"o{i + 1}", day.isoformat(), 30), *calls])
        suite.tick((MONTHS[i + 1] + timedelta(days=4, hours=12)).isoformat())
    return aid


def spying_on_passes(m: Metrics, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, list[Any]]]:
    """Each pass over the store a re-derivation makes, seen as it returns: the calls it holds (by
    id) and the outages (by the month they start in)."""
    passes: list[dict[str, list[Any]]] = []
    read = m.stored_signals

    def stored_signals(*args: Any, **kwargs: Any) -> Any:
        out = read(*args, **kwargs)
        held = out.sets.get(EMAIL)
        passes.append({
            "calls": sorted(c.call_id for c in held.calls) if held else [],
            "outages": sorted(o.start.astimezone(UTC).month for o in held.outages) if held else [],
        })  # fmt: skip
        return out

    monkeypatch.setattr(m, "stored_signals", stored_signals)
    return passes


def test_a_rederivation_too_large_for_one_pass_reads_the_store_a_span_of_time_at_a_time(
    world: World, alter_stored_signal: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose signals do not fit what a pass may hold is read once a span of time: each
    pass holds only the signals that reach its windows (a month's here, 11 a month against a pass
    of 15), not history's, and the answer is the one pass's: the same windows checked, none
    amiss — and an altered March call named in March alone, in the same order."""
    suite = world.suite
    aid = five_months(suite)
    whole = world.audit.rederive()
    assert (whole.total, whole.checked, whole.skipped_open, whole.passes, whole.mismatches) == (12, 10, 2, 1, [])

    passes = spying_on_passes(suite.metrics, monkeypatch)
    reports: list[Progress] = []
    split = world.audit.rederive("", reports.append, held=15)
    assert (split.total, split.checked, split.skipped_open, split.mismatches) == (12, 10, 2, [])
    assert split.passes == len(passes) == 5 and split.signals_read == whole.signals_read == 55
    # A month a pass (June, open and empty, with May): its own calls and outage, nothing else.
    for month, held in enumerate(passes, 1):
        assert {c.split("-")[0] for c in held["calls"]} == {f"m{month}"} and len(held["calls"]) == 10
        assert held["outages"] == [month]
    assert all(r.passes == 5 for r in reports[1:]) and [r.pass_number for r in reports[1:]] == [
        n for n in range(1, 6) for _ in range(2)
    ]  # fmt: skip
    assert reports[-1].processed == 12

    # March's service level altered behind the service's back: two fast calls made slow.
    def slow(s: pb.Signal) -> None:
        s.call.answered_at.FromDatetime(s.call.entered_queue.ToDatetime() + timedelta(seconds=45))

    for sid in ("m3-0", "m3-1"):
        alter_stored_signal(world.envs["metrics"], world.metrics_table, sid, slow)
    found, split = world.audit.rederive(), world.audit.rederive(held=15)
    named = [(m.agreement_id, m.objective_id, at(m.window_start)) for m in found.mismatches]
    assert named == [(aid, "service-level", MONTHS[2])]
    assert [(m.agreement_id, m.objective_id, at(m.window_start)) for m in split.mismatches] == named
    assert split.mismatches[0].differences == found.mismatches[0].differences
    assert split.mismatches[0].recomputed == found.mismatches[0].recomputed


def decoding_per_pass(m: Metrics, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The stored batches each pass of a re-derivation decodes (a page a batch: `STORED_PAGE` 1)."""
    monkeypatch.setattr(signal_index, "STORED_PAGE", 1)
    decoded: list[int] = []
    decode, read = signal_index.batch_message, m.stored_signals

    def counted(data: Any) -> Any:
        decoded[-1] += 1
        return decode(data)

    def stored_signals(*args: Any, **kwargs: Any) -> Any:
        decoded.append(0)
        return read(*args, **kwargs)

    monkeypatch.setattr(signal_index, "batch_message", counted)
    monkeypatch.setattr(m, "stored_signals", stored_signals)
    return decoded


def test_a_later_pass_reads_only_the_pages_that_may_hold_its_span(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first pass reads every stored batch and maps the log's pages by the instants their
    signals reach; each later pass reads only the pages that may hold a signal of its span — a
    year's store re-derived a month a pass reads it about twice, not once a month — and the answer
    is the same: every window checked, none amiss."""
    suite = world.suite
    five_months(suite)
    decoded = decoding_per_pass(suite.metrics, monkeypatch)
    split = world.audit.rederive(held=15)
    assert (split.passes, split.checked, split.skipped_open, split.mismatches) == (5, 10, 2, [])
    # Five batches, a month's each: the first pass decodes them all, then each month's pass its own.
    assert decoded == [5, 1, 1, 1, 1]
    assert split.signals_read == 55


def test_every_pass_reads_the_pages_of_corrections_and_completions(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A correction or an outage's completion replaces a content that may lie in any pass's span
    (a call moved out of February; an outage reported under way on 20 January, which reaches every
    month after until its end is reported): every pass reads its page, wherever its own content
    reaches — the passes that held the earlier content drop or replace it, and every window
    matches its record, as in one pass."""
    suite = world.suite
    aid = five_months(suite)
    m = suite.metrics
    under_way = pb.Signal(
        signal_id="o-open", service_id=EMAIL, outage=pb.Outage(start=ts(at(f"2026-01-20T10:00{AMS}")))
    )
    m.record(COLLECTOR, [under_way])
    suite.tick(f"2026-06-05T12:10{AMS}")
    assert statuses(suite, aid)[("availability", MONTHS[2])] == BREACHED  # March: down all month
    ended = pb.Signal()
    ended.CopyFrom(under_way)
    ended.outage.end.FromDatetime(at(f"2026-01-20T11:00{AMS}"))
    m.record(COLLECTOR, [ended])
    moved = call_signals("m2-", f"2026-03-20T09:00{AMS}", 1, 0)  # m2-0: from 15 February to March
    m.record(COLLECTOR, moved, reason="entered on the wrong day")
    suite.tick(f"2026-06-05T12:20{AMS}")
    assert statuses(suite, aid)[("availability", MONTHS[2])] == MET

    whole = world.audit.rederive()
    assert (whole.passes, whole.checked, whole.mismatches) == (1, 10, [])
    decoded = decoding_per_pass(m, monkeypatch)
    split = world.audit.rederive(held=15)
    assert (split.passes, split.checked, split.skipped_open, split.mismatches) == (5, 10, 2, [])
    # Eight batches: the months', the outage under way (read by every pass after its start), its
    # completion and the correction (read by every pass); each later pass its month's too.
    assert decoded == [8, 4, 4, 4, 4]


def test_a_mapped_page_is_read_whole_however_many_events_a_read_takes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later pass reads a page the map says it needs to its last event, however many stored events
    one read takes then: here the map's first page holds January's to March's batches (its second
    April's and May's), and the pass for March, reading a batch at a time, still reaches March's."""
    suite = world.suite
    five_months(suite)
    m = suite.metrics
    pages = signal_index.ReadPages({EMAIL})
    monkeypatch.setattr(signal_index, "STORED_PAGE", 3)
    m.stored_signals({EMAIL}, reach=reaching(Interval(JAN, FEB)), pages=pages)
    assert pages.complete and len(pages) == 2
    monkeypatch.setattr(signal_index, "STORED_PAGE", 1)
    march = Interval(MAR, MONTHS[3])
    held = m.stored_signals({EMAIL}, reach=reaching(march), pages=pages).sets[EMAIL]
    unmapped = m.stored_signals({EMAIL}, reach=reaching(march)).sets[EMAIL]
    assert sorted(c.call_id for c in held.calls) == sorted(c.call_id for c in unmapped.calls)
    assert len(held.calls) == 10 and held.outages == unmapped.outages


def test_windows_within_a_span_larger_than_a_pass_share_its_pass(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A month holding more than a pass (11 signals against 5, as a contact centre's month against
    500,000) is a pass of its own, held whole — one for both objectives judged over it, not one
    each: the store is read once a month, not once a window."""
    suite = world.suite
    five_months(suite)
    passes = spying_on_passes(suite.metrics, monkeypatch)
    split = world.audit.rederive(held=5)
    assert (split.total, split.checked, split.skipped_open, split.mismatches) == (12, 10, 2, [])
    assert split.passes == len(passes) == 6  # January to May, then June (open, empty)
    for month, held in enumerate(passes[:5], 1):
        assert {c.split("-")[0] for c in held["calls"]} == {f"m{month}"} and held["outages"] == [month]


def test_a_pass_tells_its_progress_as_it_reads_and_a_cancelled_rederivation_stops_inside_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass over a large store reads for a while (≈ 2 µs a signal: a year's store, most of a
    minute a pass): it says how far it has read as it goes (here after every page of one batch,
    a month's 11 signals), and a client that leaves stops it inside the read, not at the next
    window after it — nothing judged from the part read."""
    suite = world.suite
    five_months(suite)
    m = suite.metrics
    monkeypatch.setattr(signal_index, "STORED_PAGE", 1)  # a page a stored batch (a month's)
    monkeypatch.setattr(audit, "READ_PROGRESS_SECONDS", 0.0)  # a report before every page
    reports: list[Progress] = []
    whole = world.audit.rederive("", reports.append, held=15)
    assert (whole.passes, whole.checked, whole.mismatches) == (5, 10, [])
    reading = [(r.pass_number, r.signals_read, r.processed) for r in reports if r.passes and not r.agreement_id]
    assert reading[:6] == [(1, read, 0) for read in (0, 11, 22, 33, 44, 55)]  # the first pass counts them
    # Each later pass reads its own month's page alone (the first pass mapped them), and says so
    # before it and before the look past the pages mapped.
    assert reading[6:] == [(n, 55, 2 * (n - 1)) for n in range(2, 6) for _ in range(2)]

    read: list[int] = []
    stored_signals = m.stored_signals

    def counted(*args: Any, **kwargs: Any) -> Any:
        out = stored_signals(*args, **kwargs)
        read.append(out.count)
        return out

    monkeypatch.setattr(m, "stored_signals", counted)
    cancelled = threading.Event()

    def leave_in_the_second_pass(p: Progress) -> None:
        if p.pass_number == 2 and not p.agreement_id:
            cancelled.set()  # the client leaves while the second pass reads its first page

    stopped = world.audit.rederive("", leave_in_the_second_pass, cancelled, held=15)
    assert read == [55, 11]  # the second pass stopped after its first page
    assert (stopped.passes, stopped.checked, stopped.skipped_open, stopped.mismatches) == (2, 2, 0, [])


def test_first_contact_resolutions_windows_are_checked_a_span_of_time_at_a_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First-contact resolution's windows are checked in passes of their own, each holding the calls
    from its span's start less the repeat window (a contact then is told a first contact or a
    repeat exactly) and the contacts chained to them before (none here but January's last) — not
    every call — while the other objectives' passes hold a month each: every window matches its
    record."""
    suite = world.suite
    five_months(suite, [*sla_terms()["objectives"], FCR_MONTHLY])
    # One customer calling on the last evening of January and again the first morning of
    # February: February's call is a repeat of January's contact, which only January's call says
    # (reported late: both months are judged again).
    pair = []
    for sid, when in (("x-jan", "2026-01-31T23:50"), ("x-feb", "2026-02-01T00:10")):
        entered = at(f"{when}{AMS}")
        c = pb.Call(entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=5)), customer_id="cust-x")
        pair.append(pb.Signal(signal_id=sid, service_id=EMAIL, call=c))
    suite.metrics.record(COLLECTOR, pair)
    suite.tick(f"2026-06-05T13:00{AMS}")
    passes = spying_on_passes(suite.metrics, monkeypatch)
    split = world.audit.rederive(held=15)
    assert (split.total, split.checked, split.skipped_open, split.mismatches) == (18, 15, 3, [])
    assert split.passes == 10
    months, chained = passes[:5], [p for p in passes[5:] if p["calls"]]  # (a chain walked back read none)
    for month, held in enumerate(months, 1):
        assert {c.split("-")[0] for c in held["calls"]} == {f"m{month}", *(["x"] if month <= 2 else [])}
    # January to May (June, open, with May): each month's calls, January's last evening's in
    # February's too (within its repeat window before), and its outage.
    assert len(chained) == 5
    for month, held in enumerate(chained, 1):
        assert {c.split("-")[0] for c in held["calls"]} == {f"m{month}", *(["x"] if month <= 2 else [])}
        assert held["outages"] == [month]


def a_chain_of_contacts(suite: Suite, services: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A customer calling about one reason every 5 days from 3 January to 27 May (by `services` in
    turn), recorded late and judged on 5 June; returns the calls each walk of chains back adds
    (`Metrics.chain_anchors`, counted from now on)."""
    chain = []
    for n in range(30):
        entered = at(f"2026-01-03T10:00{AMS}") + timedelta(days=5 * n)
        c = pb.Call(
            entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=5)), customer_id="cust-y",
            reason="billing",
        )  # fmt: skip
        chain.append(pb.Signal(signal_id=f"y-{n:02d}", service_id=services[n % len(services)], call=c))
    suite.metrics.record(COLLECTOR, chain)
    suite.tick(f"2026-06-05T13:00{AMS}")
    anchors: list[int] = []
    walk = suite.metrics.chain_anchors

    def counted(*args: Any, **kwargs: Any) -> int:
        anchors.append(walk(*args, **kwargs))
        return anchors[-1]

    monkeypatch.setattr(suite.metrics, "chain_anchors", counted)
    return anchors


def test_first_contact_resolution_s_chains_of_contacts_are_walked_back_from_each_pass(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A customer calling about one reason every 5 days from January to May chains every contact to
    the one before (a repeat window of 7 days): whether a May contact is a first contact or a repeat
    depends on the first contact of January. Each first-contact resolution pass walks the chain
    back from its span over the stored batches and holds the first contact of the episode under way
    (one call), not the chain: every window matches its record. Without the walk, February's,
    April's and May's first contacts are miscounted."""
    suite = world.suite
    five_months(suite, [*sla_terms()["objectives"], FCR_MONTHLY])
    anchors = a_chain_of_contacts(suite, (EMAIL,), monkeypatch)
    m = suite.metrics
    split = world.audit.rederive(held=15)
    assert (split.total, split.checked, split.skipped_open, split.mismatches) == (18, 15, 3, [])
    # A month a pass (the chain makes each more than a pass holds alone, June's too): each
    # first-contact resolution pass but January's takes one contact of the chain from before it.
    assert split.passes == 12 and anchors == [0, 1, 1, 1, 1, 1]

    monkeypatch.setattr(m, "chain_anchors", lambda *args, **kwargs: 0)  # no walk back
    amiss = world.audit.rederive(held=15).mismatches
    # February, April and May (their starts in UTC): each first contact's parity since January.
    starts = (f"2026-02-01T00:00{AMS}", "2026-04-01T00:00+02:00", "2026-05-01T00:00+02:00")
    assert sorted((c.objective_id, at(c.window_start)) for c in amiss) == [("fcr", at(t)) for t in starts]


def test_first_contact_resolution_over_two_services_walks_each_chain_across_both(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agreement measuring e-mail and phone: one customer's contacts chain across both (a
    contact by phone 5 days after one by e-mail is its repeat). Its first-contact resolution passes
    walk each chain back over both services' calls, and keep the first contact of the episode under
    way in its own service's calls: every window matches its record. Without the walk, some month's
    first contacts are miscounted."""
    suite = world.suite
    aid = an_agreement_with(
        suite, [*sla_terms()["objectives"], FCR_MONTHLY], f"2026-01-10T10:00{AMS}", services=(EMAIL, PHONE)
    )  # fmt: skip
    for i, start in enumerate(MONTHS[:5]):
        calls = call_signals(f"m{i + 1}-", (start.astimezone(UTC) + timedelta(days=14)).isoformat(), 8, 2)
        for k, c in enumerate(calls):
            c.call.customer_id = f"cust-{c.signal_id}"
            c.service_id = PHONE if k % 2 else EMAIL
        suite.metrics.record(COLLECTOR, calls)
        suite.tick((MONTHS[i + 1] + timedelta(days=4, hours=12)).isoformat())
    anchors = a_chain_of_contacts(suite, (EMAIL, PHONE), monkeypatch)  # by e-mail and by phone in turn
    m = suite.metrics
    split = world.audit.rederive(held=15)
    assert (split.total, split.checked, split.skipped_open, split.mismatches) == (18, 15, 3, [])
    assert len(anchors) > 1 and anchors[0] == 0 and all(a == 1 for a in anchors[1:])

    monkeypatch.setattr(m, "chain_anchors", lambda *args, **kwargs: 0)  # no walk back
    amiss = world.audit.rederive(held=15).mismatches
    assert amiss and {c.objective_id for c in amiss} == {"fcr"}
    assert aid == amiss[0].agreement_id


def test_a_window_recorded_without_its_formula_is_checked_in_a_pass_holding_every_call(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window whose record names no formula (recorded before formulas were versioned) may have
    been judged on every call it was passed: a pass bounded in time leaves it to a last pass that
    holds every call, as a recomputation of it does (`Judging.recompute`) — checked once, there."""
    suite = world.suite
    aid = five_months(suite)
    m = suite.metrics
    march = m.window(None, aid, "service-level", MONTHS[2].astimezone(UTC).isoformat())
    legacy = {k: v for k, v in march.latest.items() if k not in ("formula_id", "formula_version")}
    march._restated(old=march.latest, new=legacy)
    m.save(march)
    passes = spying_on_passes(m, monkeypatch)
    split = world.audit.rederive(held=15)
    assert (split.total, split.checked, split.skipped_open, split.mismatches) == (12, 10, 2, [])
    assert split.passes == 6 == len(passes)
    assert len(passes[2]["calls"]) == 10 and len(passes[-1]["calls"]) == 50 and passes[-1]["outages"] == [3]


def test_a_breach_certain_before_close_that_a_reported_end_undid_is_no_mismatch(world: World) -> None:
    """An outage reported as under way at 10:00 is still counted at 11:00: an hour down, beyond
    January's 44.6-minute budget, so the breach is certain and recorded. Its end, reported
    later, says 10:05: January closes met. The breach record stands (never withdrawn) and the
    re-derivation accepts it: an earlier recorded evaluation implied it."""
    suite = world.suite
    aid = an_active_agreement(suite)
    start = at(f"2026-01-10T10:00{AMS}")
    under_way = pb.Signal(signal_id="o-1", service_id="email", outage=pb.Outage(start=ts(start)))
    suite.metrics.record(COLLECTOR, [under_way])
    suite.tick(f"2026-01-10T11:00{AMS}")
    assert suite.metrics.window(None, aid, "availability", JAN.isoformat()).latest["status"] == BREACHED
    ended = pb.Signal(signal_id="o-1", service_id="email")
    ended.outage.start.CopyFrom(ts(start))
    ended.outage.end.CopyFrom(ts(start + timedelta(minutes=5)))
    assert suite.metrics.record(COLLECTOR, [ended]).accepted == 1
    suite.tick(f"2026-02-02T12:00{AMS}")
    jan = suite.metrics.window(None, aid, "availability", JAN.isoformat())
    assert jan.closed["status"] == MET and jan.breaches == [""]
    result = world.audit.rederive(aid)
    assert (result.checked, result.mismatches) == (2, [])


def test_rederivation_of_an_unknown_agreement_is_not_found(world: World) -> None:
    two_months(world.suite)
    with pytest.raises(NotFoundError, match="agreement 'nope' is not known"):
        world.audit.rederive("nope")


# -- what-if --------------------------------------------------------------------------------------------
def test_what_if_a_tighter_or_looser_availability_target_over_the_last_closed_months(world: World) -> None:
    suite, audit = world.suite, world.audit
    aid = two_months(suite)
    head = suite.metrics.head_position()

    # Draft terms (stored nowhere): 99.99 % would have breached January (99.93 %) as well.
    tight = audit.what_if(P_CUSTOMER, aid, terms=with_target(sla_terms(), "availability", "99.99"))
    assert tight.periods == 3 and tight.amendment_id == ""
    by_id = {o.objective_id: o for o in tight.objectives}
    assert list(by_id) == ["availability", "service-level"]
    av = by_id["availability"]
    assert [(w.start, w.end) for w in av.windows] == [(JAN, FEB), (FEB, MAR)]  # March has not closed
    assert [w.breached_actual for w in av.windows] == [False, True]
    assert [w.breached_proposed for w in av.windows] == [True, True]
    jan = av.windows[0]
    assert jan.actual is not None and jan.proposed is not None
    assert jan.proposed["value"] == jan.actual["value"] and jan.proposed["input_digest"] == jan.actual["input_digest"]
    assert (jan.actual["target"], jan.proposed["target"]) == ("99.9", "99.99")
    assert jan.proposed["version"] == 0 and jan.actual["version"] == 1
    # Unchanged objective: the same judgement as recorded.
    sl = by_id["service-level"]
    assert [w.breached_actual for w in sl.windows] == [w.breached_proposed for w in sl.windows] == [False, True]
    assert tight.terms["objectives"][0]["target"] == "99.99"

    # A pending amendment metrics has seen (from the agreements stream): loosened to 99.8 %, and
    # February (99.85 %) would not have been breached.
    _, amendment_id = suite.agreements.propose_amendment(
        PROVIDER, aid, with_target(sla_terms(), "availability", "99.8"), at(f"2026-03-20T00:00{AMS}"), "cheaper"
    )
    suite.tick(f"2026-03-05T12:30{AMS}")
    head = suite.metrics.head_position()
    loose = audit.what_if(AUDITOR, aid, amendment_id=amendment_id, periods=1)
    assert loose.amendment_id == amendment_id and loose.periods == 1
    av = loose.objectives[0]
    assert [(w.start, w.breached_actual, w.breached_proposed) for w in av.windows] == [(FEB, True, False)]
    assert av.windows[0].proposed is not None and av.windows[0].proposed["status"] == MET
    assert loose.terms["objectives"][0]["target"] == "99.8"
    # Nothing stored by either question.
    assert suite.metrics.head_position() == head


def test_what_if_shows_a_new_objective_and_one_the_proposal_drops(world: World) -> None:
    suite = world.suite
    aid = two_months(suite)
    terms = sla_terms()
    strict = {**terms["objectives"][0], "objective_id": "availability-strict", "target": "99.93"}
    terms["objectives"] = [terms["objectives"][0], strict]  # service-level dropped, a stricter one added
    result = world.audit.what_if(P_PROVIDER, aid, terms=terms, periods=24)
    by_id = {o.objective_id: o for o in result.objectives}
    assert list(by_id) == ["availability", "service-level", "availability-strict"]
    dropped = by_id["service-level"]
    assert "not in the proposal" in dropped.note
    assert [(w.actual is not None, w.proposed) for w in dropped.windows] == [(True, None), (True, None)]
    new = by_id["availability-strict"]
    assert "new in the proposal" in new.note
    assert [(w.start, w.actual, w.breached_proposed) for w in new.windows] == [(JAN, None, False), (FEB, None, True)]


def test_what_if_rejections(world: World) -> None:
    suite, audit = world.suite, world.audit
    aid = two_months(suite)
    terms = sla_terms()
    head = suite.metrics.head_position()
    with pytest.raises(NotFoundError, match="agreement 'nope'"):
        audit.what_if(AUDITOR, "nope", terms=terms)
    with pytest.raises(NotFoundError, match=r"amendment 'a-1' of agreement .* is not known"):
        audit.what_if(AUDITOR, aid, amendment_id="a-1")
    with pytest.raises(InvalidRequestError, match=r"exactly one of amendment_id .* neither was given"):
        audit.what_if(AUDITOR, aid)
    with pytest.raises(InvalidRequestError, match="both were given"):
        audit.what_if(AUDITOR, aid, amendment_id="a-1", terms=terms)
    with pytest.raises(InvalidRequestError, match=r"periods: 1 to 24 .* not 25"):
        audit.what_if(AUDITOR, aid, terms=terms, periods=25)
    with pytest.raises(NotAPartyError, match="department marketing is not a party"):
        audit.what_if(STRANGER, aid, terms=terms)
    bad = with_target(terms, "availability", "lots")
    with pytest.raises(InvalidRequestError, match=r"terms.objectives\[0\] \(availability\).target"):
        audit.what_if(AUDITOR, aid, terms=bad)
    assert suite.metrics.head_position() == head


def test_what_if_refuses_an_amendment_that_is_no_longer_pending(world: World) -> None:
    """Metrics learns from the agreements stream how each amendment ended: a rejected or
    withdrawn one is no proposal any more, an accepted one is a version (FAILED_PRECONDITION at
    the edge), each refusal naming the amendment and what happened to it. Its terms can still
    be asked about as draft terms."""
    suite, audit = world.suite, world.audit
    aid = two_months(suite)
    loose = with_target(sla_terms(), "availability", "99.8")
    effective = at(f"2026-03-20T00:00{AMS}")

    # Proposed by the provider, rejected by the customer.
    _, rejected = suite.agreements.propose_amendment(PROVIDER, aid, loose, effective, "cheaper")
    suite.tick(f"2026-03-05T12:30{AMS}")
    assert audit.what_if(AUDITOR, aid, amendment_id=rejected).amendment_id == rejected  # pending: answered
    suite.agreements.reject_amendment(CUSTOMER, aid, rejected, "too lax for month-end close")
    suite.tick(f"2026-03-05T12:40{AMS}")
    head = suite.metrics.head_position()
    with pytest.raises(
        AmendmentNotPendingError,
        match=rf"amendment '{rejected}' of agreement {aid} was rejected \(too lax for month-end close\): "
        "it is no longer pending",
    ):
        audit.what_if(AUDITOR, aid, amendment_id=rejected)
    # Its terms, given as draft terms, are still a question one may ask.
    assert audit.what_if(AUDITOR, aid, terms=loose).objectives[0].windows[-1].breached_proposed is False

    # Proposed by the provider, withdrawn by the provider.
    _, withdrawn = suite.agreements.propose_amendment(PROVIDER, aid, loose, effective, "cheaper, again")
    suite.agreements.withdraw_amendment(PROVIDER, aid, withdrawn, "")
    suite.tick(f"2026-03-05T12:50{AMS}")
    head = suite.metrics.head_position()
    with pytest.raises(AmendmentNotPendingError, match=rf"amendment '{withdrawn}' .* was withdrawn: it is no longer"):
        audit.what_if(P_CUSTOMER, aid, amendment_id=withdrawn)

    # Accepted: version 2, in force from 20 March.
    _, accepted = suite.agreements.propose_amendment(PROVIDER, aid, loose, effective, "cheaper, agreed")
    suite.agreements.accept_amendment(CUSTOMER, aid, accepted)
    suite.tick(f"2026-03-05T13:00{AMS}")
    head = suite.metrics.head_position()
    with pytest.raises(
        AmendmentNotPendingError,
        match=rf"amendment '{accepted}' of agreement {aid} was already accepted as version 2: compare the versions",
    ):
        audit.what_if(P_PROVIDER, aid, amendment_id=accepted)
    assert suite.metrics.head_position() == head  # a refusal stores nothing

    view = suite.metrics.agreement_view(None, aid)
    assert view.concluded == {
        rejected: {"outcome": "rejected", "reason": "too lax for month-end close", "version": 0},
        withdrawn: {"outcome": "withdrawn", "reason": "", "version": 0},
        accepted: {"outcome": "accepted", "reason": "", "version": 2},
    }
    assert [v["version"] for v in view.versions] == [1, 2]


def test_what_if_replays_the_signals_in_the_store_not_a_process_index(world: World, alter_stored_signal: Any) -> None:
    """What-if reads the signals it replays from the store, as re-derivation does: after a
    stored signal is altered, the process that indexed it before and a process started after
    give the same answer — the one re-derivation recomputes."""
    suite = world.suite
    aid = two_months(suite)  # this process's index holds January's 30-minute outage

    def longer(s: pb.Signal) -> None:  # two hours instead of 30 minutes
        s.outage.end.FromDatetime(at(f"2026-01-12T12:00{AMS}"))

    alter_stored_signal(world.envs["metrics"], world.metrics_table, "o-jan", longer)
    fresh = Metrics(world.envs["metrics"], clock=suite.clock)
    try:
        answers = [
            MetricsAudit(app).what_if(AUDITOR, aid, terms=sla_terms(), periods=2) for app in (suite.metrics, fresh)
        ]
    finally:
        fresh.close()
    mismatch = next(m for m in world.audit.rederive(aid).mismatches if m.objective_id == "availability")
    assert mismatch.recomputed is not None
    jan = [next(o for o in a.objectives if o.objective_id == "availability").windows[0] for a in answers]
    assert jan[0].proposed == jan[1].proposed
    assert jan[0].proposed is not None and jan[0].actual is not None
    assert (at(jan[0].proposed["window_start"]), jan[0].actual["status"], jan[0].proposed["status"]) == (
        JAN, MET, BREACHED
    )  # fmt: skip
    assert jan[0].proposed["input_digest"] == mismatch.recomputed["input_digest"]
    assert jan[0].proposed["detail"]["downtime_seconds"] == "7200"


def test_a_window_checked_or_replayed_holds_only_the_signals_that_reach_it(world: World) -> None:
    """Recomputation and what-if re-read every stored batch, and hold only the signals that may
    reach the windows they judge — not the store's every signal (a year of a contact centre's, for
    one window) — the same answers all the same: a call corrected out of February is dropped, one
    corrected into it held, outages that overlap it (one from January, one under way since before
    it) held; every other kind whole."""
    suite = world.suite
    aid = two_months(suite)
    m = suite.metrics
    under_way = pb.Signal(
        signal_id="o-open", service_id=EMAIL, outage=pb.Outage(start=ts(at(f"2026-01-31T23:00{AMS}")))
    )
    m.record(COLLECTOR, [outage_signal("o-jan-feb", f"2026-01-31T22:00{AMS}", 180), under_way])
    moved = call_signals("feb", f"2026-01-20T09:00{AMS}", 1, 0)  # feb0: from 16 February to January
    into = call_signals("jan", f"2026-02-20T09:00{AMS}", 1, 0)  # jan0: from 15 January to February
    m.record(COLLECTOR, [*moved, *into], reason="corrected")
    suite.tick(f"2026-03-05T12:10{AMS}")
    whole = m.stored_signals({EMAIL}).sets[EMAIL]
    stored = m.stored_signals({EMAIL}, reach=reaching(Interval(FEB, MAR)))
    held = stored.sets[EMAIL]
    assert stored.count == m.stored_signals({EMAIL}).count  # every batch read
    assert sorted(c.call_id for c in held.calls) == sorted(
        c.call_id for c in whole.calls if FEB <= c.entered_queue <= MAR
    )  # fmt: skip
    assert "feb0" not in {c.call_id for c in held.calls} and "jan0" in {c.call_id for c in held.calls}
    assert len(held.calls) == 20 and len(whole.calls) == 40
    assert held.outages == [o for o in whole.outages if o.start <= MAR and o.end >= FEB]
    assert len(held.outages) == 3  # February's, the one from January, the one under way
    assert held.maintenance == whole.maintenance
    for objective in ("availability", "service-level"):
        check = m.recompute(aid, objective, FEB.astimezone(UTC).isoformat())
        assert check["matches"], check["differences"]
    answer = world.audit.what_if(AUDITOR, aid, terms=sla_terms(), periods=1)
    for o in answer.objectives:
        [feb] = o.windows
        assert feb.proposed is not None and feb.actual is not None
        assert (at(feb.proposed["window_start"]), feb.proposed["input_digest"], feb.proposed["value"]) == (
            FEB, feb.actual["input_digest"], feb.actual["value"]
        )  # fmt: skip


# -- the calendar version that judged a window ----------------------------------------------------
OFFICE_HOURS = {
    "time_zone": "Europe/Amsterdam",
    "hours": [{"weekday": d, "opens": "09:00", "closes": "17:00"} for d in range(1, 6)],
    "holidays": [],
}


def an_office_hours_agreement(suite: Suite) -> str:
    """The sample SLA with availability measured in office hours (Monday to Friday 9–17,
    calendar "office-hours" version 1, no holidays); returns its id."""
    ag = suite.agreements
    for dept in (IT, FINANCE, "marketing"):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    ag.define_calendar("office-hours", OFFICE_HOURS)
    terms = sla_terms()
    terms["objectives"][0]["calendar_id"] = "office-hours"
    aid = str(ag.draft(PROVIDER, terms).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    suite.tick(f"2026-01-10T10:00{AMS}")
    return aid


def test_a_window_is_judged_again_by_the_calendar_version_that_judged_it(world: World) -> None:
    """January is judged and closed under office hours version 1. On 10 February the calendar
    is redefined: 13 January, the day of January's outage, becomes a holiday (version 2).
    January is not re-judged (history never is); re-derivation, RecomputeWindow and what-if
    judge it by version 1, as recorded, and find nothing amiss — and a late signal restates it
    under version 1 too."""
    suite, audit, m = world.suite, world.audit, world.suite.metrics
    aid = an_office_hours_agreement(suite)
    m.record(COLLECTOR, [outage_signal("o-jan", f"2026-01-13T10:00{AMS}", 60)])  # a Tuesday, office hours
    suite.tick(f"2026-02-02T12:00{AMS}")
    jan = m.window(None, aid, "availability", JAN.isoformat())
    closed = jan.closed
    assert (closed["status"], closed["calendar_id"], closed["calendar_version"]) == (BREACHED, "office-hours", 1)

    suite.agreements.define_calendar("office-hours", {**OFFICE_HOURS, "holidays": ["2026-01-13"]})
    suite.tick(f"2026-02-10T12:00{AMS}")
    assert m.calendar("office-hours").version == 2
    jan = m.window(None, aid, "availability", JAN.isoformat())
    assert jan.latest == closed and jan.restatements == []  # not re-judged

    result = audit.rederive(aid)
    assert (result.checked, result.mismatches) == (2, [])
    one = m.recompute(aid, "availability", JAN.isoformat())
    assert one["matches"] and one["recomputed"]["calendar_version"] == 1
    # The unchanged objective, asked about as draft terms: the same judgement as recorded.
    av = audit.what_if(AUDITOR, aid, terms=m.agreement_view(None, aid).versions[0]["terms"], periods=1).objectives[0]
    assert av.windows[0].proposed is not None and av.windows[0].actual is not None
    assert (av.windows[0].proposed["input_digest"], av.windows[0].proposed["calendar_version"]) == (
        closed["input_digest"], 1
    )  # fmt: skip

    # A late outage report for 14 January restates January from its signals, still by version 1.
    m.record(COLLECTOR, [outage_signal("o-late", f"2026-01-14T10:00{AMS}", 5)])
    suite.tick(f"2026-02-10T12:10{AMS}")
    jan = m.window(None, aid, "availability", JAN.isoformat())
    assert len(jan.restatements) == 1 and jan.latest["calendar_version"] == 1
    assert jan.latest["detail"]["downtime_seconds"] == str(65 * 60)
    assert audit.rederive(aid).mismatches == []

    # A window recorded under a version metrics does not hold is judged by the latest and says so.
    jan.closed = jan.current = {**closed, "calendar_version": 9}
    jan.restatements = []
    now = suite.clock.now()
    check = m.check_window(m.agreement_view(None, aid), jan, m.signal_sources([EMAIL], from_store=True), now)
    assert CALENDAR_UNAVAILABLE in check.differences and not check.matches
    assert check.recomputed is not None and check.recomputed["calendar_version"] == 2


# -- as known at / as effective at ------------------------------------------------------------------------
def test_a_restated_month_as_known_before_the_restatement_and_as_effective_now(world: World) -> None:
    suite, audit = world.suite, world.audit
    aid = two_months(suite)  # January closed (met) on 10 February, February on 5 March
    closed_jan = {w.objective_id: w for w in suite.metrics.window_evaluations(aid)}
    # 6 March: a late outage report for 20 January (50 minutes) restates January: 80 minutes down.
    suite.clock.set(at(f"2026-03-06T09:00{AMS}"))
    suite.metrics.record(COLLECTOR, [outage_signal("o-late", f"2026-01-20T02:00{AMS}", 50)])
    suite.tick(f"2026-03-06T09:00{AMS}")
    jan_av = suite.metrics.window(None, aid, "availability", JAN.isoformat())
    assert len(jan_av.restatements) == 1 and jan_av.latest["status"] == BREACHED
    assert closed_jan  # (January's windows were closed before the late report)

    # As known on the evening of 5 March (after February closed, before the late report).
    before = audit.compliance_at(P_CUSTOMER, aid, at(f"2026-03-05T20:00{AMS}"))
    rows = {(r.objective_id, at(r.window_start)): r for r in before}
    assert set(rows) == {(o, w) for o in ("availability", "service-level") for w in (JAN, FEB, MAR)}
    jan = rows[("availability", JAN)]
    assert jan.as_known is not None
    assert jan.as_known == jan_av.closed  # the closing value
    assert jan.as_effective == jan_av.latest  # the restated value
    assert jan.restated is True
    assert (jan.as_known["status"], jan.as_effective["status"]) == (MET, BREACHED)
    # Exactly what the restatement changed: the value and status, and what they follow from.
    assert jan.differences == ["value", "status", "input_digest", "detail", "budget_consumed", "budget_remaining"]
    for key in (("availability", FEB), ("service-level", JAN), ("service-level", FEB)):
        assert rows[key].as_known == rows[key].as_effective and rows[key].differences == []
        assert rows[key].restated is False

    # After the restatement both axes agree.
    after = audit.compliance_at(AUDITOR, aid, at(f"2026-03-06T10:00{AMS}"), "availability")
    jan = next(r for r in after if at(r.window_start) == JAN)
    assert {r.objective_id for r in after} == {"availability"}
    assert jan.as_known == jan.as_effective and jan.differences == [] and jan.restated is False

    # Mid-January only January had started; it was known then as open, not yet judged by its end.
    early = audit.compliance_at(AUDITOR, aid, at(f"2026-01-20T00:00{AMS}"))
    assert {(r.objective_id, at(r.window_start)) for r in early} == {("availability", JAN), ("service-level", JAN)}
    jan = next(r for r in early if r.objective_id == "availability")
    assert jan.as_known is not None and jan.as_known["closed"] is False
    assert "closed" in jan.differences and jan.restated is True
    # Before the agreement's first window: nothing had started.
    assert audit.compliance_at(AUDITOR, aid, JAN - timedelta(days=1)) == []


def test_compliance_at_rejections(world: World) -> None:
    suite, audit = world.suite, world.audit
    aid = two_months(suite)
    with pytest.raises(NotFoundError, match="agreement 'nope'"):
        audit.compliance_at(AUDITOR, "nope", MAR)
    with pytest.raises(NotFoundError, match="has no objective 'uptime'"):
        audit.compliance_at(AUDITOR, aid, MAR, "uptime")
    with pytest.raises(NotAPartyError):
        audit.compliance_at(STRANGER, aid, MAR)
