"""A quarter of an e-mail SLA, end to end over real channels, with one fake clock for both
services: an agreement with an availability and a contact-centre objective is accepted
through agreements; months of signals stream into metrics over gRPC; an amendment effective
mid-February leaves February judged by the old version and March by the new; a late outage
restates a closed January. The breaches and closed evaluations arrive on NATS exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.agreements.v1 import terms_pb2
from accord.metrics.v1 import events_pb2 as mev
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.samples import sla_terms, with_target
from accord_agreements.settings import load as load_agreements
from accord_kit.auth import mint_token
from accord_kit.clock import FakeClock
from accord_kit.nats_util import connect
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_kit.testing.streams import assert_exactly_once_in_order, eventually, read_stream
from accord_metrics.bootstrap import build as build_metrics
from accord_metrics.settings import load as load_metrics

pytestmark = pytest.mark.slow
AMS = "+01:00"


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


def month(window_start: str) -> str:
    """The local month a window starts in (window starts are recorded in UTC)."""
    return datetime.fromisoformat(window_start).astimezone(ZoneInfo("Europe/Amsterdam")).strftime("%Y-%m")


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def month_of_calls(prefix: str, first_day: str, days: int, per_day: int, fast_share: float) -> list[spb.Signal]:
    """`per_day` calls a day; the first `fast_share` of each day's calls answered in 10 s, the rest in 40 s."""
    out = []
    start = at(first_day)
    fast = round(per_day * fast_share)
    for d in range(days):
        for i in range(per_day):
            entered = start + timedelta(days=d, hours=8, minutes=20 * i)
            wait = 10 if i < fast else 40
            out.append(
                spb.Signal(
                    signal_id=f"{prefix}-{d}-{i}",
                    service_id="email",
                    call=spb.Call(
                        entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=wait)), talk_seconds="90"
                    ),
                )
            )
    return out


def outage(sid: str, start: str, minutes: int) -> spb.Signal:
    s = at(start)
    return spb.Signal(
        signal_id=sid, service_id="email", outage=spb.Outage(start=ts(s), end=ts(s + timedelta(minutes=minutes)))
    )


def batches(signals: list[spb.Signal], size: int = 200) -> AsyncIterator[mpb.RecordSignalsRequest]:
    async def gen() -> AsyncIterator[mpb.RecordSignalsRequest]:
        for i in range(0, len(signals), size):
            yield mpb.RecordSignalsRequest(signals=signals[i : i + size])

    return gen()


async def test_a_quarter_end_to_end(own_nats_server: NatsServer, tmp_path: Path) -> None:
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    keys = make_keys(tmp_path / "keys")
    token_file = tmp_path / "keys" / "service.token"
    token_file.write_text(mint_token(keys.private, subject="accord-services", role="service"))
    common = {"ACCORD_SERVICE_TOKEN_FILE": str(token_file)}
    a_settings = load_agreements(service_environ("agreements", tmp_path / "a", own_nats_server.url, "sqlite", **common))
    async with running_service(build_agreements, a_settings, keys, clock=clock) as agreements:
        m_env = service_environ(
            "metrics", tmp_path / "m", own_nats_server.url, "sqlite",
            ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{agreements.port}", **common,
        )  # fmt: skip
        async with (
            running_service(build_metrics, load_metrics(m_env), keys, clock=clock, evaluate_every=0.1) as metrics,
            grpc.aio.insecure_channel(f"127.0.0.1:{agreements.port}") as a_ch,
            grpc.aio.insecure_channel(f"127.0.0.1:{metrics.port}") as m_ch,
        ):
            a, m = apb_grpc.AgreementsServiceStub(a_ch), mpb_grpc.MetricsServiceStub(m_ch)
            admin, it, fin = (keys.metadata("admin"), keys.metadata("department", "it-operations"),
                              keys.metadata("department", "finance"))  # fmt: skip
            app: Any = metrics.parts.app
            for dept in ("it-operations", "finance"):
                await a.RegisterDepartment(apb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=admin)
            await a.RegisterService(
                apb.RegisterServiceRequest(service_id="email", name="E-mail", provider_department_id="it-operations"),
                metadata=admin,
            )
            terms = sla_terms()
            ag = (await a.DraftAgreement(apb.DraftAgreementRequest(terms=_pb(terms)), metadata=it)).agreement
            aid = ag.agreement_id
            await a.ProposeAgreement(apb.ProposeAgreementRequest(agreement_id=aid), metadata=it)
            await a.AcceptAgreement(apb.AcceptAgreementRequest(agreement_id=aid), metadata=fin)

            def window(objective: str, start: str) -> dict[str, Any] | None:
                for w in app.window_evaluations(aid):
                    if w.objective_id == objective and datetime.fromisoformat(w.window_start) == at(start):
                        return dict(w.latest) | {"_w": w}
                return None

            def learned() -> bool:
                try:
                    return bool(app.provider_of("email") == "it-operations")
                except Exception:
                    return False

            await eventually(learned, timeout=20, what="metrics knows the service")
            # January: 30 minutes down; 24 calls a day, 85 % answered within 20 s.
            jan = [
                outage("o-jan", f"2026-01-12T10:00{AMS}", 30),
                *month_of_calls("jan", f"2026-01-01T00:00{AMS}", 31, 24, 0.85),
            ]
            resp = await m.RecordSignals(batches(jan), metadata=it)
            assert resp.accepted == len(jan)

            # February 10th: the parties agree to relax the service level to 75 % from the 20th.
            clock.set(at(f"2026-02-10T12:00{AMS}"))
            await eventually(lambda: (window("availability", f"2026-01-01T00:00{AMS}") or {}).get("closed") is True,
                             timeout=20, what="January closed")  # fmt: skip
            p = await a.ProposeAmendment(
                apb.ProposeAmendmentRequest(
                    agreement_id=aid, terms=_pb(with_target(terms, "service-level", "75")),
                    effective_from=ts(at(f"2026-02-20T00:00{AMS}")), reason="seasonal staffing",
                ),
                metadata=fin,
            )  # fmt: skip
            await a.AcceptAmendment(
                apb.AcceptAmendmentRequest(agreement_id=aid, amendment_id=p.amendment_id), metadata=it
            )
            # February: an hour down (beyond the 40.3-minute budget); 70 % answered in time.
            feb = [
                outage("o-feb", f"2026-02-03T08:00{AMS}", 60),
                *month_of_calls("feb", f"2026-02-01T00:00{AMS}", 28, 20, 0.70),
            ]
            await m.RecordSignals(batches(feb), metadata=it)
            await eventually(
                lambda: (window("availability", f"2026-02-01T00:00{AMS}") or {}).get("status") == "BREACHED",
                timeout=20, what="February breach certain before it closes",
            )  # fmt: skip
            feb_av = window("availability", f"2026-02-01T00:00{AMS}")
            assert feb_av is not None and feb_av["closed"] is False

            # March 5th: February closes under version 1 (80 %): breached. March is judged by version 2.
            clock.set(at(f"2026-03-05T12:00{AMS}"))
            march = month_of_calls("mar", f"2026-03-01T00:00{AMS}", 31, 20, 0.80)
            await m.RecordSignals(batches(march), metadata=it)
            await eventually(lambda: (window("service-level", f"2026-02-01T00:00{AMS}") or {}).get("closed") is True,
                             timeout=20, what="February closed")  # fmt: skip
            sl_feb = window("service-level", f"2026-02-01T00:00{AMS}")
            assert sl_feb is not None and sl_feb["status"] == "BREACHED" and sl_feb["version"] == 1

            # A late outage report for January restates the closed month.
            await m.RecordSignals(batches([outage("o-late", f"2026-01-20T02:00{AMS}", 50)]), metadata=it)
            await eventually(lambda: bool(window("availability", f"2026-01-01T00:00{AMS}")["_w"].restatements),  # type: ignore[index]
                             timeout=20, what="January restated")  # fmt: skip

            # April 2nd: March closes, met under version 2 (75 %).
            clock.set(at(f"2026-04-02T12:00{AMS}"))
            await eventually(lambda: (window("service-level", f"2026-03-01T00:00{AMS}") or {}).get("closed") is True,
                             timeout=20, what="March closed")  # fmt: skip
            sl_mar = window("service-level", f"2026-03-01T00:00{AMS}")
            assert sl_mar is not None and sl_mar["status"] == "MET" and sl_mar["version"] == 2

            # Queries agree with the record.
            breaches = await m.ListBreaches(mpb.ListBreachesRequest(agreement_id=aid), metadata=fin)
            assert {(b.objective_id, month(b.window_start)) for b in breaches.breaches} >= {
                ("availability", "2026-02"), ("service-level", "2026-02"), ("availability", "2026-01"),
            }  # fmt: skip

            # On NATS: everything exactly once, in order; one closing per window; the restatement.
            relay = metrics.relay
            assert relay is not None
            await eventually(lambda: relay.stats.head_position == app.head_position(), timeout=20)
            nc = await connect(own_nats_server.url, name="check")
            try:
                messages = await read_stream(nc, "METRICS")
            finally:
                await nc.close()
            assert_exactly_once_in_order(messages, [n.id for n in app.select_notifications(0, 100_000)])
            closings: Counter[tuple[str, str]] = Counter()
            breached: set[tuple[str, str]] = set()
            restated = []
            for _, env in messages:
                if env.type == "accord.metrics.v1.WindowClosed":
                    msg = mev.WindowClosed()
                    env.payload.Unpack(msg)
                    closings[(msg.evaluation.objective_id, month(msg.evaluation.window_start))] += 1
                elif env.type == "accord.metrics.v1.BreachDetected":
                    b = mev.BreachDetected()
                    env.payload.Unpack(b)
                    breached.add((b.objective_id, month(b.window_start)))
                elif env.type == "accord.metrics.v1.EvaluationRestated":
                    r = mev.EvaluationRestated()
                    env.payload.Unpack(r)
                    restated.append(r)
            for objective in ("availability", "service-level"):
                for local_month in ("2026-01", "2026-02", "2026-03"):
                    assert closings[(objective, local_month)] == 1, (objective, local_month, closings)
            assert {("availability", "2026-02"), ("service-level", "2026-02"), ("availability", "2026-01")} <= breached
            assert any(
                r.old.status == mev.EVALUATION_STATUS_MET and r.new.status == mev.EVALUATION_STATUS_BREACHED
                and r.new.objective_id == "availability" for r in restated
            )  # fmt: skip


def _pb(terms: dict[str, Any]) -> terms_pb2.AgreementTerms:
    return json_format.ParseDict(terms, terms_pb2.AgreementTerms())
