"""Metrics judging real agreements, on both stores: the agreements application's own events
feed the metrics application (as its consumer would), signals arrive, and the clock moves —
windows close, breaches are found as soon as they are certain, an amendment effective
mid-month leaves the current window judged by the old version and the next by the new, a
late outage restates a closed month, and recomputation from the raw record matches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from accord.metrics.v1 import signals_pb2 as pb
from accord_agreements.application import Agreements
from accord_agreements.domain import Actor
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms, with_target
from accord_kit.clock import FakeClock
from accord_kit.context import Principal
from accord_metrics.application import Metrics
from accord_metrics.audit import MetricsAudit
from accord_metrics.domain import AT_RISK, BREACHED, MET
from accord_metrics.formulas import contact
from tests.suite import AMS, at, feed, outage, ts

PROVIDER = Actor("alice", "department", IT)
CUSTOMER = Actor("bob", "department", FINANCE)
COLLECTOR = Principal("collector", "service")


def calls(prefix: str, day: str, answered_fast: int, answered_slow: int, abandoned: int) -> list[pb.Signal]:
    out = []
    base = at(day)
    for i in range(answered_fast + answered_slow + abandoned):
        entered = base + timedelta(minutes=i)
        if i < answered_fast:
            c = pb.Call(entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=10)), talk_seconds="60")
        elif i < answered_fast + answered_slow:
            c = pb.Call(entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=45)), talk_seconds="60")
        else:
            c = pb.Call(entered_queue=ts(entered), abandoned_at=ts(entered + timedelta(seconds=30)))
        out.append(pb.Signal(signal_id=f"{prefix}{i}", service_id=EMAIL, call=c))
    return out


def accepted(ag: Agreements, terms: dict[str, Any] | None = None) -> str:
    """Register IT, Finance and the e-mail service; draft, propose and accept the terms
    (the sample SLA by default); return the agreement id."""
    for dept in (IT, FINANCE):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    aid = str(ag.draft(PROVIDER, terms or sla_terms()).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    return aid


class World:
    def __init__(self, agreements: Agreements, metrics: Metrics, clock: FakeClock) -> None:
        self.agreements, self.metrics, self.clock = agreements, metrics, clock

    def sync(self) -> None:
        """What the metrics consumer does: apply every new agreements event, exactly once."""
        feed("agreements", self.agreements, self.metrics)

    def window(self, aid: str, objective: str, start: str) -> dict[str, object]:
        for w in self.metrics.window_evaluations(aid):
            if w.objective_id == objective and at(w.window_start) == at(start):
                return dict(w.latest) | {"_agg": w}
        raise AssertionError(f"no window {objective} {start}")


@pytest.fixture
def world(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[World]:
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    agreements = Agreements(make_store_env("agreements"), clock=clock)
    metrics = Metrics(make_store_env("metrics"), clock=clock)
    yield World(agreements, metrics, clock)
    agreements.close()
    metrics.close()


def test_a_quarter_of_an_email_sla_judged_window_by_window(world: World) -> None:
    ag, m, clock = world.agreements, world.metrics, world.clock
    # An IT → Finance e-mail SLA, in force from 1 January: availability ≥ 99.9 % a month,
    # 80 % of calls answered within 20 s a month.
    terms = sla_terms()
    aid = accepted(ag, terms)
    world.sync()
    assert m.provider_of(EMAIL) == IT

    # January: a 30-minute outage and 10 calls, 9 answered within 20 s.
    m.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 30), *calls("jan", f"2026-01-15T09:00{AMS}", 9, 1, 0)])
    # February so far: a 60-minute outage (28-day month: 40,320 min; budget 0.1 % = 40.32 min).
    clock.set(at(f"2026-02-10T12:00{AMS}"))
    m.record(COLLECTOR, [outage("o2", f"2026-02-03T08:00{AMS}", 60)])
    m.evaluate()
    jan = world.window(aid, "availability", f"2026-01-01T00:00{AMS}")
    # The agreement starts at 00:00 UTC, an hour into January in Amsterdam, so January is
    # measured over 44,640 − 60 = 44,580 min: (44,580 − 30) ÷ 44,580 = 99.93271 % ≥ 99.9.
    assert jan["status"] == MET and jan["closed"] is True
    assert Decimal(str(jan["value"])).quantize(Decimal("0.0001")) == Decimal("99.9327")
    feb = world.window(aid, "availability", f"2026-02-01T00:00{AMS}")
    # (40,320 − 60) ÷ 40,320 = 99.851 % < 99.9: certain before February ends.
    assert feb["status"] == BREACHED and feb["closed"] is False
    feb_agg = feb["_agg"]
    assert feb_agg.breaches == [""]  # type: ignore[attr-defined]
    assert feb_agg.warnings == ["50", "75", "90"]  # 60 ÷ 40.32 = 148.8 % of the budget used  # type: ignore[attr-defined]
    sl_jan = world.window(aid, "service-level", f"2026-01-01T00:00{AMS}")
    assert sl_jan["status"] == MET and Decimal(str(sl_jan["value"])) == Decimal(90)
    sl_feb = world.window(aid, "service-level", f"2026-02-01T00:00{AMS}")
    assert sl_feb["status"] != BREACHED  # no calls yet: NO_DATA while open

    # Mid-February the parties relax availability to 99.0 % from 20 February.
    _, am = ag.propose_amendment(
        CUSTOMER, aid, with_target(terms, "availability", "99.0"), at(f"2026-02-20T00:00{AMS}"), "relax"
    )
    ag.accept_amendment(PROVIDER, aid, am)
    world.sync()
    clock.set(at(f"2026-03-05T12:00{AMS}"))
    m.record(COLLECTOR, [outage("o3", f"2026-03-02T08:00{AMS}", 60), *calls("feb", f"2026-02-20T09:00{AMS}", 5, 5, 0)])
    m.evaluate()
    feb = world.window(aid, "availability", f"2026-02-01T00:00{AMS}")
    assert feb["status"] == BREACHED and feb["closed"] is True and feb["version"] == 1  # judged by the old terms
    march = world.window(aid, "availability", f"2026-03-01T00:00{AMS}")
    # (44,580 − 60) ÷ 44,580 (March loses an hour to DST) = 99.865 % ≥ 99.0 under version 2.
    assert march["version"] == 2 and march["status"] == MET and march["target"] == "99.0"
    sl_feb = world.window(aid, "service-level", f"2026-02-01T00:00{AMS}")
    assert sl_feb["status"] == BREACHED and Decimal(str(sl_feb["value"])) == Decimal(50)

    # A late outage report for January (50 minutes) restates the closed month.
    m.record(COLLECTOR, [outage("o-late", f"2026-01-20T02:00{AMS}", 50)])
    m.evaluate()
    jan_agg = world.window(aid, "availability", f"2026-01-01T00:00{AMS}")["_agg"]
    assert jan_agg.closed["status"] == MET  # what was known at closing is kept  # type: ignore[attr-defined]
    restated = jan_agg.restatements[-1]  # type: ignore[attr-defined]
    assert restated["old"]["status"] == MET and restated["new"]["status"] == BREACHED
    # (44,580 − 80) ÷ 44,580 = 99.82055 %
    assert Decimal(restated["new"]["value"]).quantize(Decimal("0.0001")) == Decimal("99.8205")
    assert jan_agg.breaches == [""]  # type: ignore[attr-defined]

    # Auditors recompute any window from the raw record: it matches what was recorded.
    for objective, start in (
        ("availability", "2026-01-01"),
        ("availability", "2026-02-01"),
        ("service-level", "2026-02-01"),
    ):
        w = world.window(aid, objective, f"{start}T00:00{AMS}")["_agg"]
        check = m.recompute(aid, objective, w.window_start)  # type: ignore[attr-defined]
        assert check["matches"], (objective, start, check)

    # Evaluating again without new signals changes nothing.
    head = m.head_position()
    m.evaluate()
    assert m.head_position() == head


def test_at_risk_while_open_for_ratios_that_can_still_recover(world: World) -> None:
    ag, m, clock = world.agreements, world.metrics, world.clock
    aid = accepted(ag)
    world.sync()
    m.record(COLLECTOR, calls("x", f"2026-01-12T09:00{AMS}", 1, 3, 0))
    clock.set(at(f"2026-01-20T00:00{AMS}"))
    m.evaluate()
    sl = world.window(aid, "service-level", f"2026-01-01T00:00{AMS}")
    assert sl["status"] == AT_RISK and sl["closed"] is False


def test_an_outage_under_way_raises_burn_rate_alerts_and_budget_warnings(world: World) -> None:
    ag, m, clock = world.agreements, world.metrics, world.clock
    aid = accepted(ag)
    world.sync()
    # Down since 11:00 and still down at 11:20: every look-back window of the fast pairs
    # (1 h and 5 min, scaled to January's 31 days) sees far more than 14.4 × the allowed rate.
    clock.set(at(f"2026-01-20T11:20{AMS}"))
    ongoing = pb.Signal(signal_id="now", service_id=EMAIL, outage=pb.Outage(start=ts(at(f"2026-01-20T11:00{AMS}"))))
    m.record(COLLECTOR, [ongoing])
    m.evaluate()
    w = world.window(aid, "availability", f"2026-01-01T00:00{AMS}")["_agg"]
    assert any(name.startswith("14.4x") for name in w.burn_alerts)  # type: ignore[attr-defined]
    # 20 minutes of a 44.58-minute budget: the 50 % warning not yet; then an hour later, all three.
    assert w.warnings == []  # type: ignore[attr-defined]
    clock.set(at(f"2026-01-20T12:30{AMS}"))
    m.evaluate()
    w = world.window(aid, "availability", f"2026-01-01T00:00{AMS}")["_agg"]
    assert w.warnings == ["50", "75", "90"]  # type: ignore[attr-defined]
    assert w.breaches == [""]  # type: ignore[attr-defined]


def _burn_events(m: Metrics) -> list[tuple[str, Any]]:
    """The burn-rate alerts fired and resolved, as published (type name, payload)."""
    from accord.metrics.v1 import events_pb2 as ev

    out: list[tuple[str, Any]] = []
    for env in m.read_events(0, 5000)[0]:
        name = env.type.rsplit(".", 1)[-1]
        if name in ("BurnRateAlert", "BurnRateAlertResolved"):
            msg = getattr(ev, name)()
            env.payload.Unpack(msg)
            out.append((name, msg))
    return out


def test_a_burn_rate_alert_is_resolved_when_its_condition_no_longer_holds(world: World) -> None:
    ag, m, clock = world.agreements, world.metrics, world.clock
    aid = accepted(ag)
    world.sync()
    # A ten-minute outage, seen two minutes after it ended: both fast pairs' windows see it.
    clock.set(at(f"2026-01-20T11:12{AMS}"))
    m.record(COLLECTOR, [outage("o1", f"2026-01-20T11:00{AMS}", 10)])
    m.evaluate()
    fired = [(n, e.name) for n, e in _burn_events(m)]
    fast = next(name for kind, name in fired if name.startswith("14.4x"))
    assert all(kind == "BurnRateAlert" for kind, _ in fired)
    # Twenty minutes on the short window (5 min 10 s in January) holds no outage: the 14.4x
    # alert is resolved, with the rates that cleared it; evaluating again resolves nothing more.
    clock.set(at(f"2026-01-20T11:30{AMS}"))
    m.evaluate()
    resolved = [e for kind, e in _burn_events(m) if kind == "BurnRateAlertResolved"]
    assert [e.name for e in resolved if e.name == fast] == [fast]
    r = next(e for e in resolved if e.name == fast)
    assert r.reason == "cleared" and Decimal(r.short_rate) <= Decimal("14.4") and r.agreement_id == aid
    w = world.window(aid, "availability", f"2026-01-01T00:00{AMS}")["_agg"]
    assert fast not in w.burn_firing  # type: ignore[attr-defined]
    head = m.head_position()
    m.evaluate()
    assert m.head_position() == head
    # A new outage fires it again in the same window.
    clock.set(at(f"2026-01-25T09:20{AMS}"))
    m.record(
        COLLECTOR,
        [pb.Signal(signal_id="o2", service_id=EMAIL, outage=pb.Outage(start=ts(at(f"2026-01-25T09:00{AMS}"))))],
    )
    m.evaluate()
    assert [n for n, e in _burn_events(m) if e.name == fast] == [
        "BurnRateAlert",
        "BurnRateAlertResolved",
        "BurnRateAlert",
    ]
    # Still down when the month closes: every alert still firing is resolved with the window.
    clock.set(at(f"2026-02-01T00:10{AMS}"))
    m.evaluate()
    w = world.window(aid, "availability", f"2026-01-01T00:00{AMS}")["_agg"]
    assert w.burn_firing == []  # type: ignore[attr-defined]
    last = [e for kind, e in _burn_events(m) if kind == "BurnRateAlertResolved" and e.name == fast][-1]
    assert last.reason == "window_closed" and last.long_rate == ""


def test_a_child_agreement_is_judged_by_its_effective_terms(world: World) -> None:
    """A customer-level agreement inherits the corporate agreement's service-level objective."""
    ag, m, clock = world.agreements, world.metrics, world.clock
    for dept in (IT, FINANCE):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    corporate = sla_terms(level="SCOPE_LEVEL_CORPORATE", title="Corporate")
    corporate["objectives"][1]["target"] = "70"
    parent = str(ag.draft(PROVIDER, corporate).id)
    ag.propose(PROVIDER, parent)
    ag.accept(CUSTOMER, parent)
    child_terms = sla_terms(level="SCOPE_LEVEL_CUSTOMER", parent_agreement_id=parent)
    child_terms["objectives"] = [child_terms["objectives"][0]]  # availability only; service level inherited
    child = str(ag.draft(PROVIDER, child_terms).id)
    ag.propose(PROVIDER, child)
    ag.accept(CUSTOMER, child)
    world.sync()
    m.record(COLLECTOR, calls("c", f"2026-01-12T09:00{AMS}", 3, 1, 0))  # 75 %
    clock.set(at(f"2026-02-02T00:00{AMS}"))
    m.evaluate()
    inherited = world.window(child, "service-level", f"2026-01-01T00:00{AMS}")
    assert inherited["target"] == "70" and inherited["status"] == MET


def test_an_outage_reported_under_way_is_completed_by_its_end(world: World) -> None:
    """The producer reports an outage when it starts and sends the same signal id again with
    its end: the end completes it (any other re-send is a duplicate)."""
    ag, m, clock = world.agreements, world.metrics, world.clock
    aid = accepted(ag)
    world.sync()
    start = at(f"2026-01-20T11:00{AMS}")
    began = pb.Signal(signal_id="inc-7", service_id=EMAIL, outage=pb.Outage(start=ts(start)))
    clock.set(at(f"2026-01-20T11:10{AMS}"))
    assert m.record(COLLECTOR, [began]).accepted == 1
    assert m.record(COLLECTOR, [began]).duplicates == 1
    m.evaluate()
    ended = pb.Signal(
        signal_id="inc-7", service_id=EMAIL, outage=pb.Outage(start=ts(start), end=ts(start + timedelta(minutes=30)))
    )
    clock.set(at(f"2026-01-20T13:00{AMS}"))
    assert m.record(COLLECTOR, [ended]).accepted == 1
    assert m.record(COLLECTOR, [ended]).duplicates == 1
    clock.set(at(f"2026-02-02T00:00{AMS}"))
    m.evaluate()
    jan = world.window(aid, "availability", f"2026-01-01T00:00{AMS}")
    assert jan["detail"]["downtime_seconds"] == "1800"  # type: ignore[index]
    assert m.recompute(aid, "availability", str(jan["window_start"]))["matches"]


def test_a_late_lead_handed_off_in_a_closed_window_restates_its_leads_needed(world: World) -> None:
    """Leads needed (docs/domain.md §4 "Marketing ↔ sales"): the value is the leads handed off in
    the window. A lead handed off on 12 January but reported only on the 14th, after that day's
    window closed with one lead, restates the window with two: the evaluation's input digest
    covers the handed-off leads, as it covers every formula's inputs."""
    objective = {
        "objective_id": "leads", "name": "Leads handed off", "metric": "METRIC_LEADS_NEEDED",
        "parameters": {"sales_target": "10000", "marketing_revenue_share": "0.4", "average_deal_size": "1000",
                       "close_rate": "0.5"},
        "comparator": "COMPARATOR_AT_LEAST", "target": "0", "window": {"kind": "WINDOW_KIND_DAY"},
        "calendar_id": "24x7", "no_data": "NO_DATA_POLICY_NOT_COUNTED",
    }  # fmt: skip
    aid = accepted(world.agreements, sla_terms(objectives=[objective]))
    world.sync()

    def lead(sid: str, handed_off: str) -> pb.Signal:
        handed = at(handed_off)
        return pb.Signal(
            signal_id=sid, service_id=EMAIL,
            lead=pb.Lead(created=ts(handed - timedelta(hours=1)), handed_off=ts(handed)),
        )  # fmt: skip

    world.metrics.record(COLLECTOR, [lead("l1", f"2026-01-12T10:00{AMS}")])
    world.clock.set(at(f"2026-01-13T01:00{AMS}"))
    world.metrics.evaluate()
    day = f"2026-01-12T00:00{AMS}"
    assert world.window(aid, "leads", day)["closed"] is True
    assert world.window(aid, "leads", day)["value"] == "1"

    world.clock.set(at(f"2026-01-14T09:00{AMS}"))
    world.metrics.record(COLLECTOR, [lead("l2", f"2026-01-12T15:00{AMS}")])
    world.metrics.evaluate()
    restated = world.window(aid, "leads", day)
    assert restated["value"] == "2"
    assert len(restated["_agg"].restatements) == 1  # type: ignore[attr-defined]


def test_a_window_cut_by_the_agreements_end_is_judged_as_of_that_end(world: World) -> None:
    """A monthly follow-up-depth objective (attempts in the 14 days after hand-off) on a term
    that ends on 14 January: January's window closes at the end, and is judged as of it —
    whenever the pass runs, and the same again by re-derivation. A lead handed off on 2 January
    still had 14 days to go at the end: pending, so the window has no data. Judged as of a pass
    on the 20th instead, the lead's 14 days would be over and count, and the window's value
    would depend on when the pass ran."""
    objective = {
        "objective_id": "depth", "name": "Follow-up depth", "metric": "METRIC_FOLLOW_UP_DEPTH",
        "parameters": {"window_days": "14"}, "comparator": "COMPARATOR_AT_LEAST", "target": "3",
        "window": {"kind": "WINDOW_KIND_MONTH"}, "calendar_id": "24x7", "no_data": "NO_DATA_POLICY_NOT_COUNTED",
    }  # fmt: skip
    terms = sla_terms(objectives=[objective])
    end = at(f"2026-01-14T00:00{AMS}")
    terms["term"]["effective_to"] = end.isoformat().replace("+00:00", "Z")
    world.clock.set(at(f"2026-01-01T09:00{AMS}"))
    aid = accepted(world.agreements, terms)
    world.sync()
    handed = at(f"2026-01-02T10:00{AMS}")
    lead = pb.Lead(
        created=ts(handed - timedelta(hours=1)), handed_off=ts(handed),
        follow_ups=[ts(handed + timedelta(days=d)) for d in (1, 3, 5)],
    )  # fmt: skip
    world.metrics.record(COLLECTOR, [pb.Signal(signal_id="l1", service_id=EMAIL, lead=lead)])
    world.clock.set(at(f"2026-01-20T09:00{AMS}"))
    world.metrics.evaluate()
    january = world.window(aid, "depth", f"2026-01-01T00:00{AMS}")
    assert january["closed"] is True
    assert at(january["parameters"]["as_of"]) == end  # type: ignore[index]
    assert january["value"] == ""
    rederived = MetricsAudit(world.metrics).rederive(aid)
    assert rederived.checked == 1 and rederived.mismatches == []


def test_leads_needed_of_a_window_the_agreements_start_cuts_is_its_days_share(world: World) -> None:
    """Leads needed (docs/domain.md §4 "Marketing ↔ sales", pro-rated to the days of the period):
    an agreement in force from 10 January, judged by calendar month, covers 22 of January's 31
    days, so January's closed window needs 22/31 of the month's 31 leads — 22, met by the 22
    leads handed off — not the whole month's 31 (`marketing.leads_needed` v2, breached). It
    re-derives as recorded."""
    objective = {
        "objective_id": "leads", "name": "Leads handed off", "metric": "METRIC_LEADS_NEEDED",
        "parameters": {"sales_target": "15500", "marketing_revenue_share": "0.4", "average_deal_size": "1000",
                       "close_rate": "0.2"},
        "comparator": "COMPARATOR_AT_LEAST", "target": "0", "window": {"kind": "WINDOW_KIND_MONTH"},
        "calendar_id": "24x7", "no_data": "NO_DATA_POLICY_NOT_COUNTED",
    }  # fmt: skip
    terms = sla_terms(objectives=[objective])
    terms["term"]["effective_from"] = at(f"2026-01-10T00:00{AMS}").isoformat().replace("+00:00", "Z")
    aid = accepted(world.agreements, terms)
    world.sync()
    handed = [at(f"2026-01-{day:02d}T10:00{AMS}") for day in range(10, 32)]
    leads = [pb.Lead(created=ts(h - timedelta(hours=1)), handed_off=ts(h)) for h in handed]
    signals = [pb.Signal(signal_id=f"l{i}", service_id=EMAIL, lead=x) for i, x in enumerate(leads)]
    world.metrics.record(COLLECTOR, signals)
    world.clock.set(at(f"2026-02-01T01:00{AMS}"))
    world.metrics.evaluate()
    january = world.window(aid, "leads", f"2026-01-01T00:00{AMS}")
    assert january["closed"] is True and january["value"] == "22"
    assert Decimal(str(january["target"])) == 22 and january["status"] == MET
    assert january["formula_version"] == 3
    detail = january["detail"]
    assert detail["days_in_force"] == "22" and detail["days_in_period"] == "31"  # type: ignore[index]
    assert Decimal(detail["leads_needed_period"]) == 31  # type: ignore[index]
    rederived = MetricsAudit(world.metrics).rederive(aid)
    assert rederived.checked == 1 and rederived.mismatches == []


def _depth_objective(window_kind: str) -> dict[str, Any]:
    return {
        "objective_id": "depth", "name": "Follow-up depth", "metric": "METRIC_FOLLOW_UP_DEPTH",
        "parameters": {"window_days": "14"}, "comparator": "COMPARATOR_AT_LEAST", "target": "3",
        "window": {"kind": window_kind}, "calendar_id": "24x7", "no_data": "NO_DATA_POLICY_NOT_COUNTED",
    }  # fmt: skip


def test_follow_up_depth_over_14_days_on_day_windows_counts_a_lead_on_the_day_its_days_pass(world: World) -> None:
    """Follow-up depth (`sales.follow_up_depth` v2) judges each lead once, in the window in which
    its outcome became known: when its 14 days after hand-off have passed. On DAY windows a lead
    handed off on 12 January at 10:00 counts on the 26th — pending that day until 10:00 (an
    attempt then would still count), counted once that instant is past, by time alone. v1 judged
    each closed day as of its end, so no lead's 14 days ever passed inside the day it was handed
    off in: every day NO_DATA. A follow-up after the 14 days changes no outcome: the 26th is
    judged again and not restated."""
    aid = accepted(world.agreements, sla_terms(objectives=[_depth_objective("WINDOW_KIND_DAY")]))
    world.sync()
    handed = at(f"2026-01-12T10:00{AMS}")

    def lead(*days: int) -> pb.Signal:
        follow_ups = [ts(handed + timedelta(days=d)) for d in days]
        body = pb.Lead(created=ts(handed - timedelta(hours=1)), handed_off=ts(handed), follow_ups=follow_ups)
        return pb.Signal(signal_id="l1", service_id=EMAIL, lead=body)

    world.clock.set(at(f"2026-01-26T09:00{AMS}"))
    world.metrics.record(COLLECTOR, [lead(1, 3, 13)])
    world.metrics.evaluate()
    assert world.window(aid, "depth", f"2026-01-12T00:00{AMS}")["value"] == ""  # closed: nothing decided that day
    day = f"2026-01-26T00:00{AMS}"
    running = world.window(aid, "depth", day)
    assert running["closed"] is False and running["value"] == ""
    assert running["detail"]["pending"] == "1"  # type: ignore[index]

    world.clock.set(at(f"2026-01-26T10:00:01{AMS}"))
    world.metrics.evaluate()  # nothing recorded: the lead's 14 days passed
    running = world.window(aid, "depth", day)
    assert running["closed"] is False and Decimal(str(running["value"])) == 3 and running["status"] == MET

    world.clock.set(at(f"2026-01-28T09:00{AMS}"))
    world.metrics.record(COLLECTOR, [lead(1, 3, 13, 15)])  # an attempt after its 14 days: counts nowhere
    world.metrics.evaluate()
    closed = world.window(aid, "depth", day)
    assert closed["closed"] is True and Decimal(str(closed["value"])) == 3 and closed["status"] == MET
    assert closed["formula_version"] == 2
    assert closed["_agg"].restatements == []  # type: ignore[attr-defined]
    rederived = MetricsAudit(world.metrics).rederive(aid)
    assert rederived.checked == 27 and rederived.mismatches == []


def _fcr_objective() -> dict[str, Any]:
    return {
        "objective_id": "fcr", "name": "First-contact resolution", "metric": "METRIC_FIRST_CONTACT_RESOLUTION",
        "parameters": {"method": "REPEAT_CONTACT", "repeat_window_days": "7"}, "comparator": "COMPARATOR_AT_LEAST",
        "target": "70", "window": {"kind": "WINDOW_KIND_MONTH"}, "calendar_id": "24x7",
        "no_data": "NO_DATA_POLICY_NOT_COUNTED",
    }  # fmt: skip


def _contact(sid: str, customer: str, entered: str) -> pb.Signal:
    t = at(entered)
    call = pb.Call(
        entered_queue=ts(t), answered_at=ts(t + timedelta(seconds=20)), talk_seconds="120",
        customer_id=customer, reason="billing",
    )  # fmt: skip
    return pb.Signal(signal_id=sid, service_id=EMAIL, call=call)


# January: C on the 5th (no repeat: resolved, known on the 12th), B on the 10th and again on the
# 12th (not resolved, known on the 12th), A on the 31st at 15:00 (no repeat: known on 7 February).
JANUARY_CALLS = [
    ("c1", "C", f"2026-01-05T10:00{AMS}"),
    ("b1", "B", f"2026-01-10T10:00{AMS}"),
    ("b2", "B", f"2026-01-12T09:00{AMS}"),
    ("a1", "A", f"2026-01-31T15:00{AMS}"),
]


def test_an_fcr_first_contact_on_a_months_last_day_counts_in_the_next_months_window(world: World) -> None:
    """First-contact resolution by repeat contact (`contact.fcr` v2) judges each first contact
    once, in the window in which its outcome became known: at its first repeat (not resolved) or
    when its 7-day repeat window has passed (resolved). A's call on 31 January without a repeat
    is known resolved on 7 February at 15:00, and counts in February — pending there until then,
    counted by time alone after. v1 judged January as of its end (A pending) and February
    counted only the first contacts that arrived in February: A counted nowhere. A late call
    that decides nothing in January re-judges it without restating it."""
    aid = accepted(world.agreements, sla_terms(objectives=[_fcr_objective()]))
    world.sync()
    world.clock.set(at(f"2026-02-01T00:30{AMS}"))
    world.metrics.record(COLLECTOR, [_contact(*c) for c in JANUARY_CALLS])
    world.metrics.evaluate()
    jan, feb = f"2026-01-01T00:00{AMS}", f"2026-02-01T00:00{AMS}"
    january = world.window(aid, "fcr", jan)
    assert january["closed"] is True and Decimal(str(january["value"])) == 50 and january["formula_version"] == 5
    assert january["detail"]["first_contacts"] == "2"  # type: ignore[index]

    world.clock.set(at(f"2026-02-07T14:00{AMS}"))
    world.metrics.evaluate()
    february = world.window(aid, "fcr", feb)
    assert february["value"] == "" and february["detail"]["pending"] == "1"  # type: ignore[index]
    world.clock.set(at(f"2026-02-07T15:00:01{AMS}"))
    world.metrics.evaluate()  # nothing recorded: A's repeat window passed
    assert Decimal(str(world.window(aid, "fcr", feb)["value"])) == 100

    # E's first contact on 30 January (no repeat) is known on 6 February: January is judged
    # again, its outcomes are unchanged, so it is not restated; February counts E (its running
    # evaluation is recorded again only when its outcome changes: still 100 %).
    world.clock.set(at(f"2026-02-08T09:00{AMS}"))
    world.metrics.record(COLLECTOR, [_contact("e1", "E", f"2026-01-30T11:00{AMS}")])
    world.metrics.evaluate()
    assert world.window(aid, "fcr", jan)["_agg"].restatements == []  # type: ignore[attr-defined]

    world.clock.set(at(f"2026-03-01T01:00{AMS}"))
    world.metrics.evaluate()
    february = world.window(aid, "fcr", feb)
    assert february["closed"] is True and Decimal(str(february["value"])) == 100 and february["status"] == MET
    assert february["detail"]["first_contacts"] == "2"  # type: ignore[index]
    rederived = MetricsAudit(world.metrics).rederive(aid)
    assert rederived.checked == 2 and rederived.mismatches == []


def test_a_window_closed_by_fcr_v1_is_re_derived_and_restated_by_v1(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window recorded with `contact.fcr` v1 (before v2 existed) keeps v1: re-derivation and
    recomputation check it by v1 and find it as recorded, and a late repeat restates it by v1;
    the next window, opened since, is judged by v2. January (v1): C ✓ and B ✗ arrived in it, A
    (31 January) pending at its end, Z (28 December, resolved on 4 January) arrived before it →
    50 %; judged by v2 it would be 66.67 % (Z counted, decided in January)."""
    aid = accepted(world.agreements, sla_terms(objectives=[_fcr_objective()]))
    world.sync()
    world.clock.set(at(f"2026-02-01T00:30{AMS}"))
    signals = [_contact(*c) for c in JANUARY_CALLS] + [_contact("z1", "Z", f"2025-12-28T10:00{AMS}")]
    world.metrics.record(COLLECTOR, signals)
    with monkeypatch.context() as before_v2:
        before_v2.setattr(contact, "FCR_VERSION", 1)
        world.metrics.evaluate()
    jan, feb = f"2026-01-01T00:00{AMS}", f"2026-02-01T00:00{AMS}"
    january = world.window(aid, "fcr", jan)
    assert january["closed"] is True and january["formula_version"] == 1 and Decimal(str(january["value"])) == 50
    assert january["detail"]["pending"] == "1"  # type: ignore[index]
    rederived = MetricsAudit(world.metrics).rederive(aid)
    assert rederived.checked == 1 and rederived.mismatches == []
    assert world.metrics.recompute(aid, "fcr", jan)["matches"]

    # A repeat of C on 8 January, reported late: January restated by v1 (C not resolved → 0 %).
    world.clock.set(at(f"2026-02-02T09:00{AMS}"))
    world.metrics.record(COLLECTOR, [_contact("c2", "C", f"2026-01-08T10:00{AMS}")])
    world.metrics.evaluate()
    january = world.window(aid, "fcr", jan)
    assert january["formula_version"] == 1 and Decimal(str(january["value"])) == 0
    assert len(january["_agg"].restatements) == 1  # type: ignore[attr-defined]

    world.clock.set(at(f"2026-03-01T01:00{AMS}"))
    world.metrics.evaluate()
    february = world.window(aid, "fcr", feb)
    assert february["formula_version"] == 5 and Decimal(str(february["value"])) == 100  # A, known on 7 February
    rederived = MetricsAudit(world.metrics).rederive(aid)
    assert rederived.checked == 2 and rederived.mismatches == []
