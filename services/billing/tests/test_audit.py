"""Billing's audit on real agreements, metrics and billing applications (tests/suite.py), on
both stores: the re-derivation from the upstream logs agrees with billing after a quarter of
breaches, credits and a restatement, and names exactly the window that was tampered with
upstream or altered in billing's own SQLite file; a what-if priced under tighter tiers costs
more and stores nothing; a restated period seen as known before and after the restatement
and as effective now; a window restated twice is credited once."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from accord.agreements.v1 import terms_pb2
from accord.billing.v1 import billing_pb2 as pb
from accord.billing.v1 import billing_pb2_grpc as pb_grpc
from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metric_events
from accord_agreements.samples import FINANCE, IT, sla_terms
from accord_billing import audit
from accord_billing.application import Billing
from accord_billing.assessment import AssessmentError, CurrencyMismatchError
from accord_billing.bootstrap import build
from accord_billing.domain import ISSUED, InvalidRequestError, NotAPartyError, NotFoundError, Statement
from accord_billing.settings import load
from accord_kit.application import AccordApplication
from accord_kit.auth import EVENT_LOG_POLICY, INFRA_POLICY, Policy, TokenVerifier, mint_token
from accord_kit.context import Principal
from accord_kit.eventlog import register_event_log
from accord_kit.grpc_server import AccordServer, build_server
from accord_kit.runtime import ServiceRuntime
from accord_kit.testing.fixtures import postgres_env, sqlite_env
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import Keys, make_keys, running_service, service_environ
from tests.suite import AMS, COLLECTOR, P_CUSTOMER, Suite, an_active_agreement, at, calls, outage, ts

JAN, FEB, MAR = "2025-12-31T23:00:00+00:00", "2026-01-31T23:00:00+00:00", "2026-02-28T23:00:00+00:00"
RESTATED_AT = f"2026-03-10T12:00{AMS}"  # when the late January outage reaches billing


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def a_quarter(suite: Suite) -> str:
    """January met (30 minutes down), February and March breached (an hour down each: 10 %
    credits), then a late 50-minute outage restates January after it was issued: an
    adjustment of 1,198.39 on March's statement (10 % of the 11,983.87 January charges: the
    agreement starts an hour into Amsterdam's January, 743 of its 744 hours). Returns the
    agreement id."""
    aid = an_active_agreement(suite)
    m = suite.metrics
    m.record(COLLECTOR, [outage("jan", f"2026-01-12T10:00{AMS}", 30), *calls("j", f"2026-01-15T09:00{AMS}", 9, 1)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    m.record(COLLECTOR, [outage("feb", f"2026-02-03T08:00{AMS}", 60), *calls("f", f"2026-02-15T09:00{AMS}", 7, 3)])
    suite.tick(f"2026-03-01T02:00{AMS}")
    m.record(COLLECTOR, [outage("mar", f"2026-03-04T08:00{AMS}", 60)])
    m.record(COLLECTOR, [outage("jan-late", f"2026-01-20T02:00{AMS}", 50)])
    suite.tick(RESTATED_AT)
    suite.tick(f"2026-04-01T02:00{AMS}")
    return aid


def whole_log(app: AccordApplication) -> list[events_pb2.EventEnvelope]:
    out: list[events_pb2.EventEnvelope] = []
    while True:
        envs, head = app.read_events(out[-1].position if out else 0, 5000)
        out.extend(envs)
        if not envs or out[-1].position >= head:
            return out


def logs(suite: Suite) -> tuple[list[events_pb2.EventEnvelope], list[events_pb2.EventEnvelope]]:
    return whole_log(suite.metrics), whole_log(suite.agreements)


def tampered(
    envelopes: list[events_pb2.EventEnvelope], objective_id: str, window_start: str, value: str
) -> list[events_pb2.EventEnvelope]:
    """A copy of the metrics log whose latest evaluation of one window says `value`."""
    out = [events_pb2.EventEnvelope.FromString(e.SerializeToString()) for e in envelopes]
    for env in reversed(out):
        for cls, field in ((metric_events.EvaluationRestated, "new"), (metric_events.WindowClosed, "evaluation")):
            if env.type != cls.DESCRIPTOR.full_name:
                continue
            msg: Any = cls()
            env.payload.Unpack(msg)
            evaluation = getattr(msg, field)
            if (evaluation.objective_id, evaluation.window_start) == (objective_id, window_start):
                evaluation.value = value
                env.payload.Pack(msg)
                return out
    raise AssertionError(f"no closed evaluation of {objective_id} from {window_start}")


# -- re-derivation --------------------------------------------------------------------------------------


def test_rederivation_agrees_with_billing_after_breaches_credits_and_a_restatement(suite: Suite) -> None:
    aid = a_quarter(suite)
    metrics, agreements = logs(suite)
    assert any(e.type == metric_events.EvaluationRestated.DESCRIPTOR.full_name for e in metrics)
    statements = suite.billing.statements(None, aid)
    assert [a["difference"] for s in statements for a in s.adjustments] == ["1198.39"]
    assert sum(Decimal(a["net"]) for s in statements for a in s.assessments.values()) == Decimal("2400.00")

    progress: list[int] = []
    result = suite.billing.rederive(metrics, agreements, progress=progress.append)
    # Two objectives × three closed months, January's availability as restated.
    assert (result.checked, result.mismatches, result.missing, result.unexplained) == (6, [], [], [])
    assert progress[-1] == 6
    one = suite.billing.rederive(metrics, agreements, aid)
    assert (one.checked, one.mismatches) == (6, [])
    with pytest.raises(NotFoundError, match="neither the agreements log nor billing"):
        suite.billing.rederive(metrics, agreements, "no-such-agreement")


def test_a_tampered_upstream_evaluation_is_reported_for_exactly_that_window(suite: Suite) -> None:
    aid = a_quarter(suite)
    metrics, agreements = logs(suite)
    feb_statement = str(Statement.create_id(aid, FEB))

    # February's availability "was" 98.5 %: the 25 % band, 3,000.00 instead of 1,200.00.
    statements = suite.billing.statements(None, aid)
    result = audit.rederive(tampered(metrics, "availability", FEB, "98.5"), agreements, statements)
    assert result.checked == 6 and result.missing == [] and result.unexplained == []
    [m] = result.mismatches
    assert (m.agreement_id, m.objective_id, m.window_start) == (aid, "availability", FEB)
    assert (m.recorded_net, m.rederived_net, m.currency, m.statement_id) == ("1200.00", "3000.00", "EUR", feb_statement)
    assert [d.split(":")[0] for d in m.differences] == ["net", "band", "lines", "evaluation value"]
    assert "net: recorded 1200.00, rederived 3000.00" in m.differences

    # January's restated evaluation "was" 99.95 %: nothing owed, yet March's adjustment says 1,198.39.
    result = audit.rederive(tampered(metrics, "availability", JAN, "99.95"), agreements, statements)
    [m] = result.mismatches
    assert (m.objective_id, m.window_start, m.recorded_net, m.rederived_net) == ("availability", JAN, "1198.39", "0.00")
    assert m.statement_id == str(Statement.create_id(aid, MAR)), "the adjustment is on March's statement"

    # A window billing never heard of, and one billing has that metrics never closed.
    metrics_without_march = [
        e for e in metrics if not (e.type.endswith("WindowClosed") and _window_of(e) == ("service-level", MAR))
    ]
    result = audit.rederive(metrics_without_march, agreements, statements)
    assert [(f.objective_id, f.window_start) for f in result.unexplained] == [("service-level", MAR)]
    assert result.mismatches == [] and result.missing == []
    result = audit.rederive(metrics, agreements, [s for s in statements if s.period_start != MAR])
    # March's statement held March's assessments and January's adjustment (so January falls
    # back to its issued 0.00 on January's statement).
    assert sorted((f.objective_id, f.window_start) for f in result.missing) == [
        ("availability", MAR),
        ("service-level", MAR),
    ]
    [m] = result.mismatches
    assert (m.window_start, m.recorded_net, m.rederived_net) == (JAN, "0.00", "1198.39")


def _window_of(env: events_pb2.EventEnvelope) -> tuple[str, str]:
    closed = metric_events.WindowClosed()
    env.payload.Unpack(closed)
    return closed.evaluation.objective_id, closed.evaluation.window_start


def test_an_assessment_altered_in_billings_sqlite_file_is_reported(tmp_path: Path) -> None:
    files: dict[str, Path] = {}

    def make_env(name: str) -> dict[str, str]:
        files[name] = tmp_path / f"{name}-{uuid.uuid4().hex[:8]}.sqlite"
        return sqlite_env(files[name])

    suite = Suite(make_env)
    try:
        aid = a_quarter(suite)
        metrics, agreements = logs(suite)
        suite.billing.close()
        # Someone with access to the file raises February's availability credit to 1,500.00.
        key = f"availability|{FEB}"
        with sqlite3.connect(files["billing"]) as db:
            rows = db.execute(
                "SELECT rowid, state FROM stored_events WHERE topic LIKE '%Statement.Assessed' ORDER BY rowid"
            ).fetchall()
            rowid, raw = [(r, s) for r, s in rows if json.loads(s)["key"] == key][-1]
            state = json.loads(raw)
            assert state["assessment"]["net"] == "1200.00"
            state["assessment"]["net"] = "1500.00"
            state["assessment"]["lines"][0]["amount"] = "1500.00"
            db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (json.dumps(state).encode(), rowid))
        billing = Billing(sqlite_env(files["billing"]), clock=suite.clock)
        try:
            result = billing.rederive(metrics, agreements)
        finally:
            billing.close()
    finally:
        suite.agreements.close()
        suite.metrics.close()
    assert result.checked == 6 and result.missing == [] and result.unexplained == []
    [m] = result.mismatches
    assert (m.agreement_id, m.objective_id, m.window_start) == (aid, "availability", FEB)
    assert (m.recorded_net, m.rederived_net) == ("1500.00", "1200.00")
    assert m.differences == (
        "net: recorded 1500.00, rederived 1200.00",
        "lines: recorded [CREDIT 1500.00], rederived [CREDIT 1200.00]",
    )


def test_a_window_restated_twice_is_credited_once_and_rederives_clean(suite: Suite) -> None:
    aid = a_quarter(suite)  # January restated to 99.82 %: +1,198.39 on March's statement
    # Another late report: 400 more minutes down in January → 98.92 %, the 25 % band (25 % of the
    # 11,983.87 January charges: 2,995.97).
    suite.metrics.record(COLLECTOR, [outage("jan-later", f"2026-01-25T02:00{AMS}", 400)])
    suite.tick(f"2026-04-03T12:00{AMS}")
    adjustments = [a for s in suite.billing.statements(P_CUSTOMER, aid) for a in s.adjustments]
    assert [(a["old"], a["new"], a["difference"]) for a in adjustments] == [
        ("0.00", "1198.39", "1198.39"),
        ("1198.39", "2995.97", "1797.58"),
    ]
    assert sum(Decimal(a["difference"]) for a in adjustments) == Decimal("2995.97")
    metrics, agreements = logs(suite)
    result = suite.billing.rederive(metrics, agreements)
    assert (result.checked, result.mismatches, result.missing, result.unexplained) == (6, [], [], [])


# -- what-if pricing -------------------------------------------------------------------------------------


def closed_evaluations(metrics: list[events_pb2.EventEnvelope]) -> list[metric_events.Evaluation]:
    return [e for _, e in sorted(audit.latest_evaluations(metrics).items())]


def test_the_same_evaluations_under_tighter_tiers_cost_more_and_nothing_is_stored(suite: Suite) -> None:
    aid = a_quarter(suite)
    metrics, _ = logs(suite)
    evaluations = closed_evaluations(metrics)
    head = suite.billing.head_position()

    # Under the terms in force: what billing recorded (January as restated; 10 % of the
    # 11,983.87 it charges).
    now = suite.billing.price_evaluations(P_CUSTOMER, aid, None, evaluations)
    nets = {(w.objective_id, w.window_start): w.assessment.net.amount for w in now.windows}
    assert nets[("availability", FEB)] == nets[("availability", MAR)] == Decimal("1200.00")
    assert nets[("availability", JAN)] == Decimal("1198.39")
    assert [p.period_start for p in now.periods] == [JAN, FEB, MAR]
    assert now.total.amount == Decimal("3598.39") and now.currency == "EUR"

    # Tighter: below 99.9 earns 25 %, below 99.0 the whole fee.
    tight = sla_terms()
    tight["objectives"][0]["credit_tiers"] = [
        {"lower": "99.0", "lower_inclusive": True, "upper": "99.9", "credit_percent": "25"},
        {"upper": "99.0", "credit_percent": "100"},
    ]
    what_if = suite.billing.price_evaluations(None, aid, tight, evaluations)
    tight_nets = {(w.objective_id, w.window_start): w.assessment.net.amount for w in what_if.windows}
    assert tight_nets[("availability", FEB)] == Decimal("3000.00") > nets[("availability", FEB)]
    assert what_if.total.amount == Decimal("8995.97") > now.total.amount  # January: 25 % of 11,983.87
    assert what_if.windows[0].assessment.band == tight["objectives"][0]["credit_tiers"][0]

    # The period's cap applies: at most 15 % of the fee (1,800.00) a month.
    capped = sla_terms(consequences={**sla_terms()["consequences"], "cap_percent": "15"})
    capped["objectives"] = tight["objectives"]
    totals = suite.billing.price_evaluations(None, aid, capped, evaluations).periods[1].totals
    assert (totals.credits_before_cap.amount, totals.cap_cut.amount, totals.net.amount) == (
        Decimal("3000.00"),
        Decimal("1200.00"),
        Decimal("1800.00"),
    )
    # A what-if without a fee or a time zone takes the agreement's.
    bare = {"objectives": tight["objectives"], "consequences": tight["consequences"]}
    assert suite.billing.price_evaluations(None, aid, bare, evaluations).total == what_if.total

    assert suite.billing.head_position() == head, "pricing a what-if stores nothing"


def test_pricing_refuses_what_cannot_be_priced(suite: Suite) -> None:
    aid = a_quarter(suite)
    metrics, _ = logs(suite)
    evaluations = closed_evaluations(metrics)
    head = suite.billing.head_position()
    b = suite.billing
    open_window = metric_events.Evaluation()
    open_window.CopyFrom(evaluations[0])
    open_window.closed = False
    with pytest.raises(AssessmentError, match="still open"):
        b.price_evaluations(None, aid, None, [open_window])
    without_service_level = sla_terms()
    without_service_level["objectives"] = without_service_level["objectives"][:1]
    with pytest.raises(AssessmentError, match="objective 'service-level' is not in the terms"):
        b.price_evaluations(None, aid, without_service_level, evaluations)
    in_dollars = sla_terms(fee={"amount": "13000.00", "currency": "USD", "period": "FEE_PERIOD_MONTH"})
    with pytest.raises(CurrencyMismatchError, match="USD, the agreement's in EUR"):
        b.price_evaluations(None, aid, in_dollars, evaluations)
    with pytest.raises(AssessmentError, match="repeats the window"):
        b.price_evaluations(None, aid, None, [evaluations[0], evaluations[0]])
    with pytest.raises(AssessmentError, match="at least one"):
        b.price_evaluations(None, aid, None, [])
    with pytest.raises(NotFoundError, match="not known to billing"):
        b.price_evaluations(None, "no-such-agreement", None, evaluations)
    with pytest.raises(InvalidRequestError, match="agreement_id is required"):
        b.price_evaluations(None, "", None, evaluations)
    with pytest.raises(NotAPartyError, match="marketing is not a party"):
        b.price_evaluations(Principal("m", "department", "marketing"), aid, None, evaluations)
    assert b.head_position() == head


# -- as known at T / as effective now ------------------------------------------------------------------


def test_a_restated_period_as_known_before_and_after_and_as_effective(suite: Suite) -> None:
    aid = a_quarter(suite)
    b = suite.billing
    _, _, march_statement = b.statements(P_CUSTOMER, aid)
    [adjustment] = march_statement.adjustments
    assert adjustment["key"] == f"availability|{JAN}" and adjustment["difference"] == "1198.39"

    # Before the restatement reached billing: January as issued, and as it is correct now.
    before = b.statements_at(P_CUSTOMER, aid, at(f"2026-03-05T00:00{AMS}"))
    assert [p.now.period_start for p in before] == [JAN, FEB, MAR]
    jan = before[0]
    assert jan.as_known is not None and jan.as_known.state == ISSUED
    assert jan.as_known.assessments[f"availability|{JAN}"]["net"] == "0.00"
    assert jan.as_known.adjustments == [] and jan.now.assessments == jan.as_known.assessments
    [correction] = jan.corrections
    assert (correction.statement.id, correction.adjustment["difference"], correction.known_at) == (
        march_statement.id,
        "1198.39",
        False,
    )
    availability = next(w for w in jan.windows if w.objective_id == "availability")
    assert (availability.issued_net, availability.known_net, availability.effective_net) == (
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("1198.39"),
    )
    assert availability.difference == jan.total_difference == Decimal(adjustment["difference"])
    assert (jan.known_total, jan.effective_total) == (Decimal("0.00"), Decimal("1198.39"))
    assert before[1].total_difference == 0 and before[1].corrections == ()
    assert before[2].as_known is None, "March's statement did not exist yet on 5 March"

    # After it: January's own statement is unchanged, but the ledger knew the correction,
    # carried by March's statement.
    after = b.statements_at(P_CUSTOMER, aid, at(RESTATED_AT))
    jan, march = after[0], after[2]
    assert jan.as_known is not None and jan.as_known.assessments[f"availability|{JAN}"]["net"] == "0.00"
    assert [c.known_at for c in jan.corrections] == [True]
    availability = next(w for w in jan.windows if w.objective_id == "availability")
    assert (availability.issued_net, availability.known_net, availability.difference) == (
        Decimal("0.00"),
        Decimal("1198.39"),
        Decimal("0.00"),
    )
    assert march.as_known is not None
    assert [(a["key"], a["difference"]) for a in march.as_known.adjustments] == [(f"availability|{JAN}", "1198.39")]
    assert march.as_known.assessments == {}, "March's own windows had not closed yet"

    # Looking from mid-February: only the periods started by then.
    assert [p.now.period_start for p in b.statements_at(None, aid, at(f"2026-02-15T00:00{AMS}"))] == [JAN, FEB]
    assert b.statements_at(None, aid, datetime(2025, 6, 1, tzinfo=at(JAN).tzinfo)) == []
    with pytest.raises(NotAPartyError):
        b.statements_at(Principal("m", "department", "marketing"), aid, at(RESTATED_AT))
    with pytest.raises(NotFoundError):
        b.statements_at(None, "no-such-agreement", at(RESTATED_AT))


# -- over gRPC: the service as it runs, reading the upstream logs over gRPC ------------------------------


@dataclass
class Served:
    stub: pb_grpc.BillingServiceStub
    keys: Keys
    runtime: ServiceRuntime
    upstreams: dict[str, AccordServer]
    aid: str
    evaluations: list[metric_events.Evaluation]

    def md(self, who: str) -> tuple[tuple[str, str], ...]:
        if who in ("admin", "auditor", "service"):
            return self.keys.metadata(who)
        return self.keys.metadata("department", who, subject=f"{who}-user")

    def head(self) -> int:
        app = self.runtime.parts.app
        assert app is not None
        return app.head_position()


@pytest.fixture
async def served(
    own_nats_server: NatsServer, tmp_path: Path, store_kind: str, postgres_db: Callable[[], str]
) -> AsyncIterator[Served]:
    """The quarter on the suite's applications; then the billing service itself on the
    suite's billing store, reading the agreements and metrics logs from gRPC servers that
    serve the suite's stores."""
    stores: dict[str, str] = {}

    def make_env(name: str) -> dict[str, str]:
        if store_kind == "sqlite":
            stores[name] = str(tmp_path / f"{name}-{uuid.uuid4().hex[:8]}.sqlite")
            return sqlite_env(Path(stores[name]))
        stores[name] = postgres_db()
        return postgres_env(stores[name])

    suite = Suite(make_env)
    try:
        aid = a_quarter(suite)
        evaluations = closed_evaluations(whole_log(suite.metrics))
    finally:
        suite.billing.close()  # the service below opens its store
    keys = make_keys(tmp_path / "keys")
    token_file = tmp_path / "keys" / "service.token"
    token_file.write_text(mint_token(keys.private, subject="accord-services", role="service"))
    upstreams = {
        name: build_server(
            host="127.0.0.1",
            port=0,
            policy=Policy.of(INFRA_POLICY, EVENT_LOG_POLICY),
            verifier=TokenVerifier(keys.public_file.read_bytes()),
            register=[register_event_log(app)],
        )
        for name, app in (("agreements", suite.agreements), ("metrics", suite.metrics))
    }
    for server in upstreams.values():
        await server.start()
    # The service opens the suite's billing store: its SQLite file, or its PostgreSQL database.
    store = {"BILLING_SQLITE_PATH": stores["billing"]} if store_kind == "sqlite" else {}
    settings = load(
        service_environ(
            "billing", tmp_path, own_nats_server.url, store_kind,
            stores["billing"] if store_kind == "postgres" else "",
            ACCORD_SERVICE_TOKEN_FILE=str(token_file),
            ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{upstreams['agreements'].port}",
            ACCORD_METRICS_ADDR=f"127.0.0.1:{upstreams['metrics'].port}",
            **store,
        )
    )  # fmt: skip
    try:
        async with (
            running_service(build, settings, keys, clock=suite.clock, due_every=3600) as runtime,
            grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
        ):
            yield Served(pb_grpc.BillingServiceStub(channel), keys, runtime, upstreams, aid, evaluations)
    finally:
        for server in upstreams.values():
            await server.stop(0)
        suite.agreements.close()
        suite.metrics.close()


async def rejected(s: Served, call: Any, code: grpc.StatusCode, *texts: str) -> str:
    before = s.head()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    assert err.value.code() == code, err.value.details()
    details = err.value.details() or ""
    for text in texts:
        assert text in details, details
    assert s.head() == before, "a rejected call stored something"
    return details


async def test_rederive_over_grpc_streams_progress_then_the_result(served: Served) -> None:
    s = served
    head = s.head()
    messages = [m async for m in s.stub.RederiveAssessments(pb.RederiveAssessmentsRequest(), metadata=s.md("auditor"))]
    *progress, final = messages
    assert [m.phase for m in progress[:2]] == ["reading agreements", "reading metrics"]
    assert all(not m.done for m in progress) and progress[-1].phase == "comparing"
    assert [m.events_read for m in progress] == sorted(m.events_read for m in progress)
    assert final.done and final.phase == "done" and final.events_read == progress[-1].events_read > 0
    assert (final.checked, list(final.mismatches), list(final.missing), list(final.unexplained)) == (6, [], [], [])
    one = [m async for m in s.stub.RederiveAssessments(
        pb.RederiveAssessmentsRequest(agreement_id=s.aid), metadata=s.md("admin"))][-1]  # fmt: skip
    assert one.done and one.checked == 6
    assert s.head() == head, "a re-derivation stores nothing"

    request = pb.RederiveAssessmentsRequest()
    for who in (FINANCE, "service"):
        await rejected(s, s.stub.RederiveAssessments(request, metadata=s.md(who)), grpc.StatusCode.PERMISSION_DENIED)
    await rejected(
        s,
        s.stub.RederiveAssessments(pb.RederiveAssessmentsRequest(agreement_id="nope"), metadata=s.md("auditor")),
        grpc.StatusCode.NOT_FOUND,
        "agreement 'nope' is in neither the agreements log nor billing's statements",
    )
    # The metrics service is down: the re-derivation cannot be done now, and says why.
    await s.upstreams["metrics"].stop(0)
    await rejected(
        s,
        s.stub.RederiveAssessments(request, metadata=s.md("auditor")),
        grpc.StatusCode.UNAVAILABLE,
        "cannot read the metrics service's log at 127.0.0.1:",
    )


def tight_terms() -> terms_pb2.AgreementTerms:
    terms = sla_terms()
    terms["objectives"][0]["credit_tiers"] = [
        {"lower": "99.0", "lower_inclusive": True, "upper": "99.9", "credit_percent": "25"},
        {"upper": "99.0", "credit_percent": "100"},
    ]
    return json_format.ParseDict(terms, terms_pb2.AgreementTerms())


async def test_price_evaluations_over_grpc_and_its_rejections(served: Served) -> None:
    s = served
    head = s.head()
    request = pb.PriceEvaluationsRequest(agreement_id=s.aid, evaluations=s.evaluations)
    now = await s.stub.PriceEvaluations(request, metadata=s.md(FINANCE))
    tight = await s.stub.PriceEvaluations(
        pb.PriceEvaluationsRequest(agreement_id=s.aid, terms=tight_terms(), evaluations=s.evaluations),
        metadata=s.md("auditor"),
    )
    assert (now.total.amount, now.total.currency) == ("3598.39", "EUR")
    assert tight.total.amount == "8995.97"
    feb = next(e for e in tight.evaluations if (e.objective_id, e.window_start) == ("availability", FEB))
    assert (feb.status, feb.band, feb.net.amount) == ("BREACHED", "≥ 99.0 and < 99.9 → 25 %", "3000.00")
    assert feb.period_start == FEB
    assert [(x.kind, x.amount, x.applied) for x in feb.lines] == [("CREDIT", "3000.00", True)]
    assert json.loads(feb.band_json)["credit_percent"] == "25"
    assert [p.period_start for p in tight.periods] == [JAN, FEB, MAR]
    assert (tight.periods[1].totals.credits_issued, tight.periods[1].totals.net) == ("3000.00", "3000.00")
    assert [x.kind for x in tight.periods[1].lines] == ["CAP", "MINIMUM"]
    assert s.head() == head, "pricing stores nothing"

    open_window = metric_events.Evaluation()
    open_window.CopyFrom(s.evaluations[0])
    open_window.closed = False
    dollars = tight_terms()
    dollars.fee.currency = "USD"
    unknown = metric_events.Evaluation()
    unknown.CopyFrom(s.evaluations[0])
    unknown.objective_id = "latency"
    cases: list[tuple[str, pb.PriceEvaluationsRequest, grpc.StatusCode, str]] = [
        (FINANCE, pb.PriceEvaluationsRequest(agreement_id=s.aid, evaluations=[open_window]),
         grpc.StatusCode.INVALID_ARGUMENT, "the window is still open"),
        (FINANCE, pb.PriceEvaluationsRequest(agreement_id=s.aid, evaluations=[unknown]),
         grpc.StatusCode.INVALID_ARGUMENT, "objective 'latency' is not in the terms"),
        (FINANCE, pb.PriceEvaluationsRequest(agreement_id=s.aid, terms=dollars, evaluations=s.evaluations),
         grpc.StatusCode.INVALID_ARGUMENT, "the terms' fee is in USD, the agreement's in EUR"),
        ("auditor", pb.PriceEvaluationsRequest(agreement_id="nope", evaluations=s.evaluations),
         grpc.StatusCode.NOT_FOUND, "agreement 'nope' is not known to billing"),
        ("marketing", request, grpc.StatusCode.PERMISSION_DENIED, "marketing is not a party"),
        ("service", request, grpc.StatusCode.PERMISSION_DENIED, ""),
    ]  # fmt: skip
    for who, req, code, text in cases:
        await rejected(s, s.stub.PriceEvaluations(req, metadata=s.md(who)), code, text)


async def test_statements_at_over_grpc_and_its_rejections(served: Served) -> None:
    s = served
    before = await s.stub.StatementsAt(
        pb.StatementsAtRequest(agreement_id=s.aid, at=ts(at(f"2026-03-05T00:00{AMS}"))), metadata=s.md(IT)
    )
    assert [p.period_start for p in before.periods] == [JAN, FEB, MAR]
    jan, _, march = before.periods
    assert jan.as_known.state == pb.STATEMENT_STATE_ISSUED and not march.HasField("as_known")
    assert (jan.known_total, jan.as_effective.total, jan.total_difference) == ("0.00", "1198.39", "1198.39")
    [correction] = jan.as_effective.corrections
    assert (correction.adjustment.difference, correction.known_at) == ("1198.39", False)
    assert correction.adjustment.statement_id == march.as_effective.statement.statement_id
    assert correction.recorded_at == at(RESTATED_AT).isoformat()
    window = next(w for w in jan.windows if w.objective_id == "availability")
    assert (window.issued_net, window.known_net, window.effective_net, window.difference) == (
        "0.00", "0.00", "1198.39", "1198.39",
    )  # fmt: skip
    after = await s.stub.StatementsAt(
        pb.StatementsAtRequest(agreement_id=s.aid, at=ts(at(RESTATED_AT))), metadata=s.md("auditor")
    )
    assert [a.difference for a in after.periods[2].as_known.adjustments] == ["1198.39"]

    head_request = pb.StatementsAtRequest(agreement_id=s.aid, at=ts(at(RESTATED_AT)))
    cases: list[tuple[str, pb.StatementsAtRequest, grpc.StatusCode, str]] = [
        (FINANCE, pb.StatementsAtRequest(agreement_id=s.aid), grpc.StatusCode.INVALID_ARGUMENT, "at is required"),
        ("admin", pb.StatementsAtRequest(agreement_id="nope", at=ts(at(RESTATED_AT))), grpc.StatusCode.NOT_FOUND,
         "agreement 'nope' is not known to billing"),
        ("marketing", head_request, grpc.StatusCode.PERMISSION_DENIED, "marketing is not a party"),
        ("service", head_request, grpc.StatusCode.PERMISSION_DENIED, ""),
    ]  # fmt: skip
    for who, req, code, text in cases:
        await rejected(s, s.stub.StatementsAt(req, metadata=s.md(who)), code, text)
