"""Across services: the agreements service registers a service; the metrics service learns
its provider from the AGREEMENTS stream (exactly once); the provider streams signals to
metrics over gRPC; the signals are stored once and published on METRICS exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.metrics.v1 import events_pb2 as metric_events
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.settings import load as load_agreements
from accord_kit.auth import mint_token
from accord_kit.nats_util import connect
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_kit.testing.streams import assert_exactly_once_in_order, eventually, read_stream
from accord_metrics.bootstrap import build as build_metrics
from accord_metrics.settings import load as load_metrics

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def outages(first: int, n: int) -> mpb.RecordSignalsRequest:
    return mpb.RecordSignalsRequest(
        signals=[
            spb.Signal(
                signal_id=f"o{i}",
                service_id="email",
                outage=spb.Outage(start=ts(T0 + timedelta(hours=i)), end=ts(T0 + timedelta(hours=i, minutes=3))),
            )
            for i in range(first, first + n)
        ]
    )


@contextlib.asynccontextmanager
async def agreements_and_metrics(
    nats_url: str, tmp_path: Path, **metrics_kwargs: Any
) -> AsyncIterator[tuple[Any, Any, Any, apb_grpc.AgreementsServiceStub, mpb_grpc.MetricsServiceStub]]:
    """Both services as they run, with it-operations, finance and marketing registered and
    the e-mail service provided by it-operations. Yields (keys, agreements, metrics, stubs)."""
    keys = make_keys(tmp_path / "keys")
    token_file = tmp_path / "keys" / "service.token"
    token_file.write_text(mint_token(keys.private, subject="accord-services", role="service"))
    common = {"ACCORD_SERVICE_TOKEN_FILE": str(token_file)}
    a_settings = load_agreements(service_environ("agreements", tmp_path / "a", nats_url, "sqlite", **common))
    async with running_service(build_agreements, a_settings, keys) as agreements:
        m_env = service_environ(
            "metrics",
            tmp_path / "m",
            nats_url,
            "sqlite",
            ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{agreements.port}",
            **common,
        )
        async with (
            running_service(build_metrics, load_metrics(m_env), keys, **metrics_kwargs) as metrics,
            grpc.aio.insecure_channel(f"127.0.0.1:{agreements.port}") as a_ch,
            grpc.aio.insecure_channel(f"127.0.0.1:{metrics.port}") as m_ch,
        ):
            a = apb_grpc.AgreementsServiceStub(a_ch)
            admin = keys.metadata("admin")
            for dept in ("it-operations", "finance", "marketing"):
                await a.RegisterDepartment(apb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=admin)
            await a.RegisterService(
                apb.RegisterServiceRequest(service_id="email", name="E-mail", provider_department_id="it-operations"),
                metadata=admin,
            )
            yield keys, agreements, metrics, a, mpb_grpc.MetricsServiceStub(m_ch)


async def test_signals_recorded_by_the_provider_that_agreements_registered(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    async with agreements_and_metrics(own_nats_server.url, tmp_path) as (keys, _, metrics, _a, m):
        provider = keys.metadata("department", "it-operations")
        metrics_app = metrics.parts.app
        assert metrics_app is not None

        def learned() -> bool:
            try:
                return metrics_app.provider_of("email") == "it-operations"  # type: ignore[attr-defined,no-any-return]
            except Exception:
                return False

        await eventually(learned, timeout=20, what="metrics learned the provider of email")

        async def stream() -> object:
            yield outages(0, 100)
            yield outages(100, 100)
            yield outages(150, 100)  # half of it re-sent (o150–o199)

        resp = await m.RecordSignals(stream(), metadata=provider)
        assert (resp.accepted, resp.duplicates, resp.messages) == (250, 50, 3)
        # Signals that name no provenance are stored with the way they came.
        assert {s.provenance.source for s in metrics_app.signals("email")} == {"grpc"}  # type: ignore[attr-defined]
        # The customer may not record the provider's signals.
        customer = keys.metadata("department", "finance")
        try:
            await m.RecordSignalBatch(mpb.RecordSignalBatchRequest(signals=outages(900, 1).signals), metadata=customer)
            raise AssertionError("the customer recorded the provider's signals")
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED

        nc = await connect(own_nats_server.url, name="check")
        try:
            relay = metrics.relay
            assert relay is not None
            await eventually(lambda: relay.stats.head_position == metrics_app.head_position())
            messages = await read_stream(nc, "METRICS")
        finally:
            await nc.close()
        assert_exactly_once_in_order(messages, [n.id for n in metrics_app.select_notifications(0, 10_000)])
        recorded = []
        for _, env in messages:
            if env.type == "accord.metrics.v1.SignalsRecorded":
                msg = metric_events.SignalsRecorded()
                env.payload.Unpack(msg)
                recorded += [s.signal_id for s in msg.batch.signals]
        assert sorted(recorded) == sorted(f"o{i}" for i in range(250))


async def test_compliance_breaches_and_recomputation_over_grpc(own_nats_server: NatsServer, tmp_path: Path) -> None:
    """Both services as they run: an agreement accepted through agreements, an outage long
    enough to breach, and metrics answering compliance, breach and recompute queries."""
    from google.protobuf import json_format

    from accord.agreements.v1 import terms_pb2
    from accord_agreements.samples import sla_terms

    async with agreements_and_metrics(own_nats_server.url, tmp_path, evaluate_every=0.2) as (
        keys,
        _,
        metrics,
        a,
        m,
    ):
        _admin, it, fin = (
            keys.metadata("admin"),
            keys.metadata("department", "it-operations"),
            keys.metadata("department", "finance"),
        )
        terms = json_format.ParseDict(sla_terms(), terms_pb2.AgreementTerms())
        ag = (await a.DraftAgreement(apb.DraftAgreementRequest(terms=terms), metadata=it)).agreement
        await a.ProposeAgreement(apb.ProposeAgreementRequest(agreement_id=ag.agreement_id), metadata=it)
        await a.AcceptAgreement(apb.AcceptAgreementRequest(agreement_id=ag.agreement_id), metadata=fin)
        metrics_app = metrics.parts.app
        assert metrics_app is not None
        # A 2-hour outage this month: far beyond a 99.9 % monthly budget (≈ 43 min).
        now = datetime.now(UTC)
        start = now - timedelta(hours=3)
        outage = spb.Signal(
            signal_id="big", service_id="email",
            outage=spb.Outage(start=ts(start), end=ts(start + timedelta(hours=2))),
        )  # fmt: skip

        async def record() -> bool:
            try:
                await m.RecordSignalBatch(mpb.RecordSignalBatchRequest(signals=[outage]), metadata=it)
                return True
            except grpc.aio.AioRpcError:
                return False  # metrics has not learned the service yet

        await eventually(record, timeout=20, what="signal recorded")

        async def breached() -> bool:
            try:
                got = await m.ListBreaches(mpb.ListBreachesRequest(agreement_id=ag.agreement_id), metadata=fin)
            except grpc.aio.AioRpcError:
                return False
            return any(b.objective_id == "availability" for b in got.breaches)

        await eventually(breached, timeout=20, what="breach detected")
        compliance = await m.GetCompliance(mpb.GetComplianceRequest(agreement_id=ag.agreement_id), metadata=fin)
        avail = next(o for o in compliance.objectives if o.objective_id == "availability")
        assert avail.current.status == metric_events.EVALUATION_STATUS_BREACHED
        assert avail.current.formula_id == "availability.time" and avail.current.input_digest.startswith("sha256:")
        assert avail.burn_rate != ""
        window_start = avail.current.window_start
        got = await m.GetEvaluation(
            mpb.GetEvaluationRequest(
                agreement_id=ag.agreement_id, objective_id="availability", window_start=window_start
            ),
            metadata=keys.metadata("auditor"),
        )
        assert got.evaluation.input_digest == avail.current.input_digest
        check = await m.RecomputeWindow(
            mpb.RecomputeWindowRequest(
                agreement_id=ag.agreement_id, objective_id="availability", window_start=window_start
            ),
            metadata=keys.metadata("auditor"),
        )
        assert check.matches and check.recomputed.value == check.recorded.value
        # Not a party: refused; recompute is for auditors.
        for call, code in (
            (m.GetCompliance(mpb.GetComplianceRequest(agreement_id=ag.agreement_id), metadata=keys.metadata(
                "department", "marketing")), grpc.StatusCode.PERMISSION_DENIED),
            (m.RecomputeWindow(mpb.RecomputeWindowRequest(agreement_id=ag.agreement_id), metadata=fin),
             grpc.StatusCode.PERMISSION_DENIED),
            (m.GetCompliance(mpb.GetComplianceRequest(agreement_id="nope"), metadata=fin),
             grpc.StatusCode.NOT_FOUND),
        ):  # fmt: skip
            try:
                await call
                raise AssertionError("accepted")
            except grpc.aio.AioRpcError as e:
                assert e.code() == code, e.details()
        # The breach is on NATS as a public event.
        nc = await connect(own_nats_server.url, name="check")
        try:
            relay = metrics.relay
            assert relay is not None
            await eventually(lambda: relay.stats.head_position == metrics_app.head_position())
            messages = await read_stream(nc, "METRICS")
        finally:
            await nc.close()
        assert any(env.type == "accord.metrics.v1.BreachDetected" for _, env in messages)


async def test_signals_published_on_nats_are_recorded_once(own_nats_server: NatsServer, tmp_path: Path) -> None:
    """Producers may publish batches to accord.signals.v1.<service> with a bearer token
    instead of calling gRPC: same rules, same once-only storage."""
    async with agreements_and_metrics(own_nats_server.url, tmp_path) as (keys, _, metrics, _a, _m):
        metrics_app = metrics.parts.app
        assert metrics_app is not None
        provider = dict(keys.metadata("department", "it-operations"))["authorization"]
        customer = dict(keys.metadata("department", "finance"))["authorization"]
        nc = await connect(own_nats_server.url, name="producer")
        try:
            js = nc.jetstream()

            async def stream_ready() -> bool:
                try:
                    await js.stream_info("SIGNALS")
                    return True
                except Exception:
                    return False

            await eventually(stream_ready, timeout=20, what="SIGNALS stream")
            good = spb.SignalBatch(signals=outages(0, 50).signals).SerializeToString()
            await js.publish("accord.signals.v1.email", good, headers={"Authorization": provider})
            # A batch from a department that does not provide the service, and a garbled one.
            foreign = spb.SignalBatch(signals=outages(500, 5).signals).SerializeToString()
            await js.publish("accord.signals.v1.email", foreign, headers={"Authorization": customer})
            await js.publish("accord.signals.v1.email", b"\xff\x00garbage", headers={"Authorization": provider})
            # The good one again, and then a partly new one.
            await js.publish("accord.signals.v1.email", good, headers={"Authorization": provider})
            partly_new = spb.SignalBatch(signals=outages(25, 50).signals).SerializeToString()
            await js.publish("accord.signals.v1.email", partly_new, headers={"Authorization": provider})
        finally:
            await nc.close()
        await eventually(lambda: len(metrics_app.signals("email")) == 75, timeout=30, what="75 signals stored")
        await asyncio.sleep(0.5)
        ids = [s.signal_id for s in metrics_app.signals("email")]
        assert sorted(ids) == sorted(f"o{i}" for i in range(75))
