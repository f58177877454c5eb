"""The audit RPCs of the metrics service as it runs (its real bootstrap, gRPC on port 0, a real
NATS, both stores), fed by an agreements application whose relay publishes the AGREEMENTS
stream: who may call them, what they answer, the status and message of every rejection and
that a rejected call stores nothing; and RederiveEvaluations naming the window of a signal
altered in the database behind the service's back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from accord.agreements.v1 import terms_pb2
from accord.metrics.v1 import events_pb2 as ev
from accord.metrics.v1 import metrics_pb2 as pb
from accord.metrics.v1 import metrics_pb2_grpc as pb_grpc
from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.application import Agreements
from accord_agreements.domain import Actor
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms, with_target
from accord_kit.clock import FakeClock
from accord_kit.nats_util import connect
from accord_kit.relay import Relay
from accord_kit.runtime import ServiceRuntime
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import Keys, make_keys, running_service, service_environ
from accord_kit.testing.streams import eventually
from accord_metrics.bootstrap import build
from accord_metrics.settings import load
from tests.suite import AMS, at, outage, ts

PROVIDER, CUSTOMER = Actor("alice", "department", IT), Actor("bob", "department", FINANCE)
JAN, FEB = at(f"2026-01-01T00:00{AMS}"), at(f"2026-02-01T00:00{AMS}")


def calls(prefix: str, day: str, fast: int, slow: int) -> list[spb.Signal]:
    out = []
    for i in range(fast + slow):
        entered = at(day) + timedelta(minutes=i)
        c = spb.Call(entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=10 if i < fast else 40)))
        out.append(spb.Signal(signal_id=f"{prefix}{i}", service_id=EMAIL, call=c))
    return out


@dataclass
class World:
    stub: pb_grpc.MetricsServiceStub
    keys: Keys
    runtime: ServiceRuntime
    clock: FakeClock
    agreements: Agreements
    aid: str = ""

    def md(self, who: str, department: str = "") -> tuple[tuple[str, str], ...]:
        return self.keys.metadata(who, department)

    @property
    def app(self) -> Any:
        return self.runtime.parts.app

    def head(self) -> int:
        return int(self.app.head_position())


@pytest.fixture
async def world(
    own_nats_server: NatsServer, tmp_path: Path, store_kind: str, postgres_db: Callable[[], str]
) -> AsyncIterator[World]:
    """The sample SLA accepted in agreements and learned by metrics from the AGREEMENTS stream;
    January (30 minutes down: met) and February (an hour down, 70 % of calls fast: breached)
    recorded over gRPC by a collector and closed on the service's clock; March open."""
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    agreements = Agreements(sqlite_env(tmp_path / "agreements.sqlite"), clock=clock)
    nc = await connect(own_nats_server.url, name="agreements-relay")
    relay = Relay(agreements, nc, stream="AGREEMENTS", poll_seconds=0.05)
    relay_task = asyncio.create_task(relay.run())
    db = postgres_db() if store_kind == "postgres" else ""
    settings = load(service_environ("metrics", tmp_path, own_nats_server.url, store_kind, db))
    keys = make_keys(tmp_path / "keys")
    try:
        async with (
            running_service(build, settings, keys, clock=clock, evaluate_every=0.05) as runtime,
            grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
        ):
            w = World(pb_grpc.MetricsServiceStub(channel), keys, runtime, clock, agreements)
            for dept in (IT, FINANCE, "marketing"):
                agreements.register_department(dept, dept)
            agreements.register_service(EMAIL, "E-mail", IT)
            w.aid = aid = str(agreements.draft(PROVIDER, sla_terms()).id)
            agreements.propose(PROVIDER, aid)
            agreements.accept(CUSTOMER, aid)
            await eventually(lambda: _knows(w.app, aid), timeout=20, what="metrics learned the agreement")
            collector = w.md("service")
            jan = [outage("o-jan", f"2026-01-12T10:00{AMS}", 30), *calls("jan", f"2026-01-15T09:00{AMS}", 18, 2)]
            await w.stub.RecordSignalBatch(pb.RecordSignalBatchRequest(signals=jan), metadata=collector)
            clock.set(at(f"2026-02-10T12:00{AMS}"))
            await eventually(lambda: _closed(w.app, aid, JAN) == 2, timeout=20, what="January closed")
            feb = [outage("o-feb", f"2026-02-03T08:00{AMS}", 60), *calls("feb", f"2026-02-16T09:00{AMS}", 14, 6)]
            await w.stub.RecordSignalBatch(pb.RecordSignalBatchRequest(signals=feb), metadata=collector)
            clock.set(at(f"2026-03-05T12:00{AMS}"))
            await eventually(lambda: _closed(w.app, aid, FEB) == 2, timeout=20, what="February closed")
            await eventually(lambda: len(w.app.window_evaluations(aid)) == 6, timeout=20, what="March opened")
            yield w
    finally:
        relay.stop()
        await relay_task
        await nc.close()
        agreements.close()


def _knows(app: Any, aid: str) -> bool:
    try:
        return bool(app.agreement_view(None, aid).versions)
    except Exception:
        return False


def _closed(app: Any, aid: str, start: datetime) -> int:
    return sum(1 for w in app.window_evaluations(aid) if w.closed and at(w.window_start) == start)


def terms_pb(terms: dict[str, Any]) -> terms_pb2.AgreementTerms:
    return json_format.ParseDict(terms, terms_pb2.AgreementTerms())


async def rejected(w: World, call: Any, code: grpc.StatusCode, *texts: str) -> None:
    before = w.head()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if hasattr(call, "__aiter__"):
            _ = [m async for m in call]
        else:
            await call
    assert err.value.code() == code, err.value.details()
    for text in texts:
        assert text in (err.value.details() or ""), err.value.details()
    assert w.head() == before, "a rejected call stored something"


async def test_audit_rpcs_answer_their_callers_and_reject_the_others(world: World) -> None:
    w, s = world, world.stub
    aid = w.aid
    auditor, admin, service = w.md("auditor"), w.md("admin"), w.md("service")
    customer, stranger = w.md("department", FINANCE), w.md("department", "marketing")
    head = w.head()

    # RederiveEvaluations (auditors, admins): progress, then the final tally — all matching.
    messages = [m async for m in s.RederiveEvaluations(pb.RederiveEvaluationsRequest(), metadata=auditor)]
    assert messages[-1].done and not any(m.done for m in messages[:-1]) and len(messages) >= 2
    final = messages[-1]
    assert (final.total, final.checked, final.skipped_open, len(final.mismatches)) == (6, 4, 2, 0)
    assert final.signals_read == 42 and final.agreements == 1 and final.passes == final.pass_number == 1
    assert [(m.processed, m.agreement_id, m.passes, m.pass_number) for m in messages[:-1]] == [
        (0, "", 0, 0), (0, aid, 1, 1), (6, aid, 1, 1)
    ]  # fmt: skip
    one = [m async for m in s.RederiveEvaluations(pb.RederiveEvaluationsRequest(agreement_id=aid), metadata=admin)]
    assert one[-1].done and one[-1].checked == 4
    await rejected(w, s.RederiveEvaluations(pb.RederiveEvaluationsRequest(), metadata=customer),
                   grpc.StatusCode.PERMISSION_DENIED, "role 'department' may not call")  # fmt: skip
    await rejected(w, s.RederiveEvaluations(pb.RederiveEvaluationsRequest(), metadata=service),
                   grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip
    await rejected(w, s.RederiveEvaluations(pb.RederiveEvaluationsRequest(agreement_id="nope"), metadata=auditor),
                   grpc.StatusCode.NOT_FOUND, "agreement 'nope' is not known to metrics")  # fmt: skip

    # WhatIf (parties, auditors, admins): a tighter availability target breaches January too.
    tight = with_target(sla_terms(), "availability", "99.99")
    r = await s.WhatIf(pb.WhatIfRequest(agreement_id=aid, terms=terms_pb(tight)), metadata=customer)
    assert r.periods == 3 and r.proposed_terms == terms_pb(tight)
    av = next(o for o in r.objectives if o.objective_id == "availability")
    assert (av.breached_actual, av.breached_proposed, av.metric) == (1, 2, "METRIC_AVAILABILITY_TIME")
    assert [(x.breached_actual, x.breached_proposed) for x in av.windows] == [(False, True), (True, True)]
    assert av.windows[0].proposed.status == ev.EVALUATION_STATUS_BREACHED and av.windows[0].proposed.target == "99.99"
    assert av.windows[0].actual.status == ev.EVALUATION_STATUS_MET and av.windows[0].actual.agreement_version == 1
    for who in (auditor, admin, w.md("department", IT)):
        await s.WhatIf(pb.WhatIfRequest(agreement_id=aid, terms=terms_pb(tight), periods=1), metadata=who)
    what_if = pb.WhatIfRequest(agreement_id=aid, terms=terms_pb(tight))
    await rejected(w, s.WhatIf(what_if, metadata=stranger), grpc.StatusCode.PERMISSION_DENIED,
                   "department marketing is not a party")  # fmt: skip
    await rejected(w, s.WhatIf(what_if, metadata=service), grpc.StatusCode.PERMISSION_DENIED)
    await rejected(w, s.WhatIf(pb.WhatIfRequest(agreement_id="nope", terms=terms_pb(tight)), metadata=auditor),
                   grpc.StatusCode.NOT_FOUND, "agreement 'nope'")  # fmt: skip
    await rejected(w, s.WhatIf(pb.WhatIfRequest(agreement_id=aid, amendment_id="a-1"), metadata=auditor),
                   grpc.StatusCode.NOT_FOUND, "amendment 'a-1'")  # fmt: skip
    await rejected(w, s.WhatIf(pb.WhatIfRequest(agreement_id=aid), metadata=auditor),
                   grpc.StatusCode.INVALID_ARGUMENT, "exactly one of amendment_id", "neither")  # fmt: skip
    await rejected(w, s.WhatIf(pb.WhatIfRequest(agreement_id=aid, amendment_id="a-1", terms=terms_pb(tight)),
                               metadata=auditor), grpc.StatusCode.INVALID_ARGUMENT, "both")  # fmt: skip
    await rejected(w, s.WhatIf(pb.WhatIfRequest(agreement_id=aid, terms=terms_pb(tight), periods=25),
                               metadata=auditor), grpc.StatusCode.INVALID_ARGUMENT, "periods", "not 25")  # fmt: skip
    no_metric = terms_pb(tight)
    no_metric.objectives[1].ClearField("metric")
    await rejected(w, s.WhatIf(pb.WhatIfRequest(agreement_id=aid, terms=no_metric), metadata=auditor),
                   grpc.StatusCode.INVALID_ARGUMENT, "terms.objectives[1] (service-level).metric")  # fmt: skip

    # ComplianceAt (parties, auditors, admins): before February closed, as known then.
    on_feb_20 = ts(at(f"2026-02-20T00:00{AMS}"))
    c = await s.ComplianceAt(pb.ComplianceAtRequest(agreement_id=aid, at=on_feb_20), metadata=customer)
    rows = {(x.objective_id, at(x.window_start)) for x in c.windows}
    assert rows == {(o, m) for o in ("availability", "service-level") for m in (JAN, FEB)}
    feb = next(x for x in c.windows if x.objective_id == "availability" and at(x.window_start) == FEB)
    assert feb.HasField("as_known") and not feb.as_known.closed and feb.as_effective.closed
    assert "closed" in feb.differences and not feb.restated
    jan = next(x for x in c.windows if x.objective_id == "availability" and at(x.window_start) == JAN)
    assert jan.as_known == jan.as_effective and list(jan.differences) == []
    await rejected(w, s.ComplianceAt(pb.ComplianceAtRequest(agreement_id=aid), metadata=auditor),
                   grpc.StatusCode.INVALID_ARGUMENT, "at: is required")  # fmt: skip
    await rejected(w, s.ComplianceAt(pb.ComplianceAtRequest(agreement_id=aid, at=on_feb_20), metadata=stranger),
                   grpc.StatusCode.PERMISSION_DENIED, "not a party")  # fmt: skip
    await rejected(w, s.ComplianceAt(pb.ComplianceAtRequest(agreement_id=aid, at=on_feb_20), metadata=service),
                   grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip
    await rejected(w, s.ComplianceAt(pb.ComplianceAtRequest(agreement_id="nope", at=on_feb_20), metadata=admin),
                   grpc.StatusCode.NOT_FOUND, "agreement 'nope'")  # fmt: skip
    await rejected(w, s.ComplianceAt(pb.ComplianceAtRequest(agreement_id=aid, at=on_feb_20, objective_id="uptime"),
                                     metadata=admin), grpc.StatusCode.NOT_FOUND, "no objective 'uptime'")  # fmt: skip

    # RecomputeWindow still answers, and says which fields differ (none).
    rw = await s.RecomputeWindow(
        pb.RecomputeWindowRequest(agreement_id=aid, objective_id="availability", window_start=FEB.isoformat()),
        metadata=auditor,
    )
    assert rw.matches and list(rw.differences) == []
    assert w.head() == head, "an audit question stored something"


async def test_rederive_names_the_window_of_a_signal_altered_in_the_database(
    world: World, alter_stored_signal: Any
) -> None:
    w = world
    table = w.app.recorder.events_table_name

    def shorter(s: spb.Signal) -> None:  # February's hour down becomes ten minutes: met after all
        s.outage.end.FromDatetime(at(f"2026-02-03T08:10{AMS}"))

    alter_stored_signal(w.runtime.settings.event_store_env(), table, "o-feb", shorter)
    messages = [m async for m in w.stub.RederiveEvaluations(pb.RederiveEvaluationsRequest(), metadata=w.md("auditor"))]
    final = messages[-1]
    assert final.done and final.checked == 4
    assert [(m.agreement_id, m.objective_id, at(m.window_start), at(m.window_end)) for m in final.mismatches] == [
        (w.aid, "availability", FEB, at(f"2026-03-01T00:00{AMS}"))
    ]
    m = final.mismatches[0]
    # The recorded breach stands (it was recorded with the closing evaluation); the numbers differ.
    assert list(m.differences) == ["value", "status", "input_digest"]
    assert m.recorded.status == ev.EVALUATION_STATUS_BREACHED and m.recomputed.status == ev.EVALUATION_STATUS_MET
    assert (m.recorded_breaches, m.expected_breaches) == (1, 1)


async def test_what_if_on_an_amendment_no_longer_pending_is_a_failed_precondition(world: World) -> None:
    """Rejected or accepted in agreements, learned from the AGREEMENTS stream: WhatIf on it is
    FAILED_PRECONDITION naming the amendment and what happened to it, and stores nothing."""
    w, s, ag = world, world.stub, world.agreements
    auditor = w.md("auditor")
    loose = with_target(sla_terms(), "availability", "99.8")
    effective = at(f"2026-03-20T00:00{AMS}")

    def concluded(amendment_id: str) -> bool:
        return amendment_id in w.app.agreement_view(None, w.aid).concluded

    _, rejected_id = ag.propose_amendment(PROVIDER, w.aid, loose, effective, "cheaper")
    await eventually(lambda: rejected_id in w.app.agreement_view(None, w.aid).proposed, timeout=20, what="proposed")
    pending = await s.WhatIf(pb.WhatIfRequest(agreement_id=w.aid, amendment_id=rejected_id), metadata=auditor)
    assert pending.amendment_id == rejected_id
    ag.reject_amendment(CUSTOMER, w.aid, rejected_id, "too lax")
    await eventually(lambda: concluded(rejected_id), timeout=20, what="metrics learned the rejection")
    await rejected(w, s.WhatIf(pb.WhatIfRequest(agreement_id=w.aid, amendment_id=rejected_id), metadata=auditor),
                   grpc.StatusCode.FAILED_PRECONDITION,
                   f"amendment '{rejected_id}' of agreement {w.aid} was rejected (too lax): "
                   "it is no longer pending")  # fmt: skip

    _, accepted_id = ag.propose_amendment(PROVIDER, w.aid, loose, effective, "cheaper, agreed")
    ag.accept_amendment(CUSTOMER, w.aid, accepted_id)
    await eventually(lambda: concluded(accepted_id), timeout=20, what="metrics learned the acceptance")
    await rejected(w, s.WhatIf(pb.WhatIfRequest(agreement_id=w.aid, amendment_id=accepted_id),
                               metadata=w.md("department", FINANCE)), grpc.StatusCode.FAILED_PRECONDITION,
                   f"amendment '{accepted_id}' of agreement {w.aid} was already accepted as version 2: "
                   "compare the versions instead")  # fmt: skip


async def test_list_window_signals_gives_the_outages_that_explain_a_window(world: World) -> None:
    w, s = world, world.stub
    customer, service, stranger = w.md("department", FINANCE), w.md("service"), w.md("department", "marketing")
    # February's availability window was breached by its hour-long outage; January's by none.
    feb = pb.ListWindowSignalsRequest(agreement_id=w.aid, objective_id="availability", window_start=FEB.isoformat())
    r = await s.ListWindowSignals(feb, metadata=customer)
    assert (at(r.window_start), at(r.window_end)) == (FEB, at(f"2026-03-01T00:00{AMS}"))
    assert [x.signal_id for x in r.signals] == ["o-feb"] and not r.truncated
    assert r.signals[0].outage.end.ToDatetime() - r.signals[0].outage.start.ToDatetime() == timedelta(minutes=60)
    jan = pb.ListWindowSignalsRequest(agreement_id=w.aid, objective_id="availability", window_start=JAN.isoformat())
    assert [x.signal_id for x in (await s.ListWindowSignals(jan, metadata=service)).signals] == ["o-jan"]
    # Refusals: not a party, an unknown agreement or window; nothing stored.
    await rejected(w, s.ListWindowSignals(feb, metadata=stranger), grpc.StatusCode.PERMISSION_DENIED,
                   "department marketing is not a party")  # fmt: skip
    await rejected(w, s.ListWindowSignals(pb.ListWindowSignalsRequest(agreement_id="nope"), metadata=service),
                   grpc.StatusCode.NOT_FOUND, "agreement 'nope'")  # fmt: skip
    odd = pb.ListWindowSignalsRequest(agreement_id=w.aid, objective_id="availability", window_start="2026-01-02")
    await rejected(w, s.ListWindowSignals(odd, metadata=service), grpc.StatusCode.NOT_FOUND, "no evaluation")
    # An outage reported later across the end of January shows in both.
    late = outage("o-edge", f"2026-01-31T23:30{AMS}", 60)
    await s.RecordSignalBatch(pb.RecordSignalBatchRequest(signals=[late]), metadata=service)
    assert [x.signal_id for x in (await s.ListWindowSignals(jan, metadata=service)).signals] == ["o-jan", "o-edge"]
    assert [x.signal_id for x in (await s.ListWindowSignals(feb, metadata=service)).signals] == ["o-edge", "o-feb"]


async def test_a_correction_says_why_over_grpc_and_the_agreement_history_shows_it(world: World) -> None:
    """RecordSignalBatch's and each RecordSignals message's correction_reason is the reason of
    the corrections they bring, shown with who and when in the agreement's history; one that
    is not printable or too long is INVALID_ARGUMENT naming the field, and nothing is stored."""
    from accord.audit.v1 import audit_pb2, audit_pb2_grpc

    w = world
    collector = w.md("service")
    fixed = outage("o-feb", f"2026-02-03T08:00{AMS}", 45)
    r = await w.stub.RecordSignalBatch(
        pb.RecordSignalBatchRequest(signals=[fixed], correction_reason="end taken from the incident report"),
        metadata=collector,
    )
    assert r.corrections == 1
    again = outage("o-feb", f"2026-02-03T08:00{AMS}", 50)

    async def stream() -> AsyncIterator[pb.RecordSignalsRequest]:
        yield pb.RecordSignalsRequest(signals=[again], correction_reason="the report was amended")

    assert (await w.stub.RecordSignals(stream(), metadata=collector)).corrections == 1

    async def settled() -> bool:  # February restated by the evaluator running on its own
        before = w.head()
        await asyncio.sleep(0.3)
        return w.head() == before

    await eventually(settled, timeout=20, what="the corrections judged")
    for bad, text in (("a\tb", "correction_reason: must be printable text on one line"),
                      ("x" * 501, "correction_reason: 501 characters; at most 500")):  # fmt: skip
        other = outage("o-feb", f"2026-02-03T08:00{AMS}", 55)
        call = w.stub.RecordSignalBatch(pb.RecordSignalBatchRequest(signals=[other], correction_reason=bad),
                                        metadata=collector)  # fmt: skip
        await rejected(w, call, grpc.StatusCode.INVALID_ARGUMENT, text)

    async def bad_stream() -> AsyncIterator[pb.RecordSignalsRequest]:
        yield pb.RecordSignalsRequest(signals=[outage("o-feb", f"2026-02-03T08:00{AMS}", 55)], correction_reason="\x07")

    await rejected(
        w, w.stub.RecordSignals(bad_stream(), metadata=collector), grpc.StatusCode.INVALID_ARGUMENT,
        "message 0", "correction_reason:",
    )  # fmt: skip
    async with grpc.aio.insecure_channel(f"127.0.0.1:{w.runtime.port}") as channel:
        audit = audit_pb2_grpc.AuditServiceStub(channel)
        asked = audit_pb2.AgreementHistoryRequest(agreement_id=w.aid)
        history = audit.AgreementHistory(asked, metadata=w.md("auditor"))
        corrections = []
        async for item in history:
            if item.envelope.payload.Is(ev.SignalsCorrected.DESCRIPTOR):
                c = ev.SignalsCorrected()
                item.envelope.payload.Unpack(c)
                corrections.append((c.actor, c.reason, item.envelope.recorded_at.ToJsonString()))
    assert [(a, why) for a, why, _ in corrections] == [
        ("service:tester", "end taken from the incident report"),
        ("service:tester", "the report was amended"),
    ]
    assert all(when for _, _, when in corrections)
