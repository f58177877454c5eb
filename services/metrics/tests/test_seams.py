"""Where signals, agreements and evaluation meet, on both stores: corrections of recorded
signals (an outage's corrected end, a ticket's lifecycle) restate the windows they change
and show in the agreement's history; an evaluation that fails is isolated to its agreement's
objective; no window after an agreement's end; suspended time excluded; probes measured;
FCR by repeat contact needs the customer; an agreement naming no service is measured on
every service of its provider, one registered later included. Agreements are fed to the metrics application as
its consumer would, as events of the agreements stream built here (so that terms the
agreements service may refuse still reach metrics as they once did)."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.agreements.v1 import terms_pb2
from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metrics_events
from accord.metrics.v1 import signals_pb2 as pb
from accord_agreements.samples import EMAIL, IT, NETWORK, sla_terms
from accord_kit.audit import agreement_history
from accord_kit.clock import FakeClock
from accord_kit.context import Principal
from accord_kit.envelope import unpack
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_kit.testing.streams import eventually
from accord_metrics.application import Metrics
from accord_metrics.audit import MetricsAudit
from accord_metrics.bootstrap import build
from accord_metrics.domain import BREACHED, MET, NO_DATA
from accord_metrics.settings import load
from accord_metrics.signals import InvalidSignalError
from tests.suite import AMS, at, calls, outage, ts

EVALUATION_HEALTH = "accord.evaluation"  # the health service naming evaluation failures
COLLECTOR = Principal("collector", "service")
PROVIDER = Principal("ops", "department", IT)


class Upstream:
    """The agreements stream as the metrics consumer applies it: one event at a time, in order."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics, self.position = metrics, 0

    def send(self, msg: Message, occurred_at: datetime | None = None) -> None:
        self.position += 1
        env = events_pb2.EventEnvelope(
            event_id=f"agreements:x:{self.position}",
            source_service="agreements",
            position=self.position,
            previous_position=self.position - 1,
            type=msg.DESCRIPTOR.full_name,
        )
        if occurred_at is not None:
            env.occurred_at.CopyFrom(ts(occurred_at))
        env.payload.Pack(msg)
        assert self.metrics.apply_upstream("agreements", env)

    def service(self) -> None:
        self.send(agreement_events.ServiceRegistered(service_id=EMAIL, name="E-mail", provider_department_id=IT))

    def agreement(self, aid: str, terms: dict[str, Any], effective_from: str = "2026-01-01T00:00:00Z") -> str:
        message = json_format.ParseDict(terms, terms_pb2.AgreementTerms())
        self.send(agreement_events.AgreementDrafted(agreement_id=aid, terms=message))
        self.send(
            agreement_events.AgreementAccepted(
                agreement_id=aid, version=1, effective_from=ts(at(effective_from)), terms=message
            )
        )
        return aid


def objective(oid: str, metric: str, target: str, **extra: Any) -> dict[str, Any]:
    return {
        "objective_id": oid,
        "name": oid,
        "metric": metric,
        "comparator": "COMPARATOR_AT_LEAST",
        "target": target,
        "window": {"kind": "WINDOW_KIND_MONTH"},
        "calendar_id": "24x7",
        **extra,
    }


def terms_with(*objectives: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    terms = sla_terms(**overrides)
    terms["objectives"] = list(objectives)
    return terms


class World:
    def __init__(self, metrics: Metrics, clock: FakeClock) -> None:
        self.metrics, self.clock = metrics, clock
        self.upstream = Upstream(metrics)
        self.upstream.service()

    def window(self, aid: str, oid: str, start: str) -> Any:
        for w in self.metrics.window_evaluations(aid):
            if w.objective_id == oid and at(w.window_start) == at(start):
                return w
        raise AssertionError(f"no window {oid} {start}")

    def starts(self, aid: str, oid: str) -> list[datetime]:
        return [at(w.window_start) for w in self.metrics.window_evaluations(aid) if w.objective_id == oid]

    def rederived_mismatches(self, aid: str) -> list[Any]:
        return MetricsAudit(self.metrics).rederive(aid).mismatches


@pytest.fixture
def world(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[World]:
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    metrics = Metrics(make_store_env("metrics"), clock=clock)
    yield World(metrics, clock)
    metrics.close()


MINUTE = timedelta(minutes=1)
JAN, FEB = f"2026-01-01T00:00{AMS}", f"2026-02-01T00:00{AMS}"


def test_a_corrected_outage_end_restates_the_closed_window_and_shows_in_history(world: World) -> None:
    m = world.metrics
    aid = world.upstream.agreement("a-1", sla_terms())
    assert m.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 30)]).accepted == 1
    world.clock.set(at(f"2026-02-10T12:00{AMS}"))
    m.evaluate()
    jan = world.window(aid, "availability", JAN)
    assert jan.closed["status"] == MET  # 30 min of a 44.58-minute budget

    # The outage really lasted 90 minutes: the same id with the corrected end.
    first = m.signals(EMAIL)[0]
    fixed = outage("o1", f"2026-01-12T10:00{AMS}", 90)
    outcome = m.record(PROVIDER, [fixed])
    assert (outcome.accepted, outcome.duplicates, outcome.corrections) == (0, 0, 1)
    m.evaluate()
    jan = world.window(aid, "availability", JAN)
    assert jan.closed["status"] == MET  # what was known at closing is kept
    restated = jan.restatements[-1]
    assert restated["old"]["status"] == MET and restated["new"]["status"] == BREACHED
    # (44,580 − 90) ÷ 44,580 (January from 00:00 UTC, an hour in, in Amsterdam)
    assert Decimal(restated["new"]["value"]).quantize(Decimal("0.0001")) == Decimal("99.7981")
    assert jan.breaches == [""]

    # Visible in the agreement's history: who corrected what, replacing which content, and the restatement.
    history = list(agreement_history(m, aid))
    kinds = [h.envelope.type.rsplit(".", 1)[-1] for h in history]
    assert "SignalsCorrected" in kinds and "EvaluationRestated" in kinds
    assert kinds.index("SignalsCorrected") < kinds.index("EvaluationRestated")
    corrected = unpack(history[kinds.index("SignalsCorrected")].envelope, metrics_events.SignalsCorrected)
    assert corrected.actor == f"department:ops ({IT})"
    assert list(corrected.previous_digests) == [hashlib.sha256(first.SerializeToString(deterministic=True)).hexdigest()]
    assert list(corrected.changed) == ["outage.end"]
    assert list(corrected.batch.signals) == [fixed]
    assert list(corrected.agreement_ids) == [aid]

    # Re-derivation from the store uses the corrected content, and matches the record; so
    # does a what-if of the same terms.
    assert world.rederived_mismatches(aid) == []
    same = MetricsAudit(m).what_if(None, aid, terms=sla_terms(), periods=1)
    availability = next(o for o in same.objectives if o.objective_id == "availability")
    window = next(w for w in availability.windows if w.start == at(JAN))
    assert window.actual is not None and window.proposed is not None
    assert window.proposed["value"] == window.actual["value"] == restated["new"]["value"]


def test_ticket_lifecycle_updates_land(world: World) -> None:
    m = world.metrics
    response = objective(
        "response", "METRIC_TICKET_RESPONSE", "100", parameters={"priority": "P1", "target_minutes": "60"}
    )
    resolution = objective(
        "resolution", "METRIC_TICKET_RESOLUTION", "100", parameters={"priority": "P1", "target_minutes": "240"}
    )
    aid = world.upstream.agreement("a-t", terms_with(response, resolution))
    opened = at(f"2026-01-12T10:00{AMS}")

    def ticket(**lifecycle: Any) -> pb.Signal:
        body = pb.Ticket(priority="P1", opened=ts(opened), **lifecycle)
        return pb.Signal(signal_id="t1", service_id=EMAIL, ticket=body)

    h = timedelta(hours=1)
    steps = [
        {},
        {"first_response": ts(opened + h / 2)},
        {"first_response": ts(opened + h / 2), "paused": [pb.Pause(start=ts(opened + h))]},  # waiting on the customer
        {"first_response": ts(opened + h / 2), "paused": [pb.Pause(start=ts(opened + h), end=ts(opened + 2 * h))]},
        {"first_response": ts(opened + h / 2), "paused": [pb.Pause(start=ts(opened + h), end=ts(opened + 2 * h))],
         "resolved": ts(opened + 3 * h)},  # 3 h − 1 h paused: within 4 h
        {"first_response": ts(opened + h / 2), "paused": [pb.Pause(start=ts(opened + h), end=ts(opened + 2 * h))],
         "reopened": [ts(opened + 4 * h)]},
        {"first_response": ts(opened + h / 2), "paused": [pb.Pause(start=ts(opened + h), end=ts(opened + 2 * h))],
         "reopened": [ts(opened + 4 * h)], "resolved": ts(opened + 6 * h)},  # 6 h − 1 h: late
    ]  # fmt: skip
    outcomes = [m.record(COLLECTOR, [ticket(**step)]) for step in steps]
    assert [(o.accepted, o.corrections) for o in outcomes] == [(1, 0)] + [(0, 1)] * (len(steps) - 1)

    world.clock.set(at(f"2026-02-10T12:00{AMS}"))
    m.evaluate()
    jan_response = world.window(aid, "response", JAN).closed
    assert jan_response["status"] == MET and Decimal(jan_response["value"]) == 100
    jan_resolution = world.window(aid, "resolution", JAN)
    assert jan_resolution.closed["status"] == BREACHED and Decimal(jan_resolution.closed["value"]) == 0
    assert "t1" in jan_resolution.breaches
    assert world.rederived_mismatches(aid) == []


def test_an_identical_resend_stays_a_duplicate(world: World) -> None:
    m = world.metrics
    world.upstream.agreement("a-d", sla_terms())
    o1 = outage("o1", f"2026-01-05T10:00{AMS}", 30)
    assert m.record(COLLECTOR, [o1]).accepted == 1
    again = m.record(COLLECTOR, [o1])
    assert (again.accepted, again.duplicates, again.corrections) == (0, 1, 0)
    fixed = outage("o1", f"2026-01-05T10:00{AMS}", 45)
    assert m.record(COLLECTOR, [fixed]).corrections == 1
    # A retry of the first content after the correction is a retry, never a step back.
    late_retry = m.record(COLLECTOR, [o1, fixed])
    assert (late_retry.accepted, late_retry.duplicates, late_retry.corrections) == (0, 2, 0)
    assert [s.outage.end for s in m.signals(EMAIL)] == [o1.outage.end, fixed.outage.end]
    # A correction keeps the signal's kind; the same id twice in one batch with different content is refused.
    as_ticket = pb.Signal(signal_id="o1", service_id=EMAIL, ticket=pb.Ticket(priority="P1", opened=o1.outage.start))
    with pytest.raises(InvalidSignalError, match=r"signals\[0\]\.signal_id: 'o1' was recorded as a outage"):
        m.record(COLLECTOR, [as_ticket])
    with pytest.raises(InvalidSignalError, match="appears twice in the batch"):
        m.record(COLLECTOR, [outage("o2", f"2026-01-06T10:00{AMS}", 5), outage("o2", f"2026-01-06T10:00{AMS}", 6)])
    assert len(m.signals(EMAIL)) == 2  # nothing stored by a refused batch


def test_a_bad_parameter_on_one_agreement_leaves_the_others_evaluated(world: World) -> None:
    m = world.metrics
    bad = sla_terms()
    bad["objectives"][0]["parameters"] = {"maintenance_notice_hours": "48h"}
    huge = sla_terms()
    huge["objectives"][0]["parameters"] = {"min_outage_seconds": "1e14"}
    world.upstream.agreement("a-bad", bad)
    world.upstream.agreement("a-huge", huge)
    good = world.upstream.agreement("a-good", sla_terms())
    m.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 60)])
    world.clock.set(at(f"2026-02-10T12:00{AMS}"))
    m.evaluate()  # does not fail as a whole
    assert world.window(good, "availability", JAN).closed["status"] == BREACHED
    # The failing objectives are isolated: the agreements' other objectives are judged.
    assert world.window("a-bad", "service-level", JAN).closed
    assert {w.objective_id for w in m.window_evaluations("a-bad")} == {"service-level"}
    failures = m.evaluation_failures()
    assert set(failures) == {("a-bad", "availability"), ("a-huge", "availability")}
    assert "48h" in failures[("a-bad", "availability")]
    # Each later pass still judges the others (and still reports the failing ones).
    world.clock.set(at(f"2026-03-10T12:00{AMS}"))
    m.evaluate()
    assert world.window(good, "availability", FEB).closed["status"] == MET
    assert set(m.evaluation_failures()) == {("a-bad", "availability"), ("a-huge", "availability")}


def test_no_window_after_the_end(world: World) -> None:
    m = world.metrics
    term = {"effective_from": "2026-01-01T00:00:00Z", "effective_to": "2026-02-15T00:00:00Z", "notice_days": 30}
    aid = world.upstream.agreement("a-end", sla_terms(term=term))
    # An outage after the end counts for nothing.
    m.record(COLLECTOR, [outage("late", f"2026-02-20T10:00{AMS}", 600)])
    world.clock.set(at(f"2026-10-01T12:00{AMS}"))
    m.evaluate()
    assert world.starts(aid, "availability") == [at(JAN), at(FEB)]
    feb = world.window(aid, "availability", FEB).closed
    assert feb["status"] == MET and feb["value"] == "100"
    # Terminated early: no window after the termination either.
    term2 = {"effective_from": "2026-01-01T00:00:00Z", "notice_days": 30}
    other = world.upstream.agreement("a-term", sla_terms(term=term2))
    world.upstream.send(
        agreement_events.AgreementTerminated(agreement_id=other, effective_at=ts(at("2026-03-10T00:00:00Z")))
    )
    m.evaluate()
    assert world.starts(other, "availability") == [at(JAN), at(FEB), at(f"2026-03-01T00:00{AMS}")]


def test_suspended_time_is_excluded(world: World) -> None:
    m = world.metrics
    terms = sla_terms()
    terms["objectives"][0]["no_data"] = "NO_DATA_POLICY_COUNTS_AS_BREACHED"
    aid = world.upstream.agreement("a-s", terms)
    # Suspended from 20 January to 1 March (Amsterdam): February wholly.
    ev = agreement_events
    world.upstream.send(ev.AgreementSuspended(agreement_id=aid, reason="move"), at(f"2026-01-20T00:00{AMS}"))
    world.upstream.send(ev.AgreementResumed(agreement_id=aid, reason="back"), at(f"2026-03-01T00:00{AMS}"))
    m.record(
        COLLECTOR,
        [outage("o1", f"2026-01-25T10:00{AMS}", 600), outage("o2", f"2026-02-10T10:00{AMS}", 600),
         outage("o3", f"2026-01-12T10:00{AMS}", 20)],
    )  # fmt: skip
    world.clock.set(at(f"2026-03-10T12:00{AMS}"))
    m.evaluate()
    jan = world.window(aid, "availability", JAN).closed
    # January before the suspension: 1 January 01:00 → 20 January 00:00 = 27,300 min; 20 min down.
    assert jan["status"] == MET
    assert Decimal(jan["value"]).quantize(Decimal("0.0001")) == Decimal("99.9267")
    feb = world.window(aid, "availability", FEB).closed
    assert feb["status"] == NO_DATA and feb["detail"] == {"suspended": "true"}
    assert world.window(aid, "availability", FEB).breaches == []
    assert world.rederived_mismatches(aid) == []
    changes = [
        (c.change, c.at)
        for h in agreement_history(m, aid)
        if h.envelope.type.endswith(".AgreementViewChanged")
        for c in [unpack(h.envelope, metrics_events.AgreementViewChanged)]
        if c.change in ("Suspended", "Resumed")
    ]
    assert changes == [
        ("Suspended", at(f"2026-01-20T00:00{AMS}").isoformat()),
        ("Resumed", at(f"2026-03-01T00:00{AMS}").isoformat()),
    ]


def test_probes_are_measured_as_request_availability(world: World) -> None:
    m = world.metrics
    obj = objective("probes", "METRIC_AVAILABILITY_REQUESTS", "99", budgeting="BUDGETING_OCCURRENCES")
    aid = world.upstream.agreement("a-p", terms_with(obj))
    base = at(f"2026-01-12T10:00{AMS}")
    probes = [
        pb.Signal(signal_id=f"p{i}", service_id=EMAIL, probe=pb.Probe(at=ts(base + i * MINUTE), success=i >= 2))
        for i in range(100)
    ]
    assert m.record(COLLECTOR, probes).accepted == 100
    world.clock.set(at(f"2026-02-10T12:00{AMS}"))
    m.evaluate()
    jan = world.window(aid, "probes", JAN).closed
    assert jan["status"] == BREACHED and Decimal(jan["value"]) == 98  # 98 good probes of 100


def _daily_counts(bad: dict[int, int]) -> list[pb.Signal]:
    """A request count at noon (UTC) of every day of January from the 2nd: 1,000 requests,
    all good but `bad[day]` of them."""
    out = []
    for day in range(2, 32):
        start = at(f"2026-01-{day:02d}T12:00:00+00:00")
        rc = pb.RequestCount(start=ts(start), end=ts(start + MINUTE), good=1000 - bad.get(day, 0), total=1000)
        out.append(pb.Signal(signal_id=f"r{day}", service_id=EMAIL, requests=rc))
    return out


def _requests_agreement(world: World, aid: str) -> str:
    """A request-based availability objective (99.9 %, monthly) with maintenance declared on
    12 January 11:00–13:00 UTC, suspended from 20 to 22 January."""
    obj = objective("requests", "METRIC_AVAILABILITY_REQUESTS", "99.9", budgeting="BUDGETING_OCCURRENCES")
    obj["exclusions"] = [{"start": "2026-01-12T11:00:00Z", "end": "2026-01-12T13:00:00Z", "reason": "upgrade"}]
    world.upstream.agreement(aid, terms_with(obj))
    ev = agreement_events
    world.upstream.send(ev.AgreementSuspended(agreement_id=aid, reason="move"), at("2026-01-20T00:00:00+00:00"))
    world.upstream.send(ev.AgreementResumed(agreement_id=aid, reason="back"), at("2026-01-22T00:00:00+00:00"))
    return aid


def test_request_availability_leaves_out_maintenance_and_suspended_time(world: World) -> None:
    # Every request failed during the declared maintenance (12 January) and the suspension
    # (20–21 January); one failed on 5 January. Only that one counts: what an outage in excluded
    # time would count (docs/domain.md §3 "Exclusions").
    m = world.metrics
    aid = _requests_agreement(world, "a-r")
    assert m.record(COLLECTOR, _daily_counts({5: 1, 12: 1000, 20: 1000, 21: 1000})).accepted == 30
    world.clock.set(at(f"2026-02-10T12:00{AMS}"))
    m.evaluate()
    jan = world.window(aid, "requests", JAN).closed
    assert (jan["formula_id"], jan["formula_version"]) == ("availability.requests", 4)
    # 27 measured days: 26,999 good of 27,000.
    assert (jan["detail"]["good"], jan["detail"]["total"], jan["detail"]["counts_excluded"]) == ("26999", "27000", "3")
    assert Decimal(jan["value"]) == Decimal(26999) / Decimal(27000) * 100
    assert jan["status"] == MET and world.window(aid, "requests", JAN).breaches == []
    assert world.rederived_mismatches(aid) == []


@pytest.mark.parametrize("version", [1, 3])
def test_request_availability_recorded_by_an_earlier_version_stays_that_version(
    world: World, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    # A January closed by a version before — v1 (every count measured), v3 (the counts bucketed
    # without runs by hour) — is re-derived, and a late count restates it, by that version:
    # history is never re-judged by a newer rule, and the digest it recorded stays computable.
    from accord_metrics.formulas import reliability

    m = world.metrics
    aid = _requests_agreement(world, f"a-r{version}")
    m.record(COLLECTOR, _daily_counts({5: 1, 12: 1000, 20: 1000, 21: 1000}))
    world.clock.set(at(f"2026-02-10T12:00{AMS}"))
    with monkeypatch.context() as patch:
        patch.setattr(reliability, "REQUESTS_VERSION", version)
        m.evaluate()
    jan = world.window(aid, "requests", JAN).closed
    measured = {1: (BREACHED, "30000"), 3: (MET, "27000")}[version]  # v1 measured excluded time too
    assert (jan["formula_version"], jan["status"], jan["detail"]["total"]) == (version, *measured)
    assert world.rederived_mismatches(aid) == []
    start = at("2026-01-31T18:00:00+00:00")
    late = pb.RequestCount(start=ts(start), end=ts(start + MINUTE), good=1000, total=1000)
    m.record(COLLECTOR, [pb.Signal(signal_id="r-late", service_id=EMAIL, requests=late)])
    world.clock.set(at(f"2026-02-10T13:00{AMS}"))
    m.evaluate()
    latest = world.window(aid, "requests", JAN).latest
    total = int(measured[1]) + 1000
    assert (latest["formula_version"], latest["detail"]["total"]) == (version, str(total))
    assert latest["input_digest"] != jan["input_digest"]
    assert world.rederived_mismatches(aid) == []
    # February, opened since, is judged by the current version (bucketed, in runs by hour).
    feb = [w for w in m.window_evaluations(aid) if w.objective_id == "requests" and at(w.window_start) == at(FEB)]
    assert feb and feb[0].latest["formula_version"] == 4


@pytest.mark.parametrize("calls_version", [1, 2, 3])
def test_windows_closed_by_earlier_digests_keep_them(
    world: World, monkeypatch: pytest.MonkeyPatch, calls_version: int
) -> None:
    # January closed by the versions before the current digests — ASA and the service level v1
    # (one list), v2 (bucketed, by id) or v3 (bucketed, in the order the calls arrived),
    # time-based availability and MTBF v1 (one list) or v2 (bucketed) — re-derived, and restated
    # by a late call and a corrected outage, by those versions: the digests they recorded stay
    # computable. February, opened since, is judged by the current versions (the calls v4 and the
    # outages v3: bucketed, in runs by hour).
    from accord_metrics.formulas import contact, reliability

    outages_version = min(calls_version, 2)
    january = {"availability": outages_version, "mtbf": outages_version, "asa": calls_version, "tsf": calls_version}

    m = world.metrics
    tsf = objective("tsf", "METRIC_SERVICE_LEVEL", "80", parameters={"variant": "ANSWERED_OVER_OFFERED",
                                                                       "threshold_seconds": "20"})  # fmt: skip
    objectives = [
        objective("availability", "METRIC_AVAILABILITY_TIME", "99.5"),
        objective("mtbf", "METRIC_MTBF", "1"),
        objective("asa", "METRIC_ASA", "30", comparator="COMPARATOR_AT_MOST"),
        tsf,
    ]
    aid = world.upstream.agreement("a-v1", terms_with(*objectives))
    m.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 30), *calls("j", f"2026-01-14T09:00{AMS}", 8, 2)])
    m.record(COLLECTOR, [*calls("f", f"2026-02-03T09:00{AMS}", 5, 5)])
    world.clock.set(at(f"2026-02-10T12:00{AMS}"))
    with monkeypatch.context() as patch:
        patch.setattr(contact, "VERSION", calls_version)
        patch.setattr(reliability, "OUTAGES_VERSION", outages_version)
        m.evaluate()
    closed = {oid: world.window(aid, oid, JAN).closed for oid in ("availability", "mtbf", "asa", "tsf")}
    assert {oid: e["formula_version"] for oid, e in closed.items()} == january
    assert world.rederived_mismatches(aid) == []
    late = calls("late", f"2026-01-20T09:00{AMS}", 0, 1)
    m.record(COLLECTOR, late)
    m.record(PROVIDER, [outage("o1", f"2026-01-12T10:00{AMS}", 90)])
    world.clock.set(at(f"2026-02-10T13:00{AMS}"))
    m.evaluate()
    for oid in ("availability", "mtbf", "asa", "tsf"):
        latest = world.window(aid, oid, JAN).latest
        assert latest["formula_version"] == january[oid] and latest["input_digest"] != closed[oid]["input_digest"], oid
    assert world.window(aid, "asa", JAN).latest["detail"]["answered"] == "11"
    assert world.rederived_mismatches(aid) == []
    february = {oid: world.window(aid, oid, FEB).latest for oid in ("availability", "mtbf", "asa", "tsf")}
    assert {oid: e["formula_version"] for oid, e in february.items()} == {
        "availability": 3,
        "mtbf": 3,
        "asa": 4,
        "tsf": 4,
    }


def test_fcr_by_repeat_contact_requires_the_customer_id(world: World) -> None:
    m = world.metrics
    obj = objective("fcr", "METRIC_FIRST_CONTACT_RESOLUTION", "70", parameters={"method": "REPEAT_CONTACT"})
    world.upstream.agreement("a-f", terms_with(obj))
    entered = at(f"2026-01-12T10:00{AMS}")

    def call(sid: str, customer: str = "", flag: int = 0) -> pb.Signal:
        c = pb.Call(entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=5)), customer_id=customer,
                    first_contact=flag)  # type: ignore[arg-type]  # fmt: skip
        return pb.Signal(signal_id=sid, service_id=EMAIL, call=c)

    with pytest.raises(InvalidSignalError, match=r"signals\[1\]\.call\.customer_id: is required.*a-f/fcr"):
        m.record(COLLECTOR, [call("c1", "cust-1"), call("c2")])
    assert m.signals(EMAIL) == []  # nothing stored
    # With the customer, or with the agent's flag, a call is recorded.
    flagged = call("c3", flag=pb.FIRST_CONTACT_RESOLUTION_RESOLVED)
    assert m.record(COLLECTOR, [call("c1", "cust-1"), flagged]).accepted == 2


async def test_the_running_services_rounds_run_with_the_collector_paused_the_first_then_the_heap_settled(
    own_nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first round after start converts the open windows' inputs: nothing for the collector
    to find meanwhile (accord_kit.heap.building), then the heap settled; the rounds after it run
    with the collector paused too (accord_kit.heap.paused: their temporaries freed before any
    collection walks them), and it runs again once the service stopped."""
    enabled: list[bool] = []
    evaluate = Metrics.evaluate

    def watching(self: Metrics, now: datetime | None = None) -> int:
        enabled.append(gc.isenabled())
        return evaluate(self, now)

    monkeypatch.setattr(Metrics, "evaluate", watching)
    gc.unfreeze()
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    settings = load(service_environ("metrics", tmp_path, own_nats_server.url, "sqlite"))
    try:
        async with running_service(build, settings, make_keys(tmp_path / "keys"), clock=clock, evaluate_every=0.05):
            await eventually(lambda: len(enabled) >= 3, timeout=20, what="three rounds")
            assert not any(enabled)
            assert gc.get_freeze_count() > 0  # settled after the first
        assert gc.isenabled()
    finally:
        gc.unfreeze()


async def test_health_reports_an_isolated_evaluation_failure(
    own_nats_server: NatsServer, tmp_path: Path, store_kind: str, postgres_db: Callable[[], str]
) -> None:
    """The running service: an agreement with a parameter metrics cannot read turns the
    health service `accord.evaluation` NOT_SERVING (the service itself keeps SERVING) while
    another agreement goes on being judged, every pass."""
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    db = postgres_db() if store_kind == "postgres" else ""
    settings = load(service_environ("metrics", tmp_path, own_nats_server.url, store_kind, db))
    async with (
        running_service(build, settings, make_keys(tmp_path / "keys"), clock=clock, evaluate_every=0.05) as runtime,
        grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)

        async def status(name: str) -> int:
            return int((await health.Check(health_pb2.HealthCheckRequest(service=name))).status)

        serving = health_pb2.HealthCheckResponse.SERVING
        await eventually(lambda: _is(status(EVALUATION_HEALTH), serving), timeout=20, what="evaluation SERVING")
        app: Any = runtime.parts.app
        upstream = Upstream(app)
        upstream.service()
        bad = sla_terms()
        bad["objectives"][0]["parameters"] = {"maintenance_notice_hours": "48h"}
        upstream.agreement("a-bad", bad)
        good = upstream.agreement("a-good", sla_terms())
        clock.set(at(f"2026-02-10T12:00{AMS}"))
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        await eventually(lambda: _is(status(EVALUATION_HEALTH), not_serving), timeout=20, what="NOT_SERVING")
        assert await status("") == serving
        assert set(app.evaluation_failures()) == {("a-bad", "availability")}

        def closed(aid: str, start: str) -> int:
            return sum(1 for w in app.window_evaluations(aid) if w.closed and at(w.window_start) == at(start))

        await eventually(lambda: closed(good, JAN) == 2, timeout=20, what="January of the good agreement closed")
        clock.set(at(f"2026-03-10T12:00{AMS}"))
        await eventually(lambda: closed(good, FEB) == 2, timeout=20, what="February of the good agreement closed")
        assert await status(EVALUATION_HEALTH) == not_serving


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)


def _outage_of(service_id: str, sid: str, start: str, minutes: float) -> pb.Signal:
    s = at(start)
    end = s + timedelta(minutes=minutes)
    return pb.Signal(signal_id=sid, service_id=service_id, outage=pb.Outage(start=ts(s), end=ts(end)))


def _register(world: World, service_id: str, provider: str) -> None:
    world.upstream.send(
        agreement_events.ServiceRegistered(service_id=service_id, name=service_id, provider_department_id=provider)
    )


def _naming_no_service(level: str, **overrides: Any) -> dict[str, Any]:
    """Availability only, at `level`, with a service description that names no service."""
    terms = sla_terms(level=level, **overrides)
    terms["service"] = {"description": "every service IT provides", "hours_of_coverage": "24x7"}
    terms["objectives"] = [o for o in terms["objectives"] if o["objective_id"] == "availability"]
    return terms


def _availability(minutes_down: int) -> Decimal:
    """January's availability with this many minutes down (measured from 00:00 UTC: 44,580 minutes)."""
    return (Decimal(44580 - minutes_down) / Decimal(44580) * 100).quantize(Decimal("0.0001"))


def test_an_agreement_naming_no_service_is_measured_on_every_service_of_its_provider(world: World) -> None:
    m = world.metrics
    _register(world, "payroll", NETWORK)  # another provider's service
    aid = world.upstream.agreement("a-customer", _naming_no_service("SCOPE_LEVEL_CUSTOMER"))
    # The same, terminated at the end of January: settled once its windows are closed.
    ended = world.upstream.agreement("a-ended", _naming_no_service("SCOPE_LEVEL_CORPORATE"))
    world.upstream.send(agreement_events.AgreementTerminated(agreement_id=ended, effective_at=ts(at(FEB))))
    m.record(COLLECTOR, [outage("o-email", f"2026-01-12T10:00{AMS}", 90)])
    m.record(COLLECTOR, [_outage_of("payroll", "o-payroll", f"2026-01-13T10:00{AMS}", 600)])  # not IT's
    world.clock.set(at(f"2026-01-15T12:00{AMS}"))
    m.evaluate()
    running = world.window(aid, "availability", JAN).current
    assert running["status"] == BREACHED and Decimal(running["value"]).quantize(Decimal("0.0001")) == _availability(90)

    # A service IT registers after the agreement was accepted is measured too: its outage counts
    # in the window under way (the agreement judged again for it, though it was not among its services).
    _register(world, "vpn", IT)
    m.record(COLLECTOR, [_outage_of("vpn", "o-vpn", f"2026-01-20T10:00{AMS}", 60)])
    world.clock.set(at(f"2026-01-25T12:00{AMS}"))
    m.evaluate()
    assert Decimal(world.window(aid, "availability", JAN).current["value"]).quantize(
        Decimal("0.0001")
    ) == _availability(150)
    world.clock.set(at(f"2026-02-10T12:00{AMS}"))
    m.evaluate()
    for agreement_id in (aid, ended):
        jan = world.window(agreement_id, "availability", JAN).closed
        assert jan["status"] == BREACHED
        assert Decimal(jan["value"]).quantize(Decimal("0.0001")) == _availability(150)
        assert world.window(agreement_id, "availability", JAN).breaches == [""]
    # What explains the window: the outages of IT's services, not the other provider's.
    _, shown, _ = m.window_signals(None, aid, "availability", JAN)
    assert [s.signal_id for s in shown] == ["o-email", "o-vpn"]

    # A late outage of a service registered after the windows closed restates them, the ended
    # (settled) agreement's too; a correction of its signals concerns both agreements.
    _register(world, "wifi", IT)
    m.record(COLLECTOR, [_outage_of("wifi", "o-wifi", f"2026-01-28T10:00{AMS}", 20)])
    m.record(PROVIDER, [_outage_of("wifi", "o-wifi", f"2026-01-28T10:00{AMS}", 30)], reason="longer")
    m.evaluate()
    for agreement_id in (aid, ended):
        restated = world.window(agreement_id, "availability", JAN).restatements[-1]["new"]
        assert Decimal(restated["value"]).quantize(Decimal("0.0001")) == _availability(180)
        assert world.rederived_mismatches(agreement_id) == []
        history = list(agreement_history(m, agreement_id))
        corrected = [h for h in history if h.envelope.type.endswith(".SignalsCorrected")]
        assert [list(unpack(h.envelope, metrics_events.SignalsCorrected).agreement_ids) for h in corrected] == [
            [aid, ended]
        ]
    # A what-if of the same terms reads the same services.
    same = MetricsAudit(m).what_if(None, aid, terms=_naming_no_service("SCOPE_LEVEL_CUSTOMER"), periods=1)
    window = next(w for w in same.objectives[0].windows if w.start == at(JAN))
    assert window.proposed is not None and window.actual is not None
    assert window.proposed["value"] == window.actual["value"]


def test_a_child_naming_a_service_is_judged_on_it_alone_under_a_parent_naming_none(world: World) -> None:
    m = world.metrics
    _register(world, "vpn", IT)
    parent = world.upstream.agreement("a-corporate", _naming_no_service("SCOPE_LEVEL_CORPORATE"))
    child = sla_terms(parent_agreement_id=parent)  # names e-mail; its availability replaces the parent's
    child["objectives"] = [o for o in child["objectives"] if o["objective_id"] == "availability"]
    kid = world.upstream.agreement("a-child", child)
    m.record(COLLECTOR, [_outage_of("vpn", "o-vpn", f"2026-01-20T10:00{AMS}", 90)])
    world.clock.set(at(f"2026-02-10T12:00{AMS}"))
    m.evaluate()
    jan = world.window(parent, "availability", JAN).closed
    assert jan["status"] == BREACHED and Decimal(jan["value"]).quantize(Decimal("0.0001")) == _availability(90)
    mine = world.window(kid, "availability", JAN).closed
    assert mine["status"] == MET and mine["value"] == "100"
    assert world.rederived_mismatches(parent) == [] and world.rederived_mismatches(kid) == []


def _fcr_agreement(world: World, aid: str) -> str:
    """An agreement `aid` with one objective: first-contact resolution by repeat contact, monthly."""
    obj = objective("fcr", "METRIC_FIRST_CONTACT_RESOLUTION", "50", parameters={"method": "REPEAT_CONTACT"})
    return world.upstream.agreement(aid, terms_with(obj))


def _answered(sid: str, customer: str, entered: datetime) -> pb.Signal:
    """A call of `customer` on e-mail entering the queue at `entered`, answered 5 s later."""
    c = pb.Call(entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=5)), customer_id=customer)
    return pb.Signal(signal_id=sid, service_id=EMAIL, call=c)


def _january_closed_by_fcr(
    world: World, monkeypatch: pytest.MonkeyPatch, aid: str, version: int, when: str
) -> dict[str, Any]:  # fmt: skip
    """A round at `when` with `contact.fcr` at `version`: January's window closed by that version
    (and re-derived by it); its closed evaluation."""
    from accord_metrics.formulas import contact

    world.clock.set(at(when))
    with monkeypatch.context() as patch:
        patch.setattr(contact, "FCR_VERSION", version)
        world.metrics.evaluate()
    closed = world.window(aid, "fcr", JAN).closed
    assert (closed["formula_id"], closed["formula_version"]) == ("contact.fcr", version)
    assert world.rederived_mismatches(aid) == []
    return dict(closed)


def test_an_fcr_window_recorded_by_version_1_re_derives_after_later_calls(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A January closed by contact.fcr v1 (its digest covers every call it was passed: the calls
    # known when it was judged) is re-derived after February's calls were recorded: the
    # re-derivation passes v1 the calls known when the window was judged, so the digest matches.
    m, aid, call = world.metrics, _fcr_agreement(world, "a-f1"), _answered

    jan = [call(f"j{i}", f"cust-{i % 3}", at(f"2026-01-{5 + i:02d}T10:00{AMS}")) for i in range(6)]
    assert m.record(COLLECTOR, jan).accepted == 6
    closed = _january_closed_by_fcr(world, monkeypatch, aid, 1, f"2026-02-10T12:00{AMS}")
    # Calls of later months, recorded since (none of them changes January's value).
    later = [call(f"f{i}", f"cust-{i}", at(f"2026-02-{11 + i:02d}T10:00{AMS}")) for i in range(4)]
    later.append(call("m1", "cust-0", at(f"2026-03-02T10:00{AMS}")))
    assert m.record(COLLECTOR, later).accepted == 5
    world.clock.set(at(f"2026-02-20T12:00{AMS}"))
    m.evaluate()
    assert world.window(aid, "fcr", JAN).latest["input_digest"] == closed["input_digest"]
    assert world.rederived_mismatches(aid) == []


def test_an_fcr_window_closed_by_version_4_is_restated_by_it_and_the_next_judged_by_version_5(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # January closed by contact.fcr v4 (its outcomes bucketed in the order they became known) keeps
    # v4: a late call restates it by v4 and it re-derives; February is judged by v5 (runs by hour).
    m, aid, call = world.metrics, _fcr_agreement(world, "a-f4"), _answered

    jan = [call(f"j{i}", f"cust-{i % 3}", at(f"2026-01-{5 + i:02d}T10:00{AMS}")) for i in range(6)]
    feb = [call(f"f{i}", f"cust-f{i}", at(f"2026-02-0{2 + i}T10:00{AMS}")) for i in range(3)]
    assert m.record(COLLECTOR, [*jan, *feb]).accepted == 9
    closed = _january_closed_by_fcr(world, monkeypatch, aid, 4, f"2026-02-20T12:00{AMS}")
    m.record(COLLECTOR, [call("late", "cust-9", at(f"2026-01-10T11:00{AMS}"))])  # decided in January
    world.clock.set(at(f"2026-02-20T12:05{AMS}"))
    m.evaluate()
    restated = world.window(aid, "fcr", JAN).latest
    assert restated["formula_version"] == 4 and restated["input_digest"] != closed["input_digest"]
    assert restated["detail"]["first_contacts"] == str(int(closed["detail"]["first_contacts"]) + 1)
    assert world.window(aid, "fcr", FEB).current["formula_version"] == 5
    assert world.rederived_mismatches(aid) == []


def _amend(world: World, aid: str, terms: dict[str, Any], effective_from: str, version: int = 2) -> None:
    """An amendment of `aid` to `terms`, proposed and accepted, in force from `effective_from`."""
    message = json_format.ParseDict(terms, terms_pb2.AgreementTerms())
    amendment = f"{aid}-amendment-{version}"
    world.upstream.send(
        agreement_events.AmendmentProposed(
            agreement_id=aid, amendment_id=amendment, proposed_by_department_id=IT, terms=message,
            effective_from=ts(at(effective_from)),
        )
    )  # fmt: skip
    world.upstream.send(
        agreement_events.AmendmentAccepted(
            agreement_id=aid, amendment_id=amendment, version=version, effective_from=ts(at(effective_from)),
            terms=message,
        )
    )  # fmt: skip


def _on_services(*service_ids: str) -> dict[str, Any]:
    """Availability only, on these services (none: every service of the provider, IT)."""
    if not service_ids:
        return _naming_no_service("SCOPE_LEVEL_CUSTOMER")
    terms = sla_terms()
    terms["service"] = {**terms["service"], "service_ids": list(service_ids)}
    terms["objectives"] = [o for o in terms["objectives"] if o["objective_id"] == "availability"]
    return terms


@pytest.mark.parametrize("first", [("email", "vpn"), ()], ids=["naming-both", "naming-none"])
def test_an_amendment_narrowing_the_services_measures_each_window_on_its_versions_services(
    world: World, first: tuple[str, ...]
) -> None:
    """docs/domain.md §2 "Effective dating": a window is measured on the services of the version
    in force at its start. Version 1 covers e-mail and the VPN (by name, or as every service of
    IT); version 2, in force from February, names e-mail alone. The VPN's outage in January
    still breaches January; its outage in February does not count in February — in the
    evaluation, its re-derivation and recomputation, the signals that explain it and a what-if."""
    m = world.metrics
    _register(world, "vpn", IT)
    aid = world.upstream.agreement("a-narrowed", _on_services(*[EMAIL if s == "email" else s for s in first]))
    world.clock.set(at(f"2026-01-20T12:00{AMS}"))
    _amend(world, aid, _on_services(EMAIL), FEB)
    m.record(COLLECTOR, [_outage_of("vpn", "o-vpn-jan", f"2026-01-20T10:00{AMS}", 90)])
    m.record(COLLECTOR, [_outage_of("vpn", "o-vpn-feb", f"2026-02-10T10:00{AMS}", 90)])
    world.clock.set(at(f"2026-02-15T12:00{AMS}"))
    m.evaluate()
    assert world.window(aid, "availability", FEB).current["status"] == MET  # open: not breached by the VPN
    world.clock.set(at(f"2026-03-10T12:00{AMS}"))
    m.evaluate()
    jan = world.window(aid, "availability", JAN)
    assert jan.closed["status"] == BREACHED and jan.breaches == [""]
    assert Decimal(jan.closed["value"]).quantize(Decimal("0.0001")) == _availability(90)
    feb = world.window(aid, "availability", FEB)
    assert feb.closed["status"] == MET and feb.closed["value"] == "100" and feb.breaches == []
    # A late correction of the VPN's February outage changes nothing in February.
    m.record(PROVIDER, [_outage_of("vpn", "o-vpn-feb", f"2026-02-10T10:00{AMS}", 300)], reason="longer")
    m.evaluate()
    assert world.window(aid, "availability", FEB).restatements == []
    # The auditor's re-derivation and recomputation judge each window on its version's services.
    assert world.rederived_mismatches(aid) == []
    for start in (JAN, FEB):
        assert m.recompute(aid, "availability", start)["matches"] is True
    # What explains each window: the outages of the services it is measured on.
    assert [s.signal_id for s in m.window_signals(None, aid, "availability", JAN)[1]] == ["o-vpn-jan"]
    assert [s.signal_id for s in m.window_signals(None, aid, "availability", FEB)[1]] == []
    # A what-if of terms naming both services judges February on both.
    both = MetricsAudit(m).what_if(None, aid, terms=_on_services(EMAIL, "vpn"), periods=2)
    window = next(w for w in both.objectives[0].windows if w.start == at(FEB))
    assert window.actual is not None and window.actual["status"] == MET
    assert window.proposed is not None and window.proposed["status"] == BREACHED


def test_a_version_learned_after_its_window_closed_restates_the_window(world: World) -> None:
    """docs/domain.md §2 "Effective dating": a window is judged by the version in force at its
    start. Metrics' agreements consumer can be behind its clock (a restart, a stalled durable):
    an amendment in force from February that metrics applies only after it closed February
    restates February by that version — never leaves it judged by the version before — and
    January, before it, is untouched. The re-derivation then agrees with the record."""
    m = world.metrics
    aid = world.upstream.agreement("a-late-version", sla_terms())
    m.record(COLLECTOR, [outage("o-feb", f"2026-02-12T10:00{AMS}", 30)])  # 30 min: within 99.9 %
    world.clock.set(at(f"2026-03-10T12:00{AMS}"))
    m.evaluate()
    feb = world.window(aid, "availability", FEB)
    assert (feb.closed["status"], feb.closed["version"]) == (MET, 1)
    stricter = sla_terms()
    for o in stricter["objectives"]:
        if o["objective_id"] == "availability":
            o["target"] = "99.99"
    _amend(world, aid, stricter, FEB)  # learned now, in force since February
    m.evaluate()
    feb = world.window(aid, "availability", FEB)
    assert [(r["new"]["version"], r["new"]["status"]) for r in feb.restatements] == [(2, BREACHED)]
    assert feb.breaches == [""]
    assert world.window(aid, "availability", JAN).restatements == []
    assert world.rederived_mismatches(aid) == []
    assert m.recompute(aid, "availability", FEB)["matches"] is True
    # Judged: the next rounds restate nothing more.
    m.evaluate()
    assert len(world.window(aid, "availability", FEB).restatements) == 1


def test_a_suspension_learned_after_its_window_closed_restates_the_window(world: World) -> None:
    """A suspension metrics learns after closing the window it falls in (its instant is the
    agreements service's, earlier than the closing) takes the suspended time out of that window
    as if it had been known: February's outage during the suspension no longer breaches it."""
    m = world.metrics
    aid = world.upstream.agreement("a-late-suspension", sla_terms())
    m.record(COLLECTOR, [outage("o-feb", f"2026-02-12T10:00{AMS}", 90)])
    world.clock.set(at(f"2026-03-10T12:00{AMS}"))
    m.evaluate()
    assert world.window(aid, "availability", FEB).closed["status"] == BREACHED
    ev = agreement_events
    world.upstream.send(ev.AgreementSuspended(agreement_id=aid, reason="move"), at(f"2026-02-10T00:00{AMS}"))
    world.upstream.send(ev.AgreementResumed(agreement_id=aid, reason="back"), at(f"2026-02-20T00:00{AMS}"))
    m.evaluate()
    feb = world.window(aid, "availability", FEB)
    assert [r["new"]["status"] for r in feb.restatements] == [MET]
    assert world.window(aid, "availability", JAN).restatements == []
    assert world.rederived_mismatches(aid) == []


def test_a_restart_judges_the_view_events_learned_since_the_last_round_and_no_earlier_ones(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    """What the view events reach is judged once: a restarted process does not judge every closed
    window again for the view events its store already judged, and does judge one learned (by
    the consumer) before a crash and never judged."""
    clock = FakeClock(at(f"2026-03-10T12:00{AMS}"))
    env = make_store_env("metrics")
    m = Metrics(env, clock=clock)
    world = World(m, clock)
    aid = world.upstream.agreement("a-restart", sla_terms())
    m.record(COLLECTOR, [outage("o-feb", f"2026-02-12T10:00{AMS}", 30)])
    m.evaluate()
    stricter = sla_terms()
    for o in stricter["objectives"]:
        if o["objective_id"] == "availability":
            o["target"] = "99.99"
    _amend(world, aid, stricter, FEB)  # applied, then the process stops before any round
    m.close()
    again = Metrics(env, clock=clock)
    try:
        again.evaluate()
        feb = _window_of(again, aid, FEB)
        assert [(r["new"]["version"], r["new"]["status"]) for r in feb.restatements] == [(2, BREACHED)]
    finally:
        again.close()
    third = Metrics(env, clock=clock)
    try:
        third.evaluate()
        assert len(_window_of(third, aid, FEB).restatements) == 1
        # Its first round judged its open windows alone: no closed window again for view events judged.
        still_open = [w for w in third.window_evaluations(aid) if not w.closed]
        assert still_open and third.last_round.windows_judged == len(still_open)
    finally:
        third.close()


def _window_of(m: Metrics, aid: str, start: str) -> Any:
    return next(
        w for w in m.window_evaluations(aid) if w.objective_id == "availability" and at(w.window_start) == at(start)
    )
