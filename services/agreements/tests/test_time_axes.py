"""Both time axes of an agreement (docs/domain.md §6) on the application, on both stores, and
once over gRPC: "as known at T" (what the store had recorded by T) against "as effective
at T" (what is correct now about T) and where they differ; and StreamHistory's envelopes
equal, field for field, to the same events as the log serves them (ReadEvents)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from accord.agreements.v1 import agreements_pb2 as pb
from accord.agreements.v1 import agreements_pb2_grpc as pb_grpc
from accord.agreements.v1 import terms_pb2
from accord.events.v1 import events_pb2
from accord_agreements.application import AgreementAt, Agreements, AlreadyRegisteredError
from accord_agreements.bootstrap import build
from accord_agreements.domain import (
    ACTIVE,
    DRAFT,
    SUSPENDED,
    TERMINATED,
    Actor,
    InvalidRequestError,
    NotAPartyError,
    NotFoundError,
)
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms, with_target
from accord_agreements.settings import load
from accord_kit.clock import FakeClock
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ

PROVIDER = Actor("alice", "department", IT)
CUSTOMER = Actor("bob", "department", FINANCE)
OUTSIDER = Actor("carol", "department", "marketing")
AUDITOR = Actor("audrey", "auditor")
ADMIN = Actor("root", "admin")
START = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)  # the sample terms take effect on 2026-01-01
V1_EFFECTIVE = datetime(2026, 1, 1, tzinfo=UTC)
NOTICE = timedelta(days=30)  # the sample terms' termination notice


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def app(make_store_env: Callable[[str], dict[str, str]], clock: FakeClock) -> Iterator[Agreements]:
    a = Agreements(make_store_env("agreements"), clock=clock)
    for dept in (IT, FINANCE, "marketing"):
        a.register_department(dept, dept.title())
    a.register_service(EMAIL, "E-mail", IT)
    yield a
    a.close()


def active(app: Agreements) -> str:
    agg = app.draft(PROVIDER, sla_terms())
    app.propose(PROVIDER, str(agg.id))
    app.accept(CUSTOMER, str(agg.id))
    return str(agg.id)


def differences(r: AgreementAt) -> list[tuple[str, str, str]]:
    return [(d.field, d.as_known, d.as_effective) for d in r.differences]


def in_force_version(r: AgreementAt) -> int:
    return int(r.effective.version["version"]) if r.effective.version else 0


def known_version(r: AgreementAt) -> int:
    return r.known.current_version if r.known is not None else 0


def in_force_terms(r: AgreementAt) -> dict[str, Any]:
    assert r.effective.version is not None, "no version in force"
    return dict(r.effective.version["terms"])


def availability_target(terms: dict[str, Any]) -> str:
    return str(next(o["target"] for o in terms["objectives"] if o["objective_id"] == "availability"))


# -- as known at / as effective at ------------------------------------------------------------
def test_as_known_follows_an_amendment_while_the_version_in_force_follows_its_effective_date(
    app: Agreements, clock: FakeClock
) -> None:
    # Version 1 accepted at START; an amendment proposed on 1 February, accepted on
    # 5 February (t1), effective from 1 March (t2).
    aid = active(app)
    proposed_at, t1, t2 = (datetime(2026, m, d, tzinfo=UTC) for m, d in ((2, 1), (2, 5), (3, 1)))
    clock.set(proposed_at)
    _, am = app.propose_amendment(PROVIDER, aid, with_target(sla_terms(), "availability", "99.5"), t2, "cheaper")
    clock.set(t1)
    app.accept_amendment(CUSTOMER, aid, am)

    # Before the proposal: version 1, nothing pending, and nothing to correct.
    before = app.get_agreement_at(AUDITOR, aid, datetime(2026, 1, 20, tzinfo=UTC))
    assert before.known is not None
    assert (before.known.version, before.known.current_version, before.known.pending) == (3, 1, None)
    assert (before.effective.state, in_force_version(before)) == (ACTIVE, 1)
    assert differences(before) == [] and before.term_changes == []

    # Proposed but not accepted yet: as known, the amendment is pending.
    pending = app.get_agreement_at(CUSTOMER, aid, proposed_at + timedelta(days=2))
    assert pending.known is not None and pending.known.pending is not None
    assert (pending.known.pending["amendment_id"], pending.known.current_version) == (am, 1)
    assert in_force_version(pending) == 1 and differences(pending) == []

    # Between t1 and t2: as known, version 2 has been accepted and its terms are the
    # agreement's; in force at that instant is still version 1, as known then and now.
    between = app.get_agreement_at(AUDITOR, aid, t1 + timedelta(days=5))
    assert between.known is not None
    assert (between.known.current_version, between.known.pending) == (2, None)
    assert availability_target(between.known.terms) == "99.5"
    assert in_force_version(between) == 1 and availability_target(in_force_terms(between)) == "99.9"
    assert between.in_force_as_known.version is not None and between.in_force_as_known.version["version"] == 1
    assert differences(between) == []

    # At the acceptance instant itself the acceptance counts as known; from t2 version 2 is in force.
    assert known_version(app.get_agreement_at(AUDITOR, aid, t1)) == 2
    assert known_version(app.get_agreement_at(AUDITOR, aid, t1 - timedelta(microseconds=1))) == 1
    after = app.get_agreement_at(ADMIN, aid, t2 + timedelta(days=1))
    assert (in_force_version(after), availability_target(in_force_terms(after))) == (2, "99.5")
    assert differences(after) == []


def test_a_version_accepted_later_but_effective_earlier_differs_between_the_axes(
    app: Agreements, clock: FakeClock
) -> None:
    # Drafted at START; proposed and accepted two days later with version 1 effective from
    # 1 January, before the draft even existed.
    agg = app.draft(PROVIDER, sla_terms())
    aid = str(agg.id)
    clock.advance(timedelta(days=2))
    app.propose(PROVIDER, aid)
    app.accept(CUSTOMER, aid)

    # On 11 January the store knew a draft; now we know version 1 was in force then.
    drafted = app.get_agreement_at(AUDITOR, aid, START + timedelta(days=1))
    assert drafted.known is not None and (drafted.known.state, drafted.known.version) == (DRAFT, 1)
    assert drafted.in_force_as_known.state == DRAFT and drafted.in_force_as_known.version is None
    assert (drafted.effective.state, in_force_version(drafted)) == (ACTIVE, 1)
    assert differences(drafted) == [
        ("state", DRAFT, ACTIVE),
        ("version", "none", "1"),
        ("terms", "none", "version 1"),
    ]

    # On 5 January the store knew nothing of it; now version 1 was in force then too.
    unknown = app.get_agreement_at(AUDITOR, aid, datetime(2026, 1, 5, tzinfo=UTC))
    assert unknown.known is None and unknown.in_force_as_known.state == ""
    assert (unknown.effective.state, in_force_version(unknown)) == (ACTIVE, 1)
    assert differences(unknown) == [("state", "none", ACTIVE), ("version", "none", "1"), ("terms", "none", "version 1")]

    # Before its effective date nothing was in force on either axis.
    early = app.get_agreement_at(AUDITOR, aid, V1_EFFECTIVE - timedelta(seconds=1))
    assert early.known is None and early.effective.state == "" and early.effective.version is None
    assert differences(early) == []


def test_an_end_applied_late_is_terminated_as_effective_while_active_as_known(
    app: Agreements, clock: FakeClock
) -> None:
    # Suspended on day 1, resumed on day 2; on day 3 the customer gives notice (30 days),
    # so the agreement ends on day 33 — but the due-date task only applies it on day 35.
    aid = active(app)
    day = lambda n: START + timedelta(days=n)  # noqa: E731
    clock.set(day(1))
    app.suspend(PROVIDER, aid, "data-centre move")
    clock.set(day(2))
    app.resume(PROVIDER, aid, "moved")
    clock.set(day(3))
    app.terminate(CUSTOMER, aid, "reorganisation")
    clock.set(day(35))
    assert app.process_due() == 1

    suspended = app.get_agreement_at(AUDITOR, aid, day(1) + timedelta(hours=12))
    assert suspended.known is not None and suspended.known.state == SUSPENDED
    assert (suspended.effective.state, in_force_version(suspended)) == (SUSPENDED, 1)
    assert differences(suspended) == []

    # Day 34: as known, still ACTIVE with the termination scheduled for day 33; as effective
    # it had already ended.
    late = app.get_agreement_at(CUSTOMER, aid, day(34))
    assert late.known is not None and late.known.state == ACTIVE
    assert late.known.termination is not None and late.known.termination["effective_at"] == day(33).isoformat()
    assert (late.in_force_as_known.state, late.in_force_as_known.version is not None) == (ACTIVE, True)
    assert (late.effective.state, late.effective.version, late.effective.ended_at) == (
        TERMINATED,
        None,
        day(33).isoformat(),
    )
    assert differences(late) == [
        ("state", ACTIVE, TERMINATED),
        ("version", "1", "none"),
        ("terms", "version 1", "none"),
    ]

    # Before the end and after it was applied, the two axes agree.
    assert differences(app.get_agreement_at(AUDITOR, aid, day(32))) == []
    ended = app.get_agreement_at(AUDITOR, aid, day(36))
    assert ended.known is not None and ended.known.state == TERMINATED
    assert (ended.effective.state, ended.effective.ended_at) == (TERMINATED, day(33).isoformat())
    assert differences(ended) == []


def test_get_agreement_at_names_what_is_wrong_and_stores_nothing(app: Agreements) -> None:
    aid = active(app)
    head = app.head_position()
    with pytest.raises(NotFoundError, match="agreement 'nope' does not exist"):
        app.get_agreement_at(AUDITOR, "nope", START)
    with pytest.raises(NotFoundError, match="does not exist"):
        app.get_agreement_at(AUDITOR, "00000000-0000-0000-0000-000000000000", START)
    with pytest.raises(NotAPartyError, match="department marketing is not a party"):
        app.get_agreement_at(OUTSIDER, aid, START)
    with pytest.raises(InvalidRequestError, match="at is required"):
        app.get_agreement_at(AUDITOR, aid, None)
    with pytest.raises(InvalidRequestError, match="at must carry a time zone"):
        app.get_agreement_at(AUDITOR, aid, datetime(2026, 1, 20))  # naive: no time zone
    assert app.head_position() == head


# -- StreamHistory's envelopes are ReadEvents' ------------------------------------------------
def assert_same_envelopes(history: list[events_pb2.EventEnvelope], log: list[events_pb2.EventEnvelope]) -> None:
    assert history, "no history to compare"
    assert len(history) == len(log)
    for h, r in zip(history, log, strict=True):
        for f in events_pb2.EventEnvelope.DESCRIPTOR.fields:
            assert getattr(h, f.name) == getattr(r, f.name), f"{r.event_id}: {f.name} differs"
        assert h.SerializeToString(deterministic=True) == r.SerializeToString(deterministic=True)


def test_history_serves_each_event_exactly_as_read_events_does(
    app: Agreements, clock: FakeClock, store_kind: str
) -> None:
    # Two agreements whose events interleave with each other's and with reference data, a
    # refused registration in between (on PostgreSQL it leaves a gap in the positions), and
    # a first history read half-way, so the index is extended between reads.
    a = app.draft(PROVIDER, sla_terms())
    app.register_department("legal", "Legal")
    b = app.draft(PROVIDER, sla_terms(title="Second"))
    app.propose(PROVIDER, str(a.id))
    with pytest.raises(AlreadyRegisteredError):
        app.register_department(IT, "again")
    assert len(app.history(AUDITOR, str(a.id))) == 2
    app.propose(PROVIDER, str(b.id))
    app.accept(CUSTOMER, str(a.id))
    app.define_calendar(
        "office-hours",
        {"time_zone": "Europe/Amsterdam", "hours": [{"weekday": 1, "opens": "09:00", "closes": "17:00"}]},
    )
    app.accept(CUSTOMER, str(b.id))
    clock.advance(timedelta(days=1))
    _, am = app.propose_amendment(
        CUSTOMER, str(a.id), with_target(sla_terms(), "availability", "99.5"), clock.now() + timedelta(days=8), "x"
    )
    app.accept_amendment(PROVIDER, str(a.id), am)

    log, _ = app.read_events(0, 5000)
    if store_kind == "postgres":  # the refused registration used up a position
        assert any(e.previous_position != e.position - 1 for e in log)
    for agg in (a, b):
        history = app.history(AUDITOR, str(agg.id))
        assert_same_envelopes(history, [e for e in log if e.aggregate_id == str(agg.id)])
        assert [e.aggregate_version for e in history] == list(range(1, len(history) + 1))
    # The previous position is the log's, not the agreement's own previous event.
    history_a = app.history(AUDITOR, str(a.id))
    own = [0] + [e.position for e in history_a[:-1]]
    assert any(e.previous_position != p for e, p in zip(history_a, own, strict=True))


# -- over gRPC ------------------------------------------------------------------------------------
def stamp(when: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when)
    return t


@pytest.fixture
async def served(
    own_nats_server: NatsServer, tmp_path: Path, store_kind: str, postgres_db: Callable[[], str], clock: FakeClock
) -> AsyncIterator[tuple[pb_grpc.AgreementsServiceStub, Any, Agreements]]:
    db = postgres_db() if store_kind == "postgres" else ""
    settings = load(service_environ("agreements", tmp_path, own_nats_server.url, store_kind, db))
    keys = make_keys(tmp_path / "keys")
    async with (
        running_service(build, settings, keys, clock=clock) as runtime,
        grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
    ):
        app = runtime.parts.app
        assert isinstance(app, Agreements)
        yield pb_grpc.AgreementsServiceStub(channel), keys, app


async def test_get_agreement_at_and_stream_history_over_grpc(
    served: tuple[pb_grpc.AgreementsServiceStub, Any, Agreements], clock: FakeClock
) -> None:
    s, keys, app = served

    def md(who: str) -> Any:
        return keys.metadata(who) if who in ("admin", "auditor", "service") else keys.metadata("department", who)

    for dept in (IT, FINANCE, "marketing"):
        await s.RegisterDepartment(pb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=md("admin"))
    await s.RegisterService(
        pb.RegisterServiceRequest(service_id=EMAIL, name="E-mail", provider_department_id=IT), metadata=md("admin")
    )
    terms = json_format.ParseDict(sla_terms(), terms_pb2.AgreementTerms())
    aid = (await s.DraftAgreement(pb.DraftAgreementRequest(terms=terms), metadata=md(IT))).agreement.agreement_id
    await s.ProposeAgreement(pb.ProposeAgreementRequest(agreement_id=aid), metadata=md(IT))
    await s.AcceptAgreement(pb.AcceptAgreementRequest(agreement_id=aid), metadata=md(FINANCE))
    await s.TerminateAgreement(pb.TerminateAgreementRequest(agreement_id=aid, reason="reorg"), metadata=md(FINANCE))
    clock.set(START + NOTICE + timedelta(days=2))
    app.process_due()  # the end, due on day 30, applied on day 32

    got = await s.GetAgreementAt(
        pb.GetAgreementAtRequest(agreement_id=aid, at=stamp(START + NOTICE + timedelta(days=1))), metadata=md("auditor")
    )
    assert got.known and got.as_known.state == pb.AGREEMENT_STATE_ACTIVE and got.as_known.revision == 4
    assert got.as_known.termination.scheduled
    assert got.as_known.termination.effective_at.ToDatetime(tzinfo=UTC) == START + NOTICE
    assert (got.in_force_as_known.state, got.in_force_as_known.version) == (pb.AGREEMENT_STATE_ACTIVE, 1)
    assert got.in_force_as_known.terms.objectives[0].target == "99.9"
    eff = got.as_effective
    assert (eff.state, eff.in_force, eff.version, eff.revision) == (pb.AGREEMENT_STATE_TERMINATED, False, 0, 5)
    assert eff.ended_at.ToDatetime(tzinfo=UTC) == START + NOTICE
    assert [(d.field, d.as_known, d.as_effective) for d in got.differences] == [
        ("state", "ACTIVE", "TERMINATED"),
        ("version", "1", "none"),
        ("terms", "version 1", "none"),
    ]
    early = await s.GetAgreementAt(
        pb.GetAgreementAtRequest(agreement_id=aid, at=stamp(datetime(2026, 1, 5, tzinfo=UTC))), metadata=md(FINANCE)
    )
    assert not early.known and not early.HasField("as_known")
    assert (early.as_effective.state, early.as_effective.version) == (pb.AGREEMENT_STATE_ACTIVE, 1)
    assert early.as_effective.effective_from.ToDatetime(tzinfo=UTC) == V1_EFFECTIVE

    # Rejections: the right status, a message saying what was wrong, nothing stored.
    at, status, ask = stamp(START), grpc.StatusCode, pb.GetAgreementAtRequest
    for request, who, code, text in (
        (ask(agreement_id="nope", at=at), "auditor", status.NOT_FOUND, "agreement 'nope' does not exist"),
        (ask(agreement_id=aid, at=at), "marketing", status.PERMISSION_DENIED, "department marketing is not a party"),
        (ask(agreement_id=aid, at=at), "service", status.PERMISSION_DENIED, "role 'service' may not call"),
        (ask(agreement_id=aid), "admin", status.INVALID_ARGUMENT, "at: is required"),
    ):  # fmt: skip
        head = app.head_position()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.GetAgreementAt(request, metadata=md(who))
        assert err.value.code() == code, err.value.details()
        assert text in (err.value.details() or "")
        assert app.head_position() == head

    # StreamHistory serves each event as ReadEvents does.
    history = [e async for e in s.StreamHistory(pb.StreamHistoryRequest(agreement_id=aid), metadata=md("auditor"))]
    log, _ = app.read_events(0, 5000)
    assert_same_envelopes(history, [e for e in log if e.aggregate_id == aid])
